//! The generated CRDs against the real API server: they install, their CEL rules accept and
//! reject what the offline cases say, `kubectl explain` shows field docs, and `kubectl scale`
//! works through the scale subresource.
//!
//! Run with `cargo xtask e2e test` (the tests are ignored in a plain `cargo test`).

use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use kube::Api;
use kube::api::{DeleteParams, DynamicObject, PostParams};
use kube::core::GroupVersionKind;
use serde::Deserialize;
use serde_json::Value;
use tikv_operator_e2e::cluster;
use tikv_operator_e2e::harness::{Env, wait_until};

async fn install_all(env: &Env) -> Result<Vec<String>> {
    let crds = cluster::read_crds(&env.crd_dir())?;
    ensure!(
        !crds.is_empty(),
        "no CRDs in {} (generate them with `cargo xtask gen-crds`)",
        env.crd_dir().display()
    );
    cluster::apply_crds(&env.client, &crds).await
}

#[tokio::test]
#[ignore = "needs the e2e environment: run `cargo xtask e2e test`"]
async fn every_crd_installs_and_is_established() -> Result<()> {
    let env = Env::get().await?;
    let names = install_all(&env).await?;
    let files = std::fs::read_dir(env.crd_dir())?.count();
    ensure!(
        names.len() >= files,
        "installed {} CRDs from {files} files",
        names.len()
    );
    Ok(())
}

#[derive(Debug, Deserialize)]
struct Case {
    name: String,
    kind: String,
    #[serde(default)]
    old: Option<Value>,
    object: Value,
    #[serde(default)]
    rejects: Option<String>,
}

fn api_for(env: &Env, ns: &str, ar: &kube::discovery::ApiResource) -> Api<DynamicObject> {
    Api::namespaced_with(env.client.clone(), ns, ar)
}

async fn run_case(env: &Env, ns: &str, case: &Case) -> Result<()> {
    let obj: DynamicObject = serde_json::from_value(case.object.clone())?;
    let tm = obj
        .types
        .clone()
        .context("case object without apiVersion/kind")?;
    let gvk = GroupVersionKind::try_from(&tm)?;
    let (ar, _) = kube::discovery::pinned_kind(&env.client, &gvk).await?;
    let api = api_for(env, ns, &ar);
    let name = obj
        .metadata
        .name
        .clone()
        .context("case object without a name")?;
    let _ = api.delete(&name, &DeleteParams::default()).await;
    wait_until(
        env,
        &format!("{name} deleted"),
        Duration::from_secs(20),
        || {
            let api = api.clone();
            let name = name.clone();
            async move { Ok(api.get_opt(&name).await?.is_none().then_some(())) }
        },
    )
    .await?;
    let result = match &case.old {
        None => api.create(&PostParams::default(), &obj).await.map(|_| ()),
        Some(old) => {
            let old: DynamicObject = serde_json::from_value(old.clone())?;
            let created = api
                .create(&PostParams::default(), &old)
                .await
                .with_context(|| format!("{}: creating the old object", case.name))?;
            let mut new = obj.clone();
            new.metadata.resource_version = created.metadata.resource_version;
            api.replace(&name, &PostParams::default(), &new)
                .await
                .map(|_| ())
        }
    };
    let _ = api.delete(&name, &DeleteParams::default()).await;
    match (&case.rejects, result) {
        (None, Ok(())) => Ok(()),
        (None, Err(e)) => bail!("{}: expected accepted, the API server said: {e}", case.name),
        (Some(want), Err(kube::Error::Api(e))) if e.message.contains(want.as_str()) => Ok(()),
        (Some(want), Err(e)) => bail!("{}: rejected, but not with {want:?}: {e}", case.name),
        (Some(want), Ok(())) => bail!(
            "{}: expected rejection with {want:?}, was accepted",
            case.name
        ),
    }
}

#[tokio::test]
#[ignore = "needs the e2e environment: run `cargo xtask e2e test`"]
async fn cel_cases_match_the_real_api_server() -> Result<()> {
    let env = Env::get().await?;
    install_all(&env).await?;
    let path = tikv_operator_e2e::config::repo_root().join("crates/api/tests/cel_cases.yaml");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let cases: Vec<Case> = serde_norway::from_str(&text)?;
    ensure!(!cases.is_empty(), "no cases in {}", path.display());
    let ns = env.namespace("cel").await?;
    let mut failures = Vec::new();
    for case in &cases {
        if let Err(e) = run_case(&env, &ns.name, case).await {
            failures.push(format!("{e:#}"));
        }
    }
    ns.cleanup().await?;
    ensure!(
        failures.is_empty(),
        "{} of {} CEL cases differ on the real API server (kinds: {:?}):\n{}",
        failures.len(),
        cases.len(),
        cases
            .iter()
            .map(|c| c.kind.as_str())
            .collect::<std::collections::BTreeSet<_>>(),
        failures.join("\n")
    );
    Ok(())
}

fn collapse(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// A field at least three levels deep in the PDGroup schema that has a description.
fn nested_documented_field(env: &Env) -> Result<(String, String)> {
    let crds = cluster::read_crds(&env.crd_dir())?;
    let crd = crds
        .iter()
        .find(|c| c.spec.names.kind == "PDGroup")
        .context("no PDGroup CRD")?;
    let schema = serde_json::to_value(&crd.spec.versions[0].schema)?;
    let mut node = &schema["openAPIV3Schema"];
    let mut path = vec!["pdgroups".to_string()];
    for step in ["spec", "template", "spec"] {
        node = &node["properties"][step];
        path.push(step.to_string());
    }
    let props = node["properties"]
        .as_object()
        .context("spec.template.spec has no properties")?;
    for (name, field) in props {
        if let Some(desc) = field["description"].as_str() {
            path.push(name.clone());
            return Ok((path.join("."), desc.to_string()));
        }
    }
    bail!("no documented field under pdgroups.spec.template.spec")
}

#[tokio::test]
#[ignore = "needs the e2e environment: run `cargo xtask e2e test`"]
async fn kubectl_explain_shows_nested_field_docs() -> Result<()> {
    let env = Env::get().await?;
    install_all(&env).await?;
    let (path, desc) = nested_documented_field(&env)?;
    // Discovery of a freshly installed CRD can lag a little.
    let out = wait_until(
        &env,
        &format!("kubectl explain {path}"),
        Duration::from_secs(30),
        || {
            let env = env.clone();
            let path = path.clone();
            async move { Ok(Some(env.kubectl(&["explain", &path])?)) }
        },
    )
    .await?;
    let want: String = collapse(&desc).chars().take(60).collect();
    ensure!(
        collapse(&out).contains(&want),
        "kubectl explain {path} does not show {want:?}:\n{out}"
    );
    Ok(())
}

#[tokio::test]
#[ignore = "needs the e2e environment: run `cargo xtask e2e test`"]
async fn kubectl_scale_works_on_groups() -> Result<()> {
    let env = Env::get().await?;
    install_all(&env).await?;
    let ns = env.namespace("scale").await?;
    let example = std::fs::read_to_string(
        tikv_operator_e2e::config::repo_root().join("examples/basic/cluster.yaml"),
    )?;
    let objs = ns.apply(&example).await?;
    for kind in ["PDGroup", "TiKVGroup"] {
        let obj = objs
            .iter()
            .find(|o| o.types.as_ref().is_some_and(|t| t.kind == kind))
            .with_context(|| format!("examples/basic has no {kind}"))?;
        let name = obj.metadata.name.clone().context("unnamed")?;
        let resource = format!("{}/{name}", kind.to_lowercase());
        env.kubectl(&["-n", &ns.name, "scale", &resource, "--replicas=5"])?;
        let replicas = env.kubectl(&[
            "-n",
            &ns.name,
            "get",
            &resource,
            "-o",
            "jsonpath={.spec.replicas}",
        ])?;
        ensure!(
            replicas.trim() == "5",
            "{resource}: spec.replicas is {replicas:?} after scale"
        );
        let scale = env.kubectl(&[
            "-n",
            &ns.name,
            "get",
            &resource,
            "--subresource=scale",
            "-o",
            "jsonpath={.spec.replicas}",
        ])?;
        ensure!(
            scale.trim() == "5",
            "{resource}: scale subresource says {scale:?}"
        );
    }
    ns.cleanup().await
}

/// `kubectl get tikv <name>`, `kubectl get pd <name>` and `kubectl delete tikv <name>` address
/// one object (a category named like a kind would expand instead: "you must specify only one
/// resource"), while the categories `tikv-all`, `tikv-groups` and `tikv-instances` list
/// everything of their kind. Checked with the real kubectl against the real API server.
#[tokio::test]
#[ignore = "needs the e2e environment: run `cargo xtask e2e test`"]
async fn kubectl_names_address_one_object_and_categories_list_all() -> Result<()> {
    let env = Env::get().await?;
    install_all(&env).await?;
    let ns = env.namespace("names").await?;
    let instance = |kind: &str, name: &str| {
        format!(
            "apiVersion: core.tikv.org/v1alpha1\nkind: {kind}\nmetadata:\n  name: {name}\nspec:\n  \
             cluster:\n    name: basic\n  subdomain: basic-peer\n  topology:\n    \
             topology.kubernetes.io/zone: a\n  version: v8.5.5\n  volumes:\n  \
             - name: data\n    storage: 1Gi\n    mounts:\n    - type: data\n"
        )
    };
    ns.apply(&instance("TiKV", "basic-kv1")).await?;
    ns.apply(&instance("PD", "basic-pd1")).await?;
    let n = ns.name.clone();
    // Discovery of freshly installed CRDs (and their categories) can lag a little.
    let all = wait_until(
        &env,
        "kubectl get tikv-all lists both instances",
        Duration::from_secs(30),
        || {
            let env = env.clone();
            let n = n.clone();
            async move {
                let out = env.kubectl(&["-n", &n, "get", "tikv-all", "-o", "name"])?;
                Ok((out.contains("basic-kv1") && out.contains("basic-pd1")).then_some(out))
            }
        },
    )
    .await?;
    ensure!(all.contains("tikv.core.tikv.org/basic-kv1"), "{all}");
    let inst = env.kubectl(&["-n", &n, "get", "tikv-instances", "-o", "name"])?;
    ensure!(
        inst.contains("basic-kv1") && inst.contains("basic-pd1"),
        "{inst}"
    );
    for (resource, name) in [
        ("tikv", "basic-kv1"),
        ("pd", "basic-pd1"),
        ("kv", "basic-kv1"),
    ] {
        let out = env.kubectl(&["-n", &n, "get", resource, name, "-o", "name"])?;
        ensure!(
            out.trim().ends_with(&format!("/{name}")),
            "kubectl get {resource} {name}: {out}"
        );
    }
    let out = env.kubectl(&["-n", &n, "delete", "tikv", "basic-kv1", "--wait=false"])?;
    ensure!(
        out.contains("basic-kv1"),
        "kubectl delete tikv basic-kv1: {out}"
    );
    ns.cleanup().await
}
