//! Rendering the Kubernetes objects of a PDGroup and its PD instances.
//! Pure: objects in, objects out.
//!
//! Per instance: a ConfigMap (`pd.toml`: the user's TOML plus the keys the
//! operator owns), one PVC per volume, and a Pod running `/pd-server
//! --config=/etc/pd/pd.toml`. Per group: the headless peer Service (pod DNS
//! names, published before pods are ready so that initial members find each
//! other; joining members find the cluster through it) and the client
//! Service (ready members only; what clients use).

use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Pod, Service};
use tikv_operator_api::rules::PD_OWNED_KEYS;
use tikv_operator_api::{
    ClusterReference, PD, PDGroup, PDSpec, PDTemplateSpec, Topology, labels, names,
};
use tikv_operator_core::component::Component;
use tikv_operator_core::component::render as common;
use tikv_operator_core::revision::{self, RevisionInputs};

pub use tikv_operator_core::component::render::{CONFIG_VOLUME, RenderError};

use crate::group::NewInstance;

/// The PD component: what sets PD instances apart in rendering.
#[derive(Debug, Clone, Copy)]
pub struct Pd;

impl Component for Pd {
    type Instance = PD;
    type Group = PDGroup;
    type Template = PDTemplateSpec;
    const KIND: &'static str = "PD";
    const LABEL: &'static str = labels::COMPONENT_PD;
    const CONTAINER: &'static str = CONTAINER;
    const DEFAULT_IMAGE: &'static str = DEFAULT_IMAGE;
    const BINARY: &'static str = "/pd-server";
    const CONFIG_DIR: &'static str = CONFIG_DIR;
    const CONFIG_FILE: &'static str = CONFIG_FILE;
    const DEFAULT_DATA_DIR: &'static str = DEFAULT_DATA_DIR;
    const TLS_DIR: &'static str = TLS_DIR;
    const OWNED_KEYS: tikv_operator_api::rules::OwnedKeys = PD_OWNED_KEYS;
    const OWNED_KEYS_HINT: &'static str = "";
    const TERMINATION_GRACE_PERIOD_SECONDS: Option<i64> = None;

    fn template(i: &PD) -> &PDTemplateSpec {
        &i.spec.template
    }
    fn cluster(i: &PD) -> &str {
        &i.spec.cluster.name
    }
    fn topology(i: &PD) -> Option<&Topology> {
        i.spec.topology.as_ref()
    }
    fn subdomain(i: &PD) -> &str {
        &i.spec.subdomain
    }
    fn tls_cluster(i: &PD) -> bool {
        i.spec.tls_cluster
    }
    fn default_tls_secret(group: &str) -> String {
        names::pd_tls_secret(group)
    }
    fn peer_service(group: &str) -> String {
        names::pd_peer_service(group)
    }
    /// Clients (TiKV, the operator) dial the client Service; a joining
    /// member dials the peer Service.
    fn dialed_services(group: &str) -> Vec<String> {
        vec![
            names::pd_client_service(group),
            names::pd_peer_service(group),
        ]
    }
}

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
/// Directory the TLS Secret (`ca.crt`, `tls.crt`, `tls.key`) is mounted at
/// in a member speaking TLS.
pub const TLS_DIR: &str = tikv_operator_api::rules::PD_PATHS.tls_dir;

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
    common::image::<Pd>(spec)
}

/// DNS name of a PD member's Pod: `<pod>.<peer service>.<namespace>.svc`.
pub fn member_host(instance: &str, subdomain: &str, namespace: &str) -> String {
    common::pod_host(instance, subdomain, namespace)
}

/// The client URL a PD instance advertises (`advertise-client-urls`);
/// `https` when it speaks TLS.
pub fn member_client_url(pd: &PD) -> String {
    member_url(pd, ports(&pd.spec.template).0)
}

/// The peer URL a PD instance advertises (`advertise-peer-urls`); `https`
/// when it speaks TLS. Members are told apart by it in PD.
pub fn member_peer_url(pd: &PD) -> String {
    member_url(pd, ports(&pd.spec.template).1)
}

fn member_url(pd: &PD, port: i32) -> String {
    let host = member_host(
        pd.metadata.name.as_deref().unwrap_or_default(),
        &pd.spec.subdomain,
        pd.metadata.namespace.as_deref().unwrap_or_default(),
    );
    format!("{}://{host}:{port}", common::scheme(pd.spec.tls_cluster))
}

/// The URL of a group's client Service, plaintext (see [`client_url`]).
pub fn client_service_url(group: &str, namespace: &str, client_port: i32) -> String {
    client_url(group, namespace, client_port, false)
}

/// The URL clients reach a group's PD on: its client Service, `https` when
/// the Cluster speaks TLS (`tls`).
pub fn client_url(group: &str, namespace: &str, client_port: i32, tls: bool) -> String {
    format!(
        "{}://{}.{namespace}.svc:{client_port}",
        common::scheme(tls),
        names::pd_client_service(group)
    )
}

/// The revision of a group's template: everything an instance is rendered
/// from (`spec.template`) plus a requested restart. `status.updateRevision`.
pub fn group_revision(group: &PDGroup) -> String {
    tikv_operator_core::content_hash(&group_revision_data(group))
}

/// What [`group_revision`] is computed from (kept in the group's revision history).
pub fn group_revision_data(group: &PDGroup) -> serde_json::Value {
    common::group_revision_data(&group.spec.template, &group.metadata)
}

/// The group selector in string form (`status.selector`, for the scale subresource).
pub fn selector_string(cluster: &str, group: &str) -> String {
    common::selector_string::<Pd>(cluster, group)
}

/// The PD instance object a group creates for `new`; `tls_cluster`: whether
/// it speaks TLS (the Cluster's `tlsCluster.enabled` for a new instance, the
/// instance's own, immutable, value for an existing one). A rolling restart
/// requested on the group reaches every instance, and through it every Pod's
/// revision: the group then restarts them the safe way, one member at a
/// time, the leader last.
pub fn render_instance(group: &PDGroup, new: &NewInstance, tls_cluster: bool) -> PD {
    let group_name = group.metadata.name.clone().unwrap_or_default();
    let cluster = &group.spec.cluster.name;
    let mut metadata = common::instance_meta::<Pd>(
        group,
        cluster,
        group.spec.template.metadata.as_ref(),
        group_revision(group),
        &new.name,
    );
    if let Some(members) = &new.bootstrap_members {
        metadata
            .annotations
            .get_or_insert_default()
            .insert(labels::PD_BOOTSTRAP_MEMBERS.to_owned(), members.join(","));
    }
    PD {
        metadata,
        spec: PDSpec {
            cluster: ClusterReference {
                name: cluster.clone(),
            },
            topology: new.topology.clone(),
            subdomain: names::pd_peer_service(&group_name),
            tls_cluster,
            template: group.spec.template.spec.clone(),
        },
        status: None,
    }
}

/// What the revision of a PD instance's Pod is computed from (see
/// [`tikv_operator_core::revision`]): the template as far as it reaches the
/// Pod spec (with `tlsSecretName`), topology, subdomain and, only when it
/// speaks TLS, `tlsCluster`; the `config` text and the initial members
/// written into `pd.toml`; the restart request. Never the TLS Secret's
/// contents (a rotation restarts nothing), never the rendered
/// Pod: a new operator version that renders differently restarts nothing
/// unless it bumps the rendering generation.
pub fn revision_inputs(pd: &PD) -> RevisionInputs {
    let template = serde_json::to_value(&pd.spec.template).unwrap_or_default();
    RevisionInputs {
        spec: revision::with_tls(
            serde_json::json!({
                "template": revision::template_inputs(template),
                "topology": pd.spec.topology.as_ref().filter(|t| !t.is_empty()),
                "subdomain": pd.spec.subdomain,
            }),
            pd.spec.tls_cluster,
        ),
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

/// PD's data directory: the path of the first `type: data` mount, else of the
/// first mount of the volume named `data`, else the default.
pub fn data_dir(spec: &PDTemplateSpec) -> Result<String, RenderError> {
    common::data_dir::<Pd>(spec)
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
    common::check_config::<Pd>(config)
}

/// Renders `pd.toml`: the user's `config` with the operator-owned keys added.
/// A user setting an owned key is an error (never silently overridden). A
/// member speaking TLS gets `https` URLs and `[security]` paths to its
/// mounted TLS Secret (PD reads the files again for new connections: a
/// rotated Secret needs no restart).
pub fn render_config(pd: &PD) -> Result<String, RenderError> {
    let c = common::parts::<Pd>(pd)?;
    let spec = &pd.spec.template;
    let mut table = check_config(spec.config.as_deref())?;

    let (client, peer) = ports(spec);
    let host = member_host(c.name, &pd.spec.subdomain, c.namespace);
    let scheme = common::scheme(pd.spec.tls_cluster);
    let mut owned: Vec<(&str, String)> = vec![
        ("name", c.name.to_owned()),
        ("data-dir", data_dir(spec)?),
        ("client-urls", format!("{scheme}://0.0.0.0:{client}")),
        ("peer-urls", format!("{scheme}://0.0.0.0:{peer}")),
        (
            "advertise-client-urls",
            format!("{scheme}://{host}:{client}"),
        ),
        ("advertise-peer-urls", format!("{scheme}://{host}:{peer}")),
    ];
    match bootstrap_members(pd) {
        Some(members) => {
            let initial = members
                .iter()
                .map(|m| {
                    format!(
                        "{m}={scheme}://{}:{peer}",
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
            format!(
                "{scheme}://{}.{}.svc:{client}",
                pd.spec.subdomain, c.namespace
            ),
        )),
    }
    for (k, v) in owned {
        table.insert(k.to_owned(), toml::Value::String(v));
    }
    if pd.spec.tls_cluster {
        let (ca, cert, key) = common::tls_files::<Pd>();
        // Into the user's `[security]` table, if any (its other keys stay).
        let toml::Value::Table(security) = table
            .entry("security".to_owned())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()))
        else {
            return Err(RenderError::InvalidToml(
                "`security` must be a table: the operator sets the TLS paths in it".to_owned(),
            ));
        };
        for (k, v) in [("cacert-path", ca), ("cert-path", cert), ("key-path", key)] {
            security.insert(k.to_owned(), toml::Value::String(v));
        }
    }
    toml::to_string(&table).map_err(|e| RenderError::InvalidToml(e.to_string()))
}

/// The instance's ConfigMap holding `config` (from [`render_config`]).
pub fn render_config_map(pd: &PD, config: &str) -> Result<ConfigMap, RenderError> {
    common::render_config_map::<Pd>(pd, config)
}

/// The instance's PVCs, one per volume, overlays applied. No owner: only
/// the instance's finalizer deletes a PD PVC, after the member left PD.
pub fn render_pvcs(pd: &PD) -> Result<Vec<PersistentVolumeClaim>, RenderError> {
    common::render_pvcs::<Pd>(pd)
}

/// The instance's Pod. `config_hash` (of the rendered `pd.toml`) is recorded
/// in the [`labels::CONFIG_HASH`] annotation. Ready once the client port
/// listens (PD opens it after its embedded etcd started). No liveness probe:
/// restarting a PD that is slow during an election makes things worse.
pub fn render_pod(pd: &PD, config_hash: &str) -> Result<Pod, RenderError> {
    let (client, peer) = ports(&pd.spec.template);
    common::render_pod::<Pd>(
        pd,
        config_hash,
        &[("client", client), ("peer", peer)],
        "client",
    )
}

/// The group's headless peer Service. Not-ready addresses are published: the
/// initial members must resolve each other before any of them is ready.
pub fn render_peer_service(group: &PDGroup) -> Result<Service, RenderError> {
    let (name, _) = common::group_parts::<Pd>(group)?;
    let (client, peer) = ports(&group.spec.template.spec);
    common::render_group_service::<Pd>(
        group,
        &group.spec.cluster.name,
        &names::pd_peer_service(&name),
        &[("client", client), ("peer", peer)],
        true,
    )
}

/// The group's client Service (ready members only).
pub fn render_client_service(group: &PDGroup) -> Result<Service, RenderError> {
    let (name, _) = common::group_parts::<Pd>(group)?;
    let (client, _) = ports(&group.spec.template.spec);
    common::render_group_service::<Pd>(
        group,
        &group.spec.cluster.name,
        &names::pd_client_service(&name),
        &[("client", client)],
        false,
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::reasons;
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
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
        let mut pd = render_instance(&group(), &new, false);
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

    fn tls_instance(bootstrap: bool) -> PD {
        let mut pd = instance(bootstrap);
        pd.spec.tls_cluster = true;
        pd
    }

    #[test]
    fn a_member_speaking_tls_uses_https_everywhere_and_its_secret() {
        for bootstrap in [true, false] {
            let mut pd = tls_instance(bootstrap);
            pd.spec.template.config = Some("[security]\nredact-info-log = true\n".into());
            let cfg: toml::Table = render_config(&pd).unwrap().parse().unwrap();
            for key in [
                "client-urls",
                "peer-urls",
                "advertise-client-urls",
                "advertise-peer-urls",
            ] {
                assert!(
                    cfg[key].as_str().unwrap().starts_with("https://"),
                    "{key}: {}",
                    cfg[key]
                );
            }
            if bootstrap {
                let initial = cfg["initial-cluster"].as_str().unwrap();
                assert_eq!(initial.matches("=https://").count(), 3, "{initial}");
                assert!(!initial.contains("http://"), "{initial}");
            } else {
                assert_eq!(cfg["join"].as_str(), Some("https://pd-pd-peer.ns.svc:2379"));
            }
            let security = cfg["security"].as_table().unwrap();
            assert_eq!(
                security["cacert-path"].as_str(),
                Some("/var/lib/pd-tls/ca.crt")
            );
            assert_eq!(
                security["cert-path"].as_str(),
                Some("/var/lib/pd-tls/tls.crt")
            );
            assert_eq!(
                security["key-path"].as_str(),
                Some("/var/lib/pd-tls/tls.key")
            );
            assert_eq!(security["redact-info-log"].as_bool(), Some(true));
        }
        let pd = tls_instance(false);
        assert_eq!(
            member_client_url(&pd),
            "https://pd-abc123.pd-pd-peer.ns.svc:2379"
        );
        assert_eq!(
            member_peer_url(&pd),
            "https://pd-abc123.pd-pd-peer.ns.svc:2380"
        );
        assert_eq!(
            member_peer_url(&instance(false)),
            "http://pd-abc123.pd-pd-peer.ns.svc:2380"
        );
        assert_eq!(
            client_url("pd", "ns", 2379, true),
            "https://pd-pd.ns.svc:2379"
        );
        assert_eq!(
            client_service_url("pd", "ns", 2379),
            "http://pd-pd.ns.svc:2379"
        );
        // The Pod mounts the group's Secret read-only, the whole directory.
        let pod = render_pod(&pd, "h").unwrap();
        let spec = pod.spec.unwrap();
        let v = spec
            .volumes
            .unwrap()
            .into_iter()
            .find(|v| v.name == "tls")
            .unwrap();
        assert_eq!(v.secret.unwrap().secret_name.as_deref(), Some("pd-pd-tls"));
        let m = spec.containers[0]
            .volume_mounts
            .clone()
            .unwrap()
            .into_iter()
            .find(|m| m.name == "tls")
            .unwrap();
        assert_eq!((m.mount_path.as_str(), m.read_only), (TLS_DIR, Some(true)));
        assert_eq!(TLS_DIR, "/var/lib/pd-tls");
        assert_eq!(m.sub_path, None);
        // The user may not set the paths.
        let mut pd = tls_instance(false);
        pd.spec.template.config = Some("[security]\ncert-path = \"/mine\"\n".into());
        assert_eq!(
            render_config(&pd).unwrap_err(),
            RenderError::OwnedKeys {
                keys: vec!["security.cert-path".into()],
                hint: Pd::OWNED_KEYS_HINT
            }
        );
    }

    #[test]
    fn a_plaintext_member_renders_as_before_tls_existed() {
        let pd = instance(true);
        let cfg: toml::Table = render_config(&pd).unwrap().parse().unwrap();
        assert!(!cfg.contains_key("security"));
        let pod = render_pod(&pd, "h").unwrap();
        assert!(
            !pod.spec
                .unwrap()
                .volumes
                .unwrap()
                .iter()
                .any(|v| v.name == "tls")
        );
        let inputs = revision_inputs(&pd);
        assert!(inputs.spec.get("tlsCluster").is_none());
        let tls = revision_inputs(&tls_instance(true));
        assert_eq!(tls.spec["tlsCluster"], json!(true));
        assert_ne!(tls.spec, inputs.spec);
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
            assert!(
                matches!(err, RenderError::OwnedKeys { .. }),
                "{config}: {err}"
            );
            assert_eq!(err.reason(), reasons::INVALID_CONFIG);
        }
        let mut pd = instance(false);
        pd.spec.template.config = Some("data-dir = \"/tmp\"\nclient-urls = \"x\"\n".into());
        assert_eq!(
            render_config(&pd).unwrap_err(),
            RenderError::OwnedKeys {
                keys: vec!["data-dir".into(), "client-urls".into()],
                hint: Pd::OWNED_KEYS_HINT
            }
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
