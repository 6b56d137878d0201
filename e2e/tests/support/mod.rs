//! Shared helpers and watchers of the TiKV rolling-update and chaos e2e tests: PD reads that
//! survive a PD rolling update, the store disruption watcher, PD watchers and waits.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use k8s_openapi::api::core::v1::{Event, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::{ListParams, Patch, PatchParams};
use kube::{Api, ResourceExt};
use tikv_operator_api::{Cluster, PDGroup, TiKV, TiKVGroup};
use tikv_operator_e2e::fixtures::BASIC_SMALL as CLUSTER;
use tikv_operator_e2e::harness::{Env, Invariant, Outage, replicated, wait_until};
use tikv_operator_e2e::holds;
use tikv_operator_e2e::watchers::{PD_PODS, TIKV_PODS, pd_members_not_answering};
use tikv_operator_e2e::world::World;

pub const OLD: &str = "v8.5.5";
pub const NEW: &str = "v8.5.6";

pub fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

pub fn condition<'a>(conds: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conds.iter().find(|c| c.type_ == type_)
}

pub fn condition_true(conds: &[Condition], type_: &str) -> bool {
    condition(conds, type_).is_some_and(|c| c.status == "True")
}

pub fn store_id(kv: &TiKV) -> Option<u64> {
    kv.status.as_ref()?.id.as_deref()?.parse().ok()
}

pub fn pod_ready(p: &Pod) -> bool {
    p.metadata.deletion_timestamp.is_none()
        && p.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// The image tag of the Pod's (first) container, e.g. `v8.5.5`.
pub fn image_tag(p: &Pod) -> String {
    p.spec
        .as_ref()
        .and_then(|s| s.containers.first())
        .and_then(|c| c.image.as_deref())
        .and_then(|i| i.rsplit_once(':'))
        .map(|(_, t)| t.to_owned())
        .unwrap_or_default()
}

pub fn created_secs(p: &Pod) -> i64 {
    p.metadata
        .creation_timestamp
        .as_ref()
        .map_or(0, |t| t.0.as_second())
}

pub fn uid(p: &Pod) -> String {
    p.uid().unwrap_or_default()
}

/// GET `path` from the first PD that answers: the PD client Service, then every PD Pod
/// (during a PD rolling update the Service's Pod may be the one restarting).
pub async fn pd_get_any(
    env: &Env,
    pods: &Api<Pod>,
    service: &str,
    path: &str,
) -> Result<serde_json::Value> {
    let mut last = match env.pd_get(service, path).await {
        Ok(v) => return Ok(v),
        Err(e) => format!("{e:#}"),
    };
    let list = pods.list(&ListParams::default().labels(PD_PODS)).await?;
    for p in list
        .items
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
    {
        let Some(ip) = p.status.as_ref().and_then(|s| s.pod_ip.clone()) else {
            continue;
        };
        match env.pd_get(&format!("{ip}:2379"), path).await {
            Ok(v) => return Ok(v),
            Err(e) => last = format!("{e:#}"),
        }
    }
    bail!("no PD answered {path}: {last}")
}

/// A store as PD's HTTP API shows it.
#[derive(Debug, Clone)]
pub struct StoreView {
    pub id: u64,
    pub address: String,
    pub state: String,
    pub version: String,
    pub leaders: u64,
    /// `start_timestamp` (unix seconds) of the process that last registered the store.
    pub start: i64,
}

pub async fn stores(env: &Env, pods: &Api<Pod>, service: &str) -> Result<Vec<StoreView>> {
    let v = pd_get_any(
        env,
        pods,
        service,
        "/pd/api/v1/stores?state=0&state=1&state=2",
    )
    .await?;
    Ok(v["stores"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| StoreView {
            id: s["store"]["id"].as_u64().unwrap_or_default(),
            address: s["store"]["address"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            state: s["store"]["state_name"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            version: s["store"]["version"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            leaders: s["status"]["leader_count"].as_u64().unwrap_or_default(),
            start: s["store"]["start_timestamp"].as_i64().unwrap_or_default(),
        })
        .collect())
}

/// Store ids PD's evict-leader scheduler holds (both namings: one scheduler with a store list,
/// or one scheduler per store); no scheduler = none.
///
/// A new PD leader lists no scheduler at all until it has collected Region heartbeats and
/// loaded the persisted schedulers (a few seconds after a leader change). What it will load
/// is then read from PD's own storage: the evict-leader scheduler's config in PD's embedded
/// etcd (`/pd/<cluster id>/scheduler_config/evict-leader-scheduler`).
pub async fn evicting_stores(env: &Env, pods: &Api<Pod>, service: &str) -> Result<BTreeSet<u64>> {
    let names = pd_get_any(env, pods, service, "/pd/api/v1/schedulers").await?;
    let names: Vec<String> = names
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|n| n.as_str().map(str::to_owned))
        .collect();
    if names.is_empty() {
        return persisted_evicting_stores(env, pods, service).await;
    }
    let mut out = BTreeSet::new();
    for n in &names {
        if let Some(id) = n.strip_prefix("evict-leader-scheduler-") {
            out.extend(id.parse::<u64>().ok());
        }
    }
    if names.iter().any(|n| n == "evict-leader-scheduler") {
        let cfg = pd_get_any(
            env,
            pods,
            service,
            "/pd/api/v1/scheduler-config/evict-leader-scheduler/list",
        )
        .await?;
        if let Some(m) = cfg["store-id-ranges"].as_object() {
            out.extend(m.keys().filter_map(|k| k.parse::<u64>().ok()));
        }
    }
    Ok(out)
}

/// The stores of the evict-leader scheduler's config as PD persisted it (read from the embedded
/// etcd's JSON gateway, `POST /v3/kv/range`); none when nothing is persisted.
pub async fn persisted_evicting_stores(
    env: &Env,
    pods: &Api<Pod>,
    service: &str,
) -> Result<BTreeSet<u64>> {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let members = pd_get_any(env, pods, service, "/pd/api/v1/members").await?;
    let Some(cluster_id) = members["header"]["cluster_id"].as_u64() else {
        bail!("PD's members answer has no cluster id: {members}");
    };
    let key = format!("/pd/{cluster_id}/scheduler_config/evict-leader-scheduler");
    let body = serde_json::json!({ "key": b64.encode(&key) });
    let mut last = String::new();
    let mut addrs = vec![service.to_owned()];
    for p in pods
        .list(&ListParams::default().labels(PD_PODS))
        .await?
        .items
    {
        if let Some(ip) = p.status.and_then(|s| s.pod_ip) {
            addrs.push(format!("{ip}:2379"));
        }
    }
    for addr in &addrs {
        let text = match env.pd_post(addr, "/v3/kv/range", &body).await {
            Ok(t) => t,
            Err(e) => {
                last = format!("{e:#}");
                continue;
            }
        };
        let v: serde_json::Value = serde_json::from_str(&text)?;
        let mut out = BTreeSet::new();
        for kv in v["kvs"].as_array().into_iter().flatten() {
            let raw = b64.decode(kv["value"].as_str().unwrap_or_default())?;
            let cfg: serde_json::Value = serde_json::from_slice(&raw)?;
            if let Some(m) = cfg["store-id-ranges"].as_object() {
                out.extend(m.keys().filter_map(|k| k.parse::<u64>().ok()));
            }
        }
        return Ok(out);
    }
    bail!("no PD member answered the read of {key}: {last}")
}

/// How long store states PD reports are not trusted after its leader changed: a new PD leader
/// loads the stores' last heartbeat times from storage (persisted every few minutes), so it
/// reports every store Disconnected until each heartbeats it again.
pub const PD_LEADER_CHANGE_GRACE: Duration = Duration::from_secs(30);

/// What the store watcher remembers between polls.
#[derive(Debug, Default)]
pub struct WatchState {
    /// Instance -> store id, once its status names one.
    ids: BTreeMap<String, u64>,
    /// PD's leader at the last poll and when it was last seen changing.
    pd_leader: Option<String>,
    pd_leader_changed: Option<Instant>,
    /// Pod UIDs already seen going (deleted or replaced).
    gone: BTreeSet<String>,
    /// Instance -> the UID of its Pod at the last poll.
    last_uid: BTreeMap<String, String>,
}

/// Watches the TiKV instances of the test: at most one store disrupted at any moment, where a
/// store is disrupted when its Pod is missing, being deleted or not Ready; or PD reports its
/// store other than Up; or its Pod was recreated and the new process has not registered the
/// store with PD yet (PD's `start_timestamp` older than the Pod). A Pod that goes must have had
/// its leaders evicted (PD counts none on its store when the Pod is seen going), and its store
/// stays in PD's evict-leader scheduler until the store is back (a new Pod whose process
/// registered the store again). Records every Pod UID seen per instance (restarts = UIDs - 1).
pub struct StoreWatch {
    invariant: Invariant,
    uids: Arc<Mutex<BTreeMap<String, Vec<String>>>>,
    most: Arc<AtomicUsize>,
    checked_deletions: Arc<Mutex<Vec<String>>>,
}

/// Faults a test injects that the store watcher must know of.
#[derive(Debug, Clone, Default)]
pub struct InjectedFaults {
    /// Instances whose process the test stopped behind a live Pod. Such a store is restarted
    /// without a leader eviction (PD cannot move leaders off a store that does not
    /// heartbeat, and raft already moved them), so it has no evict-leader entry to keep.
    pub stopped: Arc<Mutex<BTreeSet<String>>>,
    /// A window in which the API server is down on purpose: failed reads are retried.
    pub api_outage: Outage,
}

impl StoreWatch {
    pub fn start(w: &World, members: BTreeSet<String>) -> Self {
        Self::start_with(w, members, InjectedFaults::default())
    }

    pub fn start_with(w: &World, members: BTreeSet<String>, faults: InjectedFaults) -> Self {
        let env = w.env.clone();
        let service = w.pd_addr();
        let pods = w.api::<Pod>();
        let kvs = w.api::<TiKV>();
        let uids: Arc<Mutex<BTreeMap<String, Vec<String>>>> = Arc::default();
        let most = Arc::new(AtomicUsize::new(0));
        let checked: Arc<Mutex<Vec<String>>> = Arc::default();
        let state: Arc<Mutex<WatchState>> = Arc::default();
        let (uids2, most2, checked2) = (uids.clone(), most.clone(), checked.clone());
        let stopped = faults.stopped.clone();
        let invariant = Invariant::watch_through(
            "at most one TiKV store disrupted, leaders evicted before its Pod goes",
            Duration::from_millis(300),
            faults.api_outage.clone(),
            move || {
                let (env, service, pods, kvs, members, stopped) = (
                    env.clone(),
                    service.clone(),
                    pods.clone(),
                    kvs.clone(),
                    members.clone(),
                    stopped.clone(),
                );
                let (uids, most, checked, state) = (
                    uids2.clone(),
                    most2.clone(),
                    checked2.clone(),
                    state.clone(),
                );
                async move {
                    let list = pods.list(&ListParams::default().labels(TIKV_PODS)).await?;
                    let by_name: BTreeMap<String, Pod> =
                        list.items.into_iter().map(|p| (p.name_any(), p)).collect();
                    for kv in kvs.list(&ListParams::default()).await?.items {
                        if let Some(id) = store_id(&kv) {
                            lock(&state).ids.insert(kv.name_any(), id);
                        }
                    }
                    {
                        let mut u = lock(&uids);
                        for (name, p) in &by_name {
                            let seen = u.entry(name.clone()).or_default();
                            if !seen.contains(&uid(p)) {
                                seen.push(uid(p));
                            }
                        }
                    }
                    // Pods seen going for the first time, and disruptions the Pods show.
                    let mut going: Vec<(String, String)> = Vec::new();
                    let mut down: BTreeMap<String, String> = BTreeMap::new();
                    {
                        let mut st = lock(&state);
                        for m in &members {
                            let p = by_name.get(m);
                            let cur = p.map(uid);
                            if let Some(prev) = st.last_uid.get(m).cloned()
                                && cur.as_ref() != Some(&prev)
                                && !st.gone.contains(&prev)
                            {
                                going.push((m.clone(), prev));
                            }
                            match p {
                                None => {
                                    down.insert(m.clone(), "Pod missing".into());
                                }
                                Some(p) => {
                                    if p.metadata.deletion_timestamp.is_some() {
                                        down.insert(m.clone(), "Pod being deleted".into());
                                        if !st.gone.contains(&uid(p)) {
                                            going.push((m.clone(), uid(p)));
                                        }
                                    } else if !pod_ready(p) {
                                        down.insert(m.clone(), "Pod not Ready".into());
                                    }
                                    st.last_uid.insert(m.clone(), uid(p));
                                }
                            }
                        }
                    }
                    // PD's view (skipped when PD does not answer: the quorum watcher judges
                    // PD's availability).
                    if let Ok(stores) = stores(&env, &pods, &service).await {
                        let leader = pd_get_any(&env, &pods, &service, "/pd/api/v1/leader")
                            .await
                            .ok()
                            .and_then(|l| l["name"].as_str().map(str::to_owned));
                        let ids = {
                            let mut st = lock(&state);
                            if let Some(l) = leader {
                                if st.pd_leader.as_ref().is_some_and(|old| *old != l) {
                                    st.pd_leader_changed = Some(Instant::now());
                                }
                                st.pd_leader = Some(l);
                            }
                            st.ids.clone()
                        };
                        let trust_state = lock(&state)
                            .pd_leader_changed
                            .is_none_or(|t| t.elapsed() > PD_LEADER_CHANGE_GRACE);
                        // Instances whose store has not come back since its Pod went.
                        let mut not_back = BTreeSet::new();
                        for m in &members {
                            let Some(id) = ids.get(m) else { continue };
                            let Some(s) = stores.iter().find(|s| s.id == *id) else {
                                down.entry(m.clone())
                                    .or_insert_with(|| format!("store {id} not in PD"));
                                continue;
                            };
                            if s.state != "Up" && trust_state {
                                down.entry(m.clone())
                                    .or_insert_with(|| format!("store {id} {}", s.state));
                            }
                            match by_name.get(m) {
                                Some(p) if p.metadata.deletion_timestamp.is_none() => {
                                    if s.start < created_secs(p) {
                                        not_back.insert(m.clone());
                                        down.entry(m.clone()).or_insert_with(|| {
                                            format!(
                                                "store {id} not registered yet by the new Pod's \
                                                 process (store started {}, Pod created {})",
                                                s.start,
                                                created_secs(p)
                                            )
                                        });
                                    }
                                }
                                _ => {
                                    not_back.insert(m.clone());
                                }
                            }
                        }
                        let evicting = if not_back.is_empty() {
                            None
                        } else {
                            evicting_stores(&env, &pods, &service).await.ok()
                        };
                        // A store whose Pod went keeps its evict-leader entry until it serves
                        // again (PD would otherwise move leaders back onto it). The entry was
                        // read after the Pods and stores: a store without one must still be
                        // not back when asked again (then it was not back when the entry was
                        // read either).
                        if let Some(ev) = &evicting {
                            let stopped = lock(&stopped).clone();
                            let missing: BTreeMap<String, u64> = not_back
                                .iter()
                                .filter(|m| !stopped.contains(*m))
                                .filter_map(|m| Some((m.clone(), *ids.get(m)?)))
                                .filter(|(_, id)| !ev.contains(id))
                                .collect();
                            if !missing.is_empty() {
                                let still =
                                    stores_not_back(&env, &pods, &service, &missing).await?;
                                if let Some((m, why)) = still.iter().next() {
                                    holds!(
                                        false,
                                        "store {} of {m} is not back yet ({why}) but is not in \
                                         PD's evict-leader scheduler (evicting: {ev:?}): the entry \
                                         must stay until the restarted store serves again",
                                        missing[m]
                                    );
                                }
                            }
                        }
                        for (m, u) in going.iter().filter(|(m, _)| not_back.contains(m)) {
                            let Some(id) = ids.get(m) else { continue };
                            let Some(s) = stores.iter().find(|s| s.id == *id) else {
                                continue;
                            };
                            holds!(
                                s.leaders == 0,
                                "the Pod of {m} ({u}) went while PD counted {} leader(s) on its \
                                 store {id}",
                                s.leaders
                            );
                            lock(&checked).push(format!(
                                "{m}: Pod {u} went with 0 leaders on store {id}, evicting: \
                                 {evicting:?}"
                            ));
                        }
                    }
                    {
                        let mut st = lock(&state);
                        st.gone.extend(going.into_iter().map(|(_, u)| u));
                    }
                    most.fetch_max(down.len(), Ordering::SeqCst);
                    holds!(down.len() <= 1, "TiKV stores disrupted at once: {down:?}");
                    Ok(())
                }
            },
        );
        Self {
            invariant,
            uids,
            most,
            checked_deletions: checked,
        }
    }

    /// Stops watching; the number of Pods each instance had beyond its first.
    pub async fn finish(self) -> Result<BTreeMap<String, usize>> {
        self.invariant.finish().await?;
        eprintln!(
            "store watch: at most {} store(s) disrupted at once; deletions checked: {:#?}",
            self.most.load(Ordering::SeqCst),
            lock(&self.checked_deletions)
        );
        let uids = lock(&self.uids);
        Ok(uids
            .iter()
            .map(|(k, v)| (k.clone(), v.len().saturating_sub(1)))
            .collect())
    }
}

/// Which of `stores` (instance -> store id) are not back from a restart, asked now: the Pod
/// missing, being deleted or not Ready, or PD's `start_timestamp` of the store older than the
/// Pod (its process has not registered the store again yet).
pub async fn stores_not_back(
    env: &Env,
    pods: &Api<Pod>,
    service: &str,
    ids: &BTreeMap<String, u64>,
) -> Result<BTreeMap<String, String>> {
    let list: BTreeMap<String, Pod> = pods
        .list(&ListParams::default().labels(TIKV_PODS))
        .await?
        .items
        .into_iter()
        .map(|p| (p.name_any(), p))
        .collect();
    let st = stores(env, pods, service).await?;
    let mut out = BTreeMap::new();
    for (m, id) in ids {
        let why = match list.get(m) {
            None => Some("Pod missing".to_owned()),
            Some(p) if p.metadata.deletion_timestamp.is_some() => {
                Some("Pod being deleted".to_owned())
            }
            Some(p) if !pod_ready(p) => Some("Pod not Ready".to_owned()),
            Some(p) => st
                .iter()
                .find(|s| s.id == *id)
                .filter(|s| s.start < created_secs(p))
                .map(|s| {
                    format!(
                        "not registered again by the new Pod's process: store started {}, Pod \
                         created {}",
                        s.start,
                        created_secs(p)
                    )
                }),
        };
        if let Some(why) = why {
            out.insert(m.clone(), why);
        }
    }
    Ok(out)
}

/// PD first: no TiKV store is touched (an evict-leader entry appears, a TiKV Pod goes, is
/// replaced or runs `new`) while some PD Pod does not run `new` yet, PD does not report all
/// its members healthy, or the PDGroup does not report its rollout to `new` done.
pub fn pd_first_watch(w: &World, new: &'static str, before: BTreeMap<String, String>) -> Invariant {
    let env = w.env.clone();
    let service = w.pd_addr();
    let pods = w.api::<Pod>();
    let groups = w.api::<PDGroup>();
    let started = Instant::now();
    let done = Arc::new(AtomicBool::new(false));
    Invariant::watch(
        "no TiKV store touched before PD finished its upgrade",
        Duration::from_millis(400),
        move || {
            let (env, service, pods, groups, before, done) = (
                env.clone(),
                service.clone(),
                pods.clone(),
                groups.clone(),
                before.clone(),
                done.clone(),
            );
            async move {
                if done.load(Ordering::SeqCst) {
                    return Ok(());
                }
                // TiKV first, then PD: a TiKV change seen here happened before PD is read.
                let kv: BTreeMap<String, Pod> = pods
                    .list(&ListParams::default().labels(TIKV_PODS))
                    .await?
                    .items
                    .into_iter()
                    .map(|p| (p.name_any(), p))
                    .collect();
                let mut changed = Vec::new();
                for (name, u) in &before {
                    match kv.get(name) {
                        None => changed.push(format!("{name}: Pod missing")),
                        Some(p) if uid(p) != *u => changed.push(format!("{name}: Pod replaced")),
                        Some(p) if p.metadata.deletion_timestamp.is_some() => {
                            changed.push(format!("{name}: Pod being deleted"));
                        }
                        Some(p) if image_tag(p) == new => {
                            changed.push(format!("{name}: Pod runs {new}"));
                        }
                        Some(_) => {}
                    }
                }
                if let Ok(ev) = evicting_stores(&env, &pods, &service).await
                    && !ev.is_empty()
                {
                    changed.push(format!("evict-leader entries for stores {ev:?}"));
                }
                if changed.is_empty() {
                    return Ok(());
                }
                let pd: Vec<Pod> = pods
                    .list(&ListParams::default().labels(PD_PODS))
                    .await?
                    .items;
                let old: Vec<String> = pd
                    .iter()
                    .filter(|p| p.metadata.deletion_timestamp.is_some() || image_tag(p) != new)
                    .map(|p| format!("{} ({})", p.name_any(), image_tag(p)))
                    .collect();
                let live_new = pd
                    .iter()
                    .filter(|p| p.metadata.deletion_timestamp.is_none() && image_tag(p) == new)
                    .count();
                ensure!(
                    old.is_empty() && live_new == 3,
                    "TiKV touched ({changed:?}) while PD Pods are not all at {new}: old or going \
                     {old:?}, {live_new} at {new}"
                );
                // Twice, as in the disruption watch: one slow answer is not a member down.
                let mut silent = pd_members_not_answering(&env, &pods).await;
                if silent.as_ref().is_ok_and(|s| !s.is_empty()) {
                    let again = pd_members_not_answering(&env, &pods).await?;
                    if let Ok(first) = &mut silent {
                        first.retain(|m, _| again.contains_key(m));
                    }
                }
                ensure!(
                    silent.as_ref().is_ok_and(BTreeMap::is_empty),
                    "TiKV touched ({changed:?}) while PD members do not all answer: \
                     {silent:?}"
                );
                let g = groups.get("pd").await?;
                let st = g.status.map(|s| s.group).unwrap_or_default();
                ensure!(
                    st.update_revision.is_some()
                        && st.current_revision == st.update_revision
                        && st.version.as_deref() == Some(new),
                    "TiKV touched ({changed:?}) while the PDGroup does not report its rollout \
                     done: current {:?}, update {:?}, version {:?}",
                    st.current_revision,
                    st.update_revision,
                    st.version
                );
                eprintln!(
                    "pd-first watch: TiKV first touched {:.1}s after the change ({changed:?}), \
                     PD done",
                    started.elapsed().as_secs_f64()
                );
                done.store(true, Ordering::SeqCst);
                Ok(())
            }
        },
    )
}

/// At most one PD member disrupted at any moment: its Pod missing, being deleted or not
/// Ready, or its member not answering at the Pod's IP in two probes in a row (see
/// `pd_members_not_answering`; one slow answer is not a disruption, a restart is several).
pub fn pd_disruption_watch(w: &World, members: BTreeSet<String>) -> Invariant {
    let env = w.env.clone();
    let pods = w.api::<Pod>();
    let previous: Arc<Mutex<BTreeSet<String>>> = Arc::default();
    Invariant::watch(
        "at most one PD member disrupted",
        Duration::from_millis(400),
        move || {
            let (env, pods, members, previous) =
                (env.clone(), pods.clone(), members.clone(), previous.clone());
            async move {
                let list = pods.list(&ListParams::default().labels(PD_PODS)).await?;
                let mut down: BTreeMap<String, String> = BTreeMap::new();
                for m in &members {
                    match list.items.iter().find(|p| p.name_any() == *m) {
                        None => {
                            down.insert(m.clone(), "Pod missing".into());
                        }
                        Some(p) if p.metadata.deletion_timestamp.is_some() => {
                            down.insert(m.clone(), "Pod being deleted".into());
                        }
                        Some(p) if !pod_ready(p) => {
                            down.insert(m.clone(), "Pod not Ready".into());
                        }
                        Some(_) => {}
                    }
                }
                let silent = pd_members_not_answering(&env, &pods).await?;
                let before =
                    std::mem::replace(&mut *lock(&previous), silent.keys().cloned().collect());
                for (m, why) in silent {
                    if members.contains(&m) && before.contains(&m) {
                        down.entry(m).or_insert(why);
                    }
                }
                ensure!(down.len() <= 1, "PD members disrupted at once: {down:?}");
                Ok(())
            }
        },
    )
}

/// Waits until the Cluster is Ready, with 3 TiKV instances whose stores PD lists Up.
pub async fn wait_cluster_ready(w: &World, timeout: Duration) -> Result<()> {
    let pods = w.api::<Pod>();
    let service = w.pd_addr();
    wait_until(
        &w.env,
        "Cluster Ready with 3 TiKV stores Up",
        timeout,
        || async {
            let c = w.api::<Cluster>().get("basic").await?;
            let Some(st) = c.status else { return Ok(None) };
            let ready = condition_true(&st.common.conditions, "Ready");
            let kv = st.components.iter().find(|c| c.kind == "TiKV");
            let kv_ok = kv.is_some_and(|k| k.replicas == 3 && k.ready_replicas == 3);
            let up = stores(&w.env, &pods, &service)
                .await?
                .iter()
                .filter(|s| s.state == "Up")
                .count();
            let n = w.list::<TiKV>(None).await?.len();
            Ok((ready && kv_ok && up == 3 && n == 3).then_some(()))
        },
    )
    .await
}

/// Waits until the PDGroup reports every member updated to its template at `version`, for its
/// current generation, with an update revision other than `not_rev` (the one before a change).
pub async fn wait_pd_rolled_out(
    w: &World,
    version: &str,
    not_rev: Option<&str>,
    timeout: Duration,
) -> Result<()> {
    let groups = w.api::<PDGroup>();
    wait_until(
        &w.env,
        &format!("PDGroup rolled out at {version}"),
        timeout,
        || async {
            let g = groups.get("pd").await?;
            let generation = g.metadata.generation;
            let Some(st) = g.status else {
                bail!("no status")
            };
            let s = &st.group;
            let done = st.common.observed_generation == generation
                && s.updated_replicas == 3
                && s.ready_replicas == 3
                && s.update_revision.is_some()
                && s.update_revision.as_deref() != not_rev
                && s.update_revision == s.current_revision
                && s.version.as_deref() == Some(version)
                && condition_true(&st.common.conditions, "Ready");
            if done {
                Ok(Some(()))
            } else {
                bail!(
                    "PDGroup status {s:?}, observedGeneration {:?} of {generation:?}",
                    st.common.observed_generation
                )
            }
        },
    )
    .await
}

/// Waits until the TiKVGroup reports every store updated to its template at `version`:
/// revisions equal (the update revision other than `not_rev`, the one before a change), 3
/// updated, current and ready, Ready, Progressing False/Synced, for the group's current
/// generation.
pub async fn wait_kv_rolled_out(
    w: &World,
    version: &str,
    not_rev: Option<&str>,
    timeout: Duration,
) -> Result<()> {
    let groups = w.api::<TiKVGroup>();
    wait_until(
        &w.env,
        &format!("TiKVGroup rolled out at {version}"),
        timeout,
        || async {
            let g = groups.get("tikv").await?;
            let generation = g.metadata.generation;
            let Some(st) = g.status else {
                bail!("no status")
            };
            let s = &st.group;
            let progressing = condition(&st.common.conditions, "Progressing");
            let done = st.common.observed_generation == generation
                && s.updated_replicas == 3
                && s.current_replicas == 3
                && s.ready_replicas == 3
                && s.update_revision.is_some()
                && s.update_revision.as_deref() != not_rev
                && s.update_revision == s.current_revision
                && s.version.as_deref() == Some(version)
                && condition_true(&st.common.conditions, "Ready")
                && progressing.is_some_and(|c| c.status == "False" && c.reason == "Synced");
            if done {
                Ok(Some(()))
            } else {
                bail!(
                    "TiKVGroup status {s:?}, observedGeneration {:?} of {generation:?}, \
                     Progressing {:?}",
                    st.common.observed_generation,
                    progressing.map(|c| (&c.status, &c.reason, &c.message))
                )
            }
        },
    )
    .await
}

/// Waits until every instance of `before` (name -> Pod UID) has a new, Ready Pod whose image
/// tag is `version`; returns the new UIDs.
pub async fn wait_all_restarted(
    w: &World,
    before: &BTreeMap<String, String>,
    version: &str,
    timeout: Duration,
) -> Result<BTreeMap<String, String>> {
    let pods = w.api::<Pod>();
    wait_until(
        &w.env,
        &format!("every TiKV Pod recreated, Ready, at {version}"),
        timeout,
        || async {
            let now: BTreeMap<String, Pod> = pods
                .list(&ListParams::default().labels(TIKV_PODS))
                .await?
                .items
                .into_iter()
                .map(|p| (p.name_any(), p))
                .collect();
            let mut pending = Vec::new();
            for (name, u) in before {
                match now.get(name) {
                    Some(p) if uid(p) != *u && pod_ready(p) && image_tag(p) == version => {}
                    Some(p) => pending.push(format!(
                        "{name}: {} ready={} image {}",
                        if uid(p) == *u { "old Pod" } else { "new Pod" },
                        pod_ready(p),
                        image_tag(p)
                    )),
                    None => pending.push(format!("{name}: no Pod")),
                }
            }
            if pending.is_empty() {
                Ok(Some(now.iter().map(|(n, p)| (n.clone(), uid(p))).collect()))
            } else {
                bail!("waiting for {pending:?}")
            }
        },
    )
    .await
}

/// TiKV Pod UIDs by instance name.
pub async fn tikv_pod_uids(w: &World) -> Result<BTreeMap<String, String>> {
    Ok(w.list::<Pod>(Some(TIKV_PODS))
        .await?
        .iter()
        .map(|p| (p.name_any(), uid(p)))
        .collect())
}

/// Store ids by instance name, as the instances report them.
pub async fn instance_store_ids(w: &World) -> Result<BTreeMap<String, u64>> {
    w.list::<TiKV>(None)
        .await?
        .iter()
        .map(|kv| {
            let id = store_id(kv).with_context(|| format!("{} without store id", kv.name_any()))?;
            Ok((kv.name_any(), id))
        })
        .collect()
}

pub fn store_address(ns: &str, instance: &str) -> String {
    format!("{instance}.tikv-tikv-peer.{ns}.svc:20160")
}

/// Checks, with retries (PD may lag a heartbeat), that every instance's store is Up in PD
/// under its old id and address, running `version` (PD's form, without `v`).
pub async fn check_stores(w: &World, ids: &BTreeMap<String, u64>, version: &str) -> Result<()> {
    let pods = w.api::<Pod>();
    let service = w.pd_addr();
    let want = version.trim_start_matches('v');
    wait_until(
        &w.env,
        &format!("every store Up under its old id, at {want}"),
        Duration::from_secs(60),
        || async {
            let s = stores(&w.env, &pods, &service).await?;
            for (name, id) in ids {
                let addr = store_address(&w.ns.name, name);
                let Some(st) = s.iter().find(|s| s.address == addr) else {
                    bail!("no store with address {addr}: {s:?}");
                };
                ensure!(
                    st.id == *id,
                    "{name}'s store changed id: {id} -> {} ({s:?})",
                    st.id
                );
                ensure!(
                    st.state == "Up" && st.version == want,
                    "store {id} of {name}: {st:?}"
                );
            }
            let up = s.iter().filter(|s| s.state == "Up").count();
            ensure!(up == ids.len(), "stores: {s:?}");
            Ok(Some(()))
        },
    )
    .await
}

/// Event reasons on each TiKV instance.
pub async fn tikv_events(w: &World) -> Result<BTreeMap<String, BTreeSet<String>>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for e in w.list::<Event>(None).await? {
        if e.involved_object.kind.as_deref() != Some("TiKV") {
            continue;
        }
        let name = e.involved_object.name.clone().unwrap_or_default();
        out.entry(name).or_default().extend(e.reason);
    }
    Ok(out)
}

/// Waits (Events are written asynchronously) until every instance has a `Restarting` Event
/// and some instance has an `EvictingLeaders` Event; returns the reasons per instance.
pub async fn wait_restart_events(
    w: &World,
    members: &BTreeSet<String>,
) -> Result<BTreeMap<String, BTreeSet<String>>> {
    wait_until(
        &w.env,
        "Restarting Events on every TiKV instance and EvictingLeaders Events",
        Duration::from_secs(30),
        || async {
            let ev = tikv_events(w).await?;
            let restarting = members
                .iter()
                .all(|m| ev.get(m).is_some_and(|r| r.contains("Restarting")));
            let evicting = ev.values().any(|r| r.contains("EvictingLeaders"));
            if restarting && evicting {
                Ok(Some(ev))
            } else {
                bail!("TiKV Events: {ev:?}")
            }
        },
    )
    .await
}

pub async fn patch_merge<K>(api: &Api<K>, name: &str, patch: serde_json::Value) -> Result<()>
where
    K: Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    api.patch(name, &PatchParams::default(), &Patch::Merge(patch))
        .await?;
    Ok(())
}

/// The group's `status.updateRevision` (`kind` PDGroup `pd` or TiKVGroup `tikv`).
pub async fn update_revision(w: &World, kind: &str) -> Result<Option<String>> {
    Ok(if kind == "PDGroup" {
        let g = w.api::<PDGroup>().get("pd").await?;
        g.status.and_then(|s| s.group.update_revision)
    } else {
        let g = w.api::<TiKVGroup>().get("tikv").await?;
        g.status.and_then(|s| s.group.update_revision)
    })
}

/// Stops every watcher and fails with all their violations; the store watcher's restarts.
pub async fn finish_all(
    invariants: Vec<Invariant>,
    stores: StoreWatch,
) -> Result<BTreeMap<String, usize>> {
    let mut errors = Vec::new();
    for i in invariants {
        if let Err(e) = i.finish().await {
            errors.push(format!("{e:#}"));
        }
    }
    match stores.finish().await {
        Ok(restarts) if errors.is_empty() => Ok(restarts),
        Ok(_) => bail!("{}", errors.join("\n")),
        Err(e) => {
            errors.push(format!("{e:#}"));
            bail!("{}", errors.join("\n"))
        }
    }
}

/// Names of the test's PD instances.
pub async fn pd_instance_names(w: &World) -> Result<BTreeSet<String>> {
    Ok(w.list::<tikv_operator_api::PD>(None)
        .await?
        .iter()
        .map(ResourceExt::name_any)
        .collect())
}

/// Applies the cluster and waits until it is Ready with Regions replicated on all stores;
/// returns the TiKV instance names.
pub async fn ready_cluster(w: &World) -> Result<BTreeSet<String>> {
    w.ns.apply(CLUSTER).await?;
    wait_cluster_ready(w, Duration::from_secs(300)).await?;
    wait_pd_rolled_out(w, OLD, None, Duration::from_secs(120)).await?;
    wait_kv_rolled_out(w, OLD, None, Duration::from_secs(120)).await?;
    replicated(&w.env, &w.pd_addr()).await?;
    Ok(w.list::<TiKV>(None)
        .await?
        .iter()
        .map(ResourceExt::name_any)
        .collect())
}

/// After a rolling restart of the test's TiKV instances (`restarts` from the store watcher,
/// `new_uids` the Pods seen once every instance was recreated): each Pod recreated exactly
/// once and none since, every instance kept its store id, every store Up at `OLD`, and no
/// evict-leader entry left.
pub async fn check_restarted_once(
    w: &World,
    members: &BTreeSet<String>,
    restarts: &BTreeMap<String, usize>,
    new_uids: &BTreeMap<String, String>,
    ids: &BTreeMap<String, u64>,
) -> Result<()> {
    ensure!(
        members.iter().all(|m| restarts.get(m) == Some(&1)),
        "each TiKV Pod must be recreated exactly once: {restarts:?}"
    );
    ensure!(
        tikv_pod_uids(w).await? == *new_uids,
        "TiKV Pods changed after the rollout"
    );
    ensure!(
        instance_store_ids(w).await? == *ids,
        "instances changed their store ids"
    );
    check_stores(w, ids, OLD).await?;
    let evicting = evicting_stores(&w.env, &w.api::<Pod>(), &w.pd_addr()).await?;
    ensure!(
        evicting.is_empty(),
        "evict-leader entries left: {evicting:?}"
    );
    Ok(())
}
