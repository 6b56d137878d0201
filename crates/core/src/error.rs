//! The error type of the effectful reconcile stages.

use pd_client::PdError;

/// A boxed error from a lower layer.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Errors of apply/report stages and of the side-effect traits.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A Kubernetes API call failed.
    #[error("kubernetes {operation} of {object} failed: {source}")]
    Kubernetes {
        /// The operation (`apply`, `delete`, `patch_status`, `event`).
        operation: &'static str,
        /// The object, as `kind namespace/name`.
        object: String,
        /// The client error.
        #[source]
        source: BoxError,
    },

    /// A PD call failed.
    #[error("PD {operation} failed: {source}")]
    Pd {
        /// What was asked of PD.
        operation: &'static str,
        /// The PD client error.
        #[source]
        source: PdError,
    },

    /// The object's spec cannot be acted on; the user must change it. The
    /// message is shown in a condition.
    #[error("invalid spec: {message}")]
    InvalidSpec {
        /// What is wrong and how to fix it.
        message: String,
    },

    /// An object could not be converted to or from JSON.
    #[error("cannot serialize {what}: {source}")]
    Serialization {
        /// What was (de)serialized.
        what: String,
        /// The serde error.
        #[source]
        source: serde_json::Error,
    },
}

impl Error {
    /// A stable, low-cardinality label for metrics and Events.
    pub fn category(&self) -> &'static str {
        match self {
            Self::Kubernetes { .. } => "kubernetes",
            Self::Pd { source, .. } if source.is_retryable() => "pd_unavailable",
            Self::Pd { .. } => "pd",
            Self::InvalidSpec { .. } => "invalid_spec",
            Self::Serialization { .. } => "serialization",
        }
    }

    /// Whether retrying the same reconcile later may succeed without the user
    /// changing anything.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Kubernetes { .. } => true,
            Self::Pd { source, .. } => source.is_retryable(),
            Self::InvalidSpec { .. } | Self::Serialization { .. } => false,
        }
    }

    /// A [`Error::Pd`] for `operation`.
    pub fn pd(operation: &'static str, source: PdError) -> Self {
        Self::Pd { operation, source }
    }
}

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn categories_are_stable_and_transience_follows_the_cause() {
        let kube = Error::Kubernetes {
            operation: "apply",
            object: "Pod ns/a".into(),
            source: "boom".into(),
        };
        let pd_down = Error::pd("members", PdError::unavailable("down"));
        let pd_rejected = Error::pd(
            "remove_member",
            PdError::Rejected {
                operation: "remove_member",
                status: Some(500),
                message: "no".into(),
            },
        );
        let invalid = Error::InvalidSpec {
            message: "bad".into(),
        };
        assert_eq!(kube.category(), "kubernetes");
        assert_eq!(pd_down.category(), "pd_unavailable");
        assert_eq!(pd_rejected.category(), "pd");
        assert_eq!(invalid.category(), "invalid_spec");
        assert!(kube.is_transient());
        assert!(pd_down.is_transient());
        assert!(!pd_rejected.is_transient());
        assert!(!invalid.is_transient());
    }
}
