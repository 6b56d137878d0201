//! Rendering what every component's instance has, written once: labels and
//! selectors, the instance object a group creates, the ConfigMap, the PVCs,
//! the Pod (volumes, mounts, container, metadata, overlays) and the headless
//! peer Service (written in the sibling module `service`, re-exported here).
//! Pure: objects in, objects out. Each layer adds only what is its own (its
//! configuration file, its ports, PD's bootstrap members).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, PersistentVolumeClaim,
    PersistentVolumeClaimSpec, PersistentVolumeClaimVolumeSource, Pod, PodSpec, Probe,
    ResourceRequirements as K8sResources, SecretVolumeSource, TCPSocketAction, Volume as PodVolume,
    VolumeMount as PodVolumeMount, VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::Resource;
use kube::api::ObjectMeta;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tikv_operator_api::common::{ObjectMeta as TemplateMeta, VolumeMountType};
use tikv_operator_api::{labels, names};

use super::{Component, InstanceTemplate};
use crate::revision::{PodRevision, RevisionInputs};

pub use super::service::{group_parts, render_group_service, service_port};

/// Condition reason: the user's configuration sets a key the operator owns,
/// or is not valid TOML.
pub const INVALID_CONFIG: &str = "InvalidConfig";
/// Condition reason: the spec cannot be rendered (e.g. a reserved volume name).
pub const INVALID_SPEC: &str = "InvalidSpec";
/// Condition reason: the Cluster has no PD URL yet.
pub const WAITING_FOR_PD: &str = "WaitingForPD";

/// Why an instance cannot be rendered. Each is reported in a condition;
/// nothing is applied for the instance until it is fixed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    /// `config` is not valid TOML.
    #[error("config is not valid TOML: {0}")]
    InvalidToml(String),
    /// `config` sets keys the operator owns; `hint` says where they belong.
    #[error("config sets keys the operator owns: {}; remove them, the operator sets them{hint}", .keys.join(", "))]
    OwnedKeys {
        /// The keys.
        keys: Vec<String>,
        /// Appended to the message (empty, or a space and a hint).
        hint: &'static str,
    },
    /// A volume uses a name the operator reserves.
    #[error("volume name {0:?} is reserved by the operator")]
    ReservedVolumeName(String),
    /// A mount has neither a `type` nor a `mountPath`.
    #[error("a mount of volume {0:?} needs a type or a mountPath")]
    MountPathMissing(String),
    /// An overlay is not a valid partial object.
    #[error("overlay is invalid: {0}")]
    InvalidOverlay(String),
    /// The Cluster has no PD URL yet.
    #[error("the Cluster has no PD URL yet (status.pd); waiting for its PDGroup")]
    NoPd,
    /// The object lacks something the operator sets (e.g. the group label).
    #[error("{0}")]
    Incomplete(String),
}

impl RenderError {
    /// The condition reason for this error.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::InvalidToml(_) | Self::OwnedKeys { .. } => INVALID_CONFIG,
            Self::NoPd => WAITING_FOR_PD,
            _ => INVALID_SPEC,
        }
    }
}

/// The container image: `image` (default [`Component::DEFAULT_IMAGE`])
/// tagged with `version` unless it carries a tag or digest already.
pub fn image<C: Component>(spec: &C::Template) -> String {
    let image = spec.image().unwrap_or(C::DEFAULT_IMAGE);
    let last = image.rsplit('/').next().unwrap_or(image);
    if image.contains('@') || last.contains(':') {
        image.to_owned()
    } else {
        format!("{image}:{}", spec.version())
    }
}

/// DNS name of an instance's Pod: `<pod>.<peer service>.<namespace>.svc`.
pub fn pod_host(instance: &str, subdomain: &str, namespace: &str) -> String {
    format!("{}.{subdomain}.{namespace}.svc", names::pod(instance))
}

/// The URL scheme of a member that does (`https`) or does not (`http`)
/// speak TLS.
pub fn scheme(tls: bool) -> &'static str {
    if tls { "https" } else { "http" }
}

/// The TLS Secret of a group's members: the template's `tlsSecretName`,
/// else the component's default for the group.
pub fn tls_secret_name<C: Component>(group: &str, template: &C::Template) -> String {
    template
        .tls_secret_name()
        .map_or_else(|| C::default_tls_secret(group), str::to_owned)
}

/// The TLS Secret an instance mounts: `None` for an instance that does not
/// speak TLS.
pub fn instance_tls_secret<C: Component>(i: &C::Instance) -> Result<Option<String>, RenderError> {
    if !C::tls_cluster(i) {
        return Ok(None);
    }
    let p = parts::<C>(i)?;
    Ok(Some(tls_secret_name::<C>(p.group, C::template(i))))
}

/// Where the member finds its CA bundle, certificate and key (the files of
/// the mounted TLS Secret): `(ca, cert, key)`.
pub fn tls_files<C: Component>() -> (String, String, String) {
    let file = |key: &str| format!("{}/{key}", C::TLS_DIR);
    (
        file(crate::tls::CA_KEY),
        file(crate::tls::CERT_KEY),
        file(crate::tls::KEY_KEY),
    )
}

/// Labels selecting every instance (and Pod) of a group of component `C`.
pub fn group_selector<C: Component>(cluster: &str, group: &str) -> BTreeMap<String, String> {
    [
        (labels::MANAGED_BY, labels::MANAGED_BY_VALUE),
        (labels::COMPONENT, C::LABEL),
        (labels::CLUSTER, cluster),
        (labels::GROUP, group),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

/// Labels the operator puts on every object of an instance of component `C`.
pub fn instance_labels<C: Component>(
    cluster: &str,
    group: &str,
    instance: &str,
) -> BTreeMap<String, String> {
    let mut l = group_selector::<C>(cluster, group);
    l.insert(labels::INSTANCE.to_owned(), instance.to_owned());
    l
}

/// [`group_selector`] in string form (`status.selector`, for the scale subresource).
pub fn selector_string<C: Component>(cluster: &str, group: &str) -> String {
    group_selector::<C>(cluster, group)
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// The user's labels and annotations with the operator's labels added (the
/// operator's win).
fn with_user_meta(
    operator: BTreeMap<String, String>,
    user: Option<&TemplateMeta>,
) -> (BTreeMap<String, String>, BTreeMap<String, String>) {
    let mut labels = user.map(|m| m.labels.clone()).unwrap_or_default();
    labels.extend(operator);
    let annotations = user.map(|m| m.annotations.clone()).unwrap_or_default();
    (labels, annotations)
}

fn none_if_empty(m: BTreeMap<String, String>) -> Option<BTreeMap<String, String>> {
    (!m.is_empty()).then_some(m)
}

/// The restart request of an object ([`labels::RESTARTED_AT`]).
pub fn restarted_at(meta: &ObjectMeta) -> Option<&String> {
    meta.annotations.as_ref()?.get(labels::RESTARTED_AT)
}

/// What a group's revision is computed from (`status.updateRevision`, kept
/// in the group's revision history): its `spec.template` and restart request.
pub fn group_revision_data(template: &impl Serialize, meta: &ObjectMeta) -> serde_json::Value {
    serde_json::json!({
        "template": serde_json::to_value(template).unwrap_or_default(),
        "restartedAt": restarted_at(meta),
    })
}

/// The metadata of the instance object `name` a group creates: the template
/// metadata and the operator's labels, the group's template revision and
/// restart request, the finalizer and the group as owner.
pub fn instance_meta<C: Component>(
    group: &C::Group,
    cluster: &str,
    template_meta: Option<&TemplateMeta>,
    template_revision: String,
    name: &str,
) -> ObjectMeta {
    let gm = group.meta();
    let group_name = gm.name.clone().unwrap_or_default();
    let (labels, mut annotations) = with_user_meta(
        instance_labels::<C>(cluster, &group_name, name),
        template_meta,
    );
    annotations.insert(labels::TEMPLATE_REVISION.to_owned(), template_revision);
    // A rolling restart requested on the group reaches every instance and,
    // through it, every Pod's revision; the group restarts them one at a
    // time.
    if let Some(at) = restarted_at(gm) {
        annotations.insert(labels::RESTARTED_AT.to_owned(), at.clone());
    }
    ObjectMeta {
        name: Some(name.to_owned()),
        namespace: gm.namespace.clone(),
        labels: Some(labels),
        annotations: none_if_empty(annotations),
        finalizers: Some(vec![labels::FINALIZER.to_owned()]),
        owner_references: group.controller_owner_ref(&()).map(|r| vec![r]),
        ..ObjectMeta::default()
    }
}

/// What rendering an instance's objects needs from its metadata.
#[derive(Debug, Clone, Copy)]
pub struct Parts<'a> {
    /// Instance name.
    pub name: &'a str,
    /// Namespace.
    pub namespace: &'a str,
    /// Group name (the [`labels::GROUP`] label).
    pub group: &'a str,
    /// Cluster name.
    pub cluster: &'a str,
}

/// The [`Parts`] of an instance; an error when the instance lacks a name,
/// namespace or group label.
pub fn parts<C: Component>(i: &C::Instance) -> Result<Parts<'_>, RenderError> {
    let m = i.meta();
    let kind = C::KIND;
    let name = m
        .name
        .as_deref()
        .ok_or_else(|| RenderError::Incomplete(format!("{kind} instance without a name")))?;
    let namespace = m
        .namespace
        .as_deref()
        .ok_or_else(|| RenderError::Incomplete(format!("{kind} instance without a namespace")))?;
    let group = m
        .labels
        .as_ref()
        .and_then(|l| l.get(labels::GROUP))
        .map(String::as_str)
        .ok_or_else(|| {
            RenderError::Incomplete(format!(
                "{kind} instance {name} has no {} label; {kind} instances are created by their \
                 {kind}Group",
                labels::GROUP
            ))
        })?;
    Ok(Parts {
        name,
        namespace,
        group,
        cluster: C::cluster(i),
    })
}

/// The container path of a mount.
fn mount_path<C: Component>(
    volume: &str,
    m: &tikv_operator_api::VolumeMount,
) -> Result<String, RenderError> {
    match (&m.mount_path, m.type_) {
        (Some(p), _) => Ok(p.clone()),
        (None, Some(VolumeMountType::Data)) => Ok(C::DEFAULT_DATA_DIR.to_owned()),
        (None, None) => Err(RenderError::MountPathMissing(volume.to_owned())),
    }
}

/// The data directory: the path of the first `type: data` mount, else of
/// the first mount of the volume named `data`, else the default.
pub fn data_dir<C: Component>(spec: &C::Template) -> Result<String, RenderError> {
    for v in spec.volumes() {
        if let Some(m) = v
            .mounts
            .iter()
            .find(|m| m.type_ == Some(VolumeMountType::Data))
        {
            return mount_path::<C>(&v.name, m);
        }
    }
    match spec
        .volumes()
        .iter()
        .find(|v| v.name == "data")
        .and_then(|v| v.mounts.first().map(|m| (v, m)))
    {
        Some((v, m)) => mount_path::<C>(&v.name, m),
        None => Ok(C::DEFAULT_DATA_DIR.to_owned()),
    }
}

/// The user's `config` of a template, parsed, without operator-owned keys
/// (see [`crate::config::user_table`]).
pub fn check_config<C: Component>(config: Option<&str>) -> Result<toml::Table, RenderError> {
    crate::config::user_table(config, &C::OWNED_KEYS).map_err(|e| match e {
        crate::config::ConfigError::Toml(m) => RenderError::InvalidToml(m),
        crate::config::ConfigError::OwnedKeys(keys) => RenderError::OwnedKeys {
            keys,
            hint: C::OWNED_KEYS_HINT,
        },
    })
}

fn owner<C: Component>(i: &C::Instance) -> Option<Vec<OwnerReference>> {
    i.controller_owner_ref(&()).map(|r| vec![r])
}

/// The instance's ConfigMap holding `config` under [`Component::CONFIG_FILE`].
pub fn render_config_map<C: Component>(
    i: &C::Instance,
    config: &str,
) -> Result<ConfigMap, RenderError> {
    let p = parts::<C>(i)?;
    Ok(ConfigMap {
        metadata: ObjectMeta {
            name: Some(names::config_map(p.name)),
            namespace: Some(p.namespace.to_owned()),
            labels: Some(instance_labels::<C>(p.cluster, p.group, p.name)),
            owner_references: owner::<C>(i),
            ..ObjectMeta::default()
        },
        data: Some([(C::CONFIG_FILE.to_owned(), config.to_owned())].into()),
        ..ConfigMap::default()
    })
}

/// `base` with the partial object `overlay` merged in.
fn overlaid<T: Serialize + DeserializeOwned>(
    base: &T,
    overlay: &serde_json::Value,
) -> Result<T, RenderError> {
    super::overlay::overlaid(base, overlay).map_err(RenderError::InvalidOverlay)
}

/// The instance's PVCs, one per volume, overlays applied. They carry no
/// owner reference: only the instance's removal deletes them, after the
/// member or store left PD, never garbage collection.
pub fn render_pvcs<C: Component>(
    i: &C::Instance,
) -> Result<Vec<PersistentVolumeClaim>, RenderError> {
    let p = parts::<C>(i)?;
    let spec = C::template(i);
    let overlay = spec.overlay();
    spec.volumes()
        .iter()
        .map(|v| {
            let mut labels = instance_labels::<C>(p.cluster, p.group, p.name);
            labels.insert(labels::VOLUME_NAME.to_owned(), v.name.clone());
            let pvc_overlay = overlay.and_then(|o| {
                o.volume_claims
                    .iter()
                    .find(|c| c.name == v.name)
                    .map(|c| &c.volume_claim)
            });
            let (labels, annotations) =
                with_user_meta(labels, pvc_overlay.and_then(|c| c.metadata.as_ref()));
            let base = PersistentVolumeClaimSpec {
                access_modes: Some(vec!["ReadWriteOnce".to_owned()]),
                resources: Some(VolumeResourceRequirements {
                    requests: Some([("storage".to_owned(), v.storage.clone())].into()),
                    ..VolumeResourceRequirements::default()
                }),
                storage_class_name: v.storage_class_name.clone(),
                volume_attributes_class_name: v.volume_attributes_class_name.clone(),
                ..PersistentVolumeClaimSpec::default()
            };
            let pvc_spec = match pvc_overlay.and_then(|c| c.spec.as_ref()) {
                Some(o) => overlaid(&base, o)?,
                None => base,
            };
            Ok(PersistentVolumeClaim {
                metadata: ObjectMeta {
                    name: Some(names::pvc(&v.name, p.name)),
                    namespace: Some(p.namespace.to_owned()),
                    labels: Some(labels),
                    annotations: none_if_empty(annotations),
                    owner_references: None,
                    ..ObjectMeta::default()
                },
                spec: Some(pvc_spec),
                status: None,
            })
        })
        .collect()
}

fn resources(spec: &impl InstanceTemplate) -> Option<K8sResources> {
    let r = spec.resources()?;
    let mut m: BTreeMap<String, Quantity> = BTreeMap::new();
    if let Some(cpu) = &r.cpu {
        m.insert("cpu".to_owned(), cpu.clone());
    }
    if let Some(mem) = &r.memory {
        m.insert("memory".to_owned(), mem.clone());
    }
    (!m.is_empty()).then(|| K8sResources {
        requests: Some(m.clone()),
        limits: Some(m),
        ..K8sResources::default()
    })
}

/// The Pod volumes (one per PVC, then the ConfigMap, then for a member
/// speaking TLS its Secret `tls_secret`) and the container's mounts of an
/// instance.
fn volumes_and_mounts<C: Component>(
    spec: &C::Template,
    instance: &str,
    tls_secret: Option<&str>,
) -> Result<(Vec<PodVolume>, Vec<PodVolumeMount>), RenderError> {
    let mut volumes = Vec::new();
    let mut mounts = Vec::new();
    for v in spec.volumes() {
        // `tls` is refused only where the operator mounts its own volume of
        // that name: an older plaintext instance using it keeps rendering
        // (the API refuses the name for new objects).
        if v.name == CONFIG_VOLUME || (tls_secret.is_some() && v.name == TLS_VOLUME) {
            return Err(RenderError::ReservedVolumeName(v.name.clone()));
        }
        volumes.push(PodVolume {
            name: v.name.clone(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: names::pvc(&v.name, instance),
                read_only: None,
            }),
            ..PodVolume::default()
        });
        for m in &v.mounts {
            mounts.push(PodVolumeMount {
                name: v.name.clone(),
                mount_path: mount_path::<C>(&v.name, m)?,
                sub_path: m.sub_path.clone(),
                ..PodVolumeMount::default()
            });
        }
    }
    volumes.push(PodVolume {
        name: CONFIG_VOLUME.to_owned(),
        config_map: Some(ConfigMapVolumeSource {
            name: names::config_map(instance),
            ..ConfigMapVolumeSource::default()
        }),
        ..PodVolume::default()
    });
    mounts.push(PodVolumeMount {
        name: CONFIG_VOLUME.to_owned(),
        mount_path: C::CONFIG_DIR.to_owned(),
        read_only: Some(true),
        ..PodVolumeMount::default()
    });
    if let Some(secret) = tls_secret {
        volumes.push(PodVolume {
            name: TLS_VOLUME.to_owned(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(secret.to_owned()),
                ..SecretVolumeSource::default()
            }),
            ..PodVolume::default()
        });
        // The whole directory, never a `subPath`: the kubelet then replaces
        // the files when the Secret is updated in place (a rotation), and the
        // member reads the new ones without a restart.
        mounts.push(PodVolumeMount {
            name: TLS_VOLUME.to_owned(),
            mount_path: C::TLS_DIR.to_owned(),
            read_only: Some(true),
            ..PodVolumeMount::default()
        });
    }
    Ok((volumes, mounts))
}

/// Pod volume name of the ConfigMap; no user volume may use it.
pub const CONFIG_VOLUME: &str = tikv_operator_api::rules::CONFIG_VOLUME_NAME;

/// Pod volume name of the TLS Secret of a member speaking TLS; no user
/// volume may use it.
pub const TLS_VOLUME: &str = tikv_operator_api::rules::TLS_VOLUME_NAME;

/// The instance's Pod: one container running [`Component::BINARY`] with the
/// configuration file, the named `ports`, ready once the port named
/// `ready_port` listens (no liveness probe: restarting a busy PD or TiKV
/// makes things worse); the user's overlays applied. `config_hash` (of the
/// rendered configuration) is recorded in [`labels::CONFIG_HASH`].
pub fn render_pod<C: Component>(
    i: &C::Instance,
    config_hash: &str,
    ports: &[(&str, i32)],
    ready_port: &str,
) -> Result<Pod, RenderError> {
    let p = parts::<C>(i)?;
    let spec = C::template(i);
    let tls_secret = instance_tls_secret::<C>(i)?;
    let (volumes, mounts) = volumes_and_mounts::<C>(spec, p.name, tls_secret.as_deref())?;
    let container = Container {
        name: C::CONTAINER.to_owned(),
        image: Some(image::<C>(spec)),
        command: Some(vec![C::BINARY.to_owned()]),
        args: Some(vec![format!(
            "--config={}/{}",
            C::CONFIG_DIR,
            C::CONFIG_FILE
        )]),
        ports: Some(
            ports
                .iter()
                .map(|(name, port)| ContainerPort {
                    name: Some((*name).to_owned()),
                    container_port: *port,
                    protocol: Some("TCP".to_owned()),
                    ..ContainerPort::default()
                })
                .collect(),
        ),
        resources: resources(spec),
        readiness_probe: Some(Probe {
            tcp_socket: Some(TCPSocketAction {
                port: IntOrString::String(ready_port.to_owned()),
                host: None,
            }),
            period_seconds: Some(5),
            ..Probe::default()
        }),
        volume_mounts: Some(mounts),
        // Test only: set by a hidden manager flag, never part of the revision.
        env: crate::test_hooks::extra_pod_env(),
        ..Container::default()
    };
    let pod_spec = PodSpec {
        hostname: Some(names::pod(p.name)),
        subdomain: Some(C::subdomain(i).to_owned()),
        node_selector: C::topology(i).cloned().filter(|t| !t.is_empty()),
        containers: vec![container],
        volumes: Some(volumes),
        termination_grace_period_seconds: C::TERMINATION_GRACE_PERIOD_SECONDS,
        ..PodSpec::default()
    };
    let pod_overlay = spec.overlay().and_then(|o| o.pod.as_ref());
    let pod_spec = match pod_overlay.and_then(|o| o.spec.as_ref()) {
        Some(o) => overlaid(&pod_spec, o)?,
        None => pod_spec,
    };
    Ok(Pod {
        metadata: pod_meta::<C>(
            i,
            &p,
            pod_overlay.and_then(|o| o.metadata.as_ref()),
            config_hash,
        ),
        spec: Some(pod_spec),
        status: None,
    })
}

/// The Pod's metadata: the instance's labels and annotations (template
/// metadata copied by the group), then the pod overlay's, then the
/// operator's labels win; the configuration hash, restart request and
/// version. No owner: the garbage collector must never delete a PD or TiKV
/// Pod (a `--cascade=foreground` delete of the instance or group would
/// otherwise remove it before its member left PD or its store is Tombstone,
/// safety rules 1 and 3). The instance's finalizer deletes it.
fn pod_meta<C: Component>(
    i: &C::Instance,
    p: &Parts<'_>,
    overlay: Option<&TemplateMeta>,
    config_hash: &str,
) -> ObjectMeta {
    let meta = i.meta();
    let mut user = TemplateMeta::default();
    if let Some(l) = &meta.labels {
        user.labels.extend(l.clone());
    }
    if let Some(a) = &meta.annotations {
        user.annotations.extend(
            a.iter()
                .filter(|(k, _)| !k.starts_with("core.tikv.org/"))
                .map(|(k, v)| (k.clone(), v.clone())),
        );
    }
    if let Some(m) = overlay {
        user.labels.extend(m.labels.clone());
        user.annotations.extend(m.annotations.clone());
    }
    let (labels, mut annotations) = with_user_meta(
        instance_labels::<C>(p.cluster, p.group, p.name),
        Some(&user),
    );
    annotations.insert(labels::CONFIG_HASH.to_owned(), config_hash.to_owned());
    if let Some(at) = restarted_at(meta) {
        annotations.insert(labels::RESTARTED_AT.to_owned(), at.clone());
    }
    annotations.insert(
        labels::VERSION.to_owned(),
        C::template(i).version().to_owned(),
    );
    ObjectMeta {
        name: Some(names::pod(p.name)),
        namespace: Some(p.namespace.to_owned()),
        labels: Some(labels),
        annotations: Some(annotations),
        owner_references: None,
        ..ObjectMeta::default()
    }
}

/// The objects of one instance as rendered now.
#[derive(Debug, Clone)]
pub struct Rendered {
    /// The ConfigMap holding the configuration file.
    pub config_map: ConfigMap,
    /// The PVCs.
    pub pvcs: Vec<PersistentVolumeClaim>,
    /// The Pod, its revision in the [`labels::INSTANCE_REVISION`] annotation.
    pub pod: Pod,
    /// The rendered Pod's revision.
    pub revision: PodRevision,
}

impl Rendered {
    /// Whether `running` runs this rendering (only labels, annotations or,
    /// under HotReload, the configuration may differ).
    pub fn runs(&self, running: Option<&Pod>) -> bool {
        self.revision.runs(running)
    }
}

/// Renders an instance's objects from its rendered configuration `config`:
/// the Pod (`pod`, given the configuration's hash) stamped with its revision
/// (from `inputs`; `running` is the Pod running now, if any), the ConfigMap
/// and the PVCs. A running Pod with another revision is outdated; see
/// [`crate::revision`] for what is recreated and what is changed in place.
pub fn render_instance_objects<C: Component>(
    i: &C::Instance,
    config: &str,
    pod: impl FnOnce(&str) -> Result<Pod, RenderError>,
    inputs: &RevisionInputs,
    running: Option<&Pod>,
) -> Result<Rendered, RenderError> {
    let config_hash = crate::content_hash(&serde_json::Value::String(config.to_owned()));
    let mut pod = pod(&config_hash)?;
    let hot_reload = C::template(i).hot_reload();
    let revision = PodRevision::stamp(&mut pod, inputs, hot_reload, running);
    Ok(Rendered {
        config_map: render_config_map::<C>(i, config)?,
        pvcs: render_pvcs::<C>(i)?,
        pod,
        revision,
    })
}
