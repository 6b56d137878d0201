//! PD's view of the TiKV stores, as the planners consume it.

use pd_client::{
    ClusterId, NodeState, PdApi, ReplicationConfig, Store, StoreId, StoreLiveness, StoreState,
};
use tikv_operator_core::pd_state::PdSnapshot;

/// One observation of PD's stores. Planners act destructively only on a
/// [`StoreView::Reachable`] view (safety rule 5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreView {
    /// PD could not answer (unreachable, no leader, another cluster). Nothing
    /// destructive may happen; the message goes into a condition.
    Unreachable {
        /// Why, for conditions and Events.
        message: String,
    },
    /// PD answered.
    Reachable(Stores),
}

/// Every store PD knows (Tombstone ones included) and the replication settings.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Stores {
    /// The PD cluster id that answered.
    pub cluster_id: ClusterId,
    /// All stores.
    pub stores: Vec<Store>,
    /// `max-replicas` and `location-labels`.
    pub replication: ReplicationConfig,
    /// Stores in PD's evict-leader scheduler (`None`: unknown).
    pub evicting: Option<std::collections::BTreeSet<StoreId>>,
    /// Since when the current PD leader leads, as far as the operator saw
    /// (`None`: unknown). Leader counts are rebuilt by a new PD leader from
    /// Region heartbeats; see [`Stores::leader_counts_settled`].
    pub pd_leader_since: Option<k8s_openapi::jiff::Timestamp>,
}

impl StoreView {
    /// The stores, when PD answered.
    pub fn stores(&self) -> Option<&Stores> {
        match self {
            Self::Reachable(s) => Some(s),
            Self::Unreachable { .. } => None,
        }
    }

    /// Asks PD for members (cluster id), stores and the replication config.
    /// Any error yields [`StoreView::Unreachable`]. A PD that is not
    /// bootstrapped yet has no stores (not an outage).
    pub async fn observe(pd: &dyn PdApi) -> Self {
        let unreachable = |what: &str, e: pd_client::PdError| Self::Unreachable {
            message: format!("cannot read PD {what} ({}): {e}", e.category()),
        };
        let members = match pd.members().await {
            Ok(m) => m,
            Err(e) => return unreachable("members", e),
        };
        let stores = match pd.stores().await {
            Ok(s) => s,
            Err(pd_client::PdError::NotBootstrapped { .. }) => Vec::new(),
            Err(e) => return unreachable("stores", e),
        };
        let replication = match pd.replication_config().await {
            Ok(r) => r,
            Err(e) => return unreachable("replication config", e),
        };
        let evicting = if stores.is_empty() {
            None
        } else {
            pd.evicting_stores().await.ok()
        };
        Self::Reachable(Stores {
            cluster_id: members.cluster_id,
            stores,
            replication,
            evicting,
            pd_leader_since: None,
        })
    }

    /// The view of a PD state cache snapshot plus the replication config
    /// (which the cache does not hold; read it with
    /// [`PdApi::replication_config`], it rarely changes).
    pub fn from_snapshot(s: &PdSnapshot, replication: Option<&ReplicationConfig>) -> Self {
        match (&s.error, &s.members, replication) {
            (None, Some(m), Some(r)) => Self::Reachable(Stores {
                cluster_id: m.cluster_id,
                stores: s.stores.clone(),
                replication: r.clone(),
                evicting: s.evicting.clone(),
                pd_leader_since: s.leader_since,
            }),
            (Some(e), _, _) => Self::Unreachable { message: e.clone() },
            (None, None, _) => Self::Unreachable {
                message: "PD not read yet".to_owned(),
            },
            (None, Some(_), None) => Self::Unreachable {
                message: "PD replication config not read yet".to_owned(),
            },
        }
    }

    /// [`StoreView::from_snapshot`] for a Cluster whose TiKV instances
    /// already record store ids (`stores_known`): PD's "not bootstrapped"
    /// then cannot mean "no stores" (a member without a running raft cluster,
    /// e.g. while its leadership moves, answers so about a bootstrapped
    /// cluster), so the view is [`StoreView::Unreachable`] (safety rule 5).
    pub fn from_snapshot_of(
        s: &PdSnapshot,
        replication: Option<&ReplicationConfig>,
        stores_known: bool,
    ) -> Self {
        if stores_known && s.not_bootstrapped {
            return Self::Unreachable {
                message: "PD answered \"not bootstrapped\" although stores of this Cluster \
                          registered with it; waiting for a PD member that can answer"
                    .to_owned(),
            };
        }
        Self::from_snapshot(s, replication)
    }

    /// Guards against acting on the wrong PD: when the Cluster recorded a PD
    /// cluster id (`Cluster.status.id`) and PD reports another one, the view
    /// becomes [`StoreView::Unreachable`].
    pub fn expecting_cluster_id(self, recorded: Option<&str>) -> Self {
        match (&self, recorded) {
            (Self::Reachable(s), Some(id)) if s.cluster_id.to_string() != id => Self::Unreachable {
                message: format!(
                    "PD reports cluster id {} but the Cluster recorded {id}; not acting on it",
                    s.cluster_id
                ),
            },
            _ => self,
        }
    }
}

/// Whether a store counts as Up for `max-replicas`: state Up (not being
/// removed, not removed).
pub fn is_up(store: &Store) -> bool {
    store.state == StoreState::Up && !store.is_removing() && !store.is_removed()
}

/// Whether a store serves: Up, node state Serving, and heartbeating (not
/// Disconnected or Down).
pub fn is_serving(store: &Store) -> bool {
    is_up(store)
        && store.node_state == NodeState::Serving
        && !matches!(
            store.liveness,
            StoreLiveness::Disconnected | StoreLiveness::Down
        )
}

/// How long a new PD leader's per-store leader counts are not trusted: TiKV
/// reports each Region's leader in a Region heartbeat about once a minute, and
/// a new PD leader counts a leader only once it heard it.
pub const LEADER_COUNTS_SETTLE: std::time::Duration = std::time::Duration::from_secs(60);

impl Stores {
    /// Whether PD's leader has led long enough for its leader counts to be
    /// trusted at `now` (a store reported with no leader right after a PD
    /// leader change may still lead Regions).
    pub fn leader_counts_settled(&self, now: k8s_openapi::jiff::Timestamp) -> bool {
        self.leader_counts_complete()
            || self.pd_leader_since.is_none_or(|since| {
                now.duration_since(since)
                    >= k8s_openapi::jiff::SignedDuration::try_from(LEADER_COUNTS_SETTLE)
                        .unwrap_or_default()
            })
    }

    /// Whether PD knows a leader for every Region: the leaders counted over
    /// the Up stores make up the Regions their peers imply (`max-replicas`
    /// peers each). A new PD leader that has not heard every Region yet
    /// counts fewer.
    pub fn leader_counts_complete(&self) -> bool {
        let up = self.stores.iter().filter(|s| is_up(s));
        let (leaders, peers) = up.fold((0_u64, 0_u64), |(l, p), s| {
            (
                l.saturating_add(s.leader_count.unwrap_or(0)),
                p.saturating_add(s.region_count),
            )
        });
        let replicas = u64::try_from(self.max_replicas().max(1)).unwrap_or(1);
        peers > 0 && leaders.saturating_mul(replicas) >= peers
    }

    /// The store of an instance: the one with `recorded` id when the
    /// instance recorded one, else the one advertising `address` (a store
    /// that is not removed first, then the newest).
    pub fn find(&self, recorded: Option<StoreId>, address: &str) -> Option<&Store> {
        if let Some(id) = recorded {
            return self.stores.iter().find(|s| s.id == id);
        }
        self.stores
            .iter()
            .filter(|s| s.address == address)
            .max_by_key(|s| (!s.is_removed(), s.id))
    }

    /// Number of Up stores in the cluster.
    pub fn up_count(&self) -> usize {
        self.stores.iter().filter(|s| is_up(s)).count()
    }

    /// Stores being removed (Offline / Removing).
    pub fn removing(&self) -> Vec<&Store> {
        self.stores.iter().filter(|s| s.is_removing()).collect()
    }

    /// `max-replicas` as a count.
    pub fn max_replicas(&self) -> usize {
        usize::try_from(self.replication.max_replicas).unwrap_or(usize::MAX)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use pd_client::FakePd;

    /// A store with `id` at `address` in `state`.
    pub(crate) fn store(id: u64, address: &str, state: StoreState) -> Store {
        Store {
            id: StoreId(id),
            address: address.to_owned(),
            state,
            node_state: NodeState::when_absent(state),
            leader_count: Some(0),
            ..Store::default()
        }
    }

    #[test]
    fn the_store_of_an_instance_is_found_by_id_else_by_address() {
        let mut a_old = store(1, "a:20160", StoreState::Tombstone);
        a_old.node_state = NodeState::Removed;
        let a = store(4, "a:20160", StoreState::Up);
        let s = Stores {
            stores: vec![a_old, a, store(2, "b:20160", StoreState::Offline)],
            ..Stores::default()
        };
        assert_eq!(s.find(None, "a:20160").unwrap().id, StoreId(4));
        assert_eq!(s.find(Some(StoreId(1)), "a:20160").unwrap().id, StoreId(1));
        assert!(s.find(Some(StoreId(9)), "a:20160").is_none());
        assert!(s.find(None, "c:20160").is_none());
        assert_eq!(s.up_count(), 1);
        assert_eq!(s.removing().len(), 1);
    }

    /// Safety rule 5: "not bootstrapped" while instances record store ids
    /// is PD not answering, not "no stores" (a restart granted on such a
    /// view would delete the Pod without evicting its leaders).
    #[test]
    fn not_bootstrapped_with_known_stores_is_unreachable() {
        let snapshot = PdSnapshot {
            members: Some(pd_client::Members {
                cluster_id: ClusterId(7),
                members: vec![],
                leader: None,
                etcd_leader: None,
            }),
            replication: Some(ReplicationConfig::default()),
            not_bootstrapped: true,
            ..PdSnapshot::default()
        };
        let r = snapshot.replication.as_ref();
        assert!(
            StoreView::from_snapshot_of(&snapshot, r, false)
                .stores()
                .is_some()
        );
        let v = StoreView::from_snapshot_of(&snapshot, r, true);
        assert!(v.stores().is_none(), "{v:?}");
        let answered = PdSnapshot {
            not_bootstrapped: false,
            ..snapshot.clone()
        };
        assert!(
            StoreView::from_snapshot_of(&answered, r, true)
                .stores()
                .is_some()
        );
    }

    #[tokio::test]
    async fn observe_never_trusts_errors_and_checks_the_cluster_id() {
        let pd = FakePd::with_cluster(1, 3);
        let view = StoreView::observe(&pd).await;
        let s = view.stores().unwrap();
        assert_eq!(s.stores.len(), 3);
        assert_eq!(s.max_replicas(), 3);
        let id = s.cluster_id.to_string();
        assert_eq!(view.clone().expecting_cluster_id(Some(&id)), view);
        assert!(
            view.clone()
                .expecting_cluster_id(Some("1"))
                .stores()
                .is_none()
        );
        pd.inject_error(
            pd_client::FakeOp::ReplicationConfig,
            pd_client::PdError::unavailable("blip"),
        );
        assert!(StoreView::observe(&pd).await.stores().is_none());
        pd.set_unreachable(true);
        assert!(StoreView::observe(&pd).await.stores().is_none());
    }

    #[test]
    fn leader_counts_are_complete_once_every_region_has_a_known_leader() {
        let mut a = store(1, "a:20160", StoreState::Up);
        let mut b = store(2, "b:20160", StoreState::Up);
        let mut c = store(3, "c:20160", StoreState::Up);
        for s in [&mut a, &mut b, &mut c] {
            s.region_count = 10;
        }
        a.leader_count = Some(0);
        b.leader_count = Some(4);
        c.leader_count = Some(6);
        let mut v = Stores {
            stores: vec![a, b, c],
            replication: pd_client::ReplicationConfig {
                max_replicas: 3,
                location_labels: vec![],
            },
            ..Stores::default()
        };
        assert!(v.leader_counts_complete(), "10 Regions, 10 leaders known");
        // A new PD leader that heard only some Regions.
        v.stores[2].leader_count = Some(1);
        assert!(!v.leader_counts_complete());
        let now = k8s_openapi::jiff::Timestamp::from_second(1_000).unwrap();
        v.pd_leader_since = Some(now);
        assert!(!v.leader_counts_settled(now));
        assert!(v.leader_counts_settled(now + k8s_openapi::jiff::SignedDuration::from_secs(61)));
    }
}
