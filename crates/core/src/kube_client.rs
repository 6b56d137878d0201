//! The production [`KubeWriter`]: a `kube::Client`.

use async_trait::async_trait;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{DeleteParams, DynamicObject, Patch, PatchParams};
use kube::runtime::events::{Event, EventType as KubeEventType, Recorder, Reporter};
use kube::{Api, Client};
use serde_json::{Value, json};
use tikv_operator_api::labels;

use crate::error::{Error, Result};
use crate::kube_writer::{EventSpec, EventType, KubeWriter, ObjectKey};

/// [`KubeWriter`] over a Kubernetes client. Writes are server-side applies
/// with field manager [`labels::FIELD_MANAGER`]; finalizer edits read the
/// object once and write a merge patch guarded by its `resourceVersion`
/// (they happen once per object lifetime, so the extra read is cheap).
#[derive(Clone)]
pub struct KubeClientWriter {
    client: Client,
    recorder: Recorder,
    events: std::sync::Arc<EventDedup>,
}

/// How long a Warning Event that says exactly the same as one already
/// published (same object, reason and note) is held back: a reconcile that
/// waits or refuses reports the same Warning at every pass (every few
/// seconds), and each one would be a write to the API server. Normal Events
/// report actions and are always published.
pub const EVENT_REPEAT_WINDOW: std::time::Duration = std::time::Duration::from_secs(600);

/// Remembers recently published Events so that repeats within
/// [`EVENT_REPEAT_WINDOW`] are not published again.
#[derive(Debug, Default)]
pub struct EventDedup {
    recent: std::sync::Mutex<std::collections::HashMap<String, std::time::Instant>>,
}

impl EventDedup {
    /// Whether `event` should be published at `now` (and if so, remembers
    /// it). Entries older than the window are forgotten.
    pub fn admit(&self, event: &EventSpec, now: std::time::Instant) -> bool {
        if event.type_ != EventType::Warning {
            return true;
        }
        let r = &event.regarding;
        let key = format!(
            "{}/{}/{}/{}|{:?}|{}|{}",
            r.kind.as_deref().unwrap_or_default(),
            r.namespace.as_deref().unwrap_or_default(),
            r.name.as_deref().unwrap_or_default(),
            r.uid.as_deref().unwrap_or_default(),
            event.type_,
            event.reason,
            event.note
        );
        let mut recent = self
            .recent
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        recent.retain(|_, at| now.saturating_duration_since(*at) < EVENT_REPEAT_WINDOW);
        if recent.contains_key(&key) {
            return false;
        }
        recent.insert(key, now);
        true
    }
}

impl std::fmt::Debug for KubeClientWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeClientWriter").finish_non_exhaustive()
    }
}

impl KubeClientWriter {
    /// A writer using `client`; Events are reported by `reporter`
    /// (controller name and, usually, the operator's Pod name).
    pub fn new(client: Client, reporter: Reporter) -> Self {
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            events: std::sync::Arc::new(EventDedup::default()),
        }
    }

    fn api(&self, key: &ObjectKey) -> Api<DynamicObject> {
        let ar = key.api_resource();
        match &key.namespace {
            Some(ns) => Api::namespaced_with(self.client.clone(), ns, &ar),
            None => Api::all_with(self.client.clone(), &ar),
        }
    }

    fn patch_params() -> PatchParams {
        PatchParams::apply(labels::FIELD_MANAGER).force()
    }

    async fn edit_finalizers(
        &self,
        key: &ObjectKey,
        operation: &'static str,
        edit: impl Fn(&mut Vec<String>) -> bool + Send,
    ) -> Result<()> {
        let api = self.api(key);
        let Some(obj) = api
            .get_opt(&key.name)
            .await
            .map_err(|e| fail(operation, key, e))?
        else {
            return Ok(());
        };
        let mut finalizers = obj.metadata.finalizers.clone().unwrap_or_default();
        if !edit(&mut finalizers) {
            return Ok(());
        }
        let patch = json!({
            "metadata": {
                "finalizers": finalizers,
                "resourceVersion": obj.metadata.resource_version,
            }
        });
        match api
            .patch(&key.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(fail(operation, key, e)),
        }
    }
}

fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

fn fail(operation: &'static str, key: &ObjectKey, e: kube::Error) -> Error {
    Error::Kubernetes {
        operation,
        object: key.to_string(),
        source: Box::new(e),
    }
}

#[async_trait]
impl KubeWriter for KubeClientWriter {
    async fn apply(&self, key: &ObjectKey, object: &Value) -> Result<()> {
        self.api(key)
            .patch(&key.name, &Self::patch_params(), &Patch::Apply(object))
            .await
            .map(|_| ())
            .map_err(|e| fail("apply", key, e))
    }

    async fn delete(&self, key: &ObjectKey) -> Result<()> {
        match self
            .api(key)
            .delete(&key.name, &DeleteParams::background())
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(fail("delete", key, e)),
        }
    }

    async fn delete_exact(&self, key: &ObjectKey, uid: &str) -> Result<()> {
        let params = DeleteParams {
            preconditions: Some(kube::api::Preconditions {
                uid: Some(uid.to_owned()),
                resource_version: None,
            }),
            ..DeleteParams::background()
        };
        match self.api(key).delete(&key.name, &params).await {
            Ok(_) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            // Precondition failed: another object of that name now.
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
            Err(e) => Err(fail("delete", key, e)),
        }
    }

    async fn patch_status(&self, key: &ObjectKey, status: &Value) -> Result<()> {
        let body = json!({
            "apiVersion": key.api_version,
            "kind": key.kind,
            "status": status,
        });
        match self
            .api(key)
            .patch_status(&key.name, &Self::patch_params(), &Patch::Apply(&body))
            .await
        {
            Ok(_) => Ok(()),
            // The object went away after it was read from the cache: there
            // is no status left to report.
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
            Err(e) => Err(fail("patch_status", key, e)),
        }
    }

    async fn add_finalizer(&self, key: &ObjectKey, finalizer: &str) -> Result<()> {
        self.edit_finalizers(key, "add_finalizer", |list| {
            if list.iter().any(|f| f == finalizer) {
                false
            } else {
                list.push(finalizer.to_owned());
                true
            }
        })
        .await
    }

    async fn remove_finalizer(&self, key: &ObjectKey, finalizer: &str) -> Result<()> {
        self.edit_finalizers(key, "remove_finalizer", |list| {
            let before = list.len();
            list.retain(|f| f != finalizer);
            list.len() != before
        })
        .await
    }

    async fn publish_event(&self, event: &EventSpec) -> Result<()> {
        if !self.events.admit(event, std::time::Instant::now()) {
            return Ok(());
        }
        let ev = Event {
            type_: match event.type_ {
                EventType::Normal => KubeEventType::Normal,
                EventType::Warning => KubeEventType::Warning,
            },
            reason: event.reason.clone(),
            note: Some(event.note.clone()),
            action: event.action.clone(),
            secondary: None,
        };
        // Events are best-effort: the API server refuses them in a namespace
        // being deleted, and a refused Event must never block a reconcile
        // (finalizers would never be dropped). Logged instead.
        if let Err(e) = self.recorder.publish(&ev, &event.regarding).await {
            tracing::warn!(
                kind = event.regarding.kind.as_deref().unwrap_or_default(),
                name = event.regarding.name.as_deref().unwrap_or_default(),
                reason = %event.reason,
                error = %e,
                "could not publish an Event"
            );
        }
        Ok(())
    }

    async fn names_in_cluster(&self, kind: &ObjectKey, cluster: &str) -> Result<Vec<String>> {
        let list = self
            .api(kind)
            .list(&kube::api::ListParams::default())
            .await
            .map_err(|e| fail("list", kind, e))?;
        Ok(list
            .items
            .into_iter()
            .filter(|o| {
                o.data.pointer("/spec/cluster/name").and_then(Value::as_str) == Some(cluster)
            })
            .filter_map(|o| o.metadata.name)
            .collect())
    }

    async fn get_secret(&self, namespace: &str, name: &str) -> Result<Option<Secret>> {
        Api::<Secret>::namespaced(self.client.clone(), namespace)
            .get_opt(name)
            .await
            .map_err(|e| fail("get", &ObjectKey::new::<Secret>(Some(namespace), name), e))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use k8s_openapi::api::core::v1::ObjectReference;

    fn ev(name: &str, note: &str) -> EventSpec {
        EventSpec {
            regarding: ObjectReference {
                kind: Some("PD".into()),
                namespace: Some("ns".into()),
                name: Some(name.into()),
                uid: Some(format!("{name}-uid")),
                ..ObjectReference::default()
            },
            type_: EventType::Warning,
            reason: "QuorumAtRisk".into(),
            action: "RemoveMember".into(),
            note: note.into(),
        }
    }

    #[test]
    fn a_repeated_event_is_published_once_per_window() {
        let d = EventDedup::default();
        let t0 = std::time::Instant::now();
        assert!(d.admit(&ev("pd-a", "waits"), t0));
        for s in [5, 10, 300, 599] {
            assert!(!d.admit(&ev("pd-a", "waits"), t0 + std::time::Duration::from_secs(s)));
        }
        // Another note or another object is another Event.
        assert!(d.admit(&ev("pd-a", "waits for pd-b"), t0));
        assert!(d.admit(&ev("pd-b", "waits"), t0));
        // After the window, once more.
        assert!(d.admit(&ev("pd-a", "waits"), t0 + EVENT_REPEAT_WINDOW));
        // Normal Events report actions: always published.
        let mut normal = ev("pd-a", "member removed");
        normal.type_ = EventType::Normal;
        assert!(d.admit(&normal, t0));
        assert!(d.admit(&normal, t0));
    }
}
