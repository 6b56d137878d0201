//! The TiKV instance reconciler: renders and applies the instance's
//! objects and runs the steps that take its store out safely.

use super::restarts::{restart_step_input, run_restart_step, synced_by_restart};
use super::*;

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
    /// Held while an eviction is checked and started: one per Cluster,
    /// shared by every TiKV instance of it (see [`EvictionGate`]).
    pub eviction_gate: &'a EvictionGate,
}

/// Serializes the start of leader evictions within one Cluster. Two
/// instances reconciled at the same moment plan on the same PD view, so
/// neither sees the other's eviction; under the gate each re-reads PD's
/// evict-leader entries and starts only when no other store of the Cluster
/// is evicting (safety rule 2: one removal at a time, and the re-check right
/// before the step). The operator runs as one leader process, so an
/// in-process lock covers every reconciler that can act.
#[derive(Debug, Default)]
pub struct EvictionGate(tokio::sync::Mutex<()>);

impl EvictionGate {
    /// Waits for the gate.
    pub async fn enter(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.0.lock().await
    }
}

/// Removes the evict-leader entry of store `id`; one already gone is fine.
pub(super) async fn remove_evict_leader(pd_api: &dyn PdApi, id: StoreId) -> Result<()> {
    match pd_api.remove_evict_leader(id).await {
        Ok(()) => Ok(()),
        Err(e) if e.is_already_gone() => Ok(()),
        Err(e) => Err(Error::pd("remove_evict_leader", e)),
    }
}

/// Whether PD's view lists `id` in its evict-leader scheduler.
/// A store other than `id`, still in PD and not removed, whose leaders PD
/// is evicting (`evicting`: PD's evict-leader entries, read just now). With
/// no store listing to tell removed stores apart, every other entry counts.
fn other_evicting(
    pd: &StoreView,
    evicting: &std::collections::BTreeSet<StoreId>,
    id: StoreId,
) -> Option<StoreId> {
    match pd.stores() {
        Some(stores) => crate::removal::evicting_others(stores, evicting, id)
            .first()
            .copied(),
        None => evicting.iter().copied().find(|o| *o != id),
    }
}

pub(super) fn evicting_in_pd(pd: &StoreView, id: StoreId) -> bool {
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

/// Runs one step of the store's removal or its cancellation (PD calls,
/// deletions, Events). `Break`: the instance is done and its finalizer
/// released; `Continue`: the step to report (PD refusing the removal, or a
/// cancellation that came too late, replaces the step).
async fn run_removal_step(
    ctx: &Ctx,
    s: &InstanceSnapshot<'_>,
    pd_api: &dyn PdApi,
    key: &ObjectKey,
    status: &mut TiKVStatus,
    step: &RemovalStep,
    now: k8s_openapi::jiff::Timestamp,
) -> Result<ControlFlow<Requeue, RemovalStep>> {
    let kv = s.instance;
    let name = name_of(kv).to_owned();
    let namespace = kv.metadata.namespace.clone();
    let mut step_for_report = step.clone();
    if *step != RemovalStep::Idle {
        info!(?step, "store removal");
    }
    match step {
        RemovalStep::Idle
        | RemovalStep::Wait(_)
        | RemovalStep::Refuse(_)
        | RemovalStep::Removed
        | RemovalStep::TooLateToCancel => {}
        RemovalStep::EvictLeaders(id) => {
            let _turn = s.eviction_gate.enter().await;
            // Re-checked against PD right before acting: another instance
            // may have started evicting since the view was read.
            let evicting = pd_api
                .evicting_stores()
                .await
                .map_err(|e| Error::pd("evicting_stores", e))?;
            if let Some(other) = other_evicting(s.pd, &evicting, *id) {
                step_for_report = RemovalStep::Wait(crate::group::Blocked {
                    reason: reasons::ANOTHER_REMOVAL_IN_FLIGHT,
                    message: format!(
                        "the leaders of store {other} are being evicted; the removal of store \
                         {id} waits for it"
                    ),
                });
                return Ok(ControlFlow::Continue(step_for_report));
            }
            // Record first: an entry we added is always known to be ours,
            // so every exit path removes it.
            status.leader_eviction_started_at = Some(Time(now));
            patch_status(ctx, key, &name, status).await?;
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
            release_finalizer(ctx.kube.as_ref(), key).await?;
            return Ok(ControlFlow::Break(Requeue::AwaitChange));
        }
    }
    Ok(ControlFlow::Continue(step_for_report))
}

/// The instance's `Ready` condition: its Pod is Ready and its store, as
/// registered by that Pod's process, is Up and serving (and not being
/// taken out).
fn ready_condition(
    s: &InstanceSnapshot<'_>,
    store: Option<&Store>,
    request: Request,
) -> ConditionUpdate {
    let pod_is_ready = s.pod.is_some_and(pod_ready);
    let pod_created = s
        .pod
        .and_then(|p| p.metadata.creation_timestamp.as_ref())
        .map(|t| t.0);
    match (s.pd.stores(), store) {
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
    }
}

/// What the status records of the instance's store: its id, state and
/// counts, or that it is gone (removed and purged, or never registered).
fn record_store(
    status: &mut TiKVStatus,
    pd: &StoreView,
    store: Option<&Store>,
    recorded: Option<StoreId>,
    request: Request,
    step_for_report: &RemovalStep,
) {
    if let Some(st) = store {
        status.id = Some(st.id.to_string());
        status.state = Some(api_state(st));
        status.leader_count = st
            .leader_count
            .map(|c| i64::try_from(c).unwrap_or(i64::MAX));
        status.region_count = Some(i64::try_from(st.region_count).unwrap_or(i64::MAX));
    } else if let Some(stores) = pd.stores() {
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
    let key = ObjectKey::of(kv)?;
    let now = ctx.clock.now();
    let generation = kv.metadata.generation;
    let deleting = kv.metadata.deletion_timestamp.is_some();
    if deleting && !has_finalizer(kv) {
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
    let (synced, created_revision) =
        sync_instance_objects(ctx, s, store, &status, request, acting, &rendered).await?;

    // A rolling restart of the store (see `crate::restart`), while the store
    // is kept and not being removed.
    let restart = if acting
        && request == Request::Keep
        && !store.is_some_and(|st| st.is_removing() || st.is_removed())
    {
        next_restart_step(&restart_step_input(s, store, &rendered, &status, now))
    } else {
        RestartStep::Idle
    };
    let restart = run_restart_step(ctx, s, pd_api, &key, &mut status, restart).await?;
    let synced = synced_by_restart(&restart, synced);

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
    let step_for_report = if acting {
        match run_removal_step(ctx, s, pd_api, &key, &mut status, &step, now).await? {
            ControlFlow::Break(r) => return Ok(r),
            ControlFlow::Continue(report) => report,
        }
    } else {
        step.clone()
    };

    // Store labels, while the store serves and nothing removes it.
    if acting && request == Request::Keep {
        sync_store_labels(s, store, pd_api).await?;
    }

    // Report.
    let mut conds: Vec<Condition> = status.common.conditions.clone();
    if let Some(synced) = synced {
        conditions::set(&mut conds, synced, generation, now);
    }
    report_offline(ctx, s, &mut conds, &step_for_report, request, acting, now).await?;

    let pod_is_ready = s.pod.is_some_and(pod_ready);
    let ready = ready_condition(s, store, request);
    // A store still joining (not registered, not yet serving) keeps the PD
    // cache refreshing fast: otherwise the instance would notice its store
    // Up only at the next slow refresh (measured: Ready 30 s late).
    let store_settling = ready.status != conditions::TRUE;
    conditions::set(&mut conds, ready, generation, now);

    status.common = CommonStatus {
        conditions: conds,
        observed_generation: generation,
    };
    record_store(
        &mut status,
        s.pd,
        store,
        recorded,
        request,
        &step_for_report,
    );
    status.current_revision = s
        .pod
        .and_then(|p| p.metadata.annotations.as_ref())
        .and_then(|a| a.get(labels::INSTANCE_REVISION).cloned())
        .or(created_revision)
        .or(status.current_revision);
    if kv.status.as_ref() != Some(&status) {
        patch_status(ctx, &key, &name, &status).await?;
    }
    let in_flight =
        step_for_report.in_flight() || restart.in_flight() || !pod_is_ready || store_settling;
    Ok(ctx.policy.after_success(in_flight))
}

/// Applies the instance's objects unless it is going away (see
/// `apply_instance_objects`): the `Synced` condition to set, if any, and the
/// revision of a Pod created now. While it is deleted, only a Pod lost before
/// its store left PD comes back.
async fn sync_instance_objects(
    ctx: &Ctx,
    s: &InstanceSnapshot<'_>,
    store: Option<&Store>,
    status: &TiKVStatus,
    request: Request,
    acting: bool,
    rendered: &std::result::Result<Rendered, RenderError>,
) -> Result<(Option<ConditionUpdate>, Option<String>)> {
    let kv = s.instance;
    let key = ObjectKey::of(kv)?;
    let deleting = kv.metadata.deletion_timestamp.is_some();
    let mut created_revision = None;
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
            if let Err((reason, m)) = apply_instance_objects(ctx, s, rendered, true).await? {
                warn!(%reason, message = %m, "cannot recreate the Pod of a store being removed");
            } else {
                info!("recreated the lost Pod of a store being removed");
            }
        }
        None
    } else {
        ensure_finalizer(ctx.kube.as_ref(), &key, kv).await?;
        let store_gone =
            store.is_some_and(Store::is_removed) || status.state == Some(ApiStoreState::Removed);
        // Offline: the Pod stays (and a lost one comes back) until the store
        // is removed in PD (safety rule 1).
        let pod_allowed =
            !store_gone && (request == Request::Keep || store.is_some_and(|st| !st.is_removed()));
        Some(
            match apply_instance_objects(ctx, s, rendered, pod_allowed).await? {
                Ok(applied) => {
                    created_revision = applied.created_revision;
                    ConditionUpdate::new(condition::SYNCED, true, reasons::SYNCED, applied.message)
                }
                Err((reason, m)) => ConditionUpdate::new(condition::SYNCED, false, reason, m),
            },
        )
    };
    Ok((synced, created_revision))
}

/// Sets the store labels PD lacks (from the spec, the topology and the
/// Node's labels named by PD's location labels) on a store that is Up.
async fn sync_store_labels(
    s: &InstanceSnapshot<'_>,
    store: Option<&Store>,
    pd_api: &dyn PdApi,
) -> Result<()> {
    let kv = s.instance;
    let (Some(st), Some(stores)) = (store, s.pd.stores()) else {
        return Ok(());
    };
    if !is_up(st) {
        return Ok(());
    }
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
    Ok(())
}

/// Sets the `Offline` condition from the removal step and publishes the
/// Events of its changes (the request itself once, then each new reason).
async fn report_offline(
    ctx: &Ctx,
    s: &InstanceSnapshot<'_>,
    conds: &mut Vec<Condition>,
    step_for_report: &RemovalStep,
    request: Request,
    acting: bool,
    now: k8s_openapi::jiff::Timestamp,
) -> Result<()> {
    let kv = s.instance;
    let deleting = kv.metadata.deletion_timestamp.is_some();
    let generation = kv.metadata.generation;
    let previous = conditions::find(conds, reasons::CONDITION_OFFLINE).cloned();
    let (offline, severity) = offline_condition(
        step_for_report,
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
    conditions::set(conds, offline, generation, now);
    Ok(())
}

pub(super) async fn patch_status(
    ctx: &Ctx,
    key: &ObjectKey,
    name: &str,
    status: &TiKVStatus,
) -> Result<()> {
    objects::patch_status(ctx.kube.as_ref(), key, status, || {
        format!("status of TiKV {name}")
    })
    .await
}

/// Applies ConfigMap, PVCs and (when `pod_allowed`) the Pod (see
/// [`tikv_operator_core::component::apply`]). The outer error is a failed
/// write; the inner one why the instance is not in sync: (reason, message).
async fn apply_instance_objects(
    ctx: &Ctx,
    s: &InstanceSnapshot<'_>,
    rendered: &std::result::Result<Rendered, RenderError>,
    pod_allowed: bool,
) -> Result<Result<apply::Applied, (&'static str, String)>> {
    apply::apply_instance_objects(
        ctx.kube.as_ref(),
        rendered,
        apply::Cached {
            config_map: s.config_map,
            pvcs: s.pvcs,
            pod: s.pod,
        },
        s.cluster.suspend_compute,
        apply::PodPolicy {
            create: pod_allowed,
            missing: "the store is offline or removed: no Pod is (re)created",
            wait_terminating: true,
            restart_pending: "the rendered Pod changed (configuration, image, resources, ...); \
                              the store is restarted when its group grants it (one disruption \
                              budget at a time)",
        },
    )
    .await
}
