#![doc = include_str!("../README.md")]

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
    ReplicationConfig, Store, StoreId, StoreLiveness, StoreState, UnhealthyRegion, parse_byte_size,
    parse_go_duration,
};
