//! Read-your-own-writes for reconciles that read watch caches.
//!
//! A reconcile decides from the watch caches, and a cache shows a write only
//! once its watch event arrived, which takes milliseconds at rest and can take
//! seconds under load. A decision taken on a cache that has not seen this
//! operator's own last write can repeat a disruption: found by e2e, a PDGroup
//! reconcile 170 ms after deleting one member's Pod still saw that Pod running
//! and Ready (and its process still answered), and deleted a second member's
//! Pod. The same holds for a restart grant written to a TiKV instance.
//!
//! [`LedgerWriter`] records every successful write it passes on (apply,
//! delete, finalizer edits) in a [`WriteLedger`]; [`WriteLedger::unseen`]
//! tells, from the caches, which of them the caches do not show yet. The
//! controllers run no reconcile in a namespace while any is unseen: they
//! requeue shortly and look again.
//!
//! What "shows" means, per write:
//! - apply: the cached object carries the [`labels::APPLIED_HASH`] that was
//!   sent (or, for a body without one, contains every field that was sent);
//! - delete: the cached object is gone, is being deleted, or is another
//!   object (another uid) than the one deleted;
//! - finalizer added/removed: the cached object has/lacks it (gone counts as
//!   lacking);
//! - status patch: the cached object's status contains every field that was
//!   sent (gone counts as seen: there is no status left to decide on).
//!
//! Status patches are recorded because some status fields are records that
//! decisions rest on (a TiKV instance's `leaderEvictionStartedAt` says an
//! evict-leader entry of ours may exist): a reconcile on a cache without the
//! record would write a status without it and lose track of the entry.
//! Events are not recorded.
//!
//! An entry that stays unseen longer than its limit (the object was changed
//! by someone else meanwhile, or the watch is down) is dropped with a
//! warning, so one odd object cannot stop a namespace for good. Deletions get
//! a long limit: they are what prevents two disruptions at once.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde_json::Value;
use tikv_operator_api::labels;
use tracing::warn;

use crate::error::Result;
use crate::kube_writer::{EventSpec, KubeWriter, ObjectKey, contains_desired};

/// How long an apply or finalizer edit may stay unseen before it is dropped.
pub const APPLY_LIMIT: Duration = Duration::from_secs(30);
/// How long a deletion may stay unseen before it is dropped.
pub const DELETE_LIMIT: Duration = Duration::from_secs(300);

/// What the cache must show for a write to count as seen.
#[derive(Debug, Clone, PartialEq)]
pub enum Expect {
    /// The object as applied: its applied-hash annotation, or the body.
    Applied {
        /// [`labels::APPLIED_HASH`] of the body sent, if it had one.
        hash: Option<String>,
        /// The body sent (compared when there is no hash).
        body: Value,
    },
    /// The object (of `uid`, when known) deleted.
    Deleted {
        /// The uid of the object deleted (`None`: whichever was there).
        uid: Option<String>,
    },
    /// The status as patched: the cached status contains every field sent.
    Status {
        /// The status sent.
        status: Value,
    },
    /// `finalizer` present (`true`) or absent (`false`).
    Finalizer {
        /// The finalizer.
        name: String,
        /// Whether it was added.
        present: bool,
    },
}

impl Expect {
    /// Whether `cached` (the object as the watch cache holds it, `None`:
    /// absent) shows this write.
    pub fn seen_in(&self, cached: Option<&Value>) -> bool {
        let meta = cached.and_then(|c| c.get("metadata"));
        match self {
            Self::Applied { hash, body } => match (cached, hash) {
                (None, _) => false,
                (Some(c), Some(h)) => {
                    meta.and_then(|m| m.get("annotations"))
                        .and_then(|a| a.get(labels::APPLIED_HASH))
                        .and_then(Value::as_str)
                        == Some(h.as_str())
                        || contains_desired(body, c)
                }
                (Some(c), None) => contains_desired(body, c),
            },
            Self::Deleted { uid } => {
                let Some(m) = meta else { return true };
                let deleting = m.get("deletionTimestamp").is_some_and(|t| !t.is_null());
                let other = uid
                    .as_deref()
                    .is_some_and(|u| m.get("uid").and_then(Value::as_str) != Some(u));
                deleting || other
            }
            Self::Status { status } => match cached {
                None => true,
                Some(c) => contains_desired(status, c.get("status").unwrap_or(&Value::Null)),
            },
            Self::Finalizer { name, present } => {
                let has = meta
                    .and_then(|m| m.get("finalizers"))
                    .and_then(Value::as_array)
                    .is_some_and(|f| f.iter().any(|v| v.as_str() == Some(name.as_str())));
                has == *present
            }
        }
    }

    fn limit(&self) -> Duration {
        match self {
            Self::Deleted { .. } => DELETE_LIMIT,
            Self::Applied { .. } | Self::Status { .. } | Self::Finalizer { .. } => APPLY_LIMIT,
        }
    }
}

#[derive(Debug, Clone)]
struct Entry {
    expect: Expect,
    at: Instant,
}

/// This process's writes that the caches may not show yet, by namespace and
/// object. Only the last write of an object counts: a cache that shows it
/// shows the earlier ones too.
#[derive(Debug, Default)]
pub struct WriteLedger {
    entries: Mutex<HashMap<String, HashMap<ObjectKey, Entry>>>,
}

impl WriteLedger {
    /// Records a write of `key` made at `at`.
    pub fn record(&self, key: &ObjectKey, expect: Expect, at: Instant) {
        let mut e = self
            .entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        e.entry(key.namespace.clone().unwrap_or_default())
            .or_default()
            .insert(key.clone(), Entry { expect, at });
    }

    /// The writes in `namespace` that the caches do not show yet, at `now`;
    /// `lookup` gives the cached object of a key (`None`: absent). Seen and
    /// expired entries are dropped (expired ones with a warning). A kind the
    /// caches do not hold is reported by `lookup` as `Err(())` and counts as
    /// seen (nothing to wait for).
    pub fn unseen(
        &self,
        namespace: &str,
        now: Instant,
        lookup: &dyn Fn(&ObjectKey) -> std::result::Result<Option<Value>, ()>,
    ) -> Vec<ObjectKey> {
        let mut all = self
            .entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some(entries) = all.get_mut(namespace) else {
            return Vec::new();
        };
        let mut unseen = Vec::new();
        entries.retain(|key, entry| {
            let Ok(cached) = lookup(key) else {
                return false;
            };
            if entry.expect.seen_in(cached.as_ref()) {
                return false;
            }
            let age = now.saturating_duration_since(entry.at);
            if age > entry.expect.limit() {
                warn!(object = %key, age_secs = age.as_secs(), expect = ?entry.expect,
                    "the watch cache never showed this write; no longer waiting for it");
                return false;
            }
            unseen.push(key.clone());
            true
        });
        if entries.is_empty() {
            all.remove(namespace);
        }
        unseen.sort();
        unseen
    }

    /// Number of recorded writes not yet seen (all namespaces).
    pub fn len(&self) -> usize {
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .values()
            .map(HashMap::len)
            .sum()
    }

    /// Whether nothing is recorded.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A [`KubeWriter`] that records every successful write in a [`WriteLedger`].
#[derive(Debug)]
pub struct LedgerWriter<W> {
    inner: W,
    ledger: std::sync::Arc<WriteLedger>,
}

impl<W> LedgerWriter<W> {
    /// Wraps `inner`, recording into `ledger`.
    pub fn new(inner: W, ledger: std::sync::Arc<WriteLedger>) -> Self {
        Self { inner, ledger }
    }
}

#[async_trait]
impl<W: KubeWriter> KubeWriter for LedgerWriter<W> {
    async fn apply(&self, key: &ObjectKey, object: &Value) -> Result<()> {
        self.inner.apply(key, object).await?;
        let hash = object
            .pointer("/metadata/annotations")
            .and_then(|a| a.get(labels::APPLIED_HASH))
            .and_then(Value::as_str)
            .map(str::to_owned);
        self.ledger.record(
            key,
            Expect::Applied {
                hash,
                body: object.clone(),
            },
            Instant::now(),
        );
        Ok(())
    }

    async fn delete(&self, key: &ObjectKey) -> Result<()> {
        self.inner.delete(key).await?;
        self.ledger
            .record(key, Expect::Deleted { uid: None }, Instant::now());
        Ok(())
    }

    async fn delete_exact(&self, key: &ObjectKey, uid: &str) -> Result<()> {
        self.inner.delete_exact(key, uid).await?;
        self.ledger.record(
            key,
            Expect::Deleted {
                uid: Some(uid.to_owned()),
            },
            Instant::now(),
        );
        Ok(())
    }

    async fn patch_status(&self, key: &ObjectKey, status: &Value) -> Result<()> {
        self.inner.patch_status(key, status).await?;
        self.ledger.record(
            key,
            Expect::Status {
                status: status.clone(),
            },
            Instant::now(),
        );
        Ok(())
    }

    async fn add_finalizer(&self, key: &ObjectKey, finalizer: &str) -> Result<()> {
        self.inner.add_finalizer(key, finalizer).await?;
        self.ledger.record(
            key,
            Expect::Finalizer {
                name: finalizer.to_owned(),
                present: true,
            },
            Instant::now(),
        );
        Ok(())
    }

    async fn remove_finalizer(&self, key: &ObjectKey, finalizer: &str) -> Result<()> {
        self.inner.remove_finalizer(key, finalizer).await?;
        self.ledger.record(
            key,
            Expect::Finalizer {
                name: finalizer.to_owned(),
                present: false,
            },
            Instant::now(),
        );
        Ok(())
    }

    async fn publish_event(&self, event: &EventSpec) -> Result<()> {
        self.inner.publish_event(event).await
    }

    async fn get_secret(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<k8s_openapi::api::core::v1::Secret>> {
        self.inner.get_secret(namespace, name).await
    }
    async fn names_in_cluster(&self, kind: &ObjectKey, cluster: &str) -> Result<Vec<String>> {
        self.inner.names_in_cluster(kind, cluster).await
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use k8s_openapi::api::core::v1::Pod;
    use serde_json::json;

    fn pod_key(name: &str) -> ObjectKey {
        ObjectKey::new::<Pod>(Some("ns"), name)
    }

    fn pod(uid: &str, deleting: bool, hash: &str, image: &str) -> Value {
        let mut p = json!({
            "metadata": {"name": "pd-a", "namespace": "ns", "uid": uid,
                         "annotations": {labels::APPLIED_HASH: hash}},
            "spec": {"containers": [{"name": "pd", "image": image}]}
        });
        if deleting {
            p["metadata"]["deletionTimestamp"] = json!("2026-12-04T21:36:19Z");
        }
        p
    }

    #[test]
    fn a_deleted_pod_is_unseen_while_the_cache_shows_it_running() {
        let l = WriteLedger::default();
        let t0 = Instant::now();
        l.record(
            &pod_key("pd-a"),
            Expect::Deleted {
                uid: Some("u1".into()),
            },
            t0,
        );
        // The cache still holds the old Pod, running.
        let stale = |_: &ObjectKey| Ok(Some(pod("u1", false, "h", "pd:v1")));
        assert_eq!(l.unseen("ns", t0, &stale), vec![pod_key("pd-a")]);
        assert!(l.unseen("other", t0, &stale).is_empty());
        // Still unseen a while later; the entry stays.
        assert_eq!(
            l.unseen("ns", t0 + Duration::from_secs(10), &stale),
            vec![pod_key("pd-a")]
        );
        // Being deleted, gone, or replaced: seen, and the entry is dropped.
        for cached in [
            Some(pod("u1", true, "h", "pd:v1")),
            None,
            Some(pod("u2", false, "h", "pd:v1")),
        ] {
            l.record(
                &pod_key("pd-a"),
                Expect::Deleted {
                    uid: Some("u1".into()),
                },
                t0,
            );
            let c = cached.clone();
            assert!(l.unseen("ns", t0, &move |_| Ok(c.clone())).is_empty());
            assert!(l.is_empty(), "{cached:?}");
        }
    }

    #[test]
    fn an_apply_is_seen_by_its_hash_or_its_body() {
        let l = WriteLedger::default();
        let t0 = Instant::now();
        let sent = pod("", false, "h2", "pd:v2");
        l.record(
            &pod_key("pd-a"),
            Expect::Applied {
                hash: Some("h2".into()),
                body: sent.clone(),
            },
            t0,
        );
        // Absent (not created yet in the cache) or the previous version: unseen.
        assert_eq!(l.unseen("ns", t0, &|_| Ok(None)).len(), 1);
        assert_eq!(
            l.unseen("ns", t0, &|_| Ok(Some(pod("u1", false, "h1", "pd:v1"))))
                .len(),
            1
        );
        // The hash sent: seen, even where the server normalised a field.
        assert!(
            l.unseen("ns", t0, &|_| Ok(Some(pod(
                "u1",
                false,
                "h2",
                "pd:v2-normalised"
            ))))
            .is_empty()
        );
        // Without a hash, the body decides.
        l.record(
            &pod_key("pd-b"),
            Expect::Applied {
                hash: None,
                body: json!({"metadata": {"labels": {"a": "1"}}}),
            },
            t0,
        );
        assert_eq!(
            l.unseen("ns", t0, &|_| Ok(Some(
                json!({"metadata": {"labels": {"a": "0"}}})
            )))
            .len(),
            1
        );
        assert!(
            l.unseen("ns", t0, &|_| Ok(Some(
                json!({"metadata": {"labels": {"a": "1", "b": "2"}}})
            )))
            .is_empty()
        );
    }

    #[test]
    fn finalizers_and_unknown_kinds() {
        let l = WriteLedger::default();
        let t0 = Instant::now();
        let key = pod_key("pd-a");
        l.record(
            &key,
            Expect::Finalizer {
                name: "f".into(),
                present: false,
            },
            t0,
        );
        let with = |_: &ObjectKey| Ok(Some(json!({"metadata": {"finalizers": ["f"]}})));
        assert_eq!(l.unseen("ns", t0, &with).len(), 1);
        assert!(l.unseen("ns", t0, &|_| Ok(None)).is_empty());
        l.record(
            &key,
            Expect::Finalizer {
                name: "f".into(),
                present: true,
            },
            t0,
        );
        assert_eq!(l.unseen("ns", t0, &|_| Ok(None)).len(), 1);
        assert!(l.unseen("ns", t0, &with).is_empty());
        // A kind no cache holds: nothing to wait for.
        l.record(&key, Expect::Deleted { uid: None }, t0);
        assert!(l.unseen("ns", t0, &|_| Err(())).is_empty());
        assert!(l.is_empty());
    }

    #[test]
    fn entries_expire_after_their_limit() {
        let l = WriteLedger::default();
        let t0 = Instant::now();
        let running = |_: &ObjectKey| Ok(Some(pod("u1", false, "h1", "pd:v1")));
        l.record(
            &pod_key("a"),
            Expect::Applied {
                hash: Some("h2".into()),
                body: json!({}),
            },
            t0,
        );
        l.record(&pod_key("b"), Expect::Deleted { uid: None }, t0);
        let after_apply_limit = t0 + APPLY_LIMIT + Duration::from_secs(1);
        assert_eq!(
            l.unseen("ns", after_apply_limit, &running),
            vec![pod_key("b")]
        );
        assert!(
            l.unseen("ns", t0 + DELETE_LIMIT + Duration::from_secs(1), &running)
                .is_empty()
        );
        assert!(l.is_empty());
    }

    /// A status patch is seen once the cached status holds every field sent:
    /// a reconcile on a cache without a record it just wrote (e.g. a TiKV
    /// instance's eviction start) would write the record away again.
    #[cfg(feature = "fake")]
    #[test]
    fn a_status_patch_is_unseen_until_the_cache_shows_its_fields() {
        use crate::fake::FakeKube;
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let kube = FakeKube::default();
        kube.insert(pod_key("kv-a"), pod("u1", false, "h", "tikv:v1"));
        let ledger = std::sync::Arc::new(WriteLedger::default());
        let w = LedgerWriter::new(kube.clone(), ledger.clone());
        let status = json!({"leaderEvictionStartedAt": "2026-12-06T17:00:00Z", "id": "4"});
        rt.block_on(w.patch_status(&pod_key("kv-a"), &status))
            .unwrap();
        let mut stale = pod("u1", false, "h", "tikv:v1");
        stale["status"] = json!({"id": "4"});
        let now = Instant::now();
        assert_eq!(
            ledger.unseen("ns", now, &|_: &ObjectKey| Ok(Some(stale.clone()))),
            vec![pod_key("kv-a")]
        );
        let mut fresh = stale.clone();
        fresh["status"]["leaderEvictionStartedAt"] = "2026-12-06T17:00:00Z".into();
        fresh["status"]["conditions"] = json!([]);
        assert!(
            ledger
                .unseen("ns", now, &|_: &ObjectKey| Ok(Some(fresh.clone())))
                .is_empty()
        );
        assert!(ledger.is_empty());
    }

    #[cfg(feature = "fake")]
    #[test]
    fn the_writer_records_only_successful_writes() {
        use crate::fake::{FakeKube, KubeOp};
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let kube = FakeKube::default();
        kube.insert(pod_key("pd-a"), pod("u1", false, "h", "pd:v1"));
        let ledger = std::sync::Arc::new(WriteLedger::default());
        let w = LedgerWriter::new(kube.clone(), ledger.clone());
        rt.block_on(async {
            kube.fail_next(KubeOp::Delete, "refused");
            assert!(w.delete_exact(&pod_key("pd-a"), "u1").await.is_err());
            assert!(ledger.is_empty(), "a failed write is not recorded");
            w.delete_exact(&pod_key("pd-a"), "u1").await.unwrap();
        });
        assert_eq!(ledger.len(), 1);
        let stale = |_: &ObjectKey| Ok(Some(pod("u1", false, "h", "pd:v1")));
        assert_eq!(
            ledger.unseen("ns", Instant::now(), &stale),
            vec![pod_key("pd-a")]
        );
    }
}
