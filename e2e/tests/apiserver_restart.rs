//! The API server restarted in the middle of a TiKV rolling restart (as a control-plane upgrade
//! or crash would): the operator loses its watches and every write fails for a few seconds.
//! It must neither lose track of the store whose leaders it is evicting nor act on a partial
//! view: the store watcher (PD's and the API server's view, independent of the operator)
//! keeps checking that at most one store is disrupted and that a Pod goes only without
//! leaders; reads that fail during the outage are retried, a broken rule fails the test.
//! At the end every store was restarted exactly once and no evict-leader entry is left.
//!
//! A binary of its own: cargo runs test binaries one after another, so the outage does not
//! disturb other tests. Run with `cargo xtask e2e test apiserver` (ignored in a plain
//! `cargo test`).

mod support;

use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use k8s_openapi::api::core::v1::Pod;
use serde_json::json;
use tikv_operator_api::TiKVGroup;
use tikv_operator_e2e::harness::wait_until;
use tikv_operator_e2e::world::World;

use support::*;

#[tokio::test]
#[ignore = "needs the e2e environment: run `cargo xtask e2e test`"]
async fn rolling_restart_survives_an_api_server_restart() -> Result<()> {
    let mut w = World::start("apiserver").await?;
    let r = restart_mid_rollout(&mut w).await;
    r.map_err(|e| w.explain(e))?;
    w.finish().await
}

async fn restart_mid_rollout(w: &mut World) -> Result<()> {
    let members = ready_cluster(w).await?;
    ensure!(members.len() == 3, "instances {members:?}");
    let ids = instance_store_ids(w).await?;
    let uids = tikv_pod_uids(w).await?;
    let faults = InjectedFaults::default();
    let watch = StoreWatch::start_with(w, members.clone(), faults.clone());

    patch_merge(
        &w.api::<TiKVGroup>(),
        "tikv",
        json!({"metadata": {"annotations": {"core.tikv.org/restarted-at": "2026-12-06T21:30:00Z"}}}),
    )
    .await?;
    // The first store's leaders are being evicted: restart the API server now.
    let (pods, service) = (w.api::<Pod>(), w.pd_addr());
    wait_until(
        &w.env,
        "a TiKV store's leaders being evicted",
        Duration::from_secs(300),
        || async {
            let ev = evicting_stores(&w.env, &pods, &service).await?;
            Ok((!ev.is_empty()).then_some(ev))
        },
    )
    .await?;
    let started = Instant::now();
    faults.api_outage.begin();
    let restarted = w.env.restart_apiserver(Duration::from_secs(5)).await;
    faults.api_outage.end();
    restarted?;
    eprintln!(
        "apiserver restart: API server back after {:.1}s",
        started.elapsed().as_secs_f64()
    );
    ensure!(
        w.operator.running(),
        "the operator exited during the API server outage:\n{}",
        w.operator.log_tail(40)
    );

    let new_uids = wait_all_restarted(w, &uids, OLD, Duration::from_secs(900)).await?;
    wait_kv_rolled_out(w, OLD, None, Duration::from_secs(300)).await?;
    tokio::time::sleep(Duration::from_secs(10)).await;
    let restarts = watch.finish().await?;
    check_restarted_once(w, &members, &restarts, &new_uids, &ids).await?;
    Ok(())
}
