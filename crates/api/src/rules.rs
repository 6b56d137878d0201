//! CEL validation rules (`x-kubernetes-validations`) the API server enforces.
//!
//! The API server, not the operator, is the first line of defence: anything
//! that must never be accepted is rejected here, before the operator sees it.
//! Each function returns the JSON list placed under `x-kubernetes-validations`
//! on one schema node. Tests in `tests/cel.rs` evaluate every rule offline
//! against the generated CRDs with one accepted and one rejected object.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::ValidationRule;
use serde_json::{Value, json};

use crate::{labels, names};

/// DNS-1035 label: what Service names and host names must match.
pub const DNS1035_LABEL: &str = "^[a-z]([-a-z0-9]*[a-z0-9])?$";

/// Semantic version, with an optional leading `v` (`v8.5.5`, `8.5.5`, `v9.0.0-beta.1`).
/// Written with character classes only, so it means the same in CEL (RE2) and in
/// every YAML/JSON quoting layer.
pub const SEMVER: &str =
    "^v?(0|[1-9][0-9]*)[.](0|[1-9][0-9]*)[.](0|[1-9][0-9]*)(-[0-9A-Za-z.-]+)?([+][0-9A-Za-z.-]+)?$";

/// Maximum length of the `config` TOML string (bounds CEL evaluation cost).
pub const MAX_CONFIG_LEN: u32 = 65536;

fn rule(rule: impl Into<String>, message: impl Into<String>) -> Value {
    json!({ "rule": rule.into(), "message": message.into() })
}

/// `self == oldSelf`: the field may be set on creation and never changed.
pub fn immutable(what: &str) -> Value {
    json!([rule("self == oldSelf", format!("{what} is immutable"))])
}

/// Replicas must not be negative.
pub fn non_negative(what: &str) -> Value {
    json!([rule("self >= 0", format!("{what} must be >= 0"))])
}

/// A count that must be at least one.
pub fn at_least_one(what: &str) -> Value {
    json!([rule("self >= 1", format!("{what} must be >= 1"))])
}

/// `version` must be a semantic version.
pub fn semver_version() -> Value {
    json!([rule(
        format!("self.matches('{SEMVER}')"),
        "version must be a semantic version such as v8.5.5",
    )])
}

/// Volume names end up in PVC names: DNS-1035 labels of bounded length.
pub fn volume_name() -> Value {
    let max = names::MAX_VOLUME_NAME_LEN;
    json!([
        volume_name_not_reserved(),
        rule(
            format!("size(self) <= {max} && self.matches('{DNS1035_LABEL}')"),
            format!(
                "volume name must be a DNS-1035 label (lower-case letters, digits, '-', starting with a letter) of at most {max} characters"
            ),
        )
    ])
}

/// Root-level rule: `metadata.name` short enough for every derived object name.
pub fn object_name(kind: &str, max: usize) -> ValidationRule {
    ValidationRule {
        rule: format!(
            "size(self.metadata.name) <= {max} && self.metadata.name.matches('{DNS1035_LABEL}')"
        ),
        message: Some(format!(
            "{kind} name must be a DNS-1035 label (lower-case letters, digits, '-', starting with a letter) of at most {max} characters, so that the names derived from it are valid"
        )),
        ..ValidationRule::default()
    }
}

/// Instance spec: `topology` can be neither changed, added nor removed;
/// `tlsCluster` (absent means false) cannot change.
pub fn instance_immutable() -> Value {
    json!([
        rule(
            "has(self.topology) == has(oldSelf.topology) && (!has(self.topology) || self.topology == oldSelf.topology)",
            "topology is immutable",
        ),
        rule(
            "(has(self.tlsCluster) && self.tlsCluster) == (has(oldSelf.tlsCluster) && oldSelf.tlsCluster)",
            "tlsCluster is immutable",
        )
    ])
}

/// Cluster spec: `tlsCluster.enabled` (absent means false) is immutable.
pub fn tls_cluster_immutable() -> Value {
    let now = "(has(self.tlsCluster) && has(self.tlsCluster.enabled) && self.tlsCluster.enabled)";
    let old = "(has(oldSelf.tlsCluster) && has(oldSelf.tlsCluster.enabled) && oldSelf.tlsCluster.enabled)";
    json!([rule(
        format!("{now} == {old}"),
        "tlsCluster.enabled is immutable"
    )])
}

/// `EvenlySpread` policies need their topology list.
pub fn schedule_policy() -> Value {
    json!([rule(
        "self.type != 'EvenlySpread' || (has(self.evenlySpread) && size(self.evenlySpread.topologies) > 0)",
        "a schedule policy of type EvenlySpread needs evenlySpread.topologies",
    )])
}

/// Configuration keys the operator owns for one component. `top` are keys of
/// the root table; `tables` are `(table, keys)` pairs.
#[derive(Debug, Clone, Copy)]
pub struct OwnedKeys {
    /// Keys of the root table.
    pub top: &'static [&'static str],
    /// Keys inside named tables.
    pub tables: &'static [(&'static str, &'static [&'static str])],
}

impl OwnedKeys {
    /// Every owned key as a dotted path, for messages and docs.
    pub fn dotted(&self) -> Vec<String> {
        let mut out: Vec<String> = self.top.iter().map(|k| (*k).to_owned()).collect();
        for (table, keys) in self.tables {
            out.extend(keys.iter().map(|k| format!("{table}.{k}")));
        }
        out
    }
}

/// PD configuration keys the operator sets itself (the `[security]` paths
/// point at the mounted TLS Secret when the Cluster enables TLS).
pub const PD_OWNED_KEYS: OwnedKeys = OwnedKeys {
    top: &[
        "name",
        "data-dir",
        "client-urls",
        "peer-urls",
        "advertise-client-urls",
        "advertise-peer-urls",
        "initial-cluster",
        "initial-cluster-state",
        "join",
    ],
    tables: &[("security", &["cacert-path", "cert-path", "key-path"])],
};

/// TiKV configuration keys the operator sets itself (`server.labels` come from
/// `spec.server.labels` and the node's topology; the `[security]` paths point
/// at the mounted TLS Secret when the Cluster enables TLS).
pub const TIKV_OWNED_KEYS: OwnedKeys = OwnedKeys {
    top: &[],
    tables: &[
        (
            "server",
            &[
                "addr",
                "advertise-addr",
                "status-addr",
                "advertise-status-addr",
                "labels",
            ],
        ),
        ("storage", &["data-dir"]),
        ("pd", &["endpoints"]),
        ("security", &["ca-path", "cert-path", "key-path"]),
    ],
};

// Regex fragments as they must appear inside a CEL single-quoted string:
// a backslash is written twice (CEL unescapes it once, RE2 sees one).
const WS: &str = "[ \\\\t]*";
const NL: &str = "\\\\n";
const LBRACKET: &str = "\\\\[";
const RBRACKET: &str = "\\\\]";

/// Lines before the first table header (`^` is the start of the text).
fn root_prefix() -> String {
    format!("^({WS}([^{LBRACKET} \\\\t{NL}][^{NL}]*)?{NL})*{WS}")
}

fn alternatives(keys: &[String]) -> String {
    format!("\"?({})\"?{WS}=", keys.join("|"))
}

/// Rules rejecting, where it can be seen without parsing TOML, a `config`
/// string that sets an operator-owned key: as a root key, as a dotted root key
/// (`server.addr = ...`), or inside its table (`[server]` ... `addr = ...`).
/// The operator checks the parsed TOML again and reports what this misses.
pub fn owned_config_keys(component: &str, owned: &OwnedKeys) -> Value {
    let mut rules = Vec::new();
    let mut root_keys: Vec<String> = owned.top.iter().map(|k| (*k).to_owned()).collect();
    for (table, keys) in owned.tables {
        root_keys.extend(keys.iter().map(|k| format!("{table}[.]{k}")));
    }
    if !root_keys.is_empty() {
        let re = format!("{}{}", root_prefix(), alternatives(&root_keys));
        rules.push(rule(
            format!("!self.matches('{re}')"),
            format!(
                "config sets a {component} key the operator owns (one of: {}); remove it, the operator sets it",
                owned.dotted().join(", ")
            ),
        ));
    }
    for (table, keys) in owned.tables {
        let keys: Vec<String> = keys.iter().map(|k| (*k).to_owned()).collect();
        // From a `[table]` header, over lines with no other header, to the key.
        let re = format!(
            "(^|{NL}){WS}{LBRACKET}{WS}{table}{WS}{RBRACKET}[^{LBRACKET}]*{NL}{WS}{}",
            alternatives(&keys)
        );
        rules.push(rule(
            format!("!self.matches('{re}')"),
            format!(
                "config sets [{table}] keys the operator owns ({}); remove them, the operator sets them",
                keys.iter().map(|k| format!("{table}.{k}")).collect::<Vec<_>>().join(", ")
            ),
        ));
    }
    Value::Array(rules)
}

/// Rules for the PD `config` field.
pub fn pd_config() -> Value {
    owned_config_keys("PD", &PD_OWNED_KEYS)
}

/// Rules for the TiKV `config` field.
pub fn tikv_config() -> Value {
    owned_config_keys("TiKV", &TIKV_OWNED_KEYS)
}

// ---------------------------------------------------------------------------
// Formats. Every regex below uses character classes instead of backslashes, so
// it reads the same in Rust, YAML, CEL (RE2) and the offline evaluator.

/// DNS-1123 subdomain (object names such as StorageClass names); at most 253 characters.
pub const DNS1123_SUBDOMAIN: &str =
    "^[a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";

/// The name part of a label key, and a non-empty label value: at most 63
/// characters, alphanumerics, `-`, `_` and `.`, starting and ending with an alphanumeric.
const LABEL_NAME: &str = "[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?";

/// Kubernetes label or annotation key: an optional DNS subdomain prefix and
/// `/`, then a name (see `LABEL_NAME`).
pub fn qualified_name_regex() -> String {
    format!("^([a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?{LABEL_NAME}$")
}

/// Kubernetes label value: empty, or a name (see `LABEL_NAME`).
pub fn label_value_regex() -> String {
    format!("^({LABEL_NAME})?$")
}

/// Longest qualified name: a 253-character prefix, `/` and a 63-character name.
pub const MAX_QUALIFIED_NAME_LEN: usize = 253 + 1 + 63;

/// Container image reference: an optional registry host (one with a `.` or a
/// port, or `localhost`), lower-case path components, an optional tag and an
/// optional digest.
pub const IMAGE: &str = concat!(
    "^((",
    "(localhost|[A-Za-z0-9]([-A-Za-z0-9]*[A-Za-z0-9])?([.][A-Za-z0-9]([-A-Za-z0-9]*[A-Za-z0-9])?)+)(:[0-9]+)?",
    "|[A-Za-z0-9]([-A-Za-z0-9]*[A-Za-z0-9])?:[0-9]+",
    ")/)?",
    "[a-z0-9]+(([._]|__|[-]+)[a-z0-9]+)*(/[a-z0-9]+(([._]|__|[-]+)[a-z0-9]+)*)*",
    "(:[A-Za-z0-9_][-A-Za-z0-9_.]{0,127})?",
    "(@[A-Za-z][A-Za-z0-9]*([-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,})?$",
);

/// Store label keys and values as TiKV accepts them (`server.labels`).
pub const STORE_LABEL: &str = "^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$";

/// Store label key PD reserves: `engine` marks TiFlash stores.
pub const RESERVED_STORE_LABEL: &str = "engine";

/// Prefix of every label and annotation key the operator owns.
pub const OWNED_KEY_PREFIX: &str = "core.tikv.org/";

/// Label keys outside [`OWNED_KEY_PREFIX`] the operator sets on every object it creates.
pub const OWNED_LABEL_KEYS: &[&str] = &[labels::MANAGED_BY, labels::COMPONENT];

/// Name of the Pod volume holding the rendered configuration (the operator's own).
pub const CONFIG_VOLUME_NAME: &str = "config";

/// Name of the Pod volume holding the TLS Secret of a member of a Cluster
/// that enables TLS (the operator's own).
pub const TLS_VOLUME_NAME: &str = "tls";

/// Directories the operator uses inside the PD container.
pub const PD_PATHS: ComponentPaths = ComponentPaths {
    component: "PD",
    config_dir: "/etc/pd",
    data_dir: "/var/lib/pd",
    tls_dir: "/var/lib/pd-tls",
};

/// Directories the operator uses inside the TiKV container.
pub const TIKV_PATHS: ComponentPaths = ComponentPaths {
    component: "TiKV",
    config_dir: "/etc/tikv",
    data_dir: "/var/lib/tikv",
    tls_dir: "/var/lib/tikv-tls",
};

/// Container directories of one component: where the operator mounts the
/// configuration, and where a `type: data` mount goes without `mountPath`.
#[derive(Debug, Clone, Copy)]
pub struct ComponentPaths {
    /// `PD` or `TiKV`, for messages.
    pub component: &'static str,
    /// Directory of the rendered configuration file.
    pub config_dir: &'static str,
    /// Default data directory.
    pub data_dir: &'static str,
    /// Directory the TLS Secret is mounted at when the Cluster enables TLS.
    pub tls_dir: &'static str,
}

/// Maximum length of a path (`mountPath`, `subPath`).
pub const MAX_PATH_LEN: u32 = 512;
/// Maximum length of an image reference.
pub const MAX_IMAGE_LEN: u32 = 512;
/// Maximum number of labels or annotations in one map.
pub const MAX_MAP_ENTRIES: u32 = 64;
/// Maximum number of node labels in one topology.
pub const MAX_TOPOLOGY_LABELS: u32 = 16;

fn list_quoted(items: &[&str]) -> String {
    items
        .iter()
        .map(|i| format!("'{i}'"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `cluster.name`: the name of a Cluster (non-empty, and short enough to be one).
pub fn cluster_name() -> Value {
    let max = names::MAX_CLUSTER_NAME_LEN;
    json!([rule(
        format!("size(self) <= {max} && self.matches('{DNS1035_LABEL}')"),
        format!(
            "cluster.name must name a Cluster: a non-empty DNS-1035 label (lower-case letters, digits, '-', starting with a letter) of at most {max} characters"
        ),
    )])
}

/// Instance `subdomain`: the name of the group's headless Service; it never
/// changes (the member's DNS name depends on it).
pub fn subdomain() -> Value {
    let max = names::DNS_LABEL_MAX_LEN;
    json!([
        rule("self == oldSelf", "subdomain is immutable"),
        rule(
            format!("size(self) <= {max} && self.matches('{DNS1035_LABEL}')"),
            format!(
                "subdomain must be the name of a Service: a non-empty DNS-1035 label of at most {max} characters"
            ),
        )
    ])
}

/// `image`: a container image reference.
pub fn image() -> Value {
    json!([rule(
        format!("self.matches('{IMAGE}')"),
        "image must be a container image reference such as pingcap/pd, pingcap/pd:v8.5.5, registry.example.com:5000/pd or pingcap/pd@sha256:<hex digest> (lower-case repository path, no spaces)",
    )])
}

/// Maximum length of a quantity string.
pub const MAX_QUANTITY_LEN: u32 = 64;

/// Rule over an `x-kubernetes-int-or-string` quantity field: an integer, or a
/// string Kubernetes parses as a quantity, greater than zero. Uses the
/// Kubernetes CEL quantity library (`isQuantity`, `quantity`), which both the
/// API server (1.29 and later) and the offline evaluator provide; `string()`
/// makes the integer form a quantity string too (`type()` would be the
/// obvious test, but the offline evaluator lacks it).
pub fn positive_quantity(what: &str, example: &str) -> Value {
    json!([rule(
        "isQuantity(string(self)) && quantity(string(self)).isGreaterThan(quantity('0'))",
        format!("{what} must be a positive quantity such as {example}"),
    )])
}

/// Rule over a quantity kept as a string (`storage`): a quantity greater than zero.
pub fn positive_quantity_string(what: &str, example: &str) -> Value {
    json!([rule(
        "isQuantity(self) && quantity(self).isGreaterThan(quantity('0'))",
        format!("{what} must be a positive quantity such as {example}"),
    )])
}

/// Rules of one volume: mounts, storage that never shrinks, and a
/// StorageClass that never changes. Transition rules compare the volume with
/// the old volume of the same name (the volume list is a map keyed by name;
/// the name check matters only to evaluators that pair list items by index).
///
pub fn volume() -> Value {
    json!([
        rule(
            "has(self.mounts) && size(self.mounts) > 0",
            "a volume needs at least one mount"
        ),
        rule(
            "self.name != oldSelf.name || !isQuantity(self.storage) || !isQuantity(oldSelf.storage) || quantity(self.storage).compareTo(quantity(oldSelf.storage)) >= 0",
            "storage of an existing volume may grow but not shrink (a PVC cannot be made smaller)",
        ),
        rule(
            "self.name != oldSelf.name || (has(self.storageClassName) == has(oldSelf.storageClassName) && (!has(self.storageClassName) || self.storageClassName == oldSelf.storageClassName))",
            "storageClassName of an existing volume is immutable (a PVC's class cannot change)",
        ),
    ])
}

/// `volumes[].name` may not take the name of the operator's configuration
/// volume or of its TLS Secret volume.
pub fn volume_name_not_reserved() -> Value {
    json!(rule(
        format!("self != '{CONFIG_VOLUME_NAME}' && self != '{TLS_VOLUME_NAME}'"),
        format!(
            "volume names '{CONFIG_VOLUME_NAME}' and '{TLS_VOLUME_NAME}' are reserved: the operator mounts the configuration and the TLS Secret under those names"
        ),
    ))
}

/// Names of Kubernetes objects the operator only refers to (StorageClass,
/// VolumeAttributesClass): DNS-1123 subdomains, at most 253 characters.
pub fn object_reference(what: &str) -> Value {
    json!([rule(
        format!("size(self) <= 253 && self.matches('{DNS1123_SUBDOMAIN}')"),
        format!(
            "{what} must be the name of an object: a DNS-1123 subdomain (lower-case letters, digits, '-', '.') of at most 253 characters"
        ),
    )])
}

/// A storage class name: as [`object_reference`], or empty (no class).
pub fn storage_class_name() -> Value {
    json!([rule(
        format!("self == '' || (size(self) <= 253 && self.matches('{DNS1123_SUBDOMAIN}'))"),
        "storageClassName must be empty or the name of a StorageClass: a DNS-1123 subdomain (lower-case letters, digits, '-', '.') of at most 253 characters",
    )])
}

/// CEL: a regex matching a `..` path element.
const DOTDOT: &str = "(^|/)[.][.](/|$)";

/// One mount: where it goes.
pub fn volume_mount() -> Value {
    json!([rule(
        "has(self.type) || has(self.mountPath)",
        "a mount needs a type or a mountPath",
    )])
}

/// `mountPath`: an absolute path in the container.
pub fn mount_path() -> Value {
    json!([rule(
        format!("self.startsWith('/') && self != '/' && !self.matches('{DOTDOT}')"),
        "mountPath must be an absolute path other than '/', without '..' elements",
    )])
}

/// `subPath`: a path relative to the volume's root that stays inside it.
pub fn sub_path() -> Value {
    json!([rule(
        format!("!self.startsWith('/') && !self.matches('{DOTDOT}')"),
        "subPath must be a relative path without '..' elements",
    )])
}

/// Rules over a component's whole volume list: a `data` volume, unique names,
/// unique mount paths, no mount over the configuration or TLS directory, at most one
/// `data` mount.
pub fn volumes(paths: &ComponentPaths) -> Value {
    let ComponentPaths {
        component,
        config_dir,
        data_dir,
        tls_dir,
    } = *paths;
    let path = |m: &str| format!("(has({m}.mountPath) ? {m}.mountPath : '{data_dir}')");
    let is_data = |m: &str| format!("(has({m}.type) && {m}.type == 'data')");
    json!([
        rule(
            "self.exists(v, v.name == 'data')",
            "a volume named 'data' is required; it holds the component's data directory",
        ),
        rule(
            "self.all(v, self.exists_one(w, w.name == v.name))",
            "volume names must be unique",
        ),
        rule(
            format!(
                "self.all(v, v.mounts.all(m, v.mounts.exists_one(n, {pn} == {pm}) && self.exists_one(w, w.mounts.exists(n, {pn} == {pm}))))",
                pn = path("n"),
                pm = path("m"),
            ),
            format!(
                "mount paths must be unique over all volumes (a mount without mountPath is at {data_dir})"
            ),
        ),
        rule(
            format!(
                "self.all(v, v.mounts.all(m, {} != '{config_dir}'))",
                path("m")
            ),
            format!("mountPath {config_dir} is reserved for the {component} configuration"),
        ),
        rule(
            format!("self.all(v, v.mounts.all(m, {} != '{tls_dir}'))", path("m")),
            format!("mountPath {tls_dir} is reserved for the {component} TLS Secret"),
        ),
        rule(
            format!(
                "self.filter(v, v.mounts.exists(m, {d})).size() <= 1 && self.all(v, v.mounts.filter(m, {d}).size() <= 1)",
                d = is_data("m"),
            ),
            "at most one mount may have type data",
        ),
    ])
}

/// PD volumes.
pub fn pd_volumes() -> Value {
    volumes(&PD_PATHS)
}

/// TiKV volumes.
pub fn tikv_volumes() -> Value {
    volumes(&TIKV_PATHS)
}

/// A port number.
pub fn port() -> Value {
    json!([rule(
        "self >= 1 && self <= 65535",
        "port must be between 1 and 65535"
    )])
}

/// Two ports of one component, with their defaults, must differ.
pub fn distinct_ports(a: (&str, i32), b: (&str, i32)) -> Value {
    let (an, ad) = a;
    let (bn, bd) = b;
    json!([rule(
        format!(
            "(has(self.{an}) ? self.{an}.port : {ad}) != (has(self.{bn}) ? self.{bn}.port : {bd})"
        ),
        format!("server.ports.{an} and server.ports.{bn} must differ (defaults {ad} and {bd})"),
    )])
}

/// Rules of a map of Kubernetes labels (`what` names it in messages):
/// valid keys and values, none of the keys the operator sets.
pub fn label_map(what: &str) -> Value {
    let key = qualified_name_regex();
    let value = label_value_regex();
    let max_key = MAX_QUALIFIED_NAME_LEN;
    let owned = list_quoted(OWNED_LABEL_KEYS);
    json!([
        rule(
            format!("self.all(k, size(k) <= {max_key} && k.matches('{key}'))"),
            format!(
                "{what} keys must be label keys: an optional DNS subdomain prefix and '/', then at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit"
            ),
        ),
        rule(
            format!("self.all(k, self[k].matches('{value}'))"),
            format!(
                "{what} values must be label values: empty, or at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit"
            ),
        ),
        rule(
            format!("!self.exists(k, k.startsWith('{OWNED_KEY_PREFIX}') || k in [{owned}])"),
            format!(
                "{what} must not set keys the operator owns ({}, {OWNED_KEY_PREFIX}*)",
                OWNED_LABEL_KEYS.join(", ")
            ),
        ),
    ])
}

/// Rules of a map of annotations: valid keys, none under the operator's prefix.
pub fn annotation_map() -> Value {
    let key = qualified_name_regex();
    let max_key = MAX_QUALIFIED_NAME_LEN;
    json!([
        rule(
            format!("self.all(k, size(k) <= {max_key} && k.matches('{key}'))"),
            "annotations keys must be annotation keys: an optional DNS subdomain prefix and '/', then at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit",
        ),
        rule(
            format!("!self.exists(k, k.startsWith('{OWNED_KEY_PREFIX}'))"),
            format!(
                "annotations must not set keys the operator owns ({OWNED_KEY_PREFIX}*); set them on the object itself where documented"
            ),
        ),
    ])
}

/// A topology: node label keys and values, at least one of them.
pub fn topology() -> Value {
    let key = qualified_name_regex();
    let value = label_value_regex();
    let max_key = MAX_QUALIFIED_NAME_LEN;
    json!([
        rule("size(self) > 0", "a topology needs at least one node label"),
        rule(
            format!("self.all(k, size(k) <= {max_key} && k.matches('{key}'))"),
            "topology keys must be node label keys: an optional DNS subdomain prefix and '/', then at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit",
        ),
        rule(
            format!("self.all(k, self[k].matches('{value}'))"),
            "topology values must be node label values: empty, or at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit",
        ),
    ])
}

/// `evenlySpread.topologies`: each topology once.
pub fn distinct_topologies() -> Value {
    json!([rule(
        "self.all(t, self.exists_one(u, u.topology == t.topology))",
        "evenlySpread.topologies must be distinct",
    )])
}

/// `schedulePolicies`: one policy of each type (only the first would be used).
pub fn one_policy_per_type() -> Value {
    json!([rule(
        "self.all(p, self.exists_one(q, q.type == p.type))",
        "schedulePolicies may hold only one policy of each type",
    )])
}

/// TiKV `server.labels`: store labels as TiKV accepts them, none PD reserves.
pub fn store_labels() -> Value {
    json!([
        rule(
            format!("self.all(k, k.matches('{STORE_LABEL}') && self[k].matches('{STORE_LABEL}'))"),
            "server.labels keys and values must be non-empty and made of letters, digits, '-', '_' or '.', starting and ending with a letter or digit (TiKV refuses other store labels)",
        ),
        rule(
            format!("!('{RESERVED_STORE_LABEL}' in self)"),
            format!(
                "server.labels must not set '{RESERVED_STORE_LABEL}': PD reserves it for TiFlash stores"
            ),
        ),
    ])
}

/// `featureGates[].name`: an UpperCamelCase feature name.
pub fn feature_gate_name() -> Value {
    json!([rule(
        "self.matches('^[A-Z][A-Za-z0-9]*$')",
        "feature gate name must be an UpperCamelCase name such as SomeFeature",
    )])
}
