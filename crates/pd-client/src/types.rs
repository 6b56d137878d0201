//! The types callers of this crate see. None of them is a wire type: the gRPC
//! (prost) and HTTP (JSON) representations are converted into these inside the
//! crate.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(
            Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
        )]
        #[serde(transparent)]
        pub struct $name(pub u64);

        impl $name {
            /// The raw numeric id.
            pub fn get(self) -> u64 {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}", self.0)
            }
        }

        impl From<u64> for $name {
            fn from(id: u64) -> Self {
                Self(id)
            }
        }
    };
}

id_type!(
    /// The id of a PD cluster, chosen by PD at bootstrap; every PD response carries it.
    ClusterId
);
id_type!(
    /// The id PD assigned to a TiKV store.
    StoreId
);
id_type!(
    /// The id of a PD member (its etcd member id). Often above 2^53.
    MemberId
);

/// A PD member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Member name (`--name`), e.g. the Pod name.
    pub name: String,
    /// Member id.
    pub id: MemberId,
    /// URLs other members reach this one on.
    pub peer_urls: Vec<String>,
    /// URLs clients (and this crate) reach this member on.
    pub client_urls: Vec<String>,
    /// Version of the running `pd-server`, when reported.
    pub binary_version: String,
    /// Git hash of the running `pd-server`, when reported.
    pub git_hash: String,
}

/// The membership of a PD cluster as one member sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Members {
    /// The cluster id the answering member belongs to.
    pub cluster_id: ClusterId,
    /// All members.
    pub members: Vec<Member>,
    /// The PD leader, if one is elected.
    pub leader: Option<Member>,
    /// The embedded etcd's leader, if one is elected (usually the PD leader).
    pub etcd_leader: Option<Member>,
}

impl Members {
    /// The member with this name.
    pub fn by_name(&self, name: &str) -> Option<&Member> {
        self.members.iter().find(|m| m.name == name)
    }

    /// Whether the member with this name is the PD leader.
    pub fn is_leader(&self, name: &str) -> bool {
        self.leader.as_ref().is_some_and(|l| l.name == name)
    }
}

/// Health of one PD member as reported by `GET /pd/api/v1/health`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberHealth {
    /// Member name.
    pub name: String,
    /// Member id.
    pub id: MemberId,
    /// Client URLs of the member.
    pub client_urls: Vec<String>,
    /// Whether the member answered PD's health check.
    pub healthy: bool,
}

/// Readiness of one PD member (`GET /pd/api/v2/ready`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readiness {
    /// The member has loaded its region data and serves requests.
    Ready,
    /// The member answered but is not ready yet.
    NotReady,
    /// The member is too old to have the readiness endpoint (HTTP 404);
    /// fall back to health.
    Unsupported,
}

/// A store's state in PD's original three-state model (`metapb.StoreState`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum StoreState {
    /// Serving (the zero value: a missing `state` means Up).
    #[default]
    Up,
    /// Being removed: PD moves its regions away.
    Offline,
    /// Removed; it will never serve again.
    Tombstone,
}

impl StoreState {
    /// Maps PD's integer encoding; unknown values are `None`.
    pub fn from_i32(v: i32) -> Option<Self> {
        match v {
            0 => Some(Self::Up),
            1 => Some(Self::Offline),
            2 => Some(Self::Tombstone),
            _ => None,
        }
    }
}

/// A store's lifecycle state in PD's newer model (`metapb.NodeState`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum NodeState {
    /// Joined but not serving its share yet (the zero value: a missing
    /// `node_state` means Preparing).
    #[default]
    Preparing,
    /// Serving.
    Serving,
    /// Removal in progress (regions being moved away).
    Removing,
    /// Removed (tombstone).
    Removed,
}

impl NodeState {
    /// Maps PD's integer encoding; unknown values are `None`.
    pub fn from_i32(v: i32) -> Option<Self> {
        match v {
            0 => Some(Self::Preparing),
            1 => Some(Self::Serving),
            2 => Some(Self::Removing),
            3 => Some(Self::Removed),
            _ => None,
        }
    }

    /// The node state to use when PD sent none.
    ///
    /// A current PD omits `node_state` only when it is 0 (Preparing), and it
    /// always sends a non-zero node state for Offline and Tombstone stores; an
    /// old PD never sends it. So a missing node state of an Offline store means
    /// an old PD (Removing), of a Tombstone store an old PD (Removed), and of an
    /// Up store Preparing.
    pub fn when_absent(state: StoreState) -> Self {
        match state {
            StoreState::Up => Self::Preparing,
            StoreState::Offline => Self::Removing,
            StoreState::Tombstone => Self::Removed,
        }
    }

    /// Settles the node states of one store listing.
    ///
    /// A PD older than node states (added to PD in 2022) never sends one; a
    /// current PD omits only Preparing (0) and sends Serving, Removing and
    /// Removed explicitly. So a listing in which no store carries a node state
    /// other than Preparing comes from an old PD, whose Up stores serve, or
    /// from a current PD whose stores are all Preparing, which lasts only
    /// until PD's next store check after bootstrap (PD turns every Preparing
    /// store Serving while the cluster holds few Regions). Without this, a PD
    /// that does not report node states would keep every store Preparing and
    /// no store would ever count as Ready. `reported` says whether any store of
    /// the listing carried a non-zero node state on the wire.
    pub(crate) fn settle_listing(stores: &mut [Store], reported: bool) {
        if reported {
            return;
        }
        for s in stores {
            if s.state == StoreState::Up && s.node_state == Self::Preparing {
                s.node_state = Self::Serving;
            }
        }
    }

    /// Combines an explicit node state (0 meaning "absent or Preparing", as on
    /// the wire) with the store state.
    pub(crate) fn from_wire(node_state: Option<i32>, state: StoreState) -> Self {
        match node_state.and_then(Self::from_i32) {
            Some(Self::Preparing) | None => Self::when_absent(state),
            Some(s) => s,
        }
    }
}

/// Liveness PD derives from heartbeats (HTTP `state_name`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum StoreLiveness {
    /// Heartbeats arrive (or the store is not Up, where liveness is not judged).
    Alive,
    /// No heartbeat for about 20 s.
    Disconnected,
    /// No heartbeat for longer than `max-store-down-time`.
    Down,
    /// Not reported (gRPC reads do not carry it).
    #[default]
    Unknown,
}

/// A TiKV store as PD sees it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Store {
    /// Store id.
    pub id: StoreId,
    /// Address clients reach the store on.
    pub address: String,
    /// Address the store's status (HTTP) server listens on.
    pub status_address: String,
    /// Reported TiKV version.
    pub version: String,
    /// Store labels (e.g. `zone`, `host`).
    pub labels: BTreeMap<String, String>,
    /// Three-state store state.
    pub state: StoreState,
    /// Lifecycle node state; derived from `state` when PD does not send it.
    pub node_state: NodeState,
    /// Heartbeat-derived liveness.
    pub liveness: StoreLiveness,
    /// Whether the store was removed with `force` (physically destroyed).
    pub physically_destroyed: bool,
    /// Region leaders on the store; `None` when the source does not report it (gRPC).
    pub leader_count: Option<u64>,
    /// Region peers on the store.
    pub region_count: u64,
    /// Capacity in bytes, when reported.
    pub capacity_bytes: Option<u64>,
    /// Available space in bytes, when reported.
    pub available_bytes: Option<u64>,
    /// Time since the store started, when reported.
    pub uptime: Option<Duration>,
    /// When the process that last registered the store started (unix seconds,
    /// `start_timestamp`), when reported. A restarted store is back once this is
    /// not older than its new Pod.
    pub start_timestamp: Option<i64>,
    /// When PD last received the store's heartbeat (unix seconds, PD's clock;
    /// `last_heartbeat`), when reported. How long a Disconnected or Down
    /// store has been silent, whenever the operator first looked.
    pub last_heartbeat: Option<i64>,
}

impl Store {
    /// True once the store is removed for good (Tombstone / Removed); only then
    /// may its Pod and volumes be deleted.
    pub fn is_removed(&self) -> bool {
        self.state == StoreState::Tombstone || self.node_state == NodeState::Removed
    }

    /// True while a removal is in progress (Offline / Removing).
    pub fn is_removing(&self) -> bool {
        !self.is_removed()
            && (self.state == StoreState::Offline || self.node_state == NodeState::Removing)
    }
}

/// Replication settings of the cluster (`GET /pd/api/v1/config`, `replication`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicationConfig {
    /// Number of replicas of each region.
    pub max_replicas: u64,
    /// Label keys used for replica isolation, most significant first.
    pub location_labels: Vec<String>,
}

impl Default for ReplicationConfig {
    fn default() -> Self {
        Self {
            max_replicas: 3,
            location_labels: Vec::new(),
        }
    }
}

/// A region peer that its leader reports as down.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DownPeer {
    /// Region the peer belongs to.
    pub region_id: u64,
    /// Peer id.
    pub peer_id: u64,
    /// Store that holds the peer.
    pub store_id: StoreId,
    /// How long the peer has been down.
    pub down_seconds: u64,
}

/// A Region that PD's Region health checks report with a down or a pending
/// peer (`/regions/check/down-peer` and `/regions/check/pending-peer`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UnhealthyRegion {
    /// Region id.
    pub id: u64,
    /// Stores holding a voting peer of the Region (learners excluded): the
    /// peers whose majority the Region needs.
    pub voters: Vec<StoreId>,
    /// Stores whose peer of the Region is reported down.
    pub down: Vec<StoreId>,
    /// Stores whose peer of the Region is pending (behind its leader's log).
    pub pending: Vec<StoreId>,
}

/// Parses a size as PD prints it (`"1.5TiB"`, `"100MiB"`, `"0B"`, also
/// decimal units like `"10GB"` and plain numbers) into bytes.
pub fn parse_byte_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let value: f64 = num.parse().ok()?;
    let multiplier: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "kib" | "ki" => 1024.0,
        "mib" | "mi" => 1024f64.powi(2),
        "gib" | "gi" => 1024f64.powi(3),
        "tib" | "ti" => 1024f64.powi(4),
        "pib" | "pi" => 1024f64.powi(5),
        "eib" | "ei" => 1024f64.powi(6),
        "kb" | "k" => 1e3,
        "mb" | "m" => 1e6,
        "gb" | "g" => 1e9,
        "tb" | "t" => 1e12,
        "pb" | "p" => 1e15,
        "eb" | "e" => 1e18,
        _ => return None,
    };
    let bytes = (value * multiplier).round();
    if !bytes.is_finite() || bytes < 0.0 || bytes > u64::MAX as f64 {
        return None;
    }
    Some(bytes as u64)
}

/// Parses a Go duration string (`"1h2m3.5s"`, `"300ms"`, `"0s"`).
pub fn parse_go_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    if s == "0" {
        return Some(Duration::ZERO);
    }
    if s.is_empty() || s.starts_with('-') {
        return None;
    }
    let mut rest = s.strip_prefix('+').unwrap_or(s);
    let mut total_nanos: f64 = 0.0;
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .filter(|&i| i > 0)?;
        let value: f64 = rest[..num_end].parse().ok()?;
        rest = &rest[num_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let nanos_per_unit = match &rest[..unit_end] {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        };
        rest = &rest[unit_end..];
        total_nanos += value * nanos_per_unit;
    }
    if !total_nanos.is_finite() || total_nanos > u64::MAX as f64 {
        return None;
    }
    Some(Duration::from_nanos(total_nanos.round() as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_sizes_as_pd_prints_them() {
        assert_eq!(parse_byte_size("0B"), Some(0));
        assert_eq!(parse_byte_size("512B"), Some(512));
        assert_eq!(parse_byte_size("100MiB"), Some(100 * 1024 * 1024));
        assert_eq!(parse_byte_size("1.5TiB"), Some(1024u64.pow(4) * 3 / 2));
        assert_eq!(parse_byte_size("3.999GiB"), Some(4_293_893_554));
        assert_eq!(parse_byte_size("10GB"), Some(10_000_000_000));
        assert_eq!(parse_byte_size("12345"), Some(12345));
        assert_eq!(parse_byte_size("lots"), None);
        assert_eq!(parse_byte_size("1.5XB"), None);
    }

    #[test]
    fn go_durations() {
        assert_eq!(parse_go_duration("0s"), Some(Duration::ZERO));
        assert_eq!(parse_go_duration("1h2m"), Some(Duration::from_secs(3720)));
        assert_eq!(
            parse_go_duration("1h2m3.5s"),
            Some(Duration::from_millis(3_723_500))
        );
        assert_eq!(parse_go_duration("300ms"), Some(Duration::from_millis(300)));
        assert_eq!(parse_go_duration("1m0s"), Some(Duration::from_secs(60)));
        assert_eq!(parse_go_duration("1.5µs"), Some(Duration::from_nanos(1500)));
        assert_eq!(parse_go_duration("5"), None);
        assert_eq!(parse_go_duration("-1s"), None);
        assert_eq!(parse_go_duration("1d"), None);
    }

    #[test]
    fn node_state_falls_back_to_store_state() {
        assert_eq!(
            NodeState::from_wire(None, StoreState::Up),
            NodeState::Preparing
        );
        assert_eq!(
            NodeState::from_wire(None, StoreState::Offline),
            NodeState::Removing
        );
        assert_eq!(
            NodeState::from_wire(Some(0), StoreState::Tombstone),
            NodeState::Removed
        );
        assert_eq!(
            NodeState::from_wire(Some(1), StoreState::Up),
            NodeState::Serving
        );
        assert_eq!(
            NodeState::from_wire(Some(2), StoreState::Offline),
            NodeState::Removing
        );
    }

    #[test]
    fn removal_predicates() {
        let mut s = Store {
            state: StoreState::Offline,
            node_state: NodeState::Removing,
            ..Store::default()
        };
        assert!(s.is_removing());
        assert!(!s.is_removed());
        s.state = StoreState::Tombstone;
        s.node_state = NodeState::Removed;
        assert!(s.is_removed());
        assert!(!s.is_removing());
    }
}
