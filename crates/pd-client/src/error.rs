//! The one error type of this crate. Each variant says what a caller must do
//! differently; `category()` is a stable label for metrics and Events.

use std::time::Duration;

use crate::types::ClusterId;

/// A boxed error from a lower layer (transport, TLS, decoding).
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Errors of the PD client.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PdError {
    /// PD cannot answer right now: no member reachable, no leader elected,
    /// HTTP 503, "not leader", connection refused or reset. Retry later with
    /// backoff; take no destructive action meanwhile.
    #[error("PD unavailable: {message}")]
    Unavailable {
        /// What failed.
        message: String,
        /// The underlying error, if any.
        #[source]
        source: Option<BoxError>,
    },

    /// A request did not finish within its deadline. Retry later.
    #[error("PD request {operation} timed out after {after:?}")]
    Timeout {
        /// The operation that timed out.
        operation: &'static str,
        /// The deadline that passed.
        after: Duration,
    },

    /// PD has no cluster yet (no TiKV store bootstrapped it). Wait for bootstrap.
    #[error("PD cluster is not bootstrapped: {message}")]
    NotBootstrapped {
        /// PD's message.
        message: String,
    },

    /// The object does not exist (HTTP 404), e.g. a member that was already
    /// removed or a store id PD never knew. For removals this means the goal
    /// is already reached.
    #[error("not found in PD: {what}")]
    NotFound {
        /// What was looked for, with PD's message if it sent one.
        what: String,
    },

    /// The store was already removed for good (HTTP 410, gRPC STORE_TOMBSTONE).
    /// For removals this means the goal is already reached; anything else on
    /// that store is pointless.
    #[error("already removed in PD: {what}")]
    AlreadyRemoved {
        /// What was acted on, with PD's message.
        what: String,
    },

    /// PD understood the request and refused it (HTTP 4xx/5xx other than the
    /// cases above, or a business error in a gRPC header), e.g. removing a
    /// store would leave fewer Up stores than `max-replicas`. Do not retry the
    /// same request unchanged; report PD's message.
    #[error("PD rejected {operation}: {message}")]
    Rejected {
        /// The operation PD refused.
        operation: &'static str,
        /// HTTP status, when the refusal came over HTTP.
        status: Option<u16>,
        /// PD's message.
        message: String,
    },

    /// A PD answered with a different cluster id than the one this client is
    /// bound to, or the seed URLs point at different clusters. Never act on
    /// such a PD: the configuration is wrong.
    #[error("PD cluster id mismatch: expected {expected}, got {got}")]
    ClusterIdMismatch {
        /// The id this client learned first.
        expected: ClusterId,
        /// The id that was answered.
        got: ClusterId,
    },

    /// Client configuration is unusable (bad PEM, bad URL, no seed URLs).
    /// Fix the configuration; retrying does not help.
    #[error("PD client configuration error: {message}")]
    Config {
        /// What is wrong.
        message: String,
        /// The underlying error, if any.
        #[source]
        source: Option<BoxError>,
    },

    /// PD answered something this client does not understand (malformed JSON,
    /// missing fields). Likely an incompatible PD version.
    #[error("unexpected response from PD for {operation}: {message}")]
    Protocol {
        /// The operation.
        operation: &'static str,
        /// What was unexpected.
        message: String,
    },
}

impl PdError {
    /// A stable, low-cardinality label for metrics and Events.
    pub fn category(&self) -> &'static str {
        match self {
            Self::Unavailable { .. } => "unavailable",
            Self::Timeout { .. } => "timeout",
            Self::NotBootstrapped { .. } => "not_bootstrapped",
            Self::NotFound { .. } => "not_found",
            Self::AlreadyRemoved { .. } => "already_removed",
            Self::Rejected { .. } => "rejected",
            Self::ClusterIdMismatch { .. } => "cluster_id_mismatch",
            Self::Config { .. } => "config",
            Self::Protocol { .. } => "protocol",
        }
    }

    /// Whether the same call may succeed later without any change by the caller.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Self::Unavailable { .. } | Self::Timeout { .. } | Self::NotBootstrapped { .. }
        )
    }

    /// Whether the target does not exist any more (not found, or already
    /// removed): an idempotent removal can treat this as success.
    pub fn is_already_gone(&self) -> bool {
        matches!(self, Self::NotFound { .. } | Self::AlreadyRemoved { .. })
    }

    /// An [`PdError::Unavailable`] with a message and no source.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::Unavailable {
            message: message.into(),
            source: None,
        }
    }

    /// A [`PdError::Config`] with a message and no source.
    pub fn config(message: impl Into<String>) -> Self {
        Self::Config {
            message: message.into(),
            source: None,
        }
    }

    /// Whether the client should re-discover the leader before retrying.
    pub(crate) fn needs_leader_refresh(&self) -> bool {
        matches!(self, Self::Unavailable { .. } | Self::Timeout { .. })
    }
}

/// Result alias of this crate.
pub type Result<T, E = PdError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn categories_are_distinct_and_retryability_matches_variants() {
        let all = [
            PdError::unavailable("x"),
            PdError::Timeout {
                operation: "op",
                after: Duration::from_secs(1),
            },
            PdError::NotBootstrapped {
                message: "x".into(),
            },
            PdError::NotFound { what: "x".into() },
            PdError::AlreadyRemoved { what: "x".into() },
            PdError::Rejected {
                operation: "op",
                status: Some(400),
                message: "x".into(),
            },
            PdError::ClusterIdMismatch {
                expected: ClusterId(1),
                got: ClusterId(2),
            },
            PdError::config("x"),
            PdError::Protocol {
                operation: "op",
                message: "x".into(),
            },
        ];
        let mut categories: Vec<_> = all.iter().map(PdError::category).collect();
        categories.sort_unstable();
        categories.dedup();
        assert_eq!(categories.len(), all.len());
        let retryable: Vec<_> = all
            .iter()
            .filter(|e| e.is_retryable())
            .map(PdError::category)
            .collect();
        assert_eq!(retryable, ["unavailable", "timeout", "not_bootstrapped"]);
        let gone: Vec<_> = all
            .iter()
            .filter(|e| e.is_already_gone())
            .map(PdError::category)
            .collect();
        assert_eq!(gone, ["not_found", "already_removed"]);
    }
}
