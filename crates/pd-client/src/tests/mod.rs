//! Tests of the real client against in-process servers (see `mock`).

#![allow(clippy::unwrap_used)]

mod grpc_discovery;
mod http_ops;
mod mock;
mod tls;

use std::time::Duration;

use crate::{PdClient, PdClientConfig, RetryPolicy};

/// Fast retries for tests; no background refresh unless a test asks for it.
pub(crate) fn config(urls: Vec<String>) -> PdClientConfig {
    PdClientConfig::new(urls)
        .with_request_timeout(Duration::from_secs(2))
        .with_member_refresh_interval(Duration::ZERO)
        .with_retry(RetryPolicy {
            max_attempts: 4,
            initial_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(50),
            jitter: 0.5,
        })
}

pub(crate) async fn client(urls: Vec<String>) -> PdClient {
    PdClient::connect(config(urls)).await.unwrap()
}
