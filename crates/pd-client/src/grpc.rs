//! Single gRPC calls on one channel: request building, response header checks,
//! status mapping and conversion to our types. No retries and no leader logic
//! here.

use std::time::Duration;

use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};

use crate::error::{PdError, Result};
use crate::proto::{metapb, pdpb};
use crate::tls::TlsConfig;
use crate::types::{
    ClusterId, Member, MemberId, Members, NodeState, Store, StoreId, StoreLiveness, StoreState,
};

type Client = pdpb::pd_client::PdClient<Channel>;

/// A lazily connecting channel to one URL (connects on first use,
/// reconnects by itself after failures).
pub(crate) fn channel(
    url: &str,
    tls: Option<&TlsConfig>,
    connect_timeout: Duration,
) -> Result<Channel> {
    let mut endpoint = Endpoint::from_shared(url.to_owned())
        .map_err(|e| PdError::Config {
            message: format!("invalid PD URL {url:?}"),
            source: Some(Box::new(e)),
        })?
        .connect_timeout(connect_timeout)
        .tcp_nodelay(true);
    if let Some(tls) = tls {
        endpoint = endpoint
            .tls_config(tls.tonic_config())
            .map_err(|e| PdError::Config {
                message: "TLS configuration rejected by gRPC transport".to_owned(),
                source: Some(Box::new(e)),
            })?;
    }
    Ok(endpoint.connect_lazy())
}

fn request<T>(msg: T, timeout: Duration) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    // Tells the server our deadline (grpc-timeout); the caller also enforces it.
    req.set_timeout(timeout);
    req
}

fn header(cluster_id: ClusterId) -> Option<pdpb::RequestHeader> {
    Some(pdpb::RequestHeader {
        cluster_id: cluster_id.0,
        sender_id: 0,
    })
}

/// Maps a gRPC status to our error.
pub(crate) fn map_status(
    operation: &'static str,
    status: Status,
    ours: ClusterId,
    timeout: Duration,
) -> PdError {
    let message = status.message().to_owned();
    match status.code() {
        // The server's deadline, or tonic's own enforcement of ours.
        Code::DeadlineExceeded => PdError::Timeout {
            operation,
            after: timeout,
        },
        Code::Cancelled if message.to_ascii_lowercase().contains("timeout") => PdError::Timeout {
            operation,
            after: timeout,
        },
        Code::FailedPrecondition if message.contains("cluster id") => PdError::ClusterIdMismatch {
            expected: ours,
            got: ClusterId(server_cluster_id(&message).unwrap_or(0)),
        },
        Code::Unavailable | Code::Cancelled | Code::Aborted | Code::ResourceExhausted => {
            PdError::Unavailable {
                message: format!("{operation}: {message}"),
                source: Some(Box::new(status)),
            }
        }
        // "not leader" / "not started" come as Unavailable from current PDs and
        // as Unknown from some older ones.
        Code::Unknown if message.contains("not leader") || message.contains("not started") => {
            PdError::Unavailable {
                message: format!("{operation}: {message}"),
                source: Some(Box::new(status)),
            }
        }
        Code::NotFound => PdError::NotFound { what: message },
        Code::Unimplemented => PdError::Protocol {
            operation,
            message: format!("PD does not implement this call: {message}"),
        },
        _ => PdError::Rejected {
            operation,
            status: None,
            message: format!("{:?}: {message}", status.code()),
        },
    }
}

/// PD says "mismatch cluster id, need X but got Y": X is the server's id.
fn server_cluster_id(message: &str) -> Option<u64> {
    let after = message.split("need").nth(1)?;
    after
        .split(|c: char| !c.is_ascii_digit())
        .find(|s| !s.is_empty())?
        .parse()
        .ok()
}

/// Checks a response header: present, our cluster id, no business error.
pub(crate) fn check_header(
    operation: &'static str,
    header: Option<&pdpb::ResponseHeader>,
    expected: ClusterId,
) -> Result<()> {
    let Some(h) = header else {
        return Err(PdError::Protocol {
            operation,
            message: "response has no header".to_owned(),
        });
    };
    if h.cluster_id != expected.0 {
        return Err(PdError::ClusterIdMismatch {
            expected,
            got: ClusterId(h.cluster_id),
        });
    }
    let Some(err) = &h.error else {
        return Ok(());
    };
    let message = err.message.clone();
    Err(match pdpb::ErrorType::try_from(err.r#type) {
        Ok(pdpb::ErrorType::Ok) => return Ok(()),
        Ok(pdpb::ErrorType::NotBootstrapped) => PdError::NotBootstrapped { message },
        Ok(pdpb::ErrorType::StoreTombstone) => PdError::AlreadyRemoved { what: message },
        Ok(pdpb::ErrorType::RegionNotFound | pdpb::ErrorType::EntryNotFound) => {
            PdError::NotFound { what: message }
        }
        // PD reports an unknown store id as UNKNOWN "... not found".
        Ok(pdpb::ErrorType::Unknown) if message.contains("not found") => {
            PdError::NotFound { what: message }
        }
        _ => PdError::Rejected {
            operation,
            status: None,
            message: format!("{}: {message}", err.r#type),
        },
    })
}

pub(crate) fn member_from_proto(m: pdpb::Member) -> Member {
    Member {
        name: m.name,
        id: MemberId(m.member_id),
        peer_urls: m.peer_urls,
        client_urls: m.client_urls,
        binary_version: m.binary_version,
        git_hash: m.git_hash,
    }
}

/// `None` for an absent leader (PD sends an empty message or none).
fn opt_member(m: Option<pdpb::Member>) -> Option<Member> {
    m.filter(|m| m.member_id != 0 || !m.name.is_empty())
        .map(member_from_proto)
}

pub(crate) fn members_from_proto(resp: pdpb::GetMembersResponse) -> Members {
    Members {
        cluster_id: ClusterId(resp.header.map(|h| h.cluster_id).unwrap_or(0)),
        members: resp.members.into_iter().map(member_from_proto).collect(),
        leader: opt_member(resp.leader),
        etcd_leader: opt_member(resp.etcd_leader),
    }
}

pub(crate) fn store_from_proto(s: metapb::Store, stats: Option<pdpb::StoreStats>) -> Store {
    let state = StoreState::from_i32(s.state).unwrap_or_default();
    Store {
        id: StoreId(s.id),
        address: s.address,
        status_address: s.status_address,
        version: s.version,
        labels: s.labels.into_iter().map(|l| (l.key, l.value)).collect(),
        state,
        node_state: NodeState::from_wire(Some(s.node_state), state),
        liveness: StoreLiveness::Unknown,
        physically_destroyed: s.physically_destroyed,
        leader_count: None,
        region_count: stats.as_ref().map_or(0, |st| u64::from(st.region_count)),
        capacity_bytes: stats.as_ref().map(|st| st.capacity),
        available_bytes: stats.as_ref().map(|st| st.available),
        uptime: None,
        start_timestamp: None,
        last_heartbeat: crate::http::heartbeat_secs(s.last_heartbeat),
    }
}

/// `GetMembers`: needs no cluster id; returns the raw cluster id the member
/// answered with (checking it is the caller's business).
pub(crate) async fn get_members(channel: Channel, timeout: Duration) -> Result<Members> {
    let mut client = Client::new(channel);
    let resp = client
        .get_members(request(pdpb::GetMembersRequest { header: None }, timeout))
        .await
        .map_err(|s| map_status("get_members", s, ClusterId(0), timeout))?
        .into_inner();
    if let Some(h) = &resp.header
        && let Some(err) = &h.error
        && err.r#type != pdpb::ErrorType::Ok as i32
    {
        // A member that is starting up answers with an error header.
        return Err(PdError::unavailable(format!(
            "get_members: {}",
            err.message
        )));
    }
    if resp.header.as_ref().is_none_or(|h| h.cluster_id == 0) {
        return Err(PdError::Protocol {
            operation: "get_members",
            message: "response carries no cluster id".to_owned(),
        });
    }
    Ok(members_from_proto(resp))
}

pub(crate) async fn is_bootstrapped(
    channel: Channel,
    cluster_id: ClusterId,
    timeout: Duration,
) -> Result<bool> {
    let resp = Client::new(channel)
        .is_bootstrapped(request(
            pdpb::IsBootstrappedRequest {
                header: header(cluster_id),
            },
            timeout,
        ))
        .await
        .map_err(|s| map_status("is_bootstrapped", s, cluster_id, timeout))?
        .into_inner();
    check_header("is_bootstrapped", resp.header.as_ref(), cluster_id)?;
    Ok(resp.bootstrapped)
}

pub(crate) async fn get_store(
    channel: Channel,
    cluster_id: ClusterId,
    id: StoreId,
    timeout: Duration,
) -> Result<Store> {
    let resp = Client::new(channel)
        .get_store(request(
            pdpb::GetStoreRequest {
                header: header(cluster_id),
                store_id: id.0,
            },
            timeout,
        ))
        .await
        .map_err(|s| map_status("get_store", s, cluster_id, timeout))?
        .into_inner();
    check_header("get_store", resp.header.as_ref(), cluster_id)?;
    let store = resp.store.ok_or_else(|| PdError::NotFound {
        what: format!("store {id}"),
    })?;
    Ok(store_from_proto(store, resp.stats))
}

pub(crate) async fn get_all_stores(
    channel: Channel,
    cluster_id: ClusterId,
    exclude_tombstone: bool,
    timeout: Duration,
) -> Result<Vec<Store>> {
    let resp = Client::new(channel)
        .get_all_stores(request(
            pdpb::GetAllStoresRequest {
                header: header(cluster_id),
                exclude_tombstone_stores: exclude_tombstone,
            },
            timeout,
        ))
        .await
        .map_err(|s| map_status("get_all_stores", s, cluster_id, timeout))?
        .into_inner();
    check_header("get_all_stores", resp.header.as_ref(), cluster_id)?;
    let reported = resp.stores.iter().any(|s| s.node_state != 0);
    let mut stores: Vec<Store> = resp
        .stores
        .into_iter()
        .map(|s| store_from_proto(s, None))
        .collect();
    NodeState::settle_listing(&mut stores, reported);
    Ok(stores)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_server_cluster_id_from_mismatch_message() {
        assert_eq!(
            server_cluster_id("mismatch cluster id, need 7 but got 9"),
            Some(7)
        );
        assert_eq!(server_cluster_id("something else"), None);
    }

    #[test]
    fn header_errors_map_to_meaningful_variants() {
        let h = |t: pdpb::ErrorType, msg: &str, id: u64| pdpb::ResponseHeader {
            cluster_id: id,
            error: Some(pdpb::Error {
                r#type: t as i32,
                message: msg.to_owned(),
            }),
        };
        let id = ClusterId(5);
        let cases = [
            (
                h(pdpb::ErrorType::NotBootstrapped, "x", 5),
                "not_bootstrapped",
            ),
            (
                h(pdpb::ErrorType::StoreTombstone, "x", 5),
                "already_removed",
            ),
            (
                h(pdpb::ErrorType::Unknown, "invalid store ID 3, not found", 5),
                "not_found",
            ),
            (h(pdpb::ErrorType::Unknown, "boom", 5), "rejected"),
            (h(pdpb::ErrorType::Ok, "", 6), "cluster_id_mismatch"),
        ];
        for (header, category) in cases {
            let err = check_header("op", Some(&header), id).err();
            assert_eq!(err.map(|e| e.category()), Some(category), "{header:?}");
        }
        let ok = pdpb::ResponseHeader {
            cluster_id: 5,
            error: None,
        };
        assert!(check_header("op", Some(&ok), id).is_ok());
        assert_eq!(
            check_header("op", None, id).err().map(|e| e.category()),
            Some("protocol")
        );
    }

    #[test]
    fn store_conversion_falls_back_on_node_state() {
        let s = metapb::Store {
            id: 4,
            state: metapb::StoreState::Offline as i32,
            node_state: 0,
            ..Default::default()
        };
        let store = store_from_proto(
            s,
            Some(pdpb::StoreStats {
                region_count: 12,
                ..Default::default()
            }),
        );
        assert_eq!(store.state, StoreState::Offline);
        assert_eq!(store.node_state, NodeState::Removing);
        assert_eq!(store.region_count, 12);
        assert_eq!(store.leader_count, None);
    }

    #[test]
    fn status_mapping() {
        let ours = ClusterId(1);
        let cases = [
            (Status::unavailable("not leader"), "unavailable"),
            (Status::unknown("rpc error: not leader"), "unavailable"),
            (Status::deadline_exceeded("slow"), "timeout"),
            (Status::cancelled("Timeout expired"), "timeout"),
            (Status::cancelled("h2 stream reset"), "unavailable"),
            (
                Status::failed_precondition("mismatch cluster id, need 2 but got 1"),
                "cluster_id_mismatch",
            ),
            (Status::invalid_argument("bad"), "rejected"),
            (Status::unimplemented("nope"), "protocol"),
        ];
        for (status, category) in cases {
            assert_eq!(
                map_status("op", status, ours, Duration::from_secs(1)).category(),
                category
            );
        }
        match map_status(
            "op",
            Status::failed_precondition("mismatch cluster id, need 2 but got 1"),
            ours,
            Duration::from_secs(1),
        ) {
            PdError::ClusterIdMismatch { expected, got } => {
                assert_eq!((expected, got), (ClusterId(1), ClusterId(2)));
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}
