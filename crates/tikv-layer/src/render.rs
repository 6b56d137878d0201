//! Rendering the Kubernetes objects of a TiKVGroup and its TiKV instances.
//! Pure: objects in, objects out.
//!
//! Per instance: a ConfigMap (`tikv.toml`: the user's TOML plus the keys the
//! operator owns), one PVC per volume, and a Pod running `/tikv-server
//! --config=/etc/tikv/tikv.toml`. Per group: the headless peer Service
//! `<group>-tikv-peer` that gives every Pod its DNS name
//! `<pod>.<group>-tikv-peer.<namespace>.svc` (the store's advertised address).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, PersistentVolumeClaim,
    PersistentVolumeClaimSpec, PersistentVolumeClaimVolumeSource, Pod, PodSpec, Probe,
    ResourceRequirements as K8sResources, Service, ServicePort, ServiceSpec, TCPSocketAction,
    Volume as PodVolume, VolumeMount as PodVolumeMount, VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::Resource;
use kube::api::ObjectMeta;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tikv_operator_api::common::{ObjectMeta as TemplateMeta, VolumeMountType};
use tikv_operator_api::rules::TIKV_OWNED_KEYS;
use tikv_operator_api::{
    ClusterReference, TiKV, TiKVGroup, TiKVSpec, TiKVTemplateSpec, labels, names,
};
use tikv_operator_pd_layer::render::merge_overlay;

use tikv_operator_core::revision::{self, RevisionInputs};

use crate::group::NewInstance;
use crate::reasons;

/// Name of the TiKV container.
pub const CONTAINER: &str = "tikv";
/// Image used when the template names none.
pub const DEFAULT_IMAGE: &str = "pingcap/tikv";
/// Default client (gRPC) port.
pub const DEFAULT_CLIENT_PORT: i32 = 20160;
/// Default status (HTTP) port.
pub const DEFAULT_STATUS_PORT: i32 = 20180;
/// Directory the ConfigMap is mounted at.
pub const CONFIG_DIR: &str = "/etc/tikv";
/// Key of the configuration file in the ConfigMap.
pub const CONFIG_FILE: &str = "tikv.toml";
/// Data directory when the `data` mount names no path.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/tikv";
/// Pod volume name of the ConfigMap; no user volume may use it.
pub const CONFIG_VOLUME: &str = "config";

/// Why an instance cannot be rendered. Each is reported in a condition;
/// nothing is applied for the instance until it is fixed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    /// `config` is not valid TOML.
    #[error("config is not valid TOML: {0}")]
    InvalidToml(String),
    /// `config` sets keys the operator owns.
    #[error("config sets keys the operator owns: {}; remove them, the operator sets them (store labels go in spec.server.labels)", .0.join(", "))]
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
            Self::InvalidToml(_) | Self::OwnedKeys(_) => reasons::INVALID_CONFIG,
            Self::NoPd => reasons::WAITING_FOR_PD,
            _ => reasons::INVALID_SPEC,
        }
    }
}

/// Client and status ports of a TiKV template.
pub fn ports(spec: &TiKVTemplateSpec) -> (i32, i32) {
    let ports = spec.server.as_ref().and_then(|s| s.ports.as_ref());
    let client = ports
        .and_then(|p| p.client.as_ref())
        .map_or(DEFAULT_CLIENT_PORT, |p| p.port);
    let status = ports
        .and_then(|p| p.status.as_ref())
        .map_or(DEFAULT_STATUS_PORT, |p| p.port);
    (client, status)
}

/// The container image: `image` (default `pingcap/tikv`) tagged with
/// `version` unless it carries a tag or digest already.
pub fn image(spec: &TiKVTemplateSpec) -> String {
    let image = spec.image.as_deref().unwrap_or(DEFAULT_IMAGE);
    let last = image.rsplit('/').next().unwrap_or(image);
    if image.contains('@') || last.contains(':') {
        image.to_owned()
    } else {
        format!("{image}:{}", spec.version)
    }
}

/// DNS name of a TiKV Pod: `<pod>.<peer service>.<namespace>.svc`.
pub fn store_host(instance: &str, subdomain: &str, namespace: &str) -> String {
    format!("{}.{subdomain}.{namespace}.svc", names::pod(instance))
}

/// The address a TiKV instance's store advertises (how PD knows it).
pub fn store_address(kv: &TiKV) -> String {
    let (client, _) = ports(&kv.spec.template);
    format!(
        "{}:{client}",
        store_host(
            kv.metadata.name.as_deref().unwrap_or_default(),
            &kv.spec.subdomain,
            kv.metadata.namespace.as_deref().unwrap_or_default()
        )
    )
}

/// The TiKV instance a store address belongs to, as `(namespace, instance)`:
/// the inverse of [`store_address`] (`<instance>.<group>-tikv-peer.<namespace>.svc:<port>`).
/// `None` for addresses the operator did not render. For the controller:
/// it maps a PD store that changed (see `PdSnapshot::changed_stores`) to the
/// TiKV object to wake, before the instance recorded the store id.
pub fn instance_of_store_address(address: &str) -> Option<(String, String)> {
    let host = address.rsplit_once(':').map_or(address, |(h, _)| h);
    let mut parts = host.split('.');
    let (instance, subdomain, namespace, svc) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let peer_suffix = names::tikv_peer_service("");
    (parts.next().is_none()
        && svc == "svc"
        && subdomain.ends_with(&peer_suffix)
        && !instance.is_empty()
        && !namespace.is_empty())
    .then(|| (namespace.to_owned(), instance.to_owned()))
}

/// Labels selecting every TiKV instance (and Pod) of a group.
pub fn group_selector(cluster: &str, group: &str) -> BTreeMap<String, String> {
    [
        (labels::MANAGED_BY, labels::MANAGED_BY_VALUE),
        (labels::COMPONENT, labels::COMPONENT_TIKV),
        (labels::CLUSTER, cluster),
        (labels::GROUP, group),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

/// Labels the operator puts on every object of a TiKV instance.
pub fn instance_labels(cluster: &str, group: &str, instance: &str) -> BTreeMap<String, String> {
    let mut l = group_selector(cluster, group);
    l.insert(labels::INSTANCE.to_owned(), instance.to_owned());
    l
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
    labels.extend(operator);
    let annotations = user.map(|m| m.annotations.clone()).unwrap_or_default();
    (labels, annotations)
}

fn none_if_empty(m: BTreeMap<String, String>) -> Option<BTreeMap<String, String>> {
    (!m.is_empty()).then_some(m)
}

/// The revision of a group's template and restart request
/// (`status.updateRevision`); instances carry it in
/// [`labels::TEMPLATE_REVISION`].
pub fn group_revision(group: &TiKVGroup) -> String {
    tikv_operator_core::content_hash(&group_revision_data(group))
}

/// What [`group_revision`] is computed from (kept in the group's revision history).
pub fn group_revision_data(group: &TiKVGroup) -> serde_json::Value {
    serde_json::json!({
        "template": serde_json::to_value(&group.spec.template).unwrap_or_default(),
        "restartedAt": restarted_at(&group.metadata),
    })
}

fn restarted_at(meta: &ObjectMeta) -> Option<&String> {
    meta.annotations.as_ref()?.get(labels::RESTARTED_AT)
}

/// The TiKV instance object a group creates (or re-applies) for `new`, with
/// `offline` as given (the group's scale-in decision). It carries the
/// group's template revision and restart request; the restart grant
/// ([`labels::RESTART_ALLOWED`]) is added by the caller.
pub fn render_instance(group: &TiKVGroup, new: &NewInstance, offline: bool) -> TiKV {
    let group_name = group.metadata.name.clone().unwrap_or_default();
    let cluster = &group.spec.cluster.name;
    let (labels, mut annotations) = with_user_meta(
        instance_labels(cluster, &group_name, &new.name),
        group.spec.template.metadata.as_ref(),
    );
    annotations.insert(labels::TEMPLATE_REVISION.to_owned(), group_revision(group));
    // A rolling restart requested on the group reaches every instance and,
    // through it, every Pod's revision; the group grants the restarts one
    // disruption budget at a time.
    if let Some(at) = restarted_at(&group.metadata) {
        annotations.insert(labels::RESTARTED_AT.to_owned(), at.clone());
    }
    TiKV {
        metadata: ObjectMeta {
            name: Some(new.name.clone()),
            namespace: group.metadata.namespace.clone(),
            labels: Some(labels),
            annotations: none_if_empty(annotations),
            finalizers: Some(vec![labels::FINALIZER.to_owned()]),
            owner_references: group.controller_owner_ref(&()).map(|r| vec![r]),
            ..ObjectMeta::default()
        },
        spec: TiKVSpec {
            cluster: ClusterReference {
                name: cluster.clone(),
            },
            topology: new.topology.clone(),
            subdomain: names::tikv_peer_service(&group_name),
            offline,
            template: group.spec.template.spec.clone(),
        },
        status: None,
    }
}

/// What the revision of a TiKV instance's Pod is computed from (see
/// [`tikv_operator_core::revision`]): the template as far as it reaches the
/// Pod spec, topology and subdomain; the `config` text, the store labels
/// (`spec.server.labels`) and `pd_url`, all written into `tikv.toml`; the
/// restart request. Never the rendered Pod, nor `offline`: a new operator
/// version that renders differently restarts nothing unless it bumps the
/// rendering generation.
pub fn revision_inputs(kv: &TiKV, pd_url: Option<&str>) -> RevisionInputs {
    let mut template =
        revision::template_inputs(serde_json::to_value(&kv.spec.template).unwrap_or_default());
    // Store labels reach only the config file (and PD, online).
    if let Some(t) = template.as_object_mut() {
        if let Some(server) = t.get_mut("server").and_then(Value::as_object_mut) {
            server.remove("labels");
        }
        revision::remove_if_empty(t, "server");
    }
    RevisionInputs {
        spec: serde_json::json!({
            "template": template,
            "topology": kv.spec.topology.as_ref().filter(|t| !t.is_empty()),
            "subdomain": kv.spec.subdomain,
        }),
        config: serde_json::json!({
            "config": kv.spec.template.config,
            "storeLabels": kv
                .spec
                .template
                .server
                .as_ref()
                .map(|s| &s.labels)
                .filter(|l| !l.is_empty()),
            "pdUrl": pd_url,
        }),
        restarted_at: restarted_at(&kv.metadata).cloned(),
    }
}

#[derive(Debug, Clone, Copy)]
struct Parts<'a> {
    name: &'a str,
    namespace: &'a str,
    group: &'a str,
    cluster: &'a str,
}

fn parts(kv: &TiKV) -> Result<Parts<'_>, RenderError> {
    let m = &kv.metadata;
    let name = m
        .name
        .as_deref()
        .ok_or_else(|| RenderError::Incomplete("TiKV instance without a name".into()))?;
    let namespace = m
        .namespace
        .as_deref()
        .ok_or_else(|| RenderError::Incomplete("TiKV instance without a namespace".into()))?;
    let group = m
        .labels
        .as_ref()
        .and_then(|l| l.get(labels::GROUP))
        .map(String::as_str)
        .ok_or_else(|| {
            RenderError::Incomplete(format!(
                "TiKV instance {name} has no {} label; TiKV instances are created by their TiKVGroup",
                labels::GROUP
            ))
        })?;
    Ok(Parts {
        name,
        namespace,
        group,
        cluster: &kv.spec.cluster.name,
    })
}

fn mount_path(volume: &str, m: &tikv_operator_api::VolumeMount) -> Result<String, RenderError> {
    match (&m.mount_path, m.type_) {
        (Some(p), _) => Ok(p.clone()),
        (None, Some(VolumeMountType::Data)) => Ok(DEFAULT_DATA_DIR.to_owned()),
        (None, None) => Err(RenderError::MountPathMissing(volume.to_owned())),
    }
}

/// TiKV's data directory: the path of the first `type: data` mount, else of
/// the first mount of the volume named `data`, else the default.
pub fn data_dir(spec: &TiKVTemplateSpec) -> Result<String, RenderError> {
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

/// The user's `config` of a template, parsed, without operator-owned keys
/// (see [`tikv_operator_core::config::user_table`]).
pub fn check_config(config: Option<&str>) -> Result<toml::Table, RenderError> {
    tikv_operator_core::config::user_table(config, &TIKV_OWNED_KEYS).map_err(|e| match e {
        tikv_operator_core::config::ConfigError::Toml(m) => RenderError::InvalidToml(m),
        tikv_operator_core::config::ConfigError::OwnedKeys(k) => RenderError::OwnedKeys(k),
    })
}

/// Renders `tikv.toml`: the user's `config` with the operator-owned keys
/// added (`server.addr`, `server.advertise-addr`, `server.status-addr`,
/// `server.advertise-status-addr`, `server.labels` from `spec.server.labels`,
/// `storage.data-dir`, `pd.endpoints` = `pd_url`). A user setting an owned
/// key is an error, never silently overridden.
pub fn render_config(kv: &TiKV, pd_url: Option<&str>) -> Result<String, RenderError> {
    let p = parts(kv)?;
    let spec = &kv.spec.template;
    let mut table = check_config(spec.config.as_deref())?;
    let pd_url = pd_url.filter(|u| !u.is_empty()).ok_or(RenderError::NoPd)?;

    let (client, status) = ports(spec);
    let host = store_host(p.name, &kv.spec.subdomain, p.namespace);
    let store_labels: toml::Table = spec
        .server
        .as_ref()
        .map(|s| {
            s.labels
                .iter()
                .map(|(k, v)| (k.clone(), toml::Value::String(v.clone())))
                .collect()
        })
        .unwrap_or_default();
    let mut set = |section: &str, key: &str, value: toml::Value| {
        if let toml::Value::Table(t) = table
            .entry(section.to_owned())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()))
        {
            t.insert(key.to_owned(), value);
        }
    };
    let s = |v: String| toml::Value::String(v);
    set("server", "addr", s(format!("0.0.0.0:{client}")));
    set("server", "advertise-addr", s(format!("{host}:{client}")));
    set("server", "status-addr", s(format!("0.0.0.0:{status}")));
    set(
        "server",
        "advertise-status-addr",
        s(format!("{host}:{status}")),
    );
    set("server", "labels", toml::Value::Table(store_labels));
    set("storage", "data-dir", s(data_dir(spec)?));
    set(
        "pd",
        "endpoints",
        toml::Value::Array(vec![s(pd_url.to_owned())]),
    );
    toml::to_string(&table).map_err(|e| RenderError::InvalidToml(e.to_string()))
}

fn owner(kv: &TiKV) -> Option<Vec<OwnerReference>> {
    kv.controller_owner_ref(&()).map(|r| vec![r])
}

/// The instance's ConfigMap holding `config` (from [`render_config`]).
pub fn render_config_map(kv: &TiKV, config: &str) -> Result<ConfigMap, RenderError> {
    let p = parts(kv)?;
    Ok(ConfigMap {
        metadata: ObjectMeta {
            name: Some(names::config_map(p.name)),
            namespace: Some(p.namespace.to_owned()),
            labels: Some(instance_labels(p.cluster, p.group, p.name)),
            owner_references: owner(kv),
            ..ObjectMeta::default()
        },
        data: Some([(CONFIG_FILE.to_owned(), config.to_owned())].into()),
        ..ConfigMap::default()
    })
}

fn overlaid<T: Serialize + DeserializeOwned>(base: &T, overlay: &Value) -> Result<T, RenderError> {
    let mut v =
        serde_json::to_value(base).map_err(|e| RenderError::InvalidOverlay(e.to_string()))?;
    merge_overlay(&mut v, overlay);
    serde_json::from_value(v).map_err(|e| RenderError::InvalidOverlay(e.to_string()))
}

/// The instance's PVCs, one per volume, overlays applied. They carry no
/// owner reference to the instance: they are deleted by the removal step
/// machine only (see the crate README, PVC policy), never by garbage
/// collection.
pub fn render_pvcs(kv: &TiKV) -> Result<Vec<PersistentVolumeClaim>, RenderError> {
    let p = parts(kv)?;
    let spec = &kv.spec.template;
    let overlay = spec.overlay.as_ref();
    spec.volumes
        .iter()
        .map(|v| {
            let mut labels = instance_labels(p.cluster, p.group, p.name);
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
                    ..ObjectMeta::default()
                },
                spec: Some(pvc_spec),
                status: None,
            })
        })
        .collect()
}

fn resources(spec: &TiKVTemplateSpec) -> Option<K8sResources> {
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

/// The instance's Pod. `config_hash` (of the rendered `tikv.toml`) is
/// recorded in the [`labels::CONFIG_HASH`] annotation.
pub fn render_pod(kv: &TiKV, config_hash: &str) -> Result<Pod, RenderError> {
    let p = parts(kv)?;
    let spec = &kv.spec.template;
    let (client, status) = ports(spec);

    let mut volumes = Vec::new();
    let mut mounts = Vec::new();
    for v in &spec.volumes {
        if v.name == CONFIG_VOLUME {
            return Err(RenderError::ReservedVolumeName(v.name.clone()));
        }
        volumes.push(PodVolume {
            name: v.name.clone(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: names::pvc(&v.name, p.name),
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
            name: names::config_map(p.name),
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

    let port = |name: &str, n: i32| ContainerPort {
        name: Some(name.to_owned()),
        container_port: n,
        protocol: Some("TCP".to_owned()),
        ..ContainerPort::default()
    };
    let container = Container {
        name: CONTAINER.to_owned(),
        image: Some(image(spec)),
        command: Some(vec!["/tikv-server".to_owned()]),
        args: Some(vec![format!("--config={CONFIG_DIR}/{CONFIG_FILE}")]),
        ports: Some(vec![port("client", client), port("status", status)]),
        resources: resources(spec),
        // Ready once the status server answers on its port. No liveness
        // probe: a TiKV busy applying Raft logs must not be killed.
        readiness_probe: Some(Probe {
            tcp_socket: Some(TCPSocketAction {
                port: IntOrString::String("status".to_owned()),
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
        hostname: Some(names::pod(p.name)),
        subdomain: Some(kv.spec.subdomain.clone()),
        node_selector: kv.spec.topology.clone().filter(|t| !t.is_empty()),
        containers: vec![container],
        volumes: Some(volumes),
        // TiKV flushes on SIGTERM; give it time.
        termination_grace_period_seconds: Some(60),
        ..PodSpec::default()
    };
    let pod_overlay = spec.overlay.as_ref().and_then(|o| o.pod.as_ref());
    let pod_spec = match pod_overlay.and_then(|o| o.spec.as_ref()) {
        Some(o) => overlaid(&pod_spec, o)?,
        None => pod_spec,
    };

    // Instance labels/annotations (template metadata copied by the group),
    // then the pod overlay, then the operator's labels win.
    let mut user = TemplateMeta::default();
    if let Some(l) = &kv.metadata.labels {
        user.labels.extend(l.clone());
    }
    if let Some(a) = &kv.metadata.annotations {
        user.annotations.extend(
            a.iter()
                .filter(|(k, _)| !k.starts_with("core.tikv.org/"))
                .map(|(k, v)| (k.clone(), v.clone())),
        );
    }
    if let Some(m) = pod_overlay.and_then(|o| o.metadata.as_ref()) {
        user.labels.extend(m.labels.clone());
        user.annotations.extend(m.annotations.clone());
    }
    let (labels, mut annotations) =
        with_user_meta(instance_labels(p.cluster, p.group, p.name), Some(&user));
    annotations.insert(labels::CONFIG_HASH.to_owned(), config_hash.to_owned());
    if let Some(at) = restarted_at(&kv.metadata) {
        annotations.insert(labels::RESTARTED_AT.to_owned(), at.clone());
    }
    annotations.insert(labels::VERSION.to_owned(), spec.version.clone());

    Ok(Pod {
        metadata: ObjectMeta {
            name: Some(names::pod(p.name)),
            namespace: Some(p.namespace.to_owned()),
            labels: Some(labels),
            annotations: Some(annotations),
            // No owner: the garbage collector must never delete a TiKV Pod
            // (a `--cascade=foreground` delete of the instance or group would
            // otherwise remove it before its store is Tombstone, safety rule
            // 1). The instance's finalizer deletes it.
            owner_references: None,
            ..ObjectMeta::default()
        },
        spec: Some(pod_spec),
        status: None,
    })
}

/// The group's headless peer Service. Not-ready addresses are published so
/// a store's advertised address resolves from its start.
pub fn render_peer_service(group: &TiKVGroup) -> Result<Service, RenderError> {
    let name = group
        .metadata
        .name
        .clone()
        .ok_or_else(|| RenderError::Incomplete("TiKVGroup without a name".into()))?;
    let ns = group
        .metadata
        .namespace
        .clone()
        .ok_or_else(|| RenderError::Incomplete("TiKVGroup without a namespace".into()))?;
    let cluster = &group.spec.cluster.name;
    let (client, status) = ports(&group.spec.template.spec);
    let port = |n: &str, p: i32| ServicePort {
        name: Some(n.to_owned()),
        port: p,
        target_port: Some(IntOrString::String(n.to_owned())),
        protocol: Some("TCP".to_owned()),
        ..ServicePort::default()
    };
    Ok(Service {
        metadata: ObjectMeta {
            name: Some(names::tikv_peer_service(&name)),
            namespace: Some(ns),
            labels: Some(group_selector(cluster, &name)),
            owner_references: group.controller_owner_ref(&()).map(|r| vec![r]),
            ..ObjectMeta::default()
        },
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".to_owned()),
            publish_not_ready_addresses: Some(true),
            selector: Some(group_selector(cluster, &name)),
            ports: Some(vec![port("client", client), port("status", status)]),
            ..ServiceSpec::default()
        }),
        status: None,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    const PD: &str = "http://pd-pd.ns.svc:2379";

    fn group() -> TiKVGroup {
        serde_json::from_value(json!({
            "apiVersion": "core.tikv.org/v1alpha1",
            "kind": "TiKVGroup",
            "metadata": {"name": "ssd", "namespace": "ns", "uid": "g-uid"},
            "spec": {
                "cluster": {"name": "basic"},
                "replicas": 3,
                "template": {
                    "metadata": {"labels": {"team": "db"}},
                    "spec": {
                        "version": "v8.5.5",
                        "resources": {"cpu": "2", "memory": "4Gi"},
                        "server": {"labels": {"disk": "ssd"}},
                        "config": "[raftstore]\ncapacity = \"10GiB\"\n[server]\ngrpc-concurrency = 4\n",
                        "volumes": [{"name": "data", "mounts": [{"type": "data"}], "storage": "10Gi"}]
                    }
                }
            }
        }))
        .unwrap()
    }

    fn instance() -> TiKV {
        let new = NewInstance {
            name: "ssd-abc123".into(),
            topology: Some([("topology.kubernetes.io/zone".to_owned(), "a".to_owned())].into()),
        };
        let mut kv = render_instance(&group(), &new, false);
        kv.metadata.uid = Some("i-uid".into());
        kv
    }

    #[test]
    fn config_merges_user_toml_with_the_owned_keys() {
        let kv = instance();
        let cfg: toml::Table = render_config(&kv, Some(PD)).unwrap().parse().unwrap();
        let server = cfg["server"].as_table().unwrap();
        assert_eq!(server["addr"].as_str(), Some("0.0.0.0:20160"));
        assert_eq!(
            server["advertise-addr"].as_str(),
            Some("ssd-abc123.ssd-tikv-peer.ns.svc:20160")
        );
        assert_eq!(server["status-addr"].as_str(), Some("0.0.0.0:20180"));
        assert_eq!(
            server["advertise-status-addr"].as_str(),
            Some("ssd-abc123.ssd-tikv-peer.ns.svc:20180")
        );
        assert_eq!(server["labels"]["disk"].as_str(), Some("ssd"));
        // The user's keys survive, in and out of the operator's tables.
        assert_eq!(server["grpc-concurrency"].as_integer(), Some(4));
        assert_eq!(cfg["raftstore"]["capacity"].as_str(), Some("10GiB"));
        assert_eq!(cfg["storage"]["data-dir"].as_str(), Some("/var/lib/tikv"));
        assert_eq!(cfg["pd"]["endpoints"][0].as_str(), Some(PD));
        assert_eq!(
            store_address(&kv),
            "ssd-abc123.ssd-tikv-peer.ns.svc:20160",
            "the address PD sees is the advertised one"
        );
    }

    #[test]
    fn a_user_setting_an_owned_key_is_an_error_not_an_override() {
        for (config, key) in [
            ("[server]\naddr = \"1.2.3.4:1\"\n", "server.addr"),
            ("[pd]\nendpoints = [\"http://x:2379\"]\n", "pd.endpoints"),
            ("storage.data-dir = \"/tmp\"\n", "storage.data-dir"),
            ("[server.labels]\nzone = \"a\"\n", "server.labels"),
            ("server = 1\n", "server"),
        ] {
            let mut kv = instance();
            kv.spec.template.config = Some(config.to_owned());
            let err = render_config(&kv, Some(PD)).unwrap_err();
            assert_eq!(
                err,
                RenderError::OwnedKeys(vec![key.to_owned()]),
                "{config}"
            );
            assert_eq!(err.reason(), reasons::INVALID_CONFIG);
        }
        let mut kv = instance();
        kv.spec.template.config = Some("[server\n".into());
        assert!(matches!(
            render_config(&kv, Some(PD)),
            Err(RenderError::InvalidToml(_))
        ));
        let err = render_config(&instance(), None).unwrap_err();
        assert_eq!(err.reason(), reasons::WAITING_FOR_PD);
    }

    #[test]
    fn pod_runs_tikv_server_as_the_e2e_agent_reads_it() {
        let kv = instance();
        let pod = render_pod(&kv, "cafe").unwrap();
        assert_eq!(pod.metadata.name.as_deref(), Some("ssd-abc123"));
        let l = pod.metadata.labels.as_ref().unwrap();
        assert_eq!(l[labels::COMPONENT], "tikv");
        assert_eq!(l[labels::MANAGED_BY], "tikv-operator");
        assert_eq!(l[labels::CLUSTER], "basic");
        assert_eq!(l[labels::GROUP], "ssd");
        assert_eq!(l[labels::INSTANCE], "ssd-abc123");
        assert_eq!(l["team"], "db");
        assert_eq!(
            pod.metadata.annotations.as_ref().unwrap()[labels::CONFIG_HASH],
            "cafe"
        );
        let spec = pod.spec.as_ref().unwrap();
        assert_eq!(spec.hostname.as_deref(), Some("ssd-abc123"));
        assert_eq!(spec.subdomain.as_deref(), Some("ssd-tikv-peer"));
        assert_eq!(
            spec.node_selector.as_ref().unwrap()["topology.kubernetes.io/zone"],
            "a"
        );
        let c = &spec.containers[0];
        assert_eq!(c.name, "tikv");
        assert_eq!(c.image.as_deref(), Some("pingcap/tikv:v8.5.5"));
        assert_eq!(c.command.as_deref(), Some(&["/tikv-server".to_owned()][..]));
        assert_eq!(
            c.args.as_deref(),
            Some(&["--config=/etc/tikv/tikv.toml".to_owned()][..])
        );
        let r = c.resources.as_ref().unwrap();
        assert_eq!(r.requests, r.limits);
        let ports: Vec<i32> = c
            .ports
            .as_ref()
            .unwrap()
            .iter()
            .map(|p| p.container_port)
            .collect();
        assert_eq!(ports, [20160, 20180]);
        assert!(c.readiness_probe.is_some());
        let mounts = c.volume_mounts.as_ref().unwrap();
        assert!(
            mounts
                .iter()
                .any(|m| m.name == "data" && m.mount_path == "/var/lib/tikv")
        );
        assert!(
            mounts
                .iter()
                .any(|m| m.name == CONFIG_VOLUME && m.mount_path == CONFIG_DIR)
        );
        // Safety rule 1: no owner, so the garbage collector (a foreground
        // delete of the instance or group) never deletes the Pod.
        assert!(pod.metadata.owner_references.is_none());
    }

    #[test]
    fn instance_objects_and_pvcs() {
        let kv = instance();
        assert_eq!(kv.spec.subdomain, "ssd-tikv-peer");
        assert!(!kv.spec.offline);
        assert!(
            render_instance(
                &group(),
                &NewInstance {
                    name: "x".into(),
                    topology: None
                },
                true
            )
            .spec
            .offline
        );
        let owner = &kv.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(owner.kind, "TiKVGroup");
        let pvcs = render_pvcs(&kv).unwrap();
        assert_eq!(pvcs[0].metadata.name.as_deref(), Some("data-ssd-abc123"));
        assert!(pvcs[0].metadata.owner_references.is_none());
        assert_eq!(
            pvcs[0].metadata.labels.as_ref().unwrap()[labels::VOLUME_NAME],
            "data"
        );
        let cm = render_config_map(&kv, "x = 1\n").unwrap();
        assert_eq!(cm.data.unwrap()[CONFIG_FILE], "x = 1\n");
    }

    #[test]
    fn ports_overlays_and_images() {
        let mut kv = instance();
        kv.spec.template.server = Some(
            serde_json::from_value(
                json!({"ports": {"client": {"port": 30160}, "status": {"port": 30180}}}),
            )
            .unwrap(),
        );
        kv.spec.template.overlay = Some(
            serde_json::from_value(json!({
                "pod": {"spec": {"containers": [{"name": "tikv", "env": [{"name": "A", "value": "b"}]}]}}
            }))
            .unwrap(),
        );
        assert_eq!(store_address(&kv), "ssd-abc123.ssd-tikv-peer.ns.svc:30160");
        let pod = render_pod(&kv, "h").unwrap();
        let c = &pod.spec.as_ref().unwrap().containers[0];
        assert_eq!(c.env.as_ref().unwrap()[0].name, "A");
        assert_eq!(c.image.as_deref(), Some("pingcap/tikv:v8.5.5"));
        kv.spec.template.image = Some("reg:5000/tikv:nightly".into());
        assert_eq!(image(&kv.spec.template), "reg:5000/tikv:nightly");
    }

    #[test]
    fn every_example_tikv_group_renders() {
        use serde::Deserialize;
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
        let mut groups = 0;
        for dir in ["basic", "heterogeneous"] {
            let text = std::fs::read_to_string(root.join(dir).join("cluster.yaml")).unwrap();
            for doc in serde_norway::Deserializer::from_str(&text) {
                let v = Value::deserialize(doc).unwrap();
                if v.get("kind").and_then(Value::as_str) != Some("TiKVGroup") {
                    continue;
                }
                let mut g: TiKVGroup = serde_json::from_value(v).unwrap();
                g.metadata.namespace = Some("ns".into());
                let kv = render_instance(
                    &g,
                    &NewInstance {
                        name: format!("{}-abc123", g.metadata.name.clone().unwrap()),
                        topology: None,
                    },
                    false,
                );
                let config = render_config(&kv, Some(PD)).unwrap();
                let cfg: toml::Table = config.parse().unwrap();
                assert_eq!(cfg["pd"]["endpoints"][0].as_str(), Some(PD));
                render_pod(&kv, "h").unwrap();
                assert!(!render_pvcs(&kv).unwrap().is_empty());
                render_peer_service(&g).unwrap();
                groups += 1;
            }
        }
        assert!(groups >= 3, "basic + ssd + hdd, found {groups}");
    }

    #[test]
    fn store_addresses_map_back_to_their_instance() {
        let kv = instance();
        assert_eq!(
            instance_of_store_address(&store_address(&kv)),
            Some(("ns".to_owned(), "ssd-abc123".to_owned()))
        );
        assert_eq!(instance_of_store_address("10.0.0.1:20160"), None);
        assert_eq!(
            instance_of_store_address("a.pd-pd-peer.ns.svc:2379"),
            None,
            "not a TiKV peer Service"
        );
    }

    #[test]
    fn peer_service_publishes_every_pod() {
        let svc = render_peer_service(&group()).unwrap();
        assert_eq!(svc.metadata.name.as_deref(), Some("ssd-tikv-peer"));
        let s = svc.spec.as_ref().unwrap();
        assert_eq!(s.cluster_ip.as_deref(), Some("None"));
        assert_eq!(s.publish_not_ready_addresses, Some(true));
        assert_eq!(s.selector.as_ref().unwrap()[labels::COMPONENT], "tikv");
        assert_eq!(
            selector_string("basic", "ssd"),
            "app.kubernetes.io/component=tikv,app.kubernetes.io/managed-by=tikv-operator,core.tikv.org/cluster=basic,core.tikv.org/group=ssd"
        );
    }
}
