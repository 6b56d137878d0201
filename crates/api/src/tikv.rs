//! TiKVGroup and TiKV: the storage nodes (stores) of a Cluster.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{
    ClusterReference, CommonStatus, Failover, GroupStatus, ObjectMeta, Overlay, Port,
    ResourceRequirements, SchedulePolicy, Topology, UpdateStrategy, Volume,
};
use crate::rules;

/// Desired state of a TiKVGroup: a set of TiKV stores sharing one template.
/// A Cluster may have several TiKVGroups with different resources, config
/// and store labels (for example an `ssd` group and an `hdd` group).
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "core.tikv.org",
    version = "v1alpha1",
    kind = "TiKVGroup",
    plural = "tikvgroups",
    namespaced,
    status = "TiKVGroupStatus",
    shortname = "kvg",
    category = "tikv-all",
    category = "tikv-groups",
    doc = "TiKVGroup manages a set of TiKV stores of a Cluster that share one template.",
    scale(
        spec_replicas_path = ".spec.replicas",
        status_replicas_path = ".status.replicas",
        label_selector_path = ".status.selector"
    ),
    printcolumn(name = "Cluster", type_ = "string", json_path = ".spec.cluster.name"),
    printcolumn(name = "Desired", type_ = "integer", json_path = ".spec.replicas"),
    printcolumn(name = "Ready", type_ = "integer", json_path = ".status.readyReplicas"),
    printcolumn(
        name = "Updated",
        type_ = "integer",
        json_path = ".status.updatedReplicas"
    ),
    printcolumn(
        name = "Revision",
        type_ = "string",
        json_path = ".status.updateRevision"
    ),
    printcolumn(
        name = "Synced",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Synced\")].status"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct TiKVGroupSpec {
    /// The Cluster this group belongs to. Immutable.
    #[schemars(extend("x-kubernetes-validations" = rules::immutable("cluster")))]
    pub cluster: ClusterReference,
    /// Number of TiKV stores. Scale-in is refused below PD's `max-replicas`
    /// Up stores, and a scale-in in progress is cancelled by raising it again.
    #[schemars(extend("x-kubernetes-validations" = rules::non_negative("replicas")))]
    pub replicas: i32,
    /// Seconds a new or restarted store must be Ready before the next one is touched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-kubernetes-validations" = rules::non_negative("minReadySeconds")))]
    pub min_ready_seconds: Option<i32>,
    /// Stores that rolling updates may disrupt at once (default 1), counted
    /// over the whole Cluster: stores already unavailable anywhere (not
    /// Ready, being restarted or removed) use up the budget first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-kubernetes-validations" = rules::at_least_one("maxUnavailable")))]
    pub max_unavailable: Option<i32>,
    /// Replacement of failed stores (default: enabled, see [`Failover`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failover: Option<Failover>,
    /// How stores are placed over topologies (zones, racks).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 4))]
    #[schemars(extend("x-kubernetes-validations" = rules::one_policy_per_type()))]
    pub schedule_policies: Vec<SchedulePolicy>,
    /// Template of every TiKV store of this group.
    pub template: TiKVTemplate,
}

/// Template of the TiKV stores of a group.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TiKVTemplate {
    /// Labels and annotations of the TiKV instances and their pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<ObjectMeta>,
    /// Specification of each TiKV store.
    pub spec: TiKVTemplateSpec,
}

/// Specification of one TiKV store, shared by TiKVGroup templates and TiKV instances.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TiKVTemplateSpec {
    /// TiKV version, a semantic version such as `v8.5.5`. Also the image tag
    /// unless `image` carries one. Downgrades are refused.
    #[schemars(length(max = 128))]
    #[schemars(extend("x-kubernetes-validations" = rules::semver_version()))]
    pub version: String,
    /// Image without tag (default `pingcap/tikv`), or with a tag or digest to pin it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 512))]
    #[schemars(extend("x-kubernetes-validations" = rules::image()))]
    pub image: Option<String>,
    /// Server settings: ports and store labels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<TiKVServer>,
    /// CPU and memory of the TiKV container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// How changes reach running stores.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_strategy: Option<UpdateStrategy>,
    /// TiKV configuration file content (TOML). Keys the operator owns
    /// (addresses, `storage.data-dir`, `pd.endpoints`, `server.labels`) are rejected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 65536))]
    #[schemars(extend("x-kubernetes-validations" = rules::tikv_config()))]
    pub config: Option<String>,
    /// Persistent volumes. One must be named `data`.
    #[schemars(length(max = 8))]
    #[schemars(extend(
        "x-kubernetes-validations" = rules::tikv_volumes(),
        "x-kubernetes-list-type" = "map",
        "x-kubernetes-list-map-keys" = ["name"]
    ))]
    pub volumes: Vec<Volume>,
    /// Overrides applied last to the rendered Pod and PVCs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overlay: Option<Overlay>,
    /// Secret with `ca.crt`, `tls.crt` and `tls.key` the members mount when
    /// the Cluster enables TLS (default `<group>-tikv-tls`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    #[schemars(extend("x-kubernetes-validations" = rules::object_reference("tlsSecretName")))]
    pub tls_secret_name: Option<String>,
}

/// TiKV server settings.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TiKVServer {
    /// Ports TiKV listens on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ports: Option<TiKVPorts>,
    /// Store labels reported to PD (for example `disk: ssd`). The node's
    /// topology labels named by PD's `location-labels` are added to them.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend(
        "maxProperties" = 32,
        "additionalProperties" = {"type": "string", "maxLength": 63},
        "x-kubernetes-validations" = rules::store_labels()
    ))]
    pub labels: BTreeMap<String, String>,
}

/// Ports of TiKV.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = rules::distinct_ports(("client", 20160), ("status", 20180))))]
pub struct TiKVPorts {
    /// Client (gRPC) port, default 20160.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<Port>,
    /// Status (HTTP, metrics) port, default 20180.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Port>,
}

/// Observed state of a TiKVGroup.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TiKVGroupStatus {
    /// Conditions and observed generation.
    #[serde(flatten)]
    pub common: CommonStatus,
    /// Replica counts, revisions and selector.
    #[serde(flatten)]
    pub group: GroupStatus,
    /// Failed stores the operator saw and what it did about them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failover: Option<FailoverStatus>,
}

/// Failed stores of a TiKVGroup and their replacements.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FailoverStatus {
    /// Replacements started since the count was last reset; at
    /// `spec.failover.maxTotal` no new one starts. Set it back to 0 (status
    /// subresource) once the failures were looked at.
    #[serde(default)]
    pub total: i32,
    /// Failures being watched or handled, then the last finished ones.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failures: Vec<StoreFailure>,
}

pub use crate::common::FailoverPhase;

/// One failed TiKV store.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StoreFailure {
    /// The TiKV instance whose store failed.
    pub instance: String,
    /// Its store id in PD.
    pub store_id: String,
    /// Since when the store is unhealthy: its last heartbeat as PD reports
    /// it (else when the operator first saw it unhealthy).
    pub since: Time,
    /// The store's state in PD when last seen unhealthy: `Disconnected` or `Down`.
    pub store_state: String,
    /// Where the handling stands.
    pub phase: FailoverPhase,
    /// Why it is in this phase, CamelCase (for example `StoreUnhealthy`,
    /// `FailoverStarted`, or a refusal such as `TooManyFailures`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Details: the refusal, or progress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The instance created to replace it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replacement: Option<String>,
    /// When the phase last changed.
    pub last_transition_time: Time,
}

/// Desired state of one TiKV store. TiKV objects are normally created by
/// their TiKVGroup; their spec is the group template plus placement.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "core.tikv.org",
    version = "v1alpha1",
    kind = "TiKV",
    plural = "tikvs",
    namespaced,
    status = "TiKVStatus",
    shortname = "kv",
    category = "tikv-all",
    category = "tikv-instances",
    doc = "TiKV is one TiKV store of a Cluster.",
    printcolumn(name = "Cluster", type_ = "string", json_path = ".spec.cluster.name"),
    printcolumn(name = "StoreID", type_ = "string", json_path = ".status.id"),
    printcolumn(name = "StoreState", type_ = "string", json_path = ".status.state"),
    printcolumn(name = "Leaders", type_ = "integer", json_path = ".status.leaderCount"),
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
#[schemars(extend("x-kubernetes-validations" = rules::instance_immutable()))]
pub struct TiKVSpec {
    /// The Cluster this store belongs to. Immutable.
    #[schemars(extend("x-kubernetes-validations" = rules::immutable("cluster")))]
    pub cluster: ClusterReference,
    /// Node labels this store is pinned to (chosen by the group's schedule
    /// policy). Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend(
        "maxProperties" = rules::MAX_TOPOLOGY_LABELS,
        "additionalProperties" = {"type": "string", "maxLength": 63},
        "x-kubernetes-validations" = rules::topology()
    ))]
    pub topology: Option<Topology>,
    /// Name of the headless Service giving the pod its DNS name. Immutable.
    #[schemars(length(max = 63))]
    #[schemars(extend("x-kubernetes-validations" = rules::subdomain()))]
    pub subdomain: String,
    /// Whether this member speaks TLS (the Cluster's `tlsCluster.enabled`
    /// when the member was created). Immutable (absent means false).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub tls_cluster: bool,
    /// Set by the group to take this store out of the cluster: its leaders
    /// are evicted and PD removes the store. Clearing it before the store is
    /// removed cancels the removal.
    #[serde(default)]
    pub offline: bool,
    /// The store's specification (copied from the group template).
    #[serde(flatten)]
    pub template: TiKVTemplateSpec,
}

/// State of a TiKV store in PD.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum StoreState {
    /// Registered, not yet serving.
    Preparing,
    /// Serving (Up).
    Serving,
    /// Being removed (Offline): its regions are moving away.
    Removing,
    /// Removed (Tombstone): holds no data; pod and PVCs may go.
    Removed,
}

/// Observed state of one TiKV store.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TiKVStatus {
    /// Conditions and observed generation.
    #[serde(flatten)]
    pub common: CommonStatus,
    /// Store id in PD (a 64-bit unsigned integer, as a string).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Store state in PD.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<StoreState>,
    /// Number of Region leaders on this store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader_count: Option<i64>,
    /// Number of Regions on this store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region_count: Option<i64>,
    /// Template revision the running pod was created from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_revision: Option<String>,
    /// When the operator started evicting this store's Region leaders (set
    /// only while an evict-leader entry the operator added is in place; the
    /// operator removes the entry when the removal finishes or is cancelled).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader_eviction_started_at: Option<Time>,
}
