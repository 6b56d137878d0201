//! The production client: leader discovery + retry policy + gRPC/HTTP calls.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::{Arc, Weak};
use std::time::Duration;

use async_trait::async_trait;
use reqwest::{Method, StatusCode};
use tokio::task::JoinHandle;
use tracing::{debug, warn};

use crate::api::PdApi;
use crate::config::{PdClientConfig, normalize_url};
use crate::discovery::{Discovery, LeaderView};
use crate::error::{PdError, Result};
use crate::grpc;
use crate::http::{self, API, EVICT_LEADER, HttpClient};
use crate::retry::RetryPolicy;
use crate::types::{
    ClusterId, DownPeer, Member, MemberHealth, MemberId, Members, Readiness, ReplicationConfig,
    Store, StoreId, UnhealthyRegion,
};

/// Client for a real PD cluster. Cheap to clone (clones share connections).
///
/// Reads that PD serves over gRPC (members, bootstrap state) go to the leader
/// found by discovery; operations go over HTTP to the leader's client URL.
/// Calls that fail because PD is unavailable (no leader, "not leader",
/// HTTP 503, transport error, timeout) re-discover the leader and are retried
/// according to [`RetryPolicy`]; other errors are returned at once.
#[derive(Debug, Clone)]
pub struct PdClient {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    discovery: Arc<Discovery>,
    http: HttpClient,
    retry: RetryPolicy,
    request_timeout: Duration,
    refresher: Option<JoinHandle<()>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(task) = &self.refresher {
            task.abort();
        }
    }
}

impl PdClient {
    /// Builds a client without contacting PD (discovery happens on first use).
    /// Fails only on configuration errors. Must be called inside a Tokio
    /// runtime: it starts the periodic member refresh.
    pub fn new(config: PdClientConfig) -> Result<Self> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|e| PdError::Config {
            message: "PdClient must be created inside a Tokio runtime".to_owned(),
            source: Some(Box::new(e)),
        })?;
        let discovery = Arc::new(Discovery::new(
            &config.endpoints,
            config.tls.clone(),
            config.connect_timeout,
            config.request_timeout,
        )?);
        let http = HttpClient::new(config.tls.as_ref(), config.connect_timeout)?;
        let refresher = (!config.member_refresh_interval.is_zero()).then(|| {
            runtime.spawn(refresh_periodically(
                Arc::downgrade(&discovery),
                config.member_refresh_interval,
            ))
        });
        Ok(Self {
            inner: Arc::new(Inner {
                discovery,
                http,
                retry: RetryPolicy {
                    max_attempts: config.retry.max_attempts.max(1),
                    ..config.retry
                },
                request_timeout: config.request_timeout,
                refresher,
            }),
        })
    }

    /// Builds a client and discovers the leader once, so an unreachable PD or
    /// mismatching seed URLs are reported right away.
    pub async fn connect(config: PdClientConfig) -> Result<Self> {
        let client = Self::new(config)?;
        client.inner.discovery.refresh().await?;
        Ok(client)
    }

    /// The cluster id learned by discovery, if discovery has succeeded.
    pub fn known_cluster_id(&self) -> Option<ClusterId> {
        self.inner.discovery.cluster_id()
    }

    /// The leader's client URL currently in use, if known.
    pub fn current_leader_url(&self) -> Option<String> {
        self.inner.discovery.current().map(|v| v.leader_url.clone())
    }

    /// The leader found by the last discovery, if any.
    pub fn current_leader(&self) -> Option<Member> {
        self.inner.discovery.current().map(|v| v.leader.clone())
    }

    /// Members as the HTTP API reports them (`GET /members`), cluster id checked.
    pub async fn members_via_http(&self) -> Result<Members> {
        let body = self
            .get("members", &format!("{API}/members"), "members")
            .await?;
        let members = http::decode::<http::JsonMembers>("members", &body)?.into_members();
        match self.known_cluster_id() {
            Some(expected) if expected != members.cluster_id => Err(PdError::ClusterIdMismatch {
                expected,
                got: members.cluster_id,
            }),
            _ => Ok(members),
        }
    }

    /// Forces a discovery round now (members, leader, cluster id check).
    pub async fn refresh_members(&self) -> Result<Members> {
        Ok(self.inner.discovery.refresh().await?.members.clone())
    }

    /// One store read over gRPC (`GetStore`): states, labels and region
    /// count, no leader count.
    pub async fn store_via_grpc(&self, id: StoreId) -> Result<Store> {
        let timeout = self.inner.request_timeout;
        self.with_leader("get_store", |v| {
            grpc::get_store(v.leader_channel.clone(), v.cluster_id, id, timeout)
        })
        .await
    }

    /// All stores over gRPC (`GetAllStores`), optionally without tombstones;
    /// no leader or region counts.
    pub async fn stores_via_grpc(&self, exclude_tombstone: bool) -> Result<Vec<Store>> {
        let timeout = self.inner.request_timeout;
        self.with_leader("get_all_stores", |v| {
            grpc::get_all_stores(
                v.leader_channel.clone(),
                v.cluster_id,
                exclude_tombstone,
                timeout,
            )
        })
        .await
    }

    /// The cluster id (HTTP `/cluster`, checked against the id learned at
    /// discovery). Not part of [`PdApi`]: the operator learns the id at
    /// discovery; for diagnostics and tests against a real PD.
    pub async fn cluster_id(&self) -> Result<ClusterId> {
        let body = self
            .get("cluster_id", &format!("{API}/cluster"), "cluster")
            .await?;
        let cluster: http::JsonCluster = http::decode("cluster_id", &body)?;
        let got = ClusterId(cluster.id);
        match self.known_cluster_id() {
            Some(expected) if expected != got => Err(PdError::ClusterIdMismatch { expected, got }),
            _ => Ok(got),
        }
    }

    /// Whether the cluster was bootstrapped by a TiKV store (gRPC `IsBootstrapped`).
    /// Not part of [`PdApi`]; for diagnostics and tests against a real PD.
    pub async fn is_bootstrapped(&self) -> Result<bool> {
        let timeout = self.inner.request_timeout;
        self.with_leader("is_bootstrapped", |v| {
            grpc::is_bootstrapped(v.leader_channel.clone(), v.cluster_id, timeout)
        })
        .await
    }

    /// The current PD leader (HTTP `/leader`). Not part of [`PdApi`] (the
    /// operator reads the leader from [`PdApi::members`]); for diagnostics
    /// and tests against a real PD.
    pub async fn leader(&self) -> Result<Member> {
        let body = self
            .get("leader", &format!("{API}/leader"), "leader")
            .await?;
        http::decode_leader(&body)
    }

    /// Deletes one label from a store. Idempotent for a missing key. Not part
    /// of [`PdApi`] (the operator only sets labels); for tests against a real PD.
    pub async fn delete_store_label(&self, id: StoreId, key: &str) -> Result<()> {
        let result = self
            .http(
                "delete_store_label",
                Method::DELETE,
                &format!("{API}/store/{id}/label"),
                Some(serde_json::Value::String(key.to_owned())),
                &format!("store {id}"),
            )
            .await;
        // PD answers 500 "... does not exist" for a missing key: already done.
        ok_if_message_contains(result, &["not exist", "not found"])
    }

    /// Runs `call` against the current leader, re-discovering and retrying
    /// with backoff on errors a new leader may fix. Every attempt has the
    /// request timeout.
    async fn with_leader<T, F, Fut>(&self, operation: &'static str, call: F) -> Result<T>
    where
        F: Fn(Arc<LeaderView>) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let inner = &self.inner;
        let mut stale = false;
        let mut attempt: u32 = 0;
        loop {
            let result = async {
                let view = match inner.discovery.current() {
                    Some(v) if !stale => v,
                    _ => inner.discovery.refresh().await?,
                };
                match tokio::time::timeout(inner.request_timeout, call(view)).await {
                    Ok(r) => r,
                    Err(_) => Err(PdError::Timeout {
                        operation,
                        after: inner.request_timeout,
                    }),
                }
            }
            .await;
            match result {
                Ok(value) => return Ok(value),
                Err(err) => {
                    attempt += 1;
                    if !err.needs_leader_refresh() || attempt >= inner.retry.max_attempts {
                        return Err(err);
                    }
                    let backoff = inner.retry.backoff(attempt - 1);
                    debug!(operation, attempt, ?backoff, error = %err, "PD call failed; re-discovering leader");
                    tokio::time::sleep(backoff).await;
                    stale = true;
                }
            }
        }
    }

    /// An HTTP request to the leader (with retries); returns the body of a
    /// 2xx answer, maps other statuses (503 is retried).
    async fn http(
        &self,
        operation: &'static str,
        method: Method,
        path: &str,
        body: Option<serde_json::Value>,
        what: &str,
    ) -> Result<Vec<u8>> {
        let inner = &self.inner;
        self.with_leader(operation, |v| {
            let url = format!("{}{path}", v.leader_url);
            let method = method.clone();
            let body = body.clone();
            async move {
                let (status, bytes) = inner
                    .http
                    .send(operation, method, &url, body, inner.request_timeout)
                    .await?;
                if status.is_success() {
                    Ok(bytes)
                } else {
                    Err(http::status_error(operation, status, &bytes, what))
                }
            }
        })
        .await
    }

    /// One GET of `path` on the member at `client_url` itself (not the
    /// leader), once; `local`: a follower answers it instead of forwarding it.
    async fn ask_member(
        &self,
        operation: &'static str,
        client_url: &str,
        path: &str,
        local: bool,
    ) -> Result<(StatusCode, Vec<u8>)> {
        let base = normalize_url(client_url, self.inner.discovery.tls_enabled());
        let url = format!("{base}{path}");
        self.inner
            .http
            .send_with(
                operation,
                Method::GET,
                &url,
                None,
                self.inner.request_timeout,
                local,
            )
            .await
    }

    async fn get(&self, operation: &'static str, path: &str, what: &str) -> Result<Vec<u8>> {
        self.http(operation, Method::GET, path, None, what).await
    }

    /// The names of the schedulers PD's leader runs. A new PD leader loads
    /// its schedulers (the persisted evict-leader entries among them) only
    /// once it has collected Region heartbeats, and lists none until then:
    /// an empty list is [`PdError::Unavailable`], since what PD would answer
    /// about evict-leader entries in that window is not what it will do.
    async fn loaded_schedulers(&self) -> Result<Vec<String>> {
        let body = self
            .get(
                "evicting_stores",
                &format!("{API}/schedulers"),
                "schedulers",
            )
            .await?;
        let names: Option<Vec<String>> = http::decode("evicting_stores", &body)?;
        let names = names.unwrap_or_default();
        if names.is_empty() {
            return Err(PdError::unavailable(
                "PD's leader has not loaded its schedulers yet (a new leader waits for Region \
                 heartbeats first); evict-leader entries cannot be read or changed now",
            ));
        }
        Ok(names)
    }

    /// The single evict-leader scheduler's store list; empty if PD lacks it.
    async fn single_scheduler_stores(&self) -> Result<BTreeSet<StoreId>> {
        let path = format!("{API}/scheduler-config/{EVICT_LEADER}/list");
        match self.get("evicting_stores", &path, EVICT_LEADER).await {
            Ok(body) => http::decode_evict_config(&body),
            Err(e) if e.is_already_gone() => Ok(BTreeSet::new()),
            Err(e) => Err(e),
        }
    }
}

async fn refresh_periodically(discovery: Weak<Discovery>, every: Duration) {
    let mut interval = tokio::time::interval(every);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    interval.tick().await;
    loop {
        interval.tick().await;
        let Some(d) = discovery.upgrade() else {
            return;
        };
        if let Err(e) = d.refresh().await {
            warn!(error = %e, "periodic PD member refresh failed");
        }
    }
}

fn ok_if_message_contains(result: Result<Vec<u8>>, needles: &[&str]) -> Result<()> {
    match result {
        Ok(_) => Ok(()),
        Err(PdError::Rejected { message, .. }) if needles.iter().any(|n| message.contains(n)) => {
            Ok(())
        }
        Err(e) => Err(e),
    }
}

#[async_trait]
impl PdApi for PdClient {
    async fn members(&self) -> Result<Members> {
        let timeout = self.inner.request_timeout;
        self.with_leader("get_members", |v| async move {
            let members = grpc::get_members(v.leader_channel.clone(), timeout).await?;
            if members.cluster_id != v.cluster_id {
                return Err(PdError::ClusterIdMismatch {
                    expected: v.cluster_id,
                    got: members.cluster_id,
                });
            }
            Ok(members)
        })
        .await
    }

    async fn health(&self) -> Result<Vec<MemberHealth>> {
        let body = self
            .get("health", &format!("{API}/health"), "health")
            .await?;
        http::decode_health(&body)
    }

    async fn member_ready(&self, client_url: &str) -> Result<Readiness> {
        // Asked of that member directly, once: readiness is per member.
        let (status, _) = self
            .ask_member("member_ready", client_url, "/pd/api/v2/ready", false)
            .await?;
        Ok(match status {
            s if s.is_success() => Readiness::Ready,
            StatusCode::NOT_FOUND => Readiness::Unsupported,
            _ => Readiness::NotReady,
        })
    }

    async fn member_started(&self, client_url: &str) -> Result<Option<i64>> {
        let path = format!("{API}/status");
        let (status, body) = self
            .ask_member("member_started", client_url, &path, true)
            .await?;
        if !status.is_success() {
            let what = format!("{client_url}{path}");
            return Err(http::status_error("member_started", status, &body, &what));
        }
        http::decode_start(&body)
    }

    async fn transfer_leader(&self, to: &str) -> Result<()> {
        self.http(
            "transfer_leader",
            Method::POST,
            &format!("{API}/leader/transfer/{to}"),
            None,
            &format!("PD member {to}"),
        )
        .await?;
        Ok(())
    }

    async fn remove_member(&self, id: MemberId) -> Result<()> {
        let what = format!("PD member {id}");
        match self
            .http(
                "remove_member",
                Method::DELETE,
                &format!("{API}/members/id/{id}"),
                None,
                &what,
            )
            .await
        {
            Ok(_) => Ok(()),
            // etcd answers "etcdserver: member not found" (PD: 500) for an id
            // it does not know: the goal is reached.
            Err(PdError::Rejected { message, .. }) if message.contains("member not found") => {
                Err(PdError::NotFound {
                    what: format!("{what}: {message}"),
                })
            }
            Err(e) => Err(e),
        }
    }

    async fn stores(&self) -> Result<Vec<Store>> {
        let body = self
            .get(
                "stores",
                &format!("{API}/stores?state=0&state=1&state=2"),
                "stores",
            )
            .await?;
        http::decode_stores(&body)
    }

    async fn store(&self, id: StoreId) -> Result<Store> {
        let body = self
            .get(
                "store",
                &format!("{API}/store/{id}"),
                &format!("store {id}"),
            )
            .await?;
        http::decode_store(&body)
    }

    async fn delete_store(&self, id: StoreId) -> Result<()> {
        self.http(
            "delete_store",
            Method::DELETE,
            &format!("{API}/store/{id}"),
            None,
            &format!("store {id}"),
        )
        .await?;
        Ok(())
    }

    async fn cancel_store_removal(&self, id: StoreId) -> Result<()> {
        self.http(
            "cancel_store_removal",
            Method::POST,
            &format!("{API}/store/{id}/state?state=Up"),
            None,
            &format!("store {id}"),
        )
        .await?;
        Ok(())
    }

    async fn set_store_labels(&self, id: StoreId, labels: &BTreeMap<String, String>) -> Result<()> {
        let body = serde_json::to_value(labels).map_err(|e| PdError::config(e.to_string()))?;
        self.http(
            "set_store_labels",
            Method::POST,
            &format!("{API}/store/{id}/label"),
            Some(body),
            &format!("store {id}"),
        )
        .await?;
        Ok(())
    }

    async fn add_evict_leader(&self, id: StoreId) -> Result<()> {
        // Adding while the leader has not loaded its schedulers would create
        // a new evict-leader scheduler holding only this store and overwrite
        // the persisted one (dropping every other store's entry).
        self.loaded_schedulers().await?;
        let body = serde_json::json!({ "name": EVICT_LEADER, "store_id": id.0 });
        let result = self
            .http(
                "add_evict_leader",
                Method::POST,
                &format!("{API}/schedulers"),
                Some(body),
                &format!("store {id}"),
            )
            .await;
        // Older PDs refuse a second per-store scheduler as "existed".
        ok_if_message_contains(result, &["existed", "already exist"])
    }

    async fn remove_evict_leader(&self, id: StoreId) -> Result<()> {
        // While the leader has not loaded its schedulers PD answers 404 for
        // every scheduler; that must not read as "already removed", or the
        // persisted entry comes back once PD loads it and nobody removes it.
        self.loaded_schedulers().await?;
        let result = self
            .http(
                "remove_evict_leader",
                Method::DELETE,
                &format!("{API}/schedulers/{EVICT_LEADER}-{id}"),
                None,
                &format!("evict-leader scheduler of store {id}"),
            )
            .await;
        match result {
            Err(e) if e.is_already_gone() => Ok(()),
            other => ok_if_message_contains(other, &["not found", "not exist"]),
        }
    }

    async fn evicting_stores(&self) -> Result<BTreeSet<StoreId>> {
        let names = self.loaded_schedulers().await?;
        let (mut ids, single) = http::evicting_from_scheduler_names(&names);
        if single {
            ids.extend(self.single_scheduler_stores().await?);
        }
        Ok(ids)
    }

    async fn down_peers(&self) -> Result<Vec<DownPeer>> {
        let body = self
            .get(
                "down_peers",
                &format!("{API}/regions/check/down-peer"),
                "down peers",
            )
            .await?;
        http::decode_down_peers(&body)
    }

    async fn unhealthy_regions(&self) -> Result<Vec<UnhealthyRegion>> {
        let down = self
            .get(
                "unhealthy_regions",
                &format!("{API}/regions/check/down-peer"),
                "Regions with down peers",
            )
            .await?;
        let pending = self
            .get(
                "unhealthy_regions",
                &format!("{API}/regions/check/pending-peer"),
                "Regions with pending peers",
            )
            .await?;
        http::decode_unhealthy_regions(&[&down, &pending])
    }

    async fn replication_config(&self) -> Result<ReplicationConfig> {
        let body = self
            .get("replication_config", &format!("{API}/config"), "config")
            .await?;
        http::decode_replication(&body)
    }
}
