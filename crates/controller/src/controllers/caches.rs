//! The watch caches of one scope and the snapshot builders that read them
//! (no GET/LIST per reconcile).

use std::collections::BTreeSet;
use std::sync::Arc;

use k8s_openapi::api::apps::v1::ControllerRevision;
use k8s_openapi::api::core::v1::{ConfigMap, Node, PersistentVolumeClaim, Pod, Service};
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Resource, ResourceExt};
use pd_client::StoreId;
use tikv_operator_api::{Cluster, PD, PDGroup, TiKV, TiKVGroup, labels, names};
use tikv_operator_cluster_layer::GroupSummary;
use tikv_operator_core::ObjectKey;
use tikv_operator_core::pd_state::PdSnapshot;
use tikv_operator_tikv_layer::render as tikv_render;

use crate::pd_registry;
use crate::routing::ClusterObjects;

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

pub(super) fn label<'a, K: Resource>(obj: &'a K, key: &str) -> Option<&'a str> {
    obj.meta().labels.as_ref()?.get(key).map(String::as_str)
}

pub(super) fn in_ns<K: Resource>(obj: &K, ns: &str) -> bool {
    obj.meta().namespace.as_deref() == Some(ns)
}

fn names_of<K: Resource>(objs: &[Arc<K>]) -> Vec<String> {
    objs.iter().filter_map(|o| o.meta().name.clone()).collect()
}

impl Stores {
    pub(super) async fn wait_until_ready(&self) -> anyhow::Result<()> {
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

    pub(super) fn cluster(&self, ns: &str, name: &str) -> Option<Arc<Cluster>> {
        self.clusters.get(&ObjectRef::new(name).within(ns))
    }

    /// PD groups of a Cluster, oldest first (then by name).
    pub(super) fn pd_groups_of(&self, ns: &str, cluster: &str) -> Vec<Arc<PDGroup>> {
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

    /// The Clusters of `ns` that use the Secret `secret` (TLS Clusters
    /// only): as their PD client Secret, or as the Secret of one of their
    /// groups.
    pub(super) fn clusters_using_secret(&self, ns: &str, secret: &str) -> Vec<String> {
        let uses = |c: &Cluster| {
            let Some(tls) = c.spec.tls_cluster.as_ref().filter(|t| t.enabled) else {
                return false;
            };
            let name = c.name_any();
            let client = tls
                .client_secret_name
                .clone()
                .unwrap_or_else(|| names::client_tls_secret(&name));
            let pd = || {
                self.pd_groups_of(ns, &name).iter().any(|g| {
                    let s = g.spec.template.spec.tls_secret_name.clone();
                    s.unwrap_or_else(|| names::pd_tls_secret(&g.name_any())) == secret
                })
            };
            let tikv = || {
                self.tikv_groups_of(ns, &name).iter().any(|g| {
                    let s = g.spec.template.spec.tls_secret_name.clone();
                    s.unwrap_or_else(|| names::tikv_tls_secret(&g.name_any())) == secret
                })
            };
            client == secret || pd() || tikv()
        };
        let mut out: Vec<String> = self
            .clusters
            .state()
            .into_iter()
            .filter(|c| in_ns(c.as_ref(), ns) && uses(c))
            .map(|c| c.name_any())
            .collect();
        out.sort();
        out
    }

    /// TiKV groups of a Cluster, by name.
    pub(super) fn tikv_groups_of(&self, ns: &str, cluster: &str) -> Vec<Arc<TiKVGroup>> {
        let mut v: Vec<Arc<TiKVGroup>> = self
            .tikv_groups
            .state()
            .into_iter()
            .filter(|g| in_ns(g.as_ref(), ns) && g.spec.cluster.name == cluster)
            .collect();
        v.sort_by_key(|g| g.name_any());
        v
    }

    pub(super) fn pd_instances_of_cluster(&self, ns: &str, cluster: &str) -> Vec<Arc<PD>> {
        self.pds
            .state()
            .into_iter()
            .filter(|i| in_ns(i.as_ref(), ns) && i.spec.cluster.name == cluster)
            .collect()
    }

    pub(super) fn tikv_instances_of_cluster(&self, ns: &str, cluster: &str) -> Vec<Arc<TiKV>> {
        self.tikvs
            .state()
            .into_iter()
            .filter(|i| in_ns(i.as_ref(), ns) && i.spec.cluster.name == cluster)
            .collect()
    }

    pub(super) fn cluster_objects(&self, ns: &str, cluster: &str) -> ClusterObjects {
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
    pub(super) fn tikv_instances_of_stores(
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

    /// The instances (PD or TiKV) in `store` of `group` of Cluster `cluster`
    /// (`cluster_of`: the Cluster an instance names).
    pub(super) fn instances_of_group<K>(
        store: &Store<K>,
        ns: &str,
        cluster: &str,
        group: &str,
        cluster_of: impl Fn(&K) -> &str,
    ) -> Vec<K>
    where
        K: Resource<DynamicType = ()> + Clone + 'static,
    {
        store
            .state()
            .into_iter()
            .filter(|i| {
                in_ns(i.as_ref(), ns)
                    && cluster_of(i.as_ref()) == cluster
                    && label(i.as_ref(), labels::GROUP) == Some(group)
            })
            .map(|i| (*i).clone())
            .collect()
    }

    /// Objects of a store labelled as belonging to a group of `component`.
    pub(super) fn of_group<K>(
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
    pub(super) fn pvcs_of(
        &self,
        component: &str,
        ns: &str,
        instance: &str,
    ) -> Vec<PersistentVolumeClaim> {
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
    pub(super) fn pd_endpoint(
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

/// The cached object of `key` in `store` as JSON (`None`: not cached).
pub(super) fn cached_json<K>(store: &Store<K>, key: &ObjectKey) -> Option<serde_json::Value>
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

pub(super) fn unreachable_snapshot(why: &str) -> Arc<PdSnapshot> {
    Arc::new(PdSnapshot {
        error: Some(why.to_owned()),
        ..PdSnapshot::default()
    })
}
