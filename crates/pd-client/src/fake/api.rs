//! The fake's answers to every [`PdApi`] call, from its in-memory state.

use std::collections::{BTreeMap, BTreeSet};

use async_trait::async_trait;

use crate::api::PdApi;
use crate::error::{PdError, Result};
use crate::types::{
    DownPeer, MemberHealth, MemberId, Members, NodeState, Readiness, ReplicationConfig, Store,
    StoreId, StoreState, UnhealthyRegion,
};

use super::{FakeOp, FakePd};

#[async_trait]
impl PdApi for FakePd {
    async fn members(&self) -> Result<Members> {
        let s = self.enter(FakeOp::Members, true)?;
        let leader = s
            .leader
            .as_deref()
            .and_then(|l| s.member(l))
            .map(|m| m.member.clone());
        Ok(Members {
            cluster_id: s.cluster_id,
            members: s.members.iter().map(|m| m.member.clone()).collect(),
            etcd_leader: leader.clone(),
            leader,
        })
    }

    async fn health(&self) -> Result<Vec<MemberHealth>> {
        let s = self.enter(FakeOp::Health, true)?;
        Ok(s.members
            .iter()
            .map(|m| MemberHealth {
                name: m.member.name.clone(),
                id: m.member.id,
                client_urls: m.member.client_urls.clone(),
                healthy: m.healthy,
            })
            .collect())
    }

    async fn member_ready(&self, client_url: &str) -> Result<Readiness> {
        // Asks one member directly: works without a leader.
        let s = self.enter(FakeOp::MemberReady, false)?;
        let m = s.member_at(client_url)?;
        Ok(if m.ready && s.leader.is_some() {
            Readiness::Ready
        } else {
            Readiness::NotReady
        })
    }

    async fn member_started(&self, client_url: &str) -> Result<Option<i64>> {
        let s = self.enter(FakeOp::MemberStarted, false)?;
        Ok(s.member_at(client_url)?.started)
    }

    async fn transfer_leader(&self, to: &str) -> Result<()> {
        let mut s = self.enter(FakeOp::TransferLeader, true)?;
        let Some(m) = s.member(to) else {
            return Err(PdError::NotFound {
                what: format!("PD member {to}"),
            });
        };
        if !m.healthy {
            return Err(PdError::Rejected {
                operation: "transfer_leader",
                status: Some(500),
                message: format!("member {to} is not healthy"),
            });
        }
        s.leader = Some(to.to_owned());
        Ok(())
    }

    async fn remove_member(&self, id: MemberId) -> Result<()> {
        let mut s = self.enter(FakeOp::RemoveMember, true)?;
        let Some(pos) = s.members.iter().position(|m| m.member.id == id) else {
            return Err(PdError::NotFound {
                what: format!("PD member {id}"),
            });
        };
        let name = s.members[pos].member.name.clone();
        // etcd's strict reconfiguration check: the started members left must
        // still form a quorum of the new membership.
        let remaining = s.members.len() - 1;
        let started_left = s.healthy_count() - usize::from(s.members[pos].healthy);
        if remaining == 0 || started_left <= remaining / 2 {
            return Err(PdError::Rejected {
                operation: "remove_member",
                status: Some(500),
                message: "etcdserver: re-configuration failed due to not enough started members"
                    .to_owned(),
            });
        }
        s.members.remove(pos);
        if !name.is_empty() && s.leader.as_deref() == Some(name.as_str()) {
            s.leader = None;
        }
        s.elect_if_needed();
        Ok(())
    }

    async fn stores(&self) -> Result<Vec<Store>> {
        let s = self.enter(FakeOp::Stores, true)?;
        Ok(s.stores.values().cloned().collect())
    }

    async fn store(&self, id: StoreId) -> Result<Store> {
        let s = self.enter(FakeOp::Store, true)?;
        s.store(id).cloned()
    }

    async fn delete_store(&self, id: StoreId) -> Result<()> {
        let mut s = self.enter(FakeOp::DeleteStore, true)?;
        let store = s.store(id)?.clone();
        match store.state {
            StoreState::Tombstone => Err(PdError::AlreadyRemoved {
                what: format!("store {id}"),
            }),
            StoreState::Offline => Ok(()),
            StoreState::Up => {
                let up = s
                    .stores
                    .values()
                    .filter(|st| st.state == StoreState::Up)
                    .count() as u64;
                let max_replicas = s.replication.max_replicas;
                if up.saturating_sub(1) < max_replicas {
                    return Err(PdError::Rejected {
                        operation: "delete_store",
                        status: Some(400),
                        message: format!(
                            "the number of the up stores ({up}) minus one is less than \
                             max-replicas ({max_replicas}); store {id} cannot be removed"
                        ),
                    });
                }
                let st = s.store_mut(id)?;
                st.state = StoreState::Offline;
                st.node_state = NodeState::Removing;
                Ok(())
            }
        }
    }

    async fn cancel_store_removal(&self, id: StoreId) -> Result<()> {
        let mut s = self.enter(FakeOp::CancelStoreRemoval, true)?;
        let st = s.store_mut(id)?;
        match st.state {
            StoreState::Tombstone => Err(PdError::AlreadyRemoved {
                what: format!("store {id}"),
            }),
            StoreState::Up => Ok(()),
            StoreState::Offline => {
                st.state = StoreState::Up;
                st.node_state = NodeState::Serving;
                Ok(())
            }
        }
    }

    async fn set_store_labels(&self, id: StoreId, labels: &BTreeMap<String, String>) -> Result<()> {
        let mut s = self.enter(FakeOp::SetStoreLabels, true)?;
        let st = s.store_mut(id)?;
        if st.state == StoreState::Tombstone {
            return Err(PdError::AlreadyRemoved {
                what: format!("store {id}"),
            });
        }
        if let Some((k, _)) = labels.iter().find(|(k, v)| k.is_empty() || v.is_empty()) {
            return Err(PdError::Rejected {
                operation: "set_store_labels",
                status: Some(400),
                message: format!("invalid label {k:?}: keys and values must not be empty"),
            });
        }
        st.labels
            .extend(labels.iter().map(|(k, v)| (k.clone(), v.clone())));
        Ok(())
    }

    async fn add_evict_leader(&self, id: StoreId) -> Result<()> {
        // A round trip: another task may run before PD has the entry (what
        // two reconcilers adding at the same moment see).
        tokio::task::yield_now().await;
        let mut s = self.enter(FakeOp::AddEvictLeader, true)?;
        s.schedulers_loaded()?;
        if s.store(id)?.state == StoreState::Tombstone {
            return Err(PdError::AlreadyRemoved {
                what: format!("store {id}"),
            });
        }
        s.evicting.insert(id);
        Ok(())
    }

    async fn remove_evict_leader(&self, id: StoreId) -> Result<()> {
        let mut s = self.enter(FakeOp::RemoveEvictLeader, true)?;
        s.schedulers_loaded()?;
        s.evicting.remove(&id);
        Ok(())
    }

    async fn evicting_stores(&self) -> Result<BTreeSet<StoreId>> {
        let s = self.enter(FakeOp::EvictingStores, true)?;
        s.schedulers_loaded()?;
        Ok(s.evicting.clone())
    }

    async fn down_peers(&self) -> Result<Vec<DownPeer>> {
        let s = self.enter(FakeOp::DownPeers, true)?;
        Ok(s.down_peers.clone())
    }

    async fn unhealthy_regions(&self) -> Result<Vec<UnhealthyRegion>> {
        let s = self.enter(FakeOp::UnhealthyRegions, true)?;
        Ok(s.unhealthy_regions.clone())
    }

    async fn replication_config(&self) -> Result<ReplicationConfig> {
        let s = self.enter(FakeOp::ReplicationConfig, true)?;
        Ok(s.replication.clone())
    }
}
