//! The `managed_objects` gauge: managed objects of one scope by kind and state.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::caches::Stores;
use crate::metrics::{ManagedLabels, Metrics};

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

/// Keeps the `managed_objects` gauge in step with one scope's caches. Scopes
/// are disjoint namespaces, so each applies only its own deltas.
pub(super) async fn report_managed(stores: Stores, metrics: Arc<Metrics>) {
    let mut last: HashMap<(&'static str, &'static str), i64> = HashMap::new();
    loop {
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
