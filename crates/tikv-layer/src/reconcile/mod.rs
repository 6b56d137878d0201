//! The TiKV-layer reconcilers: observe -> plan -> apply -> report, with every
//! side effect behind [`KubeWriter`], [`Clock`](tikv_operator_core::Clock)
//! and [`PdApi`].
//!
//! # Entry points (for the manager's kube-runtime Controllers)
//!
//! Per reconcile the caller builds a snapshot from its watch caches (no
//! GET/LIST) and PD, and calls:
//!
//! - [`reconcile_group`] for a TiKVGroup with a [`GroupSnapshot`]: the group,
//!   its Cluster ([`ClusterFacts::from_cluster`]), the TiKV instances
//!   labelled `core.tikv.org/group=<group>` (same namespace and cluster),
//!   their Pods, the group's Services, and PD's stores ([`StoreView`], from
//!   [`StoreView::observe`] or [`StoreView::from_snapshot`], always passed
//!   through [`StoreView::expecting_cluster_id`] with the Cluster's
//!   `status.id`). Owns: TiKV instance objects, the peer Service.
//! - [`reconcile_instance`] for a TiKV instance with an [`InstanceSnapshot`]
//!   and the Cluster's [`PdApi`]. Owns: ConfigMap, PVCs, Pod, store labels,
//!   and the store removal (or its cancellation) run while the instance is
//!   `offline` or being deleted.
//!
//! Both return a [`Requeue`]; errors are [`Error`]s (error policy:
//! `RequeuePolicy::after_error`).

use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::time::Duration;

use k8s_openapi::api::apps::v1::ControllerRevision;
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Pod, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use pd_client::{NodeState, PdApi, Store, StoreId};
use tikv_operator_api::cluster::UpgradePolicy;
use tikv_operator_api::common::condition;
use tikv_operator_api::tikv::StoreState as ApiStoreState;
use tikv_operator_api::{
    Cluster, CommonStatus, PDGroup, TiKV, TiKVGroup, TiKVGroupStatus, TiKVStatus, labels, names,
};
use tikv_operator_core::component::apply;
use tikv_operator_core::component::group::{
    GroupConditions, TemplateRevision, TlsSecrets, announce_refusal, apply_group_objects,
    is_tls_refusal, set_conditions, template_refusal, waiting_for_cluster,
};
use tikv_operator_core::component::naming::SuffixSource;
use tikv_operator_core::component::pods::{pod_available, pod_ready};
use tikv_operator_core::component::render as common;
use tikv_operator_core::component::spread::Spread;
use tikv_operator_core::conditions::{self, ConditionUpdate};
use tikv_operator_core::history;
use tikv_operator_core::revision::{self, Revisions};
use tikv_operator_core::{Error, EventSpec, EventType, KubeWriter, ObjectKey, Requeue, Result};
use tracing::{info, instrument, warn};

use crate::group::{Blocked, GroupInput, GroupPlan, InstanceState, NewInstance, plan_group};
use crate::reasons;
use crate::removal::{RemovalInput, RemovalStep, Request, next_removal_step};
use crate::render::{self, RenderError};
use crate::restart::{
    Candidate, RestartInput, RestartPlan, RestartStep, StepInput, after_timeout, next_restart_step,
    plan_restart, store_back,
};
use crate::store_labels::{desired_store_labels, labels_to_set};
use crate::store_view::{StoreView, is_serving, is_up};

pub use tikv_operator_core::Ctx;

/// What the TiKV layer needs to know about its Cluster.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ClusterFacts {
    /// `spec.paused`: report status, change nothing.
    pub paused: bool,
    /// `spec.suspendAction.suspendCompute`: no Pods (PVCs and config stay).
    pub suspend_compute: bool,
    /// The Cluster is being deleted: stores are not removed through PD one
    /// by one, PD goes away too.
    pub deleting: bool,
    /// The Cluster does not exist (never created, or its finalizer was
    /// stripped by hand): nothing is created, and removals wait (only a
    /// Cluster being deleted may skip PD).
    pub missing: bool,
    /// The Cluster does not carry the operator's finalizer yet (its first
    /// reconcile adds it): nothing is created for it until it does, or a
    /// Cluster deleted at once would leave instances no deletion can finish
    /// (found by e2e: a PD created before the Cluster's finalizer was held by
    /// its own finalizer forever once the Cluster went).
    pub unclaimed: bool,
    /// PD client URL TiKV dials (`status.pd`: `http://<pdgroup>-pd.<ns>.svc:<port>`,
    /// `https://` when the Cluster speaks TLS).
    pub pd_url: Option<String>,
    /// Why TiKV version upgrades must wait for PD: a PDGroup of the Cluster
    /// has not finished its own update (see [`pd_upgrading`]). `None` when
    /// PD is done, or with `upgradePolicy: NoConstraints`.
    pub pd_upgrading: Option<String>,
    /// `spec.revisionHistoryLimit`, defaulted.
    pub revision_history_limit: usize,
    /// `spec.tlsCluster.enabled`: new stores speak TLS; none is created or
    /// updated while the group's TLS Secret is refused.
    pub tls: bool,
}

/// Why TiKV version upgrades of `cluster` must wait for its PD groups: the
/// first PDGroup that has not observed its spec, does not run its template's
/// version on every member, or has members on an older revision. `None` when
/// every PDGroup is done or the Cluster's `upgradePolicy` is `NoConstraints`.
pub fn pd_upgrading(cluster: Option<&Cluster>, pd_groups: &[PDGroup]) -> Option<String> {
    if cluster.and_then(|c| c.spec.upgrade_policy) == Some(UpgradePolicy::NoConstraints) {
        return None;
    }
    pd_groups.iter().find_map(|g| {
        let name = name_of(g);
        let want = &g.spec.template.spec.version;
        let Some(st) = g.status.as_ref() else {
            return Some(format!("PDGroup {name} reports no status yet"));
        };
        if st.common.observed_generation != g.metadata.generation {
            return Some(format!("PDGroup {name} has not observed its latest spec"));
        }
        // The PD layer reports currentRevision and version only once every
        // member runs the template, is Ready and is healthy in a PD reading
        // taken after its Pod turned Ready.
        if st.group.version.as_deref() != Some(want.as_str())
            || st.group.current_revision != st.group.update_revision
            || !conditions::is_true(&st.common.conditions, condition::READY)
        {
            return Some(format!(
                "PDGroup {name} is still updating to {want} ({}/{} members updated); TiKV \
                 version upgrades wait for PD (upgradePolicy Default)",
                st.group.updated_replicas, g.spec.replicas
            ));
        }
        None
    })
}

impl ClusterFacts {
    /// Facts of `cluster` for a TiKVGroup: with [`pd_upgrading`] from the
    /// Cluster's PD groups (TiKV version upgrades wait for PD).
    pub fn for_group(cluster: Option<&Cluster>, pd_groups: &[PDGroup]) -> Self {
        Self {
            pd_upgrading: pd_upgrading(cluster, pd_groups),
            ..Self::from_cluster(cluster)
        }
    }

    /// Facts of `cluster`; a missing Cluster counts as being deleted.
    pub fn from_cluster(cluster: Option<&Cluster>) -> Self {
        match cluster {
            None => Self {
                missing: true,
                ..Self::default()
            },
            Some(c) => Self {
                paused: c.spec.paused,
                suspend_compute: c
                    .spec
                    .suspend_action
                    .as_ref()
                    .is_some_and(|s| s.suspend_compute),
                deleting: c.metadata.deletion_timestamp.is_some(),
                missing: false,
                unclaimed: !has_finalizer(c),
                pd_url: c.status.as_ref().and_then(|s| s.pd.clone()),
                pd_upgrading: None,
                revision_history_limit: history::limit_of(c.spec.revision_history_limit),
                tls: c.tls_enabled(),
            },
        }
    }
}

/// Settings of the TiKV layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// How long a store's leaders may take to leave before PD is asked to
    /// remove the store anyway (default 5 minutes).
    pub evict_leader_timeout: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            evict_leader_timeout: Duration::from_secs(300),
        }
    }
}

use tikv_operator_core::objects::{
    self, cached, desired, ensure_finalizer, event, has_finalizer, name_of,
    patch_status_if_changed, release_finalizer,
};

/// Publishes an Event through the one policy of every reconciler
/// ([`objects::publish`]: a failure is logged, never fatal).
async fn publish(ctx: &Ctx, spec: Result<EventSpec>) -> Result<()> {
    objects::publish(ctx.kube.as_ref(), spec).await
}

pub use tikv_operator_core::component::render::Rendered;

/// Renders an instance's objects and the revision of its Pod (`running`:
/// the Pod running now). The instance (to restart or report) and its group
/// (to grant restarts and count updated stores) decide currency through it.
pub fn render_instance_objects(
    kv: &TiKV,
    pd_url: Option<&str>,
    running: Option<&Pod>,
) -> Result<Rendered, RenderError> {
    let config = render::render_config(kv, pd_url)?;
    common::render_instance_objects::<render::Kv>(
        kv,
        &config,
        |hash| render::render_pod(kv, hash),
        &render::revision_inputs(kv, pd_url),
        running,
    )
}

fn annotation<'a>(kv: &'a TiKV, key: &str) -> Option<&'a String> {
    kv.metadata.annotations.as_ref()?.get(key)
}

/// The instance object `group` wants for `kv`, `offline` as given, carrying
/// the restart grant `grant` (see [`labels::RESTART_ALLOWED`]).
/// A failover replacement keeps its [`labels::FAILOVER_REPLACES`] annotation.
fn desired_instance(group: &TiKVGroup, kv: &TiKV, offline: bool, grant: Option<&str>) -> TiKV {
    let mut want = render::render_instance(
        group,
        &NewInstance {
            name: name_of(kv).to_owned(),
            topology: kv.spec.topology.clone(),
        },
        offline,
        kv.spec.tls_cluster,
    );
    if let Some(g) = grant {
        want.metadata
            .annotations
            .get_or_insert_default()
            .insert(labels::RESTART_ALLOWED.to_owned(), g.to_owned());
    }
    if let Some(failed) = annotation(kv, labels::FAILOVER_REPLACES) {
        want.metadata
            .annotations
            .get_or_insert_default()
            .insert(labels::FAILOVER_REPLACES.to_owned(), failed.clone());
    }
    want
}

/// Why a TiKV instance counts against the Cluster's disruption budget, or
/// `None` when it serves. `restarting`: a granted restart has not finished.
pub fn disruption(
    kv: &TiKV,
    pod: Option<&Pod>,
    pd: &StoreView,
    restarting: bool,
    min_ready_seconds: i64,
    now: k8s_openapi::jiff::Timestamp,
) -> Option<String> {
    let status = kv.status.as_ref();
    if status.is_some_and(|s| s.state == Some(ApiStoreState::Removed)) {
        return None;
    }
    if kv.metadata.deletion_timestamp.is_some() || kv.spec.offline {
        return Some("its store is being removed".to_owned());
    }
    if restarting {
        return Some("restarting".to_owned());
    }
    if status.is_some_and(|s| s.leader_eviction_started_at.is_some()) {
        return Some("its leaders are evicted".to_owned());
    }
    let Some(pod) = pod.filter(|p| p.metadata.deletion_timestamp.is_none()) else {
        return Some("no running Pod".to_owned());
    };
    if !pod_available(pod, min_ready_seconds, now) {
        return Some("Pod not ready".to_owned());
    }
    let recorded = status
        .and_then(|s| s.id.as_deref())
        .and_then(|id| id.parse().ok())
        .map(StoreId);
    let stores = pd.stores()?;
    match stores.find(recorded, &render::store_address(kv)) {
        None => Some("store not registered".to_owned()),
        Some(st) if !is_serving(st) => Some(format!("store {} not serving", st.id)),
        Some(st) if !store_back(st, pod.metadata.creation_timestamp.as_ref().map(|t| t.0)) => {
            Some(format!(
                "store {} not registered again by its new Pod's process",
                st.id
            ))
        }
        Some(_) => None,
    }
}

mod failover;
mod groups;
mod instance;
mod restarts;
pub use crate::failover::RegionHealth;
pub use failover::needs_region_health;
pub use groups::{GroupSnapshot, reconcile_group};
pub use instance::{EvictionGate, InstanceSnapshot, reconcile_instance};
