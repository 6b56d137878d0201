//! The HTTP endpoint: `/healthz`, `/readyz`, `/metrics`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus_client::registry::Registry;

use crate::leader::LeaderStatus;

/// What the endpoints report.
#[derive(Debug, Clone)]
pub struct Health {
    /// Set by the controllers once every watch cache has listed.
    pub synced: Arc<AtomicBool>,
    /// Leadership, when leader election is on.
    pub leader: Option<LeaderStatus>,
    /// The metrics registry.
    pub registry: Arc<Registry>,
}

impl Health {
    /// Why the replica is not ready (empty: ready).
    pub fn not_ready_reasons(&self) -> Vec<&'static str> {
        let mut reasons = Vec::new();
        if self.leader.as_ref().is_some_and(|l| !l.is_leader()) {
            reasons.push("not the leader (standby replica)");
        }
        if !self.synced.load(Ordering::SeqCst) {
            reasons.push("watch caches not synced");
        }
        reasons
    }
}

/// The router.
pub fn router(health: Health) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(health)
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(h): State<Health>) -> Response {
    let reasons = h.not_ready_reasons();
    if reasons.is_empty() {
        (StatusCode::OK, "ok\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {}\n", reasons.join("; ")),
        )
            .into_response()
    }
}

async fn metrics(State(h): State<Health>) -> Response {
    let mut text = String::new();
    match prometheus_client::encoding::text::encode(&mut text, &h.registry) {
        Ok(()) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("encoding metrics: {e}\n"),
        )
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use prometheus_client::metrics::gauge::Gauge;

    async fn get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        let status = out[9..12].parse().unwrap();
        let body = out.split_once("\r\n\r\n").unwrap().1.to_owned();
        (status, body)
    }

    #[tokio::test]
    async fn endpoints_answer() {
        let mut registry = Registry::with_prefix("tikv_operator");
        let metrics = crate::telemetry::ManagerMetrics::new(&mut registry);
        let synced = Arc::new(AtomicBool::new(false));
        let leader = LeaderStatus::new(Gauge::default());
        let health = Health {
            synced: synced.clone(),
            leader: Some(leader.clone()),
            registry: Arc::new(registry),
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, router(health)).await });

        assert_eq!(get(addr, "/healthz").await, (200, "ok\n".into()));
        let (code, body) = get(addr, "/readyz").await;
        assert_eq!(code, 503);
        assert!(
            body.contains("not the leader") && body.contains("not synced"),
            "{body}"
        );

        synced.store(true, Ordering::SeqCst);
        let (code, body) = get(addr, "/readyz").await;
        assert_eq!(
            (code, body.as_str()),
            (503, "not ready: not the leader (standby replica)\n")
        );

        leader.set(true);
        assert_eq!(get(addr, "/readyz").await, (200, "ok\n".into()));

        metrics.leader.set(1);
        let (code, body) = get(addr, "/metrics").await;
        assert_eq!(code, 200);
        assert!(body.contains("tikv_operator_leader 1"), "{body}");
        assert!(body.contains("# EOF"), "{body}");
        assert_eq!(get(addr, "/nope").await.0, 404);
    }

    #[test]
    fn ready_without_leader_election_once_synced() {
        let h = Health {
            synced: Arc::new(AtomicBool::new(true)),
            leader: None,
            registry: Arc::new(Registry::default()),
        };
        assert!(h.not_ready_reasons().is_empty());
    }
}
