//! The TiKVGroup reconciler: rolls the template out, plans the group's
//! next step and carries it out, and reports the group's status.

use super::*;
use crate::failover::FailoverAction;

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
    /// PD's Region health: read (with [`RegionHealth::observe`]) when
    /// [`super::needs_region_health`] says failover needs it, else
    /// [`RegionHealth::NotRead`].
    pub regions: &'a RegionHealth,
}

pub(super) fn instance_ready(kv: &TiKV, pods: &[Pod]) -> bool {
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

/// Carries out the group's plan (deletions of removed instances, cancelled
/// or new scale-ins, creates), each with its Event; a refusal is announced
/// once (`old_progressing`: the group's `Progressing` condition before).
/// `grant_of`: the restart grant an instance keeps.
async fn run_group_plan(
    ctx: &Ctx,
    s: &GroupSnapshot<'_>,
    plan: &GroupPlan,
    grant_of: &(dyn Fn(&TiKV) -> Option<String> + Sync),
    old_progressing: Option<&Condition>,
) -> Result<()> {
    let group = s.group;
    let namespace = group.metadata.namespace.clone();
    let find = |n: &str| s.instances.iter().find(|i| name_of(*i) == n);
    match plan {
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
                let kv = render::render_instance(group, n, false, s.cluster.tls);
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
    Ok(())
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
    let generation = group.metadata.generation;
    let now = ctx.clock.now();
    let mut conds: Vec<Condition> = group
        .status
        .as_ref()
        .map(|st| st.common.conditions.clone())
        .unwrap_or_default();
    let old_progressing = conditions::find(&conds, condition::PROGRESSING).cloned();
    let min_ready = i64::from(group.spec.min_ready_seconds.unwrap_or(0).max(0));
    // Where every live instance stands against the template. Decided from
    // the template and the Pods, never from instance status, which lags.
    let live = live_instances(s, min_ready, now);
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
    let mut fo: Option<crate::failover::FailoverPlan> = None;
    let acts = !(s.cluster.paused
        || s.cluster.deleting
        || s.cluster.missing
        || group.metadata.deletion_timestamp.is_some());
    // A Cluster speaking TLS: the group's Secret is read now (it is not
    // cached) and checked before any store is created or updated.
    let namespace = group.metadata.namespace.clone().unwrap_or_default();
    let tls = if s.cluster.tls && acts {
        Some(
            TlsSecrets::read::<render::Kv>(
                ctx,
                &group_name,
                &namespace,
                &group.spec.template.spec,
                None,
            )
            .await?,
        )
    } else {
        None
    };
    let tls_refusal = |new: &[&str]| {
        tls.as_ref().and_then(|t| {
            t.refusal::<render::Kv>(
                &group_name,
                &namespace,
                &group.spec.template.spec,
                live.iter()
                    .map(|l| name_of(l.kv))
                    .chain(new.iter().copied()),
                now,
            )
        })
    };
    let plan = if !acts {
        None
    } else if s.cluster.unclaimed {
        Some(GroupPlan::Wait(waiting_for_cluster(&cluster_name)))
    } else if let Some(blocked) = template_refusal::<render::Kv>(
        group,
        &group.spec.template.spec,
        live.iter().map(|l| {
            // What the Pod runs; the instance's own version before its Pod
            // exists (or for Pods from before the annotation).
            l.pod
                .and_then(|p| p.metadata.annotations.as_ref()?.get(labels::VERSION))
                .map_or(l.kv.spec.template.version.as_str(), String::as_str)
        }),
    ) {
        // Nothing of the template reaches the instances (no store is
        // created at a lower version; with a rejected config the last good
        // template keeps running) until it is fixed or the downgrade
        // explicitly allowed.
        Some(GroupPlan::Refuse(blocked))
    } else if let Some(blocked) = tls_refusal(&[]) {
        // Likewise with a refused TLS Secret: nothing reaches the
        // instances, the running stores are left alone.
        Some(GroupPlan::Refuse(blocked))
    } else {
        apply_template(ctx, s, &live, &currency, &grant_of).await?;
        // Failover first: its one action is this reconcile's change.
        let restarting_now: Vec<&str> = live
            .iter()
            .filter(|l| l.restarting)
            .map(|l| name_of(l.kv))
            .collect();
        let failover = failover::plan(s, &restarting_now, min_ready, now, suffixes);
        info!(action = ?failover.action, held = ?failover.held, "TiKVGroup failover plan");
        // A replacement store must be covered by the certificate too; a
        // refused one is not created (the failover status stays as it was).
        let surge_refused = match &failover.action {
            FailoverAction::Surge { new, .. } => tls_refusal(&[new.name.as_str()]),
            _ => None,
        };
        let acted = surge_refused.is_none() && failover.action != FailoverAction::None;
        let held = failover.held.clone();
        if surge_refused.is_none() {
            failover::run(ctx, s, &failover, &grant_of).await?;
            fo = Some(failover);
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
            held,
        };
        let mut plan = if let Some(blocked) = surge_refused {
            GroupPlan::Refuse(blocked)
        } else if acted {
            GroupPlan::Wait(Blocked {
                reason: reasons::CONDITION_FAILOVER,
                message: "a failover step was taken; the group looks again".to_owned(),
            })
        } else {
            plan_group(&input, suffixes)
        };
        // New stores must be covered by the certificate too.
        if let GroupPlan::Create(new) = &plan
            && let Some(blocked) =
                tls_refusal(&new.iter().map(|n| n.name.as_str()).collect::<Vec<_>>())
        {
            plan = GroupPlan::Refuse(blocked);
        }
        info!(?plan, "TiKVGroup plan");
        if !matches!(&plan, GroupPlan::Refuse(b) if is_tls_refusal(b.reason)) {
            run_group_plan(ctx, s, &plan, &grant_of, old_progressing.as_ref()).await?;
        }
        if plan == GroupPlan::Steady {
            restart = grant_restart(
                ctx,
                s,
                &live,
                notice.as_deref().filter(|_| announce),
                min_ready,
                now,
            )
            .await?;
        }
        Some(plan)
    };
    let refused = match &plan {
        Some(GroupPlan::Refuse(b)) => Some(b),
        _ => None,
    };
    announce_refusal(ctx, group, refused, old_progressing.as_ref()).await?;

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
    let progressing = progressing_condition(
        plan.as_ref(),
        &restart,
        &live_states,
        &restarting,
        revisions.updated,
        group.spec.replicas,
    );
    let tls_refused = refused.is_some_and(|b| is_tls_refusal(b.reason));
    let all_ready = ready == group.spec.replicas
        && i32::try_from(serving.len()).unwrap_or(i32::MAX) == group.spec.replicas;
    set_conditions(
        ctx,
        group,
        &mut conds,
        GroupConditions {
            progressing,
            notice: notice.as_deref(),
            announce,
            acting: plan.is_some(),
            failover: fo.as_ref().map(|f| f.condition.clone()),
            refused,
            ready: (
                all_ready,
                if all_ready {
                    "AllStoresReady"
                } else {
                    "StoresNotReady"
                },
                format!("{ready}/{} TiKV stores ready", group.spec.replicas),
            ),
        },
        now,
    )
    .await?;
    let status = TiKVGroupStatus {
        common: CommonStatus {
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
        failover: match &fo {
            Some(f) => f.status.clone(),
            None => group.status.as_ref().and_then(|st| st.failover.clone()),
        },
    };
    patch_status_if_changed(
        ctx.kube.as_ref(),
        &ObjectKey::of(group)?,
        group.status.as_ref(),
        &status,
        || format!("status of TiKVGroup {group_name}"),
    )
    .await?;
    let in_flight = plan.as_ref().is_some_and(GroupPlan::in_flight)
        || fo.as_ref().is_some_and(|f| !f.held.is_empty())
        || !going.is_empty()
        || restart != RestartPlan::None
        || !restarting.is_empty();
    let requeue = ctx.policy.after_success(in_flight);
    // A refused TLS Secret is polled (Secrets are not watched): a fixed
    // one is seen within `tls::RECHECK`.
    let recheck = fo
        .and_then(|f| f.recheck_after)
        .into_iter()
        .chain(tls_refused.then_some(tikv_operator_core::tls::RECHECK))
        .min();
    Ok(requeue.or_sooner(recheck))
}

/// The group's template reaches its objects (peer Service, revision
/// history) and its live instances (ConfigMaps and PVCs follow, metadata is
/// patched in place); `grant_of`: the restart grant an instance keeps.
async fn apply_template(
    ctx: &Ctx,
    s: &GroupSnapshot<'_>,
    live: &[LiveInstance<'_>],
    currency: &BTreeMap<String, Option<bool>>,
    grant_of: &(dyn Fn(&TiKV) -> Option<String> + Sync),
) -> Result<()> {
    let group = s.group;
    let update_revision = render::group_revision(group);
    let all_updated = Revisions::count(
        update_revision.clone(),
        group.spec.replicas,
        currency.values(),
    )
    .all_updated;
    apply_group_objects::<render::Kv>(
        ctx,
        group,
        &group.spec.cluster.name,
        [render::render_peer_service(group)],
        s.services,
        TemplateRevision {
            update: &update_revision,
            data: render::group_revision_data(group),
            all_updated,
            recorded_current: group
                .status
                .as_ref()
                .and_then(|st| st.group.current_revision.as_deref()),
            limit: s.cluster.revision_history_limit,
            existing: s.revisions,
        },
    )
    .await?;
    // Template changes reach the instance objects (ConfigMaps and PVCs
    // follow, metadata is patched in place); a running Pod that must be
    // recreated waits for its grant.
    for l in live {
        let want = desired_instance(group, l.kv, l.kv.spec.offline, grant_of(l.kv).as_deref());
        ctx.kube
            .apply_if_changed(&desired(&want)?, cached(Some(l.kv)).as_ref())
            .await?;
    }
    Ok(())
}

/// The group's live instances (not deleted, store not removed) and where
/// each stands against the group's template.
fn live_instances<'a>(
    s: &GroupSnapshot<'a>,
    min_ready: i64,
    now: k8s_openapi::jiff::Timestamp,
) -> Vec<LiveInstance<'a>> {
    let group = s.group;
    let running_pod = |pods: &'_ [Pod], n: &str| -> Option<usize> {
        pods.iter()
            .position(|p| name_of(p) == names::pod(n) && p.metadata.deletion_timestamp.is_none())
    };

    s.instances
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
        .collect()
}

/// The group's `Progressing` condition: what this reconcile did or waits
/// for (`None` plan: it does not act).
fn progressing_condition(
    plan: Option<&GroupPlan>,
    restart: &RestartPlan,
    live_states: &[(&InstanceState, &TiKV)],
    restarting: &[&str],
    updated: i32,
    replicas: i32,
) -> ConditionUpdate {
    let going: Vec<&str> = live_states
        .iter()
        .filter(|(st, _)| st.offline)
        .map(|(st, _)| st.name.as_str())
        .collect();
    let serving = live_states.iter().filter(|(st, _)| !st.offline).count();
    match plan {
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
                    updated, replicas
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
                    updated,
                    replicas
                ),
            ),
            RestartPlan::None => ConditionUpdate::new(
                condition::PROGRESSING,
                false,
                reasons::SYNCED,
                format!("{serving} TiKV stores"),
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
    }
}

/// With the group steady, plans the next store restart and grants it (the
/// instance's restart annotation, an Event). A restart due only to a
/// rendering generation bump (`new_notice`, new this reconcile) is announced
/// (Progressing, an Event) one reconcile before the first grant.
async fn grant_restart(
    ctx: &Ctx,
    s: &GroupSnapshot<'_>,
    live: &[LiveInstance<'_>],
    new_notice: Option<&str>,
    min_ready: i64,
    now: k8s_openapi::jiff::Timestamp,
) -> Result<RestartPlan> {
    let group = s.group;
    let restart = plan_restart(&restart_input(group, s, live, min_ready, now));
    if matches!(restart, RestartPlan::Grant { .. })
        && let Some(n) = new_notice
    {
        return Ok(RestartPlan::Wait(Blocked {
            reason: revision::RENDERING_GENERATION_CHANGED,
            message: n.to_owned(),
        }));
    }
    if let RestartPlan::Grant {
        name,
        revision,
        why,
    } = &restart
        && let Some(i) = s.instances.iter().find(|i| name_of(*i) == name)
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
    Ok(restart)
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
