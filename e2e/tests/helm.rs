//! The Helm chart (`charts/tikv-operator`) against the real API server: `helm install` of the
//! cluster-wide and of the namespaced variant passes the API server's validation and admission
//! (the release namespace enforces the `restricted` Pod Security level, as the kustomize
//! install's namespace does), the operator Deployment is created and its Pods are admitted and
//! scheduled, `helm upgrade` changes a flag, and `helm uninstall` leaves no cluster-scoped
//! object behind except the CRDs.
//!
//! The environment's fake nodes run no container, so the operator inside the Pods does not run
//! here; the operator binary itself is exercised by the other e2e tests. The offline checks of
//! the chart (lint, golden renders, RBAC and Deployment equal to manifests/) are in
//! xtask/src/chart.rs.
//!
//! Run with `cargo xtask e2e test` (the tests are ignored in a plain `cargo test`).

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::ListParams;
use serde::Deserialize;
use serde_json::Value;
use tikv_operator_e2e::cluster;
use tikv_operator_e2e::config;
use tikv_operator_e2e::harness::{Env, TestNamespace, wait_until};

fn chart() -> String {
    config::repo_root()
        .join("charts/tikv-operator")
        .display()
        .to_string()
}

fn documents(yaml: &str) -> Result<Vec<Value>> {
    let mut out = Vec::new();
    for doc in serde_norway::Deserializer::from_str(yaml) {
        let v = Value::deserialize(doc)?;
        if !v.is_null() {
            out.push(v);
        }
    }
    Ok(out)
}

/// A namespace enforcing the `restricted` Pod Security Standard, checked to be in force: a Pod
/// without the hardening is refused there (so the chart's Pods being admitted means something).
async fn restricted_namespace(env: &Env, prefix: &str) -> Result<TestNamespace> {
    let ns = env.namespace(prefix).await?;
    env.kubectl(&[
        "label",
        "namespace",
        &ns.name,
        "pod-security.kubernetes.io/enforce=restricted",
    ])?;
    // Admission reads namespaces from a cache: the label takes effect within moments.
    wait_until(
        env,
        &format!("namespace {} refusing a Pod without hardening", ns.name),
        Duration::from_secs(20),
        || {
            let env = env.clone();
            let name = ns.name.clone();
            async move {
                let out = env.kubectl_output(&[
                    "-n",
                    &name,
                    "run",
                    "psa-probe",
                    "--image=registry.invalid/none",
                    "--restart=Never",
                    "--dry-run=server",
                ])?;
                let stderr = String::from_utf8_lossy(&out.stderr);
                Ok(
                    (!out.status.success() && stderr.contains("violates PodSecurity"))
                        .then_some(()),
                )
            }
        },
    )
    .await?;
    Ok(ns)
}

/// The chart's CRDs against the real API server, without changing the installed ones: a server
/// side dry run under the environment's own field manager (the manager that installed them, so
/// there is no conflict to force).
fn dry_run_chart_crds(env: &Env) -> Result<()> {
    let dir = config::repo_root().join("charts/tikv-operator/crds");
    let out = env.kubectl(&[
        "apply",
        "--server-side",
        "--dry-run=server",
        &format!("--field-manager={}", cluster::FIELD_MANAGER),
        "-f",
        &dir.display().to_string(),
    ])?;
    let files = std::fs::read_dir(&dir)?.count();
    let applied = out
        .lines()
        .filter(|l| l.contains("(server dry run)"))
        .count();
    ensure!(
        files >= 5 && applied == files,
        "expected {files} CRDs in the dry run, got:\n{out}"
    );
    Ok(())
}

/// (kind, name, namespace) of every object of a release, from `helm get manifest`.
fn release_objects(env: &Env, release: &str, ns: &str) -> Result<Vec<(String, String, String)>> {
    let manifest = env.helm(&["get", "manifest", release, "-n", ns])?;
    documents(&manifest)?
        .iter()
        .map(|d| {
            Ok((
                d["kind"].as_str().context("no kind")?.to_owned(),
                d["metadata"]["name"]
                    .as_str()
                    .context("no name")?
                    .to_owned(),
                d["metadata"]["namespace"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            ))
        })
        .collect()
}

fn kubectl_get(env: &Env, kind: &str, name: &str, ns: &str) -> Result<Option<String>> {
    let mut args = vec!["get", kind, name, "-o", "name", "--ignore-not-found"];
    if !ns.is_empty() {
        args.extend(["-n", ns]);
    }
    let out = env.kubectl(&args)?;
    Ok(Some(out.trim().to_owned()).filter(|s| !s.is_empty()))
}

/// Installs the chart with `values`, checks what the API server made of it, upgrades it,
/// uninstalls it and checks that nothing cluster-scoped is left. Returns the cluster-scoped
/// objects the release had.
async fn install_upgrade_uninstall(
    env: &Env,
    prefix: &str,
    values: &[&str],
) -> Result<BTreeSet<String>> {
    dry_run_chart_crds(env)?;
    let ns = restricted_namespace(env, prefix).await?;
    // Unique per test run: cluster-scoped names derive from it ("<release>-tikv-operator").
    let release = ns.name.clone();
    match exercise(env, &ns, &release, values).await {
        Ok(cluster_scoped) => {
            ns.cleanup().await?;
            Ok(cluster_scoped)
        }
        Err(e) => {
            // Cluster-scoped objects outlive the namespace: remove them for the next tests.
            let _ = env.helm(&["uninstall", &release, "-n", &ns.name]);
            Err(e)
        }
    }
}

async fn exercise(
    env: &Env,
    ns: &TestNamespace,
    release: &str,
    values: &[&str],
) -> Result<BTreeSet<String>> {
    let release = release.to_owned();
    let chart = chart();
    // --skip-crds, deliberately: the CRDs are already installed by the environment (`env up`
    // applies them under its own field manager) and shared by every test running at the same
    // time. Helm only ever creates crds/ on a first install and leaves existing CRDs alone, so
    // without the flag the result would depend on what the environment did, not on the chart;
    // the chart's CRDs are checked above by a server-side dry run instead (and are byte-equal
    // to manifests/crds through `cargo xtask gen-crds --check`).
    let mut install = vec![
        "install",
        &release,
        &chart,
        "-n",
        &ns.name,
        "--skip-crds",
        "--timeout",
        "2m",
    ];
    for v in values {
        install.extend(["--set", v]);
    }
    env.helm(&install)?;
    let status: Value =
        serde_json::from_str(&env.helm(&["status", &release, "-n", &ns.name, "-o", "json"])?)?;
    ensure!(
        status["info"]["status"] == "deployed",
        "release status {}",
        status["info"]["status"]
    );

    let objects = release_objects(env, &release, &ns.name)?;
    ensure!(!objects.is_empty(), "the release has no objects");
    for (kind, name, obj_ns) in &objects {
        ensure!(
            kubectl_get(env, kind, name, obj_ns)?.is_some(),
            "{kind} {name} of the release is not in the cluster"
        );
    }
    let cluster_scoped: BTreeSet<String> = objects
        .iter()
        .filter(|(_, _, n)| n.is_empty())
        .map(|(k, n, _)| format!("{k}/{n}"))
        .collect();
    ensure!(
        !cluster_scoped.is_empty(),
        "no cluster-scoped object in the release (RBAC for Nodes is expected in both modes)"
    );

    // The Deployment is created, and the controller-manager's ReplicaSet gets its Pods admitted
    // under `restricted` and scheduled onto the fake nodes.
    let deployment_name = format!("{release}-tikv-operator");
    let deployments: Api<Deployment> = Api::namespaced(env.client.clone(), &ns.name);
    let deployment = deployments
        .get(&deployment_name)
        .await
        .with_context(|| format!("Deployment {deployment_name}"))?;
    let replicas = deployment
        .spec
        .as_ref()
        .and_then(|s| s.replicas)
        .unwrap_or_default();
    ensure!(replicas == 2, "Deployment has {replicas} replicas");
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), &ns.name);
    let selector =
        format!("app.kubernetes.io/name=tikv-operator,app.kubernetes.io/instance={release}");
    let scheduled = wait_until(
        env,
        "the operator's Pods created and scheduled",
        Duration::from_secs(60),
        || {
            let pods = pods.clone();
            let selector = selector.clone();
            async move {
                let list = pods.list(&ListParams::default().labels(&selector)).await?;
                let on_nodes: Vec<Pod> = list
                    .items
                    .into_iter()
                    .filter(|p| p.spec.as_ref().is_some_and(|s| s.node_name.is_some()))
                    .collect();
                Ok((on_nodes.len() == 2).then_some(on_nodes))
            }
        },
    )
    .await?;
    for pod in &scheduled {
        let c = &pod.spec.as_ref().context("pod without spec")?.containers[0];
        let sc = c
            .security_context
            .clone()
            .context("container without securityContext")?;
        ensure!(
            sc.read_only_root_filesystem == Some(true)
                && sc.allow_privilege_escalation == Some(false)
                && sc.run_as_non_root == Some(true),
            "{:?}: security context {sc:?}",
            pod.metadata.name
        );
    }

    // An upgrade changes a flag in place.
    env.helm(&[
        "upgrade",
        &release,
        &chart,
        "-n",
        &ns.name,
        "--skip-crds",
        "--reuse-values",
        "--set",
        "logLevel=debug",
        "--timeout",
        "2m",
    ])?;
    let args = deployments
        .get(&deployment_name)
        .await?
        .spec
        .and_then(|s| s.template.spec)
        .map(|s| s.containers[0].args.clone().unwrap_or_default())
        .unwrap_or_default();
    ensure!(
        args.contains(&"--log-level=debug".to_owned()),
        "upgrade did not reach the Deployment: {args:?}"
    );

    env.helm(&[
        "uninstall",
        &release,
        "-n",
        &ns.name,
        "--wait",
        "--timeout",
        "2m",
    ])?;
    for object in &cluster_scoped {
        let (kind, name) = object.split_once('/').context("kind/name")?;
        ensure!(
            kubectl_get(env, kind, name, "")?.is_none(),
            "{object} is left after helm uninstall"
        );
    }
    // Nothing else cluster-scoped carries the release's label either.
    let left = env.kubectl(&[
        "get",
        "clusterroles,clusterrolebindings,namespaces,customresourcedefinitions",
        "-l",
        &format!("app.kubernetes.io/instance={release}"),
        "-o",
        "name",
    ])?;
    ensure!(left.trim().is_empty(), "left after helm uninstall:\n{left}");
    // The CRDs stay, as Helm users expect (deleting them would delete every Cluster).
    for crd in std::fs::read_dir(config::repo_root().join("charts/tikv-operator/crds"))? {
        let name = crd?
            .file_name()
            .to_string_lossy()
            .trim_end_matches(".yaml")
            .to_owned();
        ensure!(
            kubectl_get(env, "customresourcedefinition", &name, "")?.is_some(),
            "CRD {name} is gone after helm uninstall"
        );
    }
    Ok(cluster_scoped)
}

#[tokio::test]
#[ignore = "needs the e2e environment: run `cargo xtask e2e test`"]
async fn helm_installs_the_cluster_wide_chart_and_uninstalls_cleanly() -> Result<()> {
    let env = Env::get().await?;
    let cluster_scoped = install_upgrade_uninstall(&env, "helm", &[]).await?;
    let kinds: BTreeSet<&str> = cluster_scoped
        .iter()
        .filter_map(|o| o.split_once('/').map(|(k, _)| k))
        .collect();
    ensure!(
        kinds == BTreeSet::from(["ClusterRole", "ClusterRoleBinding"]),
        "cluster-scoped objects: {cluster_scoped:?}"
    );
    Ok(())
}

#[tokio::test]
#[ignore = "needs the e2e environment: run `cargo xtask e2e test`"]
async fn helm_installs_the_namespaced_chart_and_uninstalls_cleanly() -> Result<()> {
    let env = Env::get().await?;
    let cluster_scoped =
        install_upgrade_uninstall(&env, "helm-ns", &["rbac.scope=namespace"]).await?;
    // Only the Node read access is cluster-scoped, named after the release namespace.
    ensure!(
        cluster_scoped.len() == 2 && cluster_scoped.iter().all(|o| o.contains("-nodes-")),
        "cluster-scoped objects: {cluster_scoped:?}"
    );
    Ok(())
}
