//! An in-process stand-in for a PD cluster: each member is one server on
//! 127.0.0.1 (port 0) answering gRPC (`pdpb.PD` subset) and HTTP on the same
//! listener, like PD. HTTP answers are scripted per request line; gRPC
//! answers come from shared cluster state.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tonic::{Request, Status};

use crate::proto::{metapb, pdpb};

/// One scripted HTTP answer.
#[derive(Debug, Clone)]
pub(crate) struct Scripted {
    pub(crate) status: u16,
    pub(crate) body: String,
    pub(crate) delay: Duration,
}

pub(crate) fn reply(status: u16, body: &str) -> Scripted {
    Scripted {
        status,
        body: body.to_owned(),
        delay: Duration::ZERO,
    }
}

/// A request the mock received.
#[derive(Debug, Clone)]
pub(crate) struct Logged {
    pub(crate) member: String,
    /// `"GET /pd/api/v1/stores?state=0"` or `"grpc GetMembers"`.
    pub(crate) line: String,
    pub(crate) body: String,
    /// The request asked a follower to answer itself (HTTP header).
    pub(crate) allow_follower: bool,
}

#[derive(Debug, Default)]
pub(crate) struct Shared {
    /// Cluster id each member answers with.
    pub(crate) cluster_ids: HashMap<String, u64>,
    pub(crate) members: Vec<pdpb::Member>,
    pub(crate) leader: Option<String>,
    /// When the leader gets a call other than GetMembers, leadership moves to
    /// this member and the call fails with "not leader" (a leader change mid-call).
    pub(crate) move_leader_on_call: Option<String>,
    /// Delay of gRPC answers (except GetMembers) per member.
    pub(crate) grpc_delay: HashMap<String, Duration>,
    /// If set, the leader answers non-GetMembers calls with this cluster id.
    pub(crate) answer_cluster_id: Option<u64>,
    pub(crate) bootstrapped: bool,
    pub(crate) stores: Vec<metapb::Store>,
    /// Scripted HTTP answers by request line (`"DELETE /pd/api/v1/store/1"`);
    /// the last answer of a queue repeats.
    pub(crate) http: HashMap<String, VecDeque<Scripted>>,
    pub(crate) log: Vec<Logged>,
}

pub(crate) type SharedState = Arc<Mutex<Shared>>;

pub(crate) fn lock(s: &SharedState) -> std::sync::MutexGuard<'_, Shared> {
    s.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[derive(Clone)]
struct MemberCtx {
    name: String,
    shared: SharedState,
}

#[tonic::async_trait]
impl pdpb::pd_server::Pd for MemberCtx {
    async fn get_members(
        &self,
        _request: Request<pdpb::GetMembersRequest>,
    ) -> Result<tonic::Response<pdpb::GetMembersResponse>, Status> {
        // Not delayed: `grpc_delay` models a slow leader, not a slow member list.
        let _ = self.before_call("GetMembers", "");
        let s = lock(&self.shared);
        let leader = s
            .leader
            .as_ref()
            .and_then(|l| s.members.iter().find(|m| &m.name == l))
            .cloned();
        Ok(tonic::Response::new(pdpb::GetMembersResponse {
            header: Some(pdpb::ResponseHeader {
                cluster_id: s.cluster_ids.get(&self.name).copied().unwrap_or(0),
                error: None,
            }),
            members: s.members.clone(),
            leader: leader.clone(),
            etcd_leader: leader,
        }))
    }

    async fn is_bootstrapped(
        &self,
        request: Request<pdpb::IsBootstrappedRequest>,
    ) -> Result<tonic::Response<pdpb::IsBootstrappedResponse>, Status> {
        let header = self
            .leader_call("IsBootstrapped", request.get_ref().header.as_ref())
            .await?;
        let bootstrapped = lock(&self.shared).bootstrapped;
        Ok(tonic::Response::new(pdpb::IsBootstrappedResponse {
            header: Some(header),
            bootstrapped,
        }))
    }

    async fn get_store(
        &self,
        request: Request<pdpb::GetStoreRequest>,
    ) -> Result<tonic::Response<pdpb::GetStoreResponse>, Status> {
        let mut header = self
            .leader_call("GetStore", request.get_ref().header.as_ref())
            .await?;
        let id = request.get_ref().store_id;
        let store = lock(&self.shared)
            .stores
            .iter()
            .find(|s| s.id == id)
            .cloned();
        if store.is_none() {
            header.error = Some(pdpb::Error {
                r#type: pdpb::ErrorType::Unknown as i32,
                message: format!("invalid store ID {id}, not found"),
            });
        }
        Ok(tonic::Response::new(pdpb::GetStoreResponse {
            header: Some(header),
            stats: store.as_ref().map(|s| pdpb::StoreStats {
                store_id: s.id,
                region_count: 42,
                capacity: 1 << 40,
                ..Default::default()
            }),
            store,
        }))
    }

    async fn get_all_stores(
        &self,
        request: Request<pdpb::GetAllStoresRequest>,
    ) -> Result<tonic::Response<pdpb::GetAllStoresResponse>, Status> {
        let header = self
            .leader_call("GetAllStores", request.get_ref().header.as_ref())
            .await?;
        let exclude = request.get_ref().exclude_tombstone_stores;
        let stores = lock(&self.shared)
            .stores
            .iter()
            .filter(|s| !exclude || s.state != metapb::StoreState::Tombstone as i32)
            .cloned()
            .collect();
        Ok(tonic::Response::new(pdpb::GetAllStoresResponse {
            header: Some(header),
            stores,
        }))
    }
}

impl MemberCtx {
    fn before_call(&self, what: &str, body: &str) -> Duration {
        let mut s = lock(&self.shared);
        s.log.push(Logged {
            member: self.name.clone(),
            line: format!("grpc {what}"),
            body: body.to_owned(),
            allow_follower: false,
        });
        s.grpc_delay.get(&self.name).copied().unwrap_or_default()
    }

    /// What PD does for every call but GetMembers: only the leader serves,
    /// and the request's cluster id must match.
    async fn leader_call(
        &self,
        what: &str,
        header: Option<&pdpb::RequestHeader>,
    ) -> Result<pdpb::ResponseHeader, Status> {
        let delay = self.before_call(what, &format!("{header:?}"));
        tokio::time::sleep(delay).await;
        let mut s = lock(&self.shared);
        let ours = s.cluster_ids.get(&self.name).copied().unwrap_or(0);
        if s.leader.as_deref() != Some(self.name.as_str()) {
            return Err(Status::unavailable("not leader"));
        }
        if let Some(next) = s.move_leader_on_call.take() {
            s.leader = Some(next);
            return Err(Status::unavailable("not leader"));
        }
        let got = header.map_or(0, |h| h.cluster_id);
        if got != ours {
            return Err(Status::failed_precondition(format!(
                "mismatch cluster id, need {ours} but got {got}"
            )));
        }
        Ok(pdpb::ResponseHeader {
            cluster_id: s.answer_cluster_id.unwrap_or(ours),
            error: None,
        })
    }
}

async fn http_handler(
    ctx: MemberCtx,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let line = format!(
        "{method} {}",
        uri.path_and_query().map_or(uri.path(), |p| p.as_str())
    );
    let answer = {
        let mut s = lock(&ctx.shared);
        s.log.push(Logged {
            member: ctx.name.clone(),
            line: line.clone(),
            body: String::from_utf8_lossy(&body).into_owned(),
            allow_follower: headers
                .get("PD-Allow-Follower-Handle")
                .is_some_and(|v| v == "true"),
        });
        s.http.get_mut(&line).and_then(|q| {
            if q.len() > 1 {
                q.pop_front()
            } else {
                q.front().cloned()
            }
        })
    };
    let Some(answer) = answer else {
        return (StatusCode::NOT_FOUND, format!("mock: no answer for {line}")).into_response();
    };
    tokio::time::sleep(answer.delay).await;
    let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (
        status,
        [("content-type", "application/json; charset=UTF-8")],
        answer.body,
    )
        .into_response()
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// A TCP listener that counts accepted connections and optionally speaks TLS.
struct MockListener {
    tcp: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    accepts: Arc<AtomicUsize>,
}

impl axum::serve::Listener for MockListener {
    type Io = Box<dyn Io>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((stream, addr)): std::io::Result<(TcpStream, SocketAddr)> =
                self.tcp.accept().await
            else {
                continue;
            };
            self.accepts.fetch_add(1, Ordering::SeqCst);
            match &self.tls {
                None => return (Box::new(stream), addr),
                Some(acceptor) => match acceptor.accept(stream).await {
                    Ok(tls) => return (Box::new(tls), addr),
                    // A failed handshake (e.g. no client certificate) drops the connection.
                    Err(_) => continue,
                },
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

/// A running mock member.
pub(crate) struct MockMember {
    pub(crate) url: String,
    pub(crate) accepts: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl Drop for MockMember {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A mock cluster of `names.len()` members sharing one state. The first
/// member is leader; all answer with `cluster_id`.
pub(crate) struct MockCluster {
    pub(crate) shared: SharedState,
    pub(crate) members: Vec<MockMember>,
}

impl MockCluster {
    pub(crate) async fn start(names: &[&str], cluster_id: u64) -> Self {
        Self::start_with_tls(names, cluster_id, None).await
    }

    pub(crate) async fn start_with_tls(
        names: &[&str],
        cluster_id: u64,
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> Self {
        let shared: SharedState = Arc::default();
        let scheme = if tls.is_some() { "https" } else { "http" };
        let mut listeners = Vec::new();
        for (i, name) in names.iter().enumerate() {
            let tcp = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let addr = tcp.local_addr().expect("addr");
            let url = format!("{scheme}://{addr}");
            {
                let mut s = lock(&shared);
                s.cluster_ids.insert((*name).to_owned(), cluster_id);
                s.members.push(pdpb::Member {
                    name: (*name).to_owned(),
                    // Above 2^53 on purpose.
                    member_id: (1 << 60) + i as u64,
                    peer_urls: vec![format!("http://{name}:2380")],
                    client_urls: vec![url.clone()],
                    binary_version: "v8.5.0".to_owned(),
                    ..Default::default()
                });
            }
            listeners.push(((*name).to_owned(), url, tcp));
        }
        lock(&shared).leader = names.first().map(|n| (*n).to_owned());
        lock(&shared).bootstrapped = true;

        let mut members = Vec::new();
        for (name, url, tcp) in listeners {
            let ctx = MemberCtx {
                name,
                shared: shared.clone(),
            };
            let router = tonic::service::Routes::new(pdpb::pd_server::PdServer::new(ctx.clone()))
                .into_axum_router()
                .fallback(
                    move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
                        http_handler(ctx.clone(), method, uri, headers, body)
                    },
                );
            let accepts = Arc::new(AtomicUsize::new(0));
            let listener = MockListener {
                tcp,
                tls: tls.clone().map(tokio_rustls::TlsAcceptor::from),
                accepts: accepts.clone(),
            };
            let task = tokio::spawn(async move {
                let _ = axum::serve(listener, router).await;
            });
            members.push(MockMember { url, accepts, task });
        }
        Self { shared, members }
    }

    pub(crate) fn url(&self, i: usize) -> String {
        self.members[i].url.clone()
    }

    pub(crate) fn set_leader(&self, name: &str) {
        lock(&self.shared).leader = Some(name.to_owned());
    }

    /// Scripts HTTP answers for a request line; the last one repeats.
    pub(crate) fn script(&self, line: &str, answers: Vec<Scripted>) {
        lock(&self.shared)
            .http
            .insert(line.to_owned(), answers.into());
    }

    /// Logged requests whose line starts with `prefix`.
    pub(crate) fn requests(&self, prefix: &str) -> Vec<Logged> {
        lock(&self.shared)
            .log
            .iter()
            .filter(|l| l.line.starts_with(prefix))
            .cloned()
            .collect()
    }

    pub(crate) fn total_accepts(&self) -> usize {
        self.members
            .iter()
            .map(|m| m.accepts.load(Ordering::SeqCst))
            .sum()
    }
}
