//! CEL validation rules (`x-kubernetes-validations`) the API server enforces.
//!
//! The API server, not the operator, is the first line of defence: anything
//! that must never be accepted is rejected here, before the operator sees it.
//! Each function returns the JSON list placed under `x-kubernetes-validations`
//! on one schema node. Tests in `tests/cel.rs` evaluate every rule offline
//! against the generated CRDs with one accepted and one rejected object.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::ValidationRule;
use serde_json::{Value, json};

use crate::names;

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

/// The volume list must contain a volume named `data`.
pub fn data_volume_required() -> Value {
    json!([rule(
        "self.exists(v, v.name == 'data')",
        "a volume named 'data' is required; it holds the component's data directory",
    )])
}

/// Volume names end up in PVC names: DNS-1035 labels of bounded length.
pub fn volume_name() -> Value {
    let max = names::MAX_VOLUME_NAME_LEN;
    json!([rule(
        format!("size(self) <= {max} && self.matches('{DNS1035_LABEL}')"),
        format!(
            "volume name must be a DNS-1035 label (lower-case letters, digits, '-', starting with a letter) of at most {max} characters"
        ),
    )])
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

/// Instance spec: `topology` can be neither changed, added nor removed.
pub fn topology_immutable() -> Value {
    json!([rule(
        "has(self.topology) == has(oldSelf.topology) && (!has(self.topology) || self.topology == oldSelf.topology)",
        "topology is immutable",
    )])
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

/// PD configuration keys the operator sets itself.
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
    tables: &[],
};

/// TiKV configuration keys the operator sets itself (`server.labels` come from
/// `spec.server.labels` and the node's topology).
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
