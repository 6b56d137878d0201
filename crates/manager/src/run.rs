//! `run`: wires the kube client, the HTTP endpoint, leader election and the controllers.
//!
//! Order: client and HTTP server first (so `/healthz` answers and a standby is visible), then
//! the Lease (when leader election is on), then the controllers until SIGTERM/SIGINT. On a
//! signal the controllers finish in-flight work while the Lease is still renewed, then the Lease
//! is released. If the Lease is lost, the controllers are dropped at once and `run` fails, so the
//! process exits non-zero and its Deployment restarts it as a candidate.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use anyhow::{Context, Result, anyhow};
use kube::client::ClientBuilder;
use kube::config::{KubeConfigOptions, Kubeconfig};
use prometheus_client::registry::Registry;
use tikv_operator_controller::Metrics;
use tokio::sync::watch;

use crate::cli::{LogFormat, Settings};
use crate::http::{Health, router};
use crate::leader::{Elector, LeaderStatus};
use crate::telemetry::{ManagerMetrics, PREFIX};

/// Sets up logging: `RUST_LOG` when set, else `--log-level`.
pub fn init_tracing(format: LogFormat, level: &str) -> Result<()> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(env) if !env.trim().is_empty() => tracing_subscriber::EnvFilter::builder()
            .parse(&env)
            .map_err(|e| anyhow!("RUST_LOG `{env}`: {e}"))?,
        _ => tracing_subscriber::EnvFilter::builder()
            .parse(level)
            .map_err(|e| anyhow!("--log-level `{level}`: {e}"))?,
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let result = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .try_init(),
    };
    result.map_err(|e| anyhow!("installing the log subscriber: {e}"))
}

async fn kube_config(kubeconfig: Option<&Path>) -> Result<kube::Config> {
    match kubeconfig {
        Some(path) => {
            let kc = Kubeconfig::read_from(path)
                .with_context(|| format!("--kubeconfig {}: cannot read it", path.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
                .await
                .with_context(|| format!("--kubeconfig {}: unusable", path.display()))
        }
        None => kube::Config::infer().await.context(
            "no Kubernetes configuration: not running in a cluster and no usable \
             ~/.kube/config (pass --kubeconfig or set KUBECONFIG)",
        ),
    }
}

/// Resolves on SIGTERM or SIGINT (a second signal exits at once with status 130).
async fn signals(stop: watch::Sender<bool>) -> Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
            _ = int.recv() => tracing::info!("SIGINT: shutting down"),
        }
        let _ = stop.send(true);
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        tracing::warn!("second signal: exiting without waiting");
        std::process::exit(130);
    });
    Ok(())
}

async fn stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Runs the operator until a signal (Ok) or a fatal error (Err: exit non-zero).
pub async fn run(settings: Settings) -> Result<()> {
    let mut registry = Registry::with_prefix(PREFIX);
    let controller_metrics = Arc::new(Metrics::new(&mut registry));
    let metrics = ManagerMetrics::new(&mut registry);

    let config = kube_config(settings.kubeconfig.as_deref()).await?;
    let cluster_url = config.cluster_url.clone();
    let client = ClientBuilder::try_from(config)
        .context("building the Kubernetes client")?
        .with_layer(&metrics.kube_layer())
        .build();

    let listener = tokio::net::TcpListener::bind(settings.http_bind_address)
        .await
        .with_context(|| {
            format!(
                "--http-bind-address {}: cannot listen",
                settings.http_bind_address
            )
        })?;
    let synced = Arc::new(AtomicBool::new(false));
    let leader = LeaderStatus::new(metrics.leader.clone());
    let health = Health {
        synced: synced.clone(),
        leader: settings.leader_election.as_ref().map(|_| leader.clone()),
        registry: Arc::new(registry),
    };
    let app = router(health);
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "HTTP server failed");
        }
    });
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        api_server = %cluster_url,
        http = %settings.http_bind_address,
        namespaces = ?settings.controller.namespaces,
        leader_election = settings.leader_election.is_some(),
        "tikv-operator starting"
    );

    let (stop_tx, stop_rx) = watch::channel(false);
    signals(stop_tx).await?;

    let Some(le) = settings.leader_election.clone() else {
        leader.set(true);
        let result = tikv_operator_controller::run(
            client,
            settings.controller,
            controller_metrics,
            synced,
            stopped(stop_rx),
        )
        .await;
        leader.set(false);
        return result.context("controllers failed");
    };

    let mut elector = Elector::new(client.clone(), le, leader);
    if !elector.acquire(stop_rx.clone()).await {
        tracing::info!("stopped while standby");
        return Ok(());
    }
    let mut controllers = Box::pin(tikv_operator_controller::run(
        client,
        settings.controller,
        controller_metrics,
        synced,
        stopped(stop_rx),
    ));
    enum Outcome {
        Finished(Result<()>),
        Lost(crate::leader::Lost),
    }
    let outcome = tokio::select! {
        result = &mut controllers => Outcome::Finished(result),
        lost = elector.hold() => Outcome::Lost(lost),
    };
    match outcome {
        Outcome::Finished(result) => {
            // In-flight reconciles are done: hand over at once.
            elector.release().await;
            result.context("controllers failed")
        }
        Outcome::Lost(lost) => {
            // Stop acting now: nothing of the controllers runs past this point.
            drop(controllers);
            Err(anyhow!(
                "lost leadership ({lost}); exiting so that a restart rejoins the election"
            ))
        }
    }
}
