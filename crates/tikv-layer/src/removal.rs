//! Removing one TiKV store safely, and cancelling that removal: the step
//! machine a TiKV instance runs while it is marked `offline` or being
//! deleted (and, to cancel, after `offline` was cleared).
//!
//! Removal: evict the store's Region leaders (the operator adds an
//! evict-leader entry and records when; bounded by a timeout) -> ask PD to
//! delete the store (it goes Offline/Removing while PD moves its Regions) ->
//! wait until PD reports it Tombstone/Removed -> remove the evict-leader
//! entry -> delete the Pod -> (instance being deleted) delete the PVCs ->
//! done (drop the finalizer). Every step is re-planned from fresh
//! observations, so a repeated step or a crash between steps is harmless.
//!
//! Cancellation (`offline` cleared before the store is Removed): a removing
//! store is put back to Up, then the evict-leader entry is removed.
//!
//! Safety: nothing destructive while PD is unreachable (rule 5); the Pod and
//! PVCs go only once the store is Removed, or once PD no longer knows a store
//! that was recorded as this instance's, or when no store ever registered for
//! this instance (rule 1); PD is asked to delete a store only while at least
//! `max-replicas` Up stores would remain (rule 4). When the whole Cluster is
//! being deleted, PD is not consulted at all (rule 1's exception).

use std::collections::BTreeSet;
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use pd_client::{Store, StoreId};

use crate::group::Blocked;
use crate::reasons;
use crate::store_view::{StoreView, Stores, is_up};

/// Why the store should go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    /// Nothing asks for a removal (a removal in flight is cancelled).
    Keep,
    /// `spec.offline` is set: remove the store, delete the Pod, keep the
    /// instance object (the group deletes it).
    Offline,
    /// The instance object is being deleted: remove the store, delete Pod
    /// and PVCs, drop the finalizer.
    Delete,
}

/// What the removal of one instance observes.
#[derive(Debug, Clone)]
pub struct RemovalInput<'a> {
    /// The instance name.
    pub instance: &'a str,
    /// What is asked.
    pub request: Request,
    /// The whole Cluster is being deleted: stores are not removed one by one
    /// and PD is not consulted.
    pub cluster_deleting: bool,
    /// The Cluster does not exist (finalizer stripped by hand, or never
    /// created): a requested removal waits, since without it nothing says
    /// whether the Cluster is being torn down or one store is leaving.
    pub cluster_missing: bool,
    /// PD's view of the stores.
    pub pd: &'a StoreView,
    /// The instance's store in that view (see [`crate::store_view::Stores::find`]).
    pub store: Option<&'a Store>,
    /// The store id the instance recorded (`status.id`), if any.
    pub recorded_store_id: Option<StoreId>,
    /// When the operator started evicting the store's leaders
    /// (`status.leaderEvictionStartedAt`); `Some` means an evict-leader
    /// entry of ours may exist.
    pub eviction_started_at: Option<Timestamp>,
    /// Now.
    pub now: Timestamp,
    /// How long leader eviction may take before the store is removed anyway.
    pub evict_leader_timeout: Duration,
    /// Whether the instance's Pod exists.
    pub pod_exists: bool,
    /// Whether the instance's Pod is Ready (a running TiKV registers its
    /// store; a PD view without it may just be older than the store).
    pub pod_ready: bool,
    /// PVCs of the instance that exist.
    pub pvcs: Vec<String>,
}

/// The next step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RemovalStep {
    /// Nothing to remove and nothing to cancel.
    Idle,
    /// Nothing may happen now; report why and look again later.
    Wait(Blocked),
    /// The removal is refused; report why (condition and Warning Event).
    Refuse(Blocked),
    /// Record the eviction start, then add an evict-leader entry for the store.
    EvictLeaders(StoreId),
    /// Ask PD to remove the store.
    DeleteStore(StoreId),
    /// Put a removing store back to Up.
    CancelRemoval(StoreId),
    /// Remove the operator's evict-leader entry (when the store id is
    /// known), then clear the recorded eviction start.
    RemoveEvictLeader(Option<StoreId>),
    /// Remove an evict-leader entry of the store that no operation of ours
    /// holds (no eviction record): leaked, or made by hand.
    RemoveStrayEvictLeader(StoreId),
    /// Delete the Pod.
    DeletePod,
    /// Delete these PVCs.
    DeletePvcs(Vec<String>),
    /// The instance object may go: drop the finalizer.
    Done,
    /// `offline` instance: store Removed and Pod gone; the group deletes the instance.
    Removed,
    /// `offline` was cleared too late: the store is already Removed.
    TooLateToCancel,
}

impl RemovalStep {
    /// Whether the removal is still moving (poll fast).
    pub fn in_flight(&self) -> bool {
        !matches!(
            self,
            Self::Idle | Self::Removed | Self::TooLateToCancel | Self::Refuse(_)
        )
    }
}

/// The stores other than `id` among `evicting` (PD's evict-leader entries) that PD still
/// lists and has not removed: evictions in flight (a restart, or another removal).
pub(crate) fn evicting_others(
    stores: &Stores,
    evicting: &BTreeSet<StoreId>,
    id: StoreId,
) -> Vec<StoreId> {
    evicting
        .iter()
        .copied()
        .filter(|o| *o != id)
        .filter(|o| stores.stores.iter().any(|x| x.id == *o && !x.is_removed()))
        .collect()
}

fn wait(reason: &'static str, message: String) -> RemovalStep {
    RemovalStep::Wait(Blocked { reason, message })
}

/// Plans the next removal (or cancellation) step.
pub fn next_removal_step(input: &RemovalInput<'_>) -> RemovalStep {
    let name = input.instance;
    if input.request == Request::Delete && input.cluster_deleting {
        // The whole Cluster (PD included) goes: no store removal.
        return cleanup(input);
    }
    if input.request != Request::Keep && input.cluster_missing {
        // Safety rules 1 and 5: only a Cluster being deleted skips PD.
        return wait(
            tikv_operator_core::conditions::CLUSTER_MISSING,
            format!(
                "the Cluster of TiKV instance {name} does not exist; its removal waits \
                 (recreate the Cluster, or remove the finalizer by hand to abandon the store)"
            ),
        );
    }
    let Some(stores) = input.pd.stores() else {
        // Safety rule 5. Without a removal or an eviction of ours in flight
        // there is nothing to do anyway.
        if input.request == Request::Keep && input.eviction_started_at.is_none() {
            return RemovalStep::Idle;
        }
        return wait(
            reasons::PD_UNAVAILABLE,
            format!("PD is unreachable; the store removal of {name} waits"),
        );
    };
    let store = input.store;

    if input.request == Request::Keep {
        return cancel_step(input, stores, store);
    }

    match store {
        // A PD that lists no store at all while this instance recorded one
        // is not trusted (a PD that lost its data, or another PD).
        None if input.recorded_store_id.is_some() && stores.stores.is_empty() => wait(
            reasons::PD_LISTS_NO_STORES,
            format!(
                "PD lists no stores although {name} recorded store {}; not acting on it",
                input.recorded_store_id.unwrap_or_default()
            ),
        ),
        // A running TiKV whose store PD does not list (yet): the view may be
        // older than the registration; wait for the store to show up.
        None if input.recorded_store_id.is_none() && input.pod_ready => wait(
            reasons::STORE_NOT_REGISTERED,
            format!(
                "the Pod of {name} runs but PD lists no store for it yet; the removal waits \
                 for the store to register"
            ),
        ),
        // PD does not know the store: it never registered (no id recorded,
        // Pod not running), or PD purged it after it was removed (id
        // recorded, now gone).
        None => cleanup(input),
        Some(s) if s.is_removed() => cleanup(input),
        Some(s) if s.is_removing() => wait(
            reasons::STORE_REMOVING,
            format!(
                "PD is moving the Regions of store {} away ({} left)",
                s.id, s.region_count
            ),
        ),
        Some(s) => remove_store_step(input, stores, s),
    }
}

/// Decides the step of an instance that stays (`Request::Keep`): cancel its
/// store's removal, or drop an evict-leader entry of ours or a stray one.
fn cancel_step(input: &RemovalInput<'_>, stores: &Stores, store: Option<&Store>) -> RemovalStep {
    match store {
        Some(s) if s.is_removing() => RemovalStep::CancelRemoval(s.id),
        Some(s) if s.is_removed() => {
            if input.eviction_started_at.is_some() {
                RemovalStep::RemoveEvictLeader(Some(s.id))
            } else {
                RemovalStep::TooLateToCancel
            }
        }
        _ if input.eviction_started_at.is_some() => {
            RemovalStep::RemoveEvictLeader(store.map(|s| s.id).or(input.recorded_store_id))
        }
        // An entry for our store that no operation of ours holds (no
        // record): leaked (a lost status write, an operator that died
        // between removing it and clearing nothing, a hand-made entry).
        // It would keep the store leaderless for good: remove it. (The
        // restart and removal paths record before they add.)
        Some(s) if stores.evicting.as_ref().is_some_and(|e| e.contains(&s.id)) => {
            RemovalStep::RemoveStrayEvictLeader(s.id)
        }
        _ => RemovalStep::Idle,
    }
}

/// Decides the next step of removing store `s`, which PD lists and is not
/// removing yet: refuse (safety rule 4), wait for another removal or
/// eviction, evict its leaders, or delete the store through PD.
fn remove_store_step(input: &RemovalInput<'_>, stores: &Stores, s: &Store) -> RemovalStep {
    // Safety rule 4.
    let up = stores.up_count();
    let max = stores.max_replicas();
    if is_up(s) && up.saturating_sub(1) < max {
        return RemovalStep::Refuse(Blocked {
            reason: reasons::BELOW_MAX_REPLICAS,
            message: format!(
                "removing store {} would leave {} Up stores, fewer than PD's \
                 max-replicas ({max}); the removal waits (add stores or lower \
                 max-replicas, or clear offline to cancel)",
                s.id,
                up.saturating_sub(1)
            ),
        });
    }
    // Safety rule 2: one store removal at a time in the cluster.
    if let Some(other) = stores.removing().into_iter().find(|o| o.id != s.id) {
        return wait(
            reasons::ANOTHER_REMOVAL_IN_FLIGHT,
            format!(
                "store {} ({}) is being removed; the removal of store {} waits for it",
                other.id, other.address, s.id
            ),
        );
    }
    // Other stores whose leaders PD is evicting (a restart, or a
    // removal that is not "removing" in PD yet): another disruption
    // in flight. Two instances deleted at once would otherwise both
    // start; the lower store id goes first.
    let evicting_others: Vec<StoreId> = stores
        .evicting
        .as_ref()
        .map_or_else(Vec::new, |e| evicting_others(stores, e, s.id));
    let Some(started) = input.eviction_started_at else {
        if let Some(other) = evicting_others.first() {
            return wait(
                reasons::ANOTHER_REMOVAL_IN_FLIGHT,
                format!(
                    "the leaders of store {other} are being evicted; the removal of \
                     store {} waits for it",
                    s.id
                ),
            );
        }
        return RemovalStep::EvictLeaders(s.id);
    };
    if let Some(other) = evicting_others.iter().find(|o| **o < s.id) {
        return wait(
            reasons::ANOTHER_REMOVAL_IN_FLIGHT,
            format!(
                "the leaders of store {other} are being evicted too; the removal of \
                 store {} waits for it",
                s.id
            ),
        );
    }
    let elapsed = input.now.duration_since(started);
    let timeout = k8s_openapi::jiff::SignedDuration::try_from(input.evict_leader_timeout)
        .unwrap_or(k8s_openapi::jiff::SignedDuration::MAX);
    if s.leader_count == Some(0) || elapsed >= timeout {
        RemovalStep::DeleteStore(s.id)
    } else {
        let leaders = s
            .leader_count
            .map_or_else(|| "an unknown number of".to_owned(), |n| n.to_string());
        wait(
            reasons::EVICTING_LEADERS,
            format!(
                "evicting {leaders} Region leader(s) from store {} (at most {}s)",
                s.id,
                input.evict_leader_timeout.as_secs()
            ),
        )
    }
}

/// After the store is gone: our evict-leader entry, the Pod, the PVCs.
fn cleanup(input: &RemovalInput<'_>) -> RemovalStep {
    if input.eviction_started_at.is_some() && !input.cluster_deleting {
        return RemovalStep::RemoveEvictLeader(
            input.store.map(|s| s.id).or(input.recorded_store_id),
        );
    }
    if input.pod_exists {
        return RemovalStep::DeletePod;
    }
    match input.request {
        Request::Delete if !input.pvcs.is_empty() => RemovalStep::DeletePvcs(input.pvcs.clone()),
        Request::Delete => RemovalStep::Done,
        _ => RemovalStep::Removed,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::store_view::Stores;
    use crate::store_view::tests::store;
    use pd_client::{NodeState, ReplicationConfig, StoreState};

    const TIMEOUT: Duration = Duration::from_secs(600);

    fn t(secs: i64) -> Timestamp {
        Timestamp::from_second(secs).unwrap()
    }

    /// PD with Up stores 1..=4 (store 4 is ours at "me"), max-replicas 3.
    fn pd_with(ours: StoreState, leaders: u64) -> StoreView {
        let mut stores: Vec<Store> = (1..=3)
            .map(|i| store(i, &format!("kv-{i}"), StoreState::Up))
            .collect();
        let mut me = store(4, "me", ours);
        me.leader_count = Some(leaders);
        if ours == StoreState::Tombstone {
            me.node_state = NodeState::Removed;
        }
        stores.push(me);
        StoreView::Reachable(Stores {
            stores,
            replication: ReplicationConfig::default(),
            ..Stores::default()
        })
    }

    struct Case {
        request: Request,
        pd: StoreView,
        recorded: Option<u64>,
        started: Option<i64>,
        now: i64,
        pod: bool,
        pod_ready: bool,
        pvcs: Vec<String>,
        cluster_deleting: bool,
        cluster_missing: bool,
    }

    impl Case {
        fn new(request: Request, pd: StoreView) -> Self {
            Self {
                request,
                pd,
                recorded: Some(4),
                started: None,
                now: 1000,
                pod: true,
                pod_ready: false,
                pvcs: vec!["data-me".into()],
                cluster_deleting: false,
                cluster_missing: false,
            }
        }
        fn step(&self) -> RemovalStep {
            let store = self
                .pd
                .stores()
                .and_then(|s| s.find(self.recorded.map(StoreId), "me"));
            next_removal_step(&RemovalInput {
                instance: "me",
                request: self.request,
                cluster_deleting: self.cluster_deleting,
                cluster_missing: self.cluster_missing,
                pd: &self.pd,
                store,
                recorded_store_id: self.recorded.map(StoreId),
                eviction_started_at: self.started.map(t),
                now: t(self.now),
                evict_leader_timeout: TIMEOUT,
                pod_exists: self.pod,
                pod_ready: self.pod_ready,
                pvcs: self.pvcs.clone(),
            })
        }
    }

    #[test]
    fn leaders_are_evicted_before_the_store_is_deleted_bounded_by_the_timeout() {
        let mut c = Case::new(Request::Offline, pd_with(StoreState::Up, 7));
        assert_eq!(c.step(), RemovalStep::EvictLeaders(StoreId(4)));
        c.started = Some(900);
        assert!(matches!(c.step(), RemovalStep::Wait(b) if b.reason == reasons::EVICTING_LEADERS));
        // Timeout: removed anyway.
        c.now = 900 + 600;
        assert_eq!(c.step(), RemovalStep::DeleteStore(StoreId(4)));
        // No leaders left: removed at once.
        let mut c = Case::new(Request::Delete, pd_with(StoreState::Up, 0));
        c.started = Some(999);
        assert_eq!(c.step(), RemovalStep::DeleteStore(StoreId(4)));
        // An unknown leader count is waited for (until the timeout).
        if let StoreView::Reachable(s) = &mut c.pd {
            s.stores[3].leader_count = None;
        }
        assert!(matches!(c.step(), RemovalStep::Wait(b) if b.reason == reasons::EVICTING_LEADERS));
    }

    #[test]
    fn one_store_removal_at_a_time_in_the_cluster() {
        // Five stores (max-replicas 3): store 1 is being removed already.
        let mut pd = pd_with(StoreState::Up, 3);
        if let StoreView::Reachable(s) = &mut pd {
            s.stores.push(store(5, "kv-5", StoreState::Up));
            s.stores[0].state = StoreState::Offline;
        }
        let mut c = Case::new(Request::Offline, pd);
        assert!(
            matches!(c.step(), RemovalStep::Wait(b) if b.reason == reasons::ANOTHER_REMOVAL_IN_FLIGHT)
        );
        c.started = Some(0);
        assert!(
            matches!(c.step(), RemovalStep::Wait(b) if b.reason == reasons::ANOTHER_REMOVAL_IN_FLIGHT)
        );
    }

    #[test]
    fn nothing_is_deleted_until_the_store_is_removed() {
        for state in [StoreState::Up, StoreState::Offline] {
            for request in [Request::Offline, Request::Delete] {
                for started in [None, Some(0)] {
                    let mut c = Case::new(request, pd_with(state, 0));
                    c.started = started;
                    let s = c.step();
                    assert!(
                        !matches!(
                            s,
                            RemovalStep::DeletePod
                                | RemovalStep::DeletePvcs(_)
                                | RemovalStep::Done
                                | RemovalStep::Removed
                        ),
                        "{state:?} {request:?}: {s:?}"
                    );
                }
            }
        }
        let c = Case::new(Request::Offline, pd_with(StoreState::Offline, 0));
        assert!(matches!(c.step(), RemovalStep::Wait(b) if b.reason == reasons::STORE_REMOVING));
    }

    #[test]
    fn once_removed_eviction_entry_then_pod_then_pvcs_then_done() {
        let mut c = Case::new(Request::Delete, pd_with(StoreState::Tombstone, 0));
        c.started = Some(1);
        assert_eq!(c.step(), RemovalStep::RemoveEvictLeader(Some(StoreId(4))));
        c.started = None;
        assert_eq!(c.step(), RemovalStep::DeletePod);
        c.pod = false;
        assert_eq!(c.step(), RemovalStep::DeletePvcs(vec!["data-me".into()]));
        c.pvcs.clear();
        assert_eq!(c.step(), RemovalStep::Done);
        // Offline only: the Pod goes, the instance (and its PVCs) stay for the group.
        let mut c = Case::new(Request::Offline, pd_with(StoreState::Tombstone, 0));
        assert_eq!(c.step(), RemovalStep::DeletePod);
        c.pod = false;
        assert_eq!(c.step(), RemovalStep::Removed);
    }

    #[test]
    fn nothing_destructive_while_pd_is_unreachable() {
        let down = StoreView::Unreachable {
            message: "down".into(),
        };
        for request in [Request::Offline, Request::Delete] {
            for started in [None, Some(0)] {
                let mut c = Case::new(request, down.clone());
                c.started = started;
                assert!(
                    matches!(c.step(), RemovalStep::Wait(b) if b.reason == reasons::PD_UNAVAILABLE),
                    "{request:?}"
                );
            }
        }
        let mut c = Case::new(Request::Keep, down);
        assert_eq!(c.step(), RemovalStep::Idle);
        c.started = Some(0);
        assert!(matches!(c.step(), RemovalStep::Wait(_)));
    }

    #[test]
    fn refused_below_max_replicas() {
        // Stores 1..=3 Up plus ours; store 1 is down to Offline: 3 Up left.
        let mut pd = pd_with(StoreState::Up, 3);
        if let StoreView::Reachable(s) = &mut pd {
            s.stores[0].state = StoreState::Offline;
        }
        let c = Case::new(Request::Offline, pd);
        let s = c.step();
        assert!(
            matches!(&s, RemovalStep::Refuse(b) if b.reason == reasons::BELOW_MAX_REPLICAS && b.message.contains("max-replicas (3)")),
            "{s:?}"
        );
    }

    #[test]
    fn a_store_that_never_registered_or_was_purged_is_not_waited_for() {
        let empty = StoreView::Reachable(Stores::default());
        let mut c = Case::new(Request::Delete, empty.clone());
        c.recorded = None;
        assert_eq!(c.step(), RemovalStep::DeletePod);
        // ... unless its Pod runs: the store may just not be in the view yet.
        c.pod_ready = true;
        assert!(
            matches!(c.step(), RemovalStep::Wait(b) if b.reason == reasons::STORE_NOT_REGISTERED
                && b.message.ends_with("the removal waits for the store to register")),
            "{:?}",
            c.step()
        );
        // Recorded store 9, PD knows others but not 9: purged after removal.
        let mut c = Case::new(Request::Offline, pd_with(StoreState::Up, 0));
        c.recorded = Some(9);
        c.pod = false;
        assert_eq!(c.step(), RemovalStep::Removed);
        // A PD without any store while a store was recorded is not trusted.
        let mut c = Case::new(Request::Delete, empty);
        c.recorded = Some(4);
        assert!(
            matches!(c.step(), RemovalStep::Wait(b) if b.reason == reasons::PD_LISTS_NO_STORES)
        );
    }

    #[test]
    fn clearing_offline_cancels_and_cleans_up_our_eviction() {
        let c = Case::new(Request::Keep, pd_with(StoreState::Offline, 0));
        assert_eq!(c.step(), RemovalStep::CancelRemoval(StoreId(4)));
        let mut c = Case::new(Request::Keep, pd_with(StoreState::Up, 2));
        c.started = Some(5);
        assert_eq!(c.step(), RemovalStep::RemoveEvictLeader(Some(StoreId(4))));
        c.started = None;
        assert_eq!(c.step(), RemovalStep::Idle);
        let c = Case::new(Request::Keep, pd_with(StoreState::Tombstone, 0));
        assert_eq!(c.step(), RemovalStep::TooLateToCancel);
    }

    #[test]
    fn cluster_deletion_skips_pd() {
        let mut c = Case::new(
            Request::Delete,
            StoreView::Unreachable {
                message: "gone".into(),
            },
        );
        c.cluster_deleting = true;
        c.started = Some(1);
        assert_eq!(c.step(), RemovalStep::DeletePod);
    }

    /// A store kept and idle whose evict-leader entry no record of ours
    /// holds: the entry is stray and goes; with the record it is ours (the
    /// usual clean-up); with PD unable to tell, nothing happens.
    #[test]
    fn a_stray_evict_leader_entry_is_removed_only_without_a_record() {
        let with_entry = |evicting: Option<&[u64]>| {
            let mut v = pd_with(StoreState::Up, 0);
            if let StoreView::Reachable(s) = &mut v {
                s.evicting = evicting.map(|e| e.iter().map(|i| StoreId(*i)).collect());
            }
            v
        };
        let c = Case::new(Request::Keep, with_entry(Some(&[4])));
        assert_eq!(c.step(), RemovalStep::RemoveStrayEvictLeader(StoreId(4)));
        let mut c = Case::new(Request::Keep, with_entry(Some(&[4])));
        c.started = Some(900);
        assert_eq!(c.step(), RemovalStep::RemoveEvictLeader(Some(StoreId(4))));
        for other in [Some(&[7][..]), Some(&[][..]), None] {
            let c = Case::new(Request::Keep, with_entry(other));
            assert_eq!(c.step(), RemovalStep::Idle, "{other:?}");
        }
    }

    /// Safety rules 1 and 5: only a Cluster being deleted skips PD. With
    /// the Cluster missing (finalizer stripped by hand), a deleted or offline
    /// instance deletes nothing and asks PD nothing, whatever PD says.
    #[test]
    fn a_missing_cluster_deletes_nothing() {
        for request in [Request::Delete, Request::Offline] {
            for pd in [
                pd_with(StoreState::Up, 0),
                pd_with(StoreState::Tombstone, 0),
                StoreView::Unreachable {
                    message: "gone".into(),
                },
            ] {
                let mut c = Case::new(request, pd);
                c.cluster_missing = true;
                let s = c.step();
                assert!(
                    matches!(&s, RemovalStep::Wait(b) if b.reason == tikv_operator_core::conditions::CLUSTER_MISSING),
                    "{request:?}: {s:?}"
                );
            }
        }
    }
}
