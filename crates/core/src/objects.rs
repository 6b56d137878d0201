//! Small helpers every reconciler uses on typed objects.

use kube::Resource;
use serde::Serialize;
use serde_json::Value;

use crate::{Desired, EventSpec, EventType, ObjectKey, Result};

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
