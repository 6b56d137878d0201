//! tikv-operator's controllers: one kube-runtime Controller per kind
//! (Cluster, PDGroup, PD, TiKVGroup, TiKV), fed by shared watch caches, with one PD client and
//! PD state cache per Cluster. The manager binary calls [`run`].
//!
//! Memory: Pods, ConfigMaps, PVCs and Services are watched with the label
//! selector `app.kubernetes.io/managed-by=tikv-operator`, so the operator
//! caches only its own objects, never every Pod of the cluster. Secrets are
//! never listed: each client Secret a TLS Cluster names is watched by name
//! ([`secrets`]).

mod controllers;
pub mod metered;
pub mod metrics;
pub mod pd_registry;
pub mod routing;
pub mod scope;
pub mod secrets;
#[cfg(test)]
mod test_pki;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
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

/// TiKV settings.
#[derive(Debug, Clone, Copy)]
pub struct TikvSettings {
    /// How long a store's leaders may take to leave (scale-in) before PD is
    /// asked to remove the store anyway.
    pub evict_leader_timeout: Duration,
}

impl Default for TikvSettings {
    fn default() -> Self {
        Self {
            evict_leader_timeout: Duration::from_secs(300),
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
    /// TiKV settings.
    pub tikv: TikvSettings,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            namespaces: Vec::new(),
            concurrency: 4,
            pd: PdSettings::default(),
            tikv: TikvSettings::default(),
        }
    }
}

/// Runs every controller until `shutdown` resolves; in-flight reconciles
/// finish first. `synced` becomes true once every watch cache of every
/// watched namespace has listed (the manager's `/readyz`).
pub async fn run(
    client: kube::Client,
    config: Config,
    metrics: Arc<Metrics>,
    synced: Arc<AtomicBool>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    use futures::FutureExt;
    let shutdown = shutdown.boxed().shared();
    let scopes = scope::choose(&config.namespaces, || scope::may_watch_everywhere(&client)).await;
    let flags: Vec<Arc<AtomicBool>> = scopes.iter().map(|_| Arc::default()).collect();
    let all_synced = {
        let flags = flags.clone();
        tokio::spawn(async move {
            while !flags.iter().all(|f| f.load(Ordering::SeqCst)) {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            synced.store(true, Ordering::SeqCst);
        })
    };
    // One Node watch for every scope.
    let (nodes, nodes_fut) = controllers::node_cache(&client);
    let nodes_task = tokio::spawn(nodes_fut);
    let runs = scopes.into_iter().zip(flags).map(|(ns, flag)| {
        controllers::run_scope(
            client.clone(),
            ns,
            nodes.clone(),
            config.clone(),
            metrics.clone(),
            flag,
            shutdown.clone(),
        )
    });
    let results = futures::future::join_all(runs).await;
    all_synced.abort();
    nodes_task.abort();
    results.into_iter().collect::<anyhow::Result<Vec<()>>>()?;
    Ok(())
}
