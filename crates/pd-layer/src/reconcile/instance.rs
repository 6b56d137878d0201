//! The PD instance reconciler: renders and applies the instance's
//! objects and runs the steps that take its member out safely.

use super::*;

/// A PD instance and what the caches hold about it.
#[derive(Debug, Clone)]
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
            publish(
                ctx.kube.as_ref(),
                event(pd, EventType::Warning, b.reason, "RemoveMember", b.message),
            )
            .await?;
        }
        RemovalStep::TransferLeader { to } => {
            pd_api
                .transfer_leader(&to)
                .await
                .map_err(|e| Error::pd("transfer_leader", e))?;
            publish(
                ctx.kube.as_ref(),
                event(
                    pd,
                    EventType::Normal,
                    "LeaderTransferred",
                    "TransferLeader",
                    format!("PD leadership moved from {name} to {to}"),
                ),
            )
            .await?;
        }
        RemovalStep::RemoveMember { id } => {
            match pd_api.remove_member(id).await {
                Ok(()) => {}
                Err(e) if e.is_already_gone() => {}
                Err(e) => return Err(Error::pd("remove_member", e)),
            }
            publish(
                ctx.kube.as_ref(),
                event(
                    pd,
                    EventType::Normal,
                    "MemberRemoved",
                    "RemoveMember",
                    format!("PD member {name} (id {id}) removed from the PD cluster"),
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

    let mut created_revision = None;
    let synced = if s.cluster.paused {
        ConditionUpdate::new(condition::SYNCED, false, "Paused", "the Cluster is paused")
    } else {
        ensure_finalizer(ctx.kube.as_ref(), &key, pd).await?;
        match apply_instance_objects(ctx, s).await? {
            Ok(applied) => {
                created_revision = applied.created_revision;
                ConditionUpdate::new(condition::SYNCED, true, reasons::SYNCED, applied.message)
            }
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
            .or(created_revision)
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
) -> Result<Result<apply::Applied, (&'static str, String)>> {
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
