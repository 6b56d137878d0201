//! Rendering the Kubernetes objects of a TiKVGroup and its TiKV instances.
//! Pure: objects in, objects out.
//!
//! Per instance: a ConfigMap (`tikv.toml`: the user's TOML plus the keys the
//! operator owns), one PVC per volume, and a Pod running `/tikv-server
//! --config=/etc/tikv/tikv.toml`. Per group: the headless peer Service
//! `<group>-tikv-peer` that gives every Pod its DNS name
//! `<pod>.<group>-tikv-peer.<namespace>.svc` (the store's advertised address).

use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Pod, Service};
use kube::api::ObjectMeta;
use serde_json::Value;
use tikv_operator_api::rules::TIKV_OWNED_KEYS;
use tikv_operator_api::{
    ClusterReference, TiKV, TiKVGroup, TiKVSpec, TiKVTemplateSpec, Topology, labels, names,
};
use tikv_operator_core::component::Component;
use tikv_operator_core::component::render as common;
use tikv_operator_core::revision::{self, RevisionInputs};

pub use tikv_operator_core::component::render::{CONFIG_VOLUME, RenderError};

use crate::group::NewInstance;

/// The TiKV component: what sets TiKV instances apart in rendering.
#[derive(Debug, Clone, Copy)]
pub struct Kv;

impl Component for Kv {
    type Instance = TiKV;
    type Group = TiKVGroup;
    type Template = TiKVTemplateSpec;
    const KIND: &'static str = "TiKV";
    const LABEL: &'static str = labels::COMPONENT_TIKV;
    const CONTAINER: &'static str = CONTAINER;
    const DEFAULT_IMAGE: &'static str = DEFAULT_IMAGE;
    const BINARY: &'static str = "/tikv-server";
    const CONFIG_DIR: &'static str = CONFIG_DIR;
    const CONFIG_FILE: &'static str = CONFIG_FILE;
    const DEFAULT_DATA_DIR: &'static str = DEFAULT_DATA_DIR;
    const TLS_DIR: &'static str = TLS_DIR;
    const OWNED_KEYS: tikv_operator_api::rules::OwnedKeys = TIKV_OWNED_KEYS;
    const OWNED_KEYS_HINT: &'static str = " (store labels go in spec.server.labels)";
    // TiKV flushes on SIGTERM; give it time.
    const TERMINATION_GRACE_PERIOD_SECONDS: Option<i64> = Some(60);

    fn template(i: &TiKV) -> &TiKVTemplateSpec {
        &i.spec.template
    }
    fn cluster(i: &TiKV) -> &str {
        &i.spec.cluster.name
    }
    fn topology(i: &TiKV) -> Option<&Topology> {
        i.spec.topology.as_ref()
    }
    fn subdomain(i: &TiKV) -> &str {
        &i.spec.subdomain
    }
    fn tls_cluster(i: &TiKV) -> bool {
        i.spec.tls_cluster
    }
    fn default_tls_secret(group: &str) -> String {
        names::tikv_tls_secret(group)
    }
    fn peer_service(group: &str) -> String {
        names::tikv_peer_service(group)
    }
    /// Stores are dialed at their own address only.
    fn dialed_services(_group: &str) -> Vec<String> {
        Vec::new()
    }
}

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
/// Directory the TLS Secret (`ca.crt`, `tls.crt`, `tls.key`) is mounted at
/// in a store speaking TLS.
pub const TLS_DIR: &str = tikv_operator_api::rules::TIKV_PATHS.tls_dir;

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
    common::image::<Kv>(spec)
}

/// DNS name of a TiKV Pod: `<pod>.<peer service>.<namespace>.svc`.
pub fn store_host(instance: &str, subdomain: &str, namespace: &str) -> String {
    common::pod_host(instance, subdomain, namespace)
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

/// The group selector in string form (`status.selector`, for the scale subresource).
pub fn selector_string(cluster: &str, group: &str) -> String {
    common::selector_string::<Kv>(cluster, group)
}

/// The revision of a group's template and restart request
/// (`status.updateRevision`); instances carry it in
/// [`labels::TEMPLATE_REVISION`].
pub fn group_revision(group: &TiKVGroup) -> String {
    tikv_operator_core::content_hash(&group_revision_data(group))
}

/// What [`group_revision`] is computed from (kept in the group's revision history).
pub fn group_revision_data(group: &TiKVGroup) -> serde_json::Value {
    common::group_revision_data(&group.spec.template, &group.metadata)
}

fn restarted_at(meta: &ObjectMeta) -> Option<&String> {
    common::restarted_at(meta)
}

/// The TiKV instance object a group creates (or re-applies) for `new`, with
/// `offline` as given (the group's scale-in decision) and `tls_cluster`
/// (the Cluster's `tlsCluster.enabled` for a new instance, the instance's
/// own, immutable, value for an existing one). It carries the group's
/// template revision and restart request; the restart grant
/// ([`labels::RESTART_ALLOWED`]) is added by the caller.
pub fn render_instance(
    group: &TiKVGroup,
    new: &NewInstance,
    offline: bool,
    tls_cluster: bool,
) -> TiKV {
    let group_name = group.metadata.name.clone().unwrap_or_default();
    let cluster = &group.spec.cluster.name;
    TiKV {
        metadata: common::instance_meta::<Kv>(
            group,
            cluster,
            group.spec.template.metadata.as_ref(),
            group_revision(group),
            &new.name,
        ),
        spec: TiKVSpec {
            cluster: ClusterReference {
                name: cluster.clone(),
            },
            topology: new.topology.clone(),
            subdomain: names::tikv_peer_service(&group_name),
            tls_cluster,
            offline,
            template: group.spec.template.spec.clone(),
        },
        status: None,
    }
}

/// What the revision of a TiKV instance's Pod is computed from (see
/// [`tikv_operator_core::revision`]): the template as far as it reaches the
/// Pod spec (with `tlsSecretName`), topology, subdomain and, only when it
/// speaks TLS, `tlsCluster`; the `config` text, the store labels
/// (`spec.server.labels`) and `pd_url`, all written into `tikv.toml`; the
/// restart request. Never the TLS Secret's contents (a rotation restarts
/// nothing), the rendered Pod, nor `offline`: a new operator
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
        spec: revision::with_tls(
            serde_json::json!({
                "template": template,
                "topology": kv.spec.topology.as_ref().filter(|t| !t.is_empty()),
                "subdomain": kv.spec.subdomain,
            }),
            kv.spec.tls_cluster,
        ),
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

/// TiKV's data directory: the path of the first `type: data` mount, else of
/// the first mount of the volume named `data`, else the default.
pub fn data_dir(spec: &TiKVTemplateSpec) -> Result<String, RenderError> {
    common::data_dir::<Kv>(spec)
}

/// The user's `config` of a template, parsed, without operator-owned keys
/// (see [`tikv_operator_core::config::user_table`]).
pub fn check_config(config: Option<&str>) -> Result<toml::Table, RenderError> {
    common::check_config::<Kv>(config)
}

/// Renders `tikv.toml`: the user's `config` with the operator-owned keys
/// added (`server.addr`, `server.advertise-addr`, `server.status-addr`,
/// `server.advertise-status-addr`, `server.labels` from `spec.server.labels`,
/// `storage.data-dir`, `pd.endpoints` = `pd_url`; for a store speaking TLS
/// `security.ca-path`, `cert-path`, `key-path` in its mounted TLS Secret and
/// `pd_url` with `https`). A user setting an owned key is an error, never
/// silently overridden.
pub fn render_config(kv: &TiKV, pd_url: Option<&str>) -> Result<String, RenderError> {
    let p = common::parts::<Kv>(kv)?;
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
        toml::Value::Array(vec![s(pd_endpoint(pd_url, kv.spec.tls_cluster))]),
    );
    if kv.spec.tls_cluster {
        // TiKV reads the files again for new connections: a rotated Secret
        // needs no restart.
        let (ca, cert, key) = common::tls_files::<Kv>();
        set("security", "ca-path", s(ca));
        set("security", "cert-path", s(cert));
        set("security", "key-path", s(key));
    }
    toml::to_string(&table).map_err(|e| RenderError::InvalidToml(e.to_string()))
}

/// The PD endpoint a store dials: `pd_url` as it is for a plaintext store;
/// for a store speaking TLS with `https`, whatever scheme it came with (a
/// store speaking TLS never dials PD in plaintext).
pub fn pd_endpoint(pd_url: &str, tls: bool) -> String {
    if !tls {
        return pd_url.to_owned();
    }
    let rest = pd_url
        .strip_prefix("http://")
        .or_else(|| pd_url.strip_prefix("https://"))
        .unwrap_or(pd_url);
    format!("https://{rest}")
}

/// The instance's ConfigMap holding `config` (from [`render_config`]).
pub fn render_config_map(kv: &TiKV, config: &str) -> Result<ConfigMap, RenderError> {
    common::render_config_map::<Kv>(kv, config)
}

/// The instance's PVCs, one per volume, overlays applied. They carry no
/// owner reference to the instance: they are deleted by the removal step
/// machine only (see the crate README, PVC policy), never by garbage
/// collection.
pub fn render_pvcs(kv: &TiKV) -> Result<Vec<PersistentVolumeClaim>, RenderError> {
    common::render_pvcs::<Kv>(kv)
}

/// The instance's Pod. `config_hash` (of the rendered `tikv.toml`) is
/// recorded in the [`labels::CONFIG_HASH`] annotation. Ready once the status
/// server answers on its port. No liveness probe: a TiKV busy applying Raft
/// logs must not be killed.
pub fn render_pod(kv: &TiKV, config_hash: &str) -> Result<Pod, RenderError> {
    let (client, status) = ports(&kv.spec.template);
    common::render_pod::<Kv>(
        kv,
        config_hash,
        &[("client", client), ("status", status)],
        "status",
    )
}

/// The group's headless peer Service. Not-ready addresses are published so
/// a store's advertised address resolves from its start.
pub fn render_peer_service(group: &TiKVGroup) -> Result<Service, RenderError> {
    let (name, _) = common::group_parts::<Kv>(group)?;
    let (client, status) = ports(&group.spec.template.spec);
    common::render_group_service::<Kv>(
        group,
        &group.spec.cluster.name,
        &names::tikv_peer_service(&name),
        &[("client", client), ("status", status)],
        true,
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::reasons;
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
        let mut kv = render_instance(&group(), &new, false, false);
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

    fn tls_instance() -> TiKV {
        let new = NewInstance {
            name: "ssd-abc123".into(),
            topology: None,
        };
        render_instance(&group(), &new, false, true)
    }

    #[test]
    fn a_store_speaking_tls_gets_security_paths_and_dials_pd_with_https() {
        let mut kv = tls_instance();
        assert!(kv.spec.tls_cluster);
        kv.spec.template.config = Some("[security]\nredact-info-log = true\n".into());
        let cfg: toml::Table = render_config(&kv, Some(PD)).unwrap().parse().unwrap();
        let security = cfg["security"].as_table().unwrap();
        assert_eq!(
            security["ca-path"].as_str(),
            Some("/var/lib/tikv-tls/ca.crt")
        );
        assert_eq!(
            security["cert-path"].as_str(),
            Some("/var/lib/tikv-tls/tls.crt")
        );
        assert_eq!(
            security["key-path"].as_str(),
            Some("/var/lib/tikv-tls/tls.key")
        );
        // The user's other security settings stay.
        assert_eq!(security["redact-info-log"].as_bool(), Some(true));
        // Never plaintext to PD, whatever URL it is given.
        assert_eq!(
            cfg["pd"]["endpoints"][0].as_str(),
            Some("https://pd-pd.ns.svc:2379")
        );
        assert_eq!(
            pd_endpoint("https://pd-pd.ns.svc:2379", true),
            "https://pd-pd.ns.svc:2379"
        );
        assert_eq!(
            pd_endpoint("pd-pd.ns.svc:2379", true),
            "https://pd-pd.ns.svc:2379"
        );
        assert_eq!(pd_endpoint(PD, false), PD);
        // A plaintext store has no security section and dials what it is given.
        let plain: toml::Table = render_config(&instance(), Some(PD))
            .unwrap()
            .parse()
            .unwrap();
        assert!(!plain.contains_key("security"));
        // The user may not set the paths.
        let mut kv = tls_instance();
        kv.spec.template.config = Some("[security]\nca-path = \"/mine\"\n".into());
        assert_eq!(
            render_config(&kv, Some(PD)).unwrap_err(),
            RenderError::OwnedKeys {
                keys: vec!["security.ca-path".into()],
                hint: Kv::OWNED_KEYS_HINT
            }
        );
        kv.spec.template.config = Some("security = 1\n".into());
        assert!(matches!(
            render_config(&kv, Some(PD)).unwrap_err(),
            RenderError::OwnedKeys { .. }
        ));
    }

    #[test]
    fn a_store_speaking_tls_mounts_its_secret_read_only() {
        let volume = |kv: &TiKV| {
            let pod = render_pod(kv, "h").unwrap();
            let spec = pod.spec.unwrap();
            let v = spec.volumes.unwrap().into_iter().find(|v| v.name == "tls");
            let m = spec.containers[0]
                .volume_mounts
                .clone()
                .unwrap()
                .into_iter()
                .find(|m| m.name == "tls");
            (v, m)
        };
        let (v, m) = volume(&tls_instance());
        let secret = v.unwrap().secret.unwrap();
        assert_eq!(secret.secret_name.as_deref(), Some("ssd-tikv-tls"));
        let m = m.unwrap();
        assert_eq!(m.mount_path, TLS_DIR);
        assert_eq!(m.mount_path, "/var/lib/tikv-tls");
        assert_eq!(m.read_only, Some(true));
        assert_eq!(m.sub_path, None, "a subPath mount would not see a rotation");
        // The template's Secret name wins.
        let mut kv = tls_instance();
        kv.spec.template.tls_secret_name = Some("mine".into());
        let (v, _) = volume(&kv);
        assert_eq!(
            v.unwrap().secret.unwrap().secret_name.as_deref(),
            Some("mine")
        );
        // A plaintext store mounts nothing, even with a Secret name set.
        let mut plain = instance();
        plain.spec.template.tls_secret_name = Some("mine".into());
        assert_eq!(volume(&plain), (None, None));
        // A user volume named `tls` collides only where the operator mounts one.
        let mut v = plain.spec.template.volumes[0].clone();
        v.name = "tls".into();
        v.mounts[0].type_ = None;
        v.mounts[0].mount_path = Some("/x".into());
        plain.spec.template.volumes.push(v.clone());
        render_pod(&plain, "h").unwrap();
        let mut kv = tls_instance();
        kv.spec.template.volumes.push(v);
        assert_eq!(
            render_pod(&kv, "h").unwrap_err(),
            RenderError::ReservedVolumeName("tls".into())
        );
    }

    #[test]
    fn tls_reaches_the_revision_only_when_on() {
        let plain = revision_inputs(&instance(), Some(PD));
        assert!(plain.spec.get("tlsCluster").is_none());
        let tls = revision_inputs(&tls_instance(), Some(PD));
        assert_eq!(tls.spec["tlsCluster"], json!(true));
        // The Secret's name is part of the template: changing it rolls.
        let mut renamed = tls_instance();
        renamed.spec.template.tls_secret_name = Some("other".into());
        assert_ne!(revision_inputs(&renamed, Some(PD)).spec, tls.spec);
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
                RenderError::OwnedKeys {
                    keys: vec![key.to_owned()],
                    hint: Kv::OWNED_KEYS_HINT
                },
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
                true,
                false
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
