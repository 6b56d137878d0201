//! The invalid-input corpus (`e2e/invalid/*.yaml`): each manifest carries a mistake users make
//! and says what must happen. `# rejects: <fragment>`: `kubectl create --validate=strict`
//! fails with a message containing the fragment. `# condition: <Kind>/<name>
//! <Type>=<Status> <Reason>`: the API server accepts it, and the operator reports the condition
//! on the object (and `Synced=False` with the same reason on the Cluster) and creates no
//! instance from the rejected template. A manifest accepted, or rejected for another reason,
//! fails the test. Manifests go through `kubectl create --validate=strict` (a POST, as a user's
//! first apply is): strict field validation names unknown fields.
//!
//! Run with `cargo xtask e2e test invalid_` (ignored in a plain `cargo test`).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use kube::api::ListParams;
use serde_json::Value;
use tikv_operator_api::{Cluster, PD, TiKV};
use tikv_operator_e2e::harness::wait_until;
use tikv_operator_e2e::world::World;

/// What a corpus manifest expects.
#[derive(Debug)]
enum Expect {
    Rejects(String),
    Condition {
        kind: String,
        name: String,
        type_: String,
        status: String,
        reason: String,
    },
}

fn corpus() -> Result<Vec<(PathBuf, Expect)>> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("invalid");
    let mut out = Vec::new();
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)?
        .map(|e| e.map(|e| e.path()))
        .collect::<std::io::Result<_>>()?;
    paths.sort();
    for path in paths
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
    {
        let text = std::fs::read_to_string(&path)?;
        let first = text.lines().next().unwrap_or_default();
        let expect = if let Some(f) = first.strip_prefix("# rejects: ") {
            Expect::Rejects(f.trim().to_owned())
        } else if let Some(c) = first.strip_prefix("# condition: ") {
            let parts: Vec<&str> = c.split_whitespace().collect();
            let [object, cond, reason] = parts[..] else {
                bail!("{}: bad condition line {first:?}", path.display());
            };
            let (kind, name) = object.split_once('/').context("Kind/name")?;
            let (type_, status) = cond.split_once('=').context("Type=Status")?;
            Expect::Condition {
                kind: kind.to_owned(),
                name: name.to_owned(),
                type_: type_.to_owned(),
                status: status.to_owned(),
                reason: reason.to_owned(),
            }
        } else {
            bail!(
                "{}: the first line must say what is expected",
                path.display()
            );
        };
        out.push((path, expect));
    }
    ensure!(
        out.len() >= 10,
        "the corpus has only {} manifests",
        out.len()
    );
    Ok(out)
}

fn conditions_of(obj: &Value) -> Vec<Value> {
    obj["status"]["conditions"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn has_condition(obj: &Value, type_: &str, status: &str, reason: &str) -> bool {
    conditions_of(obj)
        .iter()
        .any(|c| c["type"] == type_ && c["status"] == status && c["reason"] == reason)
}

#[tokio::test]
#[ignore = "needs the e2e environment: run `cargo xtask e2e test`"]
async fn invalid_input_is_rejected_or_reported_never_acted_on() -> Result<()> {
    let w = World::start("invalid").await?;
    let r = check_corpus(&w).await;
    r.map_err(|e| w.explain(e))?;
    w.finish().await
}

async fn check_corpus(w: &World) -> Result<()> {
    let ns = w.ns.name.clone();
    w.ns.apply(
        "apiVersion: core.tikv.org/v1alpha1\nkind: Cluster\nmetadata:\n  name: basic\nspec: {}\n",
    )
    .await?;
    let mut failures = Vec::new();
    for (path, expect) in corpus()? {
        let file = path.to_string_lossy().into_owned();
        // `create` (a POST): strict field validation names unknown fields, and CEL judges
        // list uniqueness (server-side apply would refuse duplicate list keys first, with a
        // message of its own).
        let dry_run = matches!(expect, Expect::Rejects(_));
        let mut args = vec![
            "-n",
            ns.as_str(),
            "create",
            "--validate=strict",
            "-f",
            &file,
        ];
        if dry_run {
            args.push("--dry-run=server");
        }
        let out = w.env.kubectl_output(&args)?;
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        match &expect {
            Expect::Rejects(fragment) => {
                if out.status.success() {
                    failures.push(format!(
                        "{file}: accepted, expected a rejection ({fragment})"
                    ));
                } else if !said.contains(fragment.as_str()) {
                    failures.push(format!("{file}: rejected without {fragment:?}: {said}"));
                }
            }
            Expect::Condition {
                kind,
                name,
                type_,
                status,
                reason,
            } => {
                if !out.status.success() {
                    failures.push(format!("{file}: rejected, expected it accepted: {said}"));
                    continue;
                }
                let resource = kind.to_lowercase();
                let seen = wait_until(
                    &w.env,
                    &format!("{kind}/{name} {type_}={status} {reason}"),
                    Duration::from_secs(60),
                    || {
                        let (env, ns, resource, name) =
                            (w.env.clone(), ns.clone(), resource.clone(), name.clone());
                        async move {
                            let text =
                                env.kubectl(&["-n", &ns, "get", &resource, &name, "-o", "json"])?;
                            let obj: Value = serde_json::from_str(&text)?;
                            Ok(has_condition(&obj, type_, status, reason).then_some(obj))
                        }
                    },
                )
                .await;
                if let Err(e) = seen {
                    failures.push(format!("{file}: {e:#}"));
                    continue;
                }
                // `kubectl get` shows the group as not synced.
                let table = w.env.kubectl(&["-n", &ns, "get", &resource, name])?;
                // SYNCED is the column before AGE (the last); counted from the end, so an empty
                // column elsewhere cannot shift it.
                let header: Vec<&str> = table
                    .lines()
                    .next()
                    .unwrap_or_default()
                    .split_whitespace()
                    .collect();
                let row: Vec<&str> = table
                    .lines()
                    .nth(1)
                    .unwrap_or_default()
                    .split_whitespace()
                    .collect();
                let synced = (header.len() >= 2 && header[header.len() - 2] == "SYNCED")
                    .then(|| row.len().checked_sub(2).and_then(|i| row.get(i)))
                    .flatten();
                if synced != Some(&"False") {
                    failures.push(format!(
                        "{file}: kubectl get {resource} shows no SYNCED False:\n{table}"
                    ));
                }
                // The Cluster says so too (its status follows its groups' a moment later:
                // the Cluster's reconcile waits for a burst of changes to end), and nothing
                // was created from the template.
                let cluster_says = wait_until(
                    &w.env,
                    &format!("Cluster basic Synced=False {reason}"),
                    Duration::from_secs(10),
                    || async {
                        let c = serde_json::to_value(w.api::<Cluster>().get("basic").await?)?;
                        Ok(has_condition(&c, "Synced", "False", reason).then_some(()))
                    },
                )
                .await;
                if cluster_says.is_err() {
                    let c = serde_json::to_value(w.api::<Cluster>().get("basic").await?)?;
                    failures.push(format!(
                        "{file}: the Cluster is not Synced=False {reason}: {:?}",
                        conditions_of(&c)
                    ));
                }
                let selector = format!("core.tikv.org/group={name}");
                let lp = ListParams::default().labels(&selector);
                let made = w.api::<PD>().list(&lp).await?.items.len()
                    + w.api::<TiKV>().list(&lp).await?.items.len();
                if made > 0 {
                    failures.push(format!("{file}: {made} instance(s) created from it"));
                }
                // Cleared for the next manifest.
                w.env
                    .kubectl(&["-n", &ns, "delete", &resource, name, "--wait=true"])?;
            }
        }
    }
    ensure!(failures.is_empty(), "{}", failures.join("\n"));
    Ok(())
}

/// Every rejecting case of `crates/api/tests/cel_cases.yaml` that is not an update (over 200
/// mistakes across the five kinds) goes through `kubectl create --validate=strict
/// --dry-run=server` too, as a user would send it: refused, with the case's message.
#[tokio::test]
#[ignore = "needs the e2e environment: run `cargo xtask e2e test`"]
async fn invalid_input_cel_cases_are_refused_by_kubectl_strict() -> Result<()> {
    #[derive(serde::Deserialize)]
    struct Case {
        name: String,
        #[serde(default)]
        old: Option<Value>,
        object: Value,
        #[serde(default)]
        rejects: Option<String>,
    }
    let env = tikv_operator_e2e::harness::Env::get().await?;
    let ns = env.namespace("strict").await?;
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../crates/api/tests/cel_cases.yaml");
    let cases: Vec<Case> = serde_norway::from_str(&std::fs::read_to_string(&path)?)?;
    let dir = std::env::temp_dir().join(format!("tikv-operator-e2e-strict-{}", ns.name));
    std::fs::create_dir_all(&dir)?;
    let mut failures = Vec::new();
    let mut checked = 0;
    for (i, c) in cases.iter().enumerate() {
        let (Some(fragment), None) = (&c.rejects, &c.old) else {
            continue;
        };
        let file = dir.join(format!("case-{i}.json"));
        std::fs::write(&file, serde_json::to_vec(&c.object)?)?;
        let file = file.to_string_lossy().into_owned();
        let out = env.kubectl_output(&[
            "-n",
            &ns.name,
            "create",
            "--validate=strict",
            "--dry-run=server",
            "-f",
            &file,
        ])?;
        let said = String::from_utf8_lossy(&out.stderr).into_owned();
        checked += 1;
        if out.status.success() {
            failures.push(format!("{}: accepted", c.name));
        } else if !said.contains(fragment.as_str()) {
            failures.push(format!("{}: rejected without {fragment:?}: {said}", c.name));
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    ensure!(checked >= 200, "only {checked} rejecting cases");
    ensure!(failures.is_empty(), "{}", failures.join("\n"));
    ns.cleanup().await
}
