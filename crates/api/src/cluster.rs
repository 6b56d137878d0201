//! Cluster: one TiKV cluster, its shared settings and aggregated status.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::CommonStatus;
use crate::rules;

/// Desired state of a TiKV cluster. Its PD and TiKV members are described by
/// PDGroup and TiKVGroup objects that reference it.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "core.tikv.org",
    version = "v1alpha1",
    kind = "Cluster",
    plural = "clusters",
    namespaced,
    status = "ClusterStatus",
    shortname = "tkc",
    category = "tikv-all",
    doc = "Cluster is one TiKV cluster (PD + TiKV).",
    printcolumn(name = "PD", type_ = "string", json_path = ".status.pd"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = rules::tls_cluster_immutable()))]
pub struct ClusterSpec {
    /// Stop every layer of this cluster from acting (no creates, updates or
    /// deletes) until set back to false. Status is still reported.
    #[serde(default)]
    pub paused: bool,
    /// What to suspend.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suspend_action: Option<SuspendAction>,
    /// Ordering of version upgrades between components.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upgrade_policy: Option<UpgradePolicy>,
    /// Number of old template revisions kept per group (default 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-kubernetes-validations" = rules::non_negative("revisionHistoryLimit")))]
    pub revision_history_limit: Option<i32>,
    /// Mutual TLS between all components of the cluster. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_cluster: Option<TlsCluster>,
    /// Optional behaviours, enabled by name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub feature_gates: Vec<FeatureGate>,
}

/// What to suspend.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SuspendAction {
    /// Delete every pod of the cluster, keeping PVCs and configuration;
    /// setting it back to false recreates them.
    #[serde(default)]
    pub suspend_compute: bool,
}

/// Ordering of version upgrades between components.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum UpgradePolicy {
    /// PD groups finish upgrading before any TiKV group starts.
    #[default]
    Default,
    /// Every group upgrades as soon as its own template changes.
    NoConstraints,
}

/// Mutual TLS between components.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TlsCluster {
    /// Enable mutual TLS between PD, TiKV and the operator. Immutable: it
    /// cannot be switched on or off on a running cluster. Each group's
    /// members mount the Secret `<group>-pd-tls` / `<group>-tikv-tls` (or the
    /// template's `tlsSecretName`); see docs/tls.md for the keys and the
    /// names the certificates must cover.
    #[serde(default)]
    pub enabled: bool,
    /// Secret (`ca.crt`, `tls.crt`, `tls.key`) the operator uses to reach PD
    /// (default `<cluster>-client-tls`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    #[schemars(extend("x-kubernetes-validations" = rules::object_reference("clientSecretName")))]
    pub client_secret_name: Option<String>,
}

/// An optional behaviour, enabled by name.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FeatureGate {
    /// Feature name (UpperCamelCase).
    #[schemars(length(max = 63))]
    #[schemars(extend("x-kubernetes-validations" = rules::feature_gate_name()))]
    pub name: String,
}

/// Observed state of a Cluster.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterStatus {
    /// Conditions (`Ready`, `Progressing`, `Suspended`, `Synced`) and observed generation.
    #[serde(flatten)]
    pub common: CommonStatus,
    /// PD cluster id (a 64-bit unsigned integer, as a string).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// URL of PD's client Service, for clients inside the Kubernetes cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pd: Option<String>,
    /// Replica counts per component kind.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["kind"]))]
    pub components: Vec<ComponentStatus>,
}

/// Replica counts of one component kind, summed over its groups.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ComponentStatus {
    /// Component kind: `PD` or `TiKV`.
    pub kind: String,
    /// Number of instances.
    #[serde(default)]
    pub replicas: i32,
    /// Number of Ready instances.
    #[serde(default)]
    pub ready_replicas: i32,
}

impl Cluster {
    /// Whether the Cluster asks for mutual TLS (`spec.tlsCluster.enabled`).
    pub fn tls_enabled(&self) -> bool {
        self.spec.tls_cluster.as_ref().is_some_and(|t| t.enabled)
    }

    /// The Secret the operator reaches PD with when the Cluster asks for
    /// TLS: `spec.tlsCluster.clientSecretName`, default
    /// [`crate::names::client_tls_secret`]. `None` without TLS.
    pub fn client_tls_secret(&self) -> Option<String> {
        let tls = self.spec.tls_cluster.as_ref().filter(|t| t.enabled)?;
        Some(tls.client_secret_name.clone().unwrap_or_else(|| {
            crate::names::client_tls_secret(self.metadata.name.as_deref().unwrap_or_default())
        }))
    }
}
