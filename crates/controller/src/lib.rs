//! tikv-operator's controllers: one kube-runtime Controller per kind
//! (Cluster, PDGroup, PD), fed by shared watch caches, with one PD client and
//! PD state cache per Cluster. The manager binary calls [`run`].
//!
//! Memory: Pods, ConfigMaps, PVCs and Services are watched with the label
//! selector `app.kubernetes.io/managed-by=tikv-operator`, so the operator
//! caches only its own objects, never every Pod of the cluster.

pub mod metrics;

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

pub use metrics::Metrics;
pub use tikv_operator_core::pd_state::RefreshPolicy;

/// How the operator reaches a Cluster's PD.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum PdEndpoint {
    /// The PD client Service in cluster DNS: `http://<group>-pd.<namespace>.svc:<port>`
    /// (what `status.pd` says). Needs the operator to run inside the cluster.
    #[default]
    Service,
    /// A URL template for an operator running outside the cluster. `{cluster}`,
    /// `{namespace}` and `{group}` (the PDGroup's name) are replaced.
    Template(String),
}

/// PD access settings.
#[derive(Debug, Clone)]
pub struct PdSettings {
    /// Per-request timeout.
    pub timeout: Duration,
    /// PD state cache refresh intervals.
    pub refresh: RefreshPolicy,
    /// How PD is reached.
    pub endpoint: PdEndpoint,
}

impl Default for PdSettings {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(5),
            refresh: RefreshPolicy::default(),
            endpoint: PdEndpoint::Service,
        }
    }
}

/// What the controllers need from the command line.
#[derive(Debug, Clone)]
pub struct Config {
    /// Namespaces to watch; empty means all namespaces.
    pub namespaces: Vec<String>,
    /// Maximum concurrent reconciles per controller (0: unbounded).
    pub concurrency: u16,
    /// PD access.
    pub pd: PdSettings,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            namespaces: Vec::new(),
            concurrency: 4,
            pd: PdSettings::default(),
        }
    }
}

/// Runs every controller until `shutdown` resolves; in-flight reconciles
/// finish first. `synced` becomes true once every watch cache has listed
/// (the manager's `/readyz`).
pub async fn run(
    client: kube::Client,
    config: Config,
    metrics: Arc<Metrics>,
    synced: Arc<AtomicBool>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let _ = (client, config, metrics, synced);
    shutdown.await;
    anyhow::bail!("controllers are not wired yet (issue #5 in progress)")
}
