//! What in a rendered Pod needs the Pod recreated, and what can change in place.
//!
//! | change                                   | effect on a running Pod                 |
//! |------------------------------------------|-----------------------------------------|
//! | Pod spec (image/version, resources, ...) | recreated (one member at a time)        |
//! | `config`, `updateStrategy.config` unset or `Restart` | recreated                  |
//! | `config`, `updateStrategy.config: HotReload` | ConfigMap updated, Pod kept         |
//! | labels and annotations only              | patched in place, Pod kept              |
//! | volume size (`storage`)                  | PVC patched in place, Pod kept          |
//! | `core.tikv.org/restarted-at` on the group| recreated (a requested rolling restart) |
//!
//! The revision is a hash of exactly the parts in the "recreated" rows; a running
//! Pod whose revision differs from the rendered one is outdated.

use k8s_openapi::api::core::v1::Pod;
use serde_json::{Value, json};
use tikv_operator_api::labels;

use crate::content_hash;

/// The revision of a rendered Pod. `config_restarts` is false when the
/// component's `updateStrategy.config` is `HotReload`.
pub fn pod_revision(pod: &Pod, config_restarts: bool) -> String {
    let annotation = |key: &str| {
        pod.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(key))
            .map_or(Value::Null, |v| Value::String(v.clone()))
    };
    let spec = pod
        .spec
        .as_ref()
        .and_then(|s| serde_json::to_value(s).ok())
        .unwrap_or(Value::Null);
    content_hash(&json!({
        "spec": spec,
        "restartedAt": annotation(labels::RESTARTED_AT),
        "config": if config_restarts { annotation(labels::CONFIG_HASH) } else { Value::Null },
    }))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn pod(labels_: &[(&str, &str)], annotations: &[(&str, &str)], image: &str) -> Pod {
        serde_json::from_value(json!({
            "metadata": {
                "name": "p",
                "labels": labels_.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect::<std::collections::BTreeMap<_, _>>(),
                "annotations": annotations.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect::<std::collections::BTreeMap<_, _>>(),
            },
            "spec": {"containers": [{"name": "c", "image": image}]}
        }))
        .unwrap()
    }

    #[test]
    fn metadata_changes_keep_the_revision_spec_and_restart_requests_change_it() {
        let base = pod(&[("a", "1")], &[(labels::CONFIG_HASH, "c1")], "pd:v1");
        let r = pod_revision(&base, true);
        assert_eq!(
            r,
            pod_revision(
                &pod(
                    &[("a", "2")],
                    &[(labels::CONFIG_HASH, "c1"), ("x", "y")],
                    "pd:v1"
                ),
                true
            )
        );
        assert_ne!(
            r,
            pod_revision(
                &pod(&[("a", "1")], &[(labels::CONFIG_HASH, "c1")], "pd:v2"),
                true
            )
        );
        assert_ne!(
            r,
            pod_revision(
                &pod(
                    &[("a", "1")],
                    &[(labels::CONFIG_HASH, "c1"), (labels::RESTARTED_AT, "t")],
                    "pd:v1"
                ),
                true
            )
        );
    }

    #[test]
    fn a_config_change_restarts_unless_hot_reload() {
        let a = pod(&[], &[(labels::CONFIG_HASH, "c1")], "pd:v1");
        let b = pod(&[], &[(labels::CONFIG_HASH, "c2")], "pd:v1");
        assert_ne!(pod_revision(&a, true), pod_revision(&b, true));
        assert_eq!(pod_revision(&a, false), pod_revision(&b, false));
    }
}
