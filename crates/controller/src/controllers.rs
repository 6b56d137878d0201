//! The Controllers of one watch scope (all namespaces, or one namespace):
//! watch caches, change routing, and the reconcile entry points that build
//! snapshots from the caches and call the layer reconcilers.

use std::collections::{BTreeMap, BTreeSet, HashMap};
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
use pd_client::StoreId;
use serde::de::DeserializeOwned;
use tikv_operator_api::{Cluster, PD, PDGroup, TiKV, TiKVGroup, labels, names};
use tikv_operator_cluster_layer::{ClusterSnapshot, GroupSummary, Kind as ClusterKind};
use tikv_operator_core::component::naming::RandomSuffix;
use tikv_operator_core::ledger::{LedgerWriter, WriteLedger};
use tikv_operator_core::pd_state::PdSnapshot;
use tikv_operator_core::{
    Ctx, Error, KubeClientWriter, ObjectKey, Requeue, RequeuePolicy, SystemClock,
};
use tikv_operator_pd_layer::reconcile::{ClusterFacts, GroupSnapshot, InstanceSnapshot};
use tikv_operator_pd_layer::{PdView, reconcile as pd_reconcile};
use tikv_operator_tikv_layer::StoreView;
use tikv_operator_tikv_layer::reconcile::{
    self as tikv_reconcile, ClusterFacts as TikvClusterFacts, GroupSnapshot as TikvGroupSnapshot,
    InstanceSnapshot as TikvInstanceSnapshot, Options as TikvOptions,
};
use tikv_operator_tikv_layer::render as tikv_render;
use tracing::{Instrument, debug, info_span, warn};

use crate::Config;
use crate::metrics::{ControllerLabels, ManagedLabels, Metrics};
use crate::pd_registry::{self, OnChange, PdEntry, PdRegistry};
use crate::routing::{self, ClusterObjects, Component, Kind, Trigger};

/// Watch caches of one scope. Pods, ConfigMaps, PVCs and Services are
/// restricted to the operator's own objects by label; Nodes are cached as
/// metadata only (their labels feed TiKV store labels).
#[derive(Clone)]
pub(crate) struct Stores {
    pub clusters: Store<Cluster>,
    pub pd_groups: Store<PDGroup>,
    pub pds: Store<PD>,
    pub tikv_groups: Store<TiKVGroup>,
    pub tikvs: Store<TiKV>,
    pub pods: Store<Pod>,
    pub config_maps: Store<ConfigMap>,
    pub pvcs: Store<PersistentVolumeClaim>,
    pub services: Store<Service>,
    pub revisions: Store<ControllerRevision>,
    pub nodes: Store<PartialObjectMeta<Node>>,
}

fn label<'a, K: Resource>(obj: &'a K, key: &str) -> Option<&'a str> {
    obj.meta().labels.as_ref()?.get(key).map(String::as_str)
}

fn in_ns<K: Resource>(obj: &K, ns: &str) -> bool {
    obj.meta().namespace.as_deref() == Some(ns)
}

fn names_of<K: Resource>(objs: &[Arc<K>]) -> Vec<String> {
    objs.iter().filter_map(|o| o.meta().name.clone()).collect()
}

impl Stores {
    async fn wait_until_ready(&self) -> anyhow::Result<()> {
        self.clusters.wait_until_ready().await?;
        self.pd_groups.wait_until_ready().await?;
        self.pds.wait_until_ready().await?;
        self.tikv_groups.wait_until_ready().await?;
        self.tikvs.wait_until_ready().await?;
        self.pods.wait_until_ready().await?;
        self.config_maps.wait_until_ready().await?;
        self.pvcs.wait_until_ready().await?;
        self.services.wait_until_ready().await?;
        self.revisions.wait_until_ready().await?;
        self.nodes.wait_until_ready().await?;
        Ok(())
    }

    fn cluster(&self, ns: &str, name: &str) -> Option<Arc<Cluster>> {
        self.clusters.get(&ObjectRef::new(name).within(ns))
    }

    /// PD groups of a Cluster, oldest first (then by name).
    fn pd_groups_of(&self, ns: &str, cluster: &str) -> Vec<Arc<PDGroup>> {
        let mut v: Vec<Arc<PDGroup>> = self
            .pd_groups
            .state()
            .into_iter()
            .filter(|g| in_ns(g.as_ref(), ns) && g.spec.cluster.name == cluster)
            .collect();
        // The oldest first: it is the Cluster's PDGroup (a later one is
        // refused, safety rule 7), whatever names come later.
        v.sort_by_key(|g| (g.metadata.creation_timestamp.clone(), g.name_any()));
        v
    }

    /// TiKV groups of a Cluster, by name.
    fn tikv_groups_of(&self, ns: &str, cluster: &str) -> Vec<Arc<TiKVGroup>> {
        let mut v: Vec<Arc<TiKVGroup>> = self
            .tikv_groups
            .state()
            .into_iter()
            .filter(|g| in_ns(g.as_ref(), ns) && g.spec.cluster.name == cluster)
            .collect();
        v.sort_by_key(|g| g.name_any());
        v
    }

    fn pd_instances_of_cluster(&self, ns: &str, cluster: &str) -> Vec<Arc<PD>> {
        self.pds
            .state()
            .into_iter()
            .filter(|i| in_ns(i.as_ref(), ns) && i.spec.cluster.name == cluster)
            .collect()
    }

    fn tikv_instances_of_cluster(&self, ns: &str, cluster: &str) -> Vec<Arc<TiKV>> {
        self.tikvs
            .state()
            .into_iter()
            .filter(|i| in_ns(i.as_ref(), ns) && i.spec.cluster.name == cluster)
            .collect()
    }

    fn cluster_objects(&self, ns: &str, cluster: &str) -> ClusterObjects {
        ClusterObjects {
            pd_groups: names_of(&self.pd_groups_of(ns, cluster)),
            pd_instances: names_of(&self.pd_instances_of_cluster(ns, cluster)),
            tikv_groups: names_of(&self.tikv_groups_of(ns, cluster)),
            tikv_instances: names_of(&self.tikv_instances_of_cluster(ns, cluster)),
        }
    }

    /// TiKV instances of a Cluster whose store is one of `stores`: by the
    /// store id they recorded, or (before they recorded one) by the address
    /// the store registered with.
    fn tikv_instances_of_stores(
        &self,
        ns: &str,
        cluster: &str,
        stores: &BTreeSet<StoreId>,
        snapshot: &PdSnapshot,
    ) -> BTreeSet<String> {
        let mut out: BTreeSet<String> = self
            .tikv_instances_of_cluster(ns, cluster)
            .iter()
            .filter(|i| {
                i.status
                    .as_ref()
                    .and_then(|s| s.id.as_deref())
                    .and_then(|id| id.parse::<u64>().ok())
                    .is_some_and(|id| stores.contains(&StoreId(id)))
            })
            .map(|i| i.name_any())
            .collect();
        out.extend(
            snapshot
                .stores
                .iter()
                .filter(|s| stores.contains(&s.id))
                .filter_map(|s| tikv_render::instance_of_store_address(&s.address))
                .filter(|(n, _)| n == ns)
                .map(|(_, instance)| instance),
        );
        out
    }

    /// Objects of a store labelled as belonging to a group of `component`.
    fn of_group<K>(
        store: &Store<K>,
        component: &str,
        ns: &str,
        cluster: &str,
        group: &str,
    ) -> Vec<K>
    where
        K: Resource<DynamicType = ()> + Clone + 'static,
    {
        store
            .state()
            .into_iter()
            .filter(|o| {
                in_ns(o.as_ref(), ns)
                    && label(o.as_ref(), labels::COMPONENT) == Some(component)
                    && label(o.as_ref(), labels::CLUSTER) == Some(cluster)
                    && label(o.as_ref(), labels::GROUP) == Some(group)
            })
            .map(|o| (*o).clone())
            .collect()
    }

    /// PVCs of one instance.
    fn pvcs_of(&self, component: &str, ns: &str, instance: &str) -> Vec<PersistentVolumeClaim> {
        self.pvcs
            .state()
            .into_iter()
            .filter(|p| {
                in_ns(p.as_ref(), ns)
                    && label(p.as_ref(), labels::COMPONENT) == Some(component)
                    && label(p.as_ref(), labels::INSTANCE) == Some(instance)
            })
            .map(|p| (*p).clone())
            .collect()
    }

    /// The endpoint of a Cluster's PD: its first PDGroup by name, or
    /// `fallback` (group name and client port of the object asking) when
    /// the cache has none (e.g. the group is already deleted).
    fn pd_endpoint(
        &self,
        how: &crate::PdEndpoint,
        ns: &str,
        cluster: &str,
        fallback: Option<(String, i32)>,
    ) -> Option<String> {
        let first = self.pd_groups_of(ns, cluster).first().map(|g| {
            let port = GroupSummary::from_pd_group(g).client_port.unwrap_or(2379);
            (g.name_any(), port)
        });
        let (group, port) = first.or(fallback)?;
        Some(pd_registry::endpoint_url(how, ns, cluster, &group, port))
    }
}

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

/// The cached object of `key` in `store` as JSON (`None`: not cached).
fn cached_json<K>(store: &Store<K>, key: &ObjectKey) -> Option<serde_json::Value>
where
    K: Resource<DynamicType = ()> + Clone + serde::Serialize,
{
    let mut r = ObjectRef::<K>::new(&key.name);
    if let Some(ns) = &key.namespace {
        r = r.within(ns);
    }
    store
        .get(&r)
        .and_then(|o| serde_json::to_value(o.as_ref()).ok())
}

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

    /// PD access of a Cluster (created on first use).
    fn pd_entry(
        &self,
        ns: &str,
        cluster: &str,
        fallback: Option<(String, i32)>,
    ) -> Option<Arc<PdEntry>> {
        let endpoint = self
            .stores
            .pd_endpoint(&self.config.pd.endpoint, ns, cluster, fallback)?;
        match self.registry.ensure(ns, cluster, &endpoint) {
            Ok(e) => Some(e),
            Err(e) => {
                warn!(namespace = ns, cluster, %endpoint, error = %e, "cannot create a PD client");
                None
            }
        }
    }
}

fn unreachable_snapshot(why: &str) -> Arc<PdSnapshot> {
    Arc::new(PdSnapshot {
        error: Some(why.to_owned()),
        ..PdSnapshot::default()
    })
}

async fn reconcile_cluster(obj: Arc<Cluster>, sh: Arc<Shared>) -> Result<Action, ReconcileError> {
    let ns = obj.namespace().unwrap_or_default();
    let name = obj.name_any();
    let groups: Vec<GroupSummary> = sh
        .stores
        .pd_groups_of(&ns, &name)
        .iter()
        .map(|g| GroupSummary::from_pd_group(g))
        .chain(
            sh.stores
                .tikv_groups_of(&ns, &name)
                .iter()
                .map(|g| GroupSummary::from_tikv_group(g)),
        )
        .collect();
    let instances_left = BTreeMap::from([
        (
            ClusterKind::PD,
            sh.stores.pd_instances_of_cluster(&ns, &name).len(),
        ),
        (
            ClusterKind::TiKV,
            sh.stores.tikv_instances_of_cluster(&ns, &name).len(),
        ),
    ]);
    let entry = sh.pd_entry(&ns, &name, None);
    let pd = entry.as_ref().map_or_else(
        || unreachable_snapshot("the Cluster has no PDGroup yet"),
        |e| e.snapshot(),
    );
    let r = tikv_operator_cluster_layer::reconcile_cluster(
        &sh.ctx,
        &ClusterSnapshot {
            cluster: &obj,
            groups: &groups,
            instances_left: &instances_left,
            pd: &pd,
        },
    )
    .await?;
    if let Some(e) = &entry {
        e.hold_fast(&key_of(obj.as_ref()), sh.in_flight(&r));
    }
    Ok(r.into())
}

/// A group of a Cluster that asks for mutual TLS is not reconciled: running
/// its members without TLS would silently ignore what was asked. The Cluster
/// reports `Synced=False` (`TLSNotSupported`); the group gets a Warning Event.
async fn refuse_tls<K: Resource<DynamicType = ()>>(
    sh: &Shared,
    group: &K,
    cluster: Option<&Cluster>,
) -> Result<Option<Action>, ReconcileError> {
    if !cluster.is_some_and(tikv_operator_cluster_layer::tls_requested) {
        return Ok(None);
    }
    sh.ctx
        .kube
        .publish_event(&tikv_operator_core::objects::event(
            group,
            tikv_operator_core::EventType::Warning,
            tikv_operator_cluster_layer::REASON_TLS_NOT_SUPPORTED,
            "Reconcile",
            "the Cluster sets spec.tlsCluster.enabled; this operator version cannot run \
             members with mutual TLS, so it creates none"
                .into(),
        )?)
        .await?;
    Ok(Some(Action::requeue(sh.ctx.policy.at_rest)))
}

async fn reconcile_pd_group(obj: Arc<PDGroup>, sh: Arc<Shared>) -> Result<Action, ReconcileError> {
    let ns = obj.namespace().unwrap_or_default();
    let name = obj.name_any();
    let cluster_name = obj.spec.cluster.name.clone();
    let cluster = sh.stores.cluster(&ns, &cluster_name);
    if let Some(a) = refuse_tls(&sh, obj.as_ref(), cluster.as_deref()).await? {
        return Ok(a);
    }
    let instances: Vec<PD> = sh
        .stores
        .pds
        .state()
        .into_iter()
        .filter(|i| {
            in_ns(i.as_ref(), &ns)
                && i.spec.cluster.name == cluster_name
                && label(i.as_ref(), labels::GROUP) == Some(name.as_str())
        })
        .map(|i| (*i).clone())
        .collect();
    let pd = labels::COMPONENT_PD;
    let pods = Stores::of_group(&sh.stores.pods, pd, &ns, &cluster_name, &name);
    let services = Stores::of_group(&sh.stores.services, pd, &ns, &cluster_name, &name);
    let revisions = Stores::of_group(&sh.stores.revisions, pd, &ns, &cluster_name, &name);
    let port = tikv_operator_pd_layer::render::ports(&obj.spec.template.spec).0;
    let Some(entry) = sh.pd_entry(&ns, &cluster_name, Some((name.clone(), port))) else {
        return Err(Error::InvalidSpec {
            message: "cannot build a PD client for this group".into(),
        }
        .into());
    };
    let recorded = cluster.as_ref().and_then(|c| c.status.as_ref()?.id.clone());
    let view = PdView::from_snapshot(&entry.snapshot()).expecting_cluster_id(recorded.as_deref());
    debug!(view = ?view, "PD view of the group");
    let cluster_pd_group = sh
        .stores
        .pd_groups_of(&ns, &cluster_name)
        .first()
        .map(|g| g.name_any());
    let r = pd_reconcile::reconcile_group(
        &sh.ctx,
        &GroupSnapshot {
            group: &obj,
            cluster: ClusterFacts::from_cluster(cluster.as_deref()),
            instances: &instances,
            pods: &pods,
            services: &services,
            revisions: &revisions,
            pd: &view,
            cluster_pd_group: cluster_pd_group.as_deref(),
        },
        entry.api.as_ref(),
        &mut RandomSuffix::default(),
    )
    .await?;
    entry.hold_fast(&key_of(obj.as_ref()), sh.in_flight(&r));
    Ok(r.into())
}

async fn reconcile_pd(obj: Arc<PD>, sh: Arc<Shared>) -> Result<Action, ReconcileError> {
    let ns = obj.namespace().unwrap_or_default();
    let name = obj.name_any();
    let cluster_name = obj.spec.cluster.name.clone();
    let cluster = sh.stores.cluster(&ns, &cluster_name);
    let pod = sh
        .stores
        .pods
        .get(&ObjectRef::new(&names::pod(&name)).within(&ns));
    let config_map = sh
        .stores
        .config_maps
        .get(&ObjectRef::new(&names::config_map(&name)).within(&ns));
    let pvcs = sh.stores.pvcs_of(labels::COMPONENT_PD, &ns, &name);
    let fallback = label(obj.as_ref(), labels::GROUP).map(|g| {
        (
            g.to_owned(),
            tikv_operator_pd_layer::render::ports(&obj.spec.template).0,
        )
    });
    let Some(entry) = sh.pd_entry(&ns, &cluster_name, fallback) else {
        return Err(Error::InvalidSpec {
            message: format!("PD instance without the {} label", labels::GROUP),
        }
        .into());
    };
    let recorded = cluster.as_ref().and_then(|c| c.status.as_ref()?.id.clone());
    let view = PdView::from_snapshot(&entry.snapshot()).expecting_cluster_id(recorded.as_deref());
    let r = pd_reconcile::reconcile_instance(
        &sh.ctx,
        &InstanceSnapshot {
            instance: &obj,
            cluster: ClusterFacts::from_cluster(cluster.as_deref()),
            pod: pod.as_deref(),
            config_map: config_map.as_deref(),
            pvcs: &pvcs,
            pd: &view,
        },
        entry.api.as_ref(),
    )
    .await?;
    entry.hold_fast(&key_of(obj.as_ref()), sh.in_flight(&r));
    Ok(r.into())
}

/// PD access for a TiKV object: the Cluster's first PDGroup or, when the
/// cache has none (deletion), the URL the Cluster published in `status.pd`.
fn tikv_pd_entry(
    sh: &Shared,
    ns: &str,
    cluster: Option<&Cluster>,
    cluster_name: &str,
) -> Option<Arc<PdEntry>> {
    if let Some(e) = sh.pd_entry(ns, cluster_name, None) {
        return Some(e);
    }
    let url = cluster.and_then(|c| c.status.as_ref()?.pd.clone())?;
    sh.registry.ensure(ns, cluster_name, &url).ok()
}

fn store_view(
    sh: &Shared,
    entry: Option<&Arc<PdEntry>>,
    ns: &str,
    cluster_name: &str,
    cluster: Option<&Cluster>,
) -> StoreView {
    let recorded = cluster.and_then(|c| c.status.as_ref()?.id.clone());
    let snapshot = entry.map_or_else(
        || unreachable_snapshot("the Cluster has no PD to ask"),
        |e| e.snapshot(),
    );
    // Stores registered: PD's "not bootstrapped" is then an ambiguous answer.
    let stores_known = sh
        .stores
        .tikv_instances_of_cluster(ns, cluster_name)
        .iter()
        .any(|i| i.status.as_ref().is_some_and(|s| s.id.is_some()));
    StoreView::from_snapshot_of(&snapshot, snapshot.replication.as_ref(), stores_known)
        .expecting_cluster_id(recorded.as_deref())
}

async fn reconcile_tikv_group(
    obj: Arc<TiKVGroup>,
    sh: Arc<Shared>,
) -> Result<Action, ReconcileError> {
    let ns = obj.namespace().unwrap_or_default();
    let name = obj.name_any();
    let cluster_name = obj.spec.cluster.name.clone();
    let cluster = sh.stores.cluster(&ns, &cluster_name);
    if let Some(a) = refuse_tls(&sh, obj.as_ref(), cluster.as_deref()).await? {
        return Ok(a);
    }
    let instances: Vec<TiKV> = sh
        .stores
        .tikvs
        .state()
        .into_iter()
        .filter(|i| {
            in_ns(i.as_ref(), &ns)
                && i.spec.cluster.name == cluster_name
                && label(i.as_ref(), labels::GROUP) == Some(name.as_str())
        })
        .map(|i| (*i).clone())
        .collect();
    let tikv = labels::COMPONENT_TIKV;
    let pods = Stores::of_group(&sh.stores.pods, tikv, &ns, &cluster_name, &name);
    let services = Stores::of_group(&sh.stores.services, tikv, &ns, &cluster_name, &name);
    let revisions = Stores::of_group(&sh.stores.revisions, tikv, &ns, &cluster_name, &name);
    let entry = tikv_pd_entry(&sh, &ns, cluster.as_deref(), &cluster_name);
    let view = store_view(&sh, entry.as_ref(), &ns, &cluster_name, cluster.as_deref());
    let mut facts = TikvClusterFacts::from_cluster(cluster.as_deref());
    let pd_groups: Vec<PDGroup> = sh
        .stores
        .pd_groups_of(&ns, &cluster_name)
        .iter()
        .map(|g| (**g).clone())
        .collect();
    facts.pd_upgrading = tikv_reconcile::pd_upgrading(cluster.as_deref(), &pd_groups);
    // The other TiKVGroups' stores share the Cluster's disruption budget.
    let others: Vec<TiKV> = sh
        .stores
        .tikv_instances_of_cluster(&ns, &cluster_name)
        .into_iter()
        .filter(|i| label(i.as_ref(), labels::GROUP) != Some(name.as_str()))
        .map(|i| (*i).clone())
        .collect();
    let other_pods: Vec<Pod> = others
        .iter()
        .filter_map(|i| {
            sh.stores
                .pods
                .get(&ObjectRef::new(&names::pod(&i.name_any())).within(&ns))
        })
        .map(|p| (*p).clone())
        .collect();
    let r = tikv_reconcile::reconcile_group(
        &sh.ctx,
        &TikvGroupSnapshot {
            group: &obj,
            cluster: &facts,
            instances: &instances,
            pods: &pods,
            others: &others,
            other_pods: &other_pods,
            revisions: &revisions,
            services: &services,
            pd: &view,
        },
        &mut RandomSuffix::default(),
    )
    .await?;
    if let Some(e) = &entry {
        e.hold_fast(&key_of(obj.as_ref()), sh.in_flight(&r));
    }
    Ok(r.into())
}

async fn reconcile_tikv(obj: Arc<TiKV>, sh: Arc<Shared>) -> Result<Action, ReconcileError> {
    let ns = obj.namespace().unwrap_or_default();
    let name = obj.name_any();
    let cluster_name = obj.spec.cluster.name.clone();
    let cluster = sh.stores.cluster(&ns, &cluster_name);
    let pod = sh
        .stores
        .pods
        .get(&ObjectRef::new(&names::pod(&name)).within(&ns));
    let config_map = sh
        .stores
        .config_maps
        .get(&ObjectRef::new(&names::config_map(&name)).within(&ns));
    let pvcs = sh.stores.pvcs_of(labels::COMPONENT_TIKV, &ns, &name);
    let node = pod
        .as_ref()
        .and_then(|p| p.spec.as_ref()?.node_name.clone())
        .and_then(|n| sh.stores.nodes.get(&ObjectRef::new(&n)));
    let node_labels = node.as_ref().and_then(|n| n.metadata.labels.clone());
    let entry = tikv_pd_entry(&sh, &ns, cluster.as_deref(), &cluster_name);
    let view = store_view(&sh, entry.as_ref(), &ns, &cluster_name, cluster.as_deref());
    let facts = TikvClusterFacts::from_cluster(cluster.as_deref());
    let max_unavailable = label(obj.as_ref(), labels::GROUP)
        .and_then(|g| sh.stores.tikv_groups.get(&ObjectRef::new(g).within(&ns)))
        .and_then(|g| g.spec.max_unavailable)
        .and_then(|m| usize::try_from(m).ok())
        .unwrap_or(1)
        .max(1);
    let Some(pd_api) = entry.as_ref().map(|e| e.api.clone()) else {
        // No PD known at all (no PDGroup, no status.pd): nothing can be
        // asked or removed safely; report through the group and wait.
        return Ok(Action::requeue(sh.ctx.policy.in_flight));
    };
    let r = tikv_reconcile::reconcile_instance(
        &sh.ctx,
        &TikvInstanceSnapshot {
            instance: &obj,
            cluster: &facts,
            pod: pod.as_deref(),
            node_labels: node_labels.as_ref(),
            config_map: config_map.as_deref(),
            pvcs: &pvcs,
            pd: &view,
            options: TikvOptions {
                evict_leader_timeout: sh.config.tikv.evict_leader_timeout,
            },
            max_unavailable,
        },
        pd_api.as_ref(),
    )
    .await?;
    if let Some(e) = &entry {
        e.hold_fast(&key_of(obj.as_ref()), sh.in_flight(&r));
    }
    Ok(r.into())
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
async fn observed<K, F, Fut>(
    controller: &'static str,
    obj: Arc<K>,
    sh: Arc<Shared>,
    f: F,
) -> Result<Action, ReconcileError>
where
    K: Resource<DynamicType = ()>,
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

fn watch<K>(
    client: &kube::Client,
    ns: Option<&str>,
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
    watcher(api::<K>(client, ns), config)
}

/// State of a managed object for the `managed_objects` gauge.
fn state_of(
    meta: &ObjectMeta,
    conditions: Option<&[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition]>,
) -> &'static str {
    if meta.deletion_timestamp.is_some() {
        "Deleting"
    } else if conditions.is_some_and(|c| tikv_operator_core::conditions::is_true(c, "Ready")) {
        "Ready"
    } else {
        "NotReady"
    }
}

/// Counts the managed objects of one scope by kind and state.
fn count_managed(stores: &Stores) -> HashMap<(&'static str, &'static str), i64> {
    let mut out: HashMap<(&'static str, &'static str), i64> = HashMap::new();
    for c in stores.clusters.state() {
        let st = c.status.as_ref().map(|s| s.common.conditions.as_slice());
        *out.entry(("Cluster", state_of(&c.metadata, st)))
            .or_default() += 1;
    }
    for i in stores.pds.state() {
        let st = i.status.as_ref().map(|s| s.common.conditions.as_slice());
        *out.entry(("PD", state_of(&i.metadata, st))).or_default() += 1;
    }
    for i in stores.tikvs.state() {
        let st = i.status.as_ref().map(|s| s.common.conditions.as_slice());
        *out.entry(("TiKV", state_of(&i.metadata, st))).or_default() += 1;
    }
    out
}

/// Keeps the `managed_objects` gauge in step with one scope's caches. Scopes
/// are disjoint namespaces, so each applies only its own deltas.
async fn report_managed(stores: Stores, metrics: Arc<Metrics>) {
    let mut last: HashMap<(&'static str, &'static str), i64> = HashMap::new();
    loop {
        let now = count_managed(&stores);
        let keys: BTreeSet<(&'static str, &'static str)> =
            last.keys().chain(now.keys()).copied().collect();
        for k in keys {
            let delta = now.get(&k).copied().unwrap_or(0) - last.get(&k).copied().unwrap_or(0);
            if delta != 0 {
                metrics
                    .managed
                    .get_or_create(&ManagedLabels {
                        kind: k.0.to_owned(),
                        state: k.1.to_owned(),
                    })
                    .inc_by(delta);
            }
        }
        last = now;
        tokio::time::sleep(std::time::Duration::from_secs(10)).await;
    }
}

/// Runs the Controllers of one scope until `shutdown` resolves.
pub(crate) async fn run_scope(
    client: kube::Client,
    namespace: Option<String>,
    nodes: Store<PartialObjectMeta<Node>>,
    config: Config,
    metrics: Arc<Metrics>,
    synced: Arc<AtomicBool>,
    shutdown: futures::future::Shared<BoxFuture<'static, ()>>,
) -> anyhow::Result<()> {
    let ns = namespace.as_deref();
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
    let owned = watcher::Config::default().labels(&format!(
        "{}={}",
        labels::MANAGED_BY,
        labels::MANAGED_BY_VALUE
    ));
    let all = watcher::Config::default;

    // Routes read the stores that the reflectors fill: late-bound cells.
    let cell: Arc<OnceLock<Stores>> = Arc::new(OnceLock::new());
    let registry_cell: Arc<OnceLock<Arc<PdRegistry>>> = Arc::new(OnceLock::new());

    let child = |s: &Senders| {
        let s = s.clone();
        move |meta: &ObjectMeta| s.send(routing::for_child(meta))
    };
    let (pods, pods_fut) = {
        let r = child(&senders);
        reflect(
            watch::<Pod>(&client, ns, owned.clone()),
            move |o: &Pod, _| {
                r(&o.metadata);
            },
        )
    };
    let (config_maps, cms_fut) = {
        let r = child(&senders);
        reflect(
            watch::<ConfigMap>(&client, ns, owned.clone()),
            move |o: &ConfigMap, _| r(&o.metadata),
        )
    };
    let (pvcs, pvcs_fut) = {
        let r = child(&senders);
        reflect(
            watch::<PersistentVolumeClaim>(&client, ns, owned.clone()),
            move |o: &PersistentVolumeClaim, _| r(&o.metadata),
        )
    };
    let (services, svcs_fut) = {
        let r = child(&senders);
        reflect(
            watch::<Service>(&client, ns, owned.clone()),
            move |o: &Service, _| r(&o.metadata),
        )
    };
    // Revision history: read by the groups, changed only by them; nothing to wake.
    let (revisions, revisions_fut) = reflect(
        watch::<ControllerRevision>(&client, ns, owned),
        |_: &ControllerRevision, _| {},
    );
    let (pds, pds_fut) = {
        let s = senders.clone();
        reflect(watch::<PD>(&client, ns, all()), move |o: &PD, _| {
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
            watch::<PDGroup>(&client, ns, all()),
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
        reflect(watch::<TiKV>(&client, ns, all()), move |o: &TiKV, _| {
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
            watch::<TiKVGroup>(&client, ns, all()),
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
            watch::<Cluster>(&client, ns, all()),
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
    let stores = Stores {
        clusters: clusters.clone(),
        pd_groups: pd_groups.clone(),
        pds: pds.clone(),
        tikv_groups: tikv_groups.clone(),
        tikvs: tikvs.clone(),
        pods,
        config_maps,
        pvcs,
        services,
        revisions,
        nodes,
    };
    let _ = cell.set(stores.clone());

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
    let registry = Arc::new(PdRegistry::new(
        pd_registry::client_factory(&config.pd),
        config.pd.refresh,
        metrics.clone(),
        on_change,
    ));
    let _ = registry_cell.set(registry.clone());

    let reporter = Reporter {
        controller: labels::FIELD_MANAGER.to_owned(),
        instance: std::env::var("POD_NAME").ok(),
    };
    let ledger = Arc::new(WriteLedger::default());
    let shared = Arc::new(Shared {
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
    });

    let reflectors = tokio::spawn(async move {
        futures::future::join_all([
            clusters_fut,
            pd_groups_fut,
            pds_fut,
            tikv_groups_fut,
            tikvs_fut,
            pods_fut,
            cms_fut,
            pvcs_fut,
            svcs_fut,
            revisions_fut,
        ])
        .await;
    });
    // Safety: no reconcile before every cache has listed. A planner that
    // saw an empty instance cache would take an existing group for a new
    // one (and, for PD, bootstrap a second cluster).
    let scope = namespace.clone().unwrap_or_else(|| "<all>".into());
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
            Controller::for_stream(stream::pending::<Result<$kind, watcher::Error>>(), $reader)
                .with_config(cfg.clone())
                .reconcile_on($rx)
                .graceful_shutdown_on(shutdown.clone())
                .run(
                    |o, sh| observed($name, o, sh, $reconcile),
                    error_policy,
                    shared.clone(),
                )
                .for_each(|_| std::future::ready(()))
        };
    }
    futures::join!(
        controller!(Cluster, clusters, cluster_rx, "cluster", reconcile_cluster),
        controller!(
            PDGroup,
            pd_groups,
            pd_group_rx,
            "pdgroup",
            reconcile_pd_group
        ),
        controller!(PD, pds, pd_rx, "pd", reconcile_pd),
        controller!(
            TiKVGroup,
            tikv_groups,
            tikv_group_rx,
            "tikvgroup",
            reconcile_tikv_group
        ),
        controller!(TiKV, tikvs, tikv_rx, "tikv", reconcile_tikv),
    );
    reflectors.abort();
    managed.abort();
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use tikv_operator_core::fake::FakeKube;
    use tikv_operator_core::pd_state::RefreshPolicy;

    fn empty_store<K>() -> Store<K>
    where
        K: Resource<DynamicType = ()> + Clone + 'static,
    {
        let (store, mut writer) = reflector::store::<K>();
        writer.apply_watcher_event(&watcher::Event::Init);
        writer.apply_watcher_event(&watcher::Event::InitDone);
        store
    }

    /// A scope with empty caches except Pods, fed by the returned writer.
    fn scope() -> (Arc<Shared>, reflector::store::Writer<Pod>, FakeKube) {
        let (pods, mut pod_writer) = reflector::store::<Pod>();
        pod_writer.apply_watcher_event(&watcher::Event::Init);
        pod_writer.apply_watcher_event(&watcher::Event::InitDone);
        let stores = Stores {
            clusters: empty_store(),
            pd_groups: empty_store(),
            pds: empty_store(),
            tikv_groups: empty_store(),
            tikvs: empty_store(),
            pods,
            config_maps: empty_store(),
            pvcs: empty_store(),
            services: empty_store(),
            revisions: empty_store(),
            nodes: empty_store(),
        };
        let metrics = Arc::new(Metrics::unregistered());
        let factory: pd_registry::PdFactory = Arc::new(|_: &str| {
            Err(pd_client::PdError::Unavailable {
                message: "no PD in this test".into(),
                source: None,
            })
        });
        let on_change: OnChange =
            Arc::new(|_: &str, _: &str, _: &BTreeSet<String>, _: &BTreeSet<StoreId>| {});
        let ledger = Arc::new(WriteLedger::default());
        let kube = FakeKube::new();
        let shared = Arc::new(Shared {
            ctx: Ctx {
                kube: Arc::new(LedgerWriter::new(kube.clone(), ledger.clone())),
                clock: Arc::new(SystemClock),
                policy: RequeuePolicy::default(),
            },
            stores,
            registry: Arc::new(PdRegistry::new(
                factory,
                RefreshPolicy::default(),
                metrics.clone(),
                on_change,
            )),
            metrics,
            config: Config::default(),
            failures: Mutex::new(HashMap::new()),
            ledger,
            group_locks: Mutex::new(HashMap::new()),
        });
        (shared, pod_writer, kube)
    }

    fn pod(name: &str, uid: &str) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": "ns", "uid": uid},
            "status": {"conditions": [{"type": "Ready", "status": "True"}]}
        }))
        .unwrap()
    }

    /// The object a reconcile is for (its kind does not matter to the gate).
    fn group(name: &str) -> Arc<ConfigMap> {
        Arc::new(ConfigMap {
            metadata: kube::api::ObjectMeta {
                name: Some(name.into()),
                namespace: Some("ns".into()),
                ..Default::default()
            },
            ..Default::default()
        })
    }

    async fn run(sh: &Arc<Shared>, controller: &'static str, ran: &Arc<AtomicUsize>) -> Action {
        let ran = ran.clone();
        observed(
            controller,
            group("pd"),
            sh.clone(),
            move |_, _| async move {
                ran.fetch_add(1, Ordering::SeqCst);
                Ok(Action::await_change())
            },
        )
        .await
        .unwrap()
    }

    #[tokio::test]
    async fn no_reconcile_runs_until_the_cache_shows_the_pod_it_deleted() {
        let (sh, mut pods, kube) = scope();
        pods.apply_watcher_event(&watcher::Event::Apply(pod("pd-a", "u1")));
        let ran = Arc::new(AtomicUsize::new(0));
        // The operator deletes pd-a; the cache still shows it running.
        let key = ObjectKey::new::<Pod>(Some("ns"), "pd-a");
        kube.insert(
            key.clone(),
            serde_json::to_value(pod("pd-a", "u1")).unwrap(),
        );
        sh.ctx.kube.delete_exact(&key, "u1").await.unwrap();
        assert_eq!(sh.ledger.len(), 1);
        for controller in ["pdgroup", "pd", "tikvgroup", "tikv", "cluster"] {
            assert_eq!(
                run(&sh, controller, &ran).await,
                Action::requeue(CACHE_LAG_RETRY),
                "{controller}"
            );
        }
        assert_eq!(
            ran.load(Ordering::SeqCst),
            0,
            "no reconcile ran on the stale cache"
        );
        // Another namespace is not held up.
        let other = ran.clone();
        let mut g = (*group("pd")).clone();
        g.metadata.namespace = Some("elsewhere".into());
        observed("pdgroup", Arc::new(g), sh.clone(), move |_, _| async move {
            other.fetch_add(1, Ordering::SeqCst);
            Ok(Action::await_change())
        })
        .await
        .unwrap();
        assert_eq!(ran.load(Ordering::SeqCst), 1);
        // The deletion reaches the cache: reconciles run again.
        pods.apply_watcher_event(&watcher::Event::Delete(pod("pd-a", "u1")));
        assert_eq!(run(&sh, "pdgroup", &ran).await, Action::await_change());
        assert_eq!(ran.load(Ordering::SeqCst), 2);
        assert!(sh.ledger.is_empty());
    }

    #[tokio::test]
    async fn group_reconciles_of_a_namespace_never_overlap() {
        let (sh, _pods, _kube) = scope();
        let active = Arc::new(AtomicUsize::new(0));
        let max = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for controller in ["pdgroup", "tikvgroup", "pdgroup", "tikvgroup"] {
            let (sh, active, max) = (sh.clone(), active.clone(), max.clone());
            tasks.push(tokio::spawn(async move {
                observed(controller, group("g"), sh, move |_, _| async move {
                    let now = active.fetch_add(1, Ordering::SeqCst) + 1;
                    max.fetch_max(now, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    active.fetch_sub(1, Ordering::SeqCst);
                    Ok(Action::await_change())
                })
                .await
                .unwrap()
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(
            max.load(Ordering::SeqCst),
            1,
            "two group reconciles overlapped"
        );
        // Instance reconciles are not serialised.
        let mut tasks = Vec::new();
        for _ in 0..3 {
            let (sh, active, max) = (sh.clone(), active.clone(), max.clone());
            tasks.push(tokio::spawn(async move {
                observed("tikv", group("g"), sh, move |_, _| async move {
                    let now = active.fetch_add(1, Ordering::SeqCst) + 1;
                    max.fetch_max(now, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    active.fetch_sub(1, Ordering::SeqCst);
                    Ok(Action::await_change())
                })
                .await
                .unwrap()
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        assert!(
            max.load(Ordering::SeqCst) > 1,
            "instance reconciles ran one at a time"
        );
    }
}
