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

/// The revision a rendered Pod carries, and which running Pods count as
/// running it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodRevision {
    /// The rendered Pod's revision.
    pub revision: String,
    /// Another revision a running Pod may carry and still be current: under
    /// `HotReload`, a Pod created under `Restart` (its revision counted its
    /// config) whose everything-but-config matches. Switching to HotReload,
    /// even together with a config change, restarts nothing; switching back
    /// to Restart restarts once, so every member surely runs the
    /// configuration it shows.
    pub also_current: Option<String>,
}

impl PodRevision {
    /// Computes the revision of the rendered `pod`, stamps it into the Pod's
    /// [`labels::INSTANCE_REVISION`] annotation and returns it. `hot_reload`:
    /// the component's `updateStrategy.config` is `HotReload`; `running` is
    /// the Pod running now, if any.
    pub fn stamp(pod: &mut Pod, hot_reload: bool, running: Option<&Pod>) -> Self {
        let revision = pod_revision(pod, !hot_reload);
        let running_config = running
            .and_then(|p| p.metadata.annotations.as_ref())
            .and_then(|a| a.get(labels::CONFIG_HASH));
        let also_current = match (hot_reload, running_config) {
            (true, Some(running)) => {
                let mut as_running = pod.clone();
                as_running
                    .metadata
                    .annotations
                    .get_or_insert_default()
                    .insert(labels::CONFIG_HASH.to_owned(), running.clone());
                Some(pod_revision(&as_running, true))
            }
            _ => None,
        };
        pod.metadata
            .annotations
            .get_or_insert_default()
            .insert(labels::INSTANCE_REVISION.to_owned(), revision.clone());
        Self {
            revision,
            also_current,
        }
    }

    /// Whether `running` runs this rendering (only labels, annotations or,
    /// under HotReload, the configuration may differ).
    pub fn runs(&self, running: Option<&Pod>) -> bool {
        running
            .and_then(|p| p.metadata.annotations.as_ref())
            .and_then(|a| a.get(labels::INSTANCE_REVISION))
            .is_some_and(|r| *r == self.revision || self.also_current.as_ref() == Some(r))
    }
}

/// Where a group's instances are against its template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revisions {
    /// The template's revision (`updateRevision`).
    pub update: String,
    /// Live instances rendered from it whose Pod runs it.
    pub updated: i32,
    /// Live instances.
    pub live: i32,
    /// Every one of `replicas` instances is updated.
    pub all_updated: bool,
}

impl Revisions {
    /// Counts `currency` (for every live instance: whether its running Pod
    /// runs its current rendering, `None` without a running Pod) against a
    /// group of `replicas` whose template revision is `update`.
    pub fn count<'a>(
        update: String,
        replicas: i32,
        currency: impl IntoIterator<Item = &'a Option<bool>>,
    ) -> Self {
        let (mut live, mut updated) = (0_i32, 0_i32);
        for c in currency {
            live = live.saturating_add(1);
            if *c == Some(true) {
                updated = updated.saturating_add(1);
            }
        }
        Self {
            all_updated: updated == live && live == replicas.max(0),
            update,
            updated,
            live,
        }
    }

    /// Instances still on `current` (`currentReplicas`): all updated ones
    /// when the update is complete, the others meanwhile.
    pub fn current_replicas(&self, current: Option<&str>) -> i32 {
        if self.all_updated || current == Some(self.update.as_str()) {
            self.updated
        } else {
            self.live - self.updated
        }
    }
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

    #[test]
    fn hot_reload_keeps_a_pod_created_under_restart_current() {
        let running = pod(&[], &[(labels::CONFIG_HASH, "c1")], "pd:v1");
        let mut running = running;
        PodRevision::stamp(&mut running, false, None);
        let mut want = pod(&[], &[(labels::CONFIG_HASH, "c2")], "pd:v1");
        // Under Restart, the config change makes it outdated.
        assert!(!PodRevision::stamp(&mut want.clone(), false, Some(&running)).runs(Some(&running)));
        // Under HotReload it is current; with another image it is not.
        assert!(PodRevision::stamp(&mut want, true, Some(&running)).runs(Some(&running)));
        let mut other = pod(&[], &[(labels::CONFIG_HASH, "c2")], "pd:v2");
        assert!(!PodRevision::stamp(&mut other, true, Some(&running)).runs(Some(&running)));
        assert!(!PodRevision::stamp(&mut other, true, None).runs(None));
    }

    #[test]
    fn revisions_count_updated_and_current_replicas() {
        let r = Revisions::count("new".into(), 3, &[Some(true), Some(false), None]);
        assert_eq!((r.live, r.updated, r.all_updated), (3, 1, false));
        assert_eq!(r.current_replicas(Some("old")), 2);
        let done = Revisions::count("new".into(), 3, &[Some(true); 3]);
        assert!(done.all_updated);
        assert_eq!(done.current_replicas(Some("old")), 3);
        // Fewer live instances than replicas: not done.
        assert!(!Revisions::count("new".into(), 3, &[Some(true); 2]).all_updated);
    }
}
