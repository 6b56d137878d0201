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
//! [`Error`]s; the error policy is [`tikv_operator_core::RequeuePolicy::after_error`].
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
    GroupConditions, TemplateRevision, TlsSecrets, announce_refusal, apply_group_objects,
    is_tls_refusal, set_conditions, template_refusal, waiting_for_cluster,
};
use tikv_operator_core::component::naming::SuffixSource;
use tikv_operator_core::component::pods::{pod_available, pod_ready};
use tikv_operator_core::component::render as common;
use tikv_operator_core::component::spread::Spread;

pub use tikv_operator_core::Ctx;

/// What the PD layer needs to know about its Cluster.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
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
    /// The Cluster does not carry the operator's finalizer yet (its first
    /// reconcile adds it): nothing is created for it until it does, or a
    /// Cluster deleted at once would leave instances no deletion can finish
    /// (found by e2e: a PD created before the Cluster's finalizer was held by
    /// its own finalizer forever once the Cluster went).
    pub unclaimed: bool,
    /// The Cluster recorded a PD cluster id: PD was bootstrapped, new members join.
    pub pd_cluster_id_known: bool,
    /// `spec.revisionHistoryLimit`, defaulted.
    pub revision_history_limit: usize,
    /// `spec.tlsCluster.enabled`: the name of the Cluster's client TLS
    /// Secret (`spec.tlsCluster.clientSecretName`, defaulted). New members
    /// speak TLS; none is created or updated while this Secret or the
    /// group's is refused. `None`: plaintext.
    pub client_tls_secret: Option<String>,
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
                unclaimed: !has_finalizer(c),
                pd_cluster_id_known: c.status.as_ref().is_some_and(|s| s.id.is_some()),
                revision_history_limit: history::limit_of(c.spec.revision_history_limit),
                client_tls_secret: c.client_tls_secret(),
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

use k8s_openapi::jiff::Timestamp;
use tikv_operator_core::objects::{
    self, cached, desired, ensure_finalizer, event, has_finalizer, name_of,
    patch_status_if_changed, publish, release_finalizer, started_by_pod,
};

pub use tikv_operator_core::revision::Revisions;

/// The instance `i` as the group's current template renders it (same name,
/// topology, bootstrap members and TLS as it was created with).
fn as_the_group_renders_it(group: &PDGroup, i: &PD) -> PD {
    render::render_instance(
        group,
        &NewInstance {
            name: name_of(i).to_owned(),
            topology: i.spec.topology.clone(),
            bootstrap_members: render::bootstrap_members(i),
        },
        i.spec.tls_cluster,
    )
}

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
            let want = as_the_group_renders_it(group, i);
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
        let url = member_probe_url(i, &ip);
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

/// Why `name` must not be restarted yet: its process answers with a start
/// time less than [`objects::MIN_PROCESS_AGE_TO_RESTART`] before `now` (found by the
/// TLS rotation e2e test: a restart right after the Cluster became Ready
/// deleted two PD Pods 0.45 s apart). A member that does not answer is not
/// held back.
async fn too_young_to_restart(
    pd_api: &dyn PdApi,
    instances: &[PD],
    pods: &[Pod],
    name: &str,
    now: Timestamp,
) -> Option<String> {
    let instance = instances.iter().find(|i| name_of(*i) == name)?;
    let ip = pods
        .iter()
        .find(|p| name_of(*p) == names::pod(name) && p.metadata.deletion_timestamp.is_none())?
        .status
        .as_ref()?
        .pod_ip
        .clone()?;
    let started = pd_api
        .member_started(&member_probe_url(instance, &ip))
        .await
        .ok()?;
    objects::too_young_to_restart(name, started, now)
}

/// The URL a member is asked at whether it serves: its current Pod's IP
/// (its DNS name may still lead to the old process while it shuts down). A
/// member speaking TLS is asked at its DNS name instead, the name its
/// certificate covers (an IP is not one of them); the start time check
/// ([`started_by_pod`]) still tells an old process apart.
fn member_probe_url(pd: &PD, pod_ip: &str) -> String {
    if pd.spec.tls_cluster {
        render::member_client_url(pd)
    } else {
        format!("http://{pod_ip}:{}", render::ports(&pd.spec.template).0)
    }
}

mod groups;
mod instance;
pub use groups::{GroupSnapshot, reconcile_group};
pub use instance::{InstanceSnapshot, Rendered, reconcile_instance, render_instance_objects};

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// A member speaking TLS is asked at the name its certificate covers,
    /// never at its Pod IP (no certificate covers it) nor in plaintext.
    #[test]
    fn members_are_asked_at_a_url_they_answer_on() {
        let mut pd: PD = serde_json::from_value(serde_json::json!({
            "apiVersion": "core.tikv.org/v1alpha1",
            "kind": "PD",
            "metadata": {"name": "pd-abc", "namespace": "ns"},
            "spec": {
                "cluster": {"name": "basic"},
                "subdomain": "pd-pd-peer",
                "version": "v8.5.5",
                "volumes": [{"name": "data", "mounts": [{"type": "data"}], "storage": "1Gi"}]
            }
        }))
        .unwrap();
        assert_eq!(member_probe_url(&pd, "10.0.0.7"), "http://10.0.0.7:2379");
        pd.spec.tls_cluster = true;
        assert_eq!(
            member_probe_url(&pd, "10.0.0.7"),
            "https://pd-abc.pd-pd-peer.ns.svc:2379"
        );
    }

    #[test]
    fn a_cluster_asking_for_tls_names_its_client_secret() {
        let mut c: Cluster = serde_json::from_value(serde_json::json!({
            "apiVersion": "core.tikv.org/v1alpha1",
            "kind": "Cluster",
            "metadata": {"name": "basic", "namespace": "ns"},
            "spec": {}
        }))
        .unwrap();
        assert_eq!(ClusterFacts::from_cluster(Some(&c)).client_tls_secret, None);
        c.spec.tls_cluster = serde_json::from_value(serde_json::json!({"enabled": true})).unwrap();
        assert_eq!(
            ClusterFacts::from_cluster(Some(&c))
                .client_tls_secret
                .as_deref(),
            Some("basic-client-tls")
        );
        c.spec.tls_cluster = serde_json::from_value(
            serde_json::json!({"enabled": true, "clientSecretName": "mine"}),
        )
        .unwrap();
        assert_eq!(
            ClusterFacts::from_cluster(Some(&c))
                .client_tls_secret
                .as_deref(),
            Some("mine")
        );
    }
}
