//! Client for PD, the control plane of a TiKV cluster.
//!
//! Reconcilers depend on the [`PdApi`] trait only. [`PdClient`] implements it
//! against a real PD (gRPC for reads with leader discovery, HTTP for
//! operations, optional mutual TLS); `FakePd` (feature `fake`) implements it
//! in memory with PD's semantics for tests. Wire types (prost messages, JSON
//! bodies) never leave this crate.

mod api;
mod client;
mod config;
mod discovery;
mod error;
#[cfg(feature = "fake")]
mod fake;
mod grpc;
mod http;
mod proto;
mod retry;
mod tls;
mod types;

#[cfg(test)]
mod tests;

pub use api::PdApi;
pub use client::PdClient;
pub use config::PdClientConfig;
pub use error::{BoxError, PdError, Result};
#[cfg(feature = "fake")]
pub use fake::{FakeOp, FakePd};
pub use retry::RetryPolicy;
pub use tls::TlsConfig;
pub use types::{
    ClusterId, DownPeer, Member, MemberHealth, MemberId, Members, NodeState, Readiness,
    ReplicationConfig, Store, StoreId, StoreLiveness, StoreState, parse_byte_size,
    parse_go_duration,
};
