//! PDGroup and PD: the Placement Driver members of a Cluster.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{
    ClusterReference, CommonStatus, GroupStatus, ObjectMeta, Overlay, Port, ResourceRequirements,
    SchedulePolicy, Topology, UpdateStrategy, Volume,
};
use crate::rules;

/// Desired state of a PDGroup: a set of PD members sharing one template.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "core.tikv.org",
    version = "v1alpha1",
    kind = "PDGroup",
    plural = "pdgroups",
    namespaced,
    status = "PDGroupStatus",
    shortname = "pdg",
    category = "tikv-all",
    category = "tikv-groups",
    doc = "PDGroup manages the PD (Placement Driver) members of a Cluster.",
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
pub struct PDGroupSpec {
    /// The Cluster this group belongs to. Immutable.
    #[schemars(extend("x-kubernetes-validations" = rules::immutable("cluster")))]
    pub cluster: ClusterReference,
    /// Number of PD members. Use an odd number (3 or 5) for production: PD
    /// needs a majority of members to be healthy.
    #[schemars(extend("x-kubernetes-validations" = rules::non_negative("replicas")))]
    pub replicas: i32,
    /// Seconds a new or restarted member must be Ready before the next one is touched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-kubernetes-validations" = rules::non_negative("minReadySeconds")))]
    pub min_ready_seconds: Option<i32>,
    /// How members are placed over topologies (zones, racks).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 4))]
    #[schemars(extend("x-kubernetes-validations" = rules::one_policy_per_type()))]
    pub schedule_policies: Vec<SchedulePolicy>,
    /// Template of every PD member of this group.
    pub template: PDTemplate,
    /// Replacing a PD member that stays unhealthy (off unless `enabled: true`;
    /// see `docs/failover.md`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failover: Option<crate::Failover>,
}

/// Template of the PD members of a group.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PDTemplate {
    /// Labels and annotations of the PD instances and their pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<ObjectMeta>,
    /// Specification of each PD member.
    pub spec: PDTemplateSpec,
}

/// Specification of one PD member, shared by PDGroup templates and PD instances.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PDTemplateSpec {
    /// PD version, a semantic version such as `v8.5.5`. Also the image tag
    /// unless `image` carries one. Downgrades are refused.
    #[schemars(length(max = 128))]
    #[schemars(extend("x-kubernetes-validations" = rules::semver_version()))]
    pub version: String,
    /// Image without tag (default `pingcap/pd`), or with a tag or digest to pin it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 512))]
    #[schemars(extend("x-kubernetes-validations" = rules::image()))]
    pub image: Option<String>,
    /// Server settings: ports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<PDServer>,
    /// CPU and memory of the PD container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// How changes reach running members.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_strategy: Option<UpdateStrategy>,
    /// PD configuration file content (TOML). Keys the operator owns (name,
    /// data-dir, URLs, initial-cluster, join) are rejected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 65536))]
    #[schemars(extend("x-kubernetes-validations" = rules::pd_config()))]
    pub config: Option<String>,
    /// Persistent volumes. One must be named `data`.
    #[schemars(length(max = 8))]
    #[schemars(extend(
        "x-kubernetes-validations" = rules::pd_volumes(),
        "x-kubernetes-list-type" = "map",
        "x-kubernetes-list-map-keys" = ["name"]
    ))]
    pub volumes: Vec<Volume>,
    /// Overrides applied last to the rendered Pod and PVCs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overlay: Option<Overlay>,
    /// Secret with `ca.crt`, `tls.crt` and `tls.key` the members mount when
    /// the Cluster enables TLS (default `<group>-pd-tls`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    #[schemars(extend("x-kubernetes-validations" = rules::object_reference("tlsSecretName")))]
    pub tls_secret_name: Option<String>,
}

/// PD server settings.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PDServer {
    /// Ports PD listens on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ports: Option<PDPorts>,
}

/// Ports of PD.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = rules::distinct_ports(("client", 2379), ("peer", 2380))))]
pub struct PDPorts {
    /// Client port (gRPC and HTTP API), default 2379.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<Port>,
    /// Peer port (member-to-member traffic), default 2380.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<Port>,
}

/// Observed state of a PDGroup.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PDGroupStatus {
    /// Conditions and observed generation.
    #[serde(flatten)]
    pub common: CommonStatus,
    /// Replica counts, revisions and selector.
    #[serde(flatten)]
    pub group: GroupStatus,
    /// Failed members the operator saw and what it did about them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failover: Option<PdFailoverStatus>,
}

/// Failed members of a PDGroup and their replacements.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PdFailoverStatus {
    /// Replacements started since the count was last reset; at
    /// `spec.failover.maxTotal` no new one starts. Set it back to 0 (status
    /// subresource) once the failures were looked at.
    #[serde(default)]
    pub total: i32,
    /// Failures being watched or handled, then the last finished ones.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failures: Vec<MemberFailure>,
}

/// One failed PD member.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MemberFailure {
    /// The PD instance whose member failed.
    pub instance: String,
    /// Its member id in PD.
    pub member_id: String,
    /// Since when the operator sees the member unhealthy in PD's health check.
    pub since: Time,
    /// Where the handling stands (`Observing`, `Refused`, `Replacing`, `Completed`).
    pub phase: crate::FailoverPhase,
    /// Why it is in this phase, CamelCase (for example `MemberUnhealthy`,
    /// `FailoverStarted`, or a refusal such as `TooManyFailures`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Details: the refusal, or progress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// When the phase last changed.
    pub last_transition_time: Time,
}

/// Desired state of one PD member. PD objects are normally created by their
/// PDGroup; their spec is the group template plus placement.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "core.tikv.org",
    version = "v1alpha1",
    kind = "PD",
    plural = "pds",
    namespaced,
    status = "PDStatus",
    shortname = "pdi",
    category = "tikv-all",
    category = "tikv-instances",
    doc = "PD is one PD (Placement Driver) member of a Cluster.",
    printcolumn(name = "Cluster", type_ = "string", json_path = ".spec.cluster.name"),
    printcolumn(name = "Leader", type_ = "boolean", json_path = ".status.isLeader"),
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
pub struct PDSpec {
    /// The Cluster this member belongs to. Immutable.
    #[schemars(extend("x-kubernetes-validations" = rules::immutable("cluster")))]
    pub cluster: ClusterReference,
    /// Node labels this member is pinned to (chosen by the group's schedule
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
    /// The member's specification (copied from the group template).
    #[serde(flatten)]
    pub template: PDTemplateSpec,
}

/// Observed state of one PD member.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PDStatus {
    /// Conditions and observed generation.
    #[serde(flatten)]
    pub common: CommonStatus,
    /// PD member id (a 64-bit unsigned integer, as a string).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Whether this member is the PD leader.
    #[serde(default)]
    pub is_leader: bool,
    /// Template revision the running pod was created from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_revision: Option<String>,
}
