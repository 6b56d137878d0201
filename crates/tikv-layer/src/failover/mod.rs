//! TiKV store failover planning: when a store that stays Disconnected or
//! Down is replaced, and the steps of one replacement. Pure: every input,
//! the time included, is passed in.
//!
//! A replacement is a surge: a new instance joins first (annotated
//! [`labels::FAILOVER_REPLACES`] with the failed instance's name, set at
//! creation so a retry never creates a second one); while it exists the
//! failed instance does not count toward `replicas`. Once the new store
//! serves, the failed instance is marked `offline` and the ordinary removal
//! runs (evict leaders, PD DeleteStore, wait for Tombstone, then Pod and
//! PVCs; safety rule 1); the group deletes the instance once its store is
//! Removed. If the failed store comes back before its removal starts, the
//! failover is cancelled: the replacement loses its annotation and is marked
//! `offline`, so the group goes back to `replicas` through the same safe
//! removal path.
//!
//! Refusals (safety rules 2, 5 and 8), each re-checked right before the
//! destructive step (marking the failed store offline): PD unreachable;
//! more unhealthy stores in the Cluster than `maxInFlight`; another store of
//! the Cluster disrupted; PD's Region health unknown, or a Region with a
//! peer on the failed store whose other voters are not a healthy majority.
//! Starting a replacement is also refused at `maxInFlight` replacements in
//! flight and at `maxTotal` replacements recorded.
//!
//! [`labels::FAILOVER_REPLACES`]: tikv_operator_api::labels::FAILOVER_REPLACES

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use pd_client::{PdApi, Store, StoreId, StoreLiveness, UnhealthyRegion};
use tikv_operator_api::tikv::{FailoverPhase, FailoverStatus, StoreFailure};
use tikv_operator_api::{Failover, Topology};
use tikv_operator_core::component::spread::Spread;

use crate::group::{Blocked, NewInstance};
use crate::store_view::{StoreView, Stores, is_serving};

mod plan;
mod replacements;
mod safety;

pub use plan::plan_failover;

/// Finished failures (Completed, Cancelled) kept in the status.
pub const KEEP_FINISHED: usize = 5;

pub use tikv_operator_core::failover::{Settings, recheck_in, set_phase};

/// The settings of a TiKVGroup's `spec.failover` (absent: enabled).
pub fn settings_of(spec: Option<&Failover>) -> Settings {
    Settings::of(spec, true)
}

/// PD's Region health, as failover reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegionHealth {
    /// Not read (no store looked unhealthy when the snapshot was taken).
    NotRead,
    /// PD could not answer; nothing is replaced.
    Unknown(String),
    /// The Regions PD reports with down or pending peers.
    Read(Vec<UnhealthyRegion>),
}

impl RegionHealth {
    /// Reads PD's Region health checks.
    pub async fn observe(pd: &dyn PdApi) -> Self {
        match pd.unhealthy_regions().await {
            Ok(r) => Self::Read(r),
            Err(e) => Self::Unknown(format!(
                "cannot read PD's Region health ({}): {e}",
                e.category()
            )),
        }
    }
}

/// Whether a store counts as failed: Up in PD (not being removed) and
/// without heartbeats (Disconnected or Down).
pub fn unhealthy(store: &Store) -> bool {
    store.state == pd_client::StoreState::Up
        && !store.is_removing()
        && !store.is_removed()
        && matches!(
            store.liveness,
            StoreLiveness::Disconnected | StoreLiveness::Down
        )
}

/// Whether a store is healthy again: Up and heartbeating.
fn healthy(store: &Store) -> bool {
    is_serving(store) && store.liveness == StoreLiveness::Alive
}

/// Whether the group reconciler should read PD's Region health: failover
/// could act on (or re-check) one of these stores.
pub fn wants_region_health(members: &[Member], pd: &StoreView) -> bool {
    let Some(stores) = pd.stores() else {
        return false;
    };
    members.iter().any(|m| {
        m.replaces.is_some()
            || m.store_id
                .and_then(|id| stores.stores.iter().find(|s| s.id == id))
                .is_some_and(unhealthy)
    })
}

/// One instance, as failover sees it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Member {
    /// Instance name.
    pub name: String,
    /// Its topology.
    pub topology: Option<Topology>,
    /// Its store id, when known.
    pub store_id: Option<StoreId>,
    /// A planned removal: `offline`, being deleted, or its store Removed.
    pub leaving: bool,
    /// A granted restart has not finished (planned disruption).
    pub restarting: bool,
    /// The failed instance this one replaces (its annotation).
    pub replaces: Option<String>,
    /// Why it counts against the Cluster's disruption budget (`None`: it serves).
    pub disrupted: Option<String>,
    /// Whether the instance is Ready.
    pub ready: bool,
}

/// Everything failover looks at.
#[derive(Debug, Clone)]
pub struct FailoverInput<'a> {
    /// Group name (prefix of instance names).
    pub group: &'a str,
    /// `spec.failover`, defaulted.
    pub settings: Settings,
    /// Now.
    pub now: Timestamp,
    /// The group's spread policy (where a replacement goes).
    pub spread: &'a Spread,
    /// Every instance of the group.
    pub members: Vec<Member>,
    /// Instances of the Cluster's other TiKVGroups (only `name`, `store_id`
    /// and `disrupted` matter).
    pub others: Vec<Member>,
    /// PD's stores.
    pub pd: &'a StoreView,
    /// PD's Region health.
    pub regions: &'a RegionHealth,
    /// `status.failover` as last written.
    pub previous: Option<&'a FailoverStatus>,
}

/// The one change failover asks for now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FailoverAction {
    /// Nothing to change.
    None,
    /// Create `new`, annotated as the replacement of `failed`.
    Surge {
        /// The failed instance.
        failed: String,
        /// The replacement to create.
        new: NewInstance,
    },
    /// The replacement serves: mark `failed` offline (its removal starts).
    RemoveFailed {
        /// The failed instance.
        failed: String,
        /// Its replacement.
        replacement: String,
    },
    /// `failed` came back before its removal: drop the replacement's
    /// annotation and mark it offline.
    Cancel {
        /// The instance that came back.
        failed: String,
        /// The replacement to take out.
        replacement: String,
    },
    /// `failed` is gone: drop the replacement's annotation.
    Finish {
        /// The instance that was replaced.
        failed: String,
        /// Its replacement.
        replacement: String,
    },
}

/// What failover decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailoverPlan {
    /// The change to make.
    pub action: FailoverAction,
    /// Failed instances being replaced: they do not count toward `replicas`.
    pub held: Vec<String>,
    /// The new `status.failover` (`None`: nothing to report).
    pub status: Option<FailoverStatus>,
    /// The `Failover` condition: status, reason, message.
    pub condition: (bool, String, String),
    /// A refusal not reported before (for a Warning Event).
    pub new_refusal: Option<Blocked>,
    /// When the earliest watched store reaches the period: look again then.
    pub recheck_after: Option<std::time::Duration>,
}

/// Since when `store` has been unhealthy: PD's last heartbeat from it. The period counts from
/// the silence, as PD's `max-store-down-time` does, not from whenever the operator first looked
/// (its view of PD is refreshed every 30 s at rest). `now` when PD reports no heartbeat, or one
/// later than `now` (PD's clock ahead of the operator's).
fn unhealthy_since(store: &Store, now: Timestamp) -> Timestamp {
    store
        .last_heartbeat
        .and_then(|s| Timestamp::from_second(s).ok())
        .filter(|t| *t <= now)
        .unwrap_or(now)
}

fn record(
    instance: &str,
    store: Option<&Store>,
    since: Timestamp,
    phase: FailoverPhase,
    now: Timestamp,
) -> StoreFailure {
    StoreFailure {
        instance: instance.to_owned(),
        store_id: store.map(|s| s.id.to_string()).unwrap_or_default(),
        since: Time(since),
        store_state: store.map_or_else(|| "Unknown".to_owned(), liveness_name),
        phase,
        reason: None,
        message: None,
        replacement: None,
        last_transition_time: Time(now),
    }
}

fn liveness_name(s: &Store) -> String {
    match s.liveness {
        StoreLiveness::Down => "Down",
        StoreLiveness::Disconnected => "Disconnected",
        StoreLiveness::Alive => "Up",
        StoreLiveness::Unknown => "Unknown",
    }
    .to_owned()
}

fn finished(p: FailoverPhase) -> bool {
    matches!(p, FailoverPhase::Completed | FailoverPhase::Cancelled)
}

/// How long a replacement record may name a replacement that the instances
/// do not show before it counts as gone (a cache that has not seen the
/// surge yet shows it within seconds).
pub const UNSEEN_REPLACEMENT_GRACE: k8s_openapi::jiff::SignedDuration =
    k8s_openapi::jiff::SignedDuration::from_secs(120);

/// The instance named `name` among `members`.
fn member_named<'m>(members: &'m [Member], name: &str) -> Option<&'m Member> {
    members.iter().find(|m| m.name == name)
}

/// The store `id` among PD's stores (none when either is unknown).
fn store_by_id(stores: Option<&Stores>, id: Option<StoreId>) -> Option<&Store> {
    let id = id?;
    stores?.stores.iter().find(|s| s.id == id)
}

#[cfg(test)]
mod tests;
