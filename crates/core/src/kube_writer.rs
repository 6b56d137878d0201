//! The Kubernetes side-effect trait and the "skip unchanged writes" rule.

use std::fmt;

use async_trait::async_trait;
use k8s_openapi::api::core::v1::{ObjectReference, Secret};
use kube::Resource;
use kube::core::ApiResource;
use serde::Serialize;
use serde_json::Value;
use tikv_operator_api::labels;

use crate::error::{Error, Result};

/// Identity of one Kubernetes object: its API resource and its name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectKey {
    /// `apiVersion`, e.g. `v1` or `core.tikv.org/v1alpha1`.
    pub api_version: String,
    /// `kind`, e.g. `Pod`.
    pub kind: String,
    /// Plural resource name, e.g. `pods`.
    pub plural: String,
    /// Namespace; `None` for cluster-scoped objects.
    pub namespace: Option<String>,
    /// Object name.
    pub name: String,
}

impl ObjectKey {
    /// The key of the object of type `K` named `name` in `namespace`.
    pub fn new<K: Resource<DynamicType = ()>>(namespace: Option<&str>, name: &str) -> Self {
        Self {
            api_version: K::api_version(&()).into_owned(),
            kind: K::kind(&()).into_owned(),
            plural: K::plural(&()).into_owned(),
            namespace: namespace.map(str::to_owned),
            name: name.to_owned(),
        }
    }

    /// The key of `obj` (which must have a name).
    pub fn of<K: Resource<DynamicType = ()>>(obj: &K) -> Result<Self> {
        let name = obj
            .meta()
            .name
            .as_deref()
            .ok_or_else(|| Error::InvalidSpec {
                message: format!("a {} without metadata.name", K::kind(&())),
            })?;
        Ok(Self::new::<K>(obj.meta().namespace.as_deref(), name))
    }

    /// The kube-rs [`ApiResource`] of this key, for dynamic API calls.
    pub fn api_resource(&self) -> ApiResource {
        let (group, version) = match self.api_version.split_once('/') {
            Some((g, v)) => (g.to_owned(), v.to_owned()),
            None => (String::new(), self.api_version.clone()),
        };
        ApiResource {
            group,
            version,
            api_version: self.api_version.clone(),
            kind: self.kind.clone(),
            plural: self.plural.clone(),
        }
    }

    /// An [`ObjectReference`] to this object (for Events), with `uid` when known.
    pub fn reference(&self, uid: Option<&str>) -> ObjectReference {
        ObjectReference {
            api_version: Some(self.api_version.clone()),
            kind: Some(self.kind.clone()),
            namespace: self.namespace.clone(),
            name: Some(self.name.clone()),
            uid: uid.map(str::to_owned),
            ..ObjectReference::default()
        }
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{} {ns}/{}", self.kind, self.name),
            None => write!(f, "{} {}", self.kind, self.name),
        }
    }
}

/// A desired object: its key and its full JSON body (`apiVersion`, `kind`,
/// `metadata`, `spec`, ...), as it is sent to server-side apply.
#[derive(Debug, Clone, PartialEq)]
pub struct Desired {
    /// Which object.
    pub key: ObjectKey,
    /// The body.
    pub object: Value,
}

impl Desired {
    /// The desired form of a typed object (which must have a name).
    pub fn from_typed<K: Resource<DynamicType = ()> + Serialize>(obj: &K) -> Result<Self> {
        let key = ObjectKey::of(obj)?;
        let mut object = serde_json::to_value(obj).map_err(|source| Error::Serialization {
            what: key.to_string(),
            source,
        })?;
        if let Value::Object(map) = &mut object {
            map.insert("apiVersion".into(), Value::String(key.api_version.clone()));
            map.insert("kind".into(), Value::String(key.kind.clone()));
        }
        Ok(Self { key, object })
    }

    /// The body with the [`labels::APPLIED_HASH`] annotation set to the hash
    /// of the body without it.
    pub fn stamped(&self) -> Value {
        let mut unstamped = self.object.clone();
        if let Some(meta) = unstamped.get_mut("metadata").and_then(Value::as_object_mut) {
            let now_empty = meta
                .get_mut("annotations")
                .and_then(Value::as_object_mut)
                .is_some_and(|a| {
                    a.remove(labels::APPLIED_HASH);
                    a.is_empty()
                });
            if now_empty {
                meta.remove("annotations");
            }
        }
        let hash = content_hash(&unstamped);
        let mut object = unstamped;
        if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
            let annotations = meta
                .entry("annotations")
                .or_insert_with(|| Value::Object(serde_json::Map::new()));
            if let Some(a) = annotations.as_object_mut() {
                a.insert(labels::APPLIED_HASH.to_owned(), Value::String(hash));
            }
        }
        object
    }
}

/// Whether a write happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApplyOutcome {
    /// The object was sent to the API server.
    Applied,
    /// The cached object already matched; nothing was sent.
    Unchanged,
}

/// Severity of an Event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    /// Something a user may want to know happened.
    Normal,
    /// Something is wrong or blocked.
    Warning,
}

/// A Kubernetes Event about one object.
#[derive(Debug, Clone, PartialEq)]
pub struct EventSpec {
    /// The object the event is about.
    pub regarding: ObjectReference,
    /// Severity.
    pub type_: EventType,
    /// CamelCase reason, e.g. `MemberRemoved`.
    pub reason: String,
    /// CamelCase action that was taken, e.g. `RemoveMember`.
    pub action: String,
    /// Human-readable note.
    pub note: String,
}

/// The Kubernetes writes a reconciler makes. Reads come from watch caches,
/// never from here, with one exception: [`KubeWriter::get_secret`] (the
/// operator caches no Secret). Object safe: hold it as `Arc<dyn KubeWriter>`.
#[async_trait]
pub trait KubeWriter: Send + Sync {
    /// Server-side apply of `object` (the full body of `key`) with field manager
    /// [`labels::FIELD_MANAGER`], forcing ownership. Always writes; reconcilers
    /// call [`KubeWriter::apply_if_changed`].
    async fn apply(&self, key: &ObjectKey, object: &Value) -> Result<()>;

    /// Deletes an object (background propagation). An object that is already
    /// gone is success.
    async fn delete(&self, key: &ObjectKey) -> Result<()>;

    /// Deletes the object only if it is still the one with `uid` (a
    /// precondition checked by the API server). Gone, or replaced by an
    /// object of another uid, is success: a decision taken on a cached object
    /// never hits its successor.
    async fn delete_exact(&self, key: &ObjectKey, uid: &str) -> Result<()>;

    /// Server-side apply of the `status` subresource.
    async fn patch_status(&self, key: &ObjectKey, status: &Value) -> Result<()>;

    /// Adds `finalizer` to the object's finalizers if missing.
    async fn add_finalizer(&self, key: &ObjectKey, finalizer: &str) -> Result<()>;

    /// Removes `finalizer` from the object's finalizers if present. An object
    /// that is already gone is success.
    async fn remove_finalizer(&self, key: &ObjectKey, finalizer: &str) -> Result<()>;

    /// Publishes an Event.
    async fn publish_event(&self, event: &EventSpec) -> Result<()>;

    /// Reads the Secret `name` in `namespace`; `None` when it does not
    /// exist. The one read outside the watch caches: the operator caches no
    /// Secret (it would hold every credential of a namespace), so a group or
    /// Cluster reads the TLS Secrets it uses by name when it reconciles.
    async fn get_secret(&self, namespace: &str, name: &str) -> Result<Option<Secret>>;

    /// The names of the objects of `kind`'s type in `kind`'s namespace (its
    /// name is not used) whose `spec.cluster.name` is `cluster`, read from
    /// the API server, not a cache. Taken before the one irreversible step
    /// decided on cached reads that nothing follows up: a Cluster's finalizer
    /// goes only when this finds none of its groups and instances (found by
    /// e2e: a PD created a moment before its Cluster was deleted was not in
    /// the cache yet, the Cluster went, and the PD kept its finalizer with no
    /// Cluster left to finish its removal).
    async fn names_in_cluster(&self, kind: &ObjectKey, cluster: &str) -> Result<Vec<String>>;

    /// Applies `desired` unless `cached` (the object as the watch cache holds
    /// it) already carries the same [`labels::APPLIED_HASH`] and contains every
    /// desired field with the desired value. The hash catches fields removed
    /// from the desired object; the containment check catches fields changed
    /// by someone else.
    async fn apply_if_changed(
        &self,
        desired: &Desired,
        cached: Option<&Value>,
    ) -> Result<ApplyOutcome> {
        let stamped = desired.stamped();
        if let Some(cached) = cached
            && contains_desired(&stamped, cached)
        {
            return Ok(ApplyOutcome::Unchanged);
        }
        self.apply(&desired.key, &stamped).await?;
        Ok(ApplyOutcome::Applied)
    }
}

#[async_trait]
impl<T: KubeWriter + ?Sized> KubeWriter for std::sync::Arc<T> {
    async fn apply(&self, key: &ObjectKey, object: &Value) -> Result<()> {
        (**self).apply(key, object).await
    }
    async fn delete(&self, key: &ObjectKey) -> Result<()> {
        (**self).delete(key).await
    }
    async fn delete_exact(&self, key: &ObjectKey, uid: &str) -> Result<()> {
        (**self).delete_exact(key, uid).await
    }
    async fn patch_status(&self, key: &ObjectKey, status: &Value) -> Result<()> {
        (**self).patch_status(key, status).await
    }
    async fn add_finalizer(&self, key: &ObjectKey, finalizer: &str) -> Result<()> {
        (**self).add_finalizer(key, finalizer).await
    }
    async fn remove_finalizer(&self, key: &ObjectKey, finalizer: &str) -> Result<()> {
        (**self).remove_finalizer(key, finalizer).await
    }
    async fn names_in_cluster(&self, kind: &ObjectKey, cluster: &str) -> Result<Vec<String>> {
        (**self).names_in_cluster(kind, cluster).await
    }
    async fn publish_event(&self, event: &EventSpec) -> Result<()> {
        (**self).publish_event(event).await
    }
    async fn get_secret(&self, namespace: &str, name: &str) -> Result<Option<Secret>> {
        (**self).get_secret(namespace, name).await
    }
}

/// Whether `current` contains `desired`: every field of `desired` is present in
/// `current` with an equal value. Objects compare field by field (extra fields
/// in `current`, such as server defaults, are ignored); every element of a
/// desired array must be contained in some element of the current array
/// (elements the API server adds, such as injected volumes, are ignored); a
/// desired `null` matches a missing field.
pub fn contains_desired(desired: &Value, current: &Value) -> bool {
    match (desired, current) {
        (Value::Object(d), Value::Object(c)) => d.iter().all(|(k, dv)| match c.get(k) {
            Some(cv) => contains_desired(dv, cv),
            None => dv.is_null(),
        }),
        (Value::Array(d), Value::Array(c)) => d
            .iter()
            .all(|dv| c.iter().any(|cv| contains_desired(dv, cv))),
        (Value::Null, _) => true,
        (Value::Number(d), Value::Number(c)) => d == c || d.as_f64() == c.as_f64(),
        (d, c) => d == c,
    }
}

/// A stable 64-bit FNV-1a hash (16 hex digits) of a JSON value in canonical
/// form (object keys sorted). Stable across processes and Rust versions, so it
/// can be stored in objects.
pub fn content_hash(value: &Value) -> String {
    let mut h = Fnv::default();
    hash_value(value, &mut h);
    format!("{:016x}", h.0)
}

struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv {
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
}

fn hash_value(value: &Value, h: &mut Fnv) {
    match value {
        Value::Null => h.write(b"n"),
        Value::Bool(b) => h.write(if *b { b"t" } else { b"f" }),
        Value::Number(n) => {
            h.write(b"#");
            h.write(n.to_string().as_bytes());
        }
        Value::String(s) => {
            h.write(b"\"");
            h.write(&(s.len() as u64).to_le_bytes());
            h.write(s.as_bytes());
        }
        Value::Array(items) => {
            h.write(b"[");
            h.write(&(items.len() as u64).to_le_bytes());
            for item in items {
                hash_value(item, h);
            }
        }
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            h.write(b"{");
            h.write(&(keys.len() as u64).to_le_bytes());
            for k in keys {
                h.write(&(k.len() as u64).to_le_bytes());
                h.write(k.as_bytes());
                if let Some(v) = map.get(k) {
                    hash_value(v, h);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use k8s_openapi::api::core::v1::ConfigMap;
    use serde_json::json;

    fn cm(data: &[(&str, &str)]) -> ConfigMap {
        ConfigMap {
            metadata: kube::api::ObjectMeta {
                name: Some("pd-abc123".into()),
                namespace: Some("ns".into()),
                ..Default::default()
            },
            data: Some(
                data.iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
            ),
            ..Default::default()
        }
    }

    #[test]
    fn keys_and_desired_objects_carry_type_information() {
        let d = Desired::from_typed(&cm(&[("a", "1")])).unwrap();
        assert_eq!(d.key.to_string(), "ConfigMap ns/pd-abc123");
        assert_eq!(d.key.plural, "configmaps");
        assert_eq!(d.object["apiVersion"], "v1");
        assert_eq!(d.object["kind"], "ConfigMap");
        let ar = ObjectKey::new::<tikv_operator_api::PD>(Some("ns"), "x").api_resource();
        assert_eq!(ar.group, "core.tikv.org");
        assert_eq!(ar.version, "v1alpha1");
        assert_eq!(ar.plural, "pds");
        let nameless = ConfigMap::default();
        assert!(Desired::from_typed(&nameless).is_err());
    }

    #[test]
    fn containment_ignores_server_additions_but_not_changes() {
        let desired = json!({"spec": {"containers": [{"name": "pd", "image": "pd:v1"}],
                                      "volumes": [{"name": "data"}]}});
        let current = json!({"spec": {"containers": [{"name": "pd", "image": "pd:v1",
                                                      "imagePullPolicy": "IfNotPresent"}],
                                      "volumes": [{"name": "data"}, {"name": "kube-api-access"}],
                                      "nodeName": "n1"},
                             "status": {"phase": "Running"}});
        assert!(contains_desired(&desired, &current));
        let changed = json!({"spec": {"containers": [{"name": "pd", "image": "pd:v0"}],
                                      "volumes": [{"name": "data"}]}});
        assert!(!contains_desired(&changed, &current));
        let missing = json!({"spec": {"hostname": "x"}});
        assert!(!contains_desired(&missing, &current));
        assert!(contains_desired(
            &json!({"spec": {"hostname": null}}),
            &current
        ));
    }

    #[test]
    fn hash_is_canonical_and_sensitive() {
        let a = json!({"a": 1, "b": [1, 2], "c": {"x": "y"}});
        let b = json!({"c": {"x": "y"}, "b": [1, 2], "a": 1});
        assert_eq!(content_hash(&a), content_hash(&b));
        assert_ne!(
            content_hash(&a),
            content_hash(&json!({"a": 1, "b": [2, 1], "c": {"x": "y"}}))
        );
        assert_ne!(content_hash(&json!("ab")), content_hash(&json!(["a", "b"])));
        // Pinned: the hash is stored in objects and must not change between releases.
        assert_eq!(
            content_hash(&json!({"a": [true, null, "x", 1.5]})),
            "f195b289de5f8444"
        );
    }

    #[test]
    fn stamping_is_idempotent_and_tracks_content() {
        let d = Desired::from_typed(&cm(&[("a", "1")])).unwrap();
        let s1 = d.stamped();
        let hash = s1["metadata"]["annotations"][labels::APPLIED_HASH].clone();
        assert!(hash.is_string());
        let again = Desired {
            key: d.key.clone(),
            object: s1.clone(),
        };
        assert_eq!(again.stamped(), s1);
        let other = Desired::from_typed(&cm(&[("a", "2")])).unwrap().stamped();
        assert_ne!(other["metadata"]["annotations"][labels::APPLIED_HASH], hash);
    }
}
