//! The operator's Prometheus metrics. The manager owns the registry and
//! serves it; the controllers record into [`Metrics`].

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Labels of per-controller series.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct ControllerLabels {
    /// `cluster`, `pdgroup`, `pd`, `tikvgroup`, `tikv`.
    pub controller: String,
}

/// Labels of reconcile errors.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct ErrorLabels {
    /// The controller.
    pub controller: String,
    /// [`tikv_operator_core::Error::category`].
    pub category: String,
}

/// Labels of PD requests.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct PdLabels {
    /// The PD API operation (`members`, `stores`, `remove_member`, ...).
    pub operation: String,
}

/// Labels of PD request errors.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct PdErrorLabels {
    /// The PD API operation.
    pub operation: String,
    /// `pd_client::PdError::category`.
    pub category: String,
}

/// Labels of managed-object gauges.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct ManagedLabels {
    /// `Cluster`, `PD`, `TiKV`.
    pub kind: String,
    /// `Ready`, `NotReady`, `Deleting`.
    pub state: String,
}

/// Labels of the failover gauge.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct FailoverLabels {
    /// `status.failover.failures[].phase` of TiKVGroups or PDGroups:
    /// `Observing`, `Refused`, `Replacing`, `Removing` (TiKV), `Completed`,
    /// `Cancelled` (TiKV).
    pub phase: String,
}

/// Every metric the controllers record. Names are documented in
/// docs/metrics.md; the registry prefix is `tikv_operator`.
#[derive(Debug, Clone)]
pub struct Metrics {
    /// Reconcile runs per controller.
    pub reconciles: Family<ControllerLabels, Counter>,
    /// Failed reconciles per controller and error category.
    pub reconcile_errors: Family<ErrorLabels, Counter>,
    /// Reconcile duration in seconds per controller.
    pub reconcile_duration: Family<ControllerLabels, Histogram>,
    /// Reconciles running right now per controller.
    pub reconciles_in_flight: Family<ControllerLabels, Gauge>,
    /// Reconciles put off because the watch caches did not show the
    /// operator's own writes yet, per controller.
    pub reconciles_deferred: Family<ControllerLabels, Counter>,
    /// PD requests per operation.
    pub pd_requests: Family<PdLabels, Counter>,
    /// Failed PD requests per operation and error category.
    pub pd_request_errors: Family<PdErrorLabels, Counter>,
    /// PD request latency in seconds per operation.
    pub pd_request_duration: Family<PdLabels, Histogram>,
    /// Managed objects by kind and state.
    pub managed: Family<ManagedLabels, Gauge>,
    /// Failed TiKV stores recorded in TiKVGroup statuses, by phase.
    pub failover_stores: Family<FailoverLabels, Gauge>,
    /// Store replacements started, summed over TiKVGroups
    /// (`status.failover.total`, reset by hand).
    pub failover_replacements: Gauge,
    /// Unhealthy PD members recorded in PDGroup statuses, by phase.
    pub pd_failover_members: Family<FailoverLabels, Gauge>,
    /// PD member replacements started, summed over PDGroups
    /// (`status.failover.total`, reset by hand).
    pub pd_failover_replacements: Gauge,
}

fn duration_buckets() -> impl Iterator<Item = f64> {
    [
        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    ]
    .into_iter()
}

impl Metrics {
    /// Creates the metrics and registers them in `registry` (give it the
    /// `tikv_operator` prefix).
    pub fn new(registry: &mut Registry) -> Self {
        let m = Self {
            reconciles: Family::default(),
            reconcile_errors: Family::default(),
            reconcile_duration: Family::new_with_constructor(|| Histogram::new(duration_buckets())),
            reconciles_in_flight: Family::default(),
            reconciles_deferred: Family::default(),
            pd_requests: Family::default(),
            pd_request_errors: Family::default(),
            pd_request_duration: Family::new_with_constructor(
                || Histogram::new(duration_buckets()),
            ),
            managed: Family::default(),
            failover_stores: Family::default(),
            failover_replacements: Gauge::default(),
            pd_failover_members: Family::default(),
            pd_failover_replacements: Gauge::default(),
        };
        registry.register(
            "reconciles",
            "Reconcile runs per controller",
            m.reconciles.clone(),
        );
        registry.register(
            "reconcile_errors",
            "Failed reconciles per controller and error category",
            m.reconcile_errors.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Reconcile duration per controller",
            m.reconcile_duration.clone(),
        );
        registry.register(
            "reconciles_in_flight",
            "Reconciles running now per controller",
            m.reconciles_in_flight.clone(),
        );
        registry.register(
            "reconciles_deferred",
            "Reconciles put off until the watch caches show the operator's own writes",
            m.reconciles_deferred.clone(),
        );
        registry.register(
            "pd_requests",
            "PD requests per operation",
            m.pd_requests.clone(),
        );
        registry.register(
            "pd_request_errors",
            "Failed PD requests per operation and error category",
            m.pd_request_errors.clone(),
        );
        registry.register(
            "pd_request_duration_seconds",
            "PD request latency per operation",
            m.pd_request_duration.clone(),
        );
        registry.register(
            "managed_objects",
            "Managed objects by kind and state",
            m.managed.clone(),
        );
        registry.register(
            "failover_stores",
            "Failed TiKV stores recorded by TiKVGroups, by failover phase",
            m.failover_stores.clone(),
        );
        registry.register(
            "failover_replacements",
            "TiKV store replacements started, as recorded in TiKVGroup status (status.failover.total)",
            m.failover_replacements.clone(),
        );
        registry.register(
            "pd_failover_members",
            "Unhealthy PD members recorded by PDGroups, by failover phase",
            m.pd_failover_members.clone(),
        );
        registry.register(
            "pd_failover_replacements",
            "PD member replacements started, as recorded in PDGroup status (status.failover.total)",
            m.pd_failover_replacements.clone(),
        );
        m
    }

    /// A metrics set registered nowhere (tests).
    pub fn unregistered() -> Self {
        Self::new(&mut Registry::default())
    }

    /// Records one finished reconcile.
    pub fn observe_reconcile(&self, controller: &str, took: Duration, error: Option<&str>) {
        let labels = ControllerLabels {
            controller: controller.to_owned(),
        };
        self.reconciles.get_or_create(&labels).inc();
        self.reconcile_duration
            .get_or_create(&labels)
            .observe(took.as_secs_f64());
        if let Some(category) = error {
            self.reconcile_errors
                .get_or_create(&ErrorLabels {
                    controller: controller.to_owned(),
                    category: category.to_owned(),
                })
                .inc();
        }
    }
}
