//! The per-Cluster PD state cache: one [`PdApi`] per Cluster, read by every
//! reconciler of that Cluster instead of asking PD themselves.
//!
//! A refresh reads members, health, stores and the replication config. Snapshots are published on a
//! `tokio::sync::watch` channel only when something changed, and
//! [`PdSnapshot::changed_members`] / [`PdSnapshot::changed_stores`] say which
//! members and stores changed, so the caller wakes exactly the affected
//! objects. The refresh interval adapts: [`PdStateCache::hold_fast`] returns
//! a guard, and while any guard lives (bootstrap, scale, removal in flight)
//! the cache refreshes at the fast interval; otherwise at the slow one.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use pd_client::{MemberHealth, Members, PdApi, PdError, ReplicationConfig, Store, StoreId};
use tokio::sync::{Notify, watch};
use tracing::debug;

/// What PD said at one refresh.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PdSnapshot {
    /// Members and leader; `None` when PD could not be read.
    pub members: Option<Members>,
    /// Health of every member (empty when PD could not be read).
    pub health: Vec<MemberHealth>,
    /// Stores (empty before bootstrap or when PD could not be read).
    pub stores: Vec<Store>,
    /// Replication settings (`max-replicas`, `location-labels`); `None` when
    /// PD could not be read.
    pub replication: Option<ReplicationConfig>,
    /// Stores in PD's evict-leader scheduler; `None` when PD could not tell
    /// (e.g. a new leader that has not loaded its schedulers yet) or lists no
    /// stores. Lets the TiKV layer remove entries of its stores that no
    /// operation of its own holds (a leaked entry keeps a store leaderless).
    pub evicting: Option<BTreeSet<StoreId>>,
    /// Why PD could not be read, if it could not: never act destructively on
    /// such a snapshot.
    pub error: Option<String>,
    /// When the read that produced this snapshot started: what it says is at
    /// least this recent. A member restarted after it may not be reflected.
    pub observed_at: Option<k8s_openapi::jiff::Timestamp>,
    /// PD answered "not bootstrapped" for the stores (they are then empty).
    /// The answer is ambiguous: a member with no running raft cluster (a
    /// leader stepping down) says so about a bootstrapped cluster too. A
    /// cache that once saw stores turns it into an error; a reader that knows
    /// of stores by other means must treat it as PD not answering.
    pub not_bootstrapped: bool,
    /// Since when (as far as this cache saw) the current PD leader leads. A
    /// new PD leader rebuilds Region leadership from Region heartbeats, so its
    /// per-store leader counts are not trusted right after a change.
    pub leader_since: Option<k8s_openapi::jiff::Timestamp>,
}

impl PdSnapshot {
    /// Whether `self` and `other` say the same about PD (when they were read
    /// aside).
    pub fn same_state(&self, other: &PdSnapshot) -> bool {
        self.members == other.members
            && self.not_bootstrapped == other.not_bootstrapped
            && self.health == other.health
            && self.stores == other.stores
            && self.replication == other.replication
            && self.evicting == other.evicting
            && self.error == other.error
    }

    /// `self`, or when it was read more than `max` before `now`, an
    /// unreachable snapshot saying so: decisions never rest on an old
    /// reading (safety rule 5).
    pub fn within_age(
        self: Arc<Self>,
        now: k8s_openapi::jiff::Timestamp,
        max: Duration,
    ) -> Arc<Self> {
        let Some(at) = self.observed_at else {
            return self;
        };
        let age = now.duration_since(at);
        if age <= k8s_openapi::jiff::SignedDuration::try_from(max).unwrap_or_default() {
            return self;
        }
        Arc::new(PdSnapshot {
            error: Some(format!(
                "the last PD reading is {}s old (more than {}s); not acting on it",
                age.as_secs(),
                max.as_secs()
            )),
            observed_at: self.observed_at,
            ..PdSnapshot::default()
        })
    }

    /// Whether PD answered.
    pub fn reachable(&self) -> bool {
        self.error.is_none() && self.members.is_some()
    }

    fn member_facts(&self) -> BTreeMap<&str, (bool, bool)> {
        let Some(m) = &self.members else {
            return BTreeMap::new();
        };
        m.members
            .iter()
            .map(|mem| {
                let healthy = self.health.iter().any(|h| h.name == mem.name && h.healthy);
                (mem.name.as_str(), (healthy, m.is_leader(&mem.name)))
            })
            .collect()
    }

    /// Names of members whose presence, health or leadership differs between
    /// `old` and `self`. When reachability changed, every member of either
    /// snapshot counts as changed.
    pub fn changed_members(&self, old: &PdSnapshot) -> BTreeSet<String> {
        let (a, b) = (old.member_facts(), self.member_facts());
        if old.reachable() != self.reachable() {
            return a.keys().chain(b.keys()).map(|s| (*s).to_owned()).collect();
        }
        a.keys()
            .chain(b.keys())
            .filter(|n| a.get(*n) != b.get(*n))
            .map(|s| (*s).to_owned())
            .collect()
    }

    /// Ids of stores that appeared, disappeared or changed in any way
    /// (their evict-leader entry included).
    pub fn changed_stores(&self, old: &PdSnapshot) -> BTreeSet<StoreId> {
        let a: BTreeMap<StoreId, &Store> = old.stores.iter().map(|s| (s.id, s)).collect();
        let b: BTreeMap<StoreId, &Store> = self.stores.iter().map(|s| (s.id, s)).collect();
        let evicting = |s: &PdSnapshot, id: &StoreId| s.evicting.as_ref().map(|e| e.contains(id));
        a.keys()
            .chain(b.keys())
            .filter(|id| a.get(*id) != b.get(*id) || evicting(old, id) != evicting(self, id))
            .copied()
            .collect()
    }
}

/// Refresh intervals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RefreshPolicy {
    /// While something is in flight.
    pub fast: Duration,
    /// At rest.
    pub slow: Duration,
}

impl Default for RefreshPolicy {
    fn default() -> Self {
        Self {
            fast: Duration::from_secs(1),
            slow: Duration::from_secs(30),
        }
    }
}

/// The PD state cache of one Cluster. Share it as `Arc<PdStateCache>`.
pub struct PdStateCache {
    pd: Arc<dyn PdApi>,
    policy: RefreshPolicy,
    tx: watch::Sender<Arc<PdSnapshot>>,
    fast_holders: Arc<AtomicUsize>,
    wake: Arc<Notify>,
    /// PD listed stores at some refresh: from then on, "not bootstrapped"
    /// means the answering member cannot tell, not that there are none.
    seen_stores: AtomicBool,
}

impl std::fmt::Debug for PdStateCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PdStateCache")
            .field("policy", &self.policy)
            .field("fast_holders", &self.fast_holders.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// While alive, the cache refreshes at the fast interval. Dropping it returns
/// to the slow interval once no other guard is alive.
#[derive(Debug)]
pub struct FastRefresh {
    holders: Arc<AtomicUsize>,
}

impl Drop for FastRefresh {
    fn drop(&mut self) {
        self.holders.fetch_sub(1, Ordering::SeqCst);
    }
}

impl PdStateCache {
    /// A cache over `pd`, starting with an unreachable snapshot until the
    /// first refresh.
    pub fn new(pd: Arc<dyn PdApi>, policy: RefreshPolicy) -> Self {
        let initial = PdSnapshot {
            error: Some("PD not read yet".to_owned()),
            ..PdSnapshot::default()
        };
        Self {
            pd,
            policy,
            tx: watch::channel(Arc::new(initial)).0,
            fast_holders: Arc::new(AtomicUsize::new(0)),
            wake: Arc::new(Notify::new()),
            seen_stores: AtomicBool::new(false),
        }
    }

    /// The latest snapshot.
    pub fn current(&self) -> Arc<PdSnapshot> {
        self.tx.borrow().clone()
    }

    /// A receiver that sees every published (changed) snapshot.
    pub fn subscribe(&self) -> watch::Receiver<Arc<PdSnapshot>> {
        self.tx.subscribe()
    }

    /// Switches to fast refreshes (and refreshes soon) until the guard drops.
    pub fn hold_fast(&self) -> FastRefresh {
        self.fast_holders.fetch_add(1, Ordering::SeqCst);
        self.wake.notify_one();
        FastRefresh {
            holders: self.fast_holders.clone(),
        }
    }

    /// Cuts the current wait short: the next refresh runs now (or right
    /// after the one running). For a change the operator just made to PD,
    /// which the next decision waits to see.
    pub fn refresh_soon(&self) {
        self.wake.notify_one();
    }

    /// The interval until the next refresh: fast while a guard lives or PD
    /// could not be read, slow otherwise.
    pub fn interval(&self) -> Duration {
        // An unreachable PD is read again soon: a blip must not leave every
        // reconciler of the Cluster waiting for the slow interval.
        if self.fast_holders.load(Ordering::SeqCst) > 0 || !self.current().reachable() {
            self.policy.fast
        } else {
            self.policy.slow
        }
    }

    /// Reads PD once and publishes the result. Returns the previous and new
    /// snapshot when what PD says changed; a read that only confirms the
    /// current state publishes its newer `observed_at` without waking
    /// subscribers.
    pub async fn refresh(&self) -> Option<(Arc<PdSnapshot>, Arc<PdSnapshot>)> {
        let mut read = read(self.pd.as_ref(), self.seen_stores.load(Ordering::SeqCst)).await;
        if !read.stores.is_empty() {
            self.seen_stores.store(true, Ordering::SeqCst);
        }
        let old = self.current();
        let leader = |s: &PdSnapshot| {
            s.members
                .as_ref()
                .and_then(|m| m.leader.as_ref().map(|l| l.name.clone()))
        };
        // The leader at the first reading (after an operator restart) is not
        // taken as settled: it may have been elected a moment ago. Its clock
        // starts at that reading, as does a leader change seen afterwards.
        read.leader_since = match leader(&read) {
            None => None,
            Some(l) if old.observed_at.is_some() && Some(&l) == leader(&old).as_ref() => {
                old.leader_since
            }
            Some(_) => read.observed_at,
        };
        let snapshot = Arc::new(read);
        if old.same_state(&snapshot) {
            self.tx.send_if_modified(|current| {
                *current = snapshot;
                false
            });
            return None;
        }
        debug!(reachable = snapshot.reachable(), "PD state changed");
        self.tx.send_replace(snapshot.clone());
        Some((old, snapshot))
    }

    /// Refreshes forever at the adaptive interval; a new [`hold_fast`]
    /// guard cuts the current wait short. Run it in a task per Cluster and
    /// abort the task when the Cluster goes away.
    ///
    /// [`hold_fast`]: PdStateCache::hold_fast
    pub async fn run(&self) {
        loop {
            self.refresh().await;
            tokio::select! {
                () = tokio::time::sleep(self.interval()) => {}
                () = self.wake.notified() => {}
            }
        }
    }
}

/// One read of PD. `seen_stores`: PD listed stores before, so a "not
/// bootstrapped" answer cannot mean there are none (safety rule 5).
async fn read(pd: &dyn PdApi, seen_stores: bool) -> PdSnapshot {
    let observed_at = Some(k8s_openapi::jiff::Timestamp::now());
    let unreachable = |what: &str, e: PdError| PdSnapshot {
        error: Some(format!("cannot read PD {what} ({}): {e}", e.category())),
        observed_at,
        ..PdSnapshot::default()
    };
    let members = match pd.members().await {
        Ok(m) => m,
        Err(e) => return unreachable("members", e),
    };
    let health = match pd.health().await {
        Ok(h) => h,
        Err(e) => return unreachable("health", e),
    };
    let mut not_bootstrapped = false;
    let stores = match pd.stores().await {
        Ok(s) => s,
        Err(e @ PdError::NotBootstrapped { .. }) if seen_stores => {
            return PdSnapshot {
                error: Some(format!(
                    "PD answered \"not bootstrapped\" for a cluster it listed stores of \
                     before (the answering member runs no raft cluster, e.g. its leadership \
                     is moving): {e}"
                )),
                observed_at,
                ..PdSnapshot::default()
            };
        }
        // No TiKV bootstrapped the cluster yet, as far as this cache knows:
        // no stores, not an outage.
        Err(PdError::NotBootstrapped { .. }) => {
            not_bootstrapped = true;
            Vec::new()
        }
        Err(e) => return unreachable("stores", e),
    };
    let replication = match pd.replication_config().await {
        Ok(r) => r,
        Err(e) => return unreachable("replication config", e),
    };
    // Not an outage when unknown: only the clean-up of stray entries waits.
    let evicting = if stores.is_empty() {
        None
    } else {
        pd.evicting_stores().await.ok()
    };
    PdSnapshot {
        members: Some(members),
        health,
        stores,
        replication: Some(replication),
        evicting,
        error: None,
        not_bootstrapped,
        observed_at,
        leader_since: None,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use pd_client::{FakeOp, FakePd};

    fn cache(pd: &FakePd) -> PdStateCache {
        PdStateCache::new(Arc::new(pd.clone()), RefreshPolicy::default())
    }

    #[tokio::test]
    async fn publishes_only_changes_and_names_what_changed() {
        let pd = FakePd::with_cluster(3, 2);
        let c = cache(&pd);
        let mut rx = c.subscribe();
        let (old, new) = c.refresh().await.unwrap();
        assert!(!old.reachable());
        assert!(new.reachable());
        assert!(rx.has_changed().unwrap());
        rx.mark_unchanged();
        // Nothing changed in PD: nothing published.
        assert!(c.refresh().await.is_none());
        assert!(!rx.has_changed().unwrap());

        pd.set_member_healthy("pd-2", false);
        let (old, new) = c.refresh().await.unwrap();
        assert_eq!(
            new.changed_members(&old),
            BTreeSet::from(["pd-2".to_owned()])
        );
        assert!(new.changed_stores(&old).is_empty());

        pd.set_store_counts(StoreId(2), 5, 1);
        let (old, new) = c.refresh().await.unwrap();
        assert!(new.changed_members(&old).is_empty());
        assert_eq!(new.changed_stores(&old), BTreeSet::from([StoreId(2)]));

        pd.set_unreachable(true);
        let (old, new) = c.refresh().await.unwrap();
        assert!(!new.reachable());
        assert_eq!(new.changed_members(&old).len(), 3);
    }

    #[tokio::test]
    async fn an_old_reading_counts_as_unreachable() {
        let pd = FakePd::with_cluster(3, 3);
        let c = cache(&pd);
        c.refresh().await;
        let s = c.current();
        let at = s.observed_at.unwrap();
        let max = Duration::from_secs(120);
        assert!(s.clone().within_age(at, max).reachable());
        let later = at + k8s_openapi::jiff::SignedDuration::from_secs(119);
        assert!(s.clone().within_age(later, max).reachable());
        let too_late = at + k8s_openapi::jiff::SignedDuration::from_secs(121);
        let old = s.within_age(too_late, max);
        assert!(!old.reachable());
        assert!(old.stores.is_empty());
        assert!(old.error.as_deref().unwrap().contains("old"));
    }

    #[tokio::test]
    async fn a_pd_without_stores_yet_is_reachable() {
        let pd = FakePd::with_cluster(1, 0);
        pd.inject_error(
            FakeOp::Stores,
            PdError::NotBootstrapped {
                message: "no store".into(),
            },
        );
        let c = cache(&pd);
        c.refresh().await;
        assert!(c.current().reachable());
        assert!(c.current().not_bootstrapped);
        pd.inject_error(FakeOp::Health, PdError::unavailable("flaky"));
        c.refresh().await;
        assert!(!c.current().reachable());
    }

    /// Safety rule 5: PD's "not bootstrapped" from a cluster that listed
    /// stores before is an ambiguous answer (a member stepping down says
    /// so), never "there are no stores".
    #[tokio::test]
    async fn not_bootstrapped_after_stores_were_seen_is_unreachable() {
        let pd = FakePd::with_cluster(3, 3);
        let c = cache(&pd);
        c.refresh().await;
        assert_eq!(c.current().stores.len(), 3);
        pd.inject_error(
            FakeOp::Stores,
            PdError::NotBootstrapped {
                message: "raft cluster is not running".into(),
            },
        );
        c.refresh().await;
        let s = c.current();
        assert!(!s.reachable(), "{s:?}");
        assert!(s.error.as_deref().unwrap().contains("not bootstrapped"));
        // A fresh cache (an operator restart) cannot know: it marks the
        // answer, and readers that know of stores treat it as unreachable.
        let fresh = cache(&pd);
        pd.inject_error(
            FakeOp::Stores,
            PdError::NotBootstrapped {
                message: "raft cluster is not running".into(),
            },
        );
        fresh.refresh().await;
        let s = fresh.current();
        assert!(s.reachable() && s.not_bootstrapped && s.stores.is_empty());
        fresh.refresh().await;
        assert!(!fresh.current().not_bootstrapped);
    }

    #[tokio::test(start_paused = true)]
    async fn refreshes_fast_only_while_something_is_in_flight() {
        let pd = FakePd::with_cluster(1, 0);
        let c = Arc::new(cache(&pd));
        let runner = c.clone();
        let task = tokio::spawn(async move { runner.run().await });
        let reads = || pd.calls().iter().filter(|o| **o == FakeOp::Members).count();

        tokio::time::sleep(Duration::from_secs(61)).await;
        // At rest: t=0, 30, 60.
        assert_eq!(reads(), 3);

        let guard = c.hold_fast();
        assert_eq!(c.interval(), RefreshPolicy::default().fast);
        tokio::time::sleep(Duration::from_millis(100)).await;
        // The guard woke the loop at once.
        assert_eq!(reads(), 4);
        tokio::time::sleep(Duration::from_secs(10)).await;
        // One read per fast interval since.
        let fast = RefreshPolicy::default().fast.as_secs() as usize;
        assert_eq!(reads(), 4 + 10 / fast);

        drop(guard);
        assert_eq!(c.interval(), RefreshPolicy::default().slow);
        tokio::time::sleep(Duration::from_secs(20)).await;
        assert!(reads() <= 5 + 10 / fast, "{}", reads());
        task.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn an_unreachable_pd_is_read_again_at_the_fast_interval() {
        let pd = FakePd::with_cluster(1, 0);
        let c = cache(&pd);
        // Not read yet: unreachable.
        assert_eq!(c.interval(), RefreshPolicy::default().fast);
        c.refresh().await;
        assert_eq!(c.interval(), RefreshPolicy::default().slow);
        pd.set_unreachable(true);
        c.refresh().await;
        assert_eq!(c.interval(), RefreshPolicy::default().fast);
        pd.set_unreachable(false);
        c.refresh().await;
        assert_eq!(c.interval(), RefreshPolicy::default().slow);
    }

    #[tokio::test]
    async fn the_leader_since_time_survives_refreshes_and_restarts_on_a_leader_change() {
        let pd = FakePd::with_cluster(3, 0);
        let c = cache(&pd);
        c.refresh().await;
        let first = c.current().observed_at;
        assert!(first.is_some());
        assert_eq!(
            c.current().leader_since,
            first,
            "the first leader seen (an operator restart): not settled, its clock starts"
        );
        std::thread::sleep(std::time::Duration::from_millis(2));
        c.refresh().await;
        assert_eq!(c.current().leader_since, first, "same leader: kept");
        let first = c.current().observed_at;
        let other = pd
            .member_names()
            .into_iter()
            .find(|n| Some(n) != pd.leader_name().as_ref())
            .unwrap();
        pd.transfer_leader(&other).await.unwrap();
        std::thread::sleep(std::time::Duration::from_millis(2));
        c.refresh().await;
        assert!(c.current().leader_since > first, "a new leader: new time");
    }
}
