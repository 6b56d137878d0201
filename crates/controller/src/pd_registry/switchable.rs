//! A PD client that can be replaced under its users.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use pd_client::{
    DownPeer, MemberHealth, MemberId, Members, PdApi, Readiness, ReplicationConfig, Store, StoreId,
    UnhealthyRegion,
};

/// A [`PdApi`] whose client can be replaced while in use: every request goes
/// to the client current when it starts. A Cluster's client is replaced
/// when its client Secret changes; the state cache and everything built on
/// it stay.
pub(super) struct SwitchablePd {
    current: RwLock<Arc<dyn PdApi>>,
}

impl SwitchablePd {
    pub(super) fn new(client: Arc<dyn PdApi>) -> Self {
        Self {
            current: RwLock::new(client),
        }
    }

    fn get(&self) -> Arc<dyn PdApi> {
        self.current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    pub(super) fn replace(&self, client: Arc<dyn PdApi>) {
        *self
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = client;
    }
}

#[async_trait]
impl PdApi for SwitchablePd {
    async fn members(&self) -> pd_client::Result<Members> {
        self.get().members().await
    }
    async fn health(&self) -> pd_client::Result<Vec<MemberHealth>> {
        self.get().health().await
    }
    async fn member_ready(&self, client_url: &str) -> pd_client::Result<Readiness> {
        self.get().member_ready(client_url).await
    }
    async fn member_started(&self, client_url: &str) -> pd_client::Result<Option<i64>> {
        self.get().member_started(client_url).await
    }
    async fn transfer_leader(&self, to: &str) -> pd_client::Result<()> {
        self.get().transfer_leader(to).await
    }
    async fn remove_member(&self, id: MemberId) -> pd_client::Result<()> {
        self.get().remove_member(id).await
    }
    async fn stores(&self) -> pd_client::Result<Vec<Store>> {
        self.get().stores().await
    }
    async fn store(&self, id: StoreId) -> pd_client::Result<Store> {
        self.get().store(id).await
    }
    async fn delete_store(&self, id: StoreId) -> pd_client::Result<()> {
        self.get().delete_store(id).await
    }
    async fn cancel_store_removal(&self, id: StoreId) -> pd_client::Result<()> {
        self.get().cancel_store_removal(id).await
    }
    async fn set_store_labels(
        &self,
        id: StoreId,
        labels: &BTreeMap<String, String>,
    ) -> pd_client::Result<()> {
        self.get().set_store_labels(id, labels).await
    }
    async fn add_evict_leader(&self, id: StoreId) -> pd_client::Result<()> {
        self.get().add_evict_leader(id).await
    }
    async fn remove_evict_leader(&self, id: StoreId) -> pd_client::Result<()> {
        self.get().remove_evict_leader(id).await
    }
    async fn evicting_stores(&self) -> pd_client::Result<BTreeSet<StoreId>> {
        self.get().evicting_stores().await
    }
    async fn down_peers(&self) -> pd_client::Result<Vec<DownPeer>> {
        self.get().down_peers().await
    }
    async fn unhealthy_regions(&self) -> pd_client::Result<Vec<UnhealthyRegion>> {
        self.get().unhealthy_regions().await
    }
    async fn replication_config(&self) -> pd_client::Result<ReplicationConfig> {
        self.get().replication_config().await
    }
}
