//! Every YAML document under `examples/` deserializes into the typed API and
//! has no field the API does not know (a typo would otherwise be dropped
//! silently by the API server's pruning). The cert-manager objects of
//! `examples/tls/` are not ours: they are only parsed here (their contents are
//! checked against what the TLS example needs in
//! crates/manager/tests/tls_example.rs).
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;
use tikv_operator_api::{Cluster, PD, PDGroup, TiKV, TiKVGroup};

fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            yaml_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            out.push(path);
        }
    }
}

/// Paths present in `input` but absent after a typed round trip.
fn dropped_fields(input: &Value, typed: &Value, path: &str, out: &mut Vec<String>) {
    match (input, typed) {
        (Value::Object(a), Value::Object(b)) => {
            for (key, value) in a {
                match b.get(key) {
                    Some(other) => dropped_fields(value, other, &format!("{path}.{key}"), out),
                    // Empty objects/lists may be skipped on output; they carry nothing.
                    None if value.as_object().is_some_and(|o| o.is_empty()) => {}
                    None => out.push(format!("{path}.{key}")),
                }
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                dropped_fields(x, y, &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

fn round_trip<T: for<'de> Deserialize<'de> + serde::Serialize>(
    doc: &Value,
) -> Result<Value, String> {
    let typed: T = serde_json::from_value(doc.clone()).map_err(|e| e.to_string())?;
    Ok(serde_json::to_value(typed).unwrap())
}

/// cert-manager kinds the TLS example uses (`apiVersion: cert-manager.io/v1`).
const CERT_MANAGER_KINDS: &[&str] = &["Issuer", "Certificate"];

/// A cert-manager object: not an object of this API.
fn is_cert_manager(doc: &Value) -> bool {
    doc.get("apiVersion").and_then(Value::as_str) == Some("cert-manager.io/v1")
        && doc
            .get("kind")
            .and_then(Value::as_str)
            .is_some_and(|k| CERT_MANAGER_KINDS.contains(&k))
}

fn check(doc: &Value) -> Result<(), String> {
    let kind = doc.get("kind").and_then(Value::as_str).unwrap_or_default();
    if doc.get("apiVersion").and_then(Value::as_str) != Some(tikv_operator_api::API_VERSION) {
        return Err(format!(
            "apiVersion is not {}",
            tikv_operator_api::API_VERSION
        ));
    }
    let typed = match kind {
        "Cluster" => round_trip::<Cluster>(doc)?,
        "PDGroup" => round_trip::<PDGroup>(doc)?,
        "PD" => round_trip::<PD>(doc)?,
        "TiKVGroup" => round_trip::<TiKVGroup>(doc)?,
        "TiKV" => round_trip::<TiKV>(doc)?,
        other => return Err(format!("unknown kind {other:?}")),
    };
    let mut dropped = Vec::new();
    dropped_fields(doc, &typed, "", &mut dropped);
    if dropped.is_empty() {
        Ok(())
    } else {
        Err(format!("unknown fields: {dropped:?}"))
    }
}

fn documents(text: &str) -> Vec<Value> {
    serde_norway::Deserializer::from_str(text)
        .map(|d| Value::deserialize(d).unwrap())
        .filter(|v| !v.is_null())
        .collect()
}

#[test]
fn every_example_parses_without_unknown_fields() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    let mut files = Vec::new();
    yaml_files(&root, &mut files);
    files.sort();
    assert!(
        files.len() >= 2,
        "expected the basic and heterogeneous examples, found {files:?}"
    );
    let mut failures = Vec::new();
    let mut kinds = Vec::new();
    for file in &files {
        for (i, doc) in documents(&std::fs::read_to_string(file).unwrap())
            .iter()
            .enumerate()
        {
            kinds.push(
                doc.get("kind")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned(),
            );
            if is_cert_manager(doc) {
                continue;
            }
            if let Err(e) = check(doc) {
                failures.push(format!("{} document {i}: {e}", file.display()));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    for kind in ["Cluster", "PDGroup", "TiKVGroup"] {
        assert!(kinds.iter().any(|k| k == kind), "no example has a {kind}");
    }
}

#[test]
fn every_example_passes_the_cel_rules() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    let mut files = Vec::new();
    yaml_files(&root, &mut files);
    let validator = kube_cel::Validator::new();
    for file in files {
        for doc in documents(&std::fs::read_to_string(&file).unwrap()) {
            if is_cert_manager(&doc) {
                continue;
            }
            let kind = doc["kind"].as_str().unwrap();
            let schema = tikv_operator_api::schema_json_of(kind).unwrap();
            if let Err(errs) = validator.validate(&schema, &doc, None) {
                panic!("{} {kind}: {errs:?}", file.display());
            }
        }
    }
}

#[test]
fn the_unknown_field_check_catches_a_typo() {
    let doc: Value = serde_json::json!({
        "apiVersion": "core.tikv.org/v1alpha1", "kind": "PDGroup", "metadata": {"name": "pd"},
        "spec": {"cluster": {"name": "c"}, "replicas": 3, "replica": 4,
                 "template": {"spec": {"version": "v8.5.5", "volumes": [{"name": "data", "mounts": [{"type": "data"}], "storage": "1Gi"}]}}}
    });
    let err = check(&doc).unwrap_err();
    assert!(err.contains(".spec.replica"), "{err}");
}

#[test]
fn only_cert_manager_objects_are_passed_over() {
    let cert = serde_json::json!({"apiVersion": "cert-manager.io/v1", "kind": "Certificate"});
    assert!(is_cert_manager(&cert));
    // Anything else, even a cert-manager kind under another group, is checked.
    for other in [
        serde_json::json!({"apiVersion": "example.com/v1", "kind": "Certificate"}),
        serde_json::json!({"apiVersion": "cert-manager.io/v1", "kind": "Cluster"}),
    ] {
        assert!(!is_cert_manager(&other));
        assert!(check(&other).is_err());
    }
}

/// The library's example program (`crates/api/examples/print_tikvgroup.rs`), compiled in here
/// so its object goes through the same checks as the YAML examples.
#[allow(dead_code)]
#[path = "../examples/print_tikvgroup.rs"]
mod print_tikvgroup;

#[test]
fn the_example_program_builds_a_tikvgroup_the_api_accepts() {
    let validator = kube_cel::Validator::new();
    let schema = tikv_operator_api::schema_json_of("TiKVGroup").unwrap();
    let group = print_tikvgroup::tikv_group("tikv", "basic", 3, print_tikvgroup::DEFAULT_VERSION);
    let doc = serde_json::to_value(&group).unwrap();
    check(&doc).unwrap();
    if let Err(errs) = validator.validate(&schema, &doc, None) {
        panic!("{errs:?}");
    }
    // The same checks refuse what the API server would refuse.
    let bad = print_tikvgroup::tikv_group("tikv", "basic", -1, "latest");
    let bad = serde_json::to_value(&bad).unwrap();
    assert!(validator.validate(&schema, &bad, None).is_err());
}
