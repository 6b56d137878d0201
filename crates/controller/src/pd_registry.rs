//! One PD client and one PD state cache per Cluster, created on first use and
//! dropped when the Cluster goes away. Every reconciler of a Cluster reads PD
//! through its entry; a published PD state change wakes the affected objects
//! through the registry's change callback.

mod switchable;
mod tls;

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

/// Decisions never rest on a PD reading older than this (the slow refresh
/// interval is 30 s; a refresh loop stuck on PD timeouts ages the snapshot):
/// an older one counts as PD not answering (safety rule 5).
pub const MAX_SNAPSHOT_AGE: std::time::Duration = std::time::Duration::from_secs(120);

use pd_client::{PdApi, PdClient, PdClientConfig, StoreId};
use tikv_operator_core::pd_state::{FastRefresh, PdSnapshot, PdStateCache, RefreshPolicy};
use tokio::task::AbortHandle;
use tracing::{debug, info, warn};

use crate::metered::MeteredPd;
use crate::metrics::Metrics;
use crate::secrets::SecretSource;
use crate::{PdEndpoint, PdSettings};
use switchable::SwitchablePd;
pub use tls::{
    CA_KEY, CERT_KEY, ClientTls, KEY_KEY, PdAccessError, PdTarget, TlsMaterial, read_material,
    with_scheme,
};

/// The URL the operator uses for the PD of `cluster`, whose (first) PDGroup is
/// `group` with client port `port` (see [`PdTarget::of_cluster`] for the
/// scheme of a TLS Cluster).
pub fn endpoint_url(
    how: &PdEndpoint,
    namespace: &str,
    cluster: &str,
    group: &str,
    port: i32,
) -> String {
    match how {
        PdEndpoint::Service => {
            tikv_operator_pd_layer::render::client_service_url(group, namespace, port)
        }
        PdEndpoint::Template(t) => t
            .replace("{cluster}", cluster)
            .replace("{namespace}", namespace)
            .replace("{group}", group),
    }
}

/// Builds the PD client for an endpoint, with the client TLS of a TLS Cluster.
pub type PdFactory = Arc<
    dyn Fn(&str, Option<&ClientTls>) -> Result<Arc<dyn PdApi>, pd_client::PdError> + Send + Sync,
>;

/// Called with (namespace, cluster, changed member names, changed store ids)
/// on every published PD state change.
pub type OnChange = Arc<dyn Fn(&str, &str, &BTreeSet<String>, &BTreeSet<StoreId>) + Send + Sync>;

/// The production factory: a [`PdClient`] with the configured request
/// timeout, speaking mutual TLS when given client TLS.
pub fn client_factory(settings: &PdSettings) -> PdFactory {
    let timeout = settings.timeout;
    Arc::new(move |endpoint: &str, tls: Option<&ClientTls>| {
        let mut config = PdClientConfig::new([endpoint]).with_request_timeout(timeout);
        if let Some(tls) = tls {
            config = config.with_tls(tls.config.clone());
        }
        Ok(Arc::new(PdClient::new(config)?) as Arc<dyn PdApi>)
    })
}

/// The PD access of one Cluster.
pub struct PdEntry {
    /// The URL it talks to.
    pub endpoint: String,
    /// The client (metered).
    pub api: Arc<dyn PdApi>,
    /// The state cache.
    pub cache: Arc<PdStateCache>,
    /// Serializes the start of TiKV leader evictions in this Cluster.
    pub eviction_gate: tikv_operator_tikv_layer::reconcile::EvictionGate,
    client: Arc<SwitchablePd>,
    /// The client TLS material in use (`None`: plaintext).
    tls: Mutex<Option<TlsMaterial>>,
    tasks: Vec<AbortHandle>,
    fast: Mutex<HashMap<String, FastRefresh>>,
}

impl std::fmt::Debug for PdEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PdEntry")
            .field("endpoint", &self.endpoint)
            .field("tls", &lock(&self.tls).is_some())
            .finish_non_exhaustive()
    }
}

impl Drop for PdEntry {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding these locks cannot leave them inconsistent
    // (single inserts/removes), so a poisoned lock is still usable.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl PdEntry {
    /// The latest PD snapshot.
    pub fn snapshot(&self) -> Arc<PdSnapshot> {
        self.cache
            .current()
            .within_age(k8s_openapi::jiff::Timestamp::now(), MAX_SNAPSHOT_AGE)
    }

    /// Keeps the cache refreshing fast while `key` has something in flight.
    pub fn hold_fast(&self, key: &str, in_flight: bool) {
        let mut fast = lock(&self.fast);
        if in_flight {
            if !fast.contains_key(key) {
                fast.insert(key.to_owned(), self.cache.hold_fast());
            }
        } else {
            fast.remove(key);
        }
    }

    /// Whether this entry talks TLS.
    pub fn is_tls(&self) -> bool {
        lock(&self.tls).is_some()
    }
}

/// Every Cluster's PD access.
pub struct PdRegistry {
    entries: Mutex<HashMap<(String, String), Arc<PdEntry>>>,
    factory: PdFactory,
    secrets: Arc<dyn SecretSource>,
    refresh: RefreshPolicy,
    metrics: Arc<Metrics>,
    on_change: OnChange,
}

impl std::fmt::Debug for PdRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PdRegistry")
            .field("clusters", &lock(&self.entries).len())
            .finish_non_exhaustive()
    }
}

impl PdRegistry {
    /// A registry creating clients with `factory`, reading the client
    /// Secrets of TLS Clusters from `secrets`.
    pub fn new(
        factory: PdFactory,
        secrets: Arc<dyn SecretSource>,
        refresh: RefreshPolicy,
        metrics: Arc<Metrics>,
        on_change: OnChange,
    ) -> Self {
        Self {
            entries: Mutex::new(HashMap::new()),
            factory,
            secrets,
            refresh,
            metrics,
            on_change,
        }
    }

    /// The entry of a Cluster if it exists.
    pub fn get(&self, namespace: &str, cluster: &str) -> Option<Arc<PdEntry>> {
        lock(&self.entries)
            .get(&(namespace.to_owned(), cluster.to_owned()))
            .cloned()
    }

    /// The entry of a Cluster talking to `target`; created (or replaced,
    /// when the endpoint changed) as needed. Must run inside a Tokio runtime.
    ///
    /// A TLS target reads its client Secret every time: when the Secret's
    /// content changed, the entry's client is replaced by one built from the
    /// new content (new connections use the new certificate; the state
    /// cache stays). A missing or unusable Secret is an error and removes
    /// the entry: the Cluster has no PD client until the Secret is fixed,
    /// never a plaintext one.
    pub fn ensure(
        &self,
        namespace: &str,
        cluster: &str,
        target: &PdTarget,
    ) -> Result<Arc<PdEntry>, PdAccessError> {
        let key = (namespace.to_owned(), cluster.to_owned());
        let refuse = |e: PdAccessError, entries: &mut HashMap<_, _>| {
            if entries.remove(&key).is_some() {
                warn!(namespace, cluster, error = %e, "PD client dropped: its TLS Secret is refused");
            }
            Err(e)
        };
        let material = match &target.client_secret {
            None => None,
            Some(secret) => {
                match read_material(self.secrets.as_ref(), namespace, cluster, secret) {
                    Ok(m) => Some((secret, m)),
                    Err(e) => return refuse(e, &mut lock(&self.entries)),
                }
            }
        };
        let mut entries = lock(&self.entries);
        let existing = entries
            .get(&key)
            .filter(|e| e.endpoint == target.endpoint)
            .cloned();
        if let Some(e) = &existing {
            let current = lock(&e.tls);
            match (current.as_ref(), &material) {
                (None, None) => return Ok(e.clone()),
                (Some(now), Some((_, new))) if now == new => return Ok(e.clone()),
                _ => {}
            }
        }
        // New or changed client TLS: parsed and checked only now.
        let tls = match material {
            None => None,
            Some((secret, m)) => match ClientTls::parse(namespace, secret, m) {
                Ok(t) => Some(t),
                Err(e) => return refuse(e, &mut entries),
            },
        };
        let client_error = |source| PdAccessError::Client {
            endpoint: target.endpoint.clone(),
            source,
        };
        if let (Some(e), Some(new)) = (existing, tls.as_ref()) {
            let mut current = lock(&e.tls);
            if current.is_some() {
                let client = (self.factory)(&target.endpoint, Some(new)).map_err(client_error)?;
                e.client.replace(client);
                *current = Some(new.material.clone());
                info!(namespace, cluster, secret = %new.secret, "PD client TLS Secret changed: new connections use its certificate");
                return Ok(e.clone());
            }
            // Plaintext to TLS (tlsCluster.enabled is immutable: only a
            // Cluster deleted and recreated under the same name): a new entry.
        }
        let client = (self.factory)(&target.endpoint, tls.as_ref()).map_err(client_error)?;
        let switch = Arc::new(SwitchablePd::new(client));
        let client: Arc<dyn PdApi> = switch.clone();
        let cache = Arc::new(PdStateCache::new(
            Arc::new(MeteredPd::new(client.clone(), self.metrics.clone())),
            self.refresh,
        ));
        // The reconcilers' client: a change they make to PD is read back at
        // once, not at the next interval (what they wait on next is its
        // effect: a store Offline, a leader moved, a member gone).
        let wake = cache.clone();
        let api: Arc<dyn PdApi> = Arc::new(
            MeteredPd::new(client, self.metrics.clone())
                .with_after_write(Arc::new(move || wake.refresh_soon())),
        );
        // Subscribe before the first refresh, so no change is missed.
        let mut rx = cache.subscribe();
        let mut last = rx.borrow_and_update().clone();
        let runner = cache.clone();
        let refresh = tokio::spawn(async move { runner.run().await }).abort_handle();
        let on_change = self.on_change.clone();
        let (ns, name) = key.clone();
        let fanout = tokio::spawn(async move {
            while rx.changed().await.is_ok() {
                let now = rx.borrow_and_update().clone();
                let changed = now.changed_members(&last);
                let stores = now.changed_stores(&last);
                debug!(namespace = %ns, cluster = %name, ?changed, ?stores, reachable = now.reachable(), "PD state published");
                on_change(&ns, &name, &changed, &stores);
                last = now;
            }
        })
        .abort_handle();
        info!(namespace, cluster, endpoint = %target.endpoint, tls = tls.is_some(), "PD client created");
        let entry = Arc::new(PdEntry {
            endpoint: target.endpoint.clone(),
            api,
            cache,
            eviction_gate: tikv_operator_tikv_layer::reconcile::EvictionGate::default(),
            client: switch,
            tls: Mutex::new(tls.map(|t| t.material)),
            tasks: vec![refresh, fanout],
            fast: Mutex::new(HashMap::new()),
        });
        entries.insert(key, entry.clone());
        Ok(entry)
    }

    /// Drops a Cluster's entry (its refresh stops once no reconcile holds
    /// it) and its use of Secrets.
    pub fn remove(&self, namespace: &str, cluster: &str) {
        if lock(&self.entries)
            .remove(&(namespace.to_owned(), cluster.to_owned()))
            .is_some()
        {
            info!(namespace, cluster, "PD client dropped");
        }
        self.secrets.release(namespace, cluster);
    }

    /// How many Clusters have PD access now.
    pub fn len(&self) -> usize {
        lock(&self.entries).len()
    }

    /// Whether no Cluster has PD access now.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::secrets::FakeSecrets;
    use pd_client::FakePd;
    use std::time::Duration;

    fn plain(endpoint: &str) -> PdTarget {
        PdTarget {
            endpoint: endpoint.to_owned(),
            client_secret: None,
        }
    }

    fn registry(
        factory: PdFactory,
        secrets: Arc<FakeSecrets>,
        policy: RefreshPolicy,
    ) -> PdRegistry {
        PdRegistry::new(
            factory,
            secrets,
            policy,
            Arc::new(Metrics::unregistered()),
            Arc::new(|_: &str, _: &str, _: &BTreeSet<String>, _: &BTreeSet<StoreId>| {}),
        )
    }

    #[test]
    fn endpoints_follow_the_service_or_the_template() {
        assert_eq!(
            endpoint_url(&PdEndpoint::Service, "ns", "basic", "pd", 2379),
            "http://pd-pd.ns.svc:2379"
        );
        assert_eq!(
            endpoint_url(
                &PdEndpoint::Template("https://{cluster}-{group}.{namespace}.example.com".into()),
                "ns",
                "basic",
                "pd",
                2379
            ),
            "https://basic-pd.ns.example.com"
        );
        assert_eq!(with_scheme("pd:2379", true), "https://pd:2379");
        assert_eq!(with_scheme("http://pd:2379", true), "https://pd:2379");
    }

    #[tokio::test]
    async fn one_entry_per_cluster_replaced_on_endpoint_change_and_changes_fan_out() {
        let pd = FakePd::with_cluster(3, 0);
        let fake = pd.clone();
        let made = Arc::new(Mutex::new(Vec::<String>::new()));
        let made2 = made.clone();
        let factory: PdFactory = Arc::new(move |e: &str, _: Option<&ClientTls>| {
            lock(&made2).push(e.to_owned());
            Ok(Arc::new(fake.clone()) as Arc<dyn PdApi>)
        });
        let seen = Arc::new(Mutex::new(Vec::<(String, String, usize)>::new()));
        let seen2 = seen.clone();
        let on_change: OnChange = Arc::new(
            move |ns: &str, c: &str, m: &BTreeSet<String>, _: &BTreeSet<StoreId>| {
                lock(&seen2).push((ns.to_owned(), c.to_owned(), m.len()));
            },
        );
        let reg = PdRegistry::new(
            factory,
            Arc::new(FakeSecrets::default()),
            RefreshPolicy {
                fast: Duration::from_millis(10),
                slow: Duration::from_millis(10),
            },
            Arc::new(Metrics::unregistered()),
            on_change,
        );
        let a = reg.ensure("ns", "basic", &plain("http://a")).unwrap();
        let again = reg.ensure("ns", "basic", &plain("http://a")).unwrap();
        assert!(Arc::ptr_eq(&a, &again));
        reg.ensure("ns", "other", &plain("http://a")).unwrap();
        assert_eq!(reg.len(), 2);
        let b = reg.ensure("ns", "basic", &plain("http://b")).unwrap();
        assert!(!Arc::ptr_eq(&a, &b));
        assert_eq!(lock(&made).len(), 3);

        // The first refresh makes PD reachable: all 3 members changed.
        for _ in 0..200 {
            if b.snapshot().reachable() && !lock(&seen).is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(b.snapshot().reachable());
        assert!(
            lock(&seen)
                .iter()
                .any(|(ns, c, n)| ns == "ns" && c == "basic" && *n == 3)
        );

        reg.remove("ns", "basic");
        assert!(reg.get("ns", "basic").is_none());
        assert_eq!(reg.len(), 1);
    }

    #[tokio::test]
    async fn fast_refresh_is_held_per_object_until_it_settles() {
        let pd = FakePd::with_cluster(1, 0);
        let factory: PdFactory = Arc::new(move |_: &str, _: Option<&ClientTls>| {
            Ok(Arc::new(pd.clone()) as Arc<dyn PdApi>)
        });
        let policy = RefreshPolicy {
            fast: Duration::from_secs(1),
            slow: Duration::from_secs(60),
        };
        let reg = registry(factory, Arc::default(), policy);
        let e = reg.ensure("ns", "c", &plain("http://x")).unwrap();
        // Until PD was read once, the cache refreshes fast anyway.
        e.cache.refresh().await;
        assert_eq!(e.cache.interval(), policy.slow);
        e.hold_fast("PDGroup/pd", true);
        e.hold_fast("PDGroup/pd", true);
        e.hold_fast("PD/pd-a", true);
        assert_eq!(e.cache.interval(), policy.fast);
        e.hold_fast("PDGroup/pd", false);
        assert_eq!(e.cache.interval(), policy.fast);
        e.hold_fast("PD/pd-a", false);
        assert_eq!(e.cache.interval(), policy.slow);
    }

    #[tokio::test]
    async fn a_write_through_the_entry_is_read_back_at_once() {
        let pd = FakePd::with_cluster(1, 4);
        let factory: PdFactory = Arc::new(move |_: &str, _: Option<&ClientTls>| {
            Ok(Arc::new(pd.clone()) as Arc<dyn PdApi>)
        });
        // Both intervals far longer than the test: only the write can
        // trigger the second read.
        let policy = RefreshPolicy {
            fast: Duration::from_secs(600),
            slow: Duration::from_secs(600),
        };
        let reg = registry(factory, Arc::default(), policy);
        let e = reg.ensure("ns", "c", &plain("http://x")).unwrap();
        let store = |e: &PdEntry| {
            e.snapshot()
                .stores
                .iter()
                .find(|s| s.id == StoreId(1))
                .map(pd_client::Store::is_removing)
        };
        for _ in 0..200 {
            if store(&e).is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(store(&e), Some(false));
        e.api.delete_store(StoreId(1)).await.unwrap();
        for _ in 0..200 {
            if store(&e) == Some(true) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(
            store(&e),
            Some(true),
            "the store's removal is not read back"
        );
    }
}
