//! The Cluster layer of tikv-operator.
//!
//! - [`plan_status`] (pure): the Cluster's status from its groups, the PD
//!   state cache and the check of its client TLS Secret (a Cluster asking
//!   for TLS): `components[]`, `status.pd` (PD client URL), `status.id`
//!   (the PD cluster id, recorded once and never overwritten; it is how the PD
//!   layer knows PD was bootstrapped), and conditions Ready, Progressing,
//!   Suspended, Synced.
//! - [`next_deletion_step`] (pure): ordered deletion — TiKV groups first and
//!   until their instances are gone, then PD groups, then the finalizer.
//! - [`reconcile_cluster`]: observe -> plan -> apply -> report over
//!   [`KubeWriter`] and [`Clock`]. Entry point for the manager's Cluster
//!   Controller (which must also wake the Cluster when a group's status
//!   changes and when the PD state cache publishes).

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::ResourceExt;
use tikv_operator_api::cluster::ComponentStatus;
use tikv_operator_api::common::condition;
use tikv_operator_api::{Cluster, ClusterStatus, CommonStatus, PDGroup, TiKVGroup, names};
use tikv_operator_core::conditions::{self, ConditionUpdate};
use tikv_operator_core::objects::{
    ensure_finalizer, has_finalizer, patch_status_if_changed, release_finalizer,
};
use tikv_operator_core::pd_state::PdSnapshot;
use tikv_operator_core::tls::{self, SecretError};
use tikv_operator_core::{Clock, EventSpec, EventType, KubeWriter, ObjectKey, Requeue, Result};
use tracing::{info, instrument, warn};

/// Component kind of a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// A PDGroup.
    PD,
    /// A TiKVGroup.
    TiKV,
}

impl Kind {
    /// The value in `status.components[].kind`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::PD => "PD",
            Self::TiKV => "TiKV",
        }
    }
}

/// What the Cluster looks at in one group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupSummary {
    /// PD or TiKV.
    pub kind: Kind,
    /// Group name.
    pub name: String,
    /// `status.replicas`.
    pub replicas: i32,
    /// `status.readyReplicas`.
    pub ready_replicas: i32,
    /// Its `Ready` condition is True.
    pub ready: bool,
    /// Its `Progressing` condition, when True: (reason, message).
    pub progressing: Option<(String, String)>,
    /// Its `Synced` condition, when False: (reason, message), e.g. a template
    /// whose config is rejected.
    pub not_synced: Option<(String, String)>,
    /// The group is being deleted.
    pub deleting: bool,
    /// PD groups: the client port (for `status.pd`).
    pub client_port: Option<i32>,
}

fn summarize(
    kind: Kind,
    meta: &kube::api::ObjectMeta,
    common: Option<&CommonStatus>,
    group: Option<&tikv_operator_api::GroupStatus>,
    client_port: Option<i32>,
) -> GroupSummary {
    let conds: &[Condition] = common.map(|c| c.conditions.as_slice()).unwrap_or_default();
    GroupSummary {
        kind,
        name: meta.name.clone().unwrap_or_default(),
        replicas: group.map_or(0, |g| g.replicas),
        ready_replicas: group.map_or(0, |g| g.ready_replicas),
        ready: conditions::is_true(conds, condition::READY),
        progressing: conditions::find(conds, condition::PROGRESSING)
            .filter(|c| c.status == conditions::TRUE)
            .map(|c| (c.reason.clone(), c.message.clone())),
        not_synced: conditions::find(conds, condition::SYNCED)
            .filter(|c| c.status == conditions::FALSE)
            .map(|c| (c.reason.clone(), c.message.clone())),
        deleting: meta.deletion_timestamp.is_some(),
        client_port,
    }
}

impl GroupSummary {
    /// Summary of a PDGroup.
    pub fn from_pd_group(g: &PDGroup) -> Self {
        let port = g
            .spec
            .template
            .spec
            .server
            .as_ref()
            .and_then(|s| s.ports.as_ref())
            .and_then(|p| p.client.as_ref())
            .map_or(2379, |p| p.port);
        let st = g.status.as_ref();
        summarize(
            Kind::PD,
            &g.metadata,
            st.map(|s| &s.common),
            st.map(|s| &s.group),
            Some(port),
        )
    }

    /// Summary of a TiKVGroup.
    pub fn from_tikv_group(g: &TiKVGroup) -> Self {
        let st = g.status.as_ref();
        summarize(
            Kind::TiKV,
            &g.metadata,
            st.map(|s| &s.common),
            st.map(|s| &s.group),
            None,
        )
    }
}

/// Whether the Cluster asks for mutual TLS between its components.
pub fn tls_requested(cluster: &Cluster) -> bool {
    cluster.tls_enabled()
}

/// The client TLS Secret the operator reaches the Cluster's PD with
/// (`spec.tlsCluster.clientSecretName`, default `<cluster>-client-tls`);
/// `None` when the Cluster does not ask for TLS.
pub fn client_tls_secret(cluster: &Cluster) -> Option<String> {
    cluster.client_tls_secret()
}

/// Reason of `Synced=False` when PD reports another cluster id than the one recorded.
pub const REASON_CLUSTER_ID_MISMATCH: &str = "ClusterIdMismatch";

/// The Cluster's status from its groups, PD and, for a Cluster asking for
/// TLS, why its client Secret is refused (`client_tls`; `None` when it
/// passes or TLS is off). Conditions keep their transition times unless
/// their status changes.
pub fn plan_status(
    cluster: &Cluster,
    groups: &[GroupSummary],
    pd: &PdSnapshot,
    client_tls: Option<&SecretError>,
    now: k8s_openapi::jiff::Timestamp,
) -> ClusterStatus {
    let old = cluster.status.clone().unwrap_or_default();
    let generation = cluster.metadata.generation;
    let mut conds = old.common.conditions.clone();
    let (id, synced) = cluster_id_and_synced(old.id.as_ref(), groups, pd, client_tls);
    conditions::set(&mut conds, synced, generation, now);

    let suspended = cluster
        .spec
        .suspend_action
        .as_ref()
        .is_some_and(|s| s.suspend_compute);
    conditions::set(
        &mut conds,
        ConditionUpdate::new(
            condition::SUSPENDED,
            suspended,
            if suspended {
                "ComputeSuspended"
            } else {
                "NotSuspended"
            },
            if suspended {
                "Pods are deleted; PVCs and configuration are kept"
            } else {
                ""
            },
        ),
        generation,
        now,
    );

    let progressing = groups
        .iter()
        .find_map(|g| g.progressing.as_ref().map(|p| (g, p)));
    conditions::set(
        &mut conds,
        match progressing {
            Some((g, (reason, message))) => ConditionUpdate::new(
                condition::PROGRESSING,
                true,
                reason.clone(),
                format!("{} {}: {message}", g.kind.as_str(), g.name),
            ),
            None => ConditionUpdate::new(condition::PROGRESSING, false, "Stable", ""),
        },
        generation,
        now,
    );
    conditions::set(&mut conds, ready_condition(groups, pd), generation, now);

    ClusterStatus {
        common: CommonStatus {
            conditions: conds,
            observed_generation: generation,
        },
        id,
        pd: pd_url(cluster, groups),
        components: components(groups),
    }
}

/// Replicas and ready replicas summed per component.
fn components(groups: &[GroupSummary]) -> Vec<ComponentStatus> {
    let mut sums: BTreeMap<Kind, (i32, i32)> = BTreeMap::new();
    for g in groups {
        let e = sums.entry(g.kind).or_default();
        e.0 += g.replicas;
        e.1 += g.ready_replicas;
    }
    sums.into_iter()
        .map(|(k, (replicas, ready))| ComponentStatus {
            kind: k.as_str().to_owned(),
            replicas,
            ready_replicas: ready,
        })
        .collect()
}

/// PD's client URL: the client Service of the (first, by name) PDGroup.
fn pd_url(cluster: &Cluster, groups: &[GroupSummary]) -> Option<String> {
    let namespace = cluster.metadata.namespace.as_deref().unwrap_or_default();
    let scheme = if tls_requested(cluster) {
        "https"
    } else {
        "http"
    };
    groups
        .iter()
        .filter(|g| g.kind == Kind::PD)
        .min_by(|a, b| a.name.cmp(&b.name))
        .map(|g| {
            format!(
                "{scheme}://{}.{namespace}.svc:{}",
                names::pd_client_service(&g.name),
                g.client_port.unwrap_or(2379)
            )
        })
}

/// The PD cluster id to record (recorded once, never overwritten) and the
/// `Synced` condition: a refused client Secret first, then a group whose
/// template is rejected, then the id (a PD of another cluster, or none yet).
fn cluster_id_and_synced(
    recorded: Option<&String>,
    groups: &[GroupSummary],
    pd: &PdSnapshot,
    client_tls: Option<&SecretError>,
) -> (Option<String>, ConditionUpdate) {
    let reported = pd
        .members
        .as_ref()
        .filter(|_| pd.reachable())
        .map(|m| m.cluster_id.to_string());
    let (id, synced) = match (recorded, &reported) {
        (Some(was), Some(now_id)) if was != now_id => (
            Some(was.clone()),
            ConditionUpdate::new(
                condition::SYNCED,
                false,
                REASON_CLUSTER_ID_MISMATCH,
                format!(
                    "PD reports cluster id {now_id} but this Cluster recorded {was}; \
                     the operator does not act on a different PD cluster"
                ),
            ),
        ),
        (Some(_), _) => (
            recorded.cloned(),
            ConditionUpdate::new(condition::SYNCED, true, "Synced", "PD cluster id recorded"),
        ),
        (None, Some(now_id)) => (
            Some(now_id.clone()),
            ConditionUpdate::new(condition::SYNCED, true, "Synced", "PD cluster id recorded"),
        ),
        (None, None) => (
            None,
            ConditionUpdate::new(
                condition::SYNCED,
                false,
                "WaitingForPD",
                "PD has not answered yet",
            ),
        ),
    };
    let synced = if let Some(e) = client_tls {
        // The operator could not reach PD: its PDGroup creates no member.
        ConditionUpdate::new(
            condition::SYNCED,
            false,
            e.reason(),
            format!("the client TLS Secret is refused, no PD member is created: {e}"),
        )
    } else if let Some((g, (reason, message))) = groups
        .iter()
        .find_map(|g| g.not_synced.as_ref().map(|n| (g, n)))
        // A rejected template is told before "waiting for PD" (a PDGroup
        // whose template is rejected never brings PD up), never over a PD
        // of another cluster.
        .filter(|_| synced.status == conditions::TRUE || synced.reason == "WaitingForPD")
    {
        // A group whose template is rejected: the Cluster is not synced either.
        ConditionUpdate::new(
            condition::SYNCED,
            false,
            reason.clone(),
            format!("{}Group {}: {message}", g.kind.as_str(), g.name),
        )
    } else {
        synced
    };
    (id, synced)
}

/// `Ready`: a PDGroup, PD answering, and every group ready.
fn ready_condition(groups: &[GroupSummary], pd: &PdSnapshot) -> ConditionUpdate {
    let not_ready: Vec<String> = groups
        .iter()
        .filter(|g| !g.ready)
        .map(|g| format!("{} {}", g.kind.as_str(), g.name))
        .collect();
    if !groups.iter().any(|g| g.kind == Kind::PD) {
        ConditionUpdate::new(
            condition::READY,
            false,
            "NoPD",
            "the Cluster has no PDGroup",
        )
    } else if !pd.reachable() {
        ConditionUpdate::new(
            condition::READY,
            false,
            "PDUnavailable",
            pd.error.clone().unwrap_or_default(),
        )
    } else if !not_ready.is_empty() {
        ConditionUpdate::new(
            condition::READY,
            false,
            "GroupsNotReady",
            format!("not ready: {}", not_ready.join(", ")),
        )
    } else {
        ConditionUpdate::new(condition::READY, true, "AllGroupsReady", "")
    }
}

/// The next step of deleting a Cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeletionStep {
    /// Delete these groups (all of one kind).
    DeleteGroups(Kind, Vec<String>),
    /// Wait: groups or instances of this kind are still going away.
    Wait(Kind),
    /// Nothing of the Cluster is left: drop the finalizer.
    Done,
}

/// Ordered deletion: TiKV before PD (TiKV needs PD to leave cleanly; PD
/// holds the cluster's metadata). `instances_left` counts the instance objects
/// of each kind still present (their finalizers run after their group is gone).
pub fn next_deletion_step(
    groups: &[GroupSummary],
    instances_left: &BTreeMap<Kind, usize>,
) -> DeletionStep {
    for kind in [Kind::TiKV, Kind::PD] {
        let of_kind: Vec<&GroupSummary> = groups.iter().filter(|g| g.kind == kind).collect();
        let to_delete: Vec<String> = of_kind
            .iter()
            .filter(|g| !g.deleting)
            .map(|g| g.name.clone())
            .collect();
        if !to_delete.is_empty() {
            return DeletionStep::DeleteGroups(kind, to_delete);
        }
        if !of_kind.is_empty() || instances_left.get(&kind).copied().unwrap_or(0) > 0 {
            return DeletionStep::Wait(kind);
        }
    }
    DeletionStep::Done
}

pub use tikv_operator_core::Ctx;

/// The Cluster's groups and instances the API server still holds (read past
/// the caches), as `Kind/name`.
async fn objects_left(ctx: &Ctx, ns: Option<&str>, cluster: &str) -> Result<Vec<String>> {
    let mut left = Vec::new();
    for kind in [
        ObjectKey::new::<tikv_operator_api::TiKV>(ns, ""),
        ObjectKey::new::<TiKVGroup>(ns, ""),
        ObjectKey::new::<tikv_operator_api::PD>(ns, ""),
        ObjectKey::new::<PDGroup>(ns, ""),
    ] {
        for name in ctx.kube.names_in_cluster(&kind, cluster).await? {
            left.push(format!("{}/{name}", kind.kind));
        }
    }
    Ok(left)
}

/// A Cluster and what the caches hold about it.
#[derive(Debug, Clone, Copy)]
pub struct ClusterSnapshot<'a> {
    /// The Cluster.
    pub cluster: &'a Cluster,
    /// Its PDGroups and TiKVGroups, summarized.
    pub groups: &'a [GroupSummary],
    /// PD and TiKV instance objects still present, by kind.
    pub instances_left: &'a BTreeMap<Kind, usize>,
    /// The latest PD state cache snapshot.
    pub pd: &'a PdSnapshot,
}

/// Reconciles one Cluster: finalizer, ordered deletion, status.
#[instrument(skip_all, fields(cluster = s.cluster.name_any()))]
pub async fn reconcile_cluster(ctx: &Ctx, s: &ClusterSnapshot<'_>) -> Result<Requeue> {
    let cluster = s.cluster;
    let key = ObjectKey::of(cluster)?;
    let ns = cluster.metadata.namespace.as_deref();

    if cluster.metadata.deletion_timestamp.is_some() {
        if !has_finalizer(cluster) {
            return Ok(Requeue::AwaitChange);
        }
        match next_deletion_step(s.groups, s.instances_left) {
            DeletionStep::DeleteGroups(kind, names) => {
                for name in &names {
                    let gk = match kind {
                        Kind::PD => ObjectKey::new::<PDGroup>(ns, name),
                        Kind::TiKV => ObjectKey::new::<TiKVGroup>(ns, name),
                    };
                    ctx.kube.delete(&gk).await?;
                }
                info!(kind = kind.as_str(), ?names, "deleting groups");
                tikv_operator_core::objects::publish(
                    ctx.kube.as_ref(),
                    Ok(EventSpec {
                        regarding: key.reference(cluster.metadata.uid.as_deref()),
                        type_: EventType::Normal,
                        reason: "DeletingGroups".into(),
                        action: "Delete".into(),
                        note: format!("deleting {} groups {}", kind.as_str(), names.join(", ")),
                    }),
                )
                .await?;
            }
            DeletionStep::Wait(_) => {}
            DeletionStep::Done => {
                // The caches may lag behind objects created a moment ago:
                // the finalizer goes only when the API server holds none of
                // the Cluster's groups and instances either.
                let left = objects_left(ctx, ns, &key.name).await?;
                if left.is_empty() {
                    release_finalizer(ctx.kube.as_ref(), &key).await?;
                    return Ok(Requeue::AwaitChange);
                }
                info!(
                    ?left,
                    "the caches show nothing left, the API server does: waiting"
                );
            }
        }
        return Ok(ctx.policy.after_success(true));
    }

    ensure_finalizer(ctx.kube.as_ref(), &key, cluster).await?;
    let now = ctx.clock.now();
    // The client Secret is read (Secrets are not cached) and checked at
    // every reconcile of a Cluster asking for TLS.
    let client_tls = match (client_tls_secret(cluster), ns) {
        (Some(name), Some(ns)) => {
            let secret = ctx.kube.get_secret(ns, &name).await?;
            tls::check(
                &format!("{ns}/{name}"),
                secret.as_ref(),
                tls::Usage::Client,
                now,
            )
            .err()
        }
        _ => None,
    };
    if let Some(e) = &client_tls {
        warn!(reason = e.reason(), error = %e, "client TLS Secret refused");
        tikv_operator_core::objects::publish(
            ctx.kube.as_ref(),
            tikv_operator_core::objects::event(
                cluster,
                EventType::Warning,
                e.reason(),
                "CheckTLSSecret",
                e.to_string(),
            ),
        )
        .await?;
    }
    let status = plan_status(cluster, s.groups, s.pd, client_tls.as_ref(), now);
    patch_status_if_changed(
        ctx.kube.as_ref(),
        &key,
        cluster.status.as_ref(),
        &status,
        || key.to_string(),
    )
    .await?;
    let in_flight = status.id.is_none()
        || conditions::is_true(&status.common.conditions, condition::PROGRESSING);
    Ok(match ctx.policy.after_success(in_flight) {
        // A refused client Secret is polled (Secrets are not watched): a
        // fixed one is seen within `tls::RECHECK`.
        Requeue::After(d) if client_tls.is_some() => Requeue::After(d.min(tls::RECHECK)),
        r => r,
    })
}

#[cfg(test)]
mod tests;
