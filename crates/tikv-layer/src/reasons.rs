//! Condition and Event reasons of the TiKV layer (CamelCase, stable: users
//! and alerts match on them).

/// PD cannot be reached; nothing destructive happens.
pub const PD_UNAVAILABLE: &str = "PDUnavailable";
/// The Cluster has no PD URL yet (no PDGroup, or the Cluster was not reconciled yet).
pub const WAITING_FOR_PD: &str = "WaitingForPD";
/// Instances are being created.
pub const SCALING_OUT: &str = "ScalingOut";
/// The group marked an instance offline: its store is being removed.
pub const SCALING_IN: &str = "ScalingIn";
/// A scale-in waits for another store removal in the cluster to finish.
pub const ANOTHER_REMOVAL_IN_FLIGHT: &str = "AnotherRemovalInFlight";
/// Removal refused: fewer Up stores than PD's `max-replicas` would remain.
pub const BELOW_MAX_REPLICAS: &str = "BelowMaxReplicas";
/// PD lists no store at all although the instance recorded one: not trusted.
pub const PD_LISTS_NO_STORES: &str = "PDListsNoStores";
/// The instance's Pod runs but PD lists no store for it yet.
pub const STORE_NOT_REGISTERED: &str = "StoreNotRegistered";
/// PD refused to remove the store (its message is in the condition).
pub const REMOVAL_REJECTED: &str = "RemovalRejected";

/// Type of the instance condition that follows a store removal.
pub const CONDITION_OFFLINE: &str = "Offline";
/// Offline was requested (by the group, or by deleting the instance).
pub const OFFLINE_REQUESTED: &str = "OfflineRequested";
/// The store's Region leaders are being evicted.
pub const EVICTING_LEADERS: &str = "EvictingLeaders";
/// Leaders evicted (or the eviction timed out); PD is asked to remove the store.
pub const LEADERS_EVICTED: &str = "LeadersEvicted";
/// PD is moving the store's Regions away (store Offline / Removing).
pub const STORE_REMOVING: &str = "StoreRemoving";
/// The store is Tombstone / Removed in PD (or never registered, or PD
/// purged it after it was ours): Pod and PVCs may go.
pub const STORE_TOMBSTONED: &str = "StoreTombstoned";
/// The removal was cancelled: the store is back to Up.
pub const REMOVAL_CANCELLED: &str = "RemovalCancelled";
/// The removal is refused (see the message).
pub const REMOVAL_REFUSED: &str = "RemovalRefused";
/// The store is not being removed.
pub const NOT_OFFLINE: &str = "NotOffline";
/// Cancelling came too late: the store is already Tombstone; the group replaces the instance.
pub const TOO_LATE_TO_CANCEL: &str = "TooLateToCancel";

/// The user's configuration sets a key the operator owns, or is not valid TOML.
pub const INVALID_CONFIG: &str = "InvalidConfig";
/// The spec cannot be rendered (e.g. a reserved volume name).
pub const INVALID_SPEC: &str = "InvalidSpec";
/// Everything matches the spec.
pub const SYNCED: &str = "Synced";
/// The running Pod was started with another rendering than the current one.
pub const RESTART_PENDING: &str = "RestartPending";
/// A rolling update restarts stores one disruption budget at a time.
pub const ROLLING_UPDATE: &str = "RollingUpdate";
/// Store restarts wait until fewer than `maxUnavailable` stores of the Cluster are unavailable.
pub const WAITING_FOR_STORES: &str = "WaitingForStores";
/// A TiKV version upgrade waits for the Cluster's PD groups to finish theirs.
pub const WAITING_FOR_PD_UPGRADE: &str = "WaitingForPDUpgrade";
/// The store's Pod is being restarted.
pub const RESTARTING: &str = "Restarting";
/// The restarted store serves again; the evict-leader entry was removed.
pub const RESTARTED: &str = "Restarted";
/// Leader eviction before a restart timed out.
pub const EVICTION_TIMED_OUT: &str = "EvictionTimedOut";
/// The template's version is lower than what stores run.
pub const DOWNGRADE_REFUSED: &str = "DowngradeRefused";
/// An evict-leader entry of one of the Cluster's stores that no operation of
/// the operator held was removed.
pub const STRAY_EVICT_LEADER_REMOVED: &str = "StrayEvictLeaderRemoved";

/// A store is unhealthy for less than `failover.periodSeconds`: watched.
pub const STORE_UNHEALTHY: &str = "StoreUnhealthy";
/// The replacement serves; the failed store is being removed through PD.
pub const FAILOVER_REMOVING: &str = "FailoverRemovingFailedStore";
/// The failed store came back before its removal started; the replacement
/// is taken out again.
pub const FAILOVER_CANCELLED: &str = "FailoverCancelled";
/// Refused: another store of the Cluster is disrupted (restarting, being
/// removed, not ready).
pub const ANOTHER_STORE_DISRUPTED: &str = "AnotherStoreDisrupted";
/// Refused: a Region would lose (or has lost) the majority of its voters.
pub const REGION_MAJORITY_AT_RISK: &str = "RegionMajorityAtRisk";
/// Refused: PD's Region health could not be read.
pub const REGION_HEALTH_UNKNOWN: &str = "RegionHealthUnknown";

pub use tikv_operator_core::failover::reasons::{
    CONDITION_FAILOVER, FAILOVER_COMPLETED, FAILOVER_DISABLED, FAILOVER_IN_FLIGHT,
    FAILOVER_STARTED, MAX_TOTAL_REACHED, NO_FAILURE, TOO_MANY_FAILURES,
};
