//! Client configuration.

use std::time::Duration;

use crate::retry::RetryPolicy;
use crate::tls::TlsConfig;

/// Configuration of [`crate::PdClient`].
#[derive(Debug, Clone)]
pub struct PdClientConfig {
    /// Seed URLs: a PD Service URL or member client URLs
    /// (`http://pd:2379`; `https://` with TLS; a missing scheme is added).
    pub endpoints: Vec<String>,
    /// Mutual TLS material; `None` for plain HTTP/2 and HTTP.
    pub tls: Option<TlsConfig>,
    /// Deadline of one attempt of one request.
    pub request_timeout: Duration,
    /// Deadline for establishing a connection.
    pub connect_timeout: Duration,
    /// How often the member list and leader are refreshed in the background.
    pub member_refresh_interval: Duration,
    /// Retries of leader-related failures.
    pub retry: RetryPolicy,
}

impl PdClientConfig {
    /// Defaults (5 s request timeout, 3 s connect timeout, refresh every 30 s,
    /// [`RetryPolicy::default`]) for the given seed URLs.
    pub fn new<I, S>(endpoints: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self {
            endpoints: endpoints.into_iter().map(Into::into).collect(),
            tls: None,
            request_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(3),
            member_refresh_interval: Duration::from_secs(30),
            retry: RetryPolicy::default(),
        }
    }

    /// With mutual TLS.
    pub fn with_tls(mut self, tls: TlsConfig) -> Self {
        self.tls = Some(tls);
        self
    }

    /// With a per-attempt request timeout.
    pub fn with_request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// With a retry policy.
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// With a background member refresh interval.
    pub fn with_member_refresh_interval(mut self, interval: Duration) -> Self {
        self.member_refresh_interval = interval;
        self
    }
}

/// Normalises a URL: trims, drops a trailing `/`, adds the scheme when
/// missing, and switches `http` to `https` when TLS is on (PD serves one or
/// the other on its client port).
pub(crate) fn normalize_url(url: &str, tls: bool) -> String {
    let url = url.trim().trim_end_matches('/');
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .unwrap_or(url);
    let scheme = if tls { "https" } else { "http" };
    format!("{scheme}://{rest}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_normalized() {
        assert_eq!(normalize_url("pd:2379", false), "http://pd:2379");
        assert_eq!(normalize_url(" http://pd:2379/ ", false), "http://pd:2379");
        assert_eq!(normalize_url("http://pd:2379", true), "https://pd:2379");
        assert_eq!(normalize_url("https://pd:2379", true), "https://pd:2379");
    }
}
