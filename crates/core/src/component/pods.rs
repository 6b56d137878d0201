//! Pod readiness as every layer reads it.

use k8s_openapi::api::core::v1::Pod;

/// Whether a Pod is not terminating and its `Ready` condition is `True`.
pub fn pod_ready(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none()
        && pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Whether a Pod has been Ready for at least `min_ready_seconds` at `now`.
pub fn pod_available(pod: &Pod, min_ready_seconds: i64, now: k8s_openapi::jiff::Timestamp) -> bool {
    if !pod_ready(pod) {
        return false;
    }
    if min_ready_seconds <= 0 {
        return true;
    }
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
        .and_then(|c| c.last_transition_time.as_ref())
        .is_some_and(|t| now.as_second() - t.0.as_second() >= min_ready_seconds)
}
