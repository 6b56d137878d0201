//! What the TiKV lifecycle and failover e2e tests share: PD's stores as its HTTP API shows them,
//! the Cluster and group reads, and the safety watchers (no Pod or PVC before Tombstone, one
//! removal at a time).
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use k8s_openapi::api::core::v1::{Node, PersistentVolumeClaim, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::{ListParams, Patch, PatchParams};
use kube::{Api, ResourceExt};
use serde_json::json;
use tikv_operator_api::tikv::{FailoverPhase, StoreState};
use tikv_operator_api::{Cluster, TiKV, TiKVGroup};
use tikv_operator_e2e::fixtures;
use tikv_operator_e2e::harness::{Env, Invariant, wait_until};
use tikv_operator_e2e::watchers::TIKV_PODS;
use tikv_operator_e2e::world::World;

pub use tikv_operator_e2e::harness::PdStore as Store;

/// What the TiKV tests need on top of the shared [`World`].
pub trait KvWorld {
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
        self.env.pd_stores(&self.pd_addr()).await
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

/// The basic example (`BASIC_SMALL`) with PD marking stores Down after 20 s and the TiKVGroup
/// failing over after 20 s.
pub fn failover_cluster() -> String {
    let with = |yaml: &str, anchor: &str, replacement: &str| {
        assert_eq!(
            yaml.matches(anchor).count(),
            1,
            "fixtures::BASIC_SMALL changed: {anchor:?}"
        );
        yaml.replace(anchor, replacement)
    };
    let pd = "        location-labels = [\"zone\"]\n";
    let yaml = with(
        fixtures::BASIC_SMALL,
        pd,
        &format!("{pd}        [schedule]\n        max-store-down-time = \"20s\"\n"),
    );
    let kv = "  replicas: 3\n  template:\n    spec:\n      version: v8.5.5\n      config: |\n        [storage]";
    with(
        &yaml,
        kv,
        &kv.replacen(
            "  template:",
            "  failover:\n    periodSeconds: 20\n  template:",
            1,
        ),
    )
}

/// Waits until the failover of `victim` (store `store`) is through: its store Tombstone in PD,
/// its instance gone, 3 instances and 3 stores Up.
pub async fn wait_replaced(w: &World, victim: &str, store: u64, timeout: Duration) -> Result<()> {
    wait_until(
        &w.env,
        &format!("{victim} replaced: its store {store} Tombstone, its instance gone, 3 stores Up"),
        timeout,
        || async {
            let names: BTreeSet<String> =
                w.tikvs().await?.iter().map(ResourceExt::name_any).collect();
            let stores = w.stores().await?;
            let tomb = stores
                .iter()
                .any(|s| s.id == store && s.state == "Tombstone");
            let up = stores.iter().filter(|s| s.state == "Up").count();
            Ok((tomb && up == 3 && names.len() == 3 && !names.contains(victim)).then_some(()))
        },
    )
    .await
}

/// What the TiKVGroup `tikv` reports after the one replacement of `victim`: `total` 1 and a
/// Completed record naming a replacement that is not among `before`. The replacement's name.
/// The group writes the record on its first reconcile after the failed instance is gone, so
/// this waits for it (a record that never completes, or is lost, fails the test).
pub async fn completed_replacement(
    w: &World,
    victim: &str,
    before: &BTreeSet<String>,
) -> Result<String> {
    wait_until(
        &w.env,
        &format!("a Completed failover record of {victim}"),
        Duration::from_secs(60),
        || async { completed_record(w, victim, before).await.map(Some) },
    )
    .await
}

async fn completed_record(w: &World, victim: &str, before: &BTreeSet<String>) -> Result<String> {
    let g = w.api::<TiKVGroup>().get("tikv").await?;
    let fo = g
        .status
        .and_then(|s| s.failover)
        .context("no status.failover")?;
    ensure!(fo.total == 1, "status.failover.total {}: {fo:?}", fo.total);
    let rec = fo
        .failures
        .iter()
        .find(|f| f.instance == victim)
        .with_context(|| format!("no failure record for {victim}: {fo:?}"))?;
    ensure!(rec.phase == FailoverPhase::Completed, "{rec:?}");
    let replacement = rec.replacement.clone().context("no replacement recorded")?;
    ensure!(!before.contains(&replacement), "{replacement} is not new");
    Ok(replacement)
}

pub fn condition<'a>(conds: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conds.iter().find(|c| c.type_ == type_)
}

pub fn tikv_condition<'a>(kv: &'a TiKV, type_: &str) -> Option<&'a Condition> {
    condition(&kv.status.as_ref()?.common.conditions, type_)
}

pub fn store_id(kv: &TiKV) -> Option<u64> {
    kv.status.as_ref()?.id.as_deref()?.parse().ok()
}

/// The address a TiKV instance's store advertises.
pub fn store_address(ns: &str, group: &str, instance: &str) -> String {
    format!("{instance}.{group}-tikv-peer.{ns}.svc:20160")
}

pub fn group_of(kv: &TiKV) -> String {
    kv.labels()
        .get("core.tikv.org/group")
        .cloned()
        .unwrap_or_default()
}

/// Store ids PD's evict-leader scheduler holds (both namings: one scheduler with a store list,
/// or one scheduler per store).
pub async fn evicting_stores(env: &Env, addr: &str) -> Result<BTreeSet<u64>> {
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
pub async fn check_stores_match(
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
pub async fn wait_events(w: &World, name: &str, want: &[&str]) -> Result<()> {
    let fields = format!("involvedObject.kind=TiKV,involvedObject.name={name}");
    wait_until(
        &w.env,
        &format!("Events {want:?} on {name}"),
        Duration::from_secs(30),
        || async {
            let got = w.event_reasons(&fields).await?;
            if want.iter().all(|r| got.contains(*r)) {
                Ok(Some(()))
            } else {
                bail!("Events of {name}: {got:?}")
            }
        },
    )
    .await
}

pub fn node_label(node: &Node, key: &str) -> String {
    node.labels().get(key).cloned().unwrap_or_default()
}

pub fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// What the watcher knows of one TiKV Pod or PVC: the instance it belongs to.
#[derive(Debug, Clone)]
pub struct Seen {
    instance: String,
    group: String,
}

/// No TiKV Pod or PVC disappears (or starts being deleted) before PD reports its store
/// Tombstone (or no longer lists it, after having listed it).
pub fn removal_watch(w: &World) -> Invariant {
    removal_watch_of(w, true)
}

/// No TiKV PVC disappears (or starts being deleted) before PD reports its store Tombstone. For
/// tests where something other than the operator deletes Pods: the pod garbage collector
/// deletes the Pods of a Node that is gone, whatever their stores are doing.
pub fn pvc_removal_watch(w: &World) -> Invariant {
    removal_watch_of(w, false)
}

fn removal_watch_of(w: &World, with_pods: bool) -> Invariant {
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
        if with_pods {
            "no TiKV Pod or PVC goes before its store is Tombstone"
        } else {
            "no TiKV PVC goes before its store is Tombstone"
        },
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
                let pods = if with_pods {
                    pods.list(&lp).await?.items
                } else {
                    Vec::new()
                };
                for p in pods {
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
                let stores = match env.pd_stores(&addr).await {
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

/// PD never removes two of the Cluster's stores at once (two Offline at the same moment), and
/// never evicts the leaders of two live stores at once (two removals started in the same instant
/// on one PD view would: the operator re-checks PD's entries under its per-Cluster eviction gate).
/// PD's evict-leader entries are read before its stores: a store that is not Tombstone in the
/// later store listing was not Tombstone when the entries were read either (Tombstone is final),
/// so two such stores in the entries were evicting together at that moment.
pub fn one_removal_at_a_time(w: &World) -> Invariant {
    let (env, addr) = (w.env.clone(), w.pd_addr());
    Invariant::watch(
        "at most one store being removed or evicting in PD",
        Duration::from_millis(300),
        move || {
            let (env, addr) = (env.clone(), addr.clone());
            async move {
                let evicting = evicting_stores(&env, &addr).await.ok();
                let Ok(stores) = env.pd_stores(&addr).await else {
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
