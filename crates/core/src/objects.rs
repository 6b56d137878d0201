//! Small helpers every reconciler uses on typed objects.

use kube::Resource;
use serde::Serialize;
use serde_json::Value;
use tikv_operator_api::labels;

use crate::{Desired, Error, EventSpec, EventType, KubeWriter, ObjectKey, Result};

/// A cached object as JSON, to compare a desired object against.
pub fn cached<K: Serialize>(obj: Option<&K>) -> Option<Value> {
    obj.and_then(|o| serde_json::to_value(o).ok())
}

/// The desired state of a typed object, for server-side apply.
pub fn desired<K: Resource<DynamicType = ()> + Serialize>(obj: &K) -> Result<Desired> {
    Desired::from_typed(obj)
}

/// Clock skew tolerated between a process's host and the Kubernetes API
/// server when judging whether the process was started by a given Pod.
pub const START_SKEW_SECONDS: i64 = 5;

/// Whether a process that reports having started at `started` (unix seconds)
/// belongs to the Pod created at `pod_created`: it did not start before the
/// Pod existed (less [`START_SKEW_SECONDS`]). After a Pod is replaced, the
/// old process may still answer for seconds (it shuts down; in some
/// environments the new Pod even gets the old Pod's IP at once): only its
/// start time tells it apart. An unknown start or creation time counts as
/// the Pod's own.
pub fn started_by_pod(
    started: Option<i64>,
    pod_created: Option<k8s_openapi::jiff::Timestamp>,
) -> bool {
    match (started, pod_created) {
        (Some(started), Some(created)) => {
            started.saturating_add(START_SKEW_SECONDS) >= created.as_second()
        }
        _ => true,
    }
}

/// How long a process must have run before its Pod is deleted for a restart.
/// After the restart the old process may still be reported for a moment (PD
/// keeps a store Up from its last heartbeats; a PD member may answer at its
/// DNS name or at a reused IP), and it is told apart from the new process only
/// by its start time ([`started_by_pod`], which tolerates
/// [`START_SKEW_SECONDS`] of clock skew). A process younger than that
/// tolerance would pass as the new Pod's, and the next instance would go while
/// this one is down. Twice the tolerance, plus the second the creation
/// timestamp truncates, keeps the old process recognisable.
pub const MIN_PROCESS_AGE_TO_RESTART: i64 = 2 * START_SKEW_SECONDS + 2;

/// Why a process that reports having started at `started` (unix seconds)
/// must not be restarted yet at `now`: it is younger than
/// [`MIN_PROCESS_AGE_TO_RESTART`]. An unknown start time holds nothing back:
/// no old process can then be mistaken for the new one.
pub fn too_young_to_restart(
    what: &str,
    started: Option<i64>,
    now: k8s_openapi::jiff::Timestamp,
) -> Option<String> {
    let age = now.as_second().saturating_sub(started?);
    (age < MIN_PROCESS_AGE_TO_RESTART).then(|| {
        format!(
            "the restart of {what} waits until its process has run {MIN_PROCESS_AGE_TO_RESTART}s \
             (it started {age}s ago; a younger one could not be told apart from its \
             replacement)"
        )
    })
}

/// An object's name (empty when unnamed).
pub fn name_of<K: Resource>(obj: &K) -> &str {
    obj.meta().name.as_deref().unwrap_or_default()
}

/// An Event about `obj`.
pub fn event<K: Resource<DynamicType = ()>>(
    obj: &K,
    type_: EventType,
    reason: &str,
    action: &str,
    note: String,
) -> Result<EventSpec> {
    Ok(EventSpec {
        regarding: ObjectKey::of(obj)?.reference(obj.meta().uid.as_deref()),
        type_,
        reason: reason.to_owned(),
        action: action.to_owned(),
        note,
    })
}

/// Publishes an Event. A failure is logged, never fatal: Events only inform,
/// and the API server refuses them in a namespace being deleted, where
/// finalizers must still go (found by e2e: a deleted namespace holding a
/// TiKV cluster stayed Terminating forever). Every reconciler publishes
/// through this one policy.
pub async fn publish(kube: &dyn KubeWriter, spec: Result<EventSpec>) -> Result<()> {
    let spec = spec?;
    if let Err(e) = kube.publish_event(&spec).await {
        tracing::warn!(reason = %spec.reason, error = %e, "cannot publish an Event; going on without it");
    }
    Ok(())
}

/// Whether `obj` carries the operator's finalizer ([`labels::FINALIZER`]).
pub fn has_finalizer<K: Resource>(obj: &K) -> bool {
    obj.meta()
        .finalizers
        .iter()
        .flatten()
        .any(|f| f == labels::FINALIZER)
}

/// Adds the operator's finalizer to `obj` (at `key`) unless it carries it.
pub async fn ensure_finalizer<K: Resource>(
    kube: &dyn KubeWriter,
    key: &ObjectKey,
    obj: &K,
) -> Result<()> {
    if has_finalizer(obj) {
        return Ok(());
    }
    kube.add_finalizer(key, labels::FINALIZER).await
}

/// Removes the operator's finalizer from the object at `key`: its cleanup is done.
pub async fn release_finalizer(kube: &dyn KubeWriter, key: &ObjectKey) -> Result<()> {
    kube.remove_finalizer(key, labels::FINALIZER).await
}

/// Writes `status` to the object at `key`; `what` names it in an error.
pub async fn patch_status<S: Serialize>(
    kube: &dyn KubeWriter,
    key: &ObjectKey,
    status: &S,
    what: impl FnOnce() -> String,
) -> Result<()> {
    let value = serde_json::to_value(status).map_err(|source| Error::Serialization {
        what: what(),
        source,
    })?;
    kube.patch_status(key, &value).await
}

/// Writes `status` to the object at `key` unless `current` (its status as
/// the watch cache holds it) already equals it; `what` names it in an error.
pub async fn patch_status_if_changed<S: Serialize + PartialEq>(
    kube: &dyn KubeWriter,
    key: &ObjectKey,
    current: Option<&S>,
    status: &S,
    what: impl FnOnce() -> String,
) -> Result<()> {
    if current == Some(status) {
        return Ok(());
    }
    patch_status(kube, key, status, what).await
}
