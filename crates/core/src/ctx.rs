//! The side effects a reconcile may use, shared by every layer.

use std::sync::Arc;

use crate::{Clock, KubeWriter, RequeuePolicy};

/// The side effects a reconcile may use: Kubernetes writes, time and requeue
/// delays. PD access is passed separately, since not every layer talks to PD.
#[derive(Clone)]
pub struct Ctx {
    /// Kubernetes writes.
    pub kube: Arc<dyn KubeWriter>,
    /// Time, for condition transitions.
    pub clock: Arc<dyn Clock>,
    /// Requeue delays.
    pub policy: RequeuePolicy,
}

impl std::fmt::Debug for Ctx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ctx").field("policy", &self.policy).finish()
    }
}
