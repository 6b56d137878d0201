//! The PDGroup reconciler: rolls the template out, plans the group's
//! next step and carries it out, and reports the group's status.

use super::*;
use tikv_operator_core::failover::reasons as fo_reasons;

/// A PDGroup and what the caches hold about it.
#[derive(Debug, Clone)]
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
                let pd = render::render_instance(group, n, s.cluster.client_tls_secret.is_some());
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
            publish(
                ctx.kube.as_ref(),
                event(group, EventType::Normal, reason, "Create", note),
            )
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
            publish(
                ctx.kube.as_ref(),
                event(
                    group,
                    EventType::Normal,
                    "ScalingIn",
                    "Delete",
                    format!("removing PD member {name} ({why})"),
                ),
            )
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
            publish(
                ctx.kube.as_ref(),
                event(
                    group,
                    EventType::Normal,
                    "LeaderTransferred",
                    "TransferLeader",
                    format!("PD leadership moved from {name} to {to} before its restart"),
                ),
            )
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
            publish(
                ctx.kube.as_ref(),
                event(
                    group,
                    EventType::Normal,
                    "Restarting",
                    "Delete",
                    format!("restarting PD member {name} with its new configuration"),
                ),
            )
            .await?;
        }
        GroupPlan::Wait(_) => {}
        GroupPlan::Refuse(b) => {
            warn!(reason = b.reason, message = %b.message, "scale-in refused");
            publish(
                ctx.kube.as_ref(),
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
    Ok(())
}

/// The group's template reaches its objects (Services, revision history)
/// and its instances (their ConfigMaps and PVCs follow; running Pods restart
/// through `GroupPlan::Restart`).
async fn apply_template(
    ctx: &Ctx,
    s: &GroupSnapshot<'_>,
    currency: &std::collections::BTreeMap<String, Option<bool>>,
    update_revision: &str,
) -> Result<()> {
    let group = s.group;
    let revisions_now = revision_status(group, currency);
    apply_group_objects::<render::Pd>(
        ctx,
        group,
        &group.spec.cluster.name,
        [
            render::render_peer_service(group),
            render::render_client_service(group),
        ],
        s.services,
        TemplateRevision {
            update: update_revision,
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
        let want = as_the_group_renders_it(group, i);
        ctx.kube
            .apply_if_changed(&desired(&want)?, cached(Some(i)).as_ref())
            .await?;
    }
    Ok(())
}

/// Where each instance stands, for the planner: ready for sequencing
/// (available, and PD's health read after its Pod turned Ready) and outdated
/// (it carries the current template and its running Pod does not run it).
fn instance_states(
    s: &GroupSnapshot<'_>,
    update_revision: &str,
    currency: &std::collections::BTreeMap<String, Option<bool>>,
    min_ready: i64,
    now: Timestamp,
) -> Vec<InstanceState> {
    s.instances
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
                .map(String::as_str)
                == Some(update_revision);
            st.outdated = carries_template && currency.get(name_of(i)) == Some(&Some(false));
            st
        })
        .collect()
}

/// Holds a planned restart back (a wait instead) until it is safe and
/// settled: every member carries the current template, every other member
/// answers ready itself, the member's process is old enough to be told apart
/// from its replacement, and a restart due only to a rendering generation
/// bump (`new_notice`, new this reconcile) has been announced once.
async fn gate_restart(
    s: &GroupSnapshot<'_>,
    pd_api: &dyn PdApi,
    mut plan: GroupPlan,
    update_revision: &str,
    new_notice: Option<&str>,
    now: Timestamp,
) -> GroupPlan {
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
                .map(String::as_str)
                != Some(update_revision)
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
    if let GroupPlan::Restart { name, .. } = &plan
        && let Some(message) = too_young_to_restart(pd_api, s.instances, s.pods, name, now).await
    {
        plan = GroupPlan::Wait(crate::group::Blocked {
            reason: reasons::WAITING_FOR_MEMBER,
            message,
        });
    }
    // A restart due only to a rendering generation bump is announced
    // (Progressing, an Event) one reconcile before the first Pod goes.
    if matches!(plan, GroupPlan::Restart { .. })
        && let Some(n) = new_notice
    {
        plan = GroupPlan::Wait(crate::group::Blocked {
            reason: revision::RENDERING_GENERATION_CHANGED,
            message: n.to_owned(),
        });
    }
    plan
}

/// The group's `Progressing` condition: what this reconcile did or waits
/// for (`None` plan: it does not act); `replicas`: live members.
fn progressing_condition(plan: Option<&GroupPlan>, replicas: i32) -> ConditionUpdate {
    match plan {
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
    }
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
    let old_progressing = conditions::find(&conds, condition::PROGRESSING).cloned();
    let announce = revision::notice_is_new(notice.as_deref(), old_progressing.as_ref());
    let instance_states = instance_states(s, &update_revision, &currency, min_ready, now);

    // Nothing is created or removed for a group whose Cluster is missing or
    // being deleted (the Cluster deletes its groups in order).
    let acts = !(s.cluster.paused
        || s.cluster.deleting
        || s.cluster.missing
        || group.metadata.deletion_timestamp.is_some());
    // A Cluster speaking TLS: the Secrets are read now (they are not
    // cached) and checked before any member is created or updated.
    let namespace = group.metadata.namespace.clone().unwrap_or_default();
    let tls = match &s.cluster.client_tls_secret {
        Some(client) if acts => Some(
            TlsSecrets::read::<render::Pd>(
                ctx,
                &group_name,
                &namespace,
                &group.spec.template.spec,
                Some(client),
            )
            .await?,
        ),
        _ => None,
    };
    let live_names: Vec<&str> = s
        .instances
        .iter()
        .filter(|i| i.metadata.deletion_timestamp.is_none())
        .map(name_of)
        .collect();
    let tls_refusal = |new: &[&str]| {
        tls.as_ref().and_then(|t| {
            t.refusal::<render::Pd>(
                &group_name,
                &namespace,
                &group.spec.template.spec,
                live_names.iter().chain(new).copied(),
                now,
            )
        })
    };
    let mut fo: Option<crate::failover::FailoverPlan> = None;
    let plan = if !acts {
        None
    } else if s.cluster.unclaimed {
        Some(GroupPlan::Wait(waiting_for_cluster(&cluster_name)))
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
    } else if let Some(blocked) = tls_refusal(&[]) {
        // Likewise with a refused TLS Secret: nothing reaches the
        // instances, the running members are left alone.
        Some(GroupPlan::Refuse(blocked))
    } else {
        apply_template(ctx, s, &currency, &update_revision).await?;
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
        // Failover first: its one action is this reconcile's change.
        let failover = crate::failover::plan_failover(&crate::failover::FailoverInput {
            settings: crate::failover::settings_of(group.spec.failover.as_ref()),
            now,
            instances: &instance_states,
            pd: s.pd,
            previous: group.status.as_ref().and_then(|st| st.failover.as_ref()),
        });
        run_failover(ctx, group, &failover).await?;
        let mut plan = if failover.replace.is_some() {
            GroupPlan::Wait(Blocked {
                reason: fo_reasons::CONDITION_FAILOVER,
                message: "a failover step was taken; the group looks again".to_owned(),
            })
        } else {
            plan_group(&input, suffixes)
        };
        // New members must be covered by the certificate too.
        if let GroupPlan::Create(new) = &plan
            && let Some(blocked) =
                tls_refusal(&new.iter().map(|n| n.name.as_str()).collect::<Vec<_>>())
        {
            plan = GroupPlan::Refuse(blocked);
        }
        fo = Some(failover);
        let plan = gate_restart(
            s,
            pd_api,
            plan,
            &update_revision,
            notice.as_deref().filter(|_| announce),
            now,
        )
        .await;
        if !matches!(&plan, GroupPlan::Refuse(b) if is_tls_refusal(b.reason)) {
            run_group_plan(ctx, s, pd_api, &plan).await?;
        }
        Some(plan)
    };
    let refused = match &plan {
        Some(GroupPlan::Refuse(b)) => Some(b),
        _ => None,
    };
    announce_refusal(ctx, group, refused, old_progressing.as_ref()).await?;

    // Report.
    let live: Vec<&InstanceState> = instance_states.iter().filter(|i| !i.deleting).collect();
    let replicas = i32::try_from(live.len()).unwrap_or(i32::MAX);
    let ready = pods_ready;
    let progressing = progressing_condition(plan.as_ref(), replicas);
    let tls_refused = refused.is_some_and(|b| is_tls_refusal(b.reason));
    let all_ready = ready == group.spec.replicas && replicas == group.spec.replicas;
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
                    "AllMembersReady"
                } else {
                    "MembersNotReady"
                },
                format!("{ready}/{} PD members ready", group.spec.replicas),
            ),
        },
        now,
    )
    .await?;
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
        || format!("status of PDGroup {group_name}"),
    )
    .await?;
    let requeue = ctx
        .policy
        .after_success(plan.as_ref().is_some_and(GroupPlan::in_flight) || awaiting_ready);
    // A refused TLS Secret is polled (Secrets are not watched): a fixed
    // one is seen within `tls::RECHECK`.
    let recheck = fo
        .and_then(|f| f.recheck_after)
        .into_iter()
        .chain(tls_refused.then_some(tikv_operator_core::tls::RECHECK))
        .min();
    Ok(requeue.or_sooner(recheck))
}

/// Carries out PD failover's one action (deleting the failed instance: its
/// finalizer removes the member safely) and publishes its Events (a refusal
/// once, when it is new).
async fn run_failover(
    ctx: &Ctx,
    group: &PDGroup,
    plan: &crate::failover::FailoverPlan,
) -> Result<()> {
    if let Some(name) = &plan.replace {
        ctx.kube
            .delete(&ObjectKey::new::<PD>(
                group.metadata.namespace.as_deref(),
                name,
            ))
            .await?;
        let message = plan
            .status
            .as_ref()
            .and_then(|st| st.failures.iter().find(|r| &r.instance == name))
            .and_then(|r| r.message.clone())
            .unwrap_or_default();
        info!(instance = %name, %message, "PD failover");
        publish(
            ctx.kube.as_ref(),
            event(
                group,
                EventType::Normal,
                fo_reasons::FAILOVER_STARTED,
                "Failover",
                message,
            ),
        )
        .await?;
    }
    for name in &plan.completed {
        publish(
            ctx.kube.as_ref(),
            event(
                group,
                EventType::Normal,
                fo_reasons::FAILOVER_COMPLETED,
                "Failover",
                format!("failover of PD member {name} completed: it is gone; a new member joins"),
            ),
        )
        .await?;
    }
    if let Some(b) = &plan.new_refusal {
        warn!(reason = b.reason, message = %b.message, "PD failover refused");
        publish(
            ctx.kube.as_ref(),
            event(
                group,
                EventType::Warning,
                b.reason,
                "Failover",
                b.message.clone(),
            ),
        )
        .await?;
    }
    Ok(())
}
