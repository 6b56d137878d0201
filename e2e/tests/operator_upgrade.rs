//! Upgrading the operator restarts no Pod (issue 23): a Cluster runs under the operator until
//! Ready; the operator is then replaced by one whose rendering differs harmlessly (every
//! rendered container gets an extra environment variable, through the hidden test-only flag
//! `--test-extra-pod-env`). The new operator must patch a template label change onto the
//! running Pods in place, keep their spec, and restart none of them: for two minutes every PD
//! and TiKV Pod keeps its uid and stays Ready, and both groups stay Ready with
//! `updateRevision == currentRevision`.
//!
//! Run with `cargo xtask e2e test operator_upgrade` (ignored in a plain `cargo test`).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Result, bail, ensure};
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::{Patch, PatchParams};
use serde_json::json;
use tikv_operator_api::common::GroupStatus;
use tikv_operator_api::{Cluster, PDGroup, TiKVGroup};
use tikv_operator_e2e::fixtures::BASIC_SMALL;
use tikv_operator_e2e::harness::wait_until;
use tikv_operator_e2e::operator::{OperatorOptions, OperatorProcess};
use tikv_operator_e2e::world::{MANAGED, World};

/// The environment variable the "new" operator adds to every rendered container.
const EXTRA_ENV: &str = "E2E_OPERATOR_UPGRADE";
/// How long no Pod may be restarted after the upgrade.
const QUIET: Duration = Duration::from_secs(120);

fn pod_ready(p: &Pod) -> bool {
    p.metadata.deletion_timestamp.is_none()
        && p.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn condition_true(conds: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition]) -> bool {
    conds
        .iter()
        .any(|c| c.type_ == "Ready" && c.status == "True")
}

/// Both groups Ready, 3 of 3 updated, `updateRevision == currentRevision`; an error says
/// what is not.
async fn groups_settled(w: &World) -> Result<()> {
    let check = |kind: &str, ready: bool, s: &GroupStatus| -> Result<()> {
        ensure!(
            ready
                && s.replicas == 3
                && s.ready_replicas == 3
                && s.updated_replicas == 3
                && s.update_revision.is_some()
                && s.update_revision == s.current_revision,
            "{kind} not settled: Ready={ready}, {s:?}"
        );
        Ok(())
    };
    let pd = w.api::<PDGroup>().get("pd").await?;
    let Some(st) = pd.status else {
        bail!("PDGroup has no status")
    };
    check("PDGroup", condition_true(&st.common.conditions), &st.group)?;
    let kv = w.api::<TiKVGroup>().get("tikv").await?;
    let Some(st) = kv.status else {
        bail!("TiKVGroup has no status")
    };
    check(
        "TiKVGroup",
        condition_true(&st.common.conditions),
        &st.group,
    )
}

/// The operator's Pods (PD and TiKV): name -> Pod.
async fn pods(w: &World) -> Result<BTreeMap<String, Pod>> {
    Ok(w.list::<Pod>(Some(MANAGED))
        .await?
        .into_iter()
        .map(|p| (p.name_any(), p))
        .collect())
}

fn uids(pods: &BTreeMap<String, Pod>) -> BTreeMap<String, String> {
    pods.iter()
        .map(|(n, p)| (n.clone(), p.uid().unwrap_or_default()))
        .collect()
}

#[tokio::test]
#[ignore = "needs the e2e environment: run `cargo xtask e2e test`"]
async fn an_operator_upgrade_restarts_no_pod() -> Result<()> {
    let mut w = World::start("opupgrade").await?;
    let r = operator_upgrade(&mut w).await;
    r.map_err(|e| w.explain(e))?;
    w.finish().await
}

async fn operator_upgrade(w: &mut World) -> Result<()> {
    w.ns.apply(BASIC_SMALL).await?;
    wait_until(
        &w.env,
        "Cluster Ready, 3 PD and 3 TiKV Pods Ready, groups settled",
        Duration::from_secs(300),
        || async {
            let c = w.api::<Cluster>().get("basic").await?;
            let ready = c
                .status
                .as_ref()
                .is_some_and(|s| condition_true(&s.common.conditions));
            ensure!(ready, "Cluster not Ready");
            groups_settled(w).await?;
            let p = pods(w).await?;
            ensure!(
                p.len() == 6 && p.values().all(pod_ready),
                "Pods: {:?}",
                p.iter().map(|(n, p)| (n, pod_ready(p))).collect::<Vec<_>>()
            );
            Ok(Some(()))
        },
    )
    .await?;
    let before = uids(&pods(w).await?);

    // The "new operator version": its rendering adds an environment variable.
    w.operator.stop(Duration::from_secs(10));
    let mut opts = OperatorOptions::for_namespace(&w.ns.name);
    opts.name = format!("{}-upgraded", w.ns.name);
    opts.extra_args = vec![format!("--test-extra-pod-env={EXTRA_ENV}=1")];
    w.operator = OperatorProcess::start(&w.env.layout, &opts)?;

    // A label change in both templates proves the new operator acts: it reaches every Pod in
    // place (metadata only, the running spec kept).
    let label = json!({"spec": {"template": {"metadata": {"labels": {"e2e-upgraded": "yes"}}}}});
    let pp = PatchParams::default();
    w.api::<PDGroup>()
        .patch("pd", &pp, &Patch::Merge(&label))
        .await?;
    w.api::<TiKVGroup>()
        .patch("tikv", &pp, &Patch::Merge(&label))
        .await?;
    wait_until(
        &w.env,
        "the new label on every Pod, groups settled",
        Duration::from_secs(120),
        || async {
            let p = pods(w).await?;
            let missing: Vec<&String> = p
                .iter()
                .filter(|(_, p)| p.labels().get("e2e-upgraded").map(String::as_str) != Some("yes"))
                .map(|(n, _)| n)
                .collect();
            ensure!(missing.is_empty(), "without the label: {missing:?}");
            groups_settled(w).await?;
            Ok(Some(()))
        },
    )
    .await?;

    // For two minutes: no Pod restarted, every Pod Ready, its spec as the old operator
    // rendered it, both groups settled.
    let start = Instant::now();
    while start.elapsed() < QUIET {
        let p = pods(w).await?;
        let now = uids(&p);
        ensure!(
            now == before,
            "Pods changed after the operator upgrade ({:?} in): before {before:?}, now {now:?}",
            start.elapsed()
        );
        for (name, pod) in &p {
            ensure!(pod_ready(pod), "{name} is not Ready");
            let env = pod
                .spec
                .as_ref()
                .and_then(|s| s.containers.first())
                .and_then(|c| c.env.as_ref());
            ensure!(
                !env.is_some_and(|e| e.iter().any(|v| v.name == EXTRA_ENV)),
                "{name}'s spec changed in place"
            );
        }
        groups_settled(w).await?;
        ensure!(w.operator.running(), "the upgraded operator exited");
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    Ok(())
}
