//! Rendering the Kubernetes objects of a PDGroup and its PD instances.
//! Pure: objects in, objects out.
//!
//! Per instance: a ConfigMap (`pd.toml`: the user's TOML plus the keys the
//! operator owns), one PVC per volume, and a Pod running `/pd-server
//! --config=/etc/pd/pd.toml`. Per group: the headless peer Service (pod DNS
//! names, published before pods are ready so that initial members find each
//! other; joining members find the cluster through it) and the client
//! Service (ready members only; what clients use).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, PersistentVolumeClaim,
    PersistentVolumeClaimSpec, PersistentVolumeClaimVolumeSource, Pod, PodSpec, Probe,
    ResourceRequirements as K8sResources, Service, ServicePort, ServiceSpec, TCPSocketAction,
    Volume as PodVolume, VolumeMount as PodVolumeMount, VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::Resource;
use kube::api::ObjectMeta;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tikv_operator_api::common::{ObjectMeta as TemplateMeta, VolumeMountType};
use tikv_operator_api::rules::PD_OWNED_KEYS;
use tikv_operator_api::{ClusterReference, PD, PDGroup, PDSpec, PDTemplateSpec, labels, names};

use tikv_operator_core::revision::{self, RevisionInputs};

use crate::group::NewInstance;
use crate::reasons;

/// Name of the PD container.
pub const CONTAINER: &str = "pd";
/// Image used when the template names none.
pub const DEFAULT_IMAGE: &str = "pingcap/pd";
/// Default client port.
pub const DEFAULT_CLIENT_PORT: i32 = 2379;
/// Default peer port.
pub const DEFAULT_PEER_PORT: i32 = 2380;
/// Directory the ConfigMap is mounted at.
pub const CONFIG_DIR: &str = "/etc/pd";
/// Key of the configuration file in the ConfigMap.
pub const CONFIG_FILE: &str = "pd.toml";
/// Data directory when the `data` mount names no path.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/pd";
/// Pod volume name of the ConfigMap; no user volume may use it.
pub const CONFIG_VOLUME: &str = "config";

/// Why an instance cannot be rendered. Each is a user error reported in a
/// condition; nothing is applied for the instance until it is fixed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    /// `config` is not valid TOML.
    #[error("config is not valid TOML: {0}")]
    InvalidToml(String),
    /// `config` sets keys the operator owns.
    #[error("config sets keys the operator owns: {}; remove them, the operator sets them", .0.join(", "))]
    OwnedKeys(Vec<String>),
    /// A volume uses a name the operator reserves.
    #[error("volume name {0:?} is reserved by the operator")]
    ReservedVolumeName(String),
    /// A mount has neither a `type` nor a `mountPath`.
    #[error("a mount of volume {0:?} needs a type or a mountPath")]
    MountPathMissing(String),
    /// An overlay is not a valid partial object.
    #[error("overlay is invalid: {0}")]
    InvalidOverlay(String),
    /// The object lacks something the operator sets (e.g. the group label).
    #[error("{0}")]
    Incomplete(String),
}

impl RenderError {
    /// The condition reason for this error.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::InvalidToml(_) | Self::OwnedKeys(_) => reasons::INVALID_CONFIG,
            _ => reasons::INVALID_SPEC,
        }
    }
}

/// Client and peer ports of a PD template.
pub fn ports(spec: &PDTemplateSpec) -> (i32, i32) {
    let ports = spec.server.as_ref().and_then(|s| s.ports.as_ref());
    let client = ports
        .and_then(|p| p.client.as_ref())
        .map_or(DEFAULT_CLIENT_PORT, |p| p.port);
    let peer = ports
        .and_then(|p| p.peer.as_ref())
        .map_or(DEFAULT_PEER_PORT, |p| p.port);
    (client, peer)
}

/// The container image: `image` (default `pingcap/pd`) tagged with `version`
/// unless it carries a tag or digest already.
pub fn image(spec: &PDTemplateSpec) -> String {
    let image = spec.image.as_deref().unwrap_or(DEFAULT_IMAGE);
    let last = image.rsplit('/').next().unwrap_or(image);
    if image.contains('@') || last.contains(':') {
        image.to_owned()
    } else {
        format!("{image}:{}", spec.version)
    }
}

/// DNS name of a PD member's Pod: `<pod>.<peer service>.<namespace>.svc`.
pub fn member_host(instance: &str, subdomain: &str, namespace: &str) -> String {
    format!("{}.{subdomain}.{namespace}.svc", names::pod(instance))
}

/// URL clients reach a group's PD on: its client Service.
/// The client URL a PD instance advertises (`advertise-client-urls`).
pub fn member_client_url(pd: &PD) -> String {
    member_url(pd, ports(&pd.spec.template).0)
}

/// The peer URL a PD instance advertises (`advertise-peer-urls`).
pub fn member_peer_url(pd: &PD) -> String {
    member_url(pd, ports(&pd.spec.template).1)
}

fn member_url(pd: &PD, port: i32) -> String {
    let host = member_host(
        pd.metadata.name.as_deref().unwrap_or_default(),
        &pd.spec.subdomain,
        pd.metadata.namespace.as_deref().unwrap_or_default(),
    );
    format!("http://{host}:{port}")
}

/// The URL of a group's client Service.
pub fn client_service_url(group: &str, namespace: &str, client_port: i32) -> String {
    format!(
        "http://{}.{namespace}.svc:{client_port}",
        names::pd_client_service(group)
    )
}

/// Labels the operator puts on every object of a PD instance.
pub fn instance_labels(cluster: &str, group: &str, instance: &str) -> BTreeMap<String, String> {
    let mut l = group_selector(cluster, group);
    l.insert(labels::INSTANCE.to_owned(), instance.to_owned());
    l
}

/// Labels selecting every PD instance (and Pod) of a group.
pub fn group_selector(cluster: &str, group: &str) -> BTreeMap<String, String> {
    [
        (labels::MANAGED_BY, labels::MANAGED_BY_VALUE),
        (labels::COMPONENT, labels::COMPONENT_PD),
        (labels::CLUSTER, cluster),
        (labels::GROUP, group),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

/// The revision of a group's template: everything an instance is rendered
/// from (`spec.template`) plus a requested restart. `status.updateRevision`.
pub fn group_revision(group: &PDGroup) -> String {
    tikv_operator_core::content_hash(&group_revision_data(group))
}

/// What [`group_revision`] is computed from (kept in the group's revision history).
pub fn group_revision_data(group: &PDGroup) -> serde_json::Value {
    let restarted_at = group
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(labels::RESTARTED_AT));
    serde_json::json!({
        "template": serde_json::to_value(&group.spec.template).unwrap_or_default(),
        "restartedAt": restarted_at,
    })
}

/// [`group_selector`] in string form (`status.selector`, for the scale subresource).
pub fn selector_string(cluster: &str, group: &str) -> String {
    group_selector(cluster, group)
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

fn with_user_meta(
    operator: BTreeMap<String, String>,
    user: Option<&TemplateMeta>,
) -> (BTreeMap<String, String>, BTreeMap<String, String>) {
    let mut labels = user.map(|m| m.labels.clone()).unwrap_or_default();
    // Labels the operator sets win.
    labels.extend(operator);
    let annotations = user.map(|m| m.annotations.clone()).unwrap_or_default();
    (labels, annotations)
}

fn none_if_empty(m: BTreeMap<String, String>) -> Option<BTreeMap<String, String>> {
    (!m.is_empty()).then_some(m)
}

/// The PD instance object a group creates for `new`.
pub fn render_instance(group: &PDGroup, new: &NewInstance) -> PD {
    let group_name = group.metadata.name.clone().unwrap_or_default();
    let cluster = &group.spec.cluster.name;
    let template_meta = group.spec.template.metadata.as_ref();
    let (labels, mut annotations) = with_user_meta(
        instance_labels(cluster, &group_name, &new.name),
        template_meta,
    );
    annotations.insert(labels::TEMPLATE_REVISION.to_owned(), group_revision(group));
    // A rolling restart requested on the group reaches every instance, and
    // through it every Pod's revision: the group then restarts them the safe
    // way, one member at a time, the leader last.
    if let Some(at) = group
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(labels::RESTARTED_AT))
    {
        annotations.insert(labels::RESTARTED_AT.to_owned(), at.clone());
    }
    if let Some(members) = &new.bootstrap_members {
        annotations.insert(labels::PD_BOOTSTRAP_MEMBERS.to_owned(), members.join(","));
    }
    PD {
        metadata: ObjectMeta {
            name: Some(new.name.clone()),
            namespace: group.metadata.namespace.clone(),
            labels: Some(labels),
            annotations: none_if_empty(annotations),
            finalizers: Some(vec![labels::FINALIZER.to_owned()]),
            owner_references: group.controller_owner_ref(&()).map(|r| vec![r]),
            ..ObjectMeta::default()
        },
        spec: PDSpec {
            cluster: ClusterReference {
                name: cluster.clone(),
            },
            topology: new.topology.clone(),
            subdomain: names::pd_peer_service(&group_name),
            template: group.spec.template.spec.clone(),
        },
        status: None,
    }
}

/// What the revision of a PD instance's Pod is computed from (see
/// [`tikv_operator_core::revision`]): the template as far as it reaches the
/// Pod spec, topology and subdomain; the `config` text and the initial
/// members written into `pd.toml`; the restart request. Never the rendered
/// Pod: a new operator version that renders differently restarts nothing
/// unless it bumps the rendering generation.
pub fn revision_inputs(pd: &PD) -> RevisionInputs {
    let template = serde_json::to_value(&pd.spec.template).unwrap_or_default();
    RevisionInputs {
        spec: serde_json::json!({
            "template": revision::template_inputs(template),
            "topology": pd.spec.topology.as_ref().filter(|t| !t.is_empty()),
            "subdomain": pd.spec.subdomain,
        }),
        config: serde_json::json!({
            "config": pd.spec.template.config,
            "bootstrapMembers": bootstrap_members(pd),
        }),
        restarted_at: pd
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(labels::RESTARTED_AT))
            .cloned(),
    }
}

/// What rendering an instance needs beyond the PD object itself.
#[derive(Debug, Clone, Copy)]
struct Ctx<'a> {
    name: &'a str,
    namespace: &'a str,
    group: &'a str,
    cluster: &'a str,
}

fn ctx(pd: &PD) -> Result<Ctx<'_>, RenderError> {
    let m = &pd.metadata;
    let name = m
        .name
        .as_deref()
        .ok_or_else(|| RenderError::Incomplete("PD instance without a name".into()))?;
    let namespace = m
        .namespace
        .as_deref()
        .ok_or_else(|| RenderError::Incomplete("PD instance without a namespace".into()))?;
    let group = m
        .labels
        .as_ref()
        .and_then(|l| l.get(labels::GROUP))
        .map(String::as_str)
        .ok_or_else(|| {
            RenderError::Incomplete(format!(
                "PD instance {name} has no {} label; PD instances are created by their PDGroup",
                labels::GROUP
            ))
        })?;
    Ok(Ctx {
        name,
        namespace,
        group,
        cluster: &pd.spec.cluster.name,
    })
}

/// The container path of a mount.
fn mount_path(volume: &str, m: &tikv_operator_api::VolumeMount) -> Result<String, RenderError> {
    match (&m.mount_path, m.type_) {
        (Some(p), _) => Ok(p.clone()),
        (None, Some(VolumeMountType::Data)) => Ok(DEFAULT_DATA_DIR.to_owned()),
        (None, None) => Err(RenderError::MountPathMissing(volume.to_owned())),
    }
}

/// PD's data directory: the path of the first `type: data` mount, else of the
/// first mount of the volume named `data`, else the default.
pub fn data_dir(spec: &PDTemplateSpec) -> Result<String, RenderError> {
    for v in &spec.volumes {
        if let Some(m) = v
            .mounts
            .iter()
            .find(|m| m.type_ == Some(VolumeMountType::Data))
        {
            return mount_path(&v.name, m);
        }
    }
    match spec
        .volumes
        .iter()
        .find(|v| v.name == "data")
        .and_then(|v| v.mounts.first().map(|m| (v, m)))
    {
        Some((v, m)) => mount_path(&v.name, m),
        None => Ok(DEFAULT_DATA_DIR.to_owned()),
    }
}

/// The members listed in a bootstrap instance's [`labels::PD_BOOTSTRAP_MEMBERS`]
/// annotation; `None` for an instance that joins.
pub fn bootstrap_members(pd: &PD) -> Option<Vec<String>> {
    pd.metadata
        .annotations
        .as_ref()?
        .get(labels::PD_BOOTSTRAP_MEMBERS)
        .map(|v| {
            v.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect()
        })
}

/// The user's `config` of a template, parsed, without operator-owned keys
/// (see [`tikv_operator_core::config::user_table`]).
pub fn check_config(config: Option<&str>) -> Result<toml::Table, RenderError> {
    tikv_operator_core::config::user_table(config, &PD_OWNED_KEYS).map_err(|e| match e {
        tikv_operator_core::config::ConfigError::Toml(m) => RenderError::InvalidToml(m),
        tikv_operator_core::config::ConfigError::OwnedKeys(k) => RenderError::OwnedKeys(k),
    })
}

/// Renders `pd.toml`: the user's `config` with the operator-owned keys added.
/// A user setting an owned key is an error (never silently overridden).
pub fn render_config(pd: &PD) -> Result<String, RenderError> {
    let c = ctx(pd)?;
    let spec = &pd.spec.template;
    let mut table = check_config(spec.config.as_deref())?;

    let (client, peer) = ports(spec);
    let host = member_host(c.name, &pd.spec.subdomain, c.namespace);
    let mut owned: Vec<(&str, String)> = vec![
        ("name", c.name.to_owned()),
        ("data-dir", data_dir(spec)?),
        ("client-urls", format!("http://0.0.0.0:{client}")),
        ("peer-urls", format!("http://0.0.0.0:{peer}")),
        ("advertise-client-urls", format!("http://{host}:{client}")),
        ("advertise-peer-urls", format!("http://{host}:{peer}")),
    ];
    match bootstrap_members(pd) {
        Some(members) => {
            let initial = members
                .iter()
                .map(|m| {
                    format!(
                        "{m}=http://{}:{peer}",
                        member_host(m, &pd.spec.subdomain, c.namespace)
                    )
                })
                .collect::<Vec<_>>()
                .join(",");
            owned.push(("initial-cluster", initial));
            owned.push(("initial-cluster-state", "new".to_owned()));
        }
        // Join through the headless peer Service: its name resolves to every
        // member's Pod (no Service proxying needed), and it does not change
        // with membership, so the rendered config stays stable.
        None => owned.push((
            "join",
            format!("http://{}.{}.svc:{client}", pd.spec.subdomain, c.namespace),
        )),
    }
    for (k, v) in owned {
        table.insert(k.to_owned(), toml::Value::String(v));
    }
    toml::to_string(&table).map_err(|e| RenderError::InvalidToml(e.to_string()))
}

fn owner(pd: &PD) -> Option<Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference>> {
    pd.controller_owner_ref(&()).map(|r| vec![r])
}

/// The instance's ConfigMap holding `config` (from [`render_config`]).
pub fn render_config_map(pd: &PD, config: &str) -> Result<ConfigMap, RenderError> {
    let c = ctx(pd)?;
    Ok(ConfigMap {
        metadata: ObjectMeta {
            name: Some(names::config_map(c.name)),
            namespace: Some(c.namespace.to_owned()),
            labels: Some(instance_labels(c.cluster, c.group, c.name)),
            owner_references: owner(pd),
            ..ObjectMeta::default()
        },
        data: Some([(CONFIG_FILE.to_owned(), config.to_owned())].into()),
        ..ConfigMap::default()
    })
}

/// The instance's PVCs, one per volume, overlays applied.
pub fn render_pvcs(pd: &PD) -> Result<Vec<PersistentVolumeClaim>, RenderError> {
    let c = ctx(pd)?;
    let spec = &pd.spec.template;
    let overlay = spec.overlay.as_ref();
    spec.volumes
        .iter()
        .map(|v| {
            let mut labels = instance_labels(c.cluster, c.group, c.name);
            labels.insert(labels::VOLUME_NAME.to_owned(), v.name.clone());
            let pvc_overlay = overlay.and_then(|o| {
                o.volume_claims
                    .iter()
                    .find(|p| p.name == v.name)
                    .map(|p| &p.volume_claim)
            });
            let (labels, annotations) =
                with_user_meta(labels, pvc_overlay.and_then(|p| p.metadata.as_ref()));
            let spec = PersistentVolumeClaimSpec {
                access_modes: Some(vec!["ReadWriteOnce".to_owned()]),
                resources: Some(VolumeResourceRequirements {
                    requests: Some([("storage".to_owned(), v.storage.clone())].into()),
                    ..VolumeResourceRequirements::default()
                }),
                storage_class_name: v.storage_class_name.clone(),
                volume_attributes_class_name: v.volume_attributes_class_name.clone(),
                ..PersistentVolumeClaimSpec::default()
            };
            let spec = match pvc_overlay.and_then(|p| p.spec.as_ref()) {
                Some(o) => overlaid(&spec, o)?,
                None => spec,
            };
            Ok(PersistentVolumeClaim {
                metadata: ObjectMeta {
                    name: Some(names::pvc(&v.name, c.name)),
                    namespace: Some(c.namespace.to_owned()),
                    labels: Some(labels),
                    annotations: none_if_empty(annotations),
                    // No owner: only the instance's finalizer deletes a PD
                    // PVC, after the member left PD.
                    owner_references: None,
                    ..ObjectMeta::default()
                },
                spec: Some(spec),
                status: None,
            })
        })
        .collect()
}

fn resources(spec: &PDTemplateSpec) -> Option<K8sResources> {
    let r = spec.resources.as_ref()?;
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

/// The instance's Pod. `config_hash` (of the rendered `pd.toml`) is recorded
/// in the [`labels::CONFIG_HASH`] annotation.
pub fn render_pod(pd: &PD, config_hash: &str) -> Result<Pod, RenderError> {
    let c = ctx(pd)?;
    let spec = &pd.spec.template;
    let (client, peer) = ports(spec);

    let mut volumes = Vec::new();
    let mut mounts = Vec::new();
    for v in &spec.volumes {
        if v.name == CONFIG_VOLUME {
            return Err(RenderError::ReservedVolumeName(v.name.clone()));
        }
        volumes.push(PodVolume {
            name: v.name.clone(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: names::pvc(&v.name, c.name),
                read_only: None,
            }),
            ..PodVolume::default()
        });
        for m in &v.mounts {
            mounts.push(PodVolumeMount {
                name: v.name.clone(),
                mount_path: mount_path(&v.name, m)?,
                sub_path: m.sub_path.clone(),
                ..PodVolumeMount::default()
            });
        }
    }
    volumes.push(PodVolume {
        name: CONFIG_VOLUME.to_owned(),
        config_map: Some(ConfigMapVolumeSource {
            name: names::config_map(c.name),
            ..ConfigMapVolumeSource::default()
        }),
        ..PodVolume::default()
    });
    mounts.push(PodVolumeMount {
        name: CONFIG_VOLUME.to_owned(),
        mount_path: CONFIG_DIR.to_owned(),
        read_only: Some(true),
        ..PodVolumeMount::default()
    });

    let port = |name: &str, p: i32| ContainerPort {
        name: Some(name.to_owned()),
        container_port: p,
        protocol: Some("TCP".to_owned()),
        ..ContainerPort::default()
    };
    let container = Container {
        name: CONTAINER.to_owned(),
        image: Some(image(spec)),
        command: Some(vec!["/pd-server".to_owned()]),
        args: Some(vec![format!("--config={CONFIG_DIR}/{CONFIG_FILE}")]),
        ports: Some(vec![port("client", client), port("peer", peer)]),
        resources: resources(spec),
        // Ready once the client port listens (PD opens it after its embedded
        // etcd started). No liveness probe: restarting a PD that is slow
        // during an election makes things worse.
        readiness_probe: Some(Probe {
            tcp_socket: Some(TCPSocketAction {
                port: IntOrString::String("client".to_owned()),
                host: None,
            }),
            period_seconds: Some(5),
            ..Probe::default()
        }),
        volume_mounts: Some(mounts),
        // Test only: set by a hidden manager flag, never part of the revision.
        env: tikv_operator_core::test_hooks::extra_pod_env(),
        ..Container::default()
    };
    let pod_spec = PodSpec {
        hostname: Some(names::pod(c.name)),
        subdomain: Some(pd.spec.subdomain.clone()),
        node_selector: pd.spec.topology.clone().filter(|t| !t.is_empty()),
        containers: vec![container],
        volumes: Some(volumes),
        ..PodSpec::default()
    };
    let pod_overlay = spec.overlay.as_ref().and_then(|o| o.pod.as_ref());
    let pod_spec = match pod_overlay.and_then(|p| p.spec.as_ref()) {
        Some(o) => overlaid(&pod_spec, o)?,
        None => pod_spec,
    };

    // Instance labels/annotations (template metadata copied by the group),
    // then the pod overlay, then the operator's labels win.
    let mut user = TemplateMeta::default();
    if let Some(l) = &pd.metadata.labels {
        user.labels.extend(l.clone());
    }
    if let Some(a) = &pd.metadata.annotations {
        user.annotations.extend(
            a.iter()
                .filter(|(k, _)| !k.starts_with("core.tikv.org/"))
                .map(|(k, v)| (k.clone(), v.clone())),
        );
    }
    if let Some(m) = pod_overlay.and_then(|p| p.metadata.as_ref()) {
        user.labels.extend(m.labels.clone());
        user.annotations.extend(m.annotations.clone());
    }
    let (labels, mut annotations) =
        with_user_meta(instance_labels(c.cluster, c.group, c.name), Some(&user));
    annotations.insert(labels::CONFIG_HASH.to_owned(), config_hash.to_owned());
    if let Some(at) = pd
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(labels::RESTARTED_AT))
    {
        annotations.insert(labels::RESTARTED_AT.to_owned(), at.clone());
    }
    annotations.insert(labels::VERSION.to_owned(), spec.version.clone());

    Ok(Pod {
        metadata: ObjectMeta {
            name: Some(names::pod(c.name)),
            namespace: Some(c.namespace.to_owned()),
            labels: Some(labels),
            annotations: Some(annotations),
            // No owner: the garbage collector must never delete a PD Pod (a
            // `--cascade=foreground` delete of the instance or group would
            // otherwise remove it before its member left PD, safety rule 3).
            // The instance's finalizer deletes it.
            owner_references: None,
            ..ObjectMeta::default()
        },
        spec: Some(pod_spec),
        status: None,
    })
}

fn group_parts(group: &PDGroup) -> Result<(String, String), RenderError> {
    let name = group
        .metadata
        .name
        .clone()
        .ok_or_else(|| RenderError::Incomplete("PDGroup without a name".into()))?;
    let ns = group
        .metadata
        .namespace
        .clone()
        .ok_or_else(|| RenderError::Incomplete("PDGroup without a namespace".into()))?;
    Ok((name, ns))
}

fn service_port(name: &str, port: i32) -> ServicePort {
    ServicePort {
        name: Some(name.to_owned()),
        port,
        target_port: Some(IntOrString::String(name.to_owned())),
        protocol: Some("TCP".to_owned()),
        ..ServicePort::default()
    }
}

/// The group's headless peer Service. Not-ready addresses are published: the
/// initial members must resolve each other before any of them is ready.
pub fn render_peer_service(group: &PDGroup) -> Result<Service, RenderError> {
    let (name, ns) = group_parts(group)?;
    let cluster = &group.spec.cluster.name;
    let (client, peer) = ports(&group.spec.template.spec);
    Ok(Service {
        metadata: ObjectMeta {
            name: Some(names::pd_peer_service(&name)),
            namespace: Some(ns),
            labels: Some(group_selector(cluster, &name)),
            owner_references: group.controller_owner_ref(&()).map(|r| vec![r]),
            ..ObjectMeta::default()
        },
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".to_owned()),
            publish_not_ready_addresses: Some(true),
            selector: Some(group_selector(cluster, &name)),
            ports: Some(vec![
                service_port("client", client),
                service_port("peer", peer),
            ]),
            ..ServiceSpec::default()
        }),
        status: None,
    })
}

/// The group's client Service (ready members only).
pub fn render_client_service(group: &PDGroup) -> Result<Service, RenderError> {
    let (name, ns) = group_parts(group)?;
    let cluster = &group.spec.cluster.name;
    let (client, _) = ports(&group.spec.template.spec);
    Ok(Service {
        metadata: ObjectMeta {
            name: Some(names::pd_client_service(&name)),
            namespace: Some(ns),
            labels: Some(group_selector(cluster, &name)),
            owner_references: group.controller_owner_ref(&()).map(|r| vec![r]),
            ..ObjectMeta::default()
        },
        spec: Some(ServiceSpec {
            selector: Some(group_selector(cluster, &name)),
            ports: Some(vec![service_port("client", client)]),
            ..ServiceSpec::default()
        }),
        status: None,
    })
}

/// `base` with the partial object `overlay` merged in (see [`merge_overlay`]).
fn overlaid<T: Serialize + DeserializeOwned>(base: &T, overlay: &Value) -> Result<T, RenderError> {
    let mut v =
        serde_json::to_value(base).map_err(|e| RenderError::InvalidOverlay(e.to_string()))?;
    merge_overlay(&mut v, overlay);
    serde_json::from_value(v).map_err(|e| RenderError::InvalidOverlay(e.to_string()))
}

/// Merges `overlay` into `base`: objects merge key by key, `null` removes a
/// key, lists whose items all have a `name` merge item by item (new names are
/// appended), other lists and scalars are replaced.
pub fn merge_overlay(base: &mut Value, overlay: &Value) {
    match (base, overlay) {
        (Value::Object(b), Value::Object(o)) => {
            for (k, ov) in o {
                if ov.is_null() {
                    b.remove(k);
                } else if let Some(bv) = b.get_mut(k) {
                    merge_overlay(bv, ov);
                } else {
                    b.insert(k.clone(), ov.clone());
                }
            }
        }
        (Value::Array(b), Value::Array(o)) if all_named(b) && all_named(o) => {
            for item in o {
                let name = item.get("name");
                match b.iter_mut().find(|x| x.get("name") == name) {
                    Some(existing) => merge_overlay(existing, item),
                    None => b.push(item.clone()),
                }
            }
        }
        (b, o) => *b = o.clone(),
    }
}

fn all_named(items: &[Value]) -> bool {
    items
        .iter()
        .all(|i| i.get("name").is_some_and(Value::is_string))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    fn group() -> PDGroup {
        serde_json::from_value(json!({
            "apiVersion": "core.tikv.org/v1alpha1",
            "kind": "PDGroup",
            "metadata": {"name": "pd", "namespace": "ns", "uid": "g-uid"},
            "spec": {
                "cluster": {"name": "basic"},
                "replicas": 3,
                "template": {
                    "metadata": {"labels": {"team": "db"}, "annotations": {"note": "x"}},
                    "spec": {
                        "version": "v8.5.5",
                        "resources": {"cpu": "1", "memory": "2Gi"},
                        "config": "[replication]\nmax-replicas = 3\n",
                        "volumes": [{"name": "data", "mounts": [{"type": "data"}], "storage": "10Gi"}]
                    }
                }
            }
        }))
        .unwrap()
    }

    fn instance(bootstrap: bool) -> PD {
        let new = NewInstance {
            name: "pd-abc123".into(),
            topology: Some([("topology.kubernetes.io/zone".to_owned(), "a".to_owned())].into()),
            bootstrap_members: bootstrap
                .then(|| vec!["pd-abc123".into(), "pd-def456".into(), "pd-ghi789".into()]),
        };
        let mut pd = render_instance(&group(), &new);
        pd.metadata.uid = Some("i-uid".into());
        pd
    }

    #[test]
    fn instance_objects_carry_identity_and_bootstrap_decision() {
        let pd = instance(true);
        let l = pd.metadata.labels.as_ref().unwrap();
        assert_eq!(l[labels::GROUP], "pd");
        assert_eq!(l[labels::CLUSTER], "basic");
        assert_eq!(l[labels::INSTANCE], "pd-abc123");
        assert_eq!(l[labels::COMPONENT], "pd");
        assert_eq!(l["team"], "db");
        assert_eq!(pd.spec.subdomain, "pd-pd-peer");
        assert_eq!(
            pd.metadata.finalizers.as_deref(),
            Some(&[labels::FINALIZER.to_owned()][..])
        );
        let owner = &pd.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str()),
            ("PDGroup", "g-uid")
        );
        assert_eq!(bootstrap_members(&pd).unwrap().len(), 3);
        assert_eq!(bootstrap_members(&instance(false)), None);
    }

    #[test]
    fn bootstrap_members_start_with_initial_cluster_later_ones_join() {
        let cfg: toml::Table = render_config(&instance(true)).unwrap().parse().unwrap();
        assert_eq!(cfg["name"].as_str(), Some("pd-abc123"));
        assert_eq!(cfg["data-dir"].as_str(), Some("/var/lib/pd"));
        assert_eq!(
            cfg["advertise-peer-urls"].as_str(),
            Some("http://pd-abc123.pd-pd-peer.ns.svc:2380")
        );
        assert_eq!(
            cfg["advertise-client-urls"].as_str(),
            Some("http://pd-abc123.pd-pd-peer.ns.svc:2379")
        );
        assert_eq!(cfg["client-urls"].as_str(), Some("http://0.0.0.0:2379"));
        assert_eq!(
            cfg["initial-cluster"].as_str(),
            Some(
                "pd-abc123=http://pd-abc123.pd-pd-peer.ns.svc:2380,\
                 pd-def456=http://pd-def456.pd-pd-peer.ns.svc:2380,\
                 pd-ghi789=http://pd-ghi789.pd-pd-peer.ns.svc:2380"
            )
        );
        assert_eq!(cfg["initial-cluster-state"].as_str(), Some("new"));
        assert!(!cfg.contains_key("join"));
        // The user's settings survive.
        assert_eq!(cfg["replication"]["max-replicas"].as_integer(), Some(3));

        let cfg: toml::Table = render_config(&instance(false)).unwrap().parse().unwrap();
        assert_eq!(cfg["join"].as_str(), Some("http://pd-pd-peer.ns.svc:2379"));
        assert!(!cfg.contains_key("initial-cluster"));
    }

    #[test]
    fn a_user_setting_an_owned_key_is_an_error_not_an_override() {
        for config in [
            "name = \"mine\"\n",
            "join = \"http://elsewhere:2379\"\n[log]\nlevel = \"info\"\n",
            "data-dir = \"/tmp\"\nclient-urls = \"http://1.2.3.4:1\"\n",
        ] {
            let mut pd = instance(false);
            pd.spec.template.config = Some(config.to_owned());
            let err = render_config(&pd).unwrap_err();
            assert!(matches!(err, RenderError::OwnedKeys(_)), "{config}: {err}");
            assert_eq!(err.reason(), reasons::INVALID_CONFIG);
        }
        let mut pd = instance(false);
        pd.spec.template.config = Some("data-dir = \"/tmp\"\nclient-urls = \"x\"\n".into());
        assert_eq!(
            render_config(&pd).unwrap_err(),
            RenderError::OwnedKeys(vec!["data-dir".into(), "client-urls".into()])
        );
        pd.spec.template.config = Some("[log\nlevel=".into());
        assert!(matches!(
            render_config(&pd).unwrap_err(),
            RenderError::InvalidToml(_)
        ));
    }

    #[test]
    fn ports_and_data_dir_follow_the_spec() {
        let mut pd = instance(false);
        pd.spec.template.server = Some(
            serde_json::from_value(
                json!({"ports": {"client": {"port": 3379}, "peer": {"port": 3380}}}),
            )
            .unwrap(),
        );
        pd.spec.template.volumes[0].mounts[0].mount_path = Some("/data".into());
        let cfg: toml::Table = render_config(&pd).unwrap().parse().unwrap();
        assert_eq!(cfg["data-dir"].as_str(), Some("/data"));
        assert_eq!(cfg["peer-urls"].as_str(), Some("http://0.0.0.0:3380"));
        assert_eq!(cfg["join"].as_str(), Some("http://pd-pd-peer.ns.svc:3379"));
        let pod = render_pod(&pd, "h").unwrap();
        let c = &pod.spec.as_ref().unwrap().containers[0];
        let ports: Vec<i32> = c
            .ports
            .as_ref()
            .unwrap()
            .iter()
            .map(|p| p.container_port)
            .collect();
        assert_eq!(ports, [3379, 3380]);
        let mounts = c.volume_mounts.as_ref().unwrap();
        assert!(
            mounts
                .iter()
                .any(|m| m.name == "data" && m.mount_path == "/data")
        );
    }

    #[test]
    fn pod_runs_pd_server_with_identity_storage_and_resources() {
        let pd = instance(true);
        let pod = render_pod(&pd, "cafe").unwrap();
        assert_eq!(pod.metadata.name.as_deref(), Some("pd-abc123"));
        let ann = pod.metadata.annotations.as_ref().unwrap();
        assert_eq!(ann[labels::CONFIG_HASH], "cafe");
        assert_eq!(ann["note"], "x");
        assert!(!ann.contains_key(labels::PD_BOOTSTRAP_MEMBERS));
        assert_eq!(
            pod.metadata.labels.as_ref().unwrap()[labels::MANAGED_BY],
            "tikv-operator"
        );
        let spec = pod.spec.as_ref().unwrap();
        assert_eq!(spec.hostname.as_deref(), Some("pd-abc123"));
        assert_eq!(spec.subdomain.as_deref(), Some("pd-pd-peer"));
        assert_eq!(
            spec.node_selector.as_ref().unwrap()["topology.kubernetes.io/zone"],
            "a"
        );
        let c = &spec.containers[0];
        assert_eq!(c.name, "pd");
        assert_eq!(c.image.as_deref(), Some("pingcap/pd:v8.5.5"));
        assert_eq!(c.command.as_deref(), Some(&["/pd-server".to_owned()][..]));
        assert_eq!(
            c.args.as_deref(),
            Some(&["--config=/etc/pd/pd.toml".to_owned()][..])
        );
        let r = c.resources.as_ref().unwrap();
        assert_eq!(r.requests, r.limits);
        assert_eq!(r.limits.as_ref().unwrap()["memory"], Quantity("2Gi".into()));
        assert!(c.readiness_probe.is_some());
        assert!(c.liveness_probe.is_none());
        let vols = spec.volumes.as_ref().unwrap();
        let data = vols.iter().find(|v| v.name == "data").unwrap();
        assert_eq!(
            data.persistent_volume_claim.as_ref().unwrap().claim_name,
            "data-pd-abc123"
        );
        let cfg = vols.iter().find(|v| v.name == CONFIG_VOLUME).unwrap();
        assert_eq!(cfg.config_map.as_ref().unwrap().name, "pd-abc123");
        // Safety rule 3: no owner, so the garbage collector (a foreground
        // delete of the instance or group) never deletes the Pod.
        assert!(pod.metadata.owner_references.is_none());
    }

    #[test]
    fn pvcs_and_config_map_are_named_and_labelled() {
        let pd = instance(false);
        let pvcs = render_pvcs(&pd).unwrap();
        assert_eq!(pvcs.len(), 1);
        assert_eq!(pvcs[0].metadata.name.as_deref(), Some("data-pd-abc123"));
        assert_eq!(
            pvcs[0].metadata.labels.as_ref().unwrap()[labels::VOLUME_NAME],
            "data"
        );
        let spec = pvcs[0].spec.as_ref().unwrap();
        assert_eq!(
            spec.resources.as_ref().unwrap().requests.as_ref().unwrap()["storage"],
            Quantity("10Gi".into())
        );
        let cm = render_config_map(&pd, "x = 1\n").unwrap();
        assert_eq!(cm.metadata.name.as_deref(), Some("pd-abc123"));
        assert_eq!(cm.data.as_ref().unwrap()[CONFIG_FILE], "x = 1\n");
    }

    #[test]
    fn overlays_apply_last_and_merge_named_lists() {
        let mut pd = instance(false);
        pd.spec.template.overlay = Some(
            serde_json::from_value(json!({
                "pod": {
                    "metadata": {"labels": {"extra": "1", "app.kubernetes.io/managed-by": "me"}},
                    "spec": {
                        "containers": [{"name": "pd", "env": [{"name": "A", "value": "b"}]},
                                       {"name": "sidecar", "image": "busybox"}],
                        "tolerations": [{"key": "k", "operator": "Exists"}]
                    }
                },
                "volumeClaims": [{"name": "data", "volumeClaim": {
                    "metadata": {"annotations": {"snap": "yes"}},
                    "spec": {"accessModes": ["ReadWriteOncePod"]}
                }}]
            }))
            .unwrap(),
        );
        let pod = render_pod(&pd, "h").unwrap();
        let spec = pod.spec.as_ref().unwrap();
        assert_eq!(spec.containers.len(), 2);
        assert_eq!(
            spec.containers[0].image.as_deref(),
            Some("pingcap/pd:v8.5.5")
        );
        assert_eq!(spec.containers[0].env.as_ref().unwrap()[0].name, "A");
        assert_eq!(spec.tolerations.as_ref().unwrap().len(), 1);
        let l = pod.metadata.labels.as_ref().unwrap();
        assert_eq!(l["extra"], "1");
        assert_eq!(l[labels::MANAGED_BY], "tikv-operator");
        let pvc = &render_pvcs(&pd).unwrap()[0];
        assert_eq!(pvc.metadata.annotations.as_ref().unwrap()["snap"], "yes");
        assert_eq!(
            pvc.spec.as_ref().unwrap().access_modes.as_deref(),
            Some(&["ReadWriteOncePod".to_owned()][..])
        );

        let mut bad = instance(false);
        bad.spec.template.overlay =
            Some(serde_json::from_value(json!({"pod": {"spec": {"containers": "nope"}}})).unwrap());
        assert!(matches!(
            render_pod(&bad, "h"),
            Err(RenderError::InvalidOverlay(_))
        ));
    }

    #[test]
    fn reserved_volume_names_and_missing_labels_are_errors() {
        let mut pd = instance(false);
        let mut v = pd.spec.template.volumes[0].clone();
        v.name = CONFIG_VOLUME.into();
        v.mounts[0].type_ = None;
        v.mounts[0].mount_path = Some("/x".into());
        pd.spec.template.volumes.push(v);
        assert_eq!(
            render_pod(&pd, "h").unwrap_err(),
            RenderError::ReservedVolumeName("config".into())
        );
        let mut orphan = instance(false);
        orphan.metadata.labels = None;
        assert!(matches!(
            render_config(&orphan),
            Err(RenderError::Incomplete(_))
        ));
    }

    #[test]
    fn images_get_the_version_tag_unless_pinned() {
        let mut spec = instance(false).spec.template;
        assert_eq!(image(&spec), "pingcap/pd:v8.5.5");
        spec.image = Some("registry:5000/pd".into());
        assert_eq!(image(&spec), "registry:5000/pd:v8.5.5");
        spec.image = Some("registry:5000/pd:nightly".into());
        assert_eq!(image(&spec), "registry:5000/pd:nightly");
        spec.image = Some("pd@sha256:abc".into());
        assert_eq!(image(&spec), "pd@sha256:abc");
    }

    #[test]
    fn services_select_the_group_and_publish_peers_early() {
        let g = group();
        let peer = render_peer_service(&g).unwrap();
        assert_eq!(peer.metadata.name.as_deref(), Some("pd-pd-peer"));
        let s = peer.spec.as_ref().unwrap();
        assert_eq!(s.cluster_ip.as_deref(), Some("None"));
        assert_eq!(s.publish_not_ready_addresses, Some(true));
        assert_eq!(s.selector.as_ref().unwrap()[labels::GROUP], "pd");
        assert_eq!(s.ports.as_ref().unwrap().len(), 2);
        let client = render_client_service(&g).unwrap();
        assert_eq!(client.metadata.name.as_deref(), Some("pd-pd"));
        let s = client.spec.as_ref().unwrap();
        assert_eq!(s.cluster_ip, None);
        assert_eq!(s.publish_not_ready_addresses, None);
        assert_eq!(s.ports.as_ref().unwrap()[0].port, 2379);
        assert_eq!(
            selector_string("basic", "pd"),
            "app.kubernetes.io/component=pd,app.kubernetes.io/managed-by=tikv-operator,core.tikv.org/cluster=basic,core.tikv.org/group=pd"
        );
    }
}
