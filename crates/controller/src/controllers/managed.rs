//! The `managed_objects` gauge: managed objects of one scope by kind and state.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::caches::Stores;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use tikv_operator_api::{FailoverPhase, PDGroup, TiKVGroup};

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

/// Failures recorded in groups' `status.failover` (each group's `total` and
/// the phases of its records), by phase, and the replacements recorded.
fn count_failover(
    groups: impl IntoIterator<Item = (i32, Vec<FailoverPhase>)>,
) -> (HashMap<String, i64>, i64) {
    let mut phases: HashMap<String, i64> = HashMap::new();
    let mut total = 0_i64;
    for (t, records) in groups {
        total += i64::from(t.max(0));
        for p in records {
            *phases.entry(format!("{p:?}")).or_default() += 1;
        }
    }
    (phases, total)
}

fn tikv_failover(g: &TiKVGroup) -> Option<(i32, Vec<FailoverPhase>)> {
    let f = g.status.as_ref()?.failover.as_ref()?;
    Some((f.total, f.failures.iter().map(|r| r.phase).collect()))
}

fn pd_failover(g: &PDGroup) -> Option<(i32, Vec<FailoverPhase>)> {
    let f = g.status.as_ref()?.failover.as_ref()?;
    Some((f.total, f.failures.iter().map(|r| r.phase).collect()))
}

/// One scope's last counts of a gauge family that disjoint scopes share:
/// each scope adds only its own change.
struct Deltas<K> {
    last: HashMap<K, i64>,
}

impl<K: Clone + Eq + std::hash::Hash + Ord> Deltas<K> {
    fn new() -> Self {
        Self {
            last: HashMap::new(),
        }
    }

    /// Calls `add(key, delta)` for every key whose count changed since the
    /// last call.
    fn apply(&mut self, now: HashMap<K, i64>, mut add: impl FnMut(&K, i64)) {
        let keys: BTreeSet<K> = self.last.keys().chain(now.keys()).cloned().collect();
        for k in keys {
            let delta = now.get(&k).copied().unwrap_or(0) - self.last.get(&k).copied().unwrap_or(0);
            if delta != 0 {
                add(&k, delta);
            }
        }
        self.last = now;
    }
}

/// Keeps the `managed_objects` and failover gauges in step with one scope's
/// caches. Scopes are disjoint namespaces, so each applies only its own
/// deltas.
pub(super) async fn report_managed(stores: Stores, metrics: Arc<Metrics>) {
    let mut managed = Deltas::new();
    let mut tikv_phases = Deltas::new();
    let mut pd_phases = Deltas::new();
    let mut totals = Deltas::new();
    let phase_gauge = |family: &Family<FailoverLabels, Gauge>, phase: &String, delta: i64| {
        family
            .get_or_create(&FailoverLabels {
                phase: phase.clone(),
            })
            .inc_by(delta);
    };
    loop {
        let tikv = stores.tikv_groups.state();
        let (phases, tikv_total) = count_failover(tikv.iter().filter_map(|g| tikv_failover(g)));
        tikv_phases.apply(phases, |k, d| phase_gauge(&metrics.failover_stores, k, d));
        let pd = stores.pd_groups.state();
        let (phases, pd_total) = count_failover(pd.iter().filter_map(|g| pd_failover(g)));
        pd_phases.apply(phases, |k, d| {
            phase_gauge(&metrics.pd_failover_members, k, d)
        });
        totals.apply(
            HashMap::from([("tikv", tikv_total), ("pd", pd_total)]),
            |k, d| {
                let gauge = match *k {
                    "pd" => &metrics.pd_failover_replacements,
                    _ => &metrics.failover_replacements,
                };
                gauge.inc_by(d);
            },
        );
        managed.apply(count_managed(&stores), |k, d| {
            metrics
                .managed
                .get_or_create(&ManagedLabels {
                    kind: k.0.to_owned(),
                    state: k.1.to_owned(),
                })
                .inc_by(d);
        });
        tokio::time::sleep(std::time::Duration::from_secs(10)).await;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

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
        let (phases, total) = count_failover([&a, &b, &c].into_iter().filter_map(tikv_failover));
        assert_eq!(total, 3);
        assert_eq!(phases.get("Replacing"), Some(&1));
        assert_eq!(phases.get("Completed"), Some(&1));
        assert_eq!(phases.get("Refused"), Some(&1));
        assert_eq!(phases.get("Observing"), None);
    }

    #[test]
    fn pd_failover_records_are_counted_like_tikv_ones() {
        let g: PDGroup = serde_json::from_value(serde_json::json!({
            "apiVersion": "core.tikv.org/v1alpha1",
            "kind": "PDGroup",
            "metadata": {"name": "pd", "namespace": "ns"},
            "spec": {"cluster": {"name": "c"}, "replicas": 3,
                     "template": {"spec": {"version": "v8.5.5",
                        "volumes": [{"name": "data", "mounts": [{"type": "data"}], "storage": "1Gi"}]}}},
            "status": {"failover": {"total": 1, "failures": [
                {"instance": "pd-a", "memberId": "7", "since": "2026-01-01T00:00:00Z",
                 "phase": "Refused", "lastTransitionTime": "2026-01-01T00:00:00Z"},
                {"instance": "pd-b", "memberId": "8", "since": "2026-01-01T00:00:00Z",
                 "phase": "Completed", "lastTransitionTime": "2026-01-01T00:00:00Z"}]}},
        }))
        .unwrap();
        let (phases, total) = count_failover(pd_failover(&g));
        assert_eq!(total, 1);
        assert_eq!(phases.get("Refused"), Some(&1));
        assert_eq!(phases.get("Completed"), Some(&1));
    }

    #[test]
    fn deltas_add_only_what_changed_and_take_back_what_went() {
        let mut d = Deltas::new();
        let mut seen = Vec::new();
        d.apply(HashMap::from([("a", 2), ("b", 1)]), |k, n| {
            seen.push((*k, n))
        });
        seen.sort_unstable();
        assert_eq!(seen, vec![("a", 2), ("b", 1)]);
        seen.clear();
        d.apply(HashMap::from([("a", 2), ("c", 3)]), |k, n| {
            seen.push((*k, n))
        });
        seen.sort_unstable();
        assert_eq!(seen, vec![("b", -1), ("c", 3)]);
    }
}
