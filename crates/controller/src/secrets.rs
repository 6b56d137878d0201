//! The Secrets the operator reads (a TLS Cluster's client Secret), each
//! watched by name.
//!
//! Secrets are not the operator's objects: they carry no label of ours, and
//! caching every Secret of a namespace would hold credentials the operator
//! never uses. So each Secret a Cluster needs gets its own watch with the
//! field selector `metadata.name=<name>` in its namespace, started the first
//! time it is asked for and stopped when no Cluster uses it any more. The
//! API server sends only that Secret; a change (cert-manager renewing a
//! certificate in place) arrives as a watch event and wakes the Clusters
//! that use it.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::runtime::{WatchStreamExt, watcher};
use tokio::task::AbortHandle;
use tracing::{debug, info, warn};

/// What the operator knows of one Secret.
#[derive(Debug, Clone)]
pub enum SecretRead {
    /// Its watch has not listed yet (just started, or failing: the reason is
    /// the last watch error, if any).
    NotRead(Option<String>),
    /// It does not exist.
    Absent,
    /// It exists, as last seen.
    Present(Arc<Secret>),
}

/// Where Secrets are read from. `user` names who needs the Secret (a
/// Cluster): a source may watch it from the first read until every user
/// released it.
pub trait SecretSource: Send + Sync {
    /// The Secret `name` in `namespace`, needed from now on by `user`.
    fn read(&self, namespace: &str, name: &str, user: &str) -> SecretRead;
    /// `user` no longer needs any Secret in `namespace`.
    fn release(&self, namespace: &str, user: &str);
}

/// Called with (namespace, Secret name) when a watched Secret changed.
pub type OnSecretChange = Arc<dyn Fn(&str, &str) + Send + Sync>;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Single inserts/removes under these locks: a poisoned one is consistent.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

struct Watched {
    state: Arc<Mutex<SecretRead>>,
    users: BTreeSet<String>,
    task: AbortHandle,
}

impl Drop for Watched {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The production [`SecretSource`]: one name-scoped watch per Secret in use.
pub struct SecretWatches {
    client: kube::Client,
    watched: Mutex<HashMap<(String, String), Watched>>,
    on_change: OnSecretChange,
}

impl std::fmt::Debug for SecretWatches {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretWatches")
            .field("watched", &lock(&self.watched).len())
            .finish_non_exhaustive()
    }
}

/// The field selector of the watch of one Secret.
pub fn name_selector(name: &str) -> String {
    format!("metadata.name={name}")
}

/// Folds one watch event into the state of a Secret; whether the state
/// changed in a way its users must see. `listed` tracks whether the
/// current (re)list found the Secret.
fn apply_event(state: &mut SecretRead, listed: &mut bool, event: watcher::Event<Secret>) -> bool {
    match event {
        watcher::Event::Init => {
            *listed = false;
            false
        }
        watcher::Event::InitApply(s) | watcher::Event::Apply(s) => {
            *listed = true;
            let changed = match &*state {
                SecretRead::Present(old) => {
                    old.metadata.resource_version != s.metadata.resource_version
                        || old.data != s.data
                }
                _ => true,
            };
            *state = SecretRead::Present(Arc::new(s));
            changed
        }
        watcher::Event::InitDone => {
            if *listed {
                return false;
            }
            let was_absent = matches!(state, SecretRead::Absent);
            *state = SecretRead::Absent;
            !was_absent
        }
        watcher::Event::Delete(_) => {
            *state = SecretRead::Absent;
            true
        }
    }
}

impl SecretWatches {
    /// Watches through `client`; `on_change` hears of every change of a
    /// watched Secret (appearing, changing, disappearing).
    pub fn new(client: kube::Client, on_change: OnSecretChange) -> Self {
        Self {
            client,
            watched: Mutex::new(HashMap::new()),
            on_change,
        }
    }

    fn start(&self, namespace: &str, name: &str) -> Watched {
        let state = Arc::new(Mutex::new(SecretRead::NotRead(None)));
        let api: Api<Secret> = Api::namespaced(self.client.clone(), namespace);
        let config = watcher::Config::default().fields(&name_selector(name));
        let mut events = watcher(api, config).default_backoff().boxed();
        let (ns, secret) = (namespace.to_owned(), name.to_owned());
        let shared = state.clone();
        let on_change = self.on_change.clone();
        let task = tokio::spawn(async move {
            let mut listed = false;
            while let Some(ev) = events.next().await {
                let changed = match ev {
                    Ok(ev) => apply_event(&mut lock(&shared), &mut listed, ev),
                    Err(e) => {
                        warn!(namespace = %ns, secret = %secret, error = %e, "Secret watch error (retrying with backoff)");
                        let mut s = lock(&shared);
                        if let SecretRead::NotRead(why) = &mut *s {
                            *why = Some(e.to_string());
                        }
                        false
                    }
                };
                if changed {
                    debug!(namespace = %ns, secret = %secret, "watched Secret changed");
                    on_change(&ns, &secret);
                }
            }
        })
        .abort_handle();
        info!(namespace, secret = name, "watching Secret");
        Watched {
            state,
            users: BTreeSet::new(),
            task,
        }
    }
}

impl SecretSource for SecretWatches {
    fn read(&self, namespace: &str, name: &str, user: &str) -> SecretRead {
        let mut watched = lock(&self.watched);
        let key = (namespace.to_owned(), name.to_owned());
        let w = watched
            .entry(key)
            .or_insert_with(|| self.start(namespace, name));
        w.users.insert(user.to_owned());
        lock(&w.state).clone()
    }

    fn release(&self, namespace: &str, user: &str) {
        let mut watched = lock(&self.watched);
        watched.retain(|(ns, name), w| {
            if ns == namespace {
                w.users.remove(user);
            }
            let keep = !w.users.is_empty();
            if !keep {
                info!(namespace = %ns, secret = %name, "no longer watching Secret");
            }
            keep
        });
    }
}

/// A [`SecretSource`] over a map, for tests: Secrets are set and removed by
/// hand; [`FakeSecrets::users`] tells who holds which.
#[cfg(test)]
#[derive(Default)]
pub(crate) struct FakeSecrets {
    secrets: Mutex<HashMap<(String, String), SecretRead>>,
    users: Mutex<HashMap<(String, String), BTreeSet<String>>>,
}

#[cfg(test)]
impl FakeSecrets {
    pub(crate) fn set(&self, namespace: &str, name: &str, read: SecretRead) {
        lock(&self.secrets).insert((namespace.to_owned(), name.to_owned()), read);
    }

    pub(crate) fn users(&self, namespace: &str, name: &str) -> BTreeSet<String> {
        lock(&self.users)
            .get(&(namespace.to_owned(), name.to_owned()))
            .cloned()
            .unwrap_or_default()
    }
}

#[cfg(test)]
impl SecretSource for FakeSecrets {
    fn read(&self, namespace: &str, name: &str, user: &str) -> SecretRead {
        let key = (namespace.to_owned(), name.to_owned());
        lock(&self.users)
            .entry(key.clone())
            .or_default()
            .insert(user.to_owned());
        lock(&self.secrets)
            .get(&key)
            .cloned()
            .unwrap_or(SecretRead::Absent)
    }

    fn release(&self, namespace: &str, user: &str) {
        for ((ns, _), users) in lock(&self.users).iter_mut() {
            if ns == namespace {
                users.remove(user);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use k8s_openapi::ByteString;

    fn secret(rv: &str, cert: &str) -> Secret {
        let mut s = Secret::default();
        s.metadata.name = Some("c-client-tls".into());
        s.metadata.resource_version = Some(rv.into());
        s.data = Some([("tls.crt".to_owned(), ByteString(cert.as_bytes().to_vec()))].into());
        s
    }

    #[test]
    fn watch_events_fold_into_present_absent_and_changes() {
        let mut state = SecretRead::NotRead(None);
        let mut listed = false;
        // The first list finds nothing: absent, a change (users may now report it).
        assert!(!apply_event(&mut state, &mut listed, watcher::Event::Init));
        assert!(apply_event(
            &mut state,
            &mut listed,
            watcher::Event::InitDone
        ));
        assert!(matches!(state, SecretRead::Absent));
        // It appears.
        assert!(apply_event(
            &mut state,
            &mut listed,
            watcher::Event::Apply(secret("1", "a"))
        ));
        assert!(
            matches!(&state, SecretRead::Present(s) if s.metadata.resource_version.as_deref() == Some("1"))
        );
        // A relist that finds it unchanged is no change.
        assert!(!apply_event(&mut state, &mut listed, watcher::Event::Init));
        assert!(!apply_event(
            &mut state,
            &mut listed,
            watcher::Event::InitApply(secret("1", "a"))
        ));
        assert!(!apply_event(
            &mut state,
            &mut listed,
            watcher::Event::InitDone
        ));
        // Renewed in place: a change.
        assert!(apply_event(
            &mut state,
            &mut listed,
            watcher::Event::Apply(secret("2", "b"))
        ));
        // Deleted.
        assert!(apply_event(
            &mut state,
            &mut listed,
            watcher::Event::Delete(secret("2", "b"))
        ));
        assert!(matches!(state, SecretRead::Absent));
        // A relist that does not find it keeps it absent, without a change.
        assert!(!apply_event(&mut state, &mut listed, watcher::Event::Init));
        assert!(!apply_event(
            &mut state,
            &mut listed,
            watcher::Event::InitDone
        ));
    }

    #[test]
    fn the_watch_selects_one_secret_by_name() {
        assert_eq!(
            name_selector("basic-client-tls"),
            "metadata.name=basic-client-tls"
        );
    }
}
