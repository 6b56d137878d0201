//! PD's HTTP API: request paths, status mapping and the JSON shapes (private).
//! One request against one base URL; retries and leader choice are the
//! caller's business.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::error::{PdError, Result};
use crate::tls::TlsConfig;
use crate::types::{
    ClusterId, DownPeer, Member, MemberHealth, MemberId, Members, NodeState, ReplicationConfig,
    Store, StoreId, StoreLiveness, StoreState, UnhealthyRegion, parse_byte_size, parse_go_duration,
};

pub(crate) const API: &str = "/pd/api/v1";
/// Scheduler that evicts leaders; newer PDs run one instance holding a store
/// list, older ones one instance per store named `evict-leader-scheduler-{id}`.
pub(crate) const EVICT_LEADER: &str = "evict-leader-scheduler";
/// Header that makes a follower answer a request itself instead of
/// forwarding it to the leader.
pub(crate) const ALLOW_FOLLOWER: &str = "PD-Allow-Follower-Handle";

#[derive(Debug, Clone)]
pub(crate) struct HttpClient {
    client: reqwest::Client,
}

impl HttpClient {
    pub(crate) fn new(tls: Option<&TlsConfig>, connect_timeout: Duration) -> Result<Self> {
        // Always hand reqwest a rustls config with an explicit crypto provider,
        // so nothing depends on a process-wide default provider.
        let rustls_config = match tls {
            Some(tls) => tls.rustls_client_config()?,
            None => rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .map_err(|e| PdError::Config {
                message: "TLS protocol versions".to_owned(),
                source: Some(Box::new(e)),
            })?
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth(),
        };
        let client = reqwest::Client::builder()
            .tls_backend_preconfigured(rustls_config)
            .connect_timeout(connect_timeout)
            .no_proxy()
            .build()
            .map_err(|e| PdError::Config {
                message: "cannot build HTTP client".to_owned(),
                source: Some(Box::new(e)),
            })?;
        Ok(Self { client })
    }

    /// Sends one request; returns the status and body of any HTTP answer.
    /// Only transport failures are errors here.
    pub(crate) async fn send(
        &self,
        operation: &'static str,
        method: Method,
        url: &str,
        body: Option<serde_json::Value>,
        timeout: Duration,
    ) -> Result<(StatusCode, Vec<u8>)> {
        self.send_with(operation, method, url, body, timeout, false)
            .await
    }

    /// [`Self::send`], answered by the member asked (`local`) even if it is
    /// a follower.
    pub(crate) async fn send_with(
        &self,
        operation: &'static str,
        method: Method,
        url: &str,
        body: Option<serde_json::Value>,
        timeout: Duration,
        local: bool,
    ) -> Result<(StatusCode, Vec<u8>)> {
        let mut req = self.client.request(method, url).timeout(timeout);
        if local {
            req = req.header(ALLOW_FOLLOWER, "true");
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| transport_error(operation, e, timeout))?;
        let status = resp.status();
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| transport_error(operation, e, timeout))?;
        Ok((status, bytes.to_vec()))
    }
}

fn transport_error(operation: &'static str, e: reqwest::Error, timeout: Duration) -> PdError {
    if e.is_timeout() {
        PdError::Timeout {
            operation,
            after: timeout,
        }
    } else if e.is_builder() {
        PdError::Config {
            message: format!("{operation}: invalid request"),
            source: Some(Box::new(e)),
        }
    } else {
        PdError::Unavailable {
            message: format!("{operation}: {e}"),
            source: Some(Box::new(e)),
        }
    }
}

/// PD's error bodies are usually a JSON string; show the string, else the text.
pub(crate) fn error_message(body: &[u8]) -> String {
    serde_json::from_slice::<String>(body)
        .unwrap_or_else(|_| String::from_utf8_lossy(body).trim().to_owned())
}

/// Maps a non-success status. `what` names the target for NotFound/Gone.
pub(crate) fn status_error(
    operation: &'static str,
    status: StatusCode,
    body: &[u8],
    what: &str,
) -> PdError {
    let message = error_message(body);
    // PD answers store queries on a cluster no TiKV has bootstrapped yet with
    // HTTP 500 and the error code `ErrNotBootstrapped` (normal before the
    // first store joins, not a failure of PD).
    if message.contains("ErrNotBootstrapped") {
        return PdError::NotBootstrapped { message };
    }
    // The member asked has left the cluster or is shutting down (its embedded
    // etcd's raft is stopped): ask another one (found by e2e: after a member
    // was removed, the client still held its URL).
    if message.contains("raft: stopped") || message.contains("server stopped") {
        return PdError::unavailable(format!(
            "{operation}: the PD member asked is stopped or no longer a member: {message}"
        ));
    }
    // etcd refuses a membership change until every member has been connected to the leader
    // for a while after the previous change ("unhealthy cluster"): a wait, not a refusal
    // (found by e2e: the next member removal of a scale-in, 40 ms after the previous one,
    // was taken as refused and retried only after minutes).
    if message.contains("unhealthy cluster") {
        return PdError::unavailable(format!(
            "{operation}: PD's etcd is not ready for another membership change yet: {message}"
        ));
    }
    match status {
        StatusCode::SERVICE_UNAVAILABLE | StatusCode::BAD_GATEWAY | StatusCode::GATEWAY_TIMEOUT => {
            PdError::unavailable(format!("{operation}: HTTP {status}: {message}"))
        }
        StatusCode::NOT_FOUND => PdError::NotFound {
            what: format!("{what}: {message}"),
        },
        StatusCode::GONE => PdError::AlreadyRemoved {
            what: format!("{what}: {message}"),
        },
        _ => PdError::Rejected {
            operation,
            status: Some(status.as_u16()),
            message,
        },
    }
}

pub(crate) fn decode<T: DeserializeOwned>(operation: &'static str, body: &[u8]) -> Result<T> {
    serde_json::from_slice(body).map_err(|e| PdError::Protocol {
        operation,
        message: format!("cannot decode JSON: {e}"),
    })
}

// ----- JSON shapes (Go `omitempty` everywhere: every field may be missing) -----

#[derive(Debug, Deserialize, Default)]
#[serde(default)]
pub(crate) struct JsonHeader {
    pub(crate) cluster_id: u64,
}

#[derive(Debug, Deserialize, Default)]
#[serde(default)]
pub(crate) struct JsonMember {
    name: String,
    member_id: u64,
    peer_urls: Vec<String>,
    client_urls: Vec<String>,
    binary_version: String,
    git_hash: String,
}

impl From<JsonMember> for Member {
    fn from(m: JsonMember) -> Self {
        Member {
            name: m.name,
            id: MemberId(m.member_id),
            peer_urls: m.peer_urls,
            client_urls: m.client_urls,
            binary_version: m.binary_version,
            git_hash: m.git_hash,
        }
    }
}

fn present(m: Option<JsonMember>) -> Option<Member> {
    m.filter(|m| m.member_id != 0 || !m.name.is_empty())
        .map(Member::from)
}

#[derive(Debug, Deserialize, Default)]
#[serde(default)]
pub(crate) struct JsonMembers {
    header: Option<JsonHeader>,
    members: Vec<JsonMember>,
    leader: Option<JsonMember>,
    etcd_leader: Option<JsonMember>,
}

impl JsonMembers {
    pub(crate) fn into_members(self) -> Members {
        Members {
            cluster_id: ClusterId(self.header.map_or(0, |h| h.cluster_id)),
            members: self.members.into_iter().map(Member::from).collect(),
            leader: present(self.leader),
            etcd_leader: present(self.etcd_leader),
        }
    }
}

pub(crate) fn decode_leader(body: &[u8]) -> Result<Member> {
    let m: JsonMember = decode("leader", body)?;
    present(Some(m)).ok_or_else(|| PdError::unavailable("leader: PD reports no leader"))
}

#[derive(Debug, Deserialize, Default)]
#[serde(default)]
pub(crate) struct JsonHealth {
    name: String,
    member_id: u64,
    client_urls: Vec<String>,
    health: bool,
}

#[derive(Debug, Deserialize, Default)]
#[serde(default)]
struct JsonStatus {
    start_timestamp: Option<i64>,
}

/// `start_timestamp` of a `/status` answer (`None`, or 0: not reported).
pub(crate) fn decode_start(body: &[u8]) -> Result<Option<i64>> {
    let st: JsonStatus = decode("member_started", body)?;
    Ok(st.start_timestamp.filter(|t| *t > 0))
}

pub(crate) fn decode_health(body: &[u8]) -> Result<Vec<MemberHealth>> {
    let list: Option<Vec<JsonHealth>> = decode("health", body)?;
    Ok(list
        .unwrap_or_default()
        .into_iter()
        .map(|h| MemberHealth {
            name: h.name,
            id: MemberId(h.member_id),
            client_urls: h.client_urls,
            healthy: h.health,
        })
        .collect())
}

#[derive(Debug, Deserialize, Default)]
#[serde(default)]
pub(crate) struct JsonCluster {
    pub(crate) id: u64,
}

/// An enum PD encodes as an integer; tolerate its name too.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum IntOrName {
    Int(i32),
    Name(String),
}

fn store_state(v: Option<IntOrName>) -> Option<StoreState> {
    match v {
        None => Some(StoreState::Up),
        Some(IntOrName::Int(i)) => StoreState::from_i32(i),
        Some(IntOrName::Name(n)) => match n.as_str() {
            "Up" => Some(StoreState::Up),
            "Offline" => Some(StoreState::Offline),
            "Tombstone" => Some(StoreState::Tombstone),
            _ => None,
        },
    }
}

fn node_state(v: Option<IntOrName>) -> Option<Option<i32>> {
    match v {
        None => Some(None),
        Some(IntOrName::Int(i)) => NodeState::from_i32(i).map(|_| Some(i)),
        Some(IntOrName::Name(n)) => match n.as_str() {
            "Preparing" => Some(Some(0)),
            "Serving" => Some(Some(1)),
            "Removing" => Some(Some(2)),
            "Removed" => Some(Some(3)),
            _ => None,
        },
    }
}

#[derive(Debug, Deserialize, Default)]
#[serde(default)]
struct JsonLabel {
    key: String,
    value: String,
}

#[derive(Debug, Deserialize, Default)]
#[serde(default)]
struct JsonStoreMeta {
    id: u64,
    address: String,
    state: Option<IntOrName>,
    labels: Option<Vec<JsonLabel>>,
    version: String,
    status_address: String,
    physically_destroyed: bool,
    node_state: Option<IntOrName>,
    state_name: String,
    start_timestamp: i64,
    /// Unix nanoseconds.
    last_heartbeat: i64,
}

#[derive(Debug, Deserialize, Default)]
#[serde(default)]
struct JsonStoreStatus {
    capacity: Option<String>,
    available: Option<String>,
    leader_count: u64,
    region_count: u64,
    uptime: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(default)]
pub(crate) struct JsonStoreInfo {
    store: Option<JsonStoreMeta>,
    status: Option<JsonStoreStatus>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(default)]
pub(crate) struct JsonStores {
    stores: Option<Vec<JsonStoreInfo>>,
}

impl JsonStoreInfo {
    pub(crate) fn into_store(self, operation: &'static str) -> Result<Store> {
        let meta = self.store.ok_or_else(|| PdError::Protocol {
            operation,
            message: "store info without `store`".to_owned(),
        })?;
        let bad = |field: &str| PdError::Protocol {
            operation,
            message: format!("store {}: unknown {field}", meta.id),
        };
        let state = store_state(meta.state).ok_or_else(|| bad("state"))?;
        let node = node_state(meta.node_state).ok_or_else(|| bad("node_state"))?;
        let liveness = match meta.state_name.as_str() {
            "Disconnected" => StoreLiveness::Disconnected,
            "Down" => StoreLiveness::Down,
            _ => StoreLiveness::Alive,
        };
        let status = self.status.unwrap_or_default();
        Ok(Store {
            id: StoreId(meta.id),
            address: meta.address,
            status_address: meta.status_address,
            version: meta.version,
            labels: meta
                .labels
                .unwrap_or_default()
                .into_iter()
                .map(|l| (l.key, l.value))
                .collect(),
            state,
            node_state: NodeState::from_wire(node, state),
            liveness,
            physically_destroyed: meta.physically_destroyed,
            leader_count: Some(status.leader_count),
            region_count: status.region_count,
            capacity_bytes: status.capacity.as_deref().and_then(parse_byte_size),
            available_bytes: status.available.as_deref().and_then(parse_byte_size),
            uptime: status.uptime.as_deref().and_then(parse_go_duration),
            start_timestamp: (meta.start_timestamp > 0).then_some(meta.start_timestamp),
            last_heartbeat: heartbeat_secs(meta.last_heartbeat),
        })
    }
}

/// PD's `last_heartbeat` (unix nanoseconds; 0 when never heard from) in unix seconds.
pub(crate) fn heartbeat_secs(nanos: i64) -> Option<i64> {
    (nanos > 0).then_some(nanos / 1_000_000_000)
}

pub(crate) fn decode_stores(body: &[u8]) -> Result<Vec<Store>> {
    let stores: JsonStores = decode("stores", body)?;
    let infos = stores.stores.unwrap_or_default();
    let reported = infos.iter().any(|i| {
        i.store
            .as_ref()
            .and_then(|m| node_state(m.node_state.clone()))
            .is_some_and(|n| n.is_some_and(|v| v != 0))
    });
    let mut stores = infos
        .into_iter()
        .map(|s| s.into_store("stores"))
        .collect::<Result<Vec<_>>>()?;
    NodeState::settle_listing(&mut stores, reported);
    Ok(stores)
}

pub(crate) fn decode_store(body: &[u8]) -> Result<Store> {
    decode::<JsonStoreInfo>("store", body)?.into_store("store")
}

#[derive(Debug, Deserialize, Default)]
#[serde(default)]
struct JsonPeer {
    id: u64,
    store_id: u64,
}

#[derive(Debug, Deserialize, Default)]
#[serde(default)]
struct JsonDownPeer {
    peer: Option<JsonPeer>,
    down_seconds: u64,
}

#[derive(Debug, Deserialize, Default)]
#[serde(default)]
struct JsonRegion {
    id: u64,
    peers: Option<Vec<JsonRegionPeer>>,
    down_peers: Option<Vec<JsonDownPeer>>,
    pending_peers: Option<Vec<JsonPeer>>,
}

/// A peer in a Region's peer list: `role_name` is `Voter`, `Learner`,
/// `IncomingVoter` or `DemotingVoter` (older PDs send only `is_learner`).
#[derive(Debug, Deserialize, Default)]
#[serde(default)]
struct JsonRegionPeer {
    store_id: u64,
    is_learner: bool,
    role_name: String,
}

#[derive(Debug, Deserialize, Default)]
#[serde(default)]
struct JsonRegions {
    regions: Option<Vec<JsonRegion>>,
}

/// Merges the answers of PD's Region health checks (`down-peer`,
/// `pending-peer`) into one entry per Region.
pub(crate) fn decode_unhealthy_regions(bodies: &[&[u8]]) -> Result<Vec<UnhealthyRegion>> {
    let mut merged: BTreeMap<u64, UnhealthyRegion> = BTreeMap::new();
    for body in bodies {
        let regions: JsonRegions = decode("unhealthy_regions", body)?;
        for r in regions.regions.unwrap_or_default() {
            let entry = merged.entry(r.id).or_insert_with(|| UnhealthyRegion {
                id: r.id,
                ..UnhealthyRegion::default()
            });
            if entry.voters.is_empty() {
                entry.voters = r
                    .peers
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|p| !p.is_learner && p.role_name != "Learner")
                    .map(|p| StoreId(p.store_id))
                    .collect();
            }
            for d in r.down_peers.unwrap_or_default() {
                if let Some(p) = d.peer {
                    let id = StoreId(p.store_id);
                    if !entry.down.contains(&id) {
                        entry.down.push(id);
                    }
                }
            }
            for p in r.pending_peers.unwrap_or_default() {
                let id = StoreId(p.store_id);
                if !entry.pending.contains(&id) {
                    entry.pending.push(id);
                }
            }
        }
    }
    Ok(merged.into_values().collect())
}

pub(crate) fn decode_down_peers(body: &[u8]) -> Result<Vec<DownPeer>> {
    let regions: JsonRegions = decode("down_peers", body)?;
    Ok(regions
        .regions
        .unwrap_or_default()
        .into_iter()
        .flat_map(|r| {
            let region_id = r.id;
            r.down_peers
                .unwrap_or_default()
                .into_iter()
                .filter_map(move |d| {
                    let peer = d.peer?;
                    Some(DownPeer {
                        region_id,
                        peer_id: peer.id,
                        store_id: StoreId(peer.store_id),
                        down_seconds: d.down_seconds,
                    })
                })
        })
        .collect())
}

/// `location-labels` is a comma-joined string; tolerate a list too.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Labels {
    Joined(String),
    List(Vec<String>),
}

#[derive(Debug, Deserialize, Default)]
#[serde(default)]
struct JsonReplication {
    #[serde(rename = "max-replicas")]
    max_replicas: Option<u64>,
    #[serde(rename = "location-labels")]
    location_labels: Option<Labels>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(default)]
struct JsonConfig {
    replication: Option<JsonReplication>,
}

pub(crate) fn decode_replication(body: &[u8]) -> Result<ReplicationConfig> {
    let config: JsonConfig = decode("replication_config", body)?;
    let r = config.replication.ok_or_else(|| PdError::Protocol {
        operation: "replication_config",
        message: "config has no `replication` section".to_owned(),
    })?;
    let location_labels = match r.location_labels {
        None => Vec::new(),
        Some(Labels::Joined(s)) => s
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect(),
        Some(Labels::List(l)) => l,
    };
    Ok(ReplicationConfig {
        max_replicas: r.max_replicas.unwrap_or(3),
        location_labels,
    })
}

/// Store ids in per-store evict-leader scheduler names (`evict-leader-scheduler-7`),
/// and whether the single (newer) scheduler is present.
pub(crate) fn evicting_from_scheduler_names(names: &[String]) -> (BTreeSet<StoreId>, bool) {
    let mut ids = BTreeSet::new();
    let mut single = false;
    for name in names {
        if name == EVICT_LEADER {
            single = true;
        } else if let Some(id) = name
            .strip_prefix(EVICT_LEADER)
            .and_then(|rest| rest.strip_prefix('-'))
            .and_then(|id| id.parse::<u64>().ok())
        {
            ids.insert(StoreId(id));
        }
    }
    (ids, single)
}

#[derive(Debug, Deserialize, Default)]
#[serde(default)]
struct JsonEvictConfig {
    #[serde(rename = "store-id-ranges")]
    store_id_ranges: BTreeMap<String, serde_json::Value>,
}

/// Store ids of the single evict-leader scheduler's config.
pub(crate) fn decode_evict_config(body: &[u8]) -> Result<BTreeSet<StoreId>> {
    let c: JsonEvictConfig = decode("evicting_stores", body)?;
    c.store_id_ranges
        .keys()
        .map(|k| {
            k.parse::<u64>()
                .map(StoreId)
                .map_err(|_| PdError::Protocol {
                    operation: "evicting_stores",
                    message: format!("store id {k:?} is not a number"),
                })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn store_json_quirks() {
        // Up store from a current PD in Preparing: both `state` and
        // `node_state` omitted; sizes and uptime are strings.
        let body = br#"{"count":3,"stores":[
          {"store":{"id":1,"address":"tikv-0:20160","labels":[{"key":"zone","value":"a"}],
                    "version":"8.5.0","state_name":"Up","start_timestamp":1763780000,
                    "last_heartbeat":1763780123456789012},
           "status":{"capacity":"1.5TiB","available":"100MiB","leader_count":7,
                     "region_count":21,"uptime":"1h2m3s"}},
          {"store":{"id":2,"address":"tikv-1:20160","state":1,"node_state":2,
                    "state_name":"Offline"},
           "status":{"region_count":4}},
          {"store":{"id":18446744073709551615,"address":"tikv-2:20160","state":2,
                    "state_name":"Tombstone"}},
          {"store":{"id":4,"address":"tikv-3:20160","node_state":1,"state_name":"Down"},
           "status":{"capacity":"0B"}}
        ]}"#;
        let stores = decode_stores(body).unwrap();
        assert_eq!(stores.len(), 4);
        let s = &stores[0];
        assert_eq!(s.state, StoreState::Up);
        assert_eq!(s.node_state, NodeState::Preparing);
        assert_eq!(s.leader_count, Some(7));
        assert_eq!(s.region_count, 21);
        assert_eq!(s.capacity_bytes, Some(1024u64.pow(4) * 3 / 2));
        assert_eq!(s.available_bytes, Some(100 << 20));
        assert_eq!(s.uptime, Some(Duration::from_secs(3723)));
        assert_eq!(s.start_timestamp, Some(1_763_780_000));
        assert_eq!(stores[1].start_timestamp, None);
        assert_eq!(s.last_heartbeat, Some(1_763_780_123));
        assert_eq!(stores[1].last_heartbeat, None);
        assert_eq!(s.labels.get("zone").map(String::as_str), Some("a"));
        assert_eq!(s.liveness, StoreLiveness::Alive);

        let s = &stores[1];
        assert_eq!(
            (s.state, s.node_state),
            (StoreState::Offline, NodeState::Removing)
        );
        assert_eq!(s.leader_count, Some(0), "missing leader_count = 0");
        assert!(s.is_removing());

        // Old PD: no node_state for a tombstone store; u64::MAX id survives.
        let s = &stores[2];
        assert_eq!(s.id, StoreId(u64::MAX));
        assert_eq!(
            (s.state, s.node_state),
            (StoreState::Tombstone, NodeState::Removed)
        );
        assert!(s.is_removed());

        let s = &stores[3];
        assert_eq!(
            (s.state, s.node_state),
            (StoreState::Up, NodeState::Serving)
        );
        assert_eq!(s.liveness, StoreLiveness::Down);
        assert_eq!(s.capacity_bytes, Some(0));
    }

    #[test]
    fn old_pd_without_node_states_serves_its_up_stores() {
        // A PD from before node states: no store carries `node_state`.
        let body = br#"{"count":3,"stores":[
          {"store":{"id":1,"address":"tikv-0:20160","state_name":"Up"}},
          {"store":{"id":2,"address":"tikv-1:20160","state":1,"state_name":"Offline"}},
          {"store":{"id":3,"address":"tikv-2:20160","state":2,"state_name":"Tombstone"}}
        ]}"#;
        let states: Vec<_> = decode_stores(body)
            .unwrap()
            .iter()
            .map(|s| s.node_state)
            .collect();
        assert_eq!(
            states,
            [NodeState::Serving, NodeState::Removing, NodeState::Removed]
        );
        // One explicit node state anywhere marks a current PD: its Up store
        // without one is Preparing.
        let body = br#"{"count":2,"stores":[
          {"store":{"id":1,"address":"tikv-0:20160","state_name":"Up"}},
          {"store":{"id":3,"address":"tikv-2:20160","state":2,"node_state":3,"state_name":"Tombstone"}}
        ]}"#;
        let stores = decode_stores(body).unwrap();
        assert_eq!(stores[0].node_state, NodeState::Preparing);
        // A single-store answer cannot tell; it keeps Preparing.
        let body = br#"{"store":{"id":1,"address":"tikv-0:20160","state_name":"Up"}}"#;
        assert_eq!(decode_store(body).unwrap().node_state, NodeState::Preparing);
    }

    #[test]
    fn unknown_store_state_is_a_protocol_error() {
        let body = br#"{"store":{"id":1,"state":9}}"#;
        assert_eq!(decode_store(body).unwrap_err().category(), "protocol");
        assert_eq!(
            decode_store(b"not json").unwrap_err().category(),
            "protocol"
        );
    }

    #[test]
    fn null_store_list_is_empty() {
        assert!(
            decode_stores(br#"{"count":0,"stores":null}"#)
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn member_ids_above_2_pow_53_are_exact() {
        // 2^53 + 1 is the first integer an f64 cannot represent.
        let body = br#"{"header":{"cluster_id":7283645296542118389},
          "members":[{"name":"pd-0","member_id":9007199254740993,"client_urls":["http://pd-0:2379"]},
                     {"name":"pd-1","member_id":18446744073709551615}],
          "leader":{"name":"pd-0","member_id":9007199254740993},
          "etcd_leader":{}}"#;
        let m = decode::<JsonMembers>("members", body)
            .unwrap()
            .into_members();
        assert_eq!(m.cluster_id, ClusterId(7_283_645_296_542_118_389));
        assert_eq!(m.members[0].id, MemberId(9_007_199_254_740_993));
        assert_eq!(m.members[1].id, MemberId(u64::MAX));
        assert_eq!(
            m.leader.map(|l| l.id),
            Some(MemberId(9_007_199_254_740_993))
        );
        assert_eq!(m.etcd_leader, None, "empty object = no etcd leader");
    }

    #[test]
    fn health_and_leader() {
        let body = br#"[{"name":"pd-0","member_id":9007199254740995,"client_urls":["http://pd-0:2379"],"health":true},
                        {"name":"pd-1","member_id":2}]"#;
        let h = decode_health(body).unwrap();
        assert_eq!(h[0].id, MemberId(9_007_199_254_740_995));
        assert!(h[0].healthy);
        assert!(!h[1].healthy, "missing health = false");
        assert!(decode_health(b"null").unwrap().is_empty());
        assert_eq!(decode_leader(b"{}").unwrap_err().category(), "unavailable");
    }

    #[test]
    fn replication_config() {
        let body = br#"{"replication":{"max-replicas":5,"location-labels":"zone, rack,host",
                        "strictly-match-label":"false"},"schedule":{"max-store-down-time":"30m0s"}}"#;
        let r = decode_replication(body).unwrap();
        assert_eq!(r.max_replicas, 5);
        assert_eq!(r.location_labels, ["zone", "rack", "host"]);
        let r = decode_replication(br#"{"replication":{"max-replicas":3,"location-labels":""}}"#)
            .unwrap();
        assert!(r.location_labels.is_empty());
        let r = decode_replication(br#"{"replication":{"location-labels":["a","b"]}}"#).unwrap();
        assert_eq!((r.max_replicas, r.location_labels.len()), (3, 2));
        assert!(decode_replication(b"{}").is_err());
    }

    #[test]
    fn unhealthy_regions_merge_down_and_pending_checks_per_region() {
        let down = br#"{"count":2,"regions":[
            {"id":10,"peers":[{"id":11,"store_id":1,"role_name":"Voter"},
                              {"id":12,"store_id":2,"role_name":"Voter"},
                              {"id":13,"store_id":3,"role_name":"Voter"},
                              {"id":14,"store_id":4,"role_name":"Learner","is_learner":true}],
             "down_peers":[{"peer":{"id":12,"store_id":2},"down_seconds":90}]},
            {"id":20,"peers":[{"id":21,"store_id":1},{"id":22,"store_id":2}],
             "down_peers":[{"peer":{"id":22,"store_id":2},"down_seconds":90}]}]}"#;
        let pending = br#"{"count":1,"regions":[
            {"id":10,"peers":[{"id":11,"store_id":1},{"id":12,"store_id":2},{"id":13,"store_id":3}],
             "pending_peers":[{"id":13,"store_id":3}]}]}"#;
        let r = decode_unhealthy_regions(&[down, pending]).unwrap();
        assert_eq!(
            r,
            vec![
                UnhealthyRegion {
                    id: 10,
                    voters: vec![StoreId(1), StoreId(2), StoreId(3)],
                    down: vec![StoreId(2)],
                    pending: vec![StoreId(3)],
                },
                UnhealthyRegion {
                    id: 20,
                    voters: vec![StoreId(1), StoreId(2)],
                    down: vec![StoreId(2)],
                    pending: vec![],
                },
            ]
        );
        // An empty answer (Go's `omitempty`) is no Region.
        assert_eq!(
            decode_unhealthy_regions(&[b"{}", b"{\"count\":0}"]).unwrap(),
            vec![]
        );
        assert!(decode_unhealthy_regions(&[b"not json"]).is_err());
    }

    #[test]
    fn down_peers() {
        let body = br#"{"count":1,"regions":[{"id":10,"down_peers":[
            {"peer":{"id":11,"store_id":3},"down_seconds":600}]},{"id":12}]}"#;
        assert_eq!(
            decode_down_peers(body).unwrap(),
            [DownPeer {
                region_id: 10,
                peer_id: 11,
                store_id: StoreId(3),
                down_seconds: 600
            }]
        );
    }

    #[test]
    fn evict_leader_both_namings() {
        let names: Vec<String> = [
            "balance-leader-scheduler",
            "evict-leader-scheduler-4",
            "evict-leader-scheduler-x",
            "evict-leader-scheduler",
        ]
        .map(String::from)
        .into();
        let (ids, single) = evicting_from_scheduler_names(&names);
        assert_eq!(ids, BTreeSet::from([StoreId(4)]));
        assert!(single);
        let cfg = br#"{"store-id-ranges":{"1":[{"start-key":"","end-key":""}],"7":[]},"batch":3}"#;
        assert_eq!(
            decode_evict_config(cfg).unwrap(),
            BTreeSet::from([StoreId(1), StoreId(7)])
        );
    }

    #[test]
    fn status_mapping() {
        let e = status_error(
            "delete_store",
            StatusCode::GONE,
            br#""store 3 removed""#,
            "store 3",
        );
        assert!(matches!(e, PdError::AlreadyRemoved { .. }));
        let e = status_error("delete_store", StatusCode::NOT_FOUND, b"", "store 3");
        assert!(e.is_already_gone());
        let e = status_error(
            "delete_store",
            StatusCode::BAD_REQUEST,
            br#""[PD:cluster:ErrStoresNotEnough]not enough stores""#,
            "store 3",
        );
        match e {
            PdError::Rejected {
                status, message, ..
            } => {
                assert_eq!(status, Some(400));
                assert_eq!(message, "[PD:cluster:ErrStoresNotEnough]not enough stores");
            }
            other => panic!("unexpected {other:?}"),
        }
        let e = status_error("x", StatusCode::SERVICE_UNAVAILABLE, b"no leader", "x");
        assert!(e.is_retryable());
        // What PD (checked against a real pd-server) says about stores
        // before the first TiKV joined.
        let e = status_error(
            "stores",
            StatusCode::INTERNAL_SERVER_ERROR,
            br#""[PD:cluster:ErrNotBootstrapped]TiKV cluster not bootstrapped, please start TiKV first""#,
            "stores",
        );
        assert!(matches!(e, PdError::NotBootstrapped { .. }), "{e:?}");
        // What a removed member answers (checked against a real pd-server).
        let e = status_error(
            "remove_member",
            StatusCode::INTERNAL_SERVER_ERROR,
            br#""[PD:etcd:ErrEtcdTxnInternal]rpc error: code = Unknown desc = raft: stopped""#,
            "PD member 9",
        );
        assert_eq!(e.category(), "unavailable", "{e:?}");
        // What PD answers right after another membership change (real pd-server).
        let e = status_error(
            "remove_member",
            StatusCode::INTERNAL_SERVER_ERROR,
            br#""[PD:etcd:ErrEtcdMemberRemove]etcdserver: unhealthy cluster: etcdserver: unhealthy cluster""#,
            "PD member 9",
        );
        assert_eq!(e.category(), "unavailable", "{e:?}");
    }
}
