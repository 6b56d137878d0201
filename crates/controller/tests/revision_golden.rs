//! The Pod revisions of every example (PD and TiKV instances as their groups
//! create them) are pinned in `tests/golden/revisions.json`.
//!
//! A Pod revision decides whether a running Pod is restarted. It must change
//! only with the user's inputs or a deliberate bump of
//! `tikv_operator_core::revision::RENDERING_GENERATION` (which restarts every
//! Pod of every Cluster once after an operator upgrade). A change in rendering
//! code alone must leave it alone. Regenerate the file after a deliberate bump
//! with `UPDATE_GOLDEN=1 cargo test -p tikv-operator-controller --test revision_golden`.
//! It lives in the controller crate, which depends on both layers (no layer
//! crate depends on another).
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::Pod;
use serde::Deserialize;
use serde_json::{Value, json};
use tikv_operator_api::{PDGroup, TiKVGroup};
use tikv_operator_core::revision::RENDERING_GENERATION;
use tikv_operator_pd_layer::group::NewInstance as NewPd;
use tikv_operator_pd_layer::reconcile::render_instance_objects as render_pd;
use tikv_operator_tikv_layer::group::NewInstance as NewKv;
use tikv_operator_tikv_layer::reconcile::render_instance_objects as render_kv;

const NAMESPACE: &str = "golden";
const EXTRA_ENV: &str = "TIKV_OPERATOR_GOLDEN_EXTRA";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn golden_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/revisions.json")
}

fn examples() -> Vec<PathBuf> {
    let mut out = Vec::new();
    for dir in std::fs::read_dir(root().join("examples")).unwrap() {
        let dir = dir.unwrap().path();
        if !dir.is_dir() {
            continue;
        }
        for f in std::fs::read_dir(&dir).unwrap() {
            let f = f.unwrap().path();
            if f.extension().is_some_and(|e| e == "yaml" || e == "yml") {
                out.push(f);
            }
        }
    }
    out.sort();
    assert!(!out.is_empty(), "no example found");
    out
}

fn documents(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap();
    serde_norway::Deserializer::from_str(&text)
        .map(|d| Value::deserialize(d).unwrap())
        .filter(|v| !v.is_null())
        .collect()
}

/// The topologies of a group's `EvenlySpread` policy, in order (the group
/// spreads its instances over them).
fn topologies(doc: &Value) -> Vec<BTreeMap<String, String>> {
    doc.pointer("/spec/schedulePolicies/0/evenlySpread/topologies")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|t| serde_json::from_value(t["topology"].clone()).unwrap())
        .collect()
}

fn with_namespace(mut doc: Value) -> Value {
    doc["metadata"]["namespace"] = json!(NAMESPACE);
    doc["metadata"]["uid"] = json!("golden-uid");
    doc
}

/// Every example instance's rendered Pod, by `<example> <kind>/<group>/<instance>`.
fn rendered_pods() -> BTreeMap<String, Pod> {
    let mut out = BTreeMap::new();
    for file in examples() {
        let example = file
            .strip_prefix(root().join("examples"))
            .unwrap()
            .display()
            .to_string();
        let docs = documents(&file);
        // The Cluster's PD URL, as its PDGroup's client Service publishes it.
        let pd_url = docs.iter().find(|d| d["kind"] == "PDGroup").map(|d| {
            let name = d["metadata"]["name"].as_str().unwrap();
            tikv_operator_pd_layer::render::client_service_url(name, NAMESPACE, 2379)
        });
        for doc in docs {
            let spread = topologies(&doc);
            let topology =
                |i: usize| (!spread.is_empty()).then(|| spread[i % spread.len()].clone());
            match doc["kind"].as_str().unwrap() {
                "PDGroup" => {
                    let group: PDGroup = serde_json::from_value(with_namespace(doc)).unwrap();
                    let name = group.metadata.name.clone().unwrap();
                    let members: Vec<String> = (0..group.spec.replicas)
                        .map(|i| format!("{name}-golden{i}"))
                        .collect();
                    for (i, m) in members.iter().enumerate() {
                        let pd = tikv_operator_pd_layer::render::render_instance(
                            &group,
                            &NewPd {
                                name: m.clone(),
                                topology: topology(i),
                                bootstrap_members: Some(members.clone()),
                            },
                            false,
                        );
                        let r = render_pd(&pd, None).unwrap();
                        out.insert(format!("{example} PDGroup/{name}/{m}"), r.pod);
                    }
                }
                "TiKVGroup" => {
                    let group: TiKVGroup = serde_json::from_value(with_namespace(doc)).unwrap();
                    let name = group.metadata.name.clone().unwrap();
                    for i in 0..usize::try_from(group.spec.replicas).unwrap() {
                        let m = format!("{name}-golden{i}");
                        let kv = tikv_operator_tikv_layer::render::render_instance(
                            &group,
                            &NewKv {
                                name: m.clone(),
                                topology: topology(i),
                            },
                            false,
                            false,
                        );
                        let r = render_kv(&kv, pd_url.as_deref(), None).unwrap();
                        out.insert(format!("{example} TiKVGroup/{name}/{m}"), r.pod);
                    }
                }
                _ => {}
            }
        }
    }
    out
}

fn revision(pod: &Pod) -> String {
    pod.metadata.annotations.as_ref().unwrap()[tikv_operator_api::labels::INSTANCE_REVISION].clone()
}

fn revisions(pods: &BTreeMap<String, Pod>) -> BTreeMap<String, String> {
    pods.iter().map(|(k, p)| (k.clone(), revision(p))).collect()
}

fn golden() -> Value {
    json!({
        "renderingGeneration": RENDERING_GENERATION,
        "revisions": revisions(&rendered_pods()),
    })
}

/// The revisions of today's rendering are the committed ones; then the same
/// holds with a rendering change (an extra environment variable in every
/// container, through the test-only hook the e2e tests use).
#[test]
fn example_pod_revisions_match_the_golden_file() {
    let now = golden();
    let path = golden_path();
    if std::env::var_os("UPDATE_GOLDEN").is_some_and(|v| v == "1") {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, serde_json::to_string_pretty(&now).unwrap() + "\n").unwrap();
    }
    let committed: Value = serde_json::from_str(
        &std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e}; create it with UPDATE_GOLDEN=1", path.display())),
    )
    .unwrap();
    assert!(
        committed["revisions"]
            .as_object()
            .is_some_and(|r| r.len() >= 6),
        "{} lists too few instances",
        path.display()
    );
    if committed["renderingGeneration"] != now["renderingGeneration"] {
        panic!(
            "RENDERING_GENERATION is {} but {} was generated under {}. A bump restarts every PD \
             and TiKV Pod of every Cluster once after the operator upgrade: if that is what you \
             want, say so in the release notes and regenerate the file with `UPDATE_GOLDEN=1 \
             cargo test -p tikv-operator-controller --test revision_golden`",
            RENDERING_GENERATION,
            path.display(),
            committed["renderingGeneration"]
        );
    }
    let changed: Vec<String> = now["revisions"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(k, v)| committed["revisions"].get(k.as_str()) != Some(*v))
        .map(|(k, v)| format!("{k}: {} -> {v}", committed["revisions"][k.as_str()]))
        .collect();
    let gone: Vec<&String> = committed["revisions"]
        .as_object()
        .unwrap()
        .keys()
        .filter(|k| now["revisions"].get(k.as_str()).is_none())
        .collect();
    assert!(
        changed.is_empty() && gone.is_empty(),
        "the Pod revisions of the examples changed without a RENDERING_GENERATION bump:\n{}\n\
         gone: {gone:?}\n\
         A changed revision restarts every running Pod after the operator upgrade. Keep the \
         revision stable: it must depend only on the user's inputs (render::revision_inputs), \
         not on how the operator renders Pods. If running Pods must get a rendering change, bump \
         RENDERING_GENERATION (crates/core/src/revision.rs) on purpose, say so in the release \
         notes and regenerate with `UPDATE_GOLDEN=1 cargo test -p tikv-operator-tikv-layer \
         --test revision_golden`. (Changed an example? Regenerate the same way.)",
        changed.join("\n")
    );

    // A rendering change without a bump: the Pods differ, the revisions do not.
    let before = rendered_pods();
    assert!(tikv_operator_core::test_hooks::set_extra_pod_env(&[(
        EXTRA_ENV.to_owned(),
        "1".to_owned()
    )]));
    let after = rendered_pods();
    for (k, pod) in &after {
        let env = pod.spec.as_ref().unwrap().containers[0].env.clone();
        assert!(
            env.iter().flatten().any(|e| e.name == EXTRA_ENV),
            "{k}: the rendering change did not reach the Pod"
        );
        assert_ne!(before[k].spec, pod.spec, "{k}");
    }
    assert_eq!(revisions(&before), revisions(&after));
}

/// A user input changes every revision: the version (any strategy), the
/// config unless HotReload.
#[test]
fn user_inputs_change_the_revisions() {
    let base = revisions(&rendered_pods());
    let render_basic = |patch: &dyn Fn(&mut Value)| -> BTreeMap<String, String> {
        let file = root().join("examples/basic/cluster.yaml");
        let mut out = BTreeMap::new();
        for mut doc in documents(&file) {
            patch(&mut doc);
            let doc = with_namespace(doc);
            match doc["kind"].as_str().unwrap() {
                "PDGroup" => {
                    let group: PDGroup = serde_json::from_value(doc).unwrap();
                    let name = group.metadata.name.clone().unwrap();
                    let members: Vec<String> = (0..group.spec.replicas)
                        .map(|i| format!("{name}-golden{i}"))
                        .collect();
                    for m in &members {
                        let pd = tikv_operator_pd_layer::render::render_instance(
                            &group,
                            &NewPd {
                                name: m.clone(),
                                topology: None,
                                bootstrap_members: Some(members.clone()),
                            },
                            false,
                        );
                        let key = format!("basic/cluster.yaml PDGroup/{name}/{m}");
                        out.insert(key, revision(&render_pd(&pd, None).unwrap().pod));
                    }
                }
                "TiKVGroup" => {
                    let group: TiKVGroup = serde_json::from_value(doc).unwrap();
                    let name = group.metadata.name.clone().unwrap();
                    for i in 0..group.spec.replicas {
                        let m = format!("{name}-golden{i}");
                        let kv = tikv_operator_tikv_layer::render::render_instance(
                            &group,
                            &NewKv {
                                name: m.clone(),
                                topology: None,
                            },
                            false,
                            false,
                        );
                        let url = tikv_operator_pd_layer::render::client_service_url(
                            "pd", NAMESPACE, 2379,
                        );
                        let key = format!("basic/cluster.yaml TiKVGroup/{name}/{m}");
                        out.insert(
                            key,
                            revision(&render_kv(&kv, Some(&url), None).unwrap().pod),
                        );
                    }
                }
                _ => {}
            }
        }
        out
    };
    let unchanged = render_basic(&|_| {});
    assert!(unchanged.len() >= 2);
    for (k, v) in &unchanged {
        assert_eq!(base.get(k), Some(v), "{k}");
    }
    let differs = |a: &BTreeMap<String, String>| a.iter().all(|(k, v)| unchanged[k] != *v);
    let upgraded = render_basic(&|d| {
        if let Some(v) = d.pointer_mut("/spec/template/spec/version") {
            *v = json!("v8.5.6");
        }
    });
    assert!(
        differs(&upgraded),
        "a version change must change every revision"
    );
    let config = |d: &mut Value| {
        if let Some(spec) = d.pointer_mut("/spec/template/spec") {
            spec["config"] = json!("[log]\nlevel = \"warn\"\n");
        }
    };
    assert!(
        differs(&render_basic(&config)),
        "a config change restarts under Restart"
    );
    let hot = render_basic(&|d| {
        if let Some(spec) = d.pointer_mut("/spec/template/spec") {
            spec["updateStrategy"] = json!({"config": "HotReload"});
        }
    });
    let hot_config = render_basic(&|d| {
        config(d);
        if let Some(spec) = d.pointer_mut("/spec/template/spec") {
            spec["updateStrategy"] = json!({"config": "HotReload"});
        }
    });
    assert_eq!(
        hot, hot_config,
        "a config change under HotReload restarts nothing"
    );
    // Metadata and volume sizes apply in place.
    let in_place = render_basic(&|d| {
        d["spec"]["template"]["metadata"] = json!({"labels": {"team": "db"}});
        if let Some(v) = d.pointer_mut("/spec/template/spec/volumes/0/storage") {
            *v = json!("2Ti");
        }
    });
    assert_eq!(in_place, unchanged);
}
