//! The operator's TiKV layer against real pd-server processes and simulated stores: the basic
//! example reaches Ready with labelled stores and refuses to go below `max-replicas`; scale-in
//! is safe (no Pod or PVC goes before its store is Tombstone) and cancellable; the
//! heterogeneous example's groups carry their own store labels, and scaled in at the same
//! moment they remove one store at a time, Cluster-wide.
//!
//! Run with `cargo xtask e2e test tikv_` (the tests are ignored in a plain `cargo test`). Each
//! test starts its own operator, watching only the test's namespace.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use kube::ResourceExt;
use kube::api::{ListParams, Patch, PatchParams};
use serde_json::json;
use tikv_operator_api::{Cluster, TiKV, TiKVGroup};
use tikv_operator_e2e::fixtures::BASIC_SMALL as BASIC;
use tikv_operator_e2e::harness::{fixture, wait_until};
use tikv_operator_e2e::watchers::TIKV_PODS;
use tikv_operator_e2e::world::World;

mod kv;
use kv::*;
#[tokio::test]
#[ignore = "needs the e2e environment: run `cargo xtask e2e test`"]
async fn tikv_basic_cluster_ready_with_labelled_stores_and_refuses_below_max_replicas() -> Result<()>
{
    let w = World::start("kvbasic").await?;
    let r = basic_ready_and_refusal(&w).await;
    r.map_err(|e| w.explain(e))?;
    w.finish().await
}

async fn basic_ready_and_refusal(w: &World) -> Result<()> {
    w.ns.apply(BASIC).await?;
    w.wait_ready("basic", 3, Duration::from_secs(300)).await?;

    // PD names `zone` as its location label; every store carries the zone of its node.
    let repl = w
        .env
        .pd_get(&w.pd_addr(), "/pd/api/v1/config/replicate")
        .await?;
    ensure!(
        repl["location-labels"].as_str() == Some("zone") && repl["max-replicas"] == 3,
        "PD replication config {repl}"
    );
    wait_until(
        &w.env,
        "every store Up with its node's zone, matching its instance",
        Duration::from_secs(60),
        || {
            check_stores_match(w, |_, node| {
                BTreeMap::from([(
                    "zone".to_owned(),
                    node_label(node, "topology.kubernetes.io/zone"),
                )])
            })
        },
    )
    .await?;
    let c = w.api::<Cluster>().get("basic").await?;
    let comps = c.status.map(|s| s.components).unwrap_or_default();
    let kv = comps.iter().find(|c| c.kind == "TiKV");
    ensure!(
        kv.is_some_and(|k| k.replicas == 3 && k.ready_replicas == 3),
        "components {comps:?}"
    );

    // 3 -> 2 with max-replicas 3: refused and reported; nothing is removed.
    let pods_before: BTreeSet<String> = w
        .api::<Pod>()
        .list(&ListParams::default().labels(TIKV_PODS))
        .await?
        .items
        .iter()
        .filter_map(|p| p.uid())
        .collect();
    ensure!(pods_before.len() == 3);
    w.set_replicas("tikv", 2).await?;
    let groups = w.api::<TiKVGroup>();
    wait_until(
        &w.env,
        "the TiKVGroup reporting BelowMaxReplicas",
        Duration::from_secs(60),
        || {
            let groups = groups.clone();
            async move {
                let g = groups.get("tikv").await?;
                let conds = g.status.map(|s| s.common.conditions).unwrap_or_default();
                Ok(condition(&conds, "Progressing")
                    .is_some_and(|c| c.status == "True" && c.reason == "BelowMaxReplicas")
                    .then_some(()))
            }
        },
    )
    .await?;
    let started = std::time::Instant::now();
    while started.elapsed() < Duration::from_secs(20) {
        let stores = w.stores().await?;
        let up = stores.iter().filter(|s| s.state == "Up").count();
        ensure!(up == 3, "stores after a refused scale-in: {stores:?}");
        let pods: BTreeSet<String> = w
            .api::<Pod>()
            .list(&ListParams::default().labels(TIKV_PODS))
            .await?
            .items
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .filter_map(|p| p.uid())
            .collect();
        ensure!(
            pods == pods_before,
            "TiKV Pods changed: {pods_before:?} -> {pods:?}"
        );
        let kvs = w.tikvs().await?;
        ensure!(
            kvs.len() == 3 && kvs.iter().all(|k| !k.spec.offline),
            "instances after a refused scale-in: {:?}",
            kvs.iter()
                .map(|k| (k.name_any(), k.spec.offline))
                .collect::<Vec<_>>()
        );
        let g = groups.get("tikv").await?;
        let conds = g.status.map(|s| s.common.conditions).unwrap_or_default();
        let p = condition(&conds, "Progressing");
        ensure!(
            p.is_some_and(|c| c.status == "True" && c.reason == "BelowMaxReplicas"),
            "the refusal is no longer reported: {p:?}"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    Ok(())
}

#[tokio::test]
#[ignore = "needs the e2e environment: run `cargo xtask e2e test`"]
async fn tikv_scale_out_and_in_safely_with_a_cancelled_scale_in() -> Result<()> {
    // Leader eviction bounded at 20 s (default 5 min): in about one run in three here PD's
    // evict-leader scheduler moved none of the chosen store's leaders with the schedule
    // limits this test sets to 0 (the operator waited on "evicting 5 Region leader(s)" for
    // the whole 120 s wait below). The removal proceeding after the timeout is the
    // operator's designed behaviour; the stall itself is noted in issue #20's notes.
    let w = World::start_with("kvscale", &["--tikv-evict-leader-timeout", "20s"]).await?;
    let r = scale_in_out_cancel(&w).await;
    r.map_err(|e| w.explain(e))?;
    w.finish().await
}

/// 3 -> 4; then a scale-in to 3 cancelled while PD is moving the chosen store's Regions away:
/// the `core.tikv.org/delete-priority` annotation steers the choice to a store holding
/// Regions, and PD's `replica-schedule-limit` and `region-schedule-limit` are 0 meanwhile, so
/// the store stays Offline until the test lets it go (a simulated store drains in seconds);
/// then 4 -> 3 to the end. A watcher asserts throughout that no TiKV Pod or PVC goes before
/// its store is Tombstone.
async fn scale_in_out_cancel(w: &World) -> Result<()> {
    w.ns.apply(BASIC).await?;
    w.wait_ready("basic", 3, Duration::from_secs(300)).await?;
    let watch = removal_watch(w);

    w.set_replicas("tikv", 4).await?;
    w.wait_ready("basic", 4, Duration::from_secs(180)).await?;
    let four: BTreeMap<String, Option<String>> = w
        .tikvs()
        .await?
        .iter()
        .map(|k| (k.name_any(), k.uid()))
        .collect();
    ensure!(four.len() == 4);

    // The store to remove holds data: steer the choice with the delete-priority annotation.
    let addr = w.pd_addr();
    let stores = wait_until(
        &w.env,
        "a store with Regions",
        Duration::from_secs(60),
        || async {
            let s = w.stores().await?;
            Ok(s.iter()
                .any(|s| s.regions > 0 && s.state == "Up")
                .then_some(s))
        },
    )
    .await?;
    let kvs = w.tikvs().await?;
    let victim = kvs
        .iter()
        .find(|k| {
            stores
                .iter()
                .any(|s| Some(s.id) == store_id(k) && s.regions > 0)
        })
        .context("no instance with Regions")?;
    let victim_name = victim.name_any();
    let victim_id = store_id(victim).context("victim without store id")?;
    let victim_pod_uid = w.api::<Pod>().get(&victim_name).await?.uid();
    w.api::<TiKV>()
        .patch(
            &victim_name,
            &PatchParams::default(),
            &Patch::Merge(
                json!({"metadata": {"annotations": {"core.tikv.org/delete-priority": "100"}}}),
            ),
        )
        .await?;
    // Hold the Regions where they are while the removal is to be cancelled (the replica
    // checker drains an Offline store, balance-region may move peers off it too).
    let cfg = w.env.pd_get(&addr, "/pd/api/v1/config/schedule").await?;
    let limits = json!({
        "replica-schedule-limit": cfg["replica-schedule-limit"].as_u64().unwrap_or(64),
        "region-schedule-limit": cfg["region-schedule-limit"].as_u64().unwrap_or(2048),
    });
    w.env
        .pd_post(
            &addr,
            "/pd/api/v1/config",
            &json!({"replica-schedule-limit": 0, "region-schedule-limit": 0}),
        )
        .await?;
    // The annotation and the replica change come through different watches: let the
    // operator's cache see the annotation first.
    tokio::time::sleep(Duration::from_secs(2)).await;

    // 4 -> 3: the victim goes offline and PD starts removing its store.
    w.set_replicas("tikv", 3).await?;
    let kv_api = w.api::<TiKV>();
    wait_until(
        &w.env,
        "the chosen store being removed (Offline in PD, StoreRemoving on the instance)",
        Duration::from_secs(120),
        || async {
            let kv = kv_api.get(&victim_name).await?;
            let removing = tikv_condition(&kv, "Offline")
                .is_some_and(|c| c.status == "True" && c.reason == "StoreRemoving");
            let s = w.stores().await?;
            let offline = s.iter().any(|s| s.id == victim_id && s.state == "Offline");
            Ok((kv.spec.offline && removing && offline).then_some(()))
        },
    )
    .await?;

    // Back to 4 before Tombstone: the same instance stays and its store returns to Up.
    w.set_replicas("tikv", 4).await?;
    wait_until(
        &w.env,
        "the removal cancelled: store Up, instance back in service",
        Duration::from_secs(120),
        || async {
            let kv = kv_api.get(&victim_name).await?;
            let s = w.stores().await?;
            let up = s.iter().any(|s| s.id == victim_id && s.state == "Up");
            let ready = tikv_condition(&kv, "Ready").is_some_and(|c| c.status == "True");
            let not_offline = tikv_condition(&kv, "Offline").is_none_or(|c| c.status == "False");
            Ok((!kv.spec.offline && up && ready && not_offline).then_some(()))
        },
    )
    .await?;
    wait_events(
        w,
        &victim_name,
        &["OfflineRequested", "StoreRemoving", "RemovalCancelled"],
    )
    .await?;
    tokio::time::sleep(Duration::from_secs(10)).await;
    let evicting = evicting_stores(&w.env, &addr).await?;
    ensure!(
        !evicting.contains(&victim_id),
        "an evict-leader entry for store {victim_id} was left: {evicting:?}"
    );
    let after: BTreeMap<String, Option<String>> = w
        .tikvs()
        .await?
        .iter()
        .map(|k| (k.name_any(), k.uid()))
        .collect();
    ensure!(
        after == four,
        "instances changed by the cancellation: {four:?} -> {after:?}"
    );
    ensure!(
        w.api::<Pod>().get(&victim_name).await?.uid() == victim_pod_uid,
        "the chosen instance's Pod was replaced"
    );
    let s = w.stores().await?;
    ensure!(
        s.iter().filter(|s| s.state == "Up").count() == 4,
        "stores after the cancellation: {s:?}"
    );

    // 4 -> 3 to the end, Regions moving away from the chosen store.
    w.env.pd_post(&addr, "/pd/api/v1/config", &limits).await?;
    w.set_replicas("tikv", 3).await?;
    w.wait_ready("basic", 3, Duration::from_secs(240)).await?;
    let pods = w.api::<Pod>();
    let pvcs = w.api::<PersistentVolumeClaim>();
    wait_until(
        &w.env,
        "the removed instance, its Pod and PVC gone",
        Duration::from_secs(60),
        || async {
            let gone = kv_api.get_opt(&victim_name).await?.is_none()
                && pods.get_opt(&victim_name).await?.is_none()
                && pvcs
                    .get_opt(&format!("data-{victim_name}"))
                    .await?
                    .is_none();
            Ok(gone.then_some(()))
        },
    )
    .await?;
    let s = w.stores().await?;
    ensure!(
        s.iter().filter(|s| s.state == "Up").count() == 3
            && s.iter()
                .find(|s| s.id == victim_id)
                .is_none_or(|s| s.state == "Tombstone"),
        "stores at the end: {s:?}"
    );
    wait_events(w, &victim_name, &["StoreTombstoned"]).await?;
    let evicting = evicting_stores(&w.env, &addr).await?;
    ensure!(
        evicting.is_empty(),
        "evict-leader entries left: {evicting:?}"
    );
    watch.finish().await?;
    Ok(())
}

#[tokio::test]
#[ignore = "needs the e2e environment: run `cargo xtask e2e test`"]
async fn tikv_heterogeneous_groups_carry_their_labels_and_scale_in_together() -> Result<()> {
    let w = World::start("kvhetero").await?;
    let r = heterogeneous(&w).await;
    r.map_err(|e| w.explain(e))?;
    w.finish().await
}

async fn heterogeneous(w: &World) -> Result<()> {
    // The example as shipped, on the environment's only provisioned StorageClass.
    let yaml = fixture("../examples/heterogeneous/cluster.yaml")?
        .replace("storageClassName: fast-ssd", "storageClassName: e2e-local")
        .replace(
            "storageClassName: standard-hdd",
            "storageClassName: e2e-local",
        );
    w.ns.apply(&yaml).await?;
    w.wait_ready("hetero", 6, Duration::from_secs(360)).await?;
    wait_until(
        &w.env,
        "each group's stores with the group's labels and their node's zone and host",
        Duration::from_secs(60),
        || {
            check_stores_match(w, |kv, node| {
                let mut want = kv.spec.template.server.clone().unwrap_or_default().labels;
                want.insert(
                    "zone".into(),
                    node_label(node, "topology.kubernetes.io/zone"),
                );
                want.insert("host".into(), node_label(node, "kubernetes.io/hostname"));
                want
            })
        },
    )
    .await?;
    let kvs = w.tikvs().await?;
    for (group, disk) in [("ssd", "ssd"), ("hdd", "hdd")] {
        let n = kvs
            .iter()
            .filter(|k| group_of(k) == group)
            .filter(|k| {
                k.spec
                    .template
                    .server
                    .as_ref()
                    .and_then(|s| s.labels.get("disk"))
                    == Some(&disk.to_owned())
            })
            .count();
        ensure!(n == 3, "{n} instances of group {group} with disk={disk}");
    }

    // Both groups scaled in at the same moment: one store leaves at a time, Cluster-wide,
    // and no Pod or PVC goes before its store is Tombstone.
    let watch = removal_watch(w);
    let one_at_a_time = one_removal_at_a_time(w);
    let (a, b) = tokio::join!(w.set_replicas("ssd", 2), w.set_replicas("hdd", 2));
    a?;
    b?;
    wait_until(
        &w.env,
        "2 instances per group, PD with 4 Up stores and 2 Tombstone ones",
        Duration::from_secs(600),
        || async {
            let kvs = w.tikvs().await?;
            let per_group = |g: &str| kvs.iter().filter(|k| group_of(k) == g).count();
            let stores = w.stores().await?;
            let up = stores.iter().filter(|s| s.state == "Up").count();
            let tomb = stores.iter().filter(|s| s.state == "Tombstone").count();
            Ok(
                (per_group("ssd") == 2 && per_group("hdd") == 2 && up == 4 && tomb == 2)
                    .then_some(()),
            )
        },
    )
    .await?;
    w.wait_ready("hetero", 4, Duration::from_secs(300)).await?;
    let one = one_at_a_time.finish().await;
    let safe = watch.finish().await;
    one?;
    safe?;
    Ok(())
}

#[tokio::test]
#[ignore = "needs the e2e environment: run `cargo xtask e2e test`"]
async fn tikv_foreground_and_concurrent_deletions_wait_for_tombstone() -> Result<()> {
    let w = World::start("kvfg").await?;
    let r = foreground_and_concurrent(&w).await;
    r.map_err(|e| w.explain(e))?;
    w.finish().await
}

/// Two TiKV instances deleted by hand at the same moment, one of them with
/// `--cascade=foreground` (the garbage collector then deletes the instance's dependents
/// before the instance): watchers assert that no Pod or PVC goes before its store is
/// Tombstone, and that PD never has two stores being removed at once. The group replaces both.
async fn foreground_and_concurrent(w: &World) -> Result<()> {
    w.ns.apply(BASIC).await?;
    w.wait_ready("basic", 3, Duration::from_secs(300)).await?;
    w.set_replicas("tikv", 5).await?;
    w.wait_ready("basic", 5, Duration::from_secs(240)).await?;
    let watch = removal_watch(w);
    let one_at_a_time = one_removal_at_a_time(w);
    let kvs = w.tikvs().await?;
    let victims: Vec<String> = kvs.iter().take(2).map(ResourceExt::name_any).collect();
    let ids: Vec<u64> = kvs.iter().take(2).filter_map(store_id).collect();
    ensure!(ids.len() == 2, "victims without store ids: {victims:?}");
    let n = w.ns.name.clone();
    w.env.kubectl(&[
        "-n",
        &n,
        "delete",
        "tikv",
        &victims[0],
        "--cascade=foreground",
        "--wait=false",
    ])?;
    w.env
        .kubectl(&["-n", &n, "delete", "tikv", &victims[1], "--wait=false"])?;
    wait_until(
        &w.env,
        "both deleted instances gone and their stores Tombstone",
        Duration::from_secs(600),
        || async {
            let names: BTreeSet<String> =
                w.tikvs().await?.iter().map(ResourceExt::name_any).collect();
            let stores = w.stores().await?;
            let tomb = ids.iter().all(|id| {
                stores
                    .iter()
                    .find(|s| s.id == *id)
                    .is_none_or(|s| s.state == "Tombstone")
            });
            Ok((tomb && victims.iter().all(|v| !names.contains(v))).then_some(()))
        },
    )
    .await?;
    w.wait_ready("basic", 5, Duration::from_secs(300)).await?;
    let one = one_at_a_time.finish().await;
    let safe = watch.finish().await;
    one?;
    safe?;
    Ok(())
}
