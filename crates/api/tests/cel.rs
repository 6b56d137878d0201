//! Every CEL rule of the generated CRDs, evaluated offline: one accepted and
//! one rejected object per rule. The e2e suite replays the same cases (from
//! `cel_cases.yaml`) against a real API server.
#![allow(clippy::unwrap_used)]

use serde::Deserialize;
use serde_json::Value;
use tikv_operator_api::all_crds;

/// One case: an object (and for transition rules, the old object) and the
/// expected outcome. `rejects` is a substring of the expected error message.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    name: String,
    kind: String,
    #[serde(default)]
    old: Option<Value>,
    object: Value,
    #[serde(default)]
    rejects: Option<String>,
}

fn cases() -> Vec<Case> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/cel_cases.yaml");
    let text = std::fs::read_to_string(path).unwrap();
    serde_norway::from_str(&text).unwrap()
}

fn schema_of(kind: &str) -> Value {
    tikv_operator_api::schema_json_of(kind).unwrap()
}

#[test]
fn every_rule_compiles() {
    for crd in all_crds() {
        let schema = tikv_operator_api::schema_json(&crd).unwrap();
        let compiled = kube_cel::compile_schema(&schema);
        let errors: Vec<String> = compiled
            .compilation_errors()
            .iter()
            .map(|e| e.to_string())
            .collect();
        assert!(errors.is_empty(), "{}: {errors:?}", crd.spec.names.kind);
    }
}

#[test]
fn accept_and_reject_cases() {
    let validator = kube_cel::Validator::new();
    let mut failures = Vec::new();
    for case in cases() {
        let schema = schema_of(&case.kind);
        let result = validator.validate(&schema, &case.object, case.old.as_ref());
        match (&case.rejects, result) {
            (None, Ok(())) => {}
            (None, Err(errs)) => failures.push(format!(
                "{}: expected accepted, got {:?}",
                case.name,
                errs.iter().map(|e| e.to_string()).collect::<Vec<_>>()
            )),
            (Some(want), Err(errs)) => {
                if !errs.iter().any(|e| e.message.contains(want.as_str())) {
                    failures.push(format!(
                        "{}: rejected, but not with {want:?}: {errs:?}",
                        case.name
                    ));
                }
            }
            (Some(want), Ok(())) => failures.push(format!(
                "{}: expected rejection with {want:?}, was accepted",
                case.name
            )),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Every rule in every CRD must be exercised by at least one rejecting case,
/// so a new rule cannot be added without its test.
#[test]
fn every_rule_has_a_rejecting_case() {
    fn collect(node: &Value, out: &mut Vec<String>) {
        if let Some(rules) = node
            .get("x-kubernetes-validations")
            .and_then(Value::as_array)
        {
            out.extend(
                rules
                    .iter()
                    .filter_map(|r| r.get("message").and_then(Value::as_str))
                    .map(str::to_owned),
            );
        }
        for key in ["properties", "additionalProperties"] {
            if let Some(Value::Object(children)) = node.get(key) {
                children.values().for_each(|c| collect(c, out));
            }
        }
        if let Some(items) = node.get("items") {
            collect(items, out);
        }
    }
    let cases = cases();
    let validator = kube_cel::Validator::new();
    let mut missing = Vec::new();
    for crd in all_crds() {
        let kind = crd.spec.names.kind.clone();
        let schema = schema_of(&kind);
        let mut messages = Vec::new();
        collect(&schema, &mut messages);
        messages.sort();
        messages.dedup();
        // Every message any rejecting case of this kind produced (each case evaluated once).
        let produced: Vec<String> = cases
            .iter()
            .filter(|c| c.kind == kind && c.rejects.is_some())
            .filter_map(|c| validator.validate(&schema, &c.object, c.old.as_ref()).err())
            .flat_map(|errs| errs.iter().map(|e| e.message.clone()).collect::<Vec<_>>())
            .collect();
        for message in messages {
            let covered = produced.contains(&message);
            if !covered {
                missing.push(format!("{kind}: {message}"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "rules without a rejecting case:\n{}",
        missing.join("\n")
    );
}
