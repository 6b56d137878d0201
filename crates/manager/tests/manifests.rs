//! Checks of `manifests/operator/`: RBAC grants nothing beyond what the operator uses (no
//! wildcards, Secrets only read, only listed resources and verbs), both variants grant the same
//! namespaced permissions, every binding points at a defined role, the Deployment is hardened,
//! and every manifest file is part of its kustomization.

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding};
use serde::Deserialize;

fn manifests() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../manifests")
}

fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(yaml_files(&path));
        } else if path.extension().is_some_and(|e| e == "yaml") {
            out.push(path);
        }
    }
    out.sort();
    out
}

/// Every document of every YAML file under `manifests/operator`, with its file.
fn documents() -> Vec<(PathBuf, serde_json::Value)> {
    let mut out = Vec::new();
    for path in yaml_files(&manifests().join("operator")) {
        let text = std::fs::read_to_string(&path).unwrap();
        for doc in serde_norway::Deserializer::from_str(&text) {
            let value = serde_json::Value::deserialize(doc)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            if !value.is_null() {
                out.push((path.clone(), value));
            }
        }
    }
    assert!(!out.is_empty(), "no manifests found");
    out
}

fn of_kind(kind: &str) -> Vec<(PathBuf, serde_json::Value)> {
    documents()
        .into_iter()
        .filter(|(_, d)| d["kind"] == kind)
        .collect()
}

/// (apiGroup, resource) -> the verbs the operator may have on it. The least-privilege table:
/// anything not here must not be granted.
fn allowed() -> BTreeMap<(&'static str, &'static str), BTreeSet<&'static str>> {
    let set = |v: &[&'static str]| v.iter().copied().collect::<BTreeSet<_>>();
    let mut m = BTreeMap::new();
    let g = "core.tikv.org";
    m.insert((g, "clusters"), set(&["get", "list", "watch", "patch"]));
    for r in ["pdgroups", "tikvgroups"] {
        m.insert((g, r), set(&["get", "list", "watch", "patch", "delete"]));
    }
    for r in ["pds", "tikvs"] {
        m.insert(
            (g, r),
            set(&["get", "list", "watch", "create", "patch", "delete"]),
        );
    }
    m.insert(
        ("apps", "controllerrevisions"),
        set(&["get", "list", "watch", "create", "patch", "delete"]),
    );
    for r in [
        "clusters/status",
        "pdgroups/status",
        "pds/status",
        "tikvgroups/status",
        "tikvs/status",
    ] {
        m.insert((g, r), set(&["patch"]));
    }
    for r in [
        "clusters/finalizers",
        "pdgroups/finalizers",
        "pds/finalizers",
        "tikvgroups/finalizers",
        "tikvs/finalizers",
    ] {
        m.insert((g, r), set(&["update"]));
    }
    for r in ["pods", "configmaps", "services", "persistentvolumeclaims"] {
        m.insert(
            ("", r),
            set(&["get", "list", "watch", "create", "patch", "delete"]),
        );
    }
    // TLS Clusters: the client Secret is read (each watched by name), never written.
    m.insert(("", "secrets"), set(&["get", "list", "watch"]));
    m.insert(("events.k8s.io", "events"), set(&["create", "patch"]));
    m.insert(("", "nodes"), set(&["get", "list", "watch"]));
    m.insert(
        ("coordination.k8s.io", "leases"),
        set(&["get", "create", "update"]),
    );
    m
}

/// Expands rules into (group, resource, verb, resourceNames) grants.
fn grants(rules: &[PolicyRule]) -> BTreeSet<(String, String, String, Vec<String>)> {
    let mut out = BTreeSet::new();
    for rule in rules {
        for g in rule.api_groups.clone().unwrap_or_default() {
            for r in rule.resources.clone().unwrap_or_default() {
                for v in &rule.verbs {
                    out.insert((
                        g.clone(),
                        r.clone(),
                        v.clone(),
                        rule.resource_names.clone().unwrap_or_default(),
                    ));
                }
            }
        }
    }
    out
}

fn roles(kind: &str) -> Vec<(PathBuf, Role)> {
    // ClusterRole and Role have the same shape for what is checked here.
    of_kind(kind)
        .into_iter()
        .map(|(p, mut d)| {
            d["kind"] = "Role".into();
            let role: Role =
                serde_json::from_value(d).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            (p, role)
        })
        .collect()
}

#[test]
fn rbac_grants_nothing_broader_than_what_the_operator_uses() {
    let allowed = allowed();
    let all: Vec<_> = roles("ClusterRole")
        .into_iter()
        .chain(roles("Role"))
        .collect();
    assert!(
        all.len() >= 4,
        "expected ClusterRoles and Roles, got {}",
        all.len()
    );
    for (path, role) in &all {
        let name = role.metadata.name.clone().unwrap_or_default();
        let rules = role.rules.clone().unwrap_or_default();
        assert!(
            !rules.is_empty(),
            "{name} in {} has no rules",
            path.display()
        );
        for rule in &rules {
            let where_ = format!("{name} in {}", path.display());
            assert!(
                rule.non_resource_urls.is_none(),
                "{where_}: nonResourceURLs granted"
            );
            for list in [
                rule.api_groups.clone().unwrap_or_default(),
                rule.resources.clone().unwrap_or_default(),
                rule.verbs.clone(),
            ] {
                assert!(
                    !list.iter().any(|s| s.contains('*')),
                    "{where_}: wildcard in {list:?}"
                );
            }
            assert!(
                rule.api_groups.as_ref().is_some_and(|g| !g.is_empty())
                    && rule.resources.as_ref().is_some_and(|r| !r.is_empty()),
                "{where_}: rule without apiGroups or resources"
            );
        }
        for (group, resource, verb, _) in grants(&rules) {
            assert!(
                resource != "secrets" || matches!(verb.as_str(), "get" | "list" | "watch"),
                "{name} in {} grants {verb} on Secrets (the operator only reads them)",
                path.display()
            );
            assert!(
                !resource.starts_with("secrets/"),
                "{name} in {} grants {verb} on {resource}",
                path.display()
            );
            let ok = allowed
                .get(&(group.as_str(), resource.as_str()))
                .is_some_and(|verbs| verbs.contains(verb.as_str()));
            assert!(
                ok,
                "{name} in {} grants `{verb}` on `{resource}` of group `{group}`, which the \
                 operator does not use (update the table in this test only together with the code)",
                path.display()
            );
        }
    }
}

#[test]
fn leases_only_in_namespaced_roles_and_narrowed_to_the_lease_name() {
    for (path, role) in roles("ClusterRole") {
        let g = grants(&role.rules.unwrap_or_default());
        assert!(
            !g.iter().any(|(_, r, _, _)| r == "leases"),
            "{}: a ClusterRole grants leases (cluster-wide)",
            path.display()
        );
    }
    let mut lease_grants = 0;
    for (path, role) in roles("Role") {
        for (_, r, verb, names) in grants(&role.rules.unwrap_or_default()) {
            if r != "leases" {
                continue;
            }
            lease_grants += 1;
            if verb != "create" {
                assert_eq!(
                    names,
                    ["tikv-operator"],
                    "{}: `{verb}` on leases is not limited to the operator's Lease",
                    path.display()
                );
            }
        }
    }
    assert_eq!(lease_grants, 3, "expected create, get, update on leases");
}

/// TLS Clusters: the operator reads the client Secret it reaches PD with (a watch per Secret
/// name), in every namespace it manages, and can write no Secret.
#[test]
fn the_operator_reads_secrets_and_writes_none() {
    for kind in ["ClusterRole", "Role"] {
        let (path, role) = roles(kind)
            .into_iter()
            .find(|(_, r)| r.metadata.name.as_deref() == Some("tikv-operator"))
            .unwrap_or_else(|| panic!("{kind} tikv-operator"));
        let on_secrets: BTreeSet<(String, Vec<String>)> = grants(&role.rules.unwrap_or_default())
            .into_iter()
            .filter(|(g, r, _, _)| g.is_empty() && r == "secrets")
            .map(|(_, _, v, names)| (v, names))
            .collect();
        let expected: BTreeSet<(String, Vec<String>)> = ["get", "list", "watch"]
            .into_iter()
            .map(|v| (v.to_owned(), Vec::new()))
            .collect();
        assert_eq!(on_secrets, expected, "{kind} in {}", path.display());
    }
}

#[test]
fn both_variants_grant_the_same_namespaced_permissions() {
    let cluster = roles("ClusterRole")
        .into_iter()
        .find(|(_, r)| r.metadata.name.as_deref() == Some("tikv-operator"))
        .expect("ClusterRole tikv-operator");
    let ns = roles("Role")
        .into_iter()
        .find(|(_, r)| r.metadata.name.as_deref() == Some("tikv-operator"))
        .expect("Role tikv-operator");
    let mut cluster_grants = grants(&cluster.1.rules.unwrap_or_default());
    cluster_grants.retain(|(_, r, _, _)| r != "nodes");
    assert_eq!(cluster_grants, grants(&ns.1.rules.unwrap_or_default()));
}

#[test]
fn bindings_reference_defined_roles_and_the_operator_service_account() {
    let defined: BTreeSet<(String, String)> = ["Role", "ClusterRole"]
        .iter()
        .flat_map(|k| {
            of_kind(k).into_iter().map(move |(_, d)| {
                (
                    (*k).to_owned(),
                    d["metadata"]["name"].as_str().unwrap().to_owned(),
                )
            })
        })
        .collect();
    let sas: BTreeSet<String> = of_kind("ServiceAccount")
        .into_iter()
        .map(|(_, d)| d["metadata"]["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(sas, BTreeSet::from(["tikv-operator".to_owned()]));
    let mut n = 0;
    for kind in ["RoleBinding", "ClusterRoleBinding"] {
        for (path, mut doc) in of_kind(kind) {
            doc["kind"] = "RoleBinding".into();
            let b: RoleBinding = serde_json::from_value(doc).unwrap();
            let key = (b.role_ref.kind.clone(), b.role_ref.name.clone());
            assert!(
                defined.contains(&key),
                "{}: binding to undefined {key:?}",
                path.display()
            );
            let subjects = b.subjects.unwrap_or_default();
            assert_eq!(subjects.len(), 1, "{}", path.display());
            assert_eq!(subjects[0].kind, "ServiceAccount");
            assert_eq!(subjects[0].name, "tikv-operator");
            n += 1;
        }
    }
    assert!(n >= 4, "only {n} bindings");
}

#[test]
fn deployment_is_hardened() {
    let (patches, deployments): (Vec<_>, Vec<_>) = of_kind("Deployment")
        .into_iter()
        .partition(|(p, _)| p.ends_with("namespaced/deployment-patch.yaml"));
    assert_eq!(deployments.len(), 1);
    assert!(deployments[0].0.ends_with("base/deployment.yaml"));
    // The namespaced variant watches only its own namespace.
    assert_eq!(patches.len(), 1);
    let env = &patches[0].1["spec"]["template"]["spec"]["containers"][0]["env"][0];
    assert_eq!(env["name"], "TIKV_OPERATOR_NAMESPACES");
    assert_eq!(
        env["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.namespace"
    );
    let d: Deployment = serde_json::from_value(deployments[0].1.clone()).unwrap();
    let spec = d.spec.unwrap();
    assert_eq!(spec.replicas, Some(2));
    let pod = spec.template.spec.unwrap();
    assert_eq!(pod.service_account_name.as_deref(), Some("tikv-operator"));
    let psc = pod.security_context.unwrap();
    assert_eq!(psc.run_as_non_root, Some(true));
    assert_eq!(psc.seccomp_profile.unwrap().type_, "RuntimeDefault");
    assert_eq!(pod.containers.len(), 1);
    let c = &pod.containers[0];
    let sc = c.security_context.clone().unwrap();
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    assert_eq!(sc.run_as_non_root, Some(true));
    assert_eq!(sc.capabilities.unwrap().drop, Some(vec!["ALL".to_owned()]));
    assert!(sc.privileged.is_none_or(|p| !p));
    let res = c.resources.clone().unwrap();
    for (what, map) in [("requests", res.requests), ("limits", res.limits)] {
        let map = map.unwrap_or_default();
        assert!(
            map.contains_key("cpu") && map.contains_key("memory"),
            "{what}: {map:?}"
        );
    }
    let path = |p: &Option<k8s_openapi::api::core::v1::Probe>| {
        p.clone().and_then(|p| p.http_get).and_then(|h| h.path)
    };
    assert_eq!(path(&c.liveness_probe).as_deref(), Some("/healthz"));
    assert_eq!(path(&c.readiness_probe).as_deref(), Some("/readyz"));
    let env: BTreeMap<String, String> = c
        .env
        .clone()
        .unwrap_or_default()
        .into_iter()
        .filter_map(|e| {
            let f = e.value_from?.field_ref?.field_path;
            Some((e.name, f))
        })
        .collect();
    assert_eq!(
        env.get("POD_NAME").map(String::as_str),
        Some("metadata.name")
    );
    assert_eq!(
        env.get("POD_NAMESPACE").map(String::as_str),
        Some("metadata.namespace")
    );
    let args = c.args.clone().unwrap_or_default();
    assert_eq!(args.first().map(String::as_str), Some("run"));
    assert!(
        !args.iter().any(|a| a.starts_with("--leader-elect=false")),
        "two replicas need leader election"
    );
    // With only the leader Ready, a rollout must be allowed to replace every old pod at once.
    let strategy = spec.strategy.unwrap().rolling_update.unwrap();
    assert_eq!(
        strategy.max_unavailable,
        Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String("100%".into()))
    );
}

#[test]
fn every_manifest_file_is_in_its_kustomization() {
    let mut checked = 0;
    let root = manifests();
    let mut dirs = vec![root.clone()];
    while let Some(dir) = dirs.pop() {
        let kfile = dir.join("kustomization.yaml");
        let text =
            std::fs::read_to_string(&kfile).unwrap_or_else(|e| panic!("{}: {e}", kfile.display()));
        let k: serde_json::Value = serde_norway::from_str(&text).unwrap();
        let mut listed: BTreeSet<String> = k["resources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_owned())
            .collect();
        for p in k["patches"].as_array().into_iter().flatten() {
            listed.insert(p["path"].as_str().unwrap().to_owned());
        }
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if path.is_dir() {
                if path.join("kustomization.yaml").exists() {
                    dirs.push(path.clone());
                }
                if name == "crds" {
                    for crd in std::fs::read_dir(&path).unwrap() {
                        let crd = format!("crds/{}", crd.unwrap().file_name().to_string_lossy());
                        assert!(
                            listed.contains(&crd),
                            "{crd} missing from {}",
                            kfile.display()
                        );
                    }
                }
                continue;
            }
            if name == "kustomization.yaml" || !name.ends_with(".yaml") {
                continue;
            }
            assert!(
                listed.contains(&name),
                "{name} missing from {}",
                kfile.display()
            );
            checked += 1;
        }
        for entry in &listed {
            let target = dir.join(entry);
            assert!(
                target.exists(),
                "{}: {entry} does not exist",
                kfile.display()
            );
            if target.is_dir() {
                dirs.push(target);
            }
        }
    }
    assert!(checked >= 8, "only {checked} files checked");
}
