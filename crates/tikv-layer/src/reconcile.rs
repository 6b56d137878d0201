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
use std::time::Duration;

use k8s_openapi::api::apps::v1::ControllerRevision;
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Pod, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{Resource, ResourceExt};
use pd_client::{NodeState, PdApi, Store, StoreId};
use serde_json::Value;
use tikv_operator_api::cluster::UpgradePolicy;
use tikv_operator_api::common::ConfigUpdateStrategy;
use tikv_operator_api::common::condition;
use tikv_operator_api::tikv::StoreState as ApiStoreState;
use tikv_operator_api::{
    Cluster, CommonStatus, GroupStatus, PDGroup, TiKV, TiKVGroup, TiKVGroupStatus, TiKVStatus,
    labels, names,
};
use tikv_operator_core::conditions::{self, ConditionUpdate};
use tikv_operator_core::history;
use tikv_operator_core::revision::{self, PodRevision, Revisions};
use tikv_operator_core::{
    Error, EventSpec, EventType, KubeWriter, ObjectKey, Requeue, Result, content_hash,
};
use tikv_operator_pd_layer::group::SuffixSource;
use tikv_operator_pd_layer::reconcile::{pod_available, pod_ready};
use tikv_operator_pd_layer::spread::Spread;
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
    /// PD client URL TiKV dials (`status.pd`: `http://<pdgroup>-pd.<ns>.svc:<port>`).
    pub pd_url: Option<String>,
    /// Why TiKV version upgrades must wait for PD: a PDGroup of the Cluster
    /// has not finished its own update (see [`pd_upgrading`]). `None` when
    /// PD is done, or with `upgradePolicy: NoConstraints`.
    pub pd_upgrading: Option<String>,
    /// `spec.revisionHistoryLimit`, defaulted.
    pub revision_history_limit: usize,
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
                pd_url: c.status.as_ref().and_then(|s| s.pd.clone()),
                pd_upgrading: None,
                revision_history_limit: history::limit_of(c.spec.revision_history_limit),
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

use tikv_operator_core::objects::{cached, desired, event, name_of};

/// Publishes an Event. A failure is logged, never fatal: Events only inform, and the API
/// server refuses them in a namespace being deleted, where finalizers must still go (found by
/// e2e: a deleted namespace holding a TiKV cluster stayed Terminating forever).
async fn publish(ctx: &Ctx, spec: Result<EventSpec>) -> Result<()> {
    let spec = spec?;
    if let Err(e) = ctx.kube.publish_event(&spec).await {
        warn!(reason = %spec.reason, error = %e, "cannot publish an Event; going on without it");
    }
    Ok(())
}

/// The objects of one TiKV instance as rendered now.
#[derive(Debug, Clone)]
pub struct Rendered {
    /// The ConfigMap holding `tikv.toml`.
    pub config_map: ConfigMap,
    /// The PVCs.
    pub pvcs: Vec<PersistentVolumeClaim>,
    /// The Pod, its revision in the [`labels::INSTANCE_REVISION`] annotation.
    pub pod: Pod,
    /// The rendered Pod's revision.
    pub revision: PodRevision,
}

/// Renders an instance's objects and the revision of its Pod (`running`:
/// the Pod running now). The instance (to restart or report) and its group
/// (to grant restarts and count updated stores) decide currency through it.
pub fn render_instance_objects(
    kv: &TiKV,
    pd_url: Option<&str>,
    running: Option<&Pod>,
) -> Result<Rendered, RenderError> {
    let config = render::render_config(kv, pd_url)?;
    let config_hash = content_hash(&Value::String(config.clone()));
    let mut pod = render::render_pod(kv, &config_hash)?;
    let hot_reload = kv
        .spec
        .template
        .update_strategy
        .as_ref()
        .and_then(|u| u.config)
        == Some(ConfigUpdateStrategy::HotReload);
    let inputs = render::revision_inputs(kv, pd_url);
    let revision = PodRevision::stamp(&mut pod, &inputs, hot_reload, running);
    Ok(Rendered {
        config_map: render::render_config_map(kv, &config)?,
        pvcs: render::render_pvcs(kv)?,
        pod,
        revision,
    })
}

fn annotation<'a>(kv: &'a TiKV, key: &str) -> Option<&'a String> {
    kv.metadata.annotations.as_ref()?.get(key)
}

/// The instance object `group` wants for `kv`, `offline` as given, carrying
/// the restart grant `grant` (see [`labels::RESTART_ALLOWED`]).
fn desired_instance(group: &TiKVGroup, kv: &TiKV, offline: bool, grant: Option<&str>) -> TiKV {
    let mut want = render::render_instance(
        group,
        &NewInstance {
            name: name_of(kv).to_owned(),
            topology: kv.spec.topology.clone(),
        },
        offline,
    );
    if let Some(g) = grant {
        want.metadata
            .annotations
            .get_or_insert_default()
            .insert(labels::RESTART_ALLOWED.to_owned(), g.to_owned());
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

/// A TiKVGroup and what the caches hold about it.
#[derive(Debug, Clone, Copy)]
pub struct GroupSnapshot<'a> {
    /// The group.
    pub group: &'a TiKVGroup,
    /// Its Cluster.
    pub cluster: &'a ClusterFacts,
    /// TiKV instances labelled with the group.
    pub instances: &'a [TiKV],
    /// Pods of those instances.
    pub pods: &'a [Pod],
    /// TiKV instances of the Cluster's other TiKVGroups (they share the
    /// disruption budget).
    pub others: &'a [TiKV],
    /// Pods of those.
    pub other_pods: &'a [Pod],
    /// Services of the group as cached.
    pub services: &'a [Service],
    /// The group's revision history (ControllerRevisions labelled with the group).
    pub revisions: &'a [ControllerRevision],
    /// PD's stores (all groups of the Cluster).
    pub pd: &'a StoreView,
}

fn instance_ready(kv: &TiKV, pods: &[Pod]) -> bool {
    let pod_ok = pods
        .iter()
        .any(|p| name_of(p) == names::pod(name_of(kv)) && pod_ready(p));
    pod_ok
        && kv
            .status
            .as_ref()
            .is_some_and(|s| conditions::is_true(&s.common.conditions, condition::READY))
}

/// One live instance of the group, as the rolling update sees it.
struct LiveInstance<'a> {
    kv: &'a TiKV,
    /// Its running Pod (not being deleted).
    pod: Option<&'a Pod>,
    /// The Pod revision the group's template renders for it (`None`: it does
    /// not render; the instance reports why).
    revision: Option<String>,
    /// Its running Pod runs that rendering (`None`: no running Pod).
    current: Option<bool>,
    /// Its granted restart has not finished.
    restarting: bool,
    /// Its running Pod is outdated only because the rendering generation was
    /// bumped: the generation it was rendered under.
    by_generation: Option<u32>,
}

/// Reconciles one TiKVGroup. See the module docs.
#[instrument(skip_all, fields(group = name_of(s.group), namespace = s.group.metadata.namespace.as_deref()))]
pub async fn reconcile_group(
    ctx: &Ctx,
    s: &GroupSnapshot<'_>,
    suffixes: &mut (dyn SuffixSource + Send),
) -> Result<Requeue> {
    let group = s.group;
    let group_name = name_of(group).to_owned();
    let cluster_name = group.spec.cluster.name.clone();
    let namespace = group.metadata.namespace.clone();
    let generation = group.metadata.generation;
    let now = ctx.clock.now();
    let mut conds: Vec<Condition> = group
        .status
        .as_ref()
        .map(|st| st.common.conditions.clone())
        .unwrap_or_default();
    let old_progressing = conditions::find(&conds, condition::PROGRESSING).cloned();
    let min_ready = i64::from(group.spec.min_ready_seconds.unwrap_or(0).max(0));
    let running_pod = |pods: &'_ [Pod], n: &str| -> Option<usize> {
        pods.iter()
            .position(|p| name_of(p) == names::pod(n) && p.metadata.deletion_timestamp.is_none())
    };

    // Where every live instance stands against the template. Decided from
    // the template and the Pods, never from instance status, which lags.
    let live: Vec<LiveInstance<'_>> = s
        .instances
        .iter()
        .filter(|i| i.metadata.deletion_timestamp.is_none())
        .filter(|i| i.status.as_ref().and_then(|st| st.state) != Some(ApiStoreState::Removed))
        .map(|kv| {
            let pod = running_pod(s.pods, name_of(kv)).map(|at| &s.pods[at]);
            let want = desired_instance(group, kv, kv.spec.offline, None);
            let rendered = render_instance_objects(&want, s.cluster.pd_url.as_deref(), pod).ok();
            let current = pod.map(|p| rendered.as_ref().is_none_or(|r| r.revision.runs(Some(p))));
            let serving = pod.is_some_and(|p| pod_available(p, min_ready, now))
                && disruption(kv, pod, s.pd, false, min_ready, now).is_none();
            let evicting = kv
                .status
                .as_ref()
                .is_some_and(|st| st.leader_eviction_started_at.is_some());
            let by_generation = rendered
                .as_ref()
                .and_then(|r| r.revision.outdated_by_generation(pod));
            LiveInstance {
                kv,
                pod,
                by_generation,
                revision: rendered.map(|r| r.revision.revision),
                current,
                restarting: annotation(kv, labels::RESTART_ALLOWED).is_some()
                    && !(current == Some(true) && serving && !evicting),
            }
        })
        .collect();
    let currency: BTreeMap<String, Option<bool>> = live
        .iter()
        .filter(|l| !l.kv.spec.offline)
        .map(|l| (name_of(l.kv).to_owned(), l.current))
        .collect();
    let notice = revision::generation_notice(
        &live
            .iter()
            .filter(|l| !l.kv.spec.offline && l.current == Some(false))
            .map(|l| l.by_generation)
            .collect::<Vec<_>>(),
    );
    let announce = revision::notice_is_new(notice.as_deref(), old_progressing.as_ref());
    let states: Vec<InstanceState> = s
        .instances
        .iter()
        .map(|i| {
            let mut st = InstanceState::from_instance(i, instance_ready(i, s.pods));
            st.outdated = currency.get(name_of(i)) == Some(&Some(false));
            st
        })
        .collect();
    // The grant each live instance keeps: while its restart runs.
    let grant_of = |kv: &TiKV| -> Option<String> {
        live.iter()
            .find(|l| name_of(l.kv) == name_of(kv) && l.restarting)
            .and_then(|l| annotation(l.kv, labels::RESTART_ALLOWED).cloned())
    };

    let mut restart = RestartPlan::None;
    let plan = if s.cluster.paused
        || s.cluster.deleting
        || s.cluster.missing
        || group.metadata.deletion_timestamp.is_some()
    {
        None
    } else if let Some(message) = tikv_operator_core::version::downgrade_refusal(
        group.metadata.annotations.as_ref(),
        &group.spec.template.spec.version,
        live.iter().map(|l| {
            // What the Pod runs; the instance's own version before its Pod
            // exists (or for Pods from before the annotation).
            l.pod
                .and_then(|p| p.metadata.annotations.as_ref()?.get(labels::VERSION))
                .map_or(l.kv.spec.template.version.as_str(), String::as_str)
        }),
    ) {
        // Nothing of the template reaches the instances (no store is created
        // at the lower version) until the version is fixed or the downgrade
        // explicitly allowed.
        Some(GroupPlan::Refuse(Blocked {
            reason: reasons::DOWNGRADE_REFUSED,
            message,
        }))
    } else if let Err(e) = render::check_config(group.spec.template.spec.config.as_deref()) {
        // Nothing of a template whose config is rejected reaches the
        // instances: the last good template keeps running.
        Some(GroupPlan::Refuse(Blocked {
            reason: reasons::INVALID_CONFIG,
            message: format!(
                "the template is not rolled out (the instances keep the last good one): {e}"
            ),
        }))
    } else {
        let svc = render::render_peer_service(group).map_err(|e| Error::InvalidSpec {
            message: e.to_string(),
        })?;
        let d = desired(&svc)?;
        let current = cached(s.services.iter().find(|c| name_of(*c) == d.key.name));
        ctx.kube.apply_if_changed(&d, current.as_ref()).await?;
        let update_revision = render::group_revision(group);
        let all_updated = Revisions::count(
            update_revision.clone(),
            group.spec.replicas,
            currency.values(),
        )
        .all_updated;
        history::apply_history(
            ctx,
            namespace.as_deref(),
            &history::plan_history(&history::HistoryInput {
                group: &group_name,
                namespace: namespace.as_deref().unwrap_or_default(),
                labels: render::group_selector(&cluster_name, &group_name),
                owner: group.controller_owner_ref(&()),
                update: &update_revision,
                data: render::group_revision_data(group),
                current: if all_updated {
                    Some(update_revision.as_str())
                } else {
                    group
                        .status
                        .as_ref()
                        .and_then(|st| st.group.current_revision.as_deref())
                },
                limit: s.cluster.revision_history_limit,
                existing: s.revisions,
            }),
        )
        .await?;
        // Template changes reach the instance objects (ConfigMaps and PVCs
        // follow, metadata is patched in place); a running Pod that must be
        // recreated waits for its grant.
        for l in &live {
            let want = desired_instance(group, l.kv, l.kv.spec.offline, grant_of(l.kv).as_deref());
            ctx.kube
                .apply_if_changed(&desired(&want)?, cached(Some(l.kv)).as_ref())
                .await?;
        }
        let input = GroupInput {
            group: &group_name,
            replicas: group.spec.replicas,
            spread: Spread::from_policies(&group.spec.schedule_policies),
            instances: states.clone(),
            pd: s.pd,
            other_removals: s
                .others
                .iter()
                .filter(|kv| {
                    (kv.spec.offline || kv.metadata.deletion_timestamp.is_some())
                        && kv.status.as_ref().and_then(|st| st.state)
                            != Some(ApiStoreState::Removed)
                })
                .map(|kv| name_of(kv).to_owned())
                .collect(),
        };
        let plan = plan_group(&input, suffixes);
        info!(?plan, "TiKVGroup plan");
        let find = |n: &str| s.instances.iter().find(|i| name_of(*i) == n);
        match &plan {
            GroupPlan::Steady | GroupPlan::Wait(_) => {}
            GroupPlan::DeleteRemoved(names_) => {
                for n in names_ {
                    ctx.kube
                        .delete(&ObjectKey::new::<TiKV>(namespace.as_deref(), n))
                        .await?;
                }
                publish(
                    ctx,
                    event(
                        group,
                        EventType::Normal,
                        reasons::STORE_TOMBSTONED,
                        "Delete",
                        format!(
                            "deleting TiKV instance(s) {} whose store is removed",
                            names_.join(", ")
                        ),
                    ),
                )
                .await?;
            }
            GroupPlan::CancelOffline(names_) => {
                for n in names_ {
                    if let Some(i) = find(n) {
                        let want = desired_instance(group, i, false, grant_of(i).as_deref());
                        ctx.kube
                            .apply(&ObjectKey::of(&want)?, &desired(&want)?.stamped())
                            .await?;
                    }
                }
                publish(
                    ctx,
                    event(
                        group,
                        EventType::Normal,
                        reasons::REMOVAL_CANCELLED,
                        "CancelScaleIn",
                        format!(
                            "replicas raised during a scale-in: cancelling the removal of {} \
                             instead of creating new stores",
                            names_.join(", ")
                        ),
                    ),
                )
                .await?;
            }
            GroupPlan::Create(new) => {
                for n in new {
                    let kv = render::render_instance(group, n, false);
                    ctx.kube
                        .apply(&ObjectKey::of(&kv)?, &desired(&kv)?.stamped())
                        .await?;
                }
                let list: Vec<&str> = new.iter().map(|n| n.name.as_str()).collect();
                publish(
                    ctx,
                    event(
                        group,
                        EventType::Normal,
                        reasons::SCALING_OUT,
                        "Create",
                        format!("creating TiKV instance(s) {}", list.join(", ")),
                    ),
                )
                .await?;
            }
            GroupPlan::MarkOffline { name, why } => {
                if let Some(i) = find(name) {
                    let want = desired_instance(group, i, true, grant_of(i).as_deref());
                    ctx.kube
                        .apply(&ObjectKey::of(&want)?, &desired(&want)?.stamped())
                        .await?;
                    publish(
                        ctx,
                        event(
                            group,
                            EventType::Normal,
                            reasons::OFFLINE_REQUESTED,
                            "ScaleIn",
                            format!("taking the store of {name} offline ({why})"),
                        ),
                    )
                    .await?;
                }
            }
            GroupPlan::Refuse(b) => {
                let repeated = old_progressing
                    .as_ref()
                    .is_some_and(|c| c.reason == b.reason && c.message == b.message);
                if !repeated {
                    warn!(reason = b.reason, message = %b.message, "scale-in refused");
                    publish(
                        ctx,
                        event(
                            group,
                            EventType::Warning,
                            b.reason,
                            "ScaleIn",
                            b.message.clone(),
                        ),
                    )
                    .await?;
                }
            }
        }
        if plan == GroupPlan::Steady {
            restart = plan_restart(&restart_input(group, s, &live, min_ready, now));
            // A restart due only to a rendering generation bump is
            // announced (Progressing, an Event) one reconcile before the
            // first grant.
            if announce
                && matches!(restart, RestartPlan::Grant { .. })
                && let Some(n) = &notice
            {
                restart = RestartPlan::Wait(Blocked {
                    reason: revision::RENDERING_GENERATION_CHANGED,
                    message: n.clone(),
                });
            }
            if let RestartPlan::Grant {
                name,
                revision,
                why,
            } = &restart
                && let Some(i) = find(name)
            {
                let want = desired_instance(group, i, false, Some(revision));
                ctx.kube
                    .apply(&ObjectKey::of(&want)?, &desired(&want)?.stamped())
                    .await?;
                info!(instance = %name, %why, "store restart granted");
                publish(
                    ctx,
                    event(
                        group,
                        EventType::Normal,
                        reasons::ROLLING_UPDATE,
                        "Restart",
                        format!("restarting the store of {name} with its new rendering ({why})"),
                    ),
                )
                .await?;
            }
        }
        Some(plan)
    };
    if let Some(GroupPlan::Refuse(b)) = &plan
        && (b.reason == reasons::DOWNGRADE_REFUSED || b.reason == reasons::INVALID_CONFIG)
        && old_progressing
            .as_ref()
            .is_none_or(|c| c.reason != b.reason || c.message != b.message)
    {
        warn!(reason = b.reason, message = %b.message, "template refused");
        publish(
            ctx,
            event(
                group,
                EventType::Warning,
                b.reason,
                "Upgrade",
                b.message.clone(),
            ),
        )
        .await?;
    }

    // Report.
    let live_states: Vec<(&InstanceState, &TiKV)> = states
        .iter()
        .zip(s.instances)
        .filter(|(st, _)| !st.deleting && !st.removed)
        .collect();
    let serving: Vec<&(&InstanceState, &TiKV)> =
        live_states.iter().filter(|(st, _)| !st.offline).collect();
    let going: Vec<&str> = live_states
        .iter()
        .filter(|(st, _)| st.offline)
        .map(|(st, _)| st.name.as_str())
        .collect();
    let restarting: Vec<&str> = live
        .iter()
        .filter(|l| l.restarting)
        .map(|l| name_of(l.kv))
        .collect();
    let replicas = i32::try_from(live_states.len()).unwrap_or(i32::MAX);
    let ready =
        i32::try_from(serving.iter().filter(|(st, _)| st.ready).count()).unwrap_or(i32::MAX);
    let revisions = Revisions::count(
        render::group_revision(group),
        group.spec.replicas,
        currency.values(),
    );
    let progressing = match &plan {
        None => ConditionUpdate::new(
            condition::PROGRESSING,
            false,
            "Paused",
            "the Cluster is paused or being deleted, or the group is being deleted",
        ),
        Some(GroupPlan::Steady | GroupPlan::Wait(_)) if !going.is_empty() => {
            // Surface what the removals report (refusals, PD outages).
            let details: Vec<String> = live_states
                .iter()
                .filter(|(st, _)| st.offline)
                .filter_map(|(st, kv)| {
                    let c = conditions::find(
                        &kv.status.as_ref()?.common.conditions,
                        reasons::CONDITION_OFFLINE,
                    )?;
                    Some((st.name.as_str(), c))
                })
                .map(|(n, c)| format!("{n}: {} ({})", c.reason, c.message))
                .collect();
            let blocked = live_states
                .iter()
                .filter(|(st, _)| st.offline)
                .find_map(|(_, kv)| {
                    conditions::find(
                        &kv.status.as_ref()?.common.conditions,
                        reasons::CONDITION_OFFLINE,
                    )
                    .filter(|c| {
                        c.reason == reasons::REMOVAL_REFUSED || c.reason == reasons::PD_UNAVAILABLE
                    })
                    .map(|c| c.reason.clone())
                });
            ConditionUpdate::new(
                condition::PROGRESSING,
                true,
                blocked.unwrap_or_else(|| reasons::SCALING_IN.to_owned()),
                if details.is_empty() {
                    format!("removing the store(s) of {}", going.join(", "))
                } else {
                    format!("removing the store(s) of {}", details.join("; "))
                },
            )
        }
        Some(GroupPlan::Steady) => match &restart {
            RestartPlan::Grant { name, .. } => ConditionUpdate::new(
                condition::PROGRESSING,
                true,
                reasons::ROLLING_UPDATE,
                format!(
                    "restarting the store of {name} ({}/{} updated)",
                    revisions.updated, group.spec.replicas
                ),
            ),
            RestartPlan::Wait(b) => {
                ConditionUpdate::new(condition::PROGRESSING, true, b.reason, b.message.clone())
            }
            RestartPlan::None if !restarting.is_empty() => ConditionUpdate::new(
                condition::PROGRESSING,
                true,
                reasons::ROLLING_UPDATE,
                format!(
                    "waiting for {} to finish restarting ({}/{} updated)",
                    restarting.join(", "),
                    revisions.updated,
                    group.spec.replicas
                ),
            ),
            RestartPlan::None => ConditionUpdate::new(
                condition::PROGRESSING,
                false,
                reasons::SYNCED,
                format!("{} TiKV stores", serving.len()),
            ),
        },
        Some(GroupPlan::DeleteRemoved(n)) => ConditionUpdate::new(
            condition::PROGRESSING,
            true,
            reasons::STORE_TOMBSTONED,
            format!("deleting removed instance(s) {}", n.join(", ")),
        ),
        Some(GroupPlan::CancelOffline(n)) => ConditionUpdate::new(
            condition::PROGRESSING,
            true,
            reasons::REMOVAL_CANCELLED,
            format!("cancelling the removal of {}", n.join(", ")),
        ),
        Some(GroupPlan::Create(n)) => ConditionUpdate::new(
            condition::PROGRESSING,
            true,
            reasons::SCALING_OUT,
            format!("creating {} TiKV instance(s)", n.len()),
        ),
        Some(GroupPlan::MarkOffline { name, .. }) => ConditionUpdate::new(
            condition::PROGRESSING,
            true,
            reasons::SCALING_IN,
            format!("taking the store of {name} offline"),
        ),
        Some(GroupPlan::Wait(b) | GroupPlan::Refuse(b)) => {
            ConditionUpdate::new(condition::PROGRESSING, true, b.reason, b.message.clone())
        }
    };
    let progressing = revision::with_notice(progressing, notice.as_deref());
    if announce
        && let Some(n) = notice.as_deref().filter(|_| plan.is_some())
        && progressing.status == conditions::TRUE
    {
        info!(notice = n, "Pods outdated only by the rendering generation");
        publish(
            ctx,
            event(
                group,
                EventType::Normal,
                revision::RENDERING_GENERATION_CHANGED,
                "Restart",
                n.to_owned(),
            ),
        )
        .await?;
    }
    conditions::set(&mut conds, progressing, generation, now);
    let config_refused = match &plan {
        Some(GroupPlan::Refuse(b)) if b.reason == reasons::INVALID_CONFIG => {
            Some((b.reason, b.message.as_str()))
        }
        _ => None,
    };
    let all_ready = ready == group.spec.replicas
        && i32::try_from(serving.len()).unwrap_or(i32::MAX) == group.spec.replicas;
    for update in conditions::group_sync_and_ready(
        config_refused,
        (
            all_ready,
            if all_ready {
                "AllStoresReady"
            } else {
                "StoresNotReady"
            },
            format!("{ready}/{} TiKV stores ready", group.spec.replicas),
        ),
    ) {
        conditions::set(&mut conds, update, generation, now);
    }
    let previous = group
        .status
        .as_ref()
        .map(|st| st.group.clone())
        .unwrap_or_default();
    let status = TiKVGroupStatus {
        common: CommonStatus {
            conditions: conds,
            observed_generation: generation,
        },
        group: GroupStatus {
            // The version every store runs: the template's once all are
            // updated, the previous one meanwhile.
            version: if revisions.all_updated {
                Some(group.spec.template.spec.version.clone())
            } else {
                previous.version.clone()
            },
            replicas,
            ready_replicas: ready,
            updated_replicas: revisions.updated,
            current_replicas: revisions.current_replicas(previous.current_revision.as_deref()),
            update_revision: Some(revisions.update.clone()),
            current_revision: if revisions.all_updated {
                Some(revisions.update.clone())
            } else {
                previous.current_revision.clone()
            },
            selector: Some(render::selector_string(&cluster_name, &group_name)),
            ..previous
        },
    };
    if group.status.as_ref() != Some(&status) {
        let value = serde_json::to_value(&status).map_err(|source| Error::Serialization {
            what: format!("status of TiKVGroup {group_name}"),
            source,
        })?;
        ctx.kube
            .patch_status(&ObjectKey::of(group)?, &value)
            .await?;
    }
    let in_flight = plan.as_ref().is_some_and(GroupPlan::in_flight)
        || !going.is_empty()
        || restart != RestartPlan::None
        || !restarting.is_empty();
    Ok(ctx.policy.after_success(in_flight))
}

/// What the restart planner needs: this group's candidates and restarts in
/// flight, and every disrupted store of the Cluster.
fn restart_input(
    group: &TiKVGroup,
    s: &GroupSnapshot<'_>,
    live: &[LiveInstance<'_>],
    min_ready: i64,
    now: k8s_openapi::jiff::Timestamp,
) -> RestartInput {
    let mut disrupted: Vec<(String, String)> = live
        .iter()
        .filter_map(|l| {
            disruption(l.kv, l.pod, s.pd, l.restarting, min_ready, now)
                .map(|why| (name_of(l.kv).to_owned(), why))
        })
        .collect();
    // Instances of the group that are being deleted still hold a store.
    disrupted.extend(
        s.instances
            .iter()
            .filter(|i| i.metadata.deletion_timestamp.is_some())
            .filter_map(|i| {
                disruption(i, None, s.pd, false, 0, now).map(|w| (name_of(i).to_owned(), w))
            }),
    );
    disrupted.extend(s.others.iter().filter_map(|kv| {
        let pod = s
            .other_pods
            .iter()
            .find(|p| name_of(*p) == names::pod(name_of(kv)));
        let restarting = annotation(kv, labels::RESTART_ALLOWED).is_some();
        disruption(kv, pod, s.pd, restarting, 0, now).map(|why| (name_of(kv).to_owned(), why))
    }));
    let candidates = live
        .iter()
        .filter(|l| !l.kv.spec.offline && l.current == Some(false))
        .filter_map(|l| {
            let revision = l.revision.clone()?;
            let granted = annotation(l.kv, labels::RESTART_ALLOWED) == Some(&revision);
            (!granted).then(|| Candidate {
                name: name_of(l.kv).to_owned(),
                disrupted: disrupted
                    .iter()
                    .find(|(n, _)| n == name_of(l.kv))
                    .map(|(_, why)| why.clone()),
                revision,
            })
        })
        .collect();
    let upgrading = group
        .status
        .as_ref()
        .and_then(|st| st.group.version.as_deref())
        .is_some_and(|v| v != group.spec.template.spec.version);
    RestartInput {
        max_unavailable: usize::try_from(group.spec.max_unavailable.unwrap_or(1).max(1))
            .unwrap_or(1),
        candidates,
        in_progress: live
            .iter()
            .filter(|l| l.restarting)
            .map(|l| name_of(l.kv).to_owned())
            .collect(),
        disrupted,
        pd_reachable: s.pd.stores().is_some(),
        waiting_for_pd: if upgrading {
            s.cluster.pd_upgrading.clone()
        } else {
            None
        },
        removal_in_flight: live
            .iter()
            .find(|l| l.kv.spec.offline)
            .map(|l| name_of(l.kv).to_owned()),
    }
}

/// A TiKV instance and what the caches hold about it.
#[derive(Debug, Clone, Copy)]
pub struct InstanceSnapshot<'a> {
    /// The instance.
    pub instance: &'a TiKV,
    /// Its Cluster.
    pub cluster: &'a ClusterFacts,
    /// Its Pod, if any.
    pub pod: Option<&'a Pod>,
    /// Labels of the Node its Pod runs on (`None` while unscheduled or unknown).
    pub node_labels: Option<&'a BTreeMap<String, String>>,
    /// Its ConfigMap, if any.
    pub config_map: Option<&'a ConfigMap>,
    /// Its PVCs that exist (labelled `core.tikv.org/instance=<name>`).
    pub pvcs: &'a [PersistentVolumeClaim],
    /// PD's stores.
    pub pd: &'a StoreView,
    /// Layer settings.
    pub options: Options,
    /// Its group's `maxUnavailable` (1 when the group is not known).
    pub max_unavailable: usize,
}

/// Removes the evict-leader entry of store `id`; one already gone is fine.
async fn remove_evict_leader(pd_api: &dyn PdApi, id: StoreId) -> Result<()> {
    match pd_api.remove_evict_leader(id).await {
        Ok(()) => Ok(()),
        Err(e) if e.is_already_gone() => Ok(()),
        Err(e) => Err(Error::pd("remove_evict_leader", e)),
    }
}

/// Whether PD's view lists `id` in its evict-leader scheduler.
fn evicting_in_pd(pd: &StoreView, id: StoreId) -> bool {
    pd.stores()
        .and_then(|s| s.evicting.as_ref())
        .is_some_and(|e| e.contains(&id))
}

fn api_state(store: &Store) -> ApiStoreState {
    match store.node_state {
        _ if store.is_removed() => ApiStoreState::Removed,
        _ if store.is_removing() => ApiStoreState::Removing,
        NodeState::Serving => ApiStoreState::Serving,
        NodeState::Preparing => ApiStoreState::Preparing,
        NodeState::Removing => ApiStoreState::Removing,
        NodeState::Removed => ApiStoreState::Removed,
    }
}

/// The `Offline` condition for a step, with whether it is a Warning.
fn offline_condition(
    step: &RemovalStep,
    request: Request,
    previous: Option<&Condition>,
    cluster_deleting: bool,
) -> (ConditionUpdate, EventType) {
    let c = |holds: bool, reason: &str, message: String| {
        ConditionUpdate::new(reasons::CONDITION_OFFLINE, holds, reason, message)
    };
    let removing = request != Request::Keep;
    match step {
        RemovalStep::Idle | RemovalStep::RemoveStrayEvictLeader(_) => match previous {
            Some(p) if p.status == conditions::TRUE => (
                c(
                    false,
                    reasons::REMOVAL_CANCELLED,
                    "offline was cleared; the store serves".to_owned(),
                ),
                EventType::Normal,
            ),
            Some(p) => (
                c(false, &p.reason.clone(), p.message.clone()),
                EventType::Normal,
            ),
            None => (
                c(
                    false,
                    reasons::NOT_OFFLINE,
                    "the store is not being removed".to_owned(),
                ),
                EventType::Normal,
            ),
        },
        RemovalStep::Wait(b) => (
            c(removing, b.reason, b.message.clone()),
            if b.reason == reasons::PD_UNAVAILABLE {
                EventType::Warning
            } else {
                EventType::Normal
            },
        ),
        RemovalStep::Refuse(b) => (
            c(
                true,
                reasons::REMOVAL_REFUSED,
                format!("{}: {}", b.reason, b.message),
            ),
            EventType::Warning,
        ),
        RemovalStep::EvictLeaders(id) => (
            c(
                true,
                reasons::EVICTING_LEADERS,
                format!("offline requested: evicting the Region leaders of store {id}"),
            ),
            EventType::Normal,
        ),
        RemovalStep::DeleteStore(id) => (
            c(
                true,
                reasons::STORE_REMOVING,
                format!("leaders evicted; PD removes store {id} (its Regions move away)"),
            ),
            EventType::Normal,
        ),
        RemovalStep::CancelRemoval(id) => (
            c(
                false,
                reasons::REMOVAL_CANCELLED,
                format!(
                    "store {id} is back to Up: the instance is meant to stay (offline cleared, \
                     or a store delete made outside the operator; to replace a store, delete its \
                     TiKV object)"
                ),
            ),
            EventType::Normal,
        ),
        RemovalStep::RemoveEvictLeader(_) if !removing => (
            c(
                false,
                reasons::REMOVAL_CANCELLED,
                "offline was cleared: the leader eviction is removed".to_owned(),
            ),
            EventType::Normal,
        ),
        RemovalStep::TooLateToCancel => (
            c(
                true,
                reasons::TOO_LATE_TO_CANCEL,
                "offline was cleared after the store was removed; the group replaces this instance"
                    .to_owned(),
            ),
            EventType::Warning,
        ),
        RemovalStep::RemoveEvictLeader(_)
        | RemovalStep::DeletePod
        | RemovalStep::DeletePvcs(_)
        | RemovalStep::Done
        | RemovalStep::Removed => (
            c(
                true,
                reasons::STORE_TOMBSTONED,
                if cluster_deleting {
                    "the Cluster is being deleted: Pod and PVCs are deleted without store removal"
                        .to_owned()
                } else {
                    "the store is removed (Tombstone) in PD; Pod and PVCs are deleted".to_owned()
                },
            ),
            EventType::Normal,
        ),
    }
}

/// Reconciles one TiKV instance: renders and applies its objects, keeps its
/// store labels in sync, runs one step of the store removal (or its
/// cancellation) and reports status. See the module docs.
#[instrument(skip_all, fields(instance = name_of(s.instance), namespace = s.instance.metadata.namespace.as_deref()))]
pub async fn reconcile_instance(
    ctx: &Ctx,
    s: &InstanceSnapshot<'_>,
    pd_api: &dyn PdApi,
) -> Result<Requeue> {
    let kv = s.instance;
    let name = name_of(kv).to_owned();
    let namespace = kv.metadata.namespace.clone();
    let key = ObjectKey::of(kv)?;
    let now = ctx.clock.now();
    let generation = kv.metadata.generation;
    let deleting = kv.metadata.deletion_timestamp.is_some();
    let has_finalizer = kv.finalizers().iter().any(|f| f == labels::FINALIZER);
    if deleting && !has_finalizer {
        return Ok(Requeue::AwaitChange);
    }
    let mut status: TiKVStatus = kv.status.clone().unwrap_or_default();
    let recorded: Option<StoreId> = status
        .id
        .as_deref()
        .and_then(|id| id.parse().ok())
        .map(StoreId);
    let address = render::store_address(kv);
    let store: Option<&Store> = s.pd.stores().and_then(|st| st.find(recorded, &address));
    let request = if deleting {
        Request::Delete
    } else if kv.spec.offline {
        Request::Offline
    } else {
        Request::Keep
    };
    let acting = !s.cluster.paused || (deleting && s.cluster.deleting);
    let running = s.pod.filter(|p| p.metadata.deletion_timestamp.is_none());
    let rendered = render_instance_objects(kv, s.cluster.pd_url.as_deref(), running);

    // Apply the instance's objects (not while it is going away).
    let synced = if !acting {
        Some(ConditionUpdate::new(
            condition::SYNCED,
            false,
            "Paused",
            "the Cluster is paused",
        ))
    } else if deleting {
        // Safety rule 1: a Pod lost (node drain, eviction) while its store
        // is still in PD and not removed is recreated; the store must stay
        // up until PD has moved its Regions away.
        if !s.cluster.deleting && s.pod.is_none() && store.is_some_and(|st| !st.is_removed()) {
            if let Err((reason, m)) = apply_instance_objects(ctx, s, &rendered, true).await? {
                warn!(%reason, message = %m, "cannot recreate the Pod of a store being removed");
            } else {
                info!("recreated the lost Pod of a store being removed");
            }
        }
        None
    } else {
        if !has_finalizer {
            ctx.kube.add_finalizer(&key, labels::FINALIZER).await?;
        }
        let store_gone =
            store.is_some_and(Store::is_removed) || status.state == Some(ApiStoreState::Removed);
        // Offline: the Pod stays (and a lost one comes back) until the store
        // is removed in PD (safety rule 1).
        let pod_allowed =
            !store_gone && (request == Request::Keep || store.is_some_and(|st| !st.is_removed()));
        Some(
            match apply_instance_objects(ctx, s, &rendered, pod_allowed).await? {
                Ok(m) => ConditionUpdate::new(condition::SYNCED, true, reasons::SYNCED, m),
                Err((reason, m)) => ConditionUpdate::new(condition::SYNCED, false, reason, m),
            },
        )
    };

    // A rolling restart of the store (see `crate::restart`), while the store
    // is kept and not being removed.
    let restart = if acting
        && request == Request::Keep
        && !store.is_some_and(|st| st.is_removing() || st.is_removed())
    {
        let revision = rendered.as_ref().ok().map(|r| &r.revision);
        next_restart_step(&StepInput {
            pd: s.pd,
            store,
            pod_running: running.is_some(),
            pod_terminating: s
                .pod
                .is_some_and(|p| p.metadata.deletion_timestamp.is_some()),
            // A template that does not render is reported through Synced;
            // it restarts nothing.
            pod_current: revision.is_none_or(|r| r.runs(running)),
            pod_ready: running.is_some_and(pod_ready),
            leader_counts_settled: s
                .pd
                .stores()
                .is_some_and(|st| st.leader_counts_settled(now)),
            store_back: store.is_none_or(|st| {
                store_back(
                    st,
                    running
                        .and_then(|p| p.metadata.creation_timestamp.as_ref())
                        .map(|t| t.0),
                )
            }),
            granted: revision
                .is_some_and(|r| annotation(kv, labels::RESTART_ALLOWED) == Some(&r.revision)),
            eviction_started_at: status.leader_eviction_started_at.as_ref().map(|t| t.0),
            now,
            evict_leader_timeout: s.options.evict_leader_timeout,
            max_unavailable: s.max_unavailable,
        })
    } else {
        RestartStep::Idle
    };
    let restart = run_restart_step(ctx, s, pd_api, &key, &mut status, restart).await?;
    let synced = match (&restart, synced) {
        (RestartStep::Wait(b), Some(_)) => Some(ConditionUpdate::new(
            condition::SYNCED,
            false,
            b.reason,
            b.message.clone(),
        )),
        (RestartStep::EvictLeaders { message, .. }, Some(_)) => Some(ConditionUpdate::new(
            condition::SYNCED,
            false,
            reasons::EVICTING_LEADERS,
            message.clone(),
        )),
        (RestartStep::DeletePod { why }, Some(_)) => Some(ConditionUpdate::new(
            condition::SYNCED,
            false,
            reasons::RESTARTING,
            format!("restarting the Pod ({why})"),
        )),
        (RestartStep::Pending, Some(_)) => Some(ConditionUpdate::new(
            condition::SYNCED,
            false,
            reasons::RESTART_PENDING,
            "the rendered Pod changed; the restart waits for its turn (the group restarts \
             stores one disruption budget at a time)",
        )),
        (_, synced) => synced,
    };

    // The removal (or cancellation) step; a restart in flight owns the
    // store's evict-leader entry meanwhile.
    let step = if restart != RestartStep::Idle {
        RemovalStep::Idle
    } else {
        next_removal_step(&RemovalInput {
            instance: &name,
            request,
            cluster_deleting: s.cluster.deleting,
            cluster_missing: s.cluster.missing,
            pd: s.pd,
            store,
            recorded_store_id: recorded,
            eviction_started_at: status.leader_eviction_started_at.as_ref().map(|t| t.0),
            now,
            evict_leader_timeout: s.options.evict_leader_timeout,
            pod_exists: s.pod.is_some(),
            pod_ready: s.pod.is_some_and(pod_ready),
            pvcs: s.pvcs.iter().map(|p| name_of(p).to_owned()).collect(),
        })
    };
    let mut step_for_report = step.clone();
    if acting {
        if step != RemovalStep::Idle {
            info!(?step, "store removal");
        }
        match &step {
            RemovalStep::Idle
            | RemovalStep::Wait(_)
            | RemovalStep::Refuse(_)
            | RemovalStep::Removed
            | RemovalStep::TooLateToCancel => {}
            RemovalStep::EvictLeaders(id) => {
                // Record first: an entry we added is always known to be ours,
                // so every exit path removes it.
                status.leader_eviction_started_at = Some(Time(now));
                patch_status(ctx, &key, &name, &status).await?;
                match pd_api.add_evict_leader(*id).await {
                    Ok(()) => {}
                    Err(e) if e.is_already_gone() => {}
                    Err(e) => return Err(Error::pd("add_evict_leader", e)),
                }
            }
            RemovalStep::DeleteStore(id) => match pd_api.delete_store(*id).await {
                Ok(()) => {}
                Err(e) if e.is_already_gone() => {}
                Err(e @ pd_client::PdError::Rejected { .. }) => {
                    step_for_report = RemovalStep::Refuse(crate::group::Blocked {
                        reason: reasons::REMOVAL_REJECTED,
                        message: format!("PD refused to remove store {id}: {e}"),
                    });
                }
                Err(e) => return Err(Error::pd("delete_store", e)),
            },
            RemovalStep::CancelRemoval(id) => match pd_api.cancel_store_removal(*id).await {
                Ok(()) => {}
                Err(e) if e.is_already_gone() => step_for_report = RemovalStep::TooLateToCancel,
                Err(e) => return Err(Error::pd("cancel_store_removal", e)),
            },
            RemovalStep::RemoveEvictLeader(id) => {
                if let Some(id) = id {
                    remove_evict_leader(pd_api, *id).await?;
                }
                status.leader_eviction_started_at = None;
            }
            RemovalStep::RemoveStrayEvictLeader(id) => {
                remove_evict_leader(pd_api, *id).await?;
                publish(
                    ctx,
                    event(
                        kv,
                        EventType::Warning,
                        reasons::STRAY_EVICT_LEADER_REMOVED,
                        "RemoveEvictLeader",
                        format!(
                            "removed an evict-leader entry of store {id} that no operation of \
                             the operator held (it would keep the store without leaders); pause \
                             the Cluster to keep leaders off a store by hand"
                        ),
                    ),
                )
                .await?;
            }
            RemovalStep::DeletePod => {
                ctx.kube
                    .delete(&ObjectKey::new::<Pod>(
                        namespace.as_deref(),
                        &names::pod(&name),
                    ))
                    .await?;
            }
            RemovalStep::DeletePvcs(pvcs) => {
                for p in pvcs {
                    ctx.kube
                        .delete(&ObjectKey::new::<PersistentVolumeClaim>(
                            namespace.as_deref(),
                            p,
                        ))
                        .await?;
                }
            }
            RemovalStep::Done => {
                publish(
                    ctx,
                    event(
                        kv,
                        EventType::Normal,
                        reasons::STORE_TOMBSTONED,
                        "Delete",
                        "store removed, Pod and PVCs deleted; the instance goes".to_owned(),
                    ),
                )
                .await?;
                ctx.kube.remove_finalizer(&key, labels::FINALIZER).await?;
                return Ok(Requeue::AwaitChange);
            }
        }
    }

    // Store labels, while the store serves and nothing removes it.
    if acting
        && request == Request::Keep
        && let (Some(st), Some(stores)) = (store, s.pd.stores())
        && is_up(st)
    {
        let spec_labels = kv
            .spec
            .template
            .server
            .as_ref()
            .map(|sv| sv.labels.clone())
            .unwrap_or_default();
        let want = desired_store_labels(
            &spec_labels,
            &stores.replication.location_labels,
            s.node_labels,
            kv.spec.topology.as_ref(),
        );
        let diff = labels_to_set(&want, &st.labels);
        if !diff.is_empty() {
            pd_api
                .set_store_labels(st.id, &diff)
                .await
                .map_err(|e| Error::pd("set_store_labels", e))?;
            info!(store = %st.id, ?diff, "store labels set");
        }
    }

    // Report.
    let mut conds: Vec<Condition> = status.common.conditions.clone();
    if let Some(synced) = synced {
        conditions::set(&mut conds, synced, generation, now);
    }
    let previous = conditions::find(&conds, reasons::CONDITION_OFFLINE).cloned();
    let (offline, severity) = offline_condition(
        &step_for_report,
        request,
        previous.as_ref(),
        s.cluster.deleting,
    );
    let changed = previous
        .as_ref()
        .is_none_or(|p| p.reason != offline.reason || p.status != offline.status);
    let was_offline = previous
        .as_ref()
        .is_some_and(|p| p.status == conditions::TRUE);
    if acting && request != Request::Keep && !was_offline {
        publish(
            ctx,
            event(
                kv,
                EventType::Normal,
                reasons::OFFLINE_REQUESTED,
                "RemoveStore",
                if deleting {
                    "the instance is being deleted: its store is removed first".to_owned()
                } else {
                    "offline requested: the store is removed, then the Pod".to_owned()
                },
            ),
        )
        .await?;
    }
    if acting && changed && (previous.is_some() || offline.status == conditions::TRUE) {
        publish(
            ctx,
            event(
                kv,
                severity,
                &offline.reason,
                "RemoveStore",
                offline.message.clone(),
            ),
        )
        .await?;
    }
    conditions::set(&mut conds, offline, generation, now);

    let pod_is_ready = s.pod.is_some_and(pod_ready);
    let pod_created = s
        .pod
        .and_then(|p| p.metadata.creation_timestamp.as_ref())
        .map(|t| t.0);
    let ready = match (s.pd.stores(), store) {
        (None, _) => ConditionUpdate::unknown(
            condition::READY,
            reasons::PD_UNAVAILABLE,
            "PD is unreachable; store state unknown",
        ),
        (Some(_), Some(st)) if pod_is_ready && is_serving(st) && !store_back(st, pod_created) => {
            ConditionUpdate::new(
                condition::READY,
                false,
                reasons::RESTARTING,
                format!(
                    "store {} is not registered again by the new Pod's process yet (PD reports \
                     the previous process's state)",
                    st.id
                ),
            )
        }
        (Some(_), Some(st)) if request == Request::Keep && pod_is_ready && is_serving(st) => {
            ConditionUpdate::new(
                condition::READY,
                true,
                "StoreServing",
                format!("store {} is Up and serving", st.id),
            )
        }
        (Some(_), Some(st)) => ConditionUpdate::new(
            condition::READY,
            false,
            "StoreNotServing",
            format!(
                "store {} is {:?}/{:?} ({:?}); Pod ready: {pod_is_ready}; offline: {}",
                st.id,
                st.state,
                st.node_state,
                st.liveness,
                request != Request::Keep
            ),
        ),
        (Some(_), None) => ConditionUpdate::new(
            condition::READY,
            false,
            reasons::STORE_NOT_REGISTERED,
            "PD does not know this store (yet)",
        ),
    };
    // A store still joining (not registered, not yet serving) keeps the PD
    // cache refreshing fast: otherwise the instance would notice its store
    // Up only at the next slow refresh (measured: Ready 30 s late).
    let store_settling = ready.status != conditions::TRUE;
    conditions::set(&mut conds, ready, generation, now);

    status.common = CommonStatus {
        conditions: conds,
        observed_generation: generation,
    };
    if let Some(st) = store {
        status.id = Some(st.id.to_string());
        status.state = Some(api_state(st));
        status.leader_count = st
            .leader_count
            .map(|c| i64::try_from(c).unwrap_or(i64::MAX));
        status.region_count = Some(i64::try_from(st.region_count).unwrap_or(i64::MAX));
    } else if let Some(stores) = s.pd.stores() {
        if recorded.is_some() && !stores.stores.is_empty() {
            // PD knows stores but no longer this one: it was removed and
            // purged. It never comes back; the group replaces the instance.
            status.state = Some(ApiStoreState::Removed);
        } else if request == Request::Offline
            && matches!(
                step_for_report,
                RemovalStep::Removed | RemovalStep::DeletePod
            )
        {
            // Never registered: nothing to remove in PD.
            status.state = Some(ApiStoreState::Removed);
        }
    }
    if matches!(step_for_report, RemovalStep::Removed) {
        status.state = Some(ApiStoreState::Removed);
    }
    status.current_revision = s
        .pod
        .and_then(|p| p.metadata.annotations.as_ref())
        .and_then(|a| a.get(labels::INSTANCE_REVISION).cloned())
        .or(status.current_revision);
    if kv.status.as_ref() != Some(&status) {
        patch_status(ctx, &key, &name, &status).await?;
    }
    let in_flight =
        step_for_report.in_flight() || restart.in_flight() || !pod_is_ready || store_settling;
    Ok(ctx.policy.after_success(in_flight))
}

/// Carries out one restart step; returns the step to report (a timed-out
/// eviction resolves into a Pod deletion or a wait).
async fn run_restart_step(
    ctx: &Ctx,
    s: &InstanceSnapshot<'_>,
    pd_api: &dyn PdApi,
    key: &ObjectKey,
    status: &mut TiKVStatus,
    step: RestartStep,
) -> Result<RestartStep> {
    let kv = s.instance;
    let name = name_of(kv);
    if step.in_flight() {
        info!(?step, "store restart");
    }
    let step = match step {
        RestartStep::CheckDownPeers { store, leaders } => match pd_api.down_peers().await {
            Ok(down) => {
                let next = after_timeout(store, leaders, &down);
                let previous = conditions::find(&status.common.conditions, condition::SYNCED);
                let note = match &next {
                    RestartStep::Wait(b) => Some(b.message.clone()),
                    RestartStep::DeletePod { why } => Some(why.clone()),
                    _ => None,
                };
                // Once per state, not at every poll.
                if let Some(note) = note
                    && previous.is_none_or(|c| c.message != note)
                {
                    publish(
                        ctx,
                        event(
                            kv,
                            EventType::Warning,
                            reasons::EVICTION_TIMED_OUT,
                            "Restart",
                            note,
                        ),
                    )
                    .await?;
                }
                next
            }
            Err(e) => RestartStep::Wait(Blocked {
                reason: reasons::PD_UNAVAILABLE,
                message: format!(
                    "leader eviction timed out and PD's down peers cannot be read ({e}); the \
                     restart waits"
                ),
            }),
        },
        other => other,
    };
    match &step {
        RestartStep::Idle | RestartStep::Pending | RestartStep::Wait(_) => {}
        RestartStep::CheckDownPeers { .. } => {}
        RestartStep::EvictLeaders { store: id, .. } => {
            let first = status.leader_eviction_started_at.is_none();
            if first {
                // Record first: an entry we added is always known to be ours,
                // so every exit path removes it.
                status.leader_eviction_started_at = Some(Time(ctx.clock.now()));
                patch_status(ctx, key, name, status).await?;
            }
            // Re-added while leaders remain (an entry lost with a PD leader
            // change comes back), but not re-posted while PD lists it.
            if !evicting_in_pd(s.pd, *id) {
                match pd_api.add_evict_leader(*id).await {
                    Ok(()) => {}
                    Err(e) if e.is_already_gone() => {}
                    Err(e) => return Err(Error::pd("add_evict_leader", e)),
                }
            }
            if first {
                publish(
                    ctx,
                    event(
                        kv,
                        EventType::Normal,
                        reasons::EVICTING_LEADERS,
                        "Restart",
                        format!("evicting the leaders of store {id} before restarting its Pod"),
                    ),
                )
                .await?;
            }
        }
        RestartStep::DeletePod { why } => {
            // Exactly the Pod the decision was taken on, never a replacement
            // a stale cache does not show yet.
            if let Some(uid) = s.pod.and_then(|p| p.metadata.uid.as_deref()) {
                ctx.kube
                    .delete_exact(
                        &ObjectKey::new::<Pod>(kv.metadata.namespace.as_deref(), &names::pod(name)),
                        uid,
                    )
                    .await?;
            }
            publish(
                ctx,
                event(
                    kv,
                    EventType::Normal,
                    reasons::RESTARTING,
                    "Restart",
                    format!("deleting the Pod to restart it with its new rendering ({why})"),
                ),
            )
            .await?;
        }
        RestartStep::RemoveEvictLeader(id) => {
            if let Some(id) = id {
                remove_evict_leader(pd_api, *id).await?;
            }
            status.leader_eviction_started_at = None;
            publish(
                ctx,
                event(
                    kv,
                    EventType::Normal,
                    reasons::RESTARTED,
                    "Restart",
                    "the store serves again; its evict-leader entry is removed".to_owned(),
                ),
            )
            .await?;
        }
    }
    Ok(step)
}

async fn patch_status(ctx: &Ctx, key: &ObjectKey, name: &str, status: &TiKVStatus) -> Result<()> {
    let value = serde_json::to_value(status).map_err(|source| Error::Serialization {
        what: format!("status of TiKV {name}"),
        source,
    })?;
    ctx.kube.patch_status(key, &value).await
}

/// Applies ConfigMap, PVCs and (when `pod_allowed`) the Pod. The outer error
/// is a failed write; the inner one why the instance is not in sync.
async fn apply_instance_objects(
    ctx: &Ctx,
    s: &InstanceSnapshot<'_>,
    rendered: &std::result::Result<Rendered, RenderError>,
    pod_allowed: bool,
) -> Result<Result<String, (&'static str, String)>> {
    let Rendered {
        config_map: cm,
        pvcs,
        pod,
        revision,
    } = match rendered {
        Ok(r) => r,
        Err(e) => return Ok(Err((e.reason(), e.to_string()))),
    };
    ctx.kube
        .apply_if_changed(&desired(cm)?, cached(s.config_map).as_ref())
        .await?;
    for pvc in pvcs {
        let current = cached(s.pvcs.iter().find(|p| name_of(*p) == name_of(pvc)));
        ctx.kube
            .apply_if_changed(&desired(pvc)?, current.as_ref())
            .await?;
    }
    if s.cluster.suspend_compute {
        if let Some(p) = s.pod {
            ctx.kube.delete(&ObjectKey::of(p)?).await?;
        }
        return Ok(Ok(
            "compute suspended: Pod deleted, PVCs and config kept".to_owned()
        ));
    }
    match s.pod {
        None if pod_allowed => {
            ctx.kube.apply_if_changed(&desired(pod)?, None).await?;
            Ok(Ok("Pod created".to_owned()))
        }
        None => Ok(Ok(
            "the store is offline or removed: no Pod is (re)created".to_owned()
        )),
        Some(current) if current.metadata.deletion_timestamp.is_some() => Ok(Err((
            reasons::RESTARTING,
            "waiting for the old Pod to terminate".to_owned(),
        ))),
        Some(current) if revision.runs(Some(current)) => {
            // Same revision: whatever differs (labels, annotations, the
            // config hash under HotReload) is patched in place; a spec
            // rendered differently waits for the next recreation.
            let pod = tikv_operator_core::revision::in_place(pod, current);
            ctx.kube
                .apply_if_changed(&desired(&pod)?, cached(Some(current)).as_ref())
                .await?;
            Ok(Ok("up to date".to_owned()))
        }
        Some(_) => Ok(Err((
            reasons::RESTART_PENDING,
            "the rendered Pod changed (configuration, image, resources, ...); the store is \
             restarted when its group grants it (one disruption budget at a time)"
                .to_owned(),
        ))),
    }
}
