//! The TiKVGroup reconciler's failover step: observe the instances for
//! [`crate::failover`], carry out its one action, and announce it.

use super::*;
use crate::failover::{
    FailoverAction, FailoverInput, FailoverPlan, Member, plan_failover, wants_region_health,
};

/// The failed instance an instance replaces (its [`labels::FAILOVER_REPLACES`] annotation).
pub(super) fn replaces(kv: &TiKV) -> Option<&str> {
    annotation(kv, labels::FAILOVER_REPLACES).map(String::as_str)
}

fn member_of(kv: &TiKV) -> Member {
    let status = kv.status.as_ref();
    Member {
        name: name_of(kv).to_owned(),
        topology: kv.spec.topology.clone(),
        store_id: status
            .and_then(|s| s.id.as_deref())
            .and_then(|id| id.parse().ok())
            .map(StoreId),
        leaving: kv.spec.offline
            || kv.metadata.deletion_timestamp.is_some()
            || status.is_some_and(|s| s.state == Some(ApiStoreState::Removed)),
        restarting: false,
        replaces: replaces(kv).map(str::to_owned),
        disrupted: None,
        ready: false,
    }
}

/// Whether the group reconcile of `instances` needs PD's Region health
/// ([`RegionHealth::observe`]): a store of theirs is unhealthy or a
/// replacement is in flight. The caller reads it only then.
pub fn needs_region_health(instances: &[TiKV], pd: &StoreView) -> bool {
    let members: Vec<Member> = instances.iter().map(member_of).collect();
    wants_region_health(&members, pd)
}

/// Plans failover for the group of `s`; `restarting`: names of its
/// instances whose granted restart has not finished.
pub(super) fn plan(
    s: &GroupSnapshot<'_>,
    restarting: &[&str],
    min_ready: i64,
    now: k8s_openapi::jiff::Timestamp,
    suffixes: &mut dyn SuffixSource,
) -> FailoverPlan {
    let group = s.group;
    let pod_of = |pods: &'_ [Pod], kv: &TiKV| -> Option<Pod> {
        pods.iter()
            .find(|p| name_of(*p) == names::pod(name_of(kv)))
            .cloned()
    };
    let members = s
        .instances
        .iter()
        .map(|kv| {
            let restarting = restarting.contains(&name_of(kv));
            let pod = pod_of(s.pods, kv);
            Member {
                restarting,
                disrupted: disruption(kv, pod.as_ref(), s.pd, restarting, min_ready, now),
                ready: groups::instance_ready(kv, s.pods),
                ..member_of(kv)
            }
        })
        .collect();
    let others = s
        .others
        .iter()
        .map(|kv| {
            let restarting = annotation(kv, labels::RESTART_ALLOWED).is_some();
            Member {
                disrupted: disruption(
                    kv,
                    pod_of(s.other_pods, kv).as_ref(),
                    s.pd,
                    restarting,
                    0,
                    now,
                ),
                ..member_of(kv)
            }
        })
        .collect();
    let spread = Spread::from_policies(&group.spec.schedule_policies);
    plan_failover(
        &FailoverInput {
            group: name_of(group),
            settings: crate::failover::settings_of(group.spec.failover.as_ref()),
            now,
            spread: &spread,
            members,
            others,
            pd: s.pd,
            regions: s.regions,
            previous: group.status.as_ref().and_then(|st| st.failover.as_ref()),
        },
        suffixes,
    )
}

/// Carries out the failover action and publishes its Events (a refusal
/// once, when it is new).
pub(super) async fn run(
    ctx: &Ctx,
    s: &GroupSnapshot<'_>,
    plan: &FailoverPlan,
    grant_of: &(dyn Fn(&TiKV) -> Option<String> + Sync),
) -> Result<()> {
    let group = s.group;
    let find = |n: &str| s.instances.iter().find(|i| name_of(*i) == n);
    let (reason, message) = match &plan.action {
        FailoverAction::None => (None, String::new()),
        FailoverAction::Surge { failed, new } => {
            let mut kv = render::render_instance(group, new, false, s.cluster.tls);
            kv.metadata
                .annotations
                .get_or_insert_default()
                .insert(labels::FAILOVER_REPLACES.to_owned(), failed.clone());
            ctx.kube
                .apply(&ObjectKey::of(&kv)?, &desired(&kv)?.stamped())
                .await?;
            let why = plan
                .status
                .as_ref()
                .and_then(|st| st.failures.iter().find(|r| &r.instance == failed))
                .map(|r| format!("store {} {} since {}", r.store_id, r.store_state, r.since.0))
                .unwrap_or_default();
            (
                Some(reasons::FAILOVER_STARTED),
                format!(
                    "failover of {failed} ({why}): creating {} to replace it; the failed store is \
                     removed once the new one serves",
                    new.name
                ),
            )
        }
        FailoverAction::RemoveFailed {
            failed,
            replacement,
        } => {
            if let Some(i) = find(failed) {
                let want = desired_instance(group, i, true, grant_of(i).as_deref());
                ctx.kube
                    .apply(&ObjectKey::of(&want)?, &desired(&want)?.stamped())
                    .await?;
            }
            (
                Some(reasons::FAILOVER_REMOVING),
                format!(
                    "{replacement} serves: taking the failed store of {failed} offline (PD \
                     removes it; its Pod and PVCs go once it is Tombstone)"
                ),
            )
        }
        FailoverAction::Cancel {
            failed,
            replacement,
        } => {
            if let Some(i) = find(replacement) {
                let mut want = desired_instance(group, i, true, grant_of(i).as_deref());
                if let Some(a) = want.metadata.annotations.as_mut() {
                    a.remove(labels::FAILOVER_REPLACES);
                }
                ctx.kube
                    .apply(&ObjectKey::of(&want)?, &desired(&want)?.stamped())
                    .await?;
            }
            (
                Some(reasons::FAILOVER_CANCELLED),
                format!(
                    "the store of {failed} is back before its removal started: failover \
                     cancelled, {replacement} is taken out again"
                ),
            )
        }
        FailoverAction::Finish {
            failed,
            replacement,
        } => {
            if let Some(i) = find(replacement) {
                let mut want = desired_instance(group, i, i.spec.offline, grant_of(i).as_deref());
                if let Some(a) = want.metadata.annotations.as_mut() {
                    a.remove(labels::FAILOVER_REPLACES);
                }
                ctx.kube
                    .apply(&ObjectKey::of(&want)?, &desired(&want)?.stamped())
                    .await?;
            }
            (
                Some(reasons::FAILOVER_COMPLETED),
                format!("failover of {failed} completed: {replacement} replaced it"),
            )
        }
    };
    if let Some(reason) = reason {
        info!(%message, "failover");
        publish(
            ctx,
            event(group, EventType::Normal, reason, "Failover", message),
        )
        .await?;
    }
    if let Some(b) = &plan.new_refusal {
        warn!(reason = b.reason, message = %b.message, "failover refused");
        publish(
            ctx,
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
