//! The Controllers of one watch scope (all namespaces, or one namespace):
//! [`caches`] (watch caches and the snapshot builders that read them),
//! [`adapters`] (per kind: snapshot in, layer reconciler called) and the
//! wiring here (trigger channels, shared state, reconcile bookkeeping,
//! the Controllers themselves).

mod adapters;
mod caches;
mod managed;

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use futures::channel::mpsc::{UnboundedSender, unbounded};
use futures::future::{BoxFuture, FutureExt};
use futures::{StreamExt, stream};
use k8s_openapi::api::apps::v1::ControllerRevision;
use k8s_openapi::api::core::v1::{ConfigMap, Node, PersistentVolumeClaim, Pod, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::Api;
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::Reporter;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tikv_operator_api::{Cluster, PD, PDGroup, TiKV, TiKVGroup, labels};
use tikv_operator_core::ledger::{LedgerWriter, WriteLedger};
use tikv_operator_core::{
    Ctx, Error, KubeClientWriter, ObjectKey, Requeue, RequeuePolicy, SystemClock,
};
use tracing::{Instrument, debug, info_span, warn};

use crate::Config;
use crate::metrics::{ControllerLabels, Metrics};
use crate::pd_registry::{self, OnChange, PdAccessError, PdEntry, PdRegistry, PdTarget};
use crate::routing::{self, Component, Kind, Trigger};
use crate::scope::WatchScope;
use crate::secrets::{OnSecretChange, SecretSource, SecretWatches};

use adapters::{
    reconcile_cluster, reconcile_pd, reconcile_pd_group, reconcile_tikv, reconcile_tikv_group,
};
pub(crate) use caches::Stores;
use caches::cached_json;
use managed::report_managed;

/// Where triggers go: one channel per Controller.
#[derive(Clone)]
struct Senders {
    cluster: UnboundedSender<ObjectRef<Cluster>>,
    pd_group: UnboundedSender<ObjectRef<PDGroup>>,
    pd: UnboundedSender<ObjectRef<PD>>,
    tikv_group: UnboundedSender<ObjectRef<TiKVGroup>>,
    tikv: UnboundedSender<ObjectRef<TiKV>>,
}

fn send<K: Resource<DynamicType = ()>>(tx: &UnboundedSender<ObjectRef<K>>, t: &Trigger) {
    // A closed channel means the Controller stopped (shutdown).
    let _ = tx.unbounded_send(ObjectRef::new(&t.name).within(&t.namespace));
}

impl Senders {
    fn send(&self, triggers: Vec<Trigger>) {
        for t in &triggers {
            match t.kind {
                Kind::Cluster => send(&self.cluster, t),
                Kind::PdGroup => send(&self.pd_group, t),
                Kind::Pd => send(&self.pd, t),
                Kind::TikvGroup => send(&self.tikv_group, t),
                Kind::Tikv => send(&self.tikv, t),
            }
        }
    }
}

/// Everything a reconcile of this scope may use.
pub(crate) struct Shared {
    ctx: Ctx,
    stores: Stores,
    registry: Arc<PdRegistry>,
    metrics: Arc<Metrics>,
    config: Config,
    failures: Mutex<HashMap<String, u32>>,
    /// The writes of this scope's reconciles that the caches may not show yet.
    ledger: Arc<WriteLedger>,
    /// One lock per namespace, held by group reconciles (the ones that grant
    /// disruptions): two groups of a Cluster never decide at the same time,
    /// so neither decides without the other's grants.
    group_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

/// Controllers whose reconciles grant disruptions (restarts, removals).
const GROUP_CONTROLLERS: [&str; 2] = ["pdgroup", "tikvgroup"];

/// How soon a reconcile put off for a cache that lags runs again.
const CACHE_LAG_RETRY: Duration = Duration::from_millis(250);

/// A reconcile error, counted by category.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub(crate) struct ReconcileError(#[from] Error);

fn key_of<K: Resource<DynamicType = ()>>(obj: &K) -> String {
    format!(
        "{}/{}/{}",
        K::kind(&()),
        obj.meta().namespace.as_deref().unwrap_or_default(),
        obj.meta().name.as_deref().unwrap_or_default()
    )
}

impl Shared {
    /// The group lock of `ns`.
    fn group_lock(&self, ns: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.group_locks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(ns.to_owned())
            .or_default()
            .clone()
    }

    /// This scope's writes in `ns` that the watch caches do not show yet.
    fn unseen_writes(&self, ns: &str) -> Vec<ObjectKey> {
        let st = &self.stores;
        self.ledger.unseen(ns, Instant::now(), &|key| {
            Ok(match key.kind.as_str() {
                "Cluster" => cached_json(&st.clusters, key),
                "PDGroup" => cached_json(&st.pd_groups, key),
                "PD" => cached_json(&st.pds, key),
                "TiKVGroup" => cached_json(&st.tikv_groups, key),
                "TiKV" => cached_json(&st.tikvs, key),
                "Pod" => cached_json(&st.pods, key),
                "ConfigMap" => cached_json(&st.config_maps, key),
                "PersistentVolumeClaim" => cached_json(&st.pvcs, key),
                "Service" => cached_json(&st.services, key),
                "ControllerRevision" => cached_json(&st.revisions, key),
                _ => return Err(()),
            })
        })
    }

    fn failures(&self, key: &str, failed: bool) -> u32 {
        let mut f = self
            .failures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if failed {
            let n = f.entry(key.to_owned()).or_insert(0);
            *n += 1;
            *n
        } else {
            f.remove(key);
            0
        }
    }

    fn in_flight(&self, r: &Requeue) -> bool {
        matches!(r, Requeue::After(d) if *d <= self.ctx.policy.in_flight)
    }

    /// PD access of a Cluster (created on first use): `Ok(None)` when no PD
    /// is known (no PDGroup and no `fallback`), an error when the Cluster
    /// speaks TLS and its client Secret is refused, or no client could be
    /// built.
    fn pd_entry(
        &self,
        ns: &str,
        cluster: &str,
        fallback: Option<(String, i32)>,
    ) -> Result<Option<Arc<PdEntry>>, PdAccessError> {
        let Some(endpoint) =
            self.stores
                .pd_endpoint(&self.config.pd.endpoint, ns, cluster, fallback)
        else {
            return Ok(None);
        };
        self.pd_entry_at(ns, cluster, &endpoint).map(Some)
    }

    /// PD access of a Cluster through `endpoint` (with the Cluster's scheme).
    fn pd_entry_at(
        &self,
        ns: &str,
        cluster: &str,
        endpoint: &str,
    ) -> Result<Arc<PdEntry>, PdAccessError> {
        let Some(c) = self.stores.cluster(ns, cluster) else {
            // Without the Cluster its TLS setting is unknown: keep the
            // client it has (never replace a TLS client by a plaintext one);
            // a Cluster never seen is taken as plaintext.
            if let Some(e) = self.registry.get(ns, cluster) {
                return Ok(e);
            }
            let target = PdTarget::of_cluster(None, endpoint);
            return self.registry.ensure(ns, cluster, &target);
        };
        let target = PdTarget::of_cluster(Some(&c), endpoint);
        self.registry
            .ensure(ns, cluster, &target)
            .inspect_err(|e| warn!(namespace = ns, cluster, endpoint = %target.endpoint, error = %e, "no PD client"))
    }
}

/// The reconcile error of a Cluster without PD access: a refused client
/// Secret, or a client that cannot be built for the URL, is the user's to
/// fix (`InvalidSpec`, shown as is); a Secret whose watch has not listed
/// yet is a passing PD outage, retried with backoff.
pub(crate) fn pd_access_error(e: PdAccessError) -> Error {
    match e {
        e @ PdAccessError::SecretNotRead { .. } => {
            Error::pd("connect", pd_client::PdError::unavailable(e.to_string()))
        }
        e => Error::InvalidSpec {
            message: e.to_string(),
        },
    }
}

fn error_policy<K: Resource<DynamicType = ()>>(
    obj: Arc<K>,
    error: &ReconcileError,
    sh: Arc<Shared>,
) -> Action {
    let n = sh.failures(&key_of(obj.as_ref()), true);
    warn!(object = %key_of(obj.as_ref()), error = %error.0, category = error.0.category(), failures = n, "reconcile failed");
    sh.ctx.policy.after_error(&error.0, n).into()
}

/// Wraps a reconcile with a span, metrics and failure bookkeeping.
/// `latest` reads the object from its watch cache as it is now.
async fn observed<K, L, F, Fut>(
    controller: &'static str,
    obj: Arc<K>,
    sh: Arc<Shared>,
    latest: L,
    f: F,
) -> Result<Action, ReconcileError>
where
    K: Resource<DynamicType = ()>,
    L: FnOnce(&K) -> Option<Arc<K>>,
    F: FnOnce(Arc<K>, Arc<Shared>) -> Fut,
    Fut: Future<Output = Result<Action, ReconcileError>>,
{
    let key = key_of(obj.as_ref());
    let labels = ControllerLabels {
        controller: controller.to_owned(),
    };
    let ns = obj.meta().namespace.clone().unwrap_or_default();
    // Group reconciles of a namespace run one at a time (the guard lives
    // until this reconcile ends), and the check below runs under the lock,
    // so each sees every grant made before it.
    let lock = GROUP_CONTROLLERS
        .contains(&controller)
        .then(|| sh.group_lock(&ns));
    let _guard = match &lock {
        Some(l) => Some(l.lock().await),
        None => None,
    };
    // Read-your-own-writes: no decision on caches that do not show this
    // scope's last writes in the namespace yet (a Pod just deleted would
    // still look Ready; see `tikv_operator_core::ledger`).
    let unseen = sh.unseen_writes(&ns);
    if !unseen.is_empty() {
        sh.metrics.reconciles_deferred.get_or_create(&labels).inc();
        debug!(controller, object = %key, unseen = ?unseen.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "reconcile put off: the caches do not show the operator's own writes yet");
        return Ok(Action::requeue(CACHE_LAG_RETRY));
    }
    // Decide on the object as the cache shows it now, not as it was when
    // this reconcile was dispatched: waiting for the group lock can take a
    // while, and the check above passed against the cache, which may have
    // received one of our own writes (a status) since. The dispatched copy
    // would miss it: found by e2e, a TiKVGroup reconcile that saw the
    // failover status from before its own last write.
    let Some(obj) = latest(obj.as_ref()) else {
        debug!(controller, object = %key, "gone from the cache; nothing to reconcile");
        return Ok(Action::await_change());
    };
    let gauge = sh
        .metrics
        .reconciles_in_flight
        .get_or_create(&labels)
        .clone();
    gauge.inc();
    let started = Instant::now();
    let span = info_span!("reconcile", controller, object = %key);
    let out = f(obj, sh.clone()).instrument(span).await;
    gauge.dec();
    sh.metrics.observe_reconcile(
        controller,
        started.elapsed(),
        out.as_ref().err().map(|e| e.0.category()),
    );
    if out.is_ok() {
        sh.failures(&key, false);
    }
    debug!(controller, object = %key, took_ms = started.elapsed().as_millis() as u64, ok = out.is_ok(), "reconciled");
    out
}

/// The Node cache shared by every scope (metadata only: TiKV store labels
/// need Node labels). Node labels change rarely; TiKV instances pick them up
/// on their next reconcile (at the latest the at-rest requeue).
pub(crate) fn node_cache(
    client: &kube::Client,
) -> (Store<PartialObjectMeta<Node>>, BoxFuture<'static, ()>) {
    reflect(
        watcher(
            Api::<PartialObjectMeta<Node>>::all(client.clone()),
            watcher::Config::default(),
        ),
        |_: &PartialObjectMeta<Node>, _| {},
    )
}

/// Drives a watch stream into a cache; every change is routed by `route`
/// (`true` for deletions).
fn reflect<K, S, R>(stream: S, route: R) -> (Store<K>, BoxFuture<'static, ()>)
where
    K: Resource<DynamicType = ()> + Clone + std::fmt::Debug + Send + Sync + 'static,
    S: futures::Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static,
    R: Fn(&K, bool) + Send + 'static,
{
    let (reader, writer) = reflector::store::<K>();
    let kind = K::kind(&()).into_owned();
    // managedFields are never read and are a large part of every object:
    // keep them out of the caches.
    let stream = stream.modify(|o: &mut K| {
        o.meta_mut().managed_fields = None;
    });
    let fut = reflector::reflector(writer, stream.default_backoff())
        .for_each(move |ev| {
            match ev {
                Ok(watcher::Event::Apply(o) | watcher::Event::InitApply(o)) => route(&o, false),
                Ok(watcher::Event::Delete(o)) => route(&o, true),
                Ok(watcher::Event::Init | watcher::Event::InitDone) => {}
                Err(e) => warn!(kind = %kind, error = %e, "watch error (retrying with backoff)"),
            }
            std::future::ready(())
        })
        .boxed();
    (reader, fut)
}

fn api<K>(client: &kube::Client, ns: Option<&str>) -> Api<K>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>,
{
    match ns {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// The watch of one kind over `scope`: objects outside it (a filtered scope
/// watches every namespace) never reach the cache.
fn watch<K>(
    client: &kube::Client,
    scope: &WatchScope,
    config: watcher::Config,
) -> impl futures::Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug
        + Send
        + 'static,
{
    let keep = scope.clone();
    watcher(api::<K>(client, scope.api_namespace()), config).filter(move |ev| {
        std::future::ready(match ev {
            Ok(
                watcher::Event::Apply(o) | watcher::Event::InitApply(o) | watcher::Event::Delete(o),
            ) => keep.keeps(o.meta().namespace.as_deref()),
            Ok(watcher::Event::Init | watcher::Event::InitDone) | Err(_) => true,
        })
    })
}

/// The operator's own objects of one scope (Pods, ConfigMaps, PVCs,
/// Services, revisions), each change routed to the instance or group that
/// owns it; the futures that drive the watches.
struct ChildCaches {
    pods: Store<Pod>,
    config_maps: Store<ConfigMap>,
    pvcs: Store<PersistentVolumeClaim>,
    services: Store<Service>,
    revisions: Store<ControllerRevision>,
}

fn child_caches(
    client: &kube::Client,
    ns: &WatchScope,
    senders: &Senders,
    futs: &mut Vec<BoxFuture<'static, ()>>,
) -> ChildCaches {
    let owned = watcher::Config::default().labels(&format!(
        "{}={}",
        labels::MANAGED_BY,
        labels::MANAGED_BY_VALUE
    ));
    let child = |s: &Senders| {
        let s = s.clone();
        move |meta: &ObjectMeta| s.send(routing::for_child(meta))
    };
    let (pods, pods_fut) = {
        let r = child(senders);
        reflect(
            watch::<Pod>(client, ns, owned.clone()),
            move |o: &Pod, _| {
                r(&o.metadata);
            },
        )
    };
    let (config_maps, cms_fut) = {
        let r = child(senders);
        reflect(
            watch::<ConfigMap>(client, ns, owned.clone()),
            move |o: &ConfigMap, _| r(&o.metadata),
        )
    };
    let (pvcs, pvcs_fut) = {
        let r = child(senders);
        reflect(
            watch::<PersistentVolumeClaim>(client, ns, owned.clone()),
            move |o: &PersistentVolumeClaim, _| r(&o.metadata),
        )
    };
    let (services, svcs_fut) = {
        let r = child(senders);
        reflect(
            watch::<Service>(client, ns, owned.clone()),
            move |o: &Service, _| r(&o.metadata),
        )
    };
    // Revision history: read by the groups, changed only by them; nothing to wake.
    let (revisions, revisions_fut) = reflect(
        watch::<ControllerRevision>(client, ns, owned),
        |_: &ControllerRevision, _| {},
    );
    futs.extend([pods_fut, cms_fut, pvcs_fut, svcs_fut, revisions_fut]);
    ChildCaches {
        pods,
        config_maps,
        pvcs,
        services,
        revisions,
    }
}

/// Every watch cache of one scope, each change routed to the Controllers
/// it wakes. Routes read the stores that the reflectors fill and the PD
/// registry built after them: late-bound cells.
fn caches(
    client: &kube::Client,
    ns: &WatchScope,
    nodes: Store<PartialObjectMeta<Node>>,
    senders: &Senders,
    registry_cell: &Arc<OnceLock<Arc<PdRegistry>>>,
) -> (Stores, Vec<BoxFuture<'static, ()>>) {
    let all = watcher::Config::default;
    let cell: Arc<OnceLock<Stores>> = Arc::new(OnceLock::new());
    let mut futs = Vec::new();
    let children = child_caches(client, ns, senders, &mut futs);
    let (pds, pds_fut) = {
        let s = senders.clone();
        reflect(watch::<PD>(client, ns, all()), move |o: &PD, _| {
            s.send(routing::for_instance(
                &o.metadata,
                &o.spec.cluster.name,
                Component::Pd,
            ));
        })
    };
    let (pd_groups, pd_groups_fut) = {
        let s = senders.clone();
        reflect(
            watch::<PDGroup>(client, ns, all()),
            move |o: &PDGroup, _| {
                s.send(routing::for_group(
                    &o.metadata,
                    &o.spec.cluster.name,
                    Component::Pd,
                ));
            },
        )
    };
    let (tikvs, tikvs_fut) = {
        let s = senders.clone();
        reflect(watch::<TiKV>(client, ns, all()), move |o: &TiKV, _| {
            s.send(routing::for_instance(
                &o.metadata,
                &o.spec.cluster.name,
                Component::Tikv,
            ));
        })
    };
    let (tikv_groups, tikv_groups_fut) = {
        let s = senders.clone();
        reflect(
            watch::<TiKVGroup>(client, ns, all()),
            move |o: &TiKVGroup, _| {
                s.send(routing::for_group(
                    &o.metadata,
                    &o.spec.cluster.name,
                    Component::Tikv,
                ));
            },
        )
    };
    let (clusters, clusters_fut) = {
        let s = senders.clone();
        let cell = cell.clone();
        let registry_cell = registry_cell.clone();
        reflect(
            watch::<Cluster>(client, ns, all()),
            move |o: &Cluster, deleted| {
                let ns = o.namespace().unwrap_or_default();
                let name = o.name_any();
                if let Some(r) = registry_cell.get().filter(|_| deleted) {
                    r.remove(&ns, &name);
                }
                let objects = cell
                    .get()
                    .map(|st| st.cluster_objects(&ns, &name))
                    .unwrap_or_default();
                s.send(routing::for_cluster(&ns, &name, &objects));
            },
        )
    };
    futs.extend([
        clusters_fut,
        pd_groups_fut,
        pds_fut,
        tikv_groups_fut,
        tikvs_fut,
    ]);
    let stores = Stores {
        clusters,
        pd_groups,
        pds,
        tikv_groups,
        tikvs,
        pods: children.pods,
        config_maps: children.config_maps,
        pvcs: children.pvcs,
        services: children.services,
        revisions: children.revisions,
        nodes,
    };
    let _ = cell.set(stores.clone());
    (stores, futs)
}

/// The PD clients and state caches of one scope; a change in a Cluster's PD
/// state wakes the objects it concerns. The client Secrets of TLS Clusters
/// are watched by name; a change of one wakes the Clusters that use it
/// (whose next reconcile rebuilds the PD client from it).
fn pd_registry(
    client: &kube::Client,
    config: &Config,
    metrics: &Arc<Metrics>,
    senders: &Senders,
    stores: &Stores,
    registry_cell: &Arc<OnceLock<Arc<PdRegistry>>>,
) -> Arc<PdRegistry> {
    let on_change: OnChange = {
        let s = senders.clone();
        let st = stores.clone();
        let registry_cell = registry_cell.clone();
        Arc::new(move |ns: &str, cluster: &str, members, changed_stores| {
            let snapshot = registry_cell
                .get()
                .and_then(|r| r.get(ns, cluster))
                .map(|e| e.snapshot())
                .unwrap_or_default();
            let tikv = st.tikv_instances_of_stores(ns, cluster, changed_stores, &snapshot);
            s.send(routing::for_pd_state(
                ns,
                cluster,
                members,
                &tikv,
                &st.cluster_objects(ns, cluster),
            ));
        })
    };
    let on_secret: OnSecretChange = {
        let s = senders.clone();
        let st = stores.clone();
        Arc::new(move |ns: &str, secret: &str| {
            for cluster in st.clusters_using_secret(ns, secret) {
                s.send(routing::for_cluster(
                    ns,
                    &cluster,
                    &st.cluster_objects(ns, &cluster),
                ));
            }
        })
    };
    let secrets: Arc<dyn SecretSource> = Arc::new(SecretWatches::new(client.clone(), on_secret));
    let registry = Arc::new(PdRegistry::new(
        pd_registry::client_factory(&config.pd),
        secrets,
        config.pd.refresh,
        metrics.clone(),
        on_change,
    ));
    let _ = registry_cell.set(registry.clone());
    registry
}

/// What every reconcile of one scope shares: writes through the
/// read-your-own-writes ledger, the caches, the PD registry.
fn shared(
    client: &kube::Client,
    stores: &Stores,
    registry: Arc<PdRegistry>,
    metrics: &Arc<Metrics>,
    config: &Config,
) -> Arc<Shared> {
    let reporter = Reporter {
        controller: labels::FIELD_MANAGER.to_owned(),
        instance: std::env::var("POD_NAME").ok(),
    };
    let ledger = Arc::new(WriteLedger::default());
    Arc::new(Shared {
        ctx: Ctx {
            kube: Arc::new(LedgerWriter::new(
                KubeClientWriter::new(client.clone(), reporter),
                ledger.clone(),
            )),
            clock: Arc::new(SystemClock),
            policy: RequeuePolicy::default(),
        },
        stores: stores.clone(),
        registry,
        metrics: metrics.clone(),
        config: config.clone(),
        failures: Mutex::new(HashMap::new()),
        ledger,
        group_locks: Mutex::new(HashMap::new()),
    })
}

/// How long a Cluster's reconcile waits for more changes of its groups and
/// instances before it runs (trailing edge: a further change within the
/// window moves it). A Cluster's status aggregates its groups', which change
/// in bursts while instances come up: without the wait each change of the
/// burst was a status write of the Cluster. The Cluster's reconcile touches
/// neither PD nor Pods: the wait delays its status, finalizer and ordered
/// deletion by at most this much per burst.
const CLUSTER_DEBOUNCE: Duration = Duration::from_millis(250);

/// Runs the Controllers of one scope until `shutdown` resolves.
pub(crate) async fn run_scope(
    client: kube::Client,
    scope: WatchScope,
    nodes: Store<PartialObjectMeta<Node>>,
    config: Config,
    metrics: Arc<Metrics>,
    synced: Arc<AtomicBool>,
    shutdown: futures::future::Shared<BoxFuture<'static, ()>>,
) -> anyhow::Result<()> {
    let (cluster_tx, cluster_rx) = unbounded();
    let (pd_group_tx, pd_group_rx) = unbounded();
    let (pd_tx, pd_rx) = unbounded();
    let (tikv_group_tx, tikv_group_rx) = unbounded();
    let (tikv_tx, tikv_rx) = unbounded();
    let senders = Senders {
        cluster: cluster_tx,
        pd_group: pd_group_tx,
        pd: pd_tx,
        tikv_group: tikv_group_tx,
        tikv: tikv_tx,
    };
    let registry_cell: Arc<OnceLock<Arc<PdRegistry>>> = Arc::new(OnceLock::new());
    let (stores, futs) = caches(&client, &scope, nodes, &senders, &registry_cell);
    let registry = pd_registry(
        &client,
        &config,
        &metrics,
        &senders,
        &stores,
        &registry_cell,
    );
    let shared = shared(&client, &stores, registry, &metrics, &config);

    let reflectors = tokio::spawn(async move {
        futures::future::join_all(futs).await;
    });
    // Safety: no reconcile before every cache has listed. A planner that
    // saw an empty instance cache would take an existing group for a new
    // one (and, for PD, bootstrap a second cluster).
    let scope = scope.describe();
    tokio::select! {
        ready = stores.wait_until_ready() => ready?,
        () = shutdown.clone() => {
            reflectors.abort();
            return Ok(());
        }
    }
    tracing::info!(scope, "watch caches synced");
    synced.store(true, Ordering::SeqCst);
    let managed = tokio::spawn(report_managed(stores.clone(), metrics.clone()));

    let cfg = kube::runtime::Config::default().concurrency(config.concurrency);
    macro_rules! controller {
        ($kind:ty, $reader:expr, $rx:expr, $name:literal, $reconcile:expr) => {
            controller!($kind, $reader, $rx, $name, $reconcile, cfg.clone())
        };
        ($kind:ty, $reader:expr, $rx:expr, $name:literal, $reconcile:expr, $cfg:expr) => {{
            let reader = $reader;
            let latest = reader.clone();
            Controller::for_stream(stream::pending::<Result<$kind, watcher::Error>>(), reader)
                .with_config($cfg)
                .reconcile_on($rx)
                .graceful_shutdown_on(shutdown.clone())
                .run(
                    move |o, sh| {
                        let latest = latest.clone();
                        observed(
                            $name,
                            o,
                            sh,
                            move |o: &$kind| latest.get(&ObjectRef::from_obj(o)),
                            $reconcile,
                        )
                    },
                    error_policy,
                    shared.clone(),
                )
                .for_each(|_| std::future::ready(()))
        }};
    }
    futures::join!(
        controller!(
            Cluster,
            stores.clusters.clone(),
            cluster_rx,
            "cluster",
            reconcile_cluster,
            cfg.clone().debounce(CLUSTER_DEBOUNCE)
        ),
        controller!(
            PDGroup,
            stores.pd_groups.clone(),
            pd_group_rx,
            "pdgroup",
            reconcile_pd_group
        ),
        controller!(PD, stores.pds.clone(), pd_rx, "pd", reconcile_pd),
        controller!(
            TiKVGroup,
            stores.tikv_groups.clone(),
            tikv_group_rx,
            "tikvgroup",
            reconcile_tikv_group
        ),
        controller!(TiKV, stores.tikvs.clone(), tikv_rx, "tikv", reconcile_tikv),
    );
    reflectors.abort();
    managed.abort();
    Ok(())
}

#[cfg(test)]
mod tests;
