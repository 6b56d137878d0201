//! An in-memory PD with PD's semantics, for reconciler tests (feature `fake`).
//!
//! Time does not pass by itself: [`FakePd::tick`] is one step of PD's
//! background work (leader eviction, region migration off removing stores,
//! tombstoning empty removing stores, Preparing -> Serving).
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! use pd_client::{FakePd, PdApi, StoreId, NodeState};
//! let pd = FakePd::with_cluster(3, 4);
//! pd.delete_store(StoreId(4)).await.unwrap();
//! pd.advance(100);
//! assert_eq!(pd.store(StoreId(4)).await.unwrap().node_state, NodeState::Removed);
//! # });
//! ```

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::error::{PdError, Result};
use crate::types::{
    ClusterId, DownPeer, Member, MemberId, NodeState, ReplicationConfig, Store, StoreId,
    StoreLiveness, StoreState, UnhealthyRegion,
};

/// The trait method a call, an injected error or a log entry refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[allow(missing_docs)]
pub enum FakeOp {
    Members,
    Health,
    MemberReady,
    MemberStarted,
    TransferLeader,
    RemoveMember,
    Stores,
    Store,
    DeleteStore,
    CancelStoreRemoval,
    SetStoreLabels,
    AddEvictLeader,
    RemoveEvictLeader,
    EvictingStores,
    DownPeers,
    UnhealthyRegions,
    ReplicationConfig,
}

#[derive(Debug)]
struct FakeMember {
    member: Member,
    healthy: bool,
    ready: bool,
    /// What `member_started` answers (`None`: not reported).
    started: Option<i64>,
}

#[derive(Debug)]
struct FakeState {
    cluster_id: ClusterId,
    members: Vec<FakeMember>,
    next_member_id: u64,
    leader: Option<String>,
    stores: BTreeMap<StoreId, Store>,
    evicting: BTreeSet<StoreId>,
    /// Whether PD's leader has loaded its schedulers (false for a while
    /// after a leader change).
    schedulers_loaded: bool,
    replication: ReplicationConfig,
    down_peers: Vec<DownPeer>,
    unhealthy_regions: Vec<UnhealthyRegion>,
    unreachable: bool,
    injected: VecDeque<(Option<FakeOp>, PdError)>,
    calls: Vec<FakeOp>,
    ticks: u64,
    leaders_moved_per_tick: u64,
    regions_moved_per_tick: u64,
}

/// In-memory PD. Cheap to clone; clones share state, so a test keeps one
/// handle to drive time and inspect state while the code under test holds
/// another as `Arc<dyn PdApi>`.
#[derive(Debug, Clone)]
pub struct FakePd {
    state: Arc<Mutex<FakeState>>,
}

impl Default for FakePd {
    fn default() -> Self {
        Self::new(ClusterId(6_981_209_371_002_452_019))
    }
}

impl FakePd {
    /// An empty, not yet bootstrapped cluster with no members.
    pub fn new(cluster_id: ClusterId) -> Self {
        Self {
            state: Arc::new(Mutex::new(FakeState {
                cluster_id,
                members: Vec::new(),
                // Real member ids are large; start above 2^53 on purpose.
                next_member_id: (1 << 53) + 1,
                leader: None,
                stores: BTreeMap::new(),
                evicting: BTreeSet::new(),
                schedulers_loaded: true,
                replication: ReplicationConfig::default(),
                down_peers: Vec::new(),
                unhealthy_regions: Vec::new(),
                unreachable: false,
                injected: VecDeque::new(),
                calls: Vec::new(),
                ticks: 0,
                leaders_moved_per_tick: 10,
                regions_moved_per_tick: 10,
            })),
        }
    }

    /// A bootstrapped cluster: members `pd-0..pd-{members-1}` (leader `pd-0`)
    /// and Serving stores `1..=stores`, each holding 20 regions and 10 leaders.
    pub fn with_cluster(members: usize, stores: u64) -> Self {
        let pd = Self::default();
        for i in 0..members {
            pd.add_member(&format!("pd-{i}"));
        }
        for id in 1..=stores {
            pd.add_store(StoreId(id), &format!("tikv-{}:20160", id - 1));
            pd.set_store_counts(StoreId(id), 20, 10);
        }
        pd.tick();
        pd
    }

    fn lock(&self) -> MutexGuard<'_, FakeState> {
        // A panic while holding the lock leaves consistent-enough state for a fake.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    // ----- test setup and control -----

    /// Adds a healthy, ready member named `name` with client URL
    /// `http://{name}:2379`. The first member becomes leader.
    pub fn add_member(&self, name: &str) -> Member {
        let mut s = self.lock();
        let id = s.next_member_id;
        s.next_member_id += 1;
        let member = Member {
            name: name.to_owned(),
            id: MemberId(id),
            peer_urls: vec![format!("http://{name}:2380")],
            client_urls: vec![format!("http://{name}:2379")],
            binary_version: "v8.5.0".to_owned(),
            git_hash: String::new(),
        };
        s.members.push(FakeMember {
            member: member.clone(),
            healthy: true,
            ready: true,
            started: None,
        });
        s.elect_if_needed();
        member
    }

    /// The id of the member named `name` (panics if there is none: a test
    /// helper).
    pub fn member_id(&self, name: &str) -> MemberId {
        self.lock()
            .members
            .iter()
            .find(|m| m.member.name == name)
            .map(|m| m.member.id)
            .unwrap_or_else(|| panic!("no PD member named {name}"))
    }

    /// Adds a member as `--join` does before its process starts: etcd lists
    /// it with its peer URL, no name and no client URL, and it is not
    /// healthy.
    pub fn add_unstarted_member(&self, peer_url: &str) -> MemberId {
        let mut s = self.lock();
        let id = MemberId(s.next_member_id);
        s.next_member_id += 1;
        s.members.push(FakeMember {
            member: Member {
                name: String::new(),
                id,
                peer_urls: vec![peer_url.to_owned()],
                client_urls: Vec::new(),
                binary_version: String::new(),
                git_hash: String::new(),
            },
            healthy: false,
            ready: false,
            started: None,
        });
        id
    }

    /// Marks a member up or down; the leader is re-elected when needed and
    /// possible (a quorum of healthy members).
    pub fn set_member_healthy(&self, name: &str, healthy: bool) {
        let mut s = self.lock();
        if let Some(m) = s.members.iter_mut().find(|m| m.member.name == name) {
            m.healthy = healthy;
        }
        s.elect_if_needed();
    }

    /// Sets what `member_ready` answers for a member.
    pub fn set_member_ready(&self, name: &str, ready: bool) {
        let mut s = self.lock();
        if let Some(m) = s.members.iter_mut().find(|m| m.member.name == name) {
            m.ready = ready;
        }
    }

    /// Sets the process start time (unix seconds) `member_started` answers
    /// for a member (`None`: not reported, the default).
    pub fn set_member_started(&self, name: &str, started: Option<i64>) {
        let mut s = self.lock();
        if let Some(m) = s.members.iter_mut().find(|m| m.member.name == name) {
            m.started = started;
        }
    }

    /// The current leader's name.
    pub fn leader_name(&self) -> Option<String> {
        self.lock().leader.clone()
    }

    /// Names of all members.
    pub fn member_names(&self) -> Vec<String> {
        self.lock()
            .members
            .iter()
            .map(|m| m.member.name.clone())
            .collect()
    }

    /// Registers a store as its first heartbeat would: Up and Preparing (it
    /// becomes Serving at the next tick).
    pub fn add_store(&self, id: StoreId, address: &str) {
        let mut s = self.lock();
        s.stores.insert(
            id,
            Store {
                id,
                address: address.to_owned(),
                status_address: String::new(),
                version: "8.5.0".to_owned(),
                labels: BTreeMap::new(),
                state: StoreState::Up,
                node_state: NodeState::Preparing,
                liveness: StoreLiveness::Alive,
                physically_destroyed: false,
                leader_count: Some(0),
                region_count: 0,
                capacity_bytes: Some(100 << 30),
                available_bytes: Some(90 << 30),
                uptime: None,
                start_timestamp: None,
                last_heartbeat: None,
            },
        );
    }

    /// Sets a store's region and leader counts.
    pub fn set_store_counts(&self, id: StoreId, regions: u64, leaders: u64) {
        let mut s = self.lock();
        if let Some(st) = s.stores.get_mut(&id) {
            st.region_count = regions;
            st.leader_count = Some(leaders.min(regions));
        }
    }

    /// Sets a store's heartbeat liveness (e.g. Down when its Pod is gone).
    pub fn set_store_liveness(&self, id: StoreId, liveness: StoreLiveness) {
        let mut s = self.lock();
        if let Some(st) = s.stores.get_mut(&id) {
            st.liveness = liveness;
        }
    }

    /// Sets when the store's process started (unix seconds), as a store
    /// (re-)registering reports it.
    pub fn set_store_started(&self, id: StoreId, unix_seconds: i64) {
        let mut s = self.lock();
        if let Some(st) = s.stores.get_mut(&id) {
            st.start_timestamp = Some(unix_seconds);
        }
    }

    /// Stores with an evict-leader entry, without going through the API (no
    /// call is logged, no error injected).
    pub fn evicting_snapshot(&self) -> BTreeSet<StoreId> {
        self.lock().evicting.clone()
    }

    /// A copy of a store's current state, without going through the API
    /// (no call is logged, no error injected).
    pub fn store_snapshot(&self, id: StoreId) -> Option<Store> {
        self.lock().stores.get(&id).cloned()
    }

    /// Sets the replication config.
    pub fn set_replication(&self, config: ReplicationConfig) {
        self.lock().replication = config;
    }

    /// Sets the Regions PD's health checks report with down or pending peers.
    pub fn set_unhealthy_regions(&self, regions: Vec<UnhealthyRegion>) {
        self.lock().unhealthy_regions = regions;
    }

    /// Sets the down peers PD reports.
    pub fn set_down_peers(&self, peers: Vec<DownPeer>) {
        self.lock().down_peers = peers;
    }

    /// Whether PD's leader has loaded its schedulers. While not, the
    /// evict-leader calls answer [`PdError::Unavailable`] (as the real client
    /// does) and the entries stay as they are.
    pub fn set_schedulers_loaded(&self, loaded: bool) {
        self.lock().schedulers_loaded = loaded;
    }

    /// When `true`, every call fails with [`PdError::Unavailable`] (an outage).
    pub fn set_unreachable(&self, unreachable: bool) {
        self.lock().unreachable = unreachable;
    }

    /// The next call of `op` fails with `error` (once). Errors queue up.
    pub fn inject_error(&self, op: FakeOp, error: PdError) {
        self.lock().injected.push_back((Some(op), error));
    }

    /// The next call of any method fails with `error` (once).
    pub fn inject_error_any(&self, error: PdError) {
        self.lock().injected.push_back((None, error));
    }

    /// How many leaders an evicted store loses, and how many regions a
    /// removing store sheds, per tick (defaults 10 and 10).
    pub fn set_rates(&self, leaders_per_tick: u64, regions_per_tick: u64) {
        let mut s = self.lock();
        s.leaders_moved_per_tick = leaders_per_tick.max(1);
        s.regions_moved_per_tick = regions_per_tick.max(1);
    }

    /// Every API call made so far, in order.
    pub fn calls(&self) -> Vec<FakeOp> {
        self.lock().calls.clone()
    }

    /// Ticks elapsed.
    pub fn ticks(&self) -> u64 {
        self.lock().ticks
    }

    /// One step of PD's background work.
    pub fn tick(&self) {
        self.lock().tick();
    }

    /// `n` ticks.
    pub fn advance(&self, n: u64) {
        let mut s = self.lock();
        for _ in 0..n {
            s.tick();
        }
    }

    /// Common entry of every API call: log it, then fail if PD is unreachable,
    /// an error is injected for it, or (when `needs_leader`) there is no leader.
    fn enter(&self, op: FakeOp, needs_leader: bool) -> Result<MutexGuard<'_, FakeState>> {
        let mut s = self.lock();
        s.calls.push(op);
        if s.unreachable {
            return Err(PdError::unavailable("fake PD is unreachable"));
        }
        if let Some(pos) = s
            .injected
            .iter()
            .position(|(o, _)| o.is_none() || *o == Some(op))
            && let Some((_, err)) = s.injected.remove(pos)
        {
            return Err(err);
        }
        if needs_leader && s.leader.is_none() {
            return Err(PdError::unavailable("no PD leader (no quorum)"));
        }
        Ok(s)
    }
}

impl FakeState {
    /// The live member answering at `client_url`: by URL, or by the first
    /// DNS label of its host (a member advertises
    /// `<name>.<peer service>.<namespace>.svc`; tests give Pods the member
    /// name as IP).
    fn member_at(&self, client_url: &str) -> Result<&FakeMember> {
        let url = client_url.trim_end_matches('/');
        let host_label = url
            .split("://")
            .last()
            .and_then(|h| h.split(['.', ':']).next())
            .unwrap_or_default();
        let Some(m) = self
            .members
            .iter()
            .find(|m| m.member.client_urls.iter().any(|u| u == url) || m.member.name == host_label)
        else {
            return Err(PdError::unavailable(format!("no PD member at {url}")));
        };
        if !m.healthy {
            return Err(PdError::unavailable(format!(
                "PD member {} is down",
                m.member.name
            )));
        }
        Ok(m)
    }

    fn healthy_count(&self) -> usize {
        self.members.iter().filter(|m| m.healthy).count()
    }

    fn has_quorum(&self) -> bool {
        !self.members.is_empty() && self.healthy_count() > self.members.len() / 2
    }

    fn elect_if_needed(&mut self) {
        if !self.has_quorum() {
            self.leader = None;
            return;
        }
        let leader_ok = self.leader.as_ref().is_some_and(|l| {
            self.members
                .iter()
                .any(|m| &m.member.name == l && m.healthy)
        });
        if !leader_ok {
            self.leader = self
                .members
                .iter()
                .filter(|m| m.healthy)
                .map(|m| m.member.name.clone())
                .min();
        }
    }

    fn schedulers_loaded(&self) -> Result<()> {
        if self.schedulers_loaded {
            Ok(())
        } else {
            Err(PdError::unavailable(
                "PD's leader has not loaded its schedulers yet",
            ))
        }
    }

    fn member(&self, name: &str) -> Option<&FakeMember> {
        self.members.iter().find(|m| m.member.name == name)
    }

    fn store(&self, id: StoreId) -> Result<&Store> {
        self.stores.get(&id).ok_or_else(|| PdError::NotFound {
            what: format!("store {id}"),
        })
    }

    fn store_mut(&mut self, id: StoreId) -> Result<&mut Store> {
        self.stores.get_mut(&id).ok_or_else(|| PdError::NotFound {
            what: format!("store {id}"),
        })
    }

    /// Stores that can take regions and leaders: Up, not being removed.
    fn placement_targets(&self, except: StoreId) -> Vec<StoreId> {
        self.stores
            .values()
            .filter(|s| s.id != except && s.state == StoreState::Up)
            .map(|s| s.id)
            .collect()
    }

    /// Moves `n` leaders (or regions, when `regions` is set) from `from` to the
    /// given targets, round robin.
    fn move_counts(&mut self, from: StoreId, targets: &[StoreId], n: u64, regions: bool) {
        for i in 0..n {
            let Some(&to) = targets.get((i as usize) % targets.len().max(1)) else {
                return;
            };
            if let Some(t) = self.stores.get_mut(&to) {
                if regions {
                    t.region_count += 1;
                } else {
                    t.leader_count = Some(t.leader_count.unwrap_or(0) + 1);
                    t.region_count = t.region_count.max(t.leader_count.unwrap_or(0));
                }
            }
        }
        if let Some(f) = self.stores.get_mut(&from) {
            if regions {
                f.region_count -= n;
                f.leader_count = Some(f.leader_count.unwrap_or(0).min(f.region_count));
            } else {
                f.leader_count = Some(f.leader_count.unwrap_or(0) - n);
            }
        }
    }

    fn tick(&mut self) {
        self.ticks += 1;
        let ids: Vec<StoreId> = self.stores.keys().copied().collect();
        for id in ids {
            let Some(store) = self.stores.get(&id).cloned() else {
                continue;
            };
            match store.state {
                StoreState::Up => {
                    if store.node_state == NodeState::Preparing
                        && let Some(s) = self.stores.get_mut(&id)
                    {
                        s.node_state = NodeState::Serving;
                    }
                    if self.evicting.contains(&id) {
                        let targets: Vec<StoreId> = self
                            .placement_targets(id)
                            .into_iter()
                            .filter(|t| !self.evicting.contains(t))
                            .collect();
                        let leaders = store.leader_count.unwrap_or(0);
                        if !targets.is_empty() && leaders > 0 {
                            let n = leaders.min(self.leaders_moved_per_tick);
                            self.move_counts(id, &targets, n, false);
                        }
                    }
                }
                StoreState::Offline => {
                    // Leaders leave first, then regions; each region needs a
                    // store without a replica of it, which exists only while
                    // the other Up stores are at least max-replicas.
                    let targets = self.placement_targets(id);
                    let leaders = store.leader_count.unwrap_or(0);
                    if leaders > 0 && !targets.is_empty() {
                        let n = leaders.min(self.leaders_moved_per_tick);
                        self.move_counts(id, &targets, n, false);
                    }
                    if store.region_count > 0
                        && targets.len() as u64 >= self.replication.max_replicas
                    {
                        let n = store.region_count.min(self.regions_moved_per_tick);
                        self.move_counts(id, &targets, n, true);
                    } else if store.region_count == 0
                        && let Some(s) = self.stores.get_mut(&id)
                    {
                        s.state = StoreState::Tombstone;
                        s.node_state = NodeState::Removed;
                        s.leader_count = Some(0);
                    }
                }
                StoreState::Tombstone => {}
            }
        }
    }
}

mod api;

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::api::PdApi;
    use crate::types::Readiness;

    fn sid(id: u64) -> StoreId {
        StoreId(id)
    }

    #[tokio::test]
    async fn new_stores_prepare_then_serve() {
        let pd = FakePd::with_cluster(3, 0);
        pd.add_store(sid(7), "tikv-7:20160");
        let s = pd.store(sid(7)).await.unwrap();
        assert_eq!(
            (s.state, s.node_state),
            (StoreState::Up, NodeState::Preparing)
        );
        pd.tick();
        let s = pd.store(sid(7)).await.unwrap();
        assert_eq!(
            (s.state, s.node_state),
            (StoreState::Up, NodeState::Serving)
        );
    }

    #[tokio::test]
    async fn removal_goes_offline_then_tombstone_once_regions_moved() {
        let pd = FakePd::with_cluster(3, 4);
        let total_regions: u64 = pd
            .stores()
            .await
            .unwrap()
            .iter()
            .map(|s| s.region_count)
            .sum();
        pd.delete_store(sid(4)).await.unwrap();
        let s = pd.store(sid(4)).await.unwrap();
        assert_eq!(s.state, StoreState::Offline);
        assert_eq!(s.node_state, NodeState::Removing);
        assert!(s.is_removing());
        // Idempotent while removing.
        pd.delete_store(sid(4)).await.unwrap();

        // 20 regions at 10 per tick: still holding regions after one tick.
        pd.tick();
        let s = pd.store(sid(4)).await.unwrap();
        assert_eq!(s.state, StoreState::Offline);
        assert_eq!(s.region_count, 10);
        pd.tick();
        assert_eq!(pd.store(sid(4)).await.unwrap().region_count, 0);
        pd.tick();
        let s = pd.store(sid(4)).await.unwrap();
        assert_eq!(s.state, StoreState::Tombstone);
        assert_eq!(s.node_state, NodeState::Removed);
        assert!(s.is_removed());

        // Regions were moved, not lost.
        let after: u64 = pd
            .stores()
            .await
            .unwrap()
            .iter()
            .map(|s| s.region_count)
            .sum();
        assert_eq!(after, total_regions);
        // Removing a tombstone store again: already removed.
        let err = pd.delete_store(sid(4)).await.unwrap_err();
        assert!(matches!(err, PdError::AlreadyRemoved { .. }), "{err:?}");
        assert!(err.is_already_gone());
    }

    #[tokio::test]
    async fn removal_refused_below_max_replicas() {
        let pd = FakePd::with_cluster(3, 3);
        let err = pd.delete_store(sid(3)).await.unwrap_err();
        match &err {
            PdError::Rejected {
                status, message, ..
            } => {
                assert_eq!(*status, Some(400));
                assert!(message.contains("max-replicas"), "{message}");
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(!err.is_retryable());
        assert_eq!(pd.store(sid(3)).await.unwrap().state, StoreState::Up);

        // With max-replicas 2 the same removal is allowed.
        pd.set_replication(ReplicationConfig {
            max_replicas: 2,
            location_labels: vec![],
        });
        pd.delete_store(sid(3)).await.unwrap();
        // Now Up stores = 2: removing another one is refused again.
        assert!(matches!(
            pd.delete_store(sid(2)).await.unwrap_err(),
            PdError::Rejected { .. }
        ));
    }

    #[tokio::test]
    async fn removal_stalls_when_regions_have_nowhere_to_go() {
        let pd = FakePd::with_cluster(3, 4);
        pd.delete_store(sid(4)).await.unwrap();
        // Another store dies and is removed too (user forced it): only 2 Up
        // stores remain for 3 replicas, so store 4 keeps its regions.
        pd.set_replication(ReplicationConfig {
            max_replicas: 2,
            location_labels: vec![],
        });
        pd.delete_store(sid(3)).await.unwrap();
        pd.set_replication(ReplicationConfig::default());
        pd.advance(10);
        let s4 = pd.store(sid(4)).await.unwrap();
        assert_eq!(s4.state, StoreState::Offline);
        assert_eq!(s4.region_count, 20);
        // Cancelling brings it back.
        pd.cancel_store_removal(sid(4)).await.unwrap();
        let s4 = pd.store(sid(4)).await.unwrap();
        assert_eq!(
            (s4.state, s4.node_state),
            (StoreState::Up, NodeState::Serving)
        );
    }

    #[tokio::test]
    async fn cancel_removal() {
        let pd = FakePd::with_cluster(3, 4);
        pd.set_rates(10, 5);
        pd.delete_store(sid(1)).await.unwrap();
        pd.tick();
        pd.cancel_store_removal(sid(1)).await.unwrap();
        let s = pd.store(sid(1)).await.unwrap();
        assert_eq!(
            (s.state, s.node_state),
            (StoreState::Up, NodeState::Serving)
        );
        let regions = s.region_count;
        assert_eq!(regions, 15);
        pd.advance(5);
        assert_eq!(pd.store(sid(1)).await.unwrap().region_count, regions);
        // Cancel on an Up store is a no-op, on unknown store NotFound.
        pd.cancel_store_removal(sid(1)).await.unwrap();
        assert!(matches!(
            pd.cancel_store_removal(sid(99)).await.unwrap_err(),
            PdError::NotFound { .. }
        ));
        // Cancel after tombstone is too late.
        pd.delete_store(sid(2)).await.unwrap();
        pd.advance(10);
        assert!(pd.store(sid(2)).await.unwrap().is_removed());
        assert!(matches!(
            pd.cancel_store_removal(sid(2)).await.unwrap_err(),
            PdError::AlreadyRemoved { .. }
        ));
    }

    #[tokio::test]
    async fn evict_leader_drains_leaders_over_ticks() {
        let pd = FakePd::with_cluster(3, 3);
        pd.set_rates(4, 10);
        pd.add_evict_leader(sid(2)).await.unwrap();
        pd.add_evict_leader(sid(2)).await.unwrap();
        assert_eq!(
            pd.evicting_stores().await.unwrap(),
            BTreeSet::from([sid(2)])
        );
        assert_eq!(pd.store(sid(2)).await.unwrap().leader_count, Some(10));
        pd.tick();
        assert_eq!(pd.store(sid(2)).await.unwrap().leader_count, Some(6));
        pd.advance(2);
        assert_eq!(pd.store(sid(2)).await.unwrap().leader_count, Some(0));
        let total: u64 = pd
            .stores()
            .await
            .unwrap()
            .iter()
            .map(|s| s.leader_count.unwrap())
            .sum();
        assert_eq!(total, 30, "leaders moved to other stores, not lost");
        // Region count of the evicted store is unchanged.
        assert_eq!(pd.store(sid(2)).await.unwrap().region_count, 20);

        pd.remove_evict_leader(sid(2)).await.unwrap();
        pd.remove_evict_leader(sid(2)).await.unwrap();
        assert!(pd.evicting_stores().await.unwrap().is_empty());
        assert!(matches!(
            pd.add_evict_leader(sid(42)).await.unwrap_err(),
            PdError::NotFound { .. }
        ));
    }

    #[tokio::test]
    async fn evicting_everywhere_cannot_move_leaders() {
        let pd = FakePd::with_cluster(1, 2);
        pd.add_evict_leader(sid(1)).await.unwrap();
        pd.add_evict_leader(sid(2)).await.unwrap();
        pd.advance(5);
        assert_eq!(pd.store(sid(1)).await.unwrap().leader_count, Some(10));
    }

    #[tokio::test]
    async fn members_leader_and_quorum() {
        let pd = FakePd::with_cluster(3, 0);
        let members = pd.members().await.unwrap();
        assert_eq!(members.members.len(), 3);
        assert!(members.is_leader("pd-0"));
        assert!(members.members.iter().all(|m| m.id.get() > 1 << 53));

        pd.transfer_leader("pd-2").await.unwrap();
        assert_eq!(pd.leader_name().unwrap(), "pd-2");
        assert!(matches!(
            pd.transfer_leader("pd-9").await.unwrap_err(),
            PdError::NotFound { .. }
        ));

        // Leader goes down: a new one is elected among the healthy majority.
        pd.set_member_healthy("pd-2", false);
        assert_eq!(pd.leader_name().as_deref(), Some("pd-0"));
        let health = pd.health().await.unwrap();
        assert_eq!(health.iter().filter(|h| h.healthy).count(), 2);
        assert!(matches!(
            pd.transfer_leader("pd-2").await.unwrap_err(),
            PdError::Rejected { .. }
        ));

        // Removing a healthy member now would leave 1 started of 2: refused.
        let err = pd.remove_member(pd.member_id("pd-1")).await.unwrap_err();
        assert!(matches!(err, PdError::Rejected { .. }), "{err:?}");
        // Removing the dead member is fine.
        let pd2 = pd.member_id("pd-2");
        pd.remove_member(pd2).await.unwrap();
        assert_eq!(pd.member_names(), ["pd-0", "pd-1"]);
        let err = pd.remove_member(pd2).await.unwrap_err();
        assert!(err.is_already_gone(), "{err:?}");

        // Losing quorum: no leader, every leader-bound call is unavailable.
        pd.set_member_healthy("pd-1", false);
        assert_eq!(pd.leader_name(), None);
        let err = pd.stores().await.unwrap_err();
        assert!(err.is_retryable());
        assert_eq!(err.category(), "unavailable");
        assert_eq!(
            pd.member_ready("http://pd-0:2379").await.unwrap(),
            Readiness::NotReady
        );
        assert!(pd.member_ready("http://pd-1:2379").await.is_err());
        pd.set_member_healthy("pd-1", true);
        assert!(pd.stores().await.is_ok());
        assert_eq!(
            pd.member_ready("http://pd-1:2379/").await.unwrap(),
            Readiness::Ready
        );
    }

    #[tokio::test]
    async fn removing_the_leader_elects_another() {
        let pd = FakePd::with_cluster(3, 0);
        pd.remove_member(pd.member_id("pd-0")).await.unwrap();
        assert_eq!(pd.leader_name().unwrap(), "pd-1");
    }

    #[tokio::test]
    async fn outages_and_injected_errors() {
        let pd = FakePd::with_cluster(3, 3);
        pd.set_unreachable(true);
        for err in [
            pd.stores().await.unwrap_err(),
            pd.delete_store(sid(1)).await.unwrap_err(),
            pd.member_ready("http://pd-0:2379").await.unwrap_err(),
        ] {
            assert!(matches!(err, PdError::Unavailable { .. }), "{err:?}");
            assert!(err.is_retryable());
        }
        pd.set_unreachable(false);

        pd.inject_error(
            FakeOp::Store,
            PdError::Timeout {
                operation: "store",
                after: std::time::Duration::from_secs(3),
            },
        );
        // Another op is not affected; the targeted one fails once.
        pd.stores().await.unwrap();
        assert_eq!(pd.store(sid(1)).await.unwrap_err().category(), "timeout");
        pd.store(sid(1)).await.unwrap();

        pd.inject_error_any(PdError::unavailable("blip"));
        assert!(pd.members().await.is_err());
        assert!(pd.members().await.is_ok());

        assert_eq!(
            pd.calls(),
            [
                FakeOp::Stores,
                FakeOp::DeleteStore,
                FakeOp::MemberReady,
                FakeOp::Stores,
                FakeOp::Store,
                FakeOp::Store,
                FakeOp::Members,
                FakeOp::Members,
            ]
        );
    }

    #[tokio::test]
    async fn labels_and_config() {
        let pd = FakePd::with_cluster(1, 3);
        let labels = BTreeMap::from([
            ("zone".to_owned(), "a".to_owned()),
            ("host".to_owned(), "h1".to_owned()),
        ]);
        pd.set_store_labels(sid(1), &labels).await.unwrap();
        pd.set_store_labels(
            sid(1),
            &BTreeMap::from([("zone".to_owned(), "b".to_owned())]),
        )
        .await
        .unwrap();
        let s = pd.store(sid(1)).await.unwrap();
        assert_eq!(s.labels.get("zone").map(String::as_str), Some("b"));
        assert_eq!(s.labels.get("host").map(String::as_str), Some("h1"));
        assert!(matches!(
            pd.set_store_labels(sid(1), &BTreeMap::from([(String::new(), "x".to_owned())]))
                .await
                .unwrap_err(),
            PdError::Rejected { .. }
        ));
        assert_eq!(pd.replication_config().await.unwrap().max_replicas, 3);
        pd.set_down_peers(vec![DownPeer {
            region_id: 5,
            peer_id: 6,
            store_id: sid(2),
            down_seconds: 700,
        }]);
        assert_eq!(pd.down_peers().await.unwrap()[0].store_id, sid(2));
    }

    #[tokio::test]
    async fn usable_as_shared_trait_object() {
        let pd = FakePd::with_cluster(3, 3);
        let api: Arc<dyn PdApi> = Arc::new(pd.clone());
        api.add_evict_leader(sid(3)).await.unwrap();
        // The test's handle sees what the trait object did.
        pd.advance(1);
        assert_eq!(pd.store_snapshot(sid(3)).unwrap().leader_count, Some(0));
        let nested: Arc<Arc<dyn PdApi>> = Arc::new(api);
        assert_eq!(nested.stores().await.unwrap().len(), 3);
    }
}
