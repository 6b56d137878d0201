//! In-memory fakes of the side-effect traits, for reconciler tests (feature `fake`).

pub mod pki;

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::clock::Clock;
use crate::error::{Error, Result};
use crate::kube_writer::{EventSpec, KubeWriter, ObjectKey};

/// The [`KubeWriter`] method a call or an injected error refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[allow(missing_docs)]
pub enum KubeOp {
    Apply,
    Delete,
    PatchStatus,
    AddFinalizer,
    RemoveFinalizer,
    PublishEvent,
    GetSecret,
    NamesInCluster,
}

/// One recorded call of [`FakeKube`].
#[derive(Debug, Clone, PartialEq)]
pub enum KubeCall {
    /// `apply` with the body sent.
    Apply(ObjectKey, Value),
    /// `delete`.
    Delete(ObjectKey),
    /// `patch_status` with the status sent.
    PatchStatus(ObjectKey, Value),
    /// `add_finalizer`.
    AddFinalizer(ObjectKey, String),
    /// `remove_finalizer`.
    RemoveFinalizer(ObjectKey, String),
    /// `publish_event`.
    PublishEvent(EventSpec),
    /// `get_secret` (the Secret's key).
    GetSecret(ObjectKey),
    /// `names_in_cluster` (the kind's key) and the Cluster's name.
    NamesInCluster(ObjectKey, String),
}

impl KubeCall {
    /// The method this call was.
    pub fn op(&self) -> KubeOp {
        match self {
            Self::Apply(..) => KubeOp::Apply,
            Self::Delete(..) => KubeOp::Delete,
            Self::PatchStatus(..) => KubeOp::PatchStatus,
            Self::AddFinalizer(..) => KubeOp::AddFinalizer,
            Self::RemoveFinalizer(..) => KubeOp::RemoveFinalizer,
            Self::PublishEvent(..) => KubeOp::PublishEvent,
            Self::GetSecret(..) => KubeOp::GetSecret,
            Self::NamesInCluster(..) => KubeOp::NamesInCluster,
        }
    }

    /// The object the call was about (`None` for events).
    pub fn key(&self) -> Option<&ObjectKey> {
        match self {
            Self::Apply(k, _)
            | Self::Delete(k)
            | Self::PatchStatus(k, _)
            | Self::AddFinalizer(k, _)
            | Self::RemoveFinalizer(k, _)
            | Self::GetSecret(k)
            | Self::NamesInCluster(k, _) => Some(k),
            Self::PublishEvent(_) => None,
        }
    }
}

#[derive(Debug, Default)]
struct State {
    objects: BTreeMap<ObjectKey, Value>,
    calls: Vec<KubeCall>,
    injected: VecDeque<(KubeOp, String)>,
    next_uid: u64,
}

/// An in-memory API server: applies, deletes (honouring finalizers with a
/// `deletionTimestamp`), status patches and finalizer edits change stored
/// objects, which tests read back as the "watch cache". Every call is
/// recorded. Clones share state.
#[derive(Debug, Clone, Default)]
pub struct FakeKube {
    state: Arc<Mutex<State>>,
}

fn finalizers(obj: &Value) -> Vec<String> {
    obj.pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

fn set_finalizers(obj: &mut Value, list: Vec<String>) {
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        if list.is_empty() {
            meta.remove("finalizers");
        } else {
            meta.insert(
                "finalizers".into(),
                Value::Array(list.into_iter().map(Value::String).collect()),
            );
        }
    }
}

fn is_deleting(obj: &Value) -> bool {
    obj.pointer("/metadata/deletionTimestamp").is_some()
}

impl FakeKube {
    /// An empty fake.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn enter(&self, call: KubeCall) -> Result<MutexGuard<'_, State>> {
        let mut s = self.lock();
        let op = call.op();
        let object = call.key().map(ToString::to_string).unwrap_or_default();
        s.calls.push(call);
        if let Some(pos) = s.injected.iter().position(|(o, _)| *o == op)
            && let Some((_, message)) = s.injected.remove(pos)
        {
            return Err(Error::Kubernetes {
                operation: "fake",
                object,
                source: message.into(),
            });
        }
        Ok(s)
    }

    /// Stores an object as if it existed (test setup; no call recorded).
    pub fn insert(&self, key: ObjectKey, object: Value) {
        self.lock().objects.insert(key, object);
    }

    /// Removes an object as if someone else deleted it (test setup; no
    /// call recorded, no finalizer honoured).
    pub fn remove(&self, key: &ObjectKey) -> Option<Value> {
        self.lock().objects.remove(key)
    }

    /// The stored object, as a watch cache would hold it.
    pub fn get(&self, key: &ObjectKey) -> Option<Value> {
        self.lock().objects.get(key).cloned()
    }

    /// The stored object, deserialized.
    pub fn get_typed<K: DeserializeOwned>(&self, key: &ObjectKey) -> Option<K> {
        self.get(key).and_then(|v| serde_json::from_value(v).ok())
    }

    /// Every stored object of `kind` in `namespace`, deserialized, by name.
    pub fn list<K: DeserializeOwned>(&self, kind: &str, namespace: &str) -> Vec<K> {
        self.lock()
            .objects
            .iter()
            .filter(|(k, _)| k.kind == kind && k.namespace.as_deref() == Some(namespace))
            .filter_map(|(_, v)| serde_json::from_value(v.clone()).ok())
            .collect()
    }

    /// Every call so far, in order.
    pub fn calls(&self) -> Vec<KubeCall> {
        self.lock().calls.clone()
    }

    /// Forgets the recorded calls.
    pub fn clear_calls(&self) {
        self.lock().calls.clear();
    }

    /// The next call of `op` fails (once) with a Kubernetes error.
    pub fn fail_next(&self, op: KubeOp, message: &str) {
        self.lock().injected.push_back((op, message.to_owned()));
    }

    /// Stores the Secret `name` in `namespace` with `data` (test setup; no
    /// call recorded), as [`KubeWriter::get_secret`] reads it.
    pub fn insert_secret(&self, namespace: &str, name: &str, data: &[(&str, &[u8])]) {
        let secret = Secret {
            metadata: kube::api::ObjectMeta {
                name: Some(name.to_owned()),
                namespace: Some(namespace.to_owned()),
                ..Default::default()
            },
            data: Some(
                data.iter()
                    .map(|(k, v)| ((*k).to_owned(), k8s_openapi::ByteString(v.to_vec())))
                    .collect(),
            ),
            ..Secret::default()
        };
        self.insert(
            ObjectKey::new::<Secret>(Some(namespace), name),
            serde_json::to_value(&secret).unwrap_or_default(),
        );
    }

    /// Events published so far.
    pub fn events(&self) -> Vec<EventSpec> {
        self.lock()
            .calls
            .iter()
            .filter_map(|c| match c {
                KubeCall::PublishEvent(e) => Some(e.clone()),
                _ => None,
            })
            .collect()
    }
}

#[async_trait]
impl KubeWriter for FakeKube {
    async fn apply(&self, key: &ObjectKey, object: &Value) -> Result<()> {
        let mut s = self.enter(KubeCall::Apply(key.clone(), object.clone()))?;
        s.next_uid += 1;
        let uid = format!("uid-{}", s.next_uid);
        let mut new = object.clone();
        match s.objects.get(key) {
            Some(old) => {
                // Server-managed fields survive an apply.
                for ptr in [
                    "/metadata/uid",
                    "/metadata/deletionTimestamp",
                    "/metadata/creationTimestamp",
                ] {
                    if let Some(v) = old.pointer(ptr).cloned()
                        && let Some(meta) = new.get_mut("metadata").and_then(Value::as_object_mut)
                    {
                        meta.insert(ptr.trim_start_matches("/metadata/").to_owned(), v);
                    }
                }
                if let Some(status) = old.get("status").cloned()
                    && let Some(map) = new.as_object_mut()
                {
                    map.insert("status".into(), status);
                }
            }
            None => {
                if let Some(meta) = new.get_mut("metadata").and_then(Value::as_object_mut) {
                    meta.insert("uid".into(), Value::String(uid));
                }
            }
        }
        s.objects.insert(key.clone(), new);
        Ok(())
    }

    async fn delete(&self, key: &ObjectKey) -> Result<()> {
        let mut s = self.enter(KubeCall::Delete(key.clone()))?;
        let Some(obj) = s.objects.get_mut(key) else {
            return Ok(());
        };
        if finalizers(obj).is_empty() {
            s.objects.remove(key);
        } else if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.entry("deletionTimestamp")
                .or_insert_with(|| Value::String("2026-01-01T00:00:00Z".into()));
        }
        Ok(())
    }

    async fn delete_exact(&self, key: &ObjectKey, uid: &str) -> Result<()> {
        let same = self
            .get(key)
            .is_some_and(|o| o.pointer("/metadata/uid").and_then(Value::as_str) == Some(uid));
        if !same {
            // Logged like a delete that found another object: nothing happens.
            drop(self.enter(KubeCall::Delete(key.clone()))?);
            return Ok(());
        }
        self.delete(key).await
    }

    async fn patch_status(&self, key: &ObjectKey, status: &Value) -> Result<()> {
        let mut s = self.enter(KubeCall::PatchStatus(key.clone(), status.clone()))?;
        let obj = s.objects.get_mut(key).ok_or_else(|| Error::Kubernetes {
            operation: "patch_status",
            object: key.to_string(),
            source: "not found".into(),
        })?;
        if let Some(map) = obj.as_object_mut() {
            map.insert("status".into(), status.clone());
        }
        Ok(())
    }

    async fn add_finalizer(&self, key: &ObjectKey, finalizer: &str) -> Result<()> {
        let mut s = self.enter(KubeCall::AddFinalizer(key.clone(), finalizer.to_owned()))?;
        let obj = s.objects.get_mut(key).ok_or_else(|| Error::Kubernetes {
            operation: "add_finalizer",
            object: key.to_string(),
            source: "not found".into(),
        })?;
        let mut list = finalizers(obj);
        if !list.iter().any(|f| f == finalizer) {
            list.push(finalizer.to_owned());
        }
        set_finalizers(obj, list);
        Ok(())
    }

    async fn remove_finalizer(&self, key: &ObjectKey, finalizer: &str) -> Result<()> {
        let mut s = self.enter(KubeCall::RemoveFinalizer(key.clone(), finalizer.to_owned()))?;
        let Some(obj) = s.objects.get_mut(key) else {
            return Ok(());
        };
        let list: Vec<String> = finalizers(obj)
            .into_iter()
            .filter(|f| f != finalizer)
            .collect();
        let gone = list.is_empty() && is_deleting(obj);
        set_finalizers(obj, list);
        if gone {
            s.objects.remove(key);
        }
        Ok(())
    }

    async fn publish_event(&self, event: &EventSpec) -> Result<()> {
        let _s = self.enter(KubeCall::PublishEvent(event.clone()))?;
        Ok(())
    }

    async fn names_in_cluster(&self, kind: &ObjectKey, cluster: &str) -> Result<Vec<String>> {
        let s = self.enter(KubeCall::NamesInCluster(kind.clone(), cluster.to_owned()))?;
        Ok(s.objects
            .iter()
            .filter(|(k, o)| {
                k.api_version == kind.api_version
                    && k.kind == kind.kind
                    && k.namespace == kind.namespace
                    && o.pointer("/spec/cluster/name").and_then(Value::as_str) == Some(cluster)
            })
            .map(|(k, _)| k.name.clone())
            .collect())
    }

    async fn get_secret(&self, namespace: &str, name: &str) -> Result<Option<Secret>> {
        let key = ObjectKey::new::<Secret>(Some(namespace), name);
        let s = self.enter(KubeCall::GetSecret(key.clone()))?;
        s.objects
            .get(&key)
            .map(|v| {
                serde_json::from_value(v.clone()).map_err(|source| Error::Serialization {
                    what: key.to_string(),
                    source,
                })
            })
            .transpose()
    }
}

/// A clock that moves only when told to. Clones share the time.
#[derive(Debug, Clone)]
pub struct FakeClock {
    now: Arc<Mutex<Timestamp>>,
}

impl FakeClock {
    /// A clock showing `start`.
    pub fn new(start: Timestamp) -> Self {
        Self {
            now: Arc::new(Mutex::new(start)),
        }
    }

    /// Moves the clock forward.
    pub fn advance(&self, by: Duration) {
        let mut now = self
            .now
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let by = SignedDuration::try_from(by).unwrap_or(SignedDuration::MAX);
        *now = now.checked_add(by).unwrap_or(Timestamp::MAX);
    }
}

impl Default for FakeClock {
    fn default() -> Self {
        Self::new(Timestamp::UNIX_EPOCH)
    }
}

impl Clock for FakeClock {
    fn now(&self) -> Timestamp {
        *self
            .now
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::kube_writer::{ApplyOutcome, Desired};
    use k8s_openapi::api::core::v1::ConfigMap;
    use tikv_operator_api::labels;

    fn cm(value: &str) -> Desired {
        Desired::from_typed(&ConfigMap {
            metadata: kube::api::ObjectMeta {
                name: Some("c".into()),
                namespace: Some("ns".into()),
                ..Default::default()
            },
            data: Some([("k".to_owned(), value.to_owned())].into()),
            ..Default::default()
        })
        .unwrap()
    }

    #[tokio::test]
    async fn apply_if_changed_skips_when_the_cache_matches() {
        let kube = FakeKube::new();
        let d = cm("1");
        assert_eq!(
            kube.apply_if_changed(&d, None).await.unwrap(),
            ApplyOutcome::Applied
        );
        let cached = kube.get(&d.key).unwrap();
        // The server added a uid; still unchanged.
        assert!(cached.pointer("/metadata/uid").is_some());
        assert_eq!(
            kube.apply_if_changed(&d, Some(&cached)).await.unwrap(),
            ApplyOutcome::Unchanged
        );
        assert_eq!(kube.calls().len(), 1);
        // A changed desired object is written.
        assert_eq!(
            kube.apply_if_changed(&cm("2"), Some(&cached))
                .await
                .unwrap(),
            ApplyOutcome::Applied
        );
        // Someone edited a field we own: written again.
        let mut drifted = kube.get(&d.key).unwrap();
        drifted["data"]["k"] = "edited".into();
        assert_eq!(
            kube.apply_if_changed(&cm("2"), Some(&drifted))
                .await
                .unwrap(),
            ApplyOutcome::Applied
        );
        assert_eq!(kube.calls().len(), 3);
    }

    #[tokio::test]
    async fn removed_fields_are_detected_through_the_hash() {
        let kube = FakeKube::new();
        let mut with_label = cm("1");
        with_label.object["metadata"]["labels"] = serde_json::json!({"extra": "x"});
        kube.apply_if_changed(&with_label, None).await.unwrap();
        let cached = kube.get(&with_label.key).unwrap();
        // Without the label, the desired object is still contained in the
        // cached one, but its hash differs: the apply must happen so that SSA
        // removes the label.
        let without = cm("1");
        assert!(crate::contains_desired(&without.object, &cached));
        assert_eq!(
            kube.apply_if_changed(&without, Some(&cached))
                .await
                .unwrap(),
            ApplyOutcome::Applied
        );
        let stored = kube.get(&without.key).unwrap();
        assert!(stored.pointer("/metadata/labels/extra").is_none());
        assert!(
            stored
                .pointer(&format!(
                    "/metadata/annotations/{}",
                    labels::APPLIED_HASH.replace('/', "~1")
                ))
                .is_some()
        );
    }

    #[tokio::test]
    async fn delete_honours_finalizers_and_injected_errors_surface() {
        let kube = FakeKube::new();
        let d = cm("1");
        kube.apply(&d.key, &d.object).await.unwrap();
        kube.add_finalizer(&d.key, labels::FINALIZER).await.unwrap();
        kube.delete(&d.key).await.unwrap();
        let obj = kube.get(&d.key).unwrap();
        assert!(obj.pointer("/metadata/deletionTimestamp").is_some());
        kube.remove_finalizer(&d.key, labels::FINALIZER)
            .await
            .unwrap();
        assert!(kube.get(&d.key).is_none());
        // Deleting what is gone is fine.
        kube.delete(&d.key).await.unwrap();
        kube.fail_next(KubeOp::Apply, "conflict");
        let err = kube.apply(&d.key, &d.object).await.unwrap_err();
        assert_eq!(err.category(), "kubernetes");
        assert!(kube.get(&d.key).is_none());
    }

    #[test]
    fn fake_clock_moves_only_when_told() {
        let c = FakeClock::default();
        let t0 = c.now();
        assert_eq!(c.now(), t0);
        c.advance(Duration::from_secs(90));
        assert_eq!(c.now().as_second() - t0.as_second(), 90);
    }
}
