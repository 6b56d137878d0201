//! A [`PdApi`] that records every request in the operator's metrics
//! (count, latency, errors by category) and forwards it.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use pd_client::{
    DownPeer, MemberHealth, MemberId, Members, PdApi, Readiness, ReplicationConfig, Result, Store,
    StoreId, UnhealthyRegion,
};

use crate::metrics::{Metrics, PdErrorLabels, PdLabels};

/// Records and forwards every call to `inner`.
pub struct MeteredPd {
    inner: Arc<dyn PdApi>,
    metrics: Arc<Metrics>,
    after_write: Option<AfterWrite>,
}

/// Called after every successful request that changes PD's state.
pub type AfterWrite = Arc<dyn Fn() + Send + Sync>;

/// The operations that change PD's state (the rest only read).
const WRITES: &[&str] = &[
    "transfer_leader",
    "remove_member",
    "delete_store",
    "cancel_store_removal",
    "set_store_labels",
    "add_evict_leader",
    "remove_evict_leader",
];

impl std::fmt::Debug for MeteredPd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MeteredPd").finish_non_exhaustive()
    }
}

impl MeteredPd {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn PdApi>, metrics: Arc<Metrics>) -> Self {
        Self {
            inner,
            metrics,
            after_write: None,
        }
    }

    /// Calls `f` after every successful write (e.g. to read PD again at
    /// once: the state the operator just changed is what it waits on next).
    #[must_use]
    pub fn with_after_write(mut self, f: AfterWrite) -> Self {
        self.after_write = Some(f);
        self
    }

    async fn record<T>(&self, operation: &str, call: impl Future<Output = Result<T>>) -> Result<T> {
        let started = Instant::now();
        let out = call.await;
        let labels = PdLabels {
            operation: operation.to_owned(),
        };
        self.metrics.pd_requests.get_or_create(&labels).inc();
        self.metrics
            .pd_request_duration
            .get_or_create(&labels)
            .observe(started.elapsed().as_secs_f64());
        match &out {
            Err(e) => {
                self.metrics
                    .pd_request_errors
                    .get_or_create(&PdErrorLabels {
                        operation: operation.to_owned(),
                        category: e.category().to_owned(),
                    })
                    .inc();
            }
            Ok(_) => {
                if let Some(f) = self
                    .after_write
                    .as_ref()
                    .filter(|_| WRITES.contains(&operation))
                {
                    f();
                }
            }
        }
        out
    }
}

#[async_trait]
impl PdApi for MeteredPd {
    async fn members(&self) -> Result<Members> {
        self.record("members", self.inner.members()).await
    }
    async fn health(&self) -> Result<Vec<MemberHealth>> {
        self.record("health", self.inner.health()).await
    }
    async fn member_ready(&self, client_url: &str) -> Result<Readiness> {
        self.record("member_ready", self.inner.member_ready(client_url))
            .await
    }
    async fn member_started(&self, client_url: &str) -> Result<Option<i64>> {
        self.record("member_started", self.inner.member_started(client_url))
            .await
    }
    async fn transfer_leader(&self, to: &str) -> Result<()> {
        self.record("transfer_leader", self.inner.transfer_leader(to))
            .await
    }
    async fn remove_member(&self, id: MemberId) -> Result<()> {
        self.record("remove_member", self.inner.remove_member(id))
            .await
    }
    async fn stores(&self) -> Result<Vec<Store>> {
        self.record("stores", self.inner.stores()).await
    }
    async fn store(&self, id: StoreId) -> Result<Store> {
        self.record("store", self.inner.store(id)).await
    }
    async fn delete_store(&self, id: StoreId) -> Result<()> {
        self.record("delete_store", self.inner.delete_store(id))
            .await
    }
    async fn cancel_store_removal(&self, id: StoreId) -> Result<()> {
        self.record("cancel_store_removal", self.inner.cancel_store_removal(id))
            .await
    }
    async fn set_store_labels(&self, id: StoreId, labels: &BTreeMap<String, String>) -> Result<()> {
        self.record("set_store_labels", self.inner.set_store_labels(id, labels))
            .await
    }
    async fn add_evict_leader(&self, id: StoreId) -> Result<()> {
        self.record("add_evict_leader", self.inner.add_evict_leader(id))
            .await
    }
    async fn remove_evict_leader(&self, id: StoreId) -> Result<()> {
        self.record("remove_evict_leader", self.inner.remove_evict_leader(id))
            .await
    }
    async fn evicting_stores(&self) -> Result<BTreeSet<StoreId>> {
        self.record("evicting_stores", self.inner.evicting_stores())
            .await
    }
    async fn down_peers(&self) -> Result<Vec<DownPeer>> {
        self.record("down_peers", self.inner.down_peers()).await
    }
    async fn unhealthy_regions(&self) -> Result<Vec<UnhealthyRegion>> {
        self.record("unhealthy_regions", self.inner.unhealthy_regions())
            .await
    }
    async fn replication_config(&self) -> Result<ReplicationConfig> {
        self.record("replication_config", self.inner.replication_config())
            .await
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use pd_client::{FakeOp, FakePd, PdError};
    use prometheus_client::encoding::text::encode;
    use prometheus_client::registry::Registry;

    #[tokio::test]
    async fn counts_requests_and_errors_by_operation() {
        let mut registry = Registry::with_prefix("tikv_operator");
        let metrics = Arc::new(Metrics::new(&mut registry));
        let pd = FakePd::with_cluster(3, 0);
        let m = MeteredPd::new(Arc::new(pd.clone()), metrics);
        m.members().await.unwrap();
        m.members().await.unwrap();
        pd.inject_error(FakeOp::Health, PdError::unavailable("down"));
        assert!(m.health().await.is_err());
        let mut text = String::new();
        encode(&mut text, &registry).unwrap();
        assert!(
            text.contains("tikv_operator_pd_requests_total{operation=\"members\"} 2"),
            "{text}"
        );
        assert!(
            text.contains(
                "tikv_operator_pd_request_errors_total{operation=\"health\",category=\"unavailable\"} 1"
            ),
            "{text}"
        );
        assert!(!text.contains("operation=\"members\",category"), "{text}");
    }
}
