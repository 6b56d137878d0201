//! The generated CRDs are structural and carry what users expect of them.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;

use serde_json::Value;
use tikv_operator_api::all_crds;

fn schemas() -> Vec<(String, Value)> {
    all_crds()
        .into_iter()
        .map(|crd| {
            let schema = tikv_operator_api::schema_json(&crd).unwrap();
            (crd.metadata.name.unwrap(), schema)
        })
        .collect()
}

/// Walks a schema and returns every structural violation, with its path.
fn structural_violations(
    node: &Value,
    path: &str,
    in_junctor: bool,
    out: &mut Vec<String>,
    preserve: &mut BTreeSet<String>,
) {
    let Some(obj) = node.as_object() else {
        out.push(format!("{path}: schema node is not an object"));
        return;
    };
    for forbidden in ["$ref", "definitions", "$defs", "$schema"] {
        if obj.contains_key(forbidden) {
            out.push(format!("{path}: contains {forbidden}"));
        }
    }
    let int_or_string = obj.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true));
    let preserves = obj.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true));
    if preserves {
        preserve.insert(path.to_owned());
    }
    if in_junctor {
        for key in [
            "type",
            "description",
            "default",
            "additionalProperties",
            "nullable",
            "x-kubernetes-preserve-unknown-fields",
        ] {
            if obj.contains_key(key) {
                out.push(format!("{path}: `{key}` inside anyOf/oneOf/allOf/not"));
            }
        }
    } else {
        match obj.get("type").and_then(Value::as_str) {
            Some("object" | "array" | "string" | "integer" | "number" | "boolean") => {}
            Some(other) => out.push(format!("{path}: unknown type {other}")),
            None if int_or_string || preserves => {}
            None => out.push(format!("{path}: missing type")),
        }
    }
    if obj.contains_key("properties") && obj.contains_key("additionalProperties") {
        out.push(format!("{path}: both properties and additionalProperties"));
    }
    if let Some(Value::Object(props)) = obj.get("properties") {
        for (name, child) in props {
            structural_violations(child, &format!("{path}.{name}"), in_junctor, out, preserve);
        }
    }
    if let Some(items) = obj.get("items") {
        structural_violations(items, &format!("{path}[]"), in_junctor, out, preserve);
    }
    if let Some(additional @ Value::Object(_)) = obj.get("additionalProperties") {
        structural_violations(
            additional,
            &format!("{path}{{}}"),
            in_junctor,
            out,
            preserve,
        );
    }
    for junctor in ["anyOf", "oneOf", "allOf"] {
        // Branches may only repeat value validations of what the node itself declares.
        if let Some(Value::Array(branches)) = obj.get(junctor)
            && !int_or_string
            && junctor != "allOf"
        {
            for (i, branch) in branches.iter().enumerate() {
                structural_violations(
                    branch,
                    &format!("{path}.{junctor}[{i}]"),
                    true,
                    out,
                    preserve,
                );
            }
        }
    }
    if let Some(not) = obj.get("not") {
        structural_violations(not, &format!("{path}.not"), true, out, preserve);
    }
    // Map-keyed lists: the key fields must be required in the items.
    if obj.get("x-kubernetes-list-type").and_then(Value::as_str) == Some("map") {
        let required: BTreeSet<&str> = obj
            .get("items")
            .and_then(|i| i.get("required"))
            .and_then(Value::as_array)
            .map(|r| r.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        for key in obj
            .get("x-kubernetes-list-map-keys")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let key = key.as_str().unwrap_or_default();
            if !required.contains(key) {
                out.push(format!(
                    "{path}: list map key `{key}` is not required in items"
                ));
            }
        }
    }
}

#[test]
fn every_schema_is_structural() {
    for (name, schema) in schemas() {
        let mut violations = Vec::new();
        let mut preserve = BTreeSet::new();
        structural_violations(&schema, "", false, &mut violations, &mut preserve);
        assert!(
            violations.is_empty(),
            "{name} is not structural:\n{}",
            violations.join("\n")
        );
    }
}

#[test]
fn the_walker_catches_non_structural_constructs() {
    let bad = serde_json::json!({
        "type": "object",
        "properties": {
            "untyped": {"description": "no type"},
            "union": {"type": "object", "anyOf": [{"type": "string"}, {"type": "integer"}]},
            "ref": {"$ref": "#/definitions/X", "type": "object"},
            "list": {"type": "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"],
                     "items": {"type": "object", "properties": {"name": {"type": "string"}}}}
        }
    });
    let mut violations = Vec::new();
    structural_violations(&bad, "", false, &mut violations, &mut BTreeSet::new());
    let all = violations.join("\n");
    assert!(all.contains(".untyped: missing type"), "{all}");
    assert!(all.contains(".union.anyOf[0]: `type` inside"), "{all}");
    assert!(all.contains(".ref: contains $ref"), "{all}");
    assert!(
        all.contains(".list: list map key `name` is not required"),
        "{all}"
    );
}

#[test]
fn unknown_fields_are_preserved_only_in_overlay_specs() {
    let overlay_specs: BTreeSet<String> = [
        ".spec.template.spec.overlay.pod.spec",
        ".spec.template.spec.overlay.volumeClaims[].volumeClaim.spec",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    let instance_specs: BTreeSet<String> = [
        ".spec.overlay.pod.spec",
        ".spec.overlay.volumeClaims[].volumeClaim.spec",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    for (name, schema) in schemas() {
        let mut preserve = BTreeSet::new();
        structural_violations(&schema, "", false, &mut Vec::new(), &mut preserve);
        let expected = match name.split('.').next().unwrap() {
            "clusters" => BTreeSet::new(),
            "pdgroups" | "tikvgroups" => overlay_specs.clone(),
            "pds" | "tikvs" => instance_specs.clone(),
            other => panic!("unexpected CRD {other}"),
        };
        assert_eq!(preserve, expected, "{name}");
    }
}

fn descriptions_missing(node: &Value, path: &str, out: &mut Vec<String>) {
    if let Some(Value::Object(props)) = node.get("properties") {
        for (name, child) in props {
            let child_path = format!("{path}.{name}");
            if child
                .get("description")
                .and_then(Value::as_str)
                .is_none_or(str::is_empty)
            {
                out.push(child_path.clone());
            }
            descriptions_missing(child, &child_path, out);
        }
    }
    if let Some(items) = node.get("items") {
        descriptions_missing(items, &format!("{path}[]"), out);
    }
}

#[test]
fn every_field_has_a_description_for_kubectl_explain() {
    for (name, schema) in schemas() {
        let mut missing = Vec::new();
        descriptions_missing(&schema, "", &mut missing);
        // apiVersion/kind/metadata are described by Kubernetes itself; Kubernetes
        // types embedded from k8s-openapi (conditions) carry their own text.
        missing.retain(|p| !matches!(p.as_str(), ".apiVersion" | ".kind" | ".metadata"));
        assert!(
            missing.is_empty(),
            "{name}: fields without description: {missing:?}"
        );
    }
}

#[test]
fn names_subresources_and_columns() {
    let crds = all_crds();
    let by_kind = |kind: &str| crds.iter().find(|c| c.spec.names.kind == kind).unwrap();
    for crd in &crds {
        assert_eq!(crd.spec.group, "core.tikv.org");
        assert_eq!(crd.spec.scope, "Namespaced");
        let version = &crd.spec.versions[0];
        assert_eq!(version.name, "v1alpha1");
        let sub = version.subresources.as_ref().unwrap();
        assert!(
            sub.status.is_some(),
            "{} has no status subresource",
            crd.spec.names.kind
        );
        let categories = crd.spec.names.categories.clone().unwrap();
        assert!(categories.contains(&"tikv-all".to_owned()));
        // A category named like a kind's singular, plural or short name would
        // shadow it: `kubectl get tikv <name>` must address one object.
        for c in &categories {
            for other in &crds {
                let n = &other.spec.names;
                assert!(
                    *c != n.plural
                        && Some(c) != n.singular.as_ref()
                        && !n.short_names.clone().unwrap_or_default().contains(c),
                    "category {c} shadows {}",
                    n.kind
                );
            }
        }
    }
    for (kind, short, category, columns) in [
        (
            "PDGroup",
            "pdg",
            "tikv-groups",
            vec![
                "Cluster", "Desired", "Ready", "Updated", "Revision", "Synced", "Age",
            ],
        ),
        (
            "TiKVGroup",
            "kvg",
            "tikv-groups",
            vec![
                "Cluster", "Desired", "Ready", "Updated", "Revision", "Synced", "Age",
            ],
        ),
        (
            "PD",
            "pdi",
            "tikv-instances",
            vec!["Cluster", "Leader", "Ready", "Age"],
        ),
        (
            "TiKV",
            "kv",
            "tikv-instances",
            vec![
                "Cluster",
                "StoreID",
                "StoreState",
                "Leaders",
                "Ready",
                "Age",
            ],
        ),
        ("Cluster", "tkc", "tikv-all", vec!["PD", "Ready", "Age"]),
    ] {
        let crd = by_kind(kind);
        assert_eq!(
            crd.spec.names.short_names.clone().unwrap(),
            vec![short.to_owned()]
        );
        assert!(
            crd.spec
                .names
                .categories
                .clone()
                .unwrap()
                .contains(&category.to_owned())
        );
        let got: Vec<String> = crd.spec.versions[0]
            .additional_printer_columns
            .clone()
            .unwrap()
            .into_iter()
            .map(|c| c.name)
            .collect();
        assert_eq!(got, columns, "{kind}");
    }
    for kind in ["PDGroup", "TiKVGroup"] {
        let scale = by_kind(kind).spec.versions[0]
            .subresources
            .clone()
            .unwrap()
            .scale
            .unwrap();
        assert_eq!(scale.spec_replicas_path, ".spec.replicas");
        assert_eq!(scale.status_replicas_path, ".status.replicas");
        assert_eq!(
            scale.label_selector_path.as_deref(),
            Some(".status.selector")
        );
    }
    for kind in ["PD", "TiKV", "Cluster"] {
        assert!(
            by_kind(kind).spec.versions[0]
                .subresources
                .clone()
                .unwrap()
                .scale
                .is_none()
        );
    }
}

/// The API server estimates the worst-case cost of every CEL rule from the
/// schema bounds and rejects the CRD when it is over budget. Unbounded strings
/// and lists are what blow the estimate, so: every string a rule inspects has a
/// `maxLength`, and every list on the path to a rule has a `maxItems`.
fn unbounded_rule_inputs(
    node: &Value,
    path: &str,
    lists_above_bounded: bool,
    out: &mut Vec<String>,
) {
    let has_rules = node.get("x-kubernetes-validations").is_some();
    let ty = node.get("type").and_then(Value::as_str);
    if has_rules {
        if ty == Some("string") && node.get("maxLength").is_none() {
            out.push(format!("{path}: string with CEL rules has no maxLength"));
        }
        if ty == Some("array") && node.get("maxItems").is_none() {
            out.push(format!("{path}: list with CEL rules has no maxItems"));
        }
        if !lists_above_bounded {
            out.push(format!("{path}: CEL rules inside a list without maxItems"));
        }
    }
    if let Some(Value::Object(props)) = node.get("properties") {
        for (name, child) in props {
            unbounded_rule_inputs(child, &format!("{path}.{name}"), lists_above_bounded, out);
        }
    }
    if let Some(items) = node.get("items") {
        let bounded = lists_above_bounded && node.get("maxItems").is_some();
        unbounded_rule_inputs(items, &format!("{path}[]"), bounded, out);
    }
}

#[test]
fn cel_rule_inputs_are_bounded() {
    for (name, schema) in schemas() {
        let mut problems = Vec::new();
        unbounded_rule_inputs(&schema, "", true, &mut problems);
        assert!(problems.is_empty(), "{name}:\n{}", problems.join("\n"));
    }
}
