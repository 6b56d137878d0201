//! Thin adapters: per kind, build the snapshot from the caches and the
//! Cluster's PD access, call the layer's reconciler, and keep PD polling
//! fast while something is in flight.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use tikv_operator_api::{Cluster, PD, PDGroup, TiKV, TiKVGroup, labels, names};
use tikv_operator_cluster_layer::{ClusterSnapshot, GroupSummary, Kind as ClusterKind};
use tikv_operator_core::Error;
use tikv_operator_core::component::naming::RandomSuffix;
use tikv_operator_pd_layer::reconcile::{ClusterFacts, GroupSnapshot, InstanceSnapshot};
use tikv_operator_pd_layer::{PdView, reconcile as pd_reconcile};
use tikv_operator_tikv_layer::StoreView;
use tikv_operator_tikv_layer::reconcile::{
    self as tikv_reconcile, ClusterFacts as TikvClusterFacts, GroupSnapshot as TikvGroupSnapshot,
    InstanceSnapshot as TikvInstanceSnapshot, Options as TikvOptions,
};
use tracing::debug;

use super::caches::{Stores, label, unreachable_snapshot};
use super::{ReconcileError, Shared, key_of, pd_access_error};
use crate::pd_registry::PdEntry;

pub(super) async fn reconcile_cluster(
    obj: Arc<Cluster>,
    sh: Arc<Shared>,
) -> Result<Action, ReconcileError> {
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
    // Without PD access (no PDGroup yet, or a refused client Secret) the
    // Cluster reconciles on a PD that does not answer, with the reason.
    let (entry, pd) = match sh.pd_entry(&ns, &name, None) {
        Ok(Some(e)) => {
            let pd = e.snapshot();
            (Some(e), pd)
        }
        Ok(None) => (None, unreachable_snapshot("the Cluster has no PDGroup yet")),
        Err(e) => (None, unreachable_snapshot(&e.to_string())),
    };
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

pub(super) async fn reconcile_pd_group(
    obj: Arc<PDGroup>,
    sh: Arc<Shared>,
) -> Result<Action, ReconcileError> {
    let ns = obj.namespace().unwrap_or_default();
    let name = obj.name_any();
    let cluster_name = obj.spec.cluster.name.clone();
    let cluster = sh.stores.cluster(&ns, &cluster_name);
    let instances: Vec<PD> =
        Stores::instances_of_group(&sh.stores.pds, &ns, &cluster_name, &name, |i| {
            &i.spec.cluster.name
        });
    let pd = labels::COMPONENT_PD;
    let pods = Stores::of_group(&sh.stores.pods, pd, &ns, &cluster_name, &name);
    let services = Stores::of_group(&sh.stores.services, pd, &ns, &cluster_name, &name);
    let revisions = Stores::of_group(&sh.stores.revisions, pd, &ns, &cluster_name, &name);
    let port = tikv_operator_pd_layer::render::ports(&obj.spec.template.spec).0;
    let Some(entry) = sh
        .pd_entry(&ns, &cluster_name, Some((name.clone(), port)))
        .map_err(pd_access_error)?
    else {
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

pub(super) async fn reconcile_pd(obj: Arc<PD>, sh: Arc<Shared>) -> Result<Action, ReconcileError> {
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
    let Some(entry) = sh
        .pd_entry(&ns, &cluster_name, fallback)
        .map_err(pd_access_error)?
    else {
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

pub(super) async fn reconcile_tikv_group(
    obj: Arc<TiKVGroup>,
    sh: Arc<Shared>,
) -> Result<Action, ReconcileError> {
    let ns = obj.namespace().unwrap_or_default();
    let name = obj.name_any();
    let cluster_name = obj.spec.cluster.name.clone();
    let cluster = sh.stores.cluster(&ns, &cluster_name);
    let instances: Vec<TiKV> =
        Stores::instances_of_group(&sh.stores.tikvs, &ns, &cluster_name, &name, |i| {
            &i.spec.cluster.name
        });
    let tikv = labels::COMPONENT_TIKV;
    let pods = Stores::of_group(&sh.stores.pods, tikv, &ns, &cluster_name, &name);
    let services = Stores::of_group(&sh.stores.services, tikv, &ns, &cluster_name, &name);
    let revisions = Stores::of_group(&sh.stores.revisions, tikv, &ns, &cluster_name, &name);
    let entry = tikv_pd_entry(&sh, &ns, cluster.as_deref(), &cluster_name)?;
    let view = store_view(&sh, entry.as_ref(), &ns, &cluster_name, cluster.as_deref());
    let pd_groups: Vec<PDGroup> = sh
        .stores
        .pd_groups_of(&ns, &cluster_name)
        .iter()
        .map(|g| (**g).clone())
        .collect();
    let facts = TikvClusterFacts::for_group(cluster.as_deref(), &pd_groups);
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
    // PD's Region health only when failover may act on a store of the group.
    let regions = match &entry {
        Some(e) if tikv_reconcile::needs_region_health(&instances, &view) => {
            tikv_reconcile::RegionHealth::observe(e.api.as_ref()).await
        }
        _ => tikv_reconcile::RegionHealth::NotRead,
    };
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
            regions: &regions,
        },
        &mut RandomSuffix::default(),
    )
    .await?;
    if let Some(e) = &entry {
        e.hold_fast(&key_of(obj.as_ref()), sh.in_flight(&r));
    }
    Ok(r.into())
}

pub(super) async fn reconcile_tikv(
    obj: Arc<TiKV>,
    sh: Arc<Shared>,
) -> Result<Action, ReconcileError> {
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
    let entry = tikv_pd_entry(&sh, &ns, cluster.as_deref(), &cluster_name)?;
    let view = store_view(&sh, entry.as_ref(), &ns, &cluster_name, cluster.as_deref());
    let facts = TikvClusterFacts::from_cluster(cluster.as_deref());
    let max_unavailable = label(obj.as_ref(), labels::GROUP)
        .and_then(|g| sh.stores.tikv_groups.get(&ObjectRef::new(g).within(&ns)))
        .and_then(|g| g.spec.max_unavailable)
        .and_then(|m| usize::try_from(m).ok())
        .unwrap_or(1)
        .max(1);
    let Some(entry) = entry else {
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
            eviction_gate: &entry.eviction_gate,
        },
        entry.api.as_ref(),
    )
    .await?;
    entry.hold_fast(&key_of(obj.as_ref()), sh.in_flight(&r));
    Ok(r.into())
}

/// PD access for a TiKV object: the Cluster's first PDGroup or, when the
/// cache has none (deletion), the URL the Cluster published in `status.pd`.
/// A refused client Secret is an error: nothing of a TLS Cluster is decided
/// without its PD.
pub(super) fn tikv_pd_entry(
    sh: &Shared,
    ns: &str,
    cluster: Option<&Cluster>,
    cluster_name: &str,
) -> Result<Option<Arc<PdEntry>>, ReconcileError> {
    match sh.pd_entry(ns, cluster_name, None) {
        Ok(Some(e)) => return Ok(Some(e)),
        Err(e) if e.is_secret() => return Err(pd_access_error(e).into()),
        // No PDGroup, or no client for its URL: try the published one.
        Ok(None) | Err(_) => {}
    }
    let Some(url) = cluster.and_then(|c| c.status.as_ref()?.pd.clone()) else {
        return Ok(None);
    };
    match sh.pd_entry_at(ns, cluster_name, &url) {
        Ok(e) => Ok(Some(e)),
        Err(e) if e.is_secret() => Err(pd_access_error(e).into()),
        // As before: a client that cannot be built for the published URL
        // is no PD known.
        Err(_) => Ok(None),
    }
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
