//! Label, annotation and finalizer keys. Every key the operator reads or writes
//! on a Kubernetes object is defined here and nowhere else.

/// Standard `app.kubernetes.io/managed-by` label; value [`MANAGED_BY_VALUE`].
pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// Value of [`MANAGED_BY`] on every object the operator creates.
pub const MANAGED_BY_VALUE: &str = "tikv-operator";
/// Standard `app.kubernetes.io/component` label: `pd` or `tikv`.
pub const COMPONENT: &str = "app.kubernetes.io/component";
/// Name of the Cluster an object belongs to.
pub const CLUSTER: &str = "core.tikv.org/cluster";
/// Name of the PDGroup or TiKVGroup an object belongs to.
pub const GROUP: &str = "core.tikv.org/group";
/// Name of the PD or TiKV instance an object belongs to.
pub const INSTANCE: &str = "core.tikv.org/instance";
/// On a Pod: its revision, what it was created from as far as a restart is
/// concerned (see `tikv_operator_core::revision`): `g<rendering generation>-`
/// followed by a hash of the user's inputs. Pods created by operator
/// versions before the rendering generation carry a bare 16-digit hash of
/// their rendered spec.
pub const INSTANCE_REVISION: &str = "core.tikv.org/instance-revision";
/// On a Pod: a hash of the Pod spec the operator rendered when it created
/// it. A Pod whose spec was rendered differently (another operator version)
/// gets only its labels and annotations patched in place; its spec waits for
/// the next recreation.
pub const RENDERED_SPEC: &str = "core.tikv.org/rendered-spec";
/// Hash of the rendered configuration a pod was started with.
pub const CONFIG_HASH: &str = "core.tikv.org/config-hash";
/// Name of the volume (from `volumes[].name`) a PVC was created for.
pub const VOLUME_NAME: &str = "core.tikv.org/volume-name";

/// Component value of [`COMPONENT`] for PD objects.
pub const COMPONENT_PD: &str = "pd";
/// Component value of [`COMPONENT`] for TiKV objects.
pub const COMPONENT_TIKV: &str = "tikv";

/// Annotation on a PDGroup or TiKVGroup: changing its value (for example to
/// the current time) starts a rolling restart through the safe update path.
pub const RESTARTED_AT: &str = "core.tikv.org/restarted-at";
/// Annotation on a PD or TiKV instance: the revision of its group's template
/// (`status.updateRevision` of the group) the instance was last rendered from.
pub const TEMPLATE_REVISION: &str = "core.tikv.org/template-revision";
/// Annotation on a PDGroup or TiKVGroup: `"true"` allows moving its members
/// to a lower `version` (refused otherwise, with reason `DowngradeRefused`).
pub const ALLOW_DOWNGRADE: &str = "core.tikv.org/allow-downgrade";
/// Annotation on a TiKV instance, set by its group: the Pod revision the
/// instance may restart its Pod to. A TiKV instance never recreates a
/// running Pod on its own: its group grants restarts one disruption budget
/// at a time (`maxUnavailable`), so a change of the rendering (a template
/// change, a restart request, a new operator version) never restarts
/// several stores at once.
pub const RESTART_ALLOWED: &str = "core.tikv.org/restart-allowed";
/// Annotation on a TiKV instance created by failover: the name of the failed
/// instance it replaces. Set when the replacement is created (so a retry
/// never creates a second one); while it is set, the failed instance does
/// not count toward `replicas`.
pub const FAILOVER_REPLACES: &str = "core.tikv.org/failover-replaces";
/// Annotation on a TiKV Pod: the version it was created with. A Pod is
/// never changed in place to another version, so this is the version it
/// runs; downgrades are judged against it (a reverted upgrade that reached
/// no Pod yet is not a downgrade).
pub const VERSION: &str = "core.tikv.org/version";
/// Annotation on a PD or TiKV instance: an integer; on scale-in, among
/// otherwise equal candidates (after not-ready instances and the most crowded
/// topology), the instance with the highest value is removed first. Absent or
/// not an integer counts as 0.
pub const DELETE_PRIORITY: &str = "core.tikv.org/delete-priority";

/// Annotation on a PD instance created while its PD cluster was bootstrapped:
/// the comma-separated names of every initial member. Such an instance starts
/// with `initial-cluster`; an instance without it joins the running cluster.
/// Written once at creation and never changed.
pub const PD_BOOTSTRAP_MEMBERS: &str = "core.tikv.org/pd-bootstrap-members";

/// Annotation the operator stamps on every object it applies: a hash of the
/// desired object. An apply is skipped when the cached object carries the same
/// hash and still contains every desired field.
pub const APPLIED_HASH: &str = "core.tikv.org/applied-hash";

/// Finalizer the operator puts on objects whose deletion needs ordered
/// cleanup (groups, instances, the Cluster).
pub const FINALIZER: &str = "core.tikv.org/finalizer";

/// Field manager used for every server-side apply the operator makes.
pub const FIELD_MANAGER: &str = "tikv-operator";
