//! Types shared by several kinds.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::rules;

/// Reference from a group or instance to the Cluster it belongs to.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterReference {
    /// Name of a Cluster in the same namespace.
    #[schemars(length(max = 63))]
    #[schemars(extend("x-kubernetes-validations" = rules::cluster_name()))]
    pub name: String,
}

/// A topology: node label keys and values (for example
/// `topology.kubernetes.io/zone: us-east-1a`). An instance with a topology is
/// scheduled only to nodes carrying all of these labels.
pub type Topology = BTreeMap<String, String>;

/// Labels and annotations copied to the objects created from a template.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ObjectMeta {
    /// Labels added to the object. Keys the operator sets itself are rejected.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend(
        "maxProperties" = rules::MAX_MAP_ENTRIES,
        "additionalProperties" = {"type": "string", "maxLength": 63},
        "x-kubernetes-validations" = rules::label_map("labels")
    ))]
    pub labels: BTreeMap<String, String>,
    /// Annotations added to the object. Keys under `core.tikv.org/` are rejected.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend(
        "maxProperties" = rules::MAX_MAP_ENTRIES,
        "x-kubernetes-validations" = rules::annotation_map()
    ))]
    pub annotations: BTreeMap<String, String>,
}

/// A network port.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Port {
    /// Port number, 1-65535.
    #[schemars(extend("x-kubernetes-validations" = rules::port()))]
    pub port: i32,
}

/// CPU and memory for the component's container. Requests and limits are
/// set to the same values, so the pod gets the Guaranteed QoS class when both
/// are given.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResourceRequirements {
    /// CPU, for example `4` or `500m`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend(
        "x-kubernetes-validations" = rules::positive_quantity("cpu", "4 or 500m")
    ))]
    pub cpu: Option<Quantity>,
    /// Memory, for example `16Gi`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend(
        "x-kubernetes-validations" = rules::positive_quantity("memory", "16Gi")
    ))]
    pub memory: Option<Quantity>,
}

/// How a configuration change reaches running instances.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ConfigUpdateStrategy {
    /// Restart the instance (through the safe rolling path) to apply the new configuration.
    #[default]
    Restart,
    /// Update the configuration file in place and let the component reload it; no restart.
    HotReload,
}

/// How changes to the template reach running instances.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UpdateStrategy {
    /// What a change of `config` does: `Restart` (default) or `HotReload`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<ConfigUpdateStrategy>,
}

/// Where a volume is mounted in the component's container.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum VolumeMountType {
    /// The component's data directory (PD `data-dir`, TiKV `storage.data-dir`).
    #[default]
    #[serde(rename = "data")]
    Data,
}

/// One mount of a volume.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = rules::volume_mount()))]
pub struct VolumeMount {
    /// Well-known mount: `data` mounts the volume at the component's data
    /// directory, and the operator points the component at it.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub type_: Option<VolumeMountType>,
    /// Mount path in the container: absolute, not `/`, no `..`. Defaults to
    /// the well-known path of `type`. Unique over all mounts of the component.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 512))]
    #[schemars(extend("x-kubernetes-validations" = rules::mount_path()))]
    pub mount_path: Option<String>,
    /// Sub-path of the volume to mount: relative, no `..`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 512))]
    #[schemars(extend("x-kubernetes-validations" = rules::sub_path()))]
    pub sub_path: Option<String>,
}

/// A persistent volume of an instance. The operator creates one PVC per
/// volume per instance, named `<volume>-<instance>`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = rules::volume()))]
pub struct Volume {
    /// Volume name: a DNS-1035 label of at most 15 characters, unique, not
    /// `config`. One volume must be named `data`.
    #[schemars(length(max = 63))]
    #[schemars(extend("x-kubernetes-validations" = rules::volume_name()))]
    pub name: String,
    /// Where the volume is mounted.
    #[serde(default)]
    #[schemars(length(max = 8))]
    pub mounts: Vec<VolumeMount>,
    /// Requested size, for example `100Gi`. Growing it expands the PVC
    /// without restarting the pod (where the StorageClass allows expansion);
    /// shrinking it is rejected.
    #[schemars(schema_with = "crate::common::quantity_string")]
    #[schemars(extend("x-kubernetes-validations" = rules::positive_quantity_string("storage", "100Gi")))]
    pub storage: Quantity,
    /// StorageClass of the PVC. Absent means the cluster's default class;
    /// `""` means no class. Immutable once the volume exists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    #[schemars(extend("x-kubernetes-validations" = rules::storage_class_name()))]
    pub storage_class_name: Option<String>,
    /// VolumeAttributesClass of the PVC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    #[schemars(extend("x-kubernetes-validations" = rules::object_reference("volumeAttributesClassName")))]
    pub volume_attributes_class_name: Option<String>,
}

/// Overrides applied last to the objects the operator renders. Use them for
/// what the API has no field for (tolerations, affinity, sidecars, extra
/// environment variables, PVC annotations).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Overlay {
    /// Overlay of the Pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<PodOverlay>,
    /// Overlays of PVCs, by volume name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub volume_claims: Vec<NamedPersistentVolumeClaimOverlay>,
}

/// Overlay of a Pod.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodOverlay {
    /// Labels and annotations added to the Pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<ObjectMeta>,
    /// A partial Kubernetes PodSpec merged into the rendered one (lists of
    /// named items such as containers, volumes and env merge by name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::common::preserve_unknown_object")]
    pub spec: Option<serde_json::Value>,
}

/// Overlay of the PVC of one volume.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NamedPersistentVolumeClaimOverlay {
    /// Name of the volume (from `volumes[].name`) whose PVC is overlaid.
    pub name: String,
    /// The overlay.
    pub volume_claim: PersistentVolumeClaimOverlay,
}

/// Overlay of a PVC.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PersistentVolumeClaimOverlay {
    /// Labels and annotations added to the PVC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<ObjectMeta>,
    /// A partial Kubernetes PersistentVolumeClaimSpec merged into the rendered one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::common::preserve_unknown_object")]
    pub spec: Option<serde_json::Value>,
}

/// Schema of a quantity written as a string (`"100Gi"`). `storage` uses it
/// instead of Kubernetes' int-or-string: the API server costs CEL rules over
/// an int-or-string value as if it could fill a whole request, which leaves no
/// room for the quantity rules of a volume list item.
pub fn quantity_string(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "string",
        "maxLength": rules::MAX_QUANTITY_LEN
    })
}

/// Schema of an object kept as-is by the API server (overlay specs).
pub fn preserve_unknown_object(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "nullable": true,
        "x-kubernetes-preserve-unknown-fields": true
    })
}

/// Kind of a scheduling policy.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum SchedulePolicyType {
    /// Spread instances evenly over the listed topologies, by weight.
    #[default]
    EvenlySpread,
}

/// How a group places its instances.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = rules::schedule_policy()))]
pub struct SchedulePolicy {
    /// Policy kind. Only `EvenlySpread` exists today.
    #[serde(rename = "type")]
    pub type_: SchedulePolicyType,
    /// Parameters of `EvenlySpread`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evenly_spread: Option<EvenlySpreadPolicy>,
}

/// Parameters of the `EvenlySpread` policy.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EvenlySpreadPolicy {
    /// Topologies to spread over. New instances go to the topology that is
    /// furthest below its weighted share; scale-in removes from the one
    /// furthest above it.
    #[schemars(length(max = 32))]
    #[schemars(extend("x-kubernetes-validations" = rules::distinct_topologies()))]
    pub topologies: Vec<ScheduleTopology>,
}

/// One topology of an `EvenlySpread` policy.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScheduleTopology {
    /// Node labels that make up this topology (at least one).
    #[schemars(extend(
        "maxProperties" = rules::MAX_TOPOLOGY_LABELS,
        "additionalProperties" = {"type": "string", "maxLength": 63},
        "x-kubernetes-validations" = rules::topology()
    ))]
    pub topology: Topology,
    /// Relative share of instances for this topology (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-kubernetes-validations" = rules::at_least_one("weight")))]
    pub weight: Option<i32>,
}

/// Status every kind reports.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CommonStatus {
    /// Conditions (`Ready`, `Synced`, `Progressing`, `Suspended`, ...) following
    /// Kubernetes conventions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// The `metadata.generation` this status was computed for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// Status of a PDGroup or TiKVGroup.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GroupStatus {
    /// Version running on the instances (the lowest one while an upgrade is in progress).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Number of instances that exist.
    #[serde(default)]
    pub replicas: i32,
    /// Number of instances that are Ready.
    #[serde(default)]
    pub ready_replicas: i32,
    /// Number of instances at `currentRevision`.
    #[serde(default)]
    pub current_replicas: i32,
    /// Number of instances at `updateRevision`.
    #[serde(default)]
    pub updated_replicas: i32,
    /// Revision of the template the instances ran before the current update.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_revision: Option<String>,
    /// Revision of the current template.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_revision: Option<String>,
    /// Count of hash collisions of revisions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collision_count: Option<i32>,
    /// Label selector of the group's instances, in string form (used by the
    /// `scale` subresource, `kubectl scale` and HorizontalPodAutoscaler).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
}

/// Condition types.
pub mod condition {
    /// The object is serving: all of its parts are ready.
    pub const READY: &str = "Ready";
    /// The observed state matches the spec: every child object was applied.
    pub const SYNCED: &str = "Synced";
    /// A change (scale, update, upgrade) is in progress; the message says what it waits for.
    pub const PROGRESSING: &str = "Progressing";
    /// Compute is suspended (`suspendAction.suspendCompute`).
    pub const SUSPENDED: &str = "Suspended";
}

/// When the operator replaces a failed member of a group by itself.
///
/// A member is replaced only when waiting is worse: see `docs/failover.md`
/// for every case the operator refuses (another member disrupted, a Region
/// that would lose its majority, too many failures at once, PD unreachable).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Failover {
    /// Whether failed members are replaced automatically. Default `true` for
    /// TiKV: a replacement joins before the failed store is removed, and PD
    /// removes the failed store only once every Region has its replicas
    /// elsewhere, so no data is lost by acting; waiting leaves Regions one
    /// replica short. Default `false` for PD: a PD cluster that lost one
    /// member keeps serving, and replacing the member changes PD's
    /// membership, which many teams do by hand (see `docs/failover.md`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Seconds a member must stay unhealthy before it is replaced: a TiKV
    /// store Disconnected or Down in PD, counted from its last heartbeat as
    /// PD reports it; a PD member unhealthy in PD's health check, counted
    /// from when the operator first saw it so. Default 1800 (PD's default
    /// `max-store-down-time`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-kubernetes-validations" = rules::at_least_one("failover.periodSeconds")))]
    pub period_seconds: Option<i32>,
    /// Replacements at once, and the most members that may fail at the same
    /// time for the operator to act: with more failed members than this
    /// (for example a zone outage) it reports and waits. Default 1. PD
    /// replaces one member at a time whatever this says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-kubernetes-validations" = rules::at_least_one("failover.maxInFlight")))]
    pub max_in_flight: Option<i32>,
    /// Replacements recorded in `status.failover.total` after which the
    /// operator stops replacing and a person must look. Reset by setting
    /// `status.failover.total` back to 0 (see `docs/failover.md`). Default 3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-kubernetes-validations" = rules::at_least_one("failover.maxTotal")))]
    pub max_total: Option<i32>,
}

/// Where the handling of one failed member (a TiKV store, a PD member) stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum FailoverPhase {
    /// Unhealthy for less than the period: watched, nothing done yet.
    Observing,
    /// Past the period, but a safety check refuses to act (see `message`).
    Refused,
    /// TiKV: a replacement instance was created; waiting for its store to
    /// serve. PD: the failed member is being removed from PD (a new member
    /// joins once it is gone).
    Replacing,
    /// TiKV: the replacement serves; the failed store is being removed
    /// through PD.
    Removing,
    /// TiKV: the failed store is Tombstone and its instance, Pod and PVCs
    /// are gone. PD: the failed member's instance, Pod and PVCs are gone.
    Completed,
    /// TiKV: the failed store came back before its removal started; the
    /// replacement is taken out again.
    Cancelled,
}

impl Failover {
    /// Default of `periodSeconds`.
    pub const DEFAULT_PERIOD_SECONDS: i32 = 1800;
    /// Default of `maxInFlight`.
    pub const DEFAULT_MAX_IN_FLIGHT: i32 = 1;
    /// Default of `maxTotal`.
    pub const DEFAULT_MAX_TOTAL: i32 = 3;
}
