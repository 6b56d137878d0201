//! The kustomize install path (`manifests/`) against the real API server: the documented
//! commands, `kubectl apply -k manifests/` and `kubectl apply -k manifests/operator/namespaced/`,
//! as server-side dry runs. The API server validates and admits every object (schema, RBAC
//! rules, the Deployment and its Pod template) and persists nothing.
//!
//! A dry run creates nothing, the Namespace included, and namespaced objects are only admitted
//! into a namespace that exists. So the namespace each variant installs into (`tikv-operator`,
//! `tikv`) is created for real first when it is missing, as a real `kubectl apply -k
//! manifests/` would have done a moment before its other objects, and removed again afterwards.
//!
//! Run with `cargo xtask e2e test` (the tests are ignored in a plain `cargo test`).

use std::time::Duration;

use anyhow::{Result, ensure};
use k8s_openapi::api::core::v1::Namespace;
use kube::Api;
use kube::api::{DeleteParams, PostParams};
use serde::Deserialize;
use serde_json::{Value, json};
use tikv_operator_e2e::config;
use tikv_operator_e2e::harness::{Env, wait_until};

/// Creates `name` unless it exists; returns whether it was created here.
async fn ensure_namespace(env: &Env, name: &str) -> Result<bool> {
    let api: Api<Namespace> = Api::all(env.client.clone());
    if api.get_opt(name).await?.is_some() {
        return Ok(false);
    }
    let ns: Namespace = serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": name, "labels": {"e2e.tikv.org/test": "kustomize"}},
    }))?;
    api.create(&PostParams::default(), &ns).await?;
    Ok(true)
}

async fn remove_namespace(env: &Env, name: &str) -> Result<()> {
    let api: Api<Namespace> = Api::all(env.client.clone());
    let _ = api.delete(name, &DeleteParams::default()).await;
    wait_until(
        env,
        &format!("namespace {name} deleted"),
        Duration::from_secs(60),
        || {
            let api = api.clone();
            async move { Ok(api.get_opt(name).await?.is_none().then_some(())) }
        },
    )
    .await
}

/// (kind, name) of every object `kubectl kustomize dir` renders.
fn rendered(env: &Env, dir: &str) -> Result<Vec<(String, String)>> {
    let yaml = env.kubectl(&["kustomize", dir])?;
    let mut out = Vec::new();
    for doc in serde_norway::Deserializer::from_str(&yaml) {
        let v = Value::deserialize(doc)?;
        if let (Some(kind), Some(name)) = (v["kind"].as_str(), v["metadata"]["name"].as_str()) {
            out.push((kind.to_owned(), name.to_owned()));
        }
    }
    Ok(out)
}

/// `kubectl apply -k dir --dry-run=server`: every rendered object must be reported as applied by
/// the server's dry run, and none of `absent` (cluster-scoped objects the variant creates) may
/// exist afterwards.
async fn dry_run(env: &Env, dir: &str, namespace: &str, absent: &[(&str, &str)]) -> Result<()> {
    let path = config::repo_root().join(dir).display().to_string();
    let objects = rendered(env, &path)?;
    ensure!(objects.len() >= 6, "kustomize rendered only {objects:?}");
    let mut existed = Vec::new();
    for (kind, name) in absent {
        let out = env.kubectl(&["get", kind, name, "-o", "name", "--ignore-not-found"])?;
        existed.push(!out.trim().is_empty());
    }
    let created = ensure_namespace(env, namespace).await?;
    let result = env.kubectl(&["apply", "-k", &path, "--dry-run=server"]);
    if created {
        remove_namespace(env, namespace).await?;
    }
    let out = result?;
    let reported = out
        .lines()
        .filter(|l| l.ends_with("(server dry run)"))
        .count();
    ensure!(
        reported == objects.len(),
        "{} objects rendered, {reported} reported by the server dry run:\n{out}",
        objects.len()
    );
    for ((kind, name), existed) in absent.iter().zip(existed) {
        let out = env.kubectl(&["get", kind, name, "-o", "name", "--ignore-not-found"])?;
        ensure!(
            existed || out.trim().is_empty(),
            "{kind} {name} exists after a dry run"
        );
    }
    Ok(())
}

#[tokio::test]
#[ignore = "needs the e2e environment: run `cargo xtask e2e test`"]
async fn kustomize_cluster_wide_install_passes_the_api_server() -> Result<()> {
    let env = Env::get().await?;
    dry_run(
        &env,
        "manifests",
        "tikv-operator",
        &[
            ("clusterrole", "tikv-operator"),
            ("clusterrolebinding", "tikv-operator"),
        ],
    )
    .await
}

#[tokio::test]
#[ignore = "needs the e2e environment: run `cargo xtask e2e test`"]
async fn kustomize_namespaced_install_passes_the_api_server() -> Result<()> {
    let env = Env::get().await?;
    dry_run(
        &env,
        "manifests/operator/namespaced",
        "tikv",
        &[
            ("clusterrole", "tikv-operator-nodes"),
            ("clusterrolebinding", "tikv-operator-nodes-tikv"),
        ],
    )
    .await
}
