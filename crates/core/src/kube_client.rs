//! The production [`KubeWriter`]: a `kube::Client`.

use async_trait::async_trait;
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
}
