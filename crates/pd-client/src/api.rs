//! The trait reconcilers depend on. The real client ([`crate::PdClient`]) and
//! the fake (`FakePd`, feature `fake`) implement it.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use async_trait::async_trait;

use crate::error::Result;
use crate::types::{
    DownPeer, MemberHealth, MemberId, Members, Readiness, ReplicationConfig, Store, StoreId,
    UnhealthyRegion,
};

/// What the operator asks of PD. Object safe: hold it as `Arc<dyn PdApi>`.
///
/// Removal-style calls report a target that no longer exists as
/// [`crate::PdError::NotFound`] / [`crate::PdError::AlreadyRemoved`]
/// (see [`crate::PdError::is_already_gone`]); where the documentation says a
/// call is idempotent, it succeeds instead.
#[async_trait]
pub trait PdApi: Send + Sync {
    /// Members, leader and etcd leader (gRPC `GetMembers` on the leader).
    async fn members(&self) -> Result<Members>;

    /// Health of every member (HTTP `/health`).
    async fn health(&self) -> Result<Vec<MemberHealth>>;

    /// Readiness of the member reachable at `client_url` (HTTP `/pd/api/v2/ready`
    /// asked of that member directly, not of the leader).
    async fn member_ready(&self, client_url: &str) -> Result<Readiness>;

    /// Start time (unix seconds) of the PD process answering at `client_url`
    /// (HTTP `/status` asked of that member itself: a follower forwards the
    /// request to the leader unless told to answer it). `None` when the
    /// member does not report one.
    async fn member_started(&self, client_url: &str) -> Result<Option<i64>>;

    /// Asks the leader to hand leadership to the member named `to`.
    async fn transfer_leader(&self, to: &str) -> Result<()>;

    /// Removes the member with id `id` from PD (and its etcd). By id, not by
    /// name: a member added to etcd whose process has not started yet has
    /// no name. A member that is already gone is [`crate::PdError::NotFound`].
    async fn remove_member(&self, id: MemberId) -> Result<()>;

    /// All stores PD knows, Tombstone ones included, with leader and region counts.
    async fn stores(&self) -> Result<Vec<Store>>;

    /// One store; [`crate::PdError::NotFound`] if PD does not know it.
    async fn store(&self, id: StoreId) -> Result<Store>;

    /// Starts removing a store (it goes Offline/Removing, later Tombstone/Removed).
    /// Idempotent for a store already being removed. Errors: NotFound,
    /// AlreadyRemoved, Rejected (e.g. too few Up stores for `max-replicas`).
    async fn delete_store(&self, id: StoreId) -> Result<()>;

    /// Cancels a removal in progress (the store goes back to Up). Idempotent for
    /// an Up store; AlreadyRemoved for a Tombstone store.
    async fn cancel_store_removal(&self, id: StoreId) -> Result<()>;

    /// Sets (adds or overwrites) labels on a store; other labels are kept.
    async fn set_store_labels(&self, id: StoreId, labels: &BTreeMap<String, String>) -> Result<()>;

    /// Starts evicting region leaders from a store. Idempotent.
    /// [`crate::PdError::Unavailable`] while PD's leader has not loaded its
    /// schedulers (a new leader lists none until it has collected Region
    /// heartbeats; adding then would overwrite the persisted entries).
    async fn add_evict_leader(&self, id: StoreId) -> Result<()>;

    /// Stops evicting leaders from a store. Idempotent (no eviction = success).
    /// [`crate::PdError::Unavailable`] while PD's leader has not loaded its
    /// schedulers (PD then answers "not found" for an entry it still holds).
    async fn remove_evict_leader(&self, id: StoreId) -> Result<()>;

    /// Stores whose leaders are being evicted (both the per-store scheduler
    /// naming of older PDs and the single scheduler of newer ones).
    /// [`crate::PdError::Unavailable`] while PD's leader has not loaded its
    /// schedulers.
    async fn evicting_stores(&self) -> Result<BTreeSet<StoreId>>;

    /// Region peers reported down (check before restarting another store).
    async fn down_peers(&self) -> Result<Vec<DownPeer>>;

    /// Regions with a down or a pending peer, merged by Region (PD's Region
    /// health checks `down-peer` and `pending-peer`). Failover reads it before
    /// replacing a store: no Region may lose its majority.
    async fn unhealthy_regions(&self) -> Result<Vec<UnhealthyRegion>>;

    /// Replication settings (`max-replicas`, `location-labels`).
    async fn replication_config(&self) -> Result<ReplicationConfig>;
}

macro_rules! forward_pd_api {
    ($ty:ty) => {
        #[async_trait]
        impl<T: PdApi + ?Sized> PdApi for $ty {
            async fn members(&self) -> Result<Members> {
                (**self).members().await
            }
            async fn health(&self) -> Result<Vec<MemberHealth>> {
                (**self).health().await
            }
            async fn member_ready(&self, client_url: &str) -> Result<Readiness> {
                (**self).member_ready(client_url).await
            }
            async fn member_started(&self, client_url: &str) -> Result<Option<i64>> {
                (**self).member_started(client_url).await
            }
            async fn transfer_leader(&self, to: &str) -> Result<()> {
                (**self).transfer_leader(to).await
            }
            async fn remove_member(&self, id: MemberId) -> Result<()> {
                (**self).remove_member(id).await
            }
            async fn stores(&self) -> Result<Vec<Store>> {
                (**self).stores().await
            }
            async fn store(&self, id: StoreId) -> Result<Store> {
                (**self).store(id).await
            }
            async fn delete_store(&self, id: StoreId) -> Result<()> {
                (**self).delete_store(id).await
            }
            async fn cancel_store_removal(&self, id: StoreId) -> Result<()> {
                (**self).cancel_store_removal(id).await
            }
            async fn set_store_labels(
                &self,
                id: StoreId,
                labels: &BTreeMap<String, String>,
            ) -> Result<()> {
                (**self).set_store_labels(id, labels).await
            }
            async fn add_evict_leader(&self, id: StoreId) -> Result<()> {
                (**self).add_evict_leader(id).await
            }
            async fn remove_evict_leader(&self, id: StoreId) -> Result<()> {
                (**self).remove_evict_leader(id).await
            }
            async fn evicting_stores(&self) -> Result<BTreeSet<StoreId>> {
                (**self).evicting_stores().await
            }
            async fn down_peers(&self) -> Result<Vec<DownPeer>> {
                (**self).down_peers().await
            }
            async fn unhealthy_regions(&self) -> Result<Vec<UnhealthyRegion>> {
                (**self).unhealthy_regions().await
            }
            async fn replication_config(&self) -> Result<ReplicationConfig> {
                (**self).replication_config().await
            }
        }
    };
}

forward_pd_api!(Arc<T>);
forward_pd_api!(Box<T>);

#[cfg(test)]
mod tests {
    use super::*;

    // Compile-time check: the trait is object safe and the blanket impls apply.
    #[allow(dead_code)]
    fn assert_object_safe(api: Arc<dyn PdApi>) -> impl PdApi {
        let boxed: Box<dyn PdApi> = Box::new(api.clone());
        let _ = boxed;
        api
    }
}
