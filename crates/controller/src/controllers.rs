//! The Controllers of one watch scope (all namespaces, or one namespace):
//! watch caches, change routing, and the reconcile entry points that build
//! snapshots from the caches and call the layer reconcilers.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use futures::channel::mpsc::{UnboundedSender, unbounded};
use futures::future::{BoxFuture, FutureExt};
use futures::{StreamExt, stream};
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Pod, Service};
use kube::api::Api;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::Reporter;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tikv_operator_api::{Cluster, PD, PDGroup, labels, names};
use tikv_operator_cluster_layer::{ClusterSnapshot, GroupSummary, Kind as ClusterKind};
use tikv_operator_core::pd_state::PdSnapshot;
use tikv_operator_core::{Ctx, Error, KubeClientWriter, Requeue, RequeuePolicy, SystemClock};
use tikv_operator_pd_layer::group::RandomSuffix;
use tikv_operator_pd_layer::reconcile::{ClusterFacts, GroupSnapshot, InstanceSnapshot};
use tikv_operator_pd_layer::{PdView, reconcile as pd_reconcile};
use tracing::{Instrument, debug, info_span, warn};

use crate::Config;
use crate::metrics::{ControllerLabels, Metrics};
use crate::pd_registry::{self, OnChange, PdEntry, PdRegistry};
use crate::routing::{self, Kind, Trigger};

/// Watch caches of one scope. Pods, ConfigMaps, PVCs and Services are
/// restricted to the operator's own objects by label.
#[derive(Clone)]
pub(crate) struct Stores {
    pub clusters: Store<Cluster>,
    pub pd_groups: Store<PDGroup>,
    pub pds: Store<PD>,
    pub pods: Store<Pod>,
    pub config_maps: Store<ConfigMap>,
    pub pvcs: Store<PersistentVolumeClaim>,
    pub services: Store<Service>,
}

fn label<'a, K: Resource>(obj: &'a K, key: &str) -> Option<&'a str> {
    obj.meta().labels.as_ref()?.get(key).map(String::as_str)
}

fn in_ns<K: Resource>(obj: &K, ns: &str) -> bool {
    obj.meta().namespace.as_deref() == Some(ns)
}

impl Stores {
    async fn wait_until_ready(&self) -> anyhow::Result<()> {
        self.clusters.wait_until_ready().await?;
        self.pd_groups.wait_until_ready().await?;
        self.pds.wait_until_ready().await?;
        self.pods.wait_until_ready().await?;
        self.config_maps.wait_until_ready().await?;
        self.pvcs.wait_until_ready().await?;
        self.services.wait_until_ready().await?;
        Ok(())
    }

    fn cluster(&self, ns: &str, name: &str) -> Option<Arc<Cluster>> {
        self.clusters.get(&ObjectRef::new(name).within(ns))
    }

    /// PD groups of a Cluster, by name.
    fn pd_groups_of(&self, ns: &str, cluster: &str) -> Vec<Arc<PDGroup>> {
        let mut v: Vec<Arc<PDGroup>> = self
            .pd_groups
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

    fn names<K: Resource>(objs: &[Arc<K>]) -> Vec<String> {
        objs.iter().filter_map(|o| o.meta().name.clone()).collect()
    }

    /// Objects of a store labelled as belonging to a PD group.
    fn of_pd_group<K>(store: &Store<K>, ns: &str, cluster: &str, group: &str) -> Vec<K>
    where
        K: Resource<DynamicType = ()> + Clone + 'static,
    {
        store
            .state()
            .into_iter()
            .filter(|o| {
                in_ns(o.as_ref(), ns)
                    && label(o.as_ref(), labels::COMPONENT) == Some(labels::COMPONENT_PD)
                    && label(o.as_ref(), labels::CLUSTER) == Some(cluster)
                    && label(o.as_ref(), labels::GROUP) == Some(group)
            })
            .map(|o| (*o).clone())
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
}

impl Senders {
    fn send(&self, triggers: Vec<Trigger>) {
        for t in triggers {
            // A closed channel means the Controller stopped (shutdown).
            let _ = match t.kind {
                Kind::Cluster => self
                    .cluster
                    .unbounded_send(ObjectRef::new(&t.name).within(&t.namespace))
                    .map_err(drop),
                Kind::PdGroup => self
                    .pd_group
                    .unbounded_send(ObjectRef::new(&t.name).within(&t.namespace))
                    .map_err(drop),
                Kind::Pd => self
                    .pd
                    .unbounded_send(ObjectRef::new(&t.name).within(&t.namespace))
                    .map_err(drop),
            };
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
        .collect();
    let instances_left = BTreeMap::from([(
        ClusterKind::PD,
        sh.stores.pd_instances_of_cluster(&ns, &name).len(),
    )]);
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

async fn reconcile_pd_group(obj: Arc<PDGroup>, sh: Arc<Shared>) -> Result<Action, ReconcileError> {
    let ns = obj.namespace().unwrap_or_default();
    let name = obj.name_any();
    let cluster_name = obj.spec.cluster.name.clone();
    let cluster = sh.stores.cluster(&ns, &cluster_name);
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
    let pods = Stores::of_pd_group(&sh.stores.pods, &ns, &cluster_name, &name);
    let services = Stores::of_pd_group(&sh.stores.services, &ns, &cluster_name, &name);
    let port = tikv_operator_pd_layer::render::ports(&obj.spec.template.spec).0;
    let Some(entry) = sh.pd_entry(&ns, &cluster_name, Some((name.clone(), port))) else {
        return Err(Error::InvalidSpec {
            message: "cannot build a PD client for this group".into(),
        }
        .into());
    };
    let recorded = cluster.as_ref().and_then(|c| c.status.as_ref()?.id.clone());
    let view = PdView::from_snapshot(&entry.snapshot()).expecting_cluster_id(recorded.as_deref());
    let r = pd_reconcile::reconcile_group(
        &sh.ctx,
        &GroupSnapshot {
            group: &obj,
            cluster: ClusterFacts::from_cluster(cluster.as_deref()),
            instances: &instances,
            pods: &pods,
            services: &services,
            pd: &view,
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
    let pvcs: Vec<PersistentVolumeClaim> = sh
        .stores
        .pvcs
        .state()
        .into_iter()
        .filter(|p| {
            in_ns(p.as_ref(), &ns)
                && label(p.as_ref(), labels::COMPONENT) == Some(labels::COMPONENT_PD)
                && label(p.as_ref(), labels::INSTANCE) == Some(name.as_str())
        })
        .map(|p| (*p).clone())
        .collect();
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

/// Starts a watch of `api` into a cache; every change is routed by `route`.
fn reflect<K, R>(
    api: Api<K>,
    config: watcher::Config,
    route: R,
) -> (Store<K>, BoxFuture<'static, ()>)
where
    K: Resource<DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
    R: Fn(&K, bool) + Send + 'static,
{
    let (reader, writer) = reflector::store::<K>();
    let kind = K::kind(&()).into_owned();
    let fut = reflector::reflector(writer, watcher(api, config).default_backoff())
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

/// Runs the Controllers of one scope until `shutdown` resolves.
pub(crate) async fn run_scope(
    client: kube::Client,
    namespace: Option<String>,
    config: Config,
    metrics: Arc<Metrics>,
    synced: Arc<AtomicBool>,
    shutdown: futures::future::Shared<BoxFuture<'static, ()>>,
) -> anyhow::Result<()> {
    let ns = namespace.as_deref();
    let (cluster_tx, cluster_rx) = unbounded();
    let (pd_group_tx, pd_group_rx) = unbounded();
    let (pd_tx, pd_rx) = unbounded();
    let senders = Senders {
        cluster: cluster_tx,
        pd_group: pd_group_tx,
        pd: pd_tx,
    };
    let owned = watcher::Config::default().labels(&format!(
        "{}={}",
        labels::MANAGED_BY,
        labels::MANAGED_BY_VALUE
    ));

    // Stores are needed by the routes, and the routes by the reflectors that
    // fill the stores: routes read the stores through a late-bound cell.
    let cell: Arc<std::sync::OnceLock<Stores>> = Arc::new(std::sync::OnceLock::new());
    let registry_cell: Arc<std::sync::OnceLock<Arc<PdRegistry>>> =
        Arc::new(std::sync::OnceLock::new());

    let child_route = {
        let s = senders.clone();
        move |meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta| {
            s.send(routing::for_child(meta));
        }
    };
    let (pods, pods_fut) = {
        let r = child_route.clone();
        reflect(api::<Pod>(&client, ns), owned.clone(), move |o: &Pod, _| {
            r(&o.metadata)
        })
    };
    let (config_maps, cms_fut) = {
        let r = child_route.clone();
        reflect(
            api::<ConfigMap>(&client, ns),
            owned.clone(),
            move |o: &ConfigMap, _| {
                r(&o.metadata);
            },
        )
    };
    let (pvcs, pvcs_fut) = {
        let r = child_route.clone();
        reflect(
            api::<PersistentVolumeClaim>(&client, ns),
            owned.clone(),
            move |o: &PersistentVolumeClaim, _| r(&o.metadata),
        )
    };
    let (services, svcs_fut) = {
        let r = child_route;
        reflect(api::<Service>(&client, ns), owned, move |o: &Service, _| {
            r(&o.metadata);
        })
    };
    let (pds, pds_fut) = {
        let s = senders.clone();
        reflect(
            api::<PD>(&client, ns),
            watcher::Config::default(),
            move |o: &PD, _| {
                s.send(routing::for_pd_instance(&o.metadata, &o.spec.cluster.name));
            },
        )
    };
    let (pd_groups, groups_fut) = {
        let s = senders.clone();
        reflect(
            api::<PDGroup>(&client, ns),
            watcher::Config::default(),
            move |o: &PDGroup, _| s.send(routing::for_pd_group(&o.metadata, &o.spec.cluster.name)),
        )
    };
    let (clusters, clusters_fut) = {
        let s = senders.clone();
        let cell = cell.clone();
        let registry_cell = registry_cell.clone();
        reflect(
            api::<Cluster>(&client, ns),
            watcher::Config::default(),
            move |o: &Cluster, deleted| {
                let ns = o.namespace().unwrap_or_default();
                let name = o.name_any();
                if let Some(r) = registry_cell.get().filter(|_| deleted) {
                    r.remove(&ns, &name);
                }
                let (groups, instances) = cell.get().map_or_else(Default::default, |st| {
                    (
                        Stores::names(&st.pd_groups_of(&ns, &name)),
                        Stores::names(&st.pd_instances_of_cluster(&ns, &name)),
                    )
                });
                s.send(routing::for_cluster(&ns, &name, &groups, &instances));
            },
        )
    };
    let stores = Stores {
        clusters: clusters.clone(),
        pd_groups: pd_groups.clone(),
        pds: pds.clone(),
        pods,
        config_maps,
        pvcs,
        services,
    };
    let _ = cell.set(stores.clone());

    let on_change: OnChange = {
        let s = senders.clone();
        let st = stores.clone();
        Arc::new(move |ns: &str, cluster: &str, changed| {
            s.send(routing::for_pd_state(
                ns,
                cluster,
                changed,
                &Stores::names(&st.pd_groups_of(ns, cluster)),
                &Stores::names(&st.pd_instances_of_cluster(ns, cluster)),
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
    let shared = Arc::new(Shared {
        ctx: Ctx {
            kube: Arc::new(KubeClientWriter::new(client.clone(), reporter)),
            clock: Arc::new(SystemClock),
            policy: RequeuePolicy::default(),
        },
        stores: stores.clone(),
        registry,
        metrics: metrics.clone(),
        config: config.clone(),
        failures: Mutex::new(HashMap::new()),
    });

    let reflectors = tokio::spawn(async move {
        futures::future::join_all([
            clusters_fut,
            groups_fut,
            pds_fut,
            pods_fut,
            cms_fut,
            pvcs_fut,
            svcs_fut,
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

    let cfg = kube::runtime::Config::default().concurrency(config.concurrency);
    let cluster_ctrl = Controller::for_stream(
        stream::pending::<Result<Cluster, watcher::Error>>(),
        clusters,
    )
    .with_config(cfg.clone())
    .reconcile_on(cluster_rx)
    .graceful_shutdown_on(shutdown.clone())
    .run(
        |o, sh| observed("cluster", o, sh, reconcile_cluster),
        error_policy,
        shared.clone(),
    )
    .for_each(|_| std::future::ready(()));
    let group_ctrl = Controller::for_stream(
        stream::pending::<Result<PDGroup, watcher::Error>>(),
        pd_groups,
    )
    .with_config(cfg.clone())
    .reconcile_on(pd_group_rx)
    .graceful_shutdown_on(shutdown.clone())
    .run(
        |o, sh| observed("pdgroup", o, sh, reconcile_pd_group),
        error_policy,
        shared.clone(),
    )
    .for_each(|_| std::future::ready(()));
    let pd_ctrl = Controller::for_stream(stream::pending::<Result<PD, watcher::Error>>(), pds)
        .with_config(cfg)
        .reconcile_on(pd_rx)
        .graceful_shutdown_on(shutdown.clone())
        .run(
            |o, sh| observed("pd", o, sh, reconcile_pd),
            error_policy,
            shared.clone(),
        )
        .for_each(|_| std::future::ready(()));

    futures::join!(cluster_ctrl, group_ctrl, pd_ctrl);
    reflectors.abort();
    Ok(())
}
