//! The PD-layer reconcilers: observe -> plan -> apply -> report, with every
//! side effect behind [`KubeWriter`], [`Clock`] and [`PdApi`].
//!
//! # Entry points (for the manager's kube-runtime Controllers)
//!
//! The manager owns the Controllers, reflector stores and the per-Cluster PD
//! client; per reconcile it builds a snapshot from its stores and calls:
//!
//! - [`reconcile_group`] for a PDGroup, with a [`GroupSnapshot`]: the group, its
//!   Cluster ([`ClusterFacts::from_cluster`]), the PD instances labelled
//!   `core.tikv.org/group=<group>`, their Pods, the group's Services (all from
//!   the stores; no GET/LIST) and PD's membership ([`PdView`], from the PD
//!   state cache via [`PdView::from_snapshot`], or [`PdView::observe`],
//!   always passed through [`PdView::expecting_cluster_id`] with the Cluster's
//!   `status.id`). Owns: PD instance objects, Services.
//! - [`reconcile_instance`] for a PD instance, with an [`InstanceSnapshot`]
//!   and the Cluster's [`PdApi`]. Owns: ConfigMap, PVCs, Pod, and the member
//!   removal run by its finalizer.
//!
//! Both return a [`Requeue`] (convert with `Action::from`). Errors are
//! [`Error`]s; the error policy is [`RequeuePolicy::after_error`].
//! Watches the manager must set up: PDGroup owns PD instances and Services;
//! PD owns Pod, ConfigMap and PVCs; a Cluster change maps to its groups.

use k8s_openapi::api::apps::v1::ControllerRevision;
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Pod, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use pd_client::PdApi;
use tikv_operator_api::common::condition;
use tikv_operator_api::{Cluster, PD, PDGroup, PDGroupStatus, PDStatus, labels, names};
use tikv_operator_core::conditions::{self, ConditionUpdate};
use tikv_operator_core::history;
use tikv_operator_core::revision;
use tikv_operator_core::{Clock, Error, EventType, KubeWriter, ObjectKey, Requeue, Result};
use tracing::{info, instrument, warn};

use crate::group::{Blocked, GroupInput, GroupPlan, InstanceState, NewInstance, plan_group};
use crate::pd_view::PdView;
use crate::reasons;
use crate::removal::{RemovalInput, RemovalStep, next_removal_step};
use crate::render::{self, RenderError};
use tikv_operator_core::component::apply;
use tikv_operator_core::component::group::{
    TemplateRevision, apply_group_objects, template_refusal,
};
use tikv_operator_core::component::naming::SuffixSource;
use tikv_operator_core::component::pods::{pod_available, pod_ready};
use tikv_operator_core::component::render as common;
use tikv_operator_core::component::spread::Spread;

pub use tikv_operator_core::Ctx;

/// What the PD layer needs to know about its Cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ClusterFacts {
    /// `spec.paused`: report status, change nothing.
    pub paused: bool,
    /// `spec.suspendAction.suspendCompute`: no Pods (PVCs and config stay).
    pub suspend_compute: bool,
    /// The Cluster is being deleted: members are not removed one by one
    /// through PD.
    pub deleting: bool,
    /// The Cluster does not exist (never created, or its finalizer was
    /// stripped by hand): nothing is created, and removals wait (only a
    /// Cluster being deleted may skip PD).
    pub missing: bool,
    /// The Cluster recorded a PD cluster id: PD was bootstrapped, new members join.
    pub pd_cluster_id_known: bool,
    /// `spec.revisionHistoryLimit`, defaulted.
    pub revision_history_limit: usize,
}

impl ClusterFacts {
    /// Facts of `cluster`.
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
                pd_cluster_id_known: c.status.as_ref().is_some_and(|s| s.id.is_some()),
                revision_history_limit: history::limit_of(c.spec.revision_history_limit),
            },
        }
    }
}

/// When a Pod last turned Ready (its `Ready` condition's transition time, else
/// its creation time).
pub fn ready_since(pod: &Pod) -> Option<k8s_openapi::jiff::Timestamp> {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
        .and_then(|c| c.last_transition_time.as_ref())
        .or(pod.metadata.creation_timestamp.as_ref())
        .map(|t| t.0)
}

use tikv_operator_core::objects::{
    cached, desired, ensure_finalizer, event, has_finalizer, name_of, patch_status_if_changed,
    release_finalizer, started_by_pod,
};

pub use tikv_operator_core::revision::Revisions;

/// Each live instance with its running Pod (if any) and what the group's
/// current template renders for it, given that Pod.
fn as_the_group_renders<'a>(
    group: &'a PDGroup,
    instances: &'a [PD],
    pods: &'a [Pod],
) -> impl Iterator<Item = (&'a PD, Option<&'a Pod>, Result<Rendered, RenderError>)> + 'a {
    instances
        .iter()
        .filter(|i| i.metadata.deletion_timestamp.is_none())
        .map(move |i| {
            let want = render::render_instance(
                group,
                &NewInstance {
                    name: name_of(i).to_owned(),
                    topology: i.spec.topology.clone(),
                    bootstrap_members: render::bootstrap_members(i),
                },
            );
            let running = pods.iter().find(|p| {
                name_of(*p) == names::pod(name_of(i)) && p.metadata.deletion_timestamp.is_none()
            });
            let rendered = render_instance_objects(&want, running);
            (i, running, rendered)
        })
}

/// For every live instance: whether its running Pod is what the group's
/// current template renders for it (`None`: no running Pod). Decided from the
/// template and the Pods themselves, never from instance status, which lags a
/// template change and a Pod's replacement.
pub fn pod_currency(
    group: &PDGroup,
    instances: &[PD],
    pods: &[Pod],
) -> std::collections::BTreeMap<String, Option<bool>> {
    as_the_group_renders(group, instances, pods)
        .map(|(i, running, rendered)| {
            // A template that does not render is reported by the instance;
            // it does not make the running Pod outdated.
            let current = running.map(|r| rendered.as_ref().map_or(true, |w| w.runs(Some(r))));
            (name_of(i).to_owned(), current)
        })
        .collect()
}

/// What the group reports while its outdated Pods are outdated only because
/// the operator's rendering generation was bumped (see
/// [`tikv_operator_core::revision::generation_notice`]); `None` otherwise.
pub fn rendering_generation_notice(
    group: &PDGroup,
    instances: &[PD],
    pods: &[Pod],
) -> Option<String> {
    let generations: Vec<Option<u32>> = as_the_group_renders(group, instances, pods)
        .filter_map(|(_, running, rendered)| {
            let running = running?;
            let rendered = rendered.ok()?;
            (!rendered.runs(Some(running)))
                .then(|| rendered.revision.outdated_by_generation(Some(running)))
        })
        .collect();
    tikv_operator_core::revision::generation_notice(&generations)
}

/// Counts the live instances whose running Pod runs the current template.
pub fn revision_status(
    group: &PDGroup,
    currency: &std::collections::BTreeMap<String, Option<bool>>,
) -> Revisions {
    Revisions::count(
        render::group_revision(group),
        group.spec.replicas,
        currency.values(),
    )
}

/// The version each live member runs: what its Pod runs
/// ([`labels::VERSION`]); the instance's own version before its Pod exists
/// (a reverted upgrade that reached no Pod yet is not a downgrade).
fn running_versions<'a>(instances: &'a [PD], pods: &'a [Pod]) -> impl Iterator<Item = &'a str> {
    instances
        .iter()
        .filter(|i| i.metadata.deletion_timestamp.is_none())
        .map(|i| {
            pods.iter()
                .find(|p| name_of(*p) == names::pod(name_of(i)))
                .and_then(|p| p.metadata.annotations.as_ref()?.get(labels::VERSION))
                .map_or(i.spec.template.version.as_str(), String::as_str)
        })
}

/// Live members (other than `except`) that do not answer ready themselves
/// (`GET /pd/api/v2/ready`, asked at the IP of the member's current Pod), or
/// whose answer comes from a process older than that Pod (`/status`
/// `start_timestamp`, see [`started_by_pod`]). PD's own health report can lag
/// a restart by seconds, a Pod's readiness probe only sees the port open, the
/// member's DNS name may still lead to the old process while it shuts down,
/// and a replacement Pod may get the old Pod's IP while the old process still
/// answers there (all found by e2e): the next disruption waits for every
/// other member's current Pod to say it serves. A PD without the readiness
/// endpoint (404) is judged by its start time and its health report.
async fn members_not_answering(
    pd_api: &dyn PdApi,
    instances: &[PD],
    pods: &[Pod],
    except: &str,
) -> Vec<String> {
    let mut out = Vec::new();
    for i in instances
        .iter()
        .filter(|i| i.metadata.deletion_timestamp.is_none() && name_of(*i) != except)
    {
        let pod = pods.iter().find(|p| {
            name_of(*p) == names::pod(name_of(i)) && p.metadata.deletion_timestamp.is_none()
        });
        let Some((pod, ip)) = pod.and_then(|p| Some((p, p.status.as_ref()?.pod_ip.clone()?)))
        else {
            out.push(format!("{} (no running Pod)", name_of(i)));
            continue;
        };
        let url = format!("http://{ip}:{}", render::ports(&i.spec.template).0);
        match pd_api.member_ready(&url).await {
            Ok(pd_client::Readiness::Ready | pd_client::Readiness::Unsupported) => {}
            Ok(pd_client::Readiness::NotReady) => {
                out.push(format!("{} (not ready)", name_of(i)));
                continue;
            }
            Err(e) => {
                out.push(format!("{} ({})", name_of(i), e.category()));
                continue;
            }
        }
        let created = pod.metadata.creation_timestamp.as_ref().map(|t| t.0);
        match pd_api.member_started(&url).await {
            Ok(started) if started_by_pod(started, created) => {}
            Ok(_) => out.push(format!(
                "{} (the process answering is older than its Pod)",
                name_of(i)
            )),
            Err(e) => out.push(format!("{} (status: {})", name_of(i), e.category())),
        }
    }
    out
}

/// A PDGroup and what the caches hold about it.
#[derive(Debug, Clone, Copy)]
pub struct GroupSnapshot<'a> {
    /// The group.
    pub group: &'a PDGroup,
    /// Its Cluster.
    pub cluster: ClusterFacts,
    /// PD instances labelled with the group.
    pub instances: &'a [PD],
    /// Pods of those instances.
    pub pods: &'a [Pod],
    /// Services of the group (peer and client) as cached.
    pub services: &'a [Service],
    /// The group's revision history (ControllerRevisions labelled with the group).
    pub revisions: &'a [ControllerRevision],
    /// PD's membership.
    pub pd: &'a PdView,
    /// The Cluster's PDGroup: the oldest PDGroup naming the Cluster (by
    /// creation time, then name). A Cluster has one PD cluster (safety rule
    /// 7); any other PDGroup is refused and creates nothing.
    pub cluster_pd_group: Option<&'a str>,
}

/// Carries out the group's plan: creates, removals and restarts, each with
/// its Event.
async fn run_group_plan(
    ctx: &Ctx,
    s: &GroupSnapshot<'_>,
    pd_api: &dyn PdApi,
    plan: &GroupPlan,
) -> Result<()> {
    let group = s.group;
    match plan {
        GroupPlan::Steady => {}
        GroupPlan::Create(new) => {
            for n in new {
                let pd = render::render_instance(group, n);
                ctx.kube
                    .apply(&ObjectKey::of(&pd)?, &desired(&pd)?.stamped())
                    .await?;
                info!(instance = %n.name, bootstrap = n.bootstrap_members.is_some(), "created PD instance");
            }
            let names: Vec<&str> = new.iter().map(|n| n.name.as_str()).collect();
            let (reason, note) = if new.iter().any(|n| n.bootstrap_members.is_some()) {
                (
                    "Bootstrapping",
                    format!("creating initial PD members {}", names.join(", ")),
                )
            } else {
                (
                    "ScalingOut",
                    format!("creating PD member {}", names.join(", ")),
                )
            };
            ctx.kube
                .publish_event(&event(group, EventType::Normal, reason, "Create", note)?)
                .await?;
        }
        GroupPlan::Remove { name, why } => {
            ctx.kube
                .delete(&ObjectKey::new::<PD>(
                    group.metadata.namespace.as_deref(),
                    name,
                ))
                .await?;
            info!(instance = %name, %why, "removing PD instance");
            ctx.kube
                .publish_event(&event(
                    group,
                    EventType::Normal,
                    "ScalingIn",
                    "Delete",
                    format!("removing PD member {name} ({why})"),
                )?)
                .await?;
        }
        GroupPlan::Restart {
            name,
            transfer_leader_to: Some(to),
        } => {
            info!(instance = %name, to = %to, "transferring PD leadership before the restart");
            pd_api
                .transfer_leader(to)
                .await
                .map_err(|e| Error::pd("transfer_leader", e))?;
            ctx.kube
                .publish_event(&event(
                    group,
                    EventType::Normal,
                    "LeaderTransferred",
                    "TransferLeader",
                    format!("PD leadership moved from {name} to {to} before its restart"),
                )?)
                .await?;
        }
        GroupPlan::Restart {
            name,
            transfer_leader_to: None,
        } => {
            // Exactly the Pod this decision was taken on: a reconcile on a
            // cache that has not seen the deletion yet must not hit the
            // replacement.
            if let Some(uid) = s
                .pods
                .iter()
                .find(|p| name_of(*p) == names::pod(name))
                .and_then(|p| p.metadata.uid.as_deref())
            {
                info!(instance = %name, pod_uid = uid, "restarting PD member: deleting its Pod");
                ctx.kube
                    .delete_exact(
                        &ObjectKey::new::<Pod>(
                            group.metadata.namespace.as_deref(),
                            &names::pod(name),
                        ),
                        uid,
                    )
                    .await?;
            }
            ctx.kube
                .publish_event(&event(
                    group,
                    EventType::Normal,
                    "Restarting",
                    "Delete",
                    format!("restarting PD member {name} with its new configuration"),
                )?)
                .await?;
        }
        GroupPlan::Wait(_) => {}
        GroupPlan::Refuse(b) => {
            warn!(reason = b.reason, message = %b.message, "scale-in refused");
            ctx.kube
                .publish_event(&event(
                    group,
                    EventType::Warning,
                    b.reason,
                    "ScaleIn",
                    b.message.clone(),
                )?)
                .await?;
        }
    }
    Ok(())
}

/// Reconciles one PDGroup. See the module docs.
#[instrument(skip_all, fields(group = name_of(s.group), namespace = s.group.metadata.namespace.as_deref()))]
pub async fn reconcile_group(
    ctx: &Ctx,
    s: &GroupSnapshot<'_>,
    pd_api: &dyn PdApi,
    suffixes: &mut (dyn SuffixSource + Send),
) -> Result<Requeue> {
    let group = s.group;
    let group_name = name_of(group).to_owned();
    let cluster_name = group.spec.cluster.name.clone();
    let mut conds: Vec<Condition> = group
        .status
        .as_ref()
        .map(|st| st.common.conditions.clone())
        .unwrap_or_default();
    let generation = group.metadata.generation;
    let now = ctx.clock.now();

    // For sequencing (joins, restarts) a member counts as ready once its Pod
    // has been Ready for `minReadySeconds`; `readyReplicas` counts Ready Pods.
    let min_ready = i64::from(group.spec.min_ready_seconds.unwrap_or(0).max(0));
    let pods_ready = i32::try_from(
        s.instances
            .iter()
            .filter(|i| i.metadata.deletion_timestamp.is_none())
            .filter(|i| {
                s.pods
                    .iter()
                    .any(|p| name_of(p) == name_of(*i) && pod_ready(p))
            })
            .count(),
    )
    .unwrap_or(i32::MAX);
    let currency = pod_currency(group, s.instances, s.pods);
    let update_revision = render::group_revision(group);
    let notice = rendering_generation_notice(group, s.instances, s.pods);
    let announce = revision::notice_is_new(
        notice.as_deref(),
        conditions::find(&conds, condition::PROGRESSING),
    );
    let instance_states: Vec<InstanceState> = s
        .instances
        .iter()
        .map(|i| {
            // Ready for sequencing: available, and PD's health was read after
            // the Pod turned Ready (a reading from before says nothing about
            // the new process; found by e2e: two members restarted at once).
            let ready = s.pods.iter().any(|p| {
                name_of(p) == name_of(i)
                    && pod_available(p, min_ready, now)
                    && s.pd
                        .membership()
                        .is_some_and(|m| m.fresher_than(ready_since(p)))
            });
            let mut st = InstanceState::from_instance(i, ready);
            // Outdated means: the instance object already carries the current
            // template (so a replacement Pod is rendered from it) and its
            // running Pod is not what that template renders. Instance status
            // lags: a Pod just replaced would still read RestartPending and
            // be restarted twice.
            let carries_template = i
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(labels::TEMPLATE_REVISION))
                == Some(&update_revision);
            st.outdated = carries_template && currency.get(name_of(i)) == Some(&Some(false));
            st
        })
        .collect();

    // Nothing is created or removed for a group whose Cluster is missing or
    // being deleted (the Cluster deletes its groups in order).
    let plan = if s.cluster.paused
        || s.cluster.deleting
        || s.cluster.missing
        || group.metadata.deletion_timestamp.is_some()
    {
        None
    } else if let Some(first) = s.cluster_pd_group.filter(|first| *first != group_name) {
        // Safety rule 7: a second PDGroup would bootstrap a second PD cluster.
        Some(GroupPlan::Refuse(Blocked {
            reason: reasons::DUPLICATE_PD_GROUP,
            message: format!(
                "Cluster {cluster_name} already has PDGroup {first}; a Cluster has exactly one \
                 PDGroup, so this one creates nothing (delete it, or scale {first} instead)"
            ),
        }))
    } else if let Some(blocked) = template_refusal::<render::Pd>(
        group,
        &group.spec.template.spec,
        running_versions(s.instances, s.pods),
    ) {
        // Nothing of the template reaches the instances (no member is
        // created at a lower version; with a rejected config the last good
        // template keeps running) until it is fixed or the downgrade
        // explicitly allowed.
        Some(GroupPlan::Refuse(blocked))
    } else {
        let revisions_now = revision_status(group, &currency);
        apply_group_objects::<render::Pd>(
            ctx,
            group,
            &cluster_name,
            [
                render::render_peer_service(group),
                render::render_client_service(group),
            ],
            s.services,
            TemplateRevision {
                update: &update_revision,
                data: render::group_revision_data(group),
                all_updated: revisions_now.all_updated,
                recorded_current: group
                    .status
                    .as_ref()
                    .and_then(|st| st.group.current_revision.as_deref()),
                limit: s.cluster.revision_history_limit,
                existing: s.revisions,
            },
        )
        .await?;
        // Template changes reach the instance objects (their ConfigMaps and
        // PVCs follow; running Pods restart through `GroupPlan::Restart`).
        for i in s
            .instances
            .iter()
            .filter(|i| i.metadata.deletion_timestamp.is_none())
        {
            let want = render::render_instance(
                group,
                &NewInstance {
                    name: name_of(i).to_owned(),
                    topology: i.spec.topology.clone(),
                    bootstrap_members: render::bootstrap_members(i),
                },
            );
            ctx.kube
                .apply_if_changed(&desired(&want)?, cached(Some(i)).as_ref())
                .await?;
        }
        let bootstrapped =
            s.cluster.pd_cluster_id_known || s.pd.membership().is_some_and(|m| m.leader.is_some());
        let group_uid = group.metadata.uid.clone().unwrap_or_default();
        let input = GroupInput {
            group: &group_name,
            group_uid: &group_uid,
            replicas: group.spec.replicas,
            spread: Spread::from_policies(&group.spec.schedule_policies),
            instances: instance_states.clone(),
            pd: s.pd,
            bootstrapped,
        };
        let mut plan = plan_group(&input, suffixes);
        // Restarts only once every member's instance visibly carries the
        // current template: the order of restarts is then the same at every
        // reconcile, whatever the caches have seen (found by e2e: with the
        // template reaching the cache instance by instance, two reconciles
        // picked two different members and PD lost quorum).
        let lagging: Vec<&str> = s
            .instances
            .iter()
            .filter(|i| i.metadata.deletion_timestamp.is_none())
            .filter(|i| {
                i.metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get(labels::TEMPLATE_REVISION))
                    != Some(&update_revision)
            })
            .map(name_of)
            .collect();
        if matches!(plan, GroupPlan::Restart { .. }) && !lagging.is_empty() {
            plan = GroupPlan::Wait(crate::group::Blocked {
                reason: reasons::WAITING_FOR_MEMBER,
                message: format!(
                    "waiting for every member to carry the new template before restarting: {}",
                    lagging.join(", ")
                ),
            });
        }
        if let GroupPlan::Restart { name, .. } = &plan {
            let silent = members_not_answering(pd_api, s.instances, s.pods, name).await;
            if !silent.is_empty() {
                plan = GroupPlan::Wait(crate::group::Blocked {
                    reason: reasons::WAITING_FOR_MEMBER,
                    message: format!(
                        "restarts wait for every other PD member to answer ready itself: {}",
                        silent.join(", ")
                    ),
                });
            }
        }
        // A restart due only to a rendering generation bump is announced
        // (Progressing, an Event) one reconcile before the first Pod goes.
        if announce
            && matches!(plan, GroupPlan::Restart { .. })
            && let Some(n) = &notice
        {
            plan = GroupPlan::Wait(crate::group::Blocked {
                reason: revision::RENDERING_GENERATION_CHANGED,
                message: n.clone(),
            });
        }
        run_group_plan(ctx, s, pd_api, &plan).await?;
        Some(plan)
    };
    if let Some(GroupPlan::Refuse(b)) = &plan
        && (b.reason == reasons::DOWNGRADE_REFUSED || b.reason == reasons::INVALID_CONFIG)
    {
        warn!(reason = b.reason, message = %b.message, "template refused");
        ctx.kube
            .publish_event(&event(
                group,
                EventType::Warning,
                b.reason,
                "Upgrade",
                b.message.clone(),
            )?)
            .await?;
    }

    // Report.
    let live: Vec<&InstanceState> = instance_states.iter().filter(|i| !i.deleting).collect();
    let replicas = i32::try_from(live.len()).unwrap_or(i32::MAX);
    let ready = pods_ready;
    let progressing = match &plan {
        None => ConditionUpdate::new(
            condition::PROGRESSING,
            false,
            "Paused",
            "the Cluster is paused or the group is being deleted",
        ),
        Some(GroupPlan::Steady) => ConditionUpdate::new(
            condition::PROGRESSING,
            false,
            reasons::SYNCED,
            format!("{replicas} PD members"),
        ),
        Some(GroupPlan::Create(n)) => ConditionUpdate::new(
            condition::PROGRESSING,
            true,
            reasons::WAITING_FOR_MEMBER,
            format!("creating {} PD member(s)", n.len()),
        ),
        Some(GroupPlan::Remove { name, .. }) => ConditionUpdate::new(
            condition::PROGRESSING,
            true,
            reasons::REMOVING_MEMBER,
            format!("removing PD member {name}"),
        ),
        Some(GroupPlan::Restart { name, .. }) => ConditionUpdate::new(
            condition::PROGRESSING,
            true,
            reasons::RESTARTING,
            format!("restarting PD member {name}"),
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
        ctx.kube
            .publish_event(&event(
                group,
                EventType::Normal,
                revision::RENDERING_GENERATION_CHANGED,
                "Restart",
                n.to_owned(),
            )?)
            .await?;
    }
    conditions::set(&mut conds, progressing, generation, now);
    let config_refused = match &plan {
        Some(GroupPlan::Refuse(b)) if b.reason == reasons::INVALID_CONFIG => {
            Some((b.reason, b.message.as_str()))
        }
        _ => None,
    };
    let all_ready = ready == group.spec.replicas && replicas == group.spec.replicas;
    for update in conditions::group_sync_and_ready(
        config_refused,
        (
            all_ready,
            if all_ready {
                "AllMembersReady"
            } else {
                "MembersNotReady"
            },
            format!("{ready}/{} PD members ready", group.spec.replicas),
        ),
    ) {
        conditions::set(&mut conds, update, generation, now);
    }
    let mut revisions = revision_status(group, &currency);
    // The update is complete (currentRevision, version) only once every
    // member runs it, is Ready and is healthy in a PD reading taken after its
    // Pod turned Ready: TiKV upgrades wait for exactly this.
    let settled = live.iter().all(|i| i.ready)
        && s.pd
            .membership()
            .is_some_and(|m| m.unhealthy_except("").is_empty());
    revisions.all_updated &= settled;
    // Reported complete only once every member answers ready itself (asked
    // once, when the update is about to be reported done).
    let was_done = group
        .status
        .as_ref()
        .is_some_and(|st| st.group.current_revision.as_deref() == Some(revisions.update.as_str()));
    let mut awaiting_ready = false;
    if revisions.all_updated && !was_done {
        let silent = members_not_answering(pd_api, s.instances, s.pods, "").await;
        if !silent.is_empty() {
            info!(
                ?silent,
                "update not reported complete: members do not answer ready"
            );
            revisions.all_updated = false;
            awaiting_ready = true;
        }
    }
    let status = PDGroupStatus {
        common: tikv_operator_api::CommonStatus {
            conditions: conds,
            observed_generation: generation,
        },
        group: revisions.group_status(
            group.status.as_ref().map(|st| &st.group),
            &group.spec.template.spec.version,
            replicas,
            ready,
            render::selector_string(&cluster_name, &group_name),
        ),
    };
    patch_status_if_changed(
        ctx.kube.as_ref(),
        &ObjectKey::of(group)?,
        group.status.as_ref(),
        &status,
        || format!("status of PDGroup {group_name}"),
    )
    .await?;
    Ok(ctx
        .policy
        .after_success(plan.as_ref().is_some_and(GroupPlan::in_flight) || awaiting_ready))
}

/// A PD instance and what the caches hold about it.
#[derive(Debug, Clone, Copy)]
pub struct InstanceSnapshot<'a> {
    /// The instance.
    pub instance: &'a PD,
    /// Its Cluster.
    pub cluster: ClusterFacts,
    /// Its Pod, if any.
    pub pod: Option<&'a Pod>,
    /// Its ConfigMap, if any.
    pub config_map: Option<&'a ConfigMap>,
    /// Its PVCs that exist.
    pub pvcs: &'a [PersistentVolumeClaim],
    /// PD's membership.
    pub pd: &'a PdView,
}

/// The cleanup of a PD instance being deleted, one step per reconcile: its
/// member leaves PD safely (see [`crate::removal`]), then its Pod and PVCs
/// go, then its finalizer.
async fn finalize_instance(
    ctx: &Ctx,
    s: &InstanceSnapshot<'_>,
    pd_api: &dyn PdApi,
) -> Result<Requeue> {
    let pd = s.instance;
    let name = name_of(pd).to_owned();
    let namespace = pd.metadata.namespace.clone();
    let key = ObjectKey::of(pd)?;
    if !has_finalizer(pd) {
        return Ok(Requeue::AwaitChange);
    }
    if s.cluster.paused && !s.cluster.deleting {
        // A paused Cluster changes nothing, removals included.
        return Ok(ctx.policy.after_success(false));
    }
    let peer_url = crate::render::member_peer_url(pd);
    // A PD Pod lost mid-removal is not recreated: the member may already be
    // gone from PD while the PD view still lists it, and a removed member's
    // process must never start again (found by e2e). A lost Pod only makes
    // the member unhealthy, and an unhealthy member may still be removed.
    let step = next_removal_step(&RemovalInput {
        instance: &name,
        peer_url: &peer_url,
        pd: s.pd,
        pod_exists: s.pod.is_some(),
        pvcs: s.pvcs.iter().map(|p| name_of(p).to_owned()).collect(),
        cluster_deleting: s.cluster.deleting,
        cluster_missing: s.cluster.missing,
    });
    info!(?step, "member removal");
    match step {
        RemovalStep::Wait(b) => {
            ctx.kube
                .publish_event(&event(
                    pd,
                    EventType::Warning,
                    b.reason,
                    "RemoveMember",
                    b.message,
                )?)
                .await?;
        }
        RemovalStep::TransferLeader { to } => {
            pd_api
                .transfer_leader(&to)
                .await
                .map_err(|e| Error::pd("transfer_leader", e))?;
            ctx.kube
                .publish_event(&event(
                    pd,
                    EventType::Normal,
                    "LeaderTransferred",
                    "TransferLeader",
                    format!("PD leadership moved from {name} to {to}"),
                )?)
                .await?;
        }
        RemovalStep::RemoveMember { id } => {
            match pd_api.remove_member(id).await {
                Ok(()) => {}
                Err(e) if e.is_already_gone() => {}
                Err(e) => return Err(Error::pd("remove_member", e)),
            }
            ctx.kube
                .publish_event(&event(
                    pd,
                    EventType::Normal,
                    "MemberRemoved",
                    "RemoveMember",
                    format!("PD member {name} (id {id}) removed from the PD cluster"),
                )?)
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
                        &p,
                    ))
                    .await?;
            }
        }
        RemovalStep::Done => {
            release_finalizer(ctx.kube.as_ref(), &key).await?;
            return Ok(Requeue::AwaitChange);
        }
    }
    Ok(ctx.policy.after_success(true))
}

/// Reconciles one PD instance: renders and applies its objects, or, while it
/// is being deleted, runs one step of the member removal. See the module docs.
#[instrument(skip_all, fields(instance = name_of(s.instance), namespace = s.instance.metadata.namespace.as_deref()))]
pub async fn reconcile_instance(
    ctx: &Ctx,
    s: &InstanceSnapshot<'_>,
    pd_api: &dyn PdApi,
) -> Result<Requeue> {
    let pd = s.instance;
    let name = name_of(pd).to_owned();
    let key = ObjectKey::of(pd)?;

    if pd.metadata.deletion_timestamp.is_some() {
        return finalize_instance(ctx, s, pd_api).await;
    }

    let now = ctx.clock.now();
    let generation = pd.metadata.generation;
    let mut conds: Vec<Condition> = pd
        .status
        .as_ref()
        .map(|st| st.common.conditions.clone())
        .unwrap_or_default();

    let synced = if s.cluster.paused {
        ConditionUpdate::new(condition::SYNCED, false, "Paused", "the Cluster is paused")
    } else {
        ensure_finalizer(ctx.kube.as_ref(), &key, pd).await?;
        match apply_instance_objects(ctx, s).await? {
            Ok(message) => ConditionUpdate::new(condition::SYNCED, true, reasons::SYNCED, message),
            Err((reason, message)) => {
                ConditionUpdate::new(condition::SYNCED, false, reason, message)
            }
        }
    };
    let synced_ok = synced.status == conditions::TRUE;
    conditions::set(&mut conds, synced, generation, now);

    let member = s.pd.membership().and_then(|m| m.member(&name));
    let pod_is_ready = s.pod.is_some_and(pod_ready);
    let ready = match (s.pd.membership(), member) {
        (None, _) => ConditionUpdate::unknown(
            condition::READY,
            reasons::PD_UNAVAILABLE,
            "PD is unreachable; member health unknown",
        ),
        (Some(_), Some(m)) if m.healthy && pod_is_ready => ConditionUpdate::new(
            condition::READY,
            true,
            "MemberHealthy",
            "PD member is healthy",
        ),
        (Some(_), Some(_)) => ConditionUpdate::new(
            condition::READY,
            false,
            "MemberUnhealthy",
            "PD member is not healthy or its Pod is not Ready",
        ),
        (Some(_), None) => ConditionUpdate::new(
            condition::READY,
            false,
            "NotAMember",
            "PD does not list this member (yet)",
        ),
    };
    conditions::set(&mut conds, ready, generation, now);

    let status = PDStatus {
        common: tikv_operator_api::CommonStatus {
            conditions: conds,
            observed_generation: generation,
        },
        id: member
            .map(|m| m.id.to_string())
            .or_else(|| pd.status.as_ref().and_then(|st| st.id.clone())),
        is_leader: s.pd.membership().is_some_and(|m| m.is_leader(&name)),
        current_revision: s
            .pod
            .and_then(|p| p.metadata.annotations.as_ref())
            .and_then(|a| a.get(labels::INSTANCE_REVISION).cloned())
            .or_else(|| {
                pd.status
                    .as_ref()
                    .and_then(|st| st.current_revision.clone())
            }),
    };
    patch_status_if_changed(ctx.kube.as_ref(), &key, pd.status.as_ref(), &status, || {
        format!("status of PD {name}")
    })
    .await?;
    Ok(if synced_ok {
        ctx.policy.after_success(!pod_is_ready)
    } else {
        Requeue::After(ctx.policy.permanent_error)
    })
}

pub use tikv_operator_core::component::render::Rendered;

/// Renders an instance's objects and the revision of its Pod; `running` is
/// the Pod running now, if any. Both the instance (to report `RestartPending`)
/// and its group (to count updated members) decide currency through this.
pub fn render_instance_objects(pd: &PD, running: Option<&Pod>) -> Result<Rendered, RenderError> {
    let config = render::render_config(pd)?;
    common::render_instance_objects::<render::Pd>(
        pd,
        &config,
        |hash| render::render_pod(pd, hash),
        &render::revision_inputs(pd),
        running,
    )
}

/// Applies ConfigMap, PVCs and Pod (see
/// [`tikv_operator_core::component::apply`]). The outer error is a failed
/// write; the inner one why the instance is not in sync: (reason, message).
async fn apply_instance_objects(
    ctx: &Ctx,
    s: &InstanceSnapshot<'_>,
) -> Result<Result<String, (&'static str, String)>> {
    apply::apply_instance_objects(
        ctx.kube.as_ref(),
        &render_instance_objects(s.instance, s.pod),
        apply::Cached {
            config_map: s.config_map,
            pvcs: s.pvcs,
            pod: s.pod,
        },
        s.cluster.suspend_compute,
        apply::PodPolicy {
            create: true,
            missing: "",
            wait_terminating: false,
            restart_pending: "the rendered Pod changed (configuration, image, resources, ...); \
                              its group restarts it, one member at a time",
        },
    )
    .await
}
