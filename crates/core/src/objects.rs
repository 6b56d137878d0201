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
