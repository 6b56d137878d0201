//! TiKV rolling updates through the real operator, against real pd-server processes and
//! simulated stores: a version change of PD and TiKV at once goes PD first, then restarts one
//! store at a time (leaders evicted before each Pod goes, same store ids and volumes after); a
//! HotReload config change restarts no Pod; a restart request restarts every store exactly
//! once. Watchers check throughout that PD keeps its quorum and that at most one store is
//! disrupted at any moment.
//!
//! Run with `cargo xtask e2e test tikv_` (the tests are ignored in a plain `cargo test`). Each
//! test starts its own operator, watching only the test's namespace.

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Result, bail, ensure};
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Pod};
use kube::ResourceExt;
use serde_json::json;
use tikv_operator_api::{PDGroup, TiKV, TiKVGroup};
use tikv_operator_e2e::harness::wait_until;
use tikv_operator_e2e::watchers::pd_quorum_watch;
use tikv_operator_e2e::world::World;

use support::*;

#[tokio::test]
#[ignore = "needs the e2e environment: run `cargo xtask e2e test`"]
async fn tikv_version_upgrade_goes_pd_first_one_store_at_a_time() -> Result<()> {
    let w = World::start("kvupgrade").await?;
    let r = version_upgrade(&w).await;
    r.map_err(|e| w.explain(e))?;
    w.finish().await
}

async fn version_upgrade(w: &World) -> Result<()> {
    let members = ready_cluster(w).await?;
    ensure!(members.len() == 3, "instances {members:?}");
    let uids = tikv_pod_uids(w).await?;
    let ids = instance_store_ids(w).await?;
    check_stores(w, &ids, OLD).await?;
    let pvcs = w.api::<PersistentVolumeClaim>();
    let mut pvc_uids = BTreeMap::new();
    for m in &members {
        pvc_uids.insert(m.clone(), pvcs.get(&format!("data-{m}")).await?.uid());
    }

    let pd_members = pd_instance_names(w).await?;
    ensure!(pd_members.len() == 3, "PD instances {pd_members:?}");
    let pd_rev = update_revision(w, "PDGroup").await?;
    let kv_rev = update_revision(w, "TiKVGroup").await?;

    let quorum = pd_quorum_watch(w);
    let pd_one = pd_disruption_watch(w, pd_members);
    let watch = StoreWatch::start(w, members.clone());
    let pd_first = pd_first_watch(w, NEW, uids.clone());
    let started = Instant::now();
    let version = json!({"spec": {"template": {"spec": {"version": NEW}}}});
    patch_merge(&w.api::<PDGroup>(), "pd", version.clone()).await?;
    patch_merge(&w.api::<TiKVGroup>(), "tikv", version).await?;

    wait_pd_rolled_out(w, NEW, pd_rev.as_deref(), Duration::from_secs(600)).await?;
    let pd_done = started.elapsed();
    eprintln!(
        "PDGroup rolled out at {NEW} after {:.1}s",
        pd_done.as_secs_f64()
    );
    let new_uids = wait_all_restarted(w, &uids, NEW, Duration::from_secs(900)).await?;
    wait_kv_rolled_out(w, NEW, kv_rev.as_deref(), Duration::from_secs(300)).await?;
    let kv_done = started.elapsed();
    eprintln!(
        "TiKVGroup rolled out at {NEW} after {:.1}s ({:.1}s after PD)",
        kv_done.as_secs_f64(),
        (kv_done - pd_done).as_secs_f64()
    );
    // Nothing more moves once the rollout is reported done.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let restarts = finish_all(vec![pd_first, quorum, pd_one], watch).await?;
    ensure!(
        members.iter().all(|m| restarts.get(m) == Some(&1)),
        "each TiKV Pod must be recreated exactly once: {restarts:?}"
    );
    ensure!(
        tikv_pod_uids(w).await? == new_uids,
        "TiKV Pods changed after the rollout"
    );

    // Same stores (ids, addresses), now at the new version; same volumes.
    ensure!(
        instance_store_ids(w).await? == ids,
        "instances changed their store ids"
    );
    check_stores(w, &ids, NEW).await?;
    for m in &members {
        let now = pvcs.get(&format!("data-{m}")).await?.uid();
        ensure!(
            now == pvc_uids[m],
            "the PVC of {m} was replaced: {:?} -> {now:?}",
            pvc_uids[m]
        );
    }
    let evicting = evicting_stores(&w.env, &w.api::<Pod>(), &w.pd_addr()).await?;
    ensure!(
        evicting.is_empty(),
        "evict-leader entries left: {evicting:?}"
    );
    let events = wait_restart_events(w, &members).await?;
    eprintln!("TiKV Events: {events:?}");
    for kv in w.list::<TiKV>(None).await? {
        ensure!(
            kv.spec.template.version == NEW,
            "instance {} at {}",
            kv.name_any(),
            kv.spec.template.version
        );
    }
    Ok(())
}

#[tokio::test]
#[ignore = "needs the e2e environment: run `cargo xtask e2e test`"]
async fn tikv_rolling_restart_and_hot_reload() -> Result<()> {
    let w = World::start("kvrestart").await?;
    let r = restart_and_hot_reload(&w).await;
    r.map_err(|e| w.explain(e))?;
    w.finish().await
}

async fn restart_and_hot_reload(w: &World) -> Result<()> {
    let members = ready_cluster(w).await?;
    ensure!(members.len() == 3, "instances {members:?}");
    let ids = instance_store_ids(w).await?;
    let groups = w.api::<TiKVGroup>();

    // HotReload: tikv.toml changes in every ConfigMap, no Pod restarts.
    let watch = StoreWatch::start(w, members.clone());
    let started = Instant::now();
    patch_merge(
        &groups,
        "tikv",
        json!({"spec": {"template": {"spec": {
            "updateStrategy": {"config": "HotReload"},
            "config": "[storage]\nreserve-space = \"1GB\"\n\n[log]\nlevel = \"warn\"\n"
        }}}}),
    )
    .await?;
    let cms = w.api::<ConfigMap>();
    wait_until(
        &w.env,
        "tikv.toml updated in every TiKV ConfigMap",
        Duration::from_secs(120),
        || async {
            for m in &members {
                let toml = cms
                    .get(m)
                    .await?
                    .data
                    .unwrap_or_default()
                    .remove("tikv.toml")
                    .unwrap_or_default();
                if !toml.contains("level = \"warn\"") {
                    bail!("tikv.toml of {m}: {toml}");
                }
            }
            Ok(Some(()))
        },
    )
    .await?;
    wait_kv_rolled_out(w, OLD, None, Duration::from_secs(120)).await?;
    eprintln!(
        "HotReload change rolled out after {:.1}s",
        started.elapsed().as_secs_f64()
    );
    tokio::time::sleep(Duration::from_secs(30)).await;
    let restarts = watch.finish().await?;
    ensure!(
        restarts.values().all(|n| *n == 0) && restarts.len() == members.len(),
        "HotReload restarted Pods: {restarts:?}"
    );

    // A requested rolling restart: every store restarts exactly once, one at a time.
    let uids = tikv_pod_uids(w).await?;
    let quorum = pd_quorum_watch(w);
    let watch = StoreWatch::start(w, members.clone());
    let started = Instant::now();
    patch_merge(
        &groups,
        "tikv",
        json!({"metadata": {"annotations": {"core.tikv.org/restarted-at": "2026-11-22T05:00:00Z"}}}),
    )
    .await?;
    let new_uids = wait_all_restarted(w, &uids, OLD, Duration::from_secs(900)).await?;
    wait_kv_rolled_out(w, OLD, None, Duration::from_secs(300)).await?;
    eprintln!(
        "restart rolled out after {:.1}s",
        started.elapsed().as_secs_f64()
    );
    tokio::time::sleep(Duration::from_secs(10)).await;
    let restarts = finish_all(vec![quorum], watch).await?;
    check_restarted_once(w, &members, &restarts, &new_uids, &ids).await?;
    let events = wait_restart_events(w, &members).await?;
    eprintln!("TiKV Events: {events:?}");
    Ok(())
}
