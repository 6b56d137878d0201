//! The operator's TiKV layer against real pd-server processes and simulated stores: the basic
//! example reaches Ready with labelled stores and refuses to go below `max-replicas`; scale-in
//! is safe (no Pod or PVC goes before its store is Tombstone) and cancellable; the
//! heterogeneous example's groups carry their own store labels, and scaled in at the same
//! moment they remove one store at a time, Cluster-wide.
//!
//! Run with `cargo xtask e2e test tikv_` (the tests are ignored in a plain `cargo test`). Each
//! test starts its own operator, watching only the test's namespace.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use k8s_openapi::api::core::v1::{Event, Node, PersistentVolumeClaim, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::{ListParams, Patch, PatchParams};
use kube::{Api, ResourceExt};
use serde_json::json;
use tikv_operator_api::tikv::StoreState;
use tikv_operator_api::{Cluster, TiKV, TiKVGroup};
use tikv_operator_e2e::fixtures::BASIC_SMALL as BASIC;
use tikv_operator_e2e::harness::{Env, Invariant, fixture, wait_until};
use tikv_operator_e2e::watchers::TIKV_PODS;
use tikv_operator_e2e::world::World;

/// A store as PD's HTTP API shows it, with its labels.
#[derive(Debug, Clone)]
struct Store {
    id: u64,
    address: String,
    state: String,
    regions: u64,
    labels: BTreeMap<String, String>,
}

/// What the TiKV tests need on top of the shared [`World`].
trait KvWorld {
    async fn set_replicas(&self, group: &str, n: i32) -> Result<()>;
    async fn tikvs(&self) -> Result<Vec<TiKV>>;
    async fn stores(&self) -> Result<Vec<Store>>;
    async fn wait_ready(&self, cluster: &str, tikv: i32, timeout: Duration) -> Result<()>;
}

impl KvWorld for World {
    async fn set_replicas(&self, group: &str, n: i32) -> Result<()> {
        self.api::<TiKVGroup>()
            .patch(
                group,
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"replicas": n}})),
            )
            .await?;
        Ok(())
    }

    async fn tikvs(&self) -> Result<Vec<TiKV>> {
        Ok(self.api::<TiKV>().list(&ListParams::default()).await?.items)
    }

    async fn stores(&self) -> Result<Vec<Store>> {
        pd_stores(&self.env, &self.pd_addr()).await
    }

    /// Waits until the Cluster is Ready, reports `tikv` TiKV instances all ready, and PD lists
    /// exactly that many Up stores.
    async fn wait_ready(&self, cluster: &str, tikv: i32, timeout: Duration) -> Result<()> {
        let what = format!("Cluster {cluster} Ready with {tikv} TiKV stores Up");
        wait_until(&self.env, &what, timeout, || async move {
            let c = self.api::<Cluster>().get(cluster).await?;
            let Some(st) = c.status else { return Ok(None) };
            let ready =
                condition(&st.common.conditions, "Ready").is_some_and(|c| c.status == "True");
            let kv = st.components.iter().find(|c| c.kind == "TiKV");
            let kv_ok = kv.is_some_and(|k| k.replicas == tikv && k.ready_replicas == tikv);
            let up = self
                .stores()
                .await?
                .iter()
                .filter(|s| s.state == "Up")
                .count();
            let n = usize::try_from(tikv)?;
            Ok((ready && kv_ok && up == n && self.tikvs().await?.len() == n).then_some(()))
        })
        .await
    }
}

fn condition<'a>(conds: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conds.iter().find(|c| c.type_ == type_)
}

fn tikv_condition<'a>(kv: &'a TiKV, type_: &str) -> Option<&'a Condition> {
    condition(&kv.status.as_ref()?.common.conditions, type_)
}

fn store_id(kv: &TiKV) -> Option<u64> {
    kv.status.as_ref()?.id.as_deref()?.parse().ok()
}

/// The address a TiKV instance's store advertises.
fn store_address(ns: &str, group: &str, instance: &str) -> String {
    format!("{instance}.{group}-tikv-peer.{ns}.svc:20160")
}

fn group_of(kv: &TiKV) -> String {
    kv.labels()
        .get("core.tikv.org/group")
        .cloned()
        .unwrap_or_default()
}

/// Every store PD knows (Tombstone ones included), with labels.
async fn pd_stores(env: &Env, addr: &str) -> Result<Vec<Store>> {
    let v = env
        .pd_get(addr, "/pd/api/v1/stores?state=0&state=1&state=2")
        .await?;
    Ok(v["stores"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| Store {
            id: s["store"]["id"].as_u64().unwrap_or_default(),
            address: s["store"]["address"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            state: s["store"]["state_name"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            regions: s["status"]["region_count"].as_u64().unwrap_or_default(),
            labels: s["store"]["labels"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|l| {
                    Some((
                        l["key"].as_str()?.to_owned(),
                        l["value"].as_str()?.to_owned(),
                    ))
                })
                .collect(),
        })
        .collect())
}

/// Store ids PD's evict-leader scheduler holds (both namings: one scheduler with a store list,
/// or one scheduler per store).
async fn evicting_stores(env: &Env, addr: &str) -> Result<BTreeSet<u64>> {
    let names = env.pd_get(addr, "/pd/api/v1/schedulers").await?;
    let names: Vec<String> = names
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|n| n.as_str().map(str::to_owned))
        .collect();
    let mut out = BTreeSet::new();
    for n in &names {
        if let Some(id) = n.strip_prefix("evict-leader-scheduler-") {
            out.extend(id.parse::<u64>().ok());
        }
    }
    if names.iter().any(|n| n == "evict-leader-scheduler") {
        let cfg = env
            .pd_get(
                addr,
                "/pd/api/v1/scheduler-config/evict-leader-scheduler/list",
            )
            .await?;
        if let Some(m) = cfg["store-id-ranges"].as_object() {
            out.extend(m.keys().filter_map(|k| k.parse::<u64>().ok()));
        }
    }
    Ok(out)
}

/// Checks every TiKV instance against PD: its store (found by address) is Up with the id the
/// instance recorded, the instance reports Serving, and the store carries `want(instance)`
/// (the group's labels and the location labels of the Pod's node).
async fn check_stores_match(
    w: &World,
    want: impl Fn(&TiKV, &Node) -> BTreeMap<String, String>,
) -> Result<Option<()>> {
    let stores = w.stores().await?;
    let nodes: Api<Node> = Api::all(w.env.client.clone());
    for kv in w.tikvs().await? {
        let name = kv.name_any();
        let addr = store_address(&w.ns.name, &group_of(&kv), &name);
        let Some(s) = stores.iter().find(|s| s.address == addr) else {
            bail!("no store in PD with address {addr}");
        };
        ensure!(s.state == "Up", "store {} of {name} is {}", s.id, s.state);
        if store_id(&kv) != Some(s.id) {
            bail!("{name} records store {:?}, PD has {}", store_id(&kv), s.id);
        }
        let state = kv.status.as_ref().and_then(|s| s.state);
        if state != Some(StoreState::Serving) {
            bail!("{name} reports state {state:?}");
        }
        let pod = w.api::<Pod>().get(&name).await?;
        let node_name = pod
            .spec
            .and_then(|s| s.node_name)
            .context("TiKV Pod not scheduled")?;
        let node = nodes.get(&node_name).await?;
        for (k, v) in want(&kv, &node) {
            if s.labels.get(&k) != Some(&v) {
                bail!(
                    "store {} of {name} (node {node_name}) has labels {:?}, expected {k}={v}",
                    s.id,
                    s.labels
                );
            }
        }
    }
    Ok(Some(()))
}

/// Waits until the Events of TiKV instance `name` include every reason of `want`.
async fn wait_events(w: &World, name: &str, want: &[&str]) -> Result<()> {
    let events = w.api::<Event>();
    let lp = ListParams::default().fields(&format!(
        "involvedObject.kind=TiKV,involvedObject.name={name}"
    ));
    wait_until(
        &w.env,
        &format!("Events {want:?} on {name}"),
        Duration::from_secs(30),
        || async {
            let got: BTreeSet<String> = events
                .list(&lp)
                .await?
                .items
                .into_iter()
                .filter_map(|e| e.reason)
                .collect();
            if want.iter().all(|r| got.contains(*r)) {
                Ok(Some(()))
            } else {
                bail!("Events of {name}: {got:?}")
            }
        },
    )
    .await
}

fn node_label(node: &Node, key: &str) -> String {
    node.labels().get(key).cloned().unwrap_or_default()
}

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

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// What the watcher knows of one TiKV Pod or PVC: the instance it belongs to.
#[derive(Debug, Clone)]
struct Seen {
    instance: String,
    group: String,
}

/// No TiKV Pod or PVC disappears (or starts being deleted) before PD reports its store
/// Tombstone (or no longer lists it, after having listed it).
fn removal_watch(w: &World) -> Invariant {
    let env = w.env.clone();
    let ns = w.ns.name.clone();
    let addr = w.pd_addr();
    let pods = w.api::<Pod>();
    let pvcs = w.api::<PersistentVolumeClaim>();
    let kvs = w.api::<TiKV>();
    // object key ("pod/<name>", "pvc/<name>") -> owner; instance -> store id once known.
    let seen: Arc<Mutex<BTreeMap<String, Seen>>> = Arc::default();
    let ids: Arc<Mutex<BTreeMap<String, u64>>> = Arc::default();
    let pending: Arc<Mutex<BTreeMap<String, u32>>> = Arc::default();
    Invariant::watch(
        "no TiKV Pod or PVC goes before its store is Tombstone",
        Duration::from_millis(500),
        move || {
            let (env, ns, addr, pods, pvcs, kvs) = (
                env.clone(),
                ns.clone(),
                addr.clone(),
                pods.clone(),
                pvcs.clone(),
                kvs.clone(),
            );
            let (seen, ids, pending) = (seen.clone(), ids.clone(), pending.clone());
            async move {
                for kv in kvs.list(&ListParams::default()).await?.items {
                    if let Some(id) = store_id(&kv) {
                        lock(&ids).insert(kv.name_any(), id);
                    }
                }
                let lp = ListParams::default().labels(TIKV_PODS);
                let mut present = BTreeMap::new();
                for p in pods.list(&lp).await?.items {
                    let l = p.labels();
                    let owner = Seen {
                        instance: l.get("core.tikv.org/instance").cloned().unwrap_or_default(),
                        group: l.get("core.tikv.org/group").cloned().unwrap_or_default(),
                    };
                    let deleting = p.metadata.deletion_timestamp.is_some();
                    present.insert(format!("pod/{}", p.name_any()), (owner, deleting));
                }
                for c in pvcs.list(&lp).await?.items {
                    let l = c.labels();
                    let owner = Seen {
                        instance: l.get("core.tikv.org/instance").cloned().unwrap_or_default(),
                        group: l.get("core.tikv.org/group").cloned().unwrap_or_default(),
                    };
                    let deleting = c.metadata.deletion_timestamp.is_some();
                    present.insert(format!("pvc/{}", c.name_any()), (owner, deleting));
                }
                let mut gone: Vec<(String, Seen)> = Vec::new();
                {
                    let mut seen = lock(&seen);
                    for (k, (owner, deleting)) in &present {
                        seen.insert(k.clone(), owner.clone());
                        if *deleting {
                            gone.push((k.clone(), owner.clone()));
                        }
                    }
                    for (k, owner) in seen.iter() {
                        if !present.contains_key(k) {
                            gone.push((k.clone(), owner.clone()));
                        }
                    }
                }
                if gone.is_empty() {
                    return Ok(());
                }
                let stores = match pd_stores(&env, &addr).await {
                    Ok(s) if !s.is_empty() => s,
                    other => {
                        // PD did not answer: check at the next tick, but not for long.
                        let mut p = lock(&pending);
                        for (k, _) in &gone {
                            let n = p.entry(k.clone()).or_insert(0);
                            *n += 1;
                            if *n > 4 {
                                bail!("{k} went and PD cannot be asked: {other:?}");
                            }
                        }
                        return Ok(());
                    }
                };
                let ids = lock(&ids).clone();
                let mut seen = lock(&seen);
                for (k, owner) in gone {
                    let addr = store_address(&ns, &owner.group, &owner.instance);
                    let id = ids.get(&owner.instance).copied();
                    let store = stores
                        .iter()
                        .find(|s| Some(s.id) == id || s.address == addr);
                    match store {
                        Some(s) if s.state == "Tombstone" => {}
                        Some(s) => bail!(
                            "{k} (instance {}) is going while PD reports its store {} {} \
                             ({} regions)",
                            owner.instance,
                            s.id,
                            s.state,
                            s.regions
                        ),
                        // Purged after Tombstone: only if the store was known to be ours.
                        None if id.is_some() => {}
                        None => bail!(
                            "{k} (instance {}) is going and its store was never seen in PD",
                            owner.instance
                        ),
                    }
                    if !present.contains_key(&k) {
                        seen.remove(&k);
                    }
                    lock(&pending).remove(&k);
                }
                Ok(())
            }
        },
    )
}

#[tokio::test]
#[ignore = "needs the e2e environment: run `cargo xtask e2e test`"]
async fn tikv_scale_out_and_in_safely_with_a_cancelled_scale_in() -> Result<()> {
    let w = World::start("kvscale").await?;
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

/// PD never removes two of the Cluster's stores at once (two Offline at the same moment), and
/// never evicts the leaders of two live stores at once (two removals started in the same instant
/// on one PD view would: the operator re-checks PD's entries under its per-Cluster eviction gate).
/// PD's evict-leader entries are read before its stores: a store that is not Tombstone in the
/// later store listing was not Tombstone when the entries were read either (Tombstone is final),
/// so two such stores in the entries were evicting together at that moment.
fn one_removal_at_a_time(w: &World) -> Invariant {
    let (env, addr) = (w.env.clone(), w.pd_addr());
    Invariant::watch(
        "at most one store being removed or evicting in PD",
        Duration::from_millis(300),
        move || {
            let (env, addr) = (env.clone(), addr.clone());
            async move {
                let evicting = evicting_stores(&env, &addr).await.ok();
                let Ok(stores) = pd_stores(&env, &addr).await else {
                    return Ok(());
                };
                let removing: Vec<u64> = stores
                    .iter()
                    .filter(|s| s.state == "Offline")
                    .map(|s| s.id)
                    .collect();
                ensure!(removing.len() <= 1, "stores removed at once: {removing:?}");
                if let Some(evicting) = evicting {
                    let live: Vec<u64> = stores
                        .iter()
                        .filter(|s| evicting.contains(&s.id) && s.state != "Tombstone")
                        .map(|s| s.id)
                        .collect();
                    ensure!(
                        live.len() <= 1,
                        "the leaders of two live stores evicted at once: {live:?} (entries {evicting:?})"
                    );
                }
                Ok(())
            }
        },
    )
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
