//! The `managed_objects` gauge: managed objects of one scope by kind and state.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::caches::Stores;
use crate::metrics::{FailoverLabels, ManagedLabels, Metrics};

/// State of a managed object for the `managed_objects` gauge.
fn state_of(
    meta: &ObjectMeta,
    conditions: Option<&[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition]>,
) -> &'static str {
    if meta.deletion_timestamp.is_some() {
        "Deleting"
    } else if conditions.is_some_and(|c| tikv_operator_core::conditions::is_true(c, "Ready")) {
        "Ready"
    } else {
        "NotReady"
    }
}

/// Counts the managed objects of one scope by kind and state.
fn count_managed(stores: &Stores) -> HashMap<(&'static str, &'static str), i64> {
    let mut out: HashMap<(&'static str, &'static str), i64> = HashMap::new();
    for c in stores.clusters.state() {
        let st = c.status.as_ref().map(|s| s.common.conditions.as_slice());
        *out.entry(("Cluster", state_of(&c.metadata, st)))
            .or_default() += 1;
    }
    for i in stores.pds.state() {
        let st = i.status.as_ref().map(|s| s.common.conditions.as_slice());
        *out.entry(("PD", state_of(&i.metadata, st))).or_default() += 1;
    }
    for i in stores.tikvs.state() {
        let st = i.status.as_ref().map(|s| s.common.conditions.as_slice());
        *out.entry(("TiKV", state_of(&i.metadata, st))).or_default() += 1;
    }
    out
}

/// Failed stores recorded in the TiKVGroups' `status.failover`, by phase,
/// and the replacements they recorded.
fn count_failover<'a>(
    groups: impl IntoIterator<Item = &'a tikv_operator_api::TiKVGroup>,
) -> (HashMap<String, i64>, i64) {
    let mut phases: HashMap<String, i64> = HashMap::new();
    let mut total = 0_i64;
    for g in groups {
        let Some(f) = g.status.as_ref().and_then(|s| s.failover.as_ref()) else {
            continue;
        };
        total += i64::from(f.total.max(0));
        for r in &f.failures {
            *phases.entry(format!("{:?}", r.phase)).or_default() += 1;
        }
    }
    (phases, total)
}

/// Keeps the `managed_objects` gauge in step with one scope's caches. Scopes
/// are disjoint namespaces, so each applies only its own deltas.
pub(super) async fn report_managed(stores: Stores, metrics: Arc<Metrics>) {
    let mut last: HashMap<(&'static str, &'static str), i64> = HashMap::new();
    let mut last_phases: HashMap<String, i64> = HashMap::new();
    let mut last_total = 0_i64;
    loop {
        let groups = stores.tikv_groups.state();
        let (phases, total) = count_failover(groups.iter().map(AsRef::as_ref));
        let keys: BTreeSet<String> = last_phases.keys().chain(phases.keys()).cloned().collect();
        for k in keys {
            let delta =
                phases.get(&k).copied().unwrap_or(0) - last_phases.get(&k).copied().unwrap_or(0);
            if delta != 0 {
                metrics
                    .failover_stores
                    .get_or_create(&FailoverLabels { phase: k })
                    .inc_by(delta);
            }
        }
        metrics.failover_replacements.inc_by(total - last_total);
        last_phases = phases;
        last_total = total;
        let now = count_managed(&stores);
        let keys: BTreeSet<(&'static str, &'static str)> =
            last.keys().chain(now.keys()).copied().collect();
        for k in keys {
            let delta = now.get(&k).copied().unwrap_or(0) - last.get(&k).copied().unwrap_or(0);
            if delta != 0 {
                metrics
                    .managed
                    .get_or_create(&ManagedLabels {
                        kind: k.0.to_owned(),
                        state: k.1.to_owned(),
                    })
                    .inc_by(delta);
            }
        }
        last = now;
        tokio::time::sleep(std::time::Duration::from_secs(10)).await;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use tikv_operator_api::TiKVGroup;

    fn group(status: serde_json::Value) -> TiKVGroup {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "core.tikv.org/v1alpha1",
            "kind": "TiKVGroup",
            "metadata": {"name": "kv", "namespace": "ns"},
            "spec": {"cluster": {"name": "c"}, "replicas": 3,
                     "template": {"spec": {"version": "v8.5.5",
                        "volumes": [{"name": "data", "mounts": [{"type": "data"}], "storage": "1Gi"}]}}},
            "status": status,
        }))
        .unwrap()
    }

    #[test]
    fn failover_gauges_count_phases_and_recorded_replacements() {
        let failure = |phase: &str| {
            serde_json::json!({"instance": "kv-1", "storeId": "1", "since": "2026-01-01T00:00:00Z",
                "storeState": "Down", "phase": phase, "lastTransitionTime": "2026-01-01T00:00:00Z"})
        };
        let a = group(serde_json::json!({"failover": {"total": 2,
            "failures": [failure("Replacing"), failure("Completed")]}}));
        let b = group(serde_json::json!({"failover": {"total": 1,
            "failures": [failure("Refused")]}}));
        let c = group(serde_json::json!({}));
        let (phases, total) = count_failover([&a, &b, &c]);
        assert_eq!(total, 3);
        assert_eq!(phases.get("Replacing"), Some(&1));
        assert_eq!(phases.get("Completed"), Some(&1));
        assert_eq!(phases.get("Refused"), Some(&1));
        assert_eq!(phases.get("Observing"), None);
    }
}
