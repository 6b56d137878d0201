//! The Helm chart under `charts/tikv-operator/`.
//!
//! Its `crds/` are written by `cargo xtask gen-crds` (and checked by `gen-crds --check`), like
//! `manifests/crds/`, and so is `files/`: copies of `manifests/monitoring/` that the monitoring
//! templates read with `.Files.Get` (the PodMonitor's endpoints, the PrometheusRule's groups, the
//! Grafana dashboard), so the chart carries no rule or dashboard text of its own. Everything
//! else is hand-written templates, held to `manifests/` by the tests below: the chart rendered with its default values must grant exactly the RBAC rules of
//! `manifests/operator/` and carry the same Deployment (security settings, probes, strategy,
//! environment, resources), in both the cluster-wide and the namespaced variant. The tests run
//! the real `helm` (built by `e2e/scripts/build-binaries.sh helm`): `helm lint`, `helm template`
//! against golden files (`UPDATE_GOLDEN=1 cargo test -p xtask chart` rewrites them), the values
//! schema, and every operator flag against docs/configuration.md.

/// Where `gen-crds` writes the chart's CRDs (relative to the repository root).
pub const CRD_DIR: &str = "charts/tikv-operator/crds";

/// The monitoring objects of the kustomize install, the source of the chart's copies.
pub const MONITORING_SOURCE_DIR: &str = "manifests/monitoring";

/// Where `gen-crds` writes the chart's copies of [`MONITORING_FILES`].
pub const MONITORING_DIR: &str = "charts/tikv-operator/files";

/// The files of [`MONITORING_SOURCE_DIR`] the chart renders (kustomization.yaml is kustomize's
/// own).
pub const MONITORING_FILES: &[&str] = &[
    "podmonitor.yaml",
    "prometheusrule.yaml",
    "tikv-operator-dashboard.json",
];

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::collections::{BTreeMap, BTreeSet};
    use std::path::{Path, PathBuf};
    use std::process::Command;

    use serde::Deserialize;
    use serde_json::{Value, json};
    use tikv_operator_e2e::config;

    fn root() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
    }

    fn chart() -> PathBuf {
        root().join("charts/tikv-operator")
    }

    /// The cached helm binary, built once (minutes, from the Go module proxy) by
    /// `e2e/scripts/build-binaries.sh helm` when missing, so `cargo test --workspace` works on a
    /// fresh machine; a build that fails fails the test.
    fn helm() -> PathBuf {
        static BUILT: std::sync::OnceLock<()> = std::sync::OnceLock::new();
        let path = config::binary("helm", config::HELM_VERSION);
        BUILT.get_or_init(|| {
            if !path.is_file() {
                let status = Command::new("bash")
                    .arg(root().join("e2e/scripts/build-binaries.sh"))
                    .arg("helm")
                    .status()
                    .expect("running e2e/scripts/build-binaries.sh helm");
                assert!(status.success(), "building helm failed ({status})");
            }
        });
        assert!(
            path.is_file(),
            "{} is missing after `bash e2e/scripts/build-binaries.sh helm`",
            path.display()
        );
        path
    }

    /// Runs helm with its own empty home directories (no repositories, no plugins of the user).
    fn helm_output(args: &[&str]) -> std::process::Output {
        let home = std::env::temp_dir().join(format!("xtask-helm-home-{}", std::process::id()));
        Command::new(helm())
            .args(args)
            .env("HELM_CACHE_HOME", home.join("cache"))
            .env("HELM_CONFIG_HOME", home.join("config"))
            .env("HELM_DATA_HOME", home.join("data"))
            .env_remove("KUBECONFIG")
            .output()
            .unwrap()
    }

    /// The Kubernetes version the chart is rendered for (the project's API version).
    const KUBE_VERSION: &str = "1.33.0";

    /// `helm template` of the chart; Err carries helm's error output.
    fn template(release: &str, namespace: &str, extra: &[&str]) -> Result<String, String> {
        let chart = chart();
        let mut args = vec![
            "template",
            release,
            chart.to_str().unwrap(),
            "--namespace",
            namespace,
            "--kube-version",
            KUBE_VERSION,
        ];
        args.extend_from_slice(extra);
        let out = helm_output(&args);
        if out.status.success() {
            Ok(String::from_utf8(out.stdout).unwrap())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    fn namespaced_values() -> String {
        chart()
            .join("ci/namespaced-values.yaml")
            .to_string_lossy()
            .into_owned()
    }

    fn render_default() -> String {
        template("tikv-operator", "tikv-operator", &[]).unwrap()
    }

    fn render_namespaced() -> String {
        template("tikv-operator", "tikv", &["-f", &namespaced_values()]).unwrap()
    }

    fn monitoring_values() -> String {
        chart()
            .join("ci/monitoring-values.yaml")
            .to_string_lossy()
            .into_owned()
    }

    fn render_monitoring() -> String {
        template(
            "tikv-operator",
            "tikv-operator",
            &["-f", &monitoring_values()],
        )
        .unwrap()
    }

    fn docs(yaml: &str) -> Vec<Value> {
        serde_norway::Deserializer::from_str(yaml)
            .map(|d| Value::deserialize(d).unwrap())
            .filter(|v| !v.is_null())
            .collect()
    }

    fn manifest_docs(rel: &str) -> Vec<Value> {
        docs(&std::fs::read_to_string(root().join("manifests/operator").join(rel)).unwrap())
    }

    fn one<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
        let found: Vec<_> = docs
            .iter()
            .filter(|d| d["kind"] == kind && d["metadata"]["name"] == name)
            .collect();
        assert_eq!(found.len(), 1, "{kind} {name}: {} found", found.len());
        found[0]
    }

    fn kinds(docs: &[Value]) -> BTreeMap<String, usize> {
        let mut m = BTreeMap::new();
        for d in docs {
            *m.entry(d["kind"].as_str().unwrap().to_owned()).or_default() += 1;
        }
        m
    }

    /// Rules as (group, resource, verb, resourceNames) grants: equal sets grant the same.
    fn grants(rules: &Value) -> BTreeSet<(String, String, String, Vec<String>)> {
        let strings = |v: &Value| -> Vec<String> {
            v.as_array()
                .into_iter()
                .flatten()
                .map(|s| s.as_str().unwrap().to_owned())
                .collect()
        };
        let mut out = BTreeSet::new();
        for rule in rules.as_array().unwrap() {
            for g in strings(&rule["apiGroups"]) {
                for r in strings(&rule["resources"]) {
                    for v in strings(&rule["verbs"]) {
                        out.insert((g.clone(), r.clone(), v, strings(&rule["resourceNames"])));
                    }
                }
            }
        }
        assert!(!out.is_empty());
        out
    }

    /// Removes the release label, which manifests/ has no use for, wherever it appears.
    fn strip_instance(v: &mut Value) {
        match v {
            Value::Object(m) => {
                m.remove("app.kubernetes.io/instance");
                m.values_mut().for_each(strip_instance);
            }
            Value::Array(a) => a.iter_mut().for_each(strip_instance),
            _ => {}
        }
    }

    fn container_args(deployment: &Value) -> Vec<String> {
        deployment["spec"]["template"]["spec"]["containers"][0]["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap().to_owned())
            .collect()
    }

    /// The Deployment's spec with the fields that legitimately differ (image, arguments: the
    /// chart passes every flag explicitly) taken out, for an exact comparison of the rest.
    fn comparable_spec(deployment: &Value) -> Value {
        let mut spec = deployment["spec"].clone();
        strip_instance(&mut spec);
        let c = &mut spec["template"]["spec"]["containers"][0];
        c["image"] = Value::Null;
        c["args"] = Value::Null;
        spec
    }

    #[test]
    fn helm_lint_passes_for_default_and_namespaced_values() {
        let chart = chart();
        for extra in [
            vec![],
            vec!["-f".to_owned(), namespaced_values()],
            vec!["-f".to_owned(), monitoring_values()],
        ] {
            let mut args = vec!["lint", "--strict", "--kube-version", KUBE_VERSION];
            args.push(chart.to_str().unwrap());
            args.extend(extra.iter().map(String::as_str));
            let out = helm_output(&args);
            assert!(
                out.status.success(),
                "helm lint {extra:?} failed:\n{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }

    #[test]
    fn helm_template_matches_golden_files() {
        let update = std::env::var_os("UPDATE_GOLDEN").is_some();
        let mut stale = Vec::new();
        for (name, rendered) in [
            ("helm-default.yaml", render_default()),
            ("helm-namespaced.yaml", render_namespaced()),
            ("helm-monitoring.yaml", render_monitoring()),
        ] {
            let path = root().join("xtask/golden").join(name);
            if update {
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                std::fs::write(&path, &rendered).unwrap();
                continue;
            }
            let golden = std::fs::read_to_string(&path).unwrap_or_default();
            if golden != rendered {
                stale.push(path.display().to_string());
            }
        }
        assert!(
            stale.is_empty(),
            "helm template differs from {stale:?}; review the change and regenerate with \
             `UPDATE_GOLDEN=1 cargo test -p xtask chart`"
        );
    }

    #[test]
    fn cluster_wide_chart_grants_and_deploys_what_manifests_do() {
        let chart = docs(&render_default());
        assert_eq!(
            kinds(&chart),
            BTreeMap::from([
                ("ClusterRole".into(), 1),
                ("ClusterRoleBinding".into(), 1),
                ("Deployment".into(), 1),
                ("Role".into(), 1),
                ("RoleBinding".into(), 1),
                ("ServiceAccount".into(), 1),
            ])
        );
        let manifests: Vec<Value> = ["clusterrole.yaml", "base/leader-election-role.yaml"]
            .iter()
            .flat_map(|f| manifest_docs(f))
            .collect();
        for (kind, name) in [
            ("ClusterRole", "tikv-operator"),
            ("Role", "tikv-operator-leader-election"),
        ] {
            assert_eq!(
                grants(&one(&chart, kind, name)["rules"]),
                grants(&one(&manifests, kind, name)["rules"]),
                "{kind} {name}"
            );
        }
        let binding = one(&chart, "ClusterRoleBinding", "tikv-operator");
        assert_eq!(
            binding["subjects"],
            one(&manifests, "ClusterRoleBinding", "tikv-operator")["subjects"]
        );
        assert_eq!(binding["roleRef"]["name"], "tikv-operator");

        let ours = one(&chart, "Deployment", "tikv-operator");
        let theirs = &manifest_docs("base/deployment.yaml")[0];
        assert_eq!(comparable_spec(ours), comparable_spec(theirs));
        let args = container_args(ours);
        for arg in container_args(theirs) {
            assert!(
                args.contains(&arg),
                "{arg} missing from the chart's {args:?}"
            );
        }
        assert_eq!(
            ours["spec"]["template"]["spec"]["containers"][0]["image"],
            "tikv-operator:0.1.0"
        );
    }

    #[test]
    fn namespaced_chart_grants_and_deploys_what_the_namespaced_manifests_do() {
        let chart = docs(&render_namespaced());
        assert_eq!(
            kinds(&chart),
            BTreeMap::from([
                ("ClusterRole".into(), 1),
                ("ClusterRoleBinding".into(), 1),
                ("Deployment".into(), 1),
                ("Role".into(), 2),
                ("RoleBinding".into(), 2),
                ("ServiceAccount".into(), 1),
            ])
        );
        let manifests: Vec<Value> = [
            "namespaced/role.yaml",
            "namespaced/nodes-clusterrole.yaml",
            "base/leader-election-role.yaml",
        ]
        .iter()
        .flat_map(|f| manifest_docs(f))
        .collect();
        for (kind, ours, theirs) in [
            ("Role", "tikv-operator", "tikv-operator"),
            (
                "Role",
                "tikv-operator-leader-election",
                "tikv-operator-leader-election",
            ),
            (
                "ClusterRole",
                "tikv-operator-nodes-tikv",
                "tikv-operator-nodes",
            ),
        ] {
            assert_eq!(
                grants(&one(&chart, kind, ours)["rules"]),
                grants(&one(&manifests, kind, theirs)["rules"]),
                "{kind} {ours}"
            );
        }
        let role = one(&chart, "Role", "tikv-operator");
        assert_eq!(role["metadata"]["namespace"], "tikv");
        let binding = one(&chart, "ClusterRoleBinding", "tikv-operator-nodes-tikv");
        assert_eq!(
            binding["subjects"],
            json!([{"kind": "ServiceAccount", "name": "tikv-operator", "namespace": "tikv"}])
        );

        let ours = one(&chart, "Deployment", "tikv-operator");
        let mut theirs = manifest_docs("base/deployment.yaml")[0].clone();
        // manifests/operator/namespaced/deployment-patch.yaml adds this variable.
        let patch = &manifest_docs("namespaced/deployment-patch.yaml")[0];
        let added = patch["spec"]["template"]["spec"]["containers"][0]["env"][0].clone();
        assert_eq!(added["name"], "TIKV_OPERATOR_NAMESPACES");
        theirs["spec"]["template"]["spec"]["containers"][0]["env"]
            .as_array_mut()
            .unwrap()
            .push(added);
        assert_eq!(comparable_spec(ours), comparable_spec(&theirs));
    }

    /// (flag, default) of every row of docs/configuration.md's flag table.
    fn documented_flags() -> BTreeMap<String, Option<String>> {
        let doc = std::fs::read_to_string(root().join("docs/configuration.md")).unwrap();
        let mut out = BTreeMap::new();
        for line in doc.lines().filter(|l| l.starts_with("| `--")) {
            let cols: Vec<&str> = line.split('|').map(str::trim).collect();
            let flag = cols[1]
                .trim_matches('`')
                .trim_start_matches("--")
                .to_owned();
            // A default is a single code span (`15s`); "none ..." and prose are no default.
            let default = cols[3]
                .strip_prefix('`')
                .and_then(|d| d.strip_suffix('`'))
                .filter(|d| !d.contains('`'))
                .map(str::to_owned);
            out.insert(flag, default);
        }
        assert!(
            out.len() >= 17,
            "only {} flags in docs/configuration.md",
            out.len()
        );
        out
    }

    fn flag_values(args: &[String]) -> BTreeMap<String, Vec<String>> {
        let mut m: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for a in args.iter().skip(1) {
            let (k, v) = a
                .strip_prefix("--")
                .and_then(|a| a.split_once('='))
                .unwrap_or_else(|| panic!("argument {a} is not --flag=value"));
            m.entry(k.to_owned()).or_default().push(v.to_owned());
        }
        m
    }

    #[test]
    fn every_operator_flag_is_set_by_the_chart_with_the_operators_default() {
        let documented = documented_flags();
        // Set by the Pod itself, not by values: the in-cluster ServiceAccount, and the Lease's
        // namespace and holder identity from the downward API (POD_NAMESPACE, POD_NAME).
        let from_the_pod = [
            "kubeconfig",
            "leader-elect-namespace",
            "leader-elect-identity",
        ];
        // Deliberately not the binary's default: JSON logs in a cluster, as in manifests/.
        let chosen = BTreeMap::from([("log-format", "json")]);
        // Rendered only when set (the default is "none").
        let optional = BTreeMap::from([
            ("namespace", ("watchNamespaces={a,b}", vec!["a", "b"])),
            (
                "pd-endpoint-template",
                (
                    "pd.endpointTemplate=http://{group}-pd.{namespace}.example:2379",
                    vec!["http://{group}-pd.{namespace}.example:2379"],
                ),
            ),
        ]);

        let chart = docs(&render_default());
        let deployment = one(&chart, "Deployment", "tikv-operator");
        let args = container_args(deployment);
        assert_eq!(args[0], "run");
        let rendered = flag_values(&args);
        for flag in rendered.keys() {
            assert!(
                documented.contains_key(flag),
                "the chart passes --{flag}, which docs/configuration.md does not know"
            );
        }
        let env = &deployment["spec"]["template"]["spec"]["containers"][0]["env"];
        for (flag, default) in &documented {
            let got = rendered.get(flag);
            if from_the_pod.contains(&flag.as_str()) {
                assert!(got.is_none(), "--{flag} is the Pod's own, not a value");
                continue;
            }
            if let Some((set, want)) = optional.get(flag.as_str()) {
                assert!(got.is_none(), "--{flag} rendered without being set");
                let out = template("tikv-operator", "tikv-operator", &["--set", set]).unwrap();
                let d = docs(&out);
                let values = flag_values(&container_args(one(&d, "Deployment", "tikv-operator")));
                assert_eq!(
                    values.get(flag.as_str()).cloned().unwrap_or_default(),
                    *want,
                    "--{flag}"
                );
                continue;
            }
            let want = chosen
                .get(flag.as_str())
                .map(|s| (*s).to_owned())
                .or_else(|| default.clone())
                .unwrap_or_else(|| panic!("--{flag}: no default documented and no rule here"));
            assert_eq!(got, Some(&vec![want.clone()]), "--{flag}");
        }
        for var in ["POD_NAME", "POD_NAMESPACE"] {
            assert!(
                env.as_array().unwrap().iter().any(|e| e["name"] == var),
                "{var} missing"
            );
        }
    }

    #[test]
    fn values_are_validated_by_the_schema_and_the_templates() {
        for (set, why) in [
            ("replicas=0", "replicas"),
            ("rbac.scope=galaxy", "scope"),
            ("logFormat=xml", "logFormat"),
            ("pd.timeout=5", "timeout"),
            ("leaderElection.leaseDuration=soon", "leaseDuration"),
            ("watchNamespaces={Bad_NS}", "watchNamespaces"),
            ("pd.endpointTemplate=pd:2379", "endpointTemplate"),
            ("image.pullPolicy=Sometimes", "pullPolicy"),
            ("unknownKey=1", "unknownKey"),
            ("monitoring.podMonitor.enabled=yes", "enabled"),
            ("monitoring.dashboard.enabled=1", "enabled"),
            // The old name of the PodMonitor's value: refused, naming the new one.
            (
                "monitoring.serviceMonitor.enabled=true",
                "renamed to monitoring.podMonitor",
            ),
            (
                "monitoring.serviceMonitor.enabled=false",
                "renamed to monitoring.podMonitor",
            ),
            ("monitoring.grafana.enabled=true", "grafana"),
            ("monitoring.podMonitor.interval=10s", "interval"),
            ("monitoring.prometheusRule.namespace=other", "namespace"),
            (
                "monitoring.dashboard.labels.grafana_dashboard=1",
                "grafana_dashboard",
            ),
            ("monitoring.podMonitor.labels.Bad Label=x", "Bad Label"),
            ("leaderElection.enabled=false", "replicas: 1"),
        ] {
            let err = template("tikv-operator", "tikv-operator", &["--set", set])
                .expect_err(&format!("{set} was accepted"));
            assert!(
                err.contains(why),
                "{set}: the error does not name {why}:\n{err}"
            );
        }
        // Without leader election one replica is fine, and no Lease permission is granted.
        let out = template(
            "tikv-operator",
            "tikv-operator",
            &["--set", "leaderElection.enabled=false,replicas=1"],
        )
        .unwrap();
        let d = docs(&out);
        assert!(!kinds(&d).contains_key("Role"));
        let args = container_args(one(&d, "Deployment", "tikv-operator"));
        assert!(
            args.contains(&"--leader-elect=false".to_owned()),
            "{args:?}"
        );
        assert!(
            !args.iter().any(|a| a.starts_with("--leader-elect-lease")),
            "{args:?}"
        );
    }

    #[test]
    fn namespace_scope_with_a_list_gets_a_role_in_each_listed_namespace() {
        let out = template(
            "ops",
            "ops-system",
            &[
                "--set",
                "rbac.scope=namespace,watchNamespaces={team-a,team-b}",
            ],
        )
        .unwrap();
        let d = docs(&out);
        let roles: BTreeSet<(String, String)> = d
            .iter()
            .filter(|o| {
                o["kind"] == "Role"
                    && !o["metadata"]["name"]
                        .as_str()
                        .unwrap()
                        .ends_with("leader-election")
            })
            .map(|o| {
                (
                    o["metadata"]["namespace"].as_str().unwrap().to_owned(),
                    o["metadata"]["name"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        assert_eq!(
            roles,
            BTreeSet::from([
                ("team-a".into(), "ops-tikv-operator".into()),
                ("team-b".into(), "ops-tikv-operator".into())
            ])
        );
        for b in d
            .iter()
            .filter(|o| o["kind"] == "RoleBinding" || o["kind"] == "ClusterRoleBinding")
        {
            assert_eq!(
                b["subjects"],
                json!([{"kind": "ServiceAccount", "name": "ops-tikv-operator", "namespace": "ops-system"}])
            );
        }
        let deployment = one(&d, "Deployment", "ops-tikv-operator");
        let values = flag_values(&container_args(deployment));
        assert_eq!(values["namespace"], ["team-a", "team-b"]);
        assert_eq!(values["leader-elect-lease-name"], ["ops-tikv-operator"]);
        let env = deployment["spec"]["template"]["spec"]["containers"][0]["env"].to_string();
        assert!(!env.contains("TIKV_OPERATOR_NAMESPACES"), "{env}");
    }

    #[test]
    fn releases_in_different_namespaces_do_not_share_cluster_scoped_objects() {
        let cluster_scoped = |release: &str, ns: &str, extra: &[&str]| -> BTreeSet<String> {
            docs(&template(release, ns, extra).unwrap())
                .iter()
                .filter(|o| o["kind"].as_str().unwrap().starts_with("Cluster"))
                .map(|o| format!("{}/{}", o["kind"], o["metadata"]["name"]))
                .collect()
        };
        let nv = namespaced_values();
        let a = cluster_scoped("tikv-operator", "a", &["-f", &nv]);
        let b = cluster_scoped("tikv-operator", "b", &["-f", &nv]);
        assert_eq!(a.len(), 2);
        assert!(a.is_disjoint(&b), "{a:?} {b:?}");
        let x = cluster_scoped("x", "a", &[]);
        let y = cluster_scoped("y", "b", &[]);
        assert_eq!(x.len(), 2);
        assert!(x.is_disjoint(&y), "{x:?} {y:?}");
    }

    /// The first YAML document of a manifests/monitoring/ file.
    fn monitoring_source(file: &str) -> Value {
        docs(
            &std::fs::read_to_string(root().join(super::MONITORING_SOURCE_DIR).join(file)).unwrap(),
        )
        .remove(0)
    }

    fn labels(object: &Value) -> BTreeMap<String, String> {
        object["metadata"]["labels"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
            .collect()
    }

    fn without(value: &Value, key: &str) -> Value {
        let mut v = value.clone();
        v.as_object_mut().unwrap().remove(key);
        v
    }

    /// Every key of `subset` has the same value in `labels`.
    fn assert_labels_include(labels: &BTreeMap<String, String>, subset: &Value, what: &str) {
        for (k, v) in subset.as_object().unwrap() {
            assert_eq!(
                labels.get(k).map(String::as_str),
                v.as_str(),
                "{what}: label {k} in {labels:?}"
            );
        }
    }

    #[test]
    fn monitoring_objects_are_off_by_default() {
        for rendered in [render_default(), render_namespaced()] {
            let k = kinds(&docs(&rendered));
            for kind in [
                "PodMonitor",
                "PrometheusRule",
                "ConfigMap",
                "ServiceMonitor",
            ] {
                assert!(!k.contains_key(kind), "{kind} rendered by default: {k:?}");
            }
        }
    }

    #[test]
    fn monitoring_objects_are_rendered_from_manifests_monitoring() {
        let chart = docs(&render_monitoring());
        let mut want = kinds(&docs(&render_default()));
        for kind in ["PodMonitor", "PrometheusRule", "ConfigMap"] {
            want.insert(kind.to_owned(), 1);
        }
        assert_eq!(kinds(&chart), want);
        let deployment = one(&chart, "Deployment", "tikv-operator");

        // The rules are manifests/monitoring's, parsed: same groups, alerts, expressions,
        // durations, labels and annotations.
        let ours = one(&chart, "PrometheusRule", "tikv-operator");
        let theirs = monitoring_source("prometheusrule.yaml");
        assert_eq!(ours["apiVersion"], theirs["apiVersion"]);
        assert_eq!(ours["spec"], theirs["spec"]);
        assert!(
            ours["spec"]["groups"].as_array().unwrap().len() >= 4,
            "{}",
            ours["spec"]
        );

        // The PodMonitor scrapes what manifests/monitoring's does, selecting this release's pods.
        let ours = one(&chart, "PodMonitor", "tikv-operator");
        let theirs = monitoring_source("podmonitor.yaml");
        assert_eq!(ours["apiVersion"], theirs["apiVersion"]);
        assert_eq!(
            without(&ours["spec"], "selector"),
            without(&theirs["spec"], "selector")
        );
        let selector = &ours["spec"]["selector"];
        assert_eq!(
            selector["matchLabels"],
            deployment["spec"]["selector"]["matchLabels"]
        );
        assert_eq!(without(selector, "matchLabels"), json!({}));
        let pod_labels = labels(&deployment["spec"]["template"]);
        assert_labels_include(
            &pod_labels,
            &selector["matchLabels"],
            "the Deployment's pods",
        );
        // The same pods as the kustomize PodMonitor selects, narrowed to the release.
        assert_labels_include(
            &pod_labels,
            &theirs["spec"]["selector"]["matchLabels"],
            "manifests",
        );
        let port = &ours["spec"]["podMetricsEndpoints"][0]["port"];
        let ports = &deployment["spec"]["template"]["spec"]["containers"][0]["ports"];
        assert!(
            ports.as_array().unwrap().iter().any(|p| p["name"] == *port),
            "no container port {port} in {ports}"
        );

        // The dashboard is the JSON file, byte for byte, under the kustomize ConfigMap's name
        // and key.
        let kustomization = monitoring_source("kustomization.yaml");
        let generator = &kustomization["configMapGenerator"][0];
        let name = generator["name"].as_str().unwrap();
        let file = generator["files"][0].as_str().unwrap();
        let ours = one(&chart, "ConfigMap", name);
        let json_text =
            std::fs::read_to_string(root().join(super::MONITORING_SOURCE_DIR).join(file)).unwrap();
        assert_eq!(ours["data"][file].as_str(), Some(json_text.as_str()));
        assert_eq!(ours["data"].as_object().unwrap().len(), 1);
        let dashboard: Value = serde_json::from_str(ours["data"][file].as_str().unwrap()).unwrap();
        assert_eq!(dashboard["uid"], "tikv-operator");
        // Labelled for Grafana's sidecar as the kustomize ConfigMap is.
        assert_labels_include(&labels(ours), &generator["options"]["labels"], "dashboard");
        assert_eq!(
            ours["metadata"]["annotations"],
            json!({"grafana.example.com/folder": "TiKV"})
        );

        // Every object carries the chart's labels and its own `labels` value.
        let chart_labels = json!({
            "app.kubernetes.io/name": "tikv-operator",
            "app.kubernetes.io/instance": "tikv-operator",
            "app.kubernetes.io/component": "operator",
            "app.kubernetes.io/managed-by": "Helm",
            "app.kubernetes.io/version": "0.1.0",
            "helm.sh/chart": "tikv-operator-0.1.0",
        });
        for (kind, name, added) in [
            (
                "PodMonitor",
                "tikv-operator",
                json!({"prometheus": "platform"}),
            ),
            (
                "PrometheusRule",
                "tikv-operator",
                json!({"prometheus": "platform", "role": "alert-rules"}),
            ),
            ("ConfigMap", name, json!({"grafana_dashboard": "1"})),
        ] {
            let got = labels(one(&chart, kind, name));
            assert_labels_include(&got, &chart_labels, kind);
            assert_labels_include(&got, &added, kind);
            assert_eq!(
                got.len(),
                chart_labels.as_object().unwrap().len() + added.as_object().unwrap().len(),
                "{kind}: {got:?}"
            );
        }
    }

    #[test]
    fn monitoring_objects_live_in_the_release_namespace_and_select_the_release() {
        let out = template(
            "ops",
            "ops-system",
            &[
                "--set",
                "monitoring.podMonitor.enabled=true,monitoring.prometheusRule.enabled=true,\
                 monitoring.dashboard.enabled=true",
            ],
        )
        .unwrap();
        let d = docs(&out);
        let deployment = one(&d, "Deployment", "ops-tikv-operator");
        for (kind, name) in [
            ("PodMonitor", "ops-tikv-operator"),
            ("PrometheusRule", "ops-tikv-operator"),
            ("ConfigMap", "ops-tikv-operator-dashboard"),
        ] {
            let o = one(&d, kind, name);
            assert_eq!(o["metadata"]["namespace"], "ops-system", "{kind}");
            assert_eq!(
                o["metadata"]["labels"]["app.kubernetes.io/instance"], "ops",
                "{kind}"
            );
        }
        let monitor = one(&d, "PodMonitor", "ops-tikv-operator");
        assert_eq!(
            monitor["spec"]["selector"]["matchLabels"],
            deployment["spec"]["selector"]["matchLabels"]
        );
        assert_eq!(
            monitor["spec"]["selector"]["matchLabels"]["app.kubernetes.io/instance"],
            "ops"
        );
        // No namespaceSelector: the PodMonitor's own namespace, the release's.
        assert!(
            monitor["spec"].get("namespaceSelector").is_none(),
            "{monitor}"
        );
    }

    #[test]
    fn each_monitoring_object_has_its_own_value() {
        for (value, kind) in [
            ("podMonitor", "PodMonitor"),
            ("prometheusRule", "PrometheusRule"),
            ("dashboard", "ConfigMap"),
        ] {
            let set = format!("monitoring.{value}.enabled=true");
            let d = docs(&template("tikv-operator", "tikv-operator", &["--set", &set]).unwrap());
            let k = kinds(&d);
            for other in ["PodMonitor", "PrometheusRule", "ConfigMap"] {
                assert_eq!(
                    k.get(other).copied().unwrap_or(0),
                    usize::from(other == kind),
                    "{set}: {k:?}"
                );
            }
        }
    }

    #[test]
    fn the_dashboard_label_is_set_by_values() {
        let dashboard_labels = |extra: &[&str]| {
            let mut args = vec!["--set", "monitoring.dashboard.enabled=true"];
            args.extend_from_slice(extra);
            let d = docs(&template("tikv-operator", "tikv-operator", &args).unwrap());
            labels(one(&d, "ConfigMap", "tikv-operator-dashboard"))
        };
        assert_eq!(dashboard_labels(&[])["grafana_dashboard"], "1");
        let changed = dashboard_labels(&[
            "--set-string",
            "monitoring.dashboard.labels.grafana_dashboard=tikv,monitoring.dashboard.labels.team=storage",
        ]);
        assert_eq!(changed["grafana_dashboard"], "tikv");
        assert_eq!(changed["team"], "storage");
        let dropped = dashboard_labels(&[
            "--set",
            "monitoring.dashboard.labels.grafana_dashboard=null",
        ]);
        assert!(!dropped.contains_key("grafana_dashboard"), "{dropped:?}");
        // Added labels cannot replace the chart's own (the PodMonitor selector and the
        // release's labels stay right).
        let kept = dashboard_labels(&[
            "--set",
            "monitoring.dashboard.labels.app\\.kubernetes\\.io/name=other",
        ]);
        assert_eq!(kept["app.kubernetes.io/name"], "tikv-operator");
    }

    #[test]
    fn chart_versions_follow_the_workspace_and_generated_files_are_current() {
        let meta: Value =
            serde_norway::from_str(&std::fs::read_to_string(chart().join("Chart.yaml")).unwrap())
                .unwrap();
        assert_eq!(meta["version"], env!("CARGO_PKG_VERSION"));
        assert_eq!(meta["appVersion"], env!("CARGO_PKG_VERSION"));
        // The same checks as `gen-crds --check`, here so that a plain `cargo test` sees them too.
        crate::gen_crds(
            &tikv_operator_api::all_crds(),
            &root().join(super::CRD_DIR),
            true,
        )
        .unwrap();
        crate::gen_chart_monitoring(
            &root().join(super::MONITORING_SOURCE_DIR),
            &root().join(super::MONITORING_DIR),
            true,
        )
        .unwrap();
    }
}
