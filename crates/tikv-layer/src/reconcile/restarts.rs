//! One TiKV instance's part of a rolling restart (see [`crate::restart`]):
//! what the restart step machine looks at, carrying out its step, and what
//! `Synced` says meanwhile.

use super::instance::{evicting_in_pd, patch_status, remove_evict_leader};
use super::*;

/// The `Synced` condition while a restart step runs (`synced`: what
/// applying the instance's objects reported; `None` while it goes away).
pub(super) fn synced_by_restart(
    restart: &RestartStep,
    synced: Option<ConditionUpdate>,
) -> Option<ConditionUpdate> {
    match (restart, synced) {
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
    }
}

/// What the restart step machine of the instance looks at (see
/// [`crate::restart::next_restart_step`]).
pub(super) fn restart_step_input<'a>(
    s: &InstanceSnapshot<'a>,
    store: Option<&'a Store>,
    rendered: &std::result::Result<Rendered, RenderError>,
    status: &TiKVStatus,
    now: k8s_openapi::jiff::Timestamp,
) -> StepInput<'a> {
    let kv = s.instance;
    let running = s.pod.filter(|p| p.metadata.deletion_timestamp.is_none());
    let revision = rendered.as_ref().ok().map(|r| &r.revision);
    StepInput {
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
    }
}

/// Carries out one restart step; returns the step to report (a timed-out
/// eviction resolves into a Pod deletion or a wait).
pub(super) async fn run_restart_step(
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
            // A removal checks PD's entries and adds its own under the gate;
            // adding ours under it too keeps that check-and-add whole.
            let _turn = s.eviction_gate.enter().await;
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

#[cfg(test)]
mod tests {
    use super::*;

    /// While a restart step runs, `Synced` says what the restart waits for;
    /// steps that change nothing visible keep what applying reported, and an
    /// instance going away (no `Synced`) stays without one.
    #[test]
    fn synced_follows_the_restart_step() {
        let applied = || {
            Some(ConditionUpdate::new(
                condition::SYNCED,
                true,
                reasons::SYNCED,
                "up to date",
            ))
        };
        let blocked = Blocked {
            reason: "BudgetSpent",
            message: "wait".into(),
        };
        let t = conditions::TRUE;
        let f = conditions::FALSE;
        // (step, what applying reported, (status, reason) of Synced)
        type Case = (
            RestartStep,
            Option<ConditionUpdate>,
            Option<(&'static str, &'static str)>,
        );
        let cases: Vec<Case> = vec![
            (RestartStep::Idle, applied(), Some((t, reasons::SYNCED))),
            (
                RestartStep::Pending,
                applied(),
                Some((f, reasons::RESTART_PENDING)),
            ),
            (
                RestartStep::Wait(blocked.clone()),
                applied(),
                Some((f, "BudgetSpent")),
            ),
            (
                RestartStep::EvictLeaders {
                    store: StoreId(1),
                    message: "3 leaders left".into(),
                },
                applied(),
                Some((f, reasons::EVICTING_LEADERS)),
            ),
            (
                RestartStep::DeletePod {
                    why: "no leaders left".into(),
                },
                applied(),
                Some((f, reasons::RESTARTING)),
            ),
            (
                RestartStep::CheckDownPeers {
                    store: StoreId(1),
                    leaders: 2,
                },
                applied(),
                Some((t, reasons::SYNCED)),
            ),
            (
                RestartStep::RemoveEvictLeader(None),
                applied(),
                Some((t, reasons::SYNCED)),
            ),
            (RestartStep::Pending, None, None),
            (RestartStep::Wait(blocked), None, None),
        ];
        for (step, synced, want) in cases {
            let got = synced_by_restart(&step, synced);
            assert_eq!(
                got.as_ref().map(|c| (c.status, c.reason.as_str())),
                want,
                "{step:?}"
            );
        }
    }
}
