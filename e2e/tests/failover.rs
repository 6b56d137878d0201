//! TiKV store failover against real PD (docs/failover.md): a store whose process stops for good
//! is replaced (a new store first, PD re-replicates, then the failed store is removed through
//! PD), a failed store back before its removal cancels its failover, and two stores down at
//! once are reported, not acted on. The safety watchers run
//! throughout: no TiKV Pod or PVC goes before its store is Tombstone, one removal at a time.
//!
//! PD's `max-store-down-time` and the group's failover period are set short here (20 s each).
//! Run with `cargo xtask e2e test` (the tests are ignored in a plain `cargo test`).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use kube::ResourceExt;
use tikv_operator_api::TiKVGroup;
use tikv_operator_api::tikv::FailoverPhase;
use tikv_operator_e2e::harness::{replicated, wait_until};
use tikv_operator_e2e::world::World;

mod kv;
use kv::*;

#[tokio::test]
#[ignore = "needs the e2e environment: run `cargo xtask e2e test`"]
async fn tikv_failover_replaces_a_stopped_store_and_removes_it_after_tombstone() -> Result<()> {
    let w = World::start("kvfo").await?;
    let victim = std::sync::Mutex::new(None::<String>);
    let r = replace_one(&w, &victim).await;
    if let Some(v) = kv::lock(&victim).take() {
        w.env.start_pod_process(&w.ns.name, &v)?;
    }
    r.map_err(|e| w.explain(e))?;
    w.finish().await
}

async fn replace_one(w: &World, victim_out: &std::sync::Mutex<Option<String>>) -> Result<()> {
    w.ns.apply(&failover_cluster()).await?;
    w.wait_ready("basic", 3, Duration::from_secs(300)).await?;
    replicated(&w.env, &w.pd_addr()).await?;
    let watch = removal_watch(w);
    let one_at_a_time = one_removal_at_a_time(w);
    let kvs = w.tikvs().await?;
    let victim = kvs.first().context("no TiKV instance")?.name_any();
    let victim_store = kvs
        .first()
        .and_then(store_id)
        .context("the victim has no store id")?;
    let before: BTreeSet<String> = kvs.iter().map(ResourceExt::name_any).collect();
    *kv::lock(victim_out) = Some(victim.clone());
    let stopped = Instant::now();
    w.env.kill_pod_process(&w.ns.name, &victim)?;
    // The crash as the kubelet reports it: the Pod turns NotReady.
    w.wait_pod_ready(&victim, false, Duration::from_secs(30))
        .await?;

    // A replacement joins, PD re-replicates, the failed store goes Tombstone, its instance goes.
    wait_replaced(w, &victim, victim_store, Duration::from_secs(420)).await?;
    let took = stopped.elapsed();
    w.wait_ready("basic", 3, Duration::from_secs(180)).await?;
    replicated(&w.env, &w.pd_addr()).await?;

    // What the group reports.
    let replacement = completed_replacement(w, &victim, &before).await?;
    let now: BTreeSet<String> = w.tikvs().await?.iter().map(ResourceExt::name_any).collect();
    ensure!(
        now.contains(&replacement),
        "replacement {replacement} is not a live instance: {now:?}"
    );
    let events = w.event_reasons("involvedObject.kind=TiKVGroup").await?;
    for want in ["FailoverStarted", "FailoverCompleted"] {
        ensure!(events.contains(want), "no {want} Event: {events:?}");
    }
    eprintln!("failover: store stopped -> replaced and removed in {took:?}");
    let one = one_at_a_time.finish().await;
    let safe = watch.finish().await;
    one?;
    safe
}

#[tokio::test]
#[ignore = "needs the e2e environment: run `cargo xtask e2e test`"]
async fn tikv_failover_reports_two_stores_down_at_once_and_acts_on_neither() -> Result<()> {
    let w = World::start("kvfo2").await?;
    let stopped = std::sync::Mutex::new(Vec::<String>::new());
    let r = two_down(&w, &stopped).await;
    for v in kv::lock(&stopped).drain(..) {
        w.env.start_pod_process(&w.ns.name, &v)?;
    }
    r.map_err(|e| w.explain(e))?;
    w.finish().await
}

async fn two_down(w: &World, stopped: &std::sync::Mutex<Vec<String>>) -> Result<()> {
    w.ns.apply(&failover_cluster()).await?;
    w.wait_ready("basic", 3, Duration::from_secs(300)).await?;
    replicated(&w.env, &w.pd_addr()).await?;
    let watch = removal_watch(w);
    let kvs = w.tikvs().await?;
    let before: BTreeSet<String> = kvs.iter().map(ResourceExt::name_any).collect();
    let victims: Vec<String> = kvs.iter().take(2).map(ResourceExt::name_any).collect();
    for v in &victims {
        kv::lock(stopped).push(v.clone());
        w.env.kill_pod_process(&w.ns.name, v)?;
    }
    // Past PD's Disconnected (20 s) and the period (20 s): reported as too many failures.
    wait_until(
        &w.env,
        "the group reports TooManyFailures",
        Duration::from_secs(180),
        || async {
            let g = w.api::<TiKVGroup>().get("tikv").await?;
            let conds = g.status.map(|s| s.common.conditions).unwrap_or_default();
            Ok(condition(&conds, "Failover")
                .is_some_and(|c| c.reason == "TooManyFailures")
                .then_some(()))
        },
    )
    .await?;
    // And it stays so: no instance created or removed, no store taken out in PD.
    let until = Instant::now() + Duration::from_secs(40);
    while Instant::now() < until {
        let names: BTreeSet<String> = w.tikvs().await?.iter().map(ResourceExt::name_any).collect();
        ensure!(
            names == before,
            "instances changed: {before:?} -> {names:?}"
        );
        let stores = w.stores().await?;
        ensure!(
            stores
                .iter()
                .all(|s| s.state != "Offline" && s.state != "Tombstone"),
            "a store is being removed: {stores:?}"
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let g = w.api::<TiKVGroup>().get("tikv").await?;
    let total = g.status.and_then(|s| s.failover).map_or(0, |f| f.total);
    ensure!(total == 0, "status.failover.total {total} after a refusal");
    // The stores come back: the Cluster is Ready again with the same instances.
    for v in kv::lock(stopped).drain(..) {
        w.env.start_pod_process(&w.ns.name, &v)?;
    }
    w.wait_ready("basic", 3, Duration::from_secs(240)).await?;
    let names: BTreeSet<String> = w.tikvs().await?.iter().map(ResourceExt::name_any).collect();
    ensure!(
        names == before,
        "instances changed: {before:?} -> {names:?}"
    );
    watch.finish().await
}

/// The failed store comes back after its replacement was created but before the failed store's
/// removal started: the failover is cancelled. The replacement is held back from serving (its
/// process is kept stopped from the moment its instance appears), so the window is as long as the
/// test needs. Then the original store is kept (it holds the data), the replacement is removed
/// through the ordinary safe removal, and the group is back to its three original instances.
#[tokio::test]
#[ignore = "needs the e2e environment: run `cargo xtask e2e test`"]
async fn tikv_failover_is_cancelled_when_the_failed_store_comes_back_before_its_removal()
-> Result<()> {
    let w = World::start("kvfoback").await?;
    let stopped = std::sync::Mutex::new(Vec::<String>::new());
    let r = come_back(&w, &stopped).await;
    for v in kv::lock(&stopped).drain(..) {
        w.env.start_pod_process(&w.ns.name, &v)?;
    }
    r.map_err(|e| w.explain(e))?;
    w.finish().await
}

async fn come_back(w: &World, stopped: &std::sync::Mutex<Vec<String>>) -> Result<()> {
    w.ns.apply(&failover_cluster()).await?;
    w.wait_ready("basic", 3, Duration::from_secs(300)).await?;
    replicated(&w.env, &w.pd_addr()).await?;
    let watch = removal_watch(w);
    let one_at_a_time = one_removal_at_a_time(w);
    let kvs = w.tikvs().await?;
    let before: BTreeSet<String> = kvs.iter().map(ResourceExt::name_any).collect();
    let victim = kvs.first().context("no TiKV instance")?.name_any();
    let victim_store = kvs
        .first()
        .and_then(store_id)
        .context("the victim has no store id")?;
    kv::lock(stopped).push(victim.clone());
    w.env.kill_pod_process(&w.ns.name, &victim)?;

    // The replacement appears after the period; its process is kept from starting (or stopped
    // at once, if the agent was faster than this poll).
    let replacement = wait_until(
        &w.env,
        "a replacement instance created",
        Duration::from_secs(180),
        || async {
            let names: BTreeSet<String> =
                w.tikvs().await?.iter().map(ResourceExt::name_any).collect();
            Ok(names.difference(&before).next().cloned())
        },
    )
    .await?;
    kv::lock(stopped).push(replacement.clone());
    w.env.stop_pod_process(&w.ns.name, &replacement)?;
    // The failed store comes back.
    w.env.start_pod_process(&w.ns.name, &victim)?;
    kv::lock(stopped).retain(|v| *v != victim);

    wait_until(
        &w.env,
        &format!("failover of {victim} cancelled"),
        Duration::from_secs(120),
        || async {
            let g = w.api::<TiKVGroup>().get("tikv").await?;
            let cancelled = g.status.and_then(|s| s.failover).is_some_and(|f| {
                f.failures
                    .iter()
                    .any(|r| r.instance == victim && r.phase == FailoverPhase::Cancelled)
            });
            Ok(cancelled.then_some(()))
        },
    )
    .await?;
    // The replacement's process runs again, as it would have all along outside this test: its
    // removal waits for its store to register (a running Pod without a store is never deleted
    // blind), then takes it out through PD like any other store.
    kv::lock(stopped).retain(|v| *v != replacement);
    w.env.start_pod_process(&w.ns.name, &replacement)?;
    wait_until(
        &w.env,
        &format!("{replacement} removed, the three original instances left"),
        Duration::from_secs(300),
        || async {
            let names: BTreeSet<String> =
                w.tikvs().await?.iter().map(ResourceExt::name_any).collect();
            Ok((names == before).then_some(()))
        },
    )
    .await?;
    w.wait_ready("basic", 3, Duration::from_secs(180)).await?;
    let stores = w.stores().await?;
    ensure!(
        stores
            .iter()
            .any(|s| s.id == victim_store && s.state == "Up"),
        "the original store {victim_store} is not Up: {stores:?}"
    );
    let g = w.api::<TiKVGroup>().get("tikv").await?;
    let fo = g
        .status
        .and_then(|s| s.failover)
        .context("no status.failover")?;
    ensure!(
        fo.total == 1,
        "status.failover.total {} (a cancelled replacement still counts)",
        fo.total
    );
    let events = w.event_reasons("involvedObject.kind=TiKVGroup").await?;
    for want in ["FailoverStarted", "FailoverCancelled"] {
        ensure!(events.contains(want), "no {want} Event: {events:?}");
    }
    ensure!(
        !events.contains("FailoverRemovingFailedStore"),
        "the failed store's removal started: {events:?}"
    );
    let one = one_at_a_time.finish().await;
    let safe = watch.finish().await;
    one?;
    safe
}
