//! Checks of `manifests/monitoring/` against the operator's metric registry: every metric an
//! alert (`prometheusrule.yaml`) or a dashboard panel (`tikv-operator-dashboard.json`) queries
//! is one the operator exports, under the name Prometheus stores it (counters `_total`,
//! histograms `_bucket`/`_sum`/`_count`, info metrics `_info`); every alert carries what an
//! on-call engineer needs; the PodMonitor scrapes the Deployment's metrics port; the
//! kustomization lists every file; docs/metrics.md lists every alert; and `promtool check
//! rules` accepts the rules and parses every dashboard query.
//!
//! The registry is built the way `run::run` builds it (controller metrics, then the manager's
//! own, under [`PREFIX`]), so renaming a metric there fails these tests until the alerts and
//! the dashboard follow.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use prometheus_client::registry::Registry;
use serde::Deserialize;
use serde_json::Value;

use crate::telemetry::{ManagerMetrics, PREFIX};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn monitoring() -> PathBuf {
    repo().join("manifests/monitoring")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn yaml_documents(path: &Path) -> Vec<Value> {
    serde_norway::Deserializer::from_str(&read(path))
        .map(|doc| Value::deserialize(doc).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
        .filter(|v| !v.is_null())
        .collect()
}

/// The operator's registry, registered as `run::run` registers it, with one series in every
/// labelled family (the exposition leaves out a family that has no series yet).
fn operator_registry() -> Registry {
    use tikv_operator_controller::metrics::{
        ControllerLabels, ErrorLabels, FailoverLabels, ManagedLabels, PdErrorLabels, PdLabels,
    };
    let mut registry = Registry::with_prefix(PREFIX);
    let controllers = tikv_operator_controller::Metrics::new(&mut registry);
    let manager = ManagerMetrics::new(&mut registry);
    let controller = ControllerLabels {
        controller: "tikv".to_owned(),
    };
    let pd = PdLabels {
        operation: "stores".to_owned(),
    };
    controllers.reconciles.get_or_create(&controller).inc();
    controllers
        .reconcile_errors
        .get_or_create(&ErrorLabels {
            controller: "tikv".to_owned(),
            category: "pd".to_owned(),
        })
        .inc();
    controllers
        .reconcile_duration
        .get_or_create(&controller)
        .observe(0.01);
    controllers
        .reconciles_in_flight
        .get_or_create(&controller)
        .inc();
    controllers
        .reconciles_deferred
        .get_or_create(&controller)
        .inc();
    controllers.pd_requests.get_or_create(&pd).inc();
    controllers
        .pd_request_errors
        .get_or_create(&PdErrorLabels {
            operation: "stores".to_owned(),
            category: "unavailable".to_owned(),
        })
        .inc();
    controllers
        .pd_request_duration
        .get_or_create(&pd)
        .observe(0.01);
    controllers
        .managed
        .get_or_create(&ManagedLabels {
            kind: "TiKV".to_owned(),
            state: "Ready".to_owned(),
        })
        .inc();
    controllers
        .failover_stores
        .get_or_create(&FailoverLabels {
            phase: "Replacing".to_owned(),
        })
        .inc();
    controllers
        .pd_failover_members
        .get_or_create(&FailoverLabels {
            phase: "Refused".to_owned(),
        })
        .inc();
    manager
        .kube_requests
        .get_or_create(&crate::telemetry::KubeRequestLabels {
            verb: "get".to_owned(),
            resource: "pods".to_owned(),
        })
        .inc();
    registry
}

/// Names passed to `registry.register(` in a source file (the first string literal of each
/// call), as crates/manager/tests/docs.rs reads them.
fn registered_in(rel: &str) -> BTreeSet<String> {
    read(&repo().join(rel))
        .split(".register(")
        .skip(1)
        .map(|call| {
            let start = call.find('"').unwrap() + 1;
            let len = call[start..].find('"').unwrap();
            format!("{PREFIX}_{}", &call[start..start + len])
        })
        .collect()
}

/// Metric family names (`# TYPE` lines) of a registry's exposition.
fn families(registry: &Registry) -> BTreeSet<String> {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, registry).unwrap();
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .map(|l| l.split(' ').next().unwrap().to_owned())
        .collect()
}

/// The series names Prometheus stores for a registry: each metric family's `# TYPE` line in
/// the exposition, with the suffix prometheus_client writes for that type.
fn exposed_names(registry: &Registry) -> BTreeSet<String> {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, registry).unwrap();
    let mut names = BTreeSet::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let (family, kind) = rest.split_once(' ').unwrap();
        let suffixes: &[&str] = match kind {
            "counter" => &["_total"],
            "gauge" => &[""],
            "histogram" => &["_bucket", "_sum", "_count"],
            "info" => &["_info"],
            other => panic!("{family}: metric type {other} has no suffix rule here"),
        };
        names.extend(suffixes.iter().map(|s| format!("{family}{s}")));
    }
    names
}

/// Names of the samples of an exposition (what a scrape actually stores).
fn sample_names(registry: &Registry) -> BTreeSet<String> {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, registry).unwrap();
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| l.split(['{', ' ']).next().unwrap().to_owned())
        .collect()
}

/// PromQL functions and aggregation operators the monitoring files may call.
const FUNCTIONS: &[&str] = &[
    "abs",
    "absent",
    "absent_over_time",
    "avg",
    "avg_over_time",
    "ceil",
    "changes",
    "clamp_max",
    "clamp_min",
    "count",
    "count_over_time",
    "delta",
    "deriv",
    "floor",
    "group",
    "histogram_quantile",
    "idelta",
    "increase",
    "irate",
    "label_replace",
    "last_over_time",
    "max",
    "max_over_time",
    "min",
    "min_over_time",
    "quantile",
    "rate",
    "resets",
    "round",
    "scalar",
    "sort",
    "sort_desc",
    "sum",
    "sum_over_time",
    "time",
    "topk",
    "bottomk",
    "vector",
];

/// PromQL keywords that are not metric names.
const KEYWORDS: &[&str] = &[
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "inf",
    "nan",
    "atan2",
];

/// Keywords followed by a parenthesised list of label names.
const LABEL_LISTS: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];

/// The metric names a PromQL expression selects, in order of appearance. Label matchers
/// (`{...}`), ranges (`[...]`), strings, numbers, durations, Grafana variables (`$x`,
/// `${x}`) and label lists of `by`/`on`/... are skipped. A call of a function not in
/// [`FUNCTIONS`], a `__name__` matcher (which would hide a metric name from this check) or
/// unbalanced brackets is an error.
fn promql_metric_names(expr: &str) -> Result<Vec<String>, String> {
    let chars: Vec<char> = expr.chars().collect();
    let mut names = Vec::new();
    let mut depth = 0i32;
    let mut i = 0;
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    let skip_ws = |mut j: usize| {
        while j < chars.len() && chars[j].is_whitespace() {
            j += 1;
        }
        j
    };
    // Index just past the bracket closing the one at `open`, skipping strings inside.
    let close = |open: usize, end: char| -> Result<usize, String> {
        let mut j = open + 1;
        while j < chars.len() {
            match chars[j] {
                '"' | '\'' | '`' => {
                    let q = chars[j];
                    j += 1;
                    while j < chars.len() && chars[j] != q {
                        if chars[j] == '\\' {
                            j += 1;
                        }
                        j += 1;
                    }
                }
                c if c == end => return Ok(j + 1),
                _ => {}
            }
            j += 1;
        }
        Err(format!("unclosed {:?} in {expr}", chars[open]))
    };
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c == '{' {
            let end = close(i, '}')?;
            let matchers: String = chars[i..end].iter().collect();
            if matchers.contains("__name__") {
                return Err(format!("__name__ matcher in {expr}"));
            }
            i = end;
        } else if c == '[' {
            i = close(i, ']')?;
        } else if c == '"' || c == '\'' || c == '`' {
            i = close(i, c)?;
        } else if c == '$' {
            i += 1;
            if i < chars.len() && chars[i] == '{' {
                i = close(i, '}')?;
            }
            while i < chars.len() && ident(chars[i]) {
                i += 1;
            }
        } else if c.is_ascii_digit() || c == '.' {
            while i < chars.len() && (ident(chars[i]) || chars[i] == '.') {
                i += 1;
            }
        } else if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < chars.len() && ident(chars[i]) {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let next = skip_ws(i);
            let called = next < chars.len() && chars[next] == '(';
            let word = word.as_str();
            // `sum by (a) (x)`: an aggregation whose modifier comes before its argument.
            let rest: String = chars[next..].iter().collect();
            let modified = ["by", "without"].iter().any(|m| {
                rest.strip_prefix(m)
                    .is_some_and(|r| r.trim_start().starts_with('('))
            });
            let called = called || (modified && !LABEL_LISTS.contains(&word));
            if LABEL_LISTS.contains(&word) && called {
                i = close(next, ')')?;
            } else if called && !FUNCTIONS.contains(&word) {
                return Err(format!("unknown function {word} in {expr}"));
            } else if !called && !KEYWORDS.contains(&word) {
                names.push(word.to_owned());
            }
        } else {
            match c {
                '(' => depth += 1,
                ')' => depth -= 1,
                _ => {}
            }
            if depth < 0 {
                return Err(format!("unbalanced ')' in {expr}"));
            }
            i += 1;
        }
    }
    if depth != 0 {
        return Err(format!("unbalanced '(' in {expr}"));
    }
    Ok(names)
}

/// Checks that `expr` selects at least one metric and only metrics in `exposed`.
fn check_expr(what: &str, expr: &str, exposed: &BTreeSet<String>) -> Result<(), String> {
    let names = promql_metric_names(expr).map_err(|e| format!("{what}: {e}"))?;
    if names.is_empty() {
        return Err(format!("{what}: selects no metric: {expr}"));
    }
    let unknown: Vec<&String> = names.iter().filter(|n| !exposed.contains(*n)).collect();
    if unknown.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{what}: {unknown:?} not exported by the operator (exported: {exposed:?})"
        ))
    }
}

/// Whether `s` is a Prometheus duration (`30s`, `1h30m`, ...): units in decreasing order.
fn is_duration(s: &str) -> bool {
    const UNITS: [&str; 7] = ["y", "w", "d", "h", "m", "s", "ms"];
    let mut rest = s;
    let mut next_unit = 0;
    if rest.is_empty() {
        return false;
    }
    while !rest.is_empty() {
        let digits = rest.chars().take_while(char::is_ascii_digit).count();
        if digits == 0 {
            return false;
        }
        rest = &rest[digits..];
        // "ms" before "m" so that "5ms" is not "5m" + "s".
        let Some(u) = (next_unit..UNITS.len())
            .filter(|&u| rest.starts_with(UNITS[u]))
            .max_by_key(|&u| UNITS[u].len())
        else {
            return false;
        };
        rest = &rest[UNITS[u].len()..];
        next_unit = u + 1;
    }
    true
}

/// The PrometheusRule and its alerting rules as (group, rule).
fn rule_object() -> Value {
    let docs = yaml_documents(&monitoring().join("prometheusrule.yaml"));
    assert_eq!(docs.len(), 1, "one PrometheusRule per file");
    let rule = docs.into_iter().next().unwrap();
    assert_eq!(rule["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(rule["kind"], "PrometheusRule");
    rule
}

fn alerts(rule: &Value) -> Vec<Value> {
    let groups = rule["spec"]["groups"].as_array().unwrap();
    assert!(!groups.is_empty());
    groups
        .iter()
        .flat_map(|g| {
            assert!(g["name"].as_str().is_some_and(|n| !n.is_empty()));
            g["rules"].as_array().unwrap().clone()
        })
        .collect()
}

/// Every query of the dashboard: panel targets (rows' nested panels included) and query
/// variables, as (where, PromQL).
fn dashboard_queries(dashboard: &Value) -> Vec<(String, String)> {
    fn panels(list: &Value, out: &mut Vec<(String, String)>) {
        for panel in list.as_array().into_iter().flatten() {
            let title = panel["title"].as_str().unwrap_or_default();
            for target in panel["targets"].as_array().into_iter().flatten() {
                let expr = target["expr"].as_str().unwrap();
                out.push((format!("panel {title:?}"), expr.to_owned()));
            }
            panels(&panel["panels"], out);
        }
    }
    let mut out = Vec::new();
    panels(&dashboard["panels"], &mut out);
    for var in dashboard["templating"]["list"].as_array().unwrap() {
        if var["type"] != "query" {
            continue;
        }
        let query = var["query"]["query"]
            .as_str()
            .or(var["query"].as_str())
            .unwrap();
        // Grafana's `label_values(<selector>, <label>)`: the selector is PromQL.
        let selector = query
            .strip_prefix("label_values(")
            .and_then(|q| q.strip_suffix(')'))
            .and_then(|q| q.rsplit_once(','))
            .map_or(query, |(selector, _label)| selector);
        out.push((format!("variable {}", var["name"]), selector.to_owned()));
    }
    out
}

#[test]
fn exposed_names_are_the_names_a_scrape_stores() {
    // One metric of each type with a value: the suffix rules of `exposed_names` must give
    // exactly the sample names prometheus_client writes.
    use prometheus_client::metrics::counter::Counter;
    use prometheus_client::metrics::gauge::Gauge;
    use prometheus_client::metrics::histogram::Histogram;
    use prometheus_client::metrics::info::Info;
    let mut registry = Registry::with_prefix(PREFIX);
    let counter = Counter::<u64>::default();
    counter.inc();
    registry.register("c", "counter", counter);
    registry.register("g", "gauge", Gauge::<i64>::default());
    let histogram = Histogram::new([1.0]);
    histogram.observe(0.5);
    registry.register("h_seconds", "histogram", histogram);
    registry.register("i", "info", Info::new(vec![("k", "v")]));
    assert_eq!(exposed_names(&registry), sample_names(&registry));
    let want: BTreeSet<String> = [
        "c_total",
        "g",
        "h_seconds_bucket",
        "h_seconds_sum",
        "h_seconds_count",
        "i_info",
    ]
    .iter()
    .map(|n| format!("{PREFIX}_{n}"))
    .collect();
    assert_eq!(exposed_names(&registry), want);

    // The operator's registry: every metric registered in the sources is in the exposition
    // (`operator_registry` gives each labelled family a series; a metric added without one
    // there fails here).
    let mut registered = registered_in("crates/manager/src/telemetry.rs");
    registered.extend(registered_in("crates/controller/src/metrics.rs"));
    assert!(registered.len() >= 12, "{registered:?}");
    assert_eq!(families(&operator_registry()), registered);
    let exposed = exposed_names(&operator_registry());
    assert_eq!(exposed, sample_names(&operator_registry()));
}

#[test]
fn the_promql_scan_finds_metric_names_and_refuses_what_it_cannot_check() {
    let names = promql_metric_names(
        r#"sum by (namespace, le) (rate(a_bucket{x=~"y|z",le!="1"}[5m] offset 1h)) / on (namespace) group_left (b)
           max without (pod) (b{c="}"} and on(instance) c == 1) > bool 0.5e3 or vector(1) unless absent(d{e="${v}"}[$__rate_interval])"#,
    )
    .unwrap();
    assert_eq!(names, ["a_bucket", "b", "c", "d"]);
    assert!(promql_metric_names("sum(rate(x[5m])").is_err());
    assert!(promql_metric_names("sum(x))").is_err());
    assert!(
        promql_metric_names("rates(x[5m])")
            .unwrap_err()
            .contains("unknown function")
    );
    assert!(promql_metric_names(r#"{__name__="x"}"#).is_err());

    let exposed = exposed_names(&operator_registry());
    // A renamed metric, a counter without `_total`, a histogram without `_bucket`: refused.
    for expr in [
        "rate(tikv_operator_no_such_metric_total[5m])",
        "rate(tikv_operator_reconciles[5m])",
        "histogram_quantile(0.9, rate(tikv_operator_reconcile_duration_seconds[5m]))",
        "vector(1)",
    ] {
        assert!(check_expr("test", expr, &exposed).is_err(), "{expr}");
    }
    check_expr("test", "rate(tikv_operator_reconciles_total[5m])", &exposed).unwrap();
}

#[test]
fn durations_are_checked() {
    for ok in ["1m", "15m", "1h30m", "2h", "500ms", "1d"] {
        assert!(is_duration(ok), "{ok}");
    }
    for bad in ["", "15", "m", "30m1h", "1 h", "15min", "-1m"] {
        assert!(!is_duration(bad), "{bad}");
    }
}

#[test]
fn every_alert_is_complete_and_queries_exported_metrics() {
    let exposed = exposed_names(&operator_registry());
    let rule = rule_object();
    let alerts = alerts(&rule);
    let mut errors = Vec::new();
    let mut names = BTreeSet::new();
    for alert in &alerts {
        let Some(name) = alert["alert"].as_str() else {
            errors.push(format!("a rule that is not an alert: {alert}"));
            continue;
        };
        if !names.insert(name.to_owned()) {
            errors.push(format!("{name}: defined twice"));
        }
        if !name.starts_with("TiKVOperator") {
            errors.push(format!("{name}: alert names start with TiKVOperator"));
        }
        match alert["for"].as_str() {
            Some(d) if is_duration(d) => {}
            other => errors.push(format!("{name}: `for` is {other:?}, not a duration")),
        }
        let severity = alert["labels"]["severity"].as_str();
        if !matches!(severity, Some("critical" | "warning")) {
            errors.push(format!(
                "{name}: severity {severity:?} (critical pages, warning tickets)"
            ));
        }
        for key in ["summary", "description"] {
            if alert["annotations"][key]
                .as_str()
                .is_none_or(|s| s.trim().is_empty())
            {
                errors.push(format!("{name}: annotation {key} missing"));
            }
        }
        match alert["expr"].as_str() {
            Some(expr) => {
                if let Err(e) = check_expr(name, expr, &exposed) {
                    errors.push(e);
                }
            }
            None => errors.push(format!("{name}: no expr")),
        }
    }
    assert!(errors.is_empty(), "{}", errors.join("\n"));

    // docs/metrics.md lists every alert with its severity and `for`.
    let documented: BTreeSet<(String, String, String)> = read(&repo().join("docs/metrics.md"))
        .lines()
        .filter_map(|line| {
            let cells: Vec<&str> = line.strip_prefix("| `TiKVOperator")?.split('|').collect();
            let name = format!("TiKVOperator{}", cells[0].trim().trim_end_matches('`'));
            Some((name, cells[1].trim().to_owned(), cells[2].trim().to_owned()))
        })
        .collect();
    let defined: BTreeSet<(String, String, String)> = alerts
        .iter()
        .map(|a| {
            let field = |v: &Value| v.as_str().unwrap().to_owned();
            (
                field(&a["alert"]),
                field(&a["labels"]["severity"]),
                field(&a["for"]),
            )
        })
        .collect();
    assert_eq!(documented, defined, "the alert table of docs/metrics.md");

    // What an SRE is paged or ticketed for (issue 21): operator down or not leader, reconcile
    // errors, a Cluster not Ready, stuck rollouts and scale-ins, PD unreachable, failover
    // acted or refused.
    for required in [
        "TiKVOperatorDown",
        "TiKVOperatorNoLeader",
        "TiKVOperatorReconcileErrors",
        "TiKVOperatorClusterNotReady",
        "TiKVOperatorTiKVNotReady",
        "TiKVOperatorPDNotReady",
        "TiKVOperatorDeletionStuck",
        "TiKVOperatorPDUnreachable",
        "TiKVOperatorFailoverRefused",
        "TiKVOperatorFailoverActed",
    ] {
        assert!(names.contains(required), "no alert {required}");
    }
}

#[test]
fn every_dashboard_query_uses_exported_metrics() {
    let path = monitoring().join("tikv-operator-dashboard.json");
    let dashboard: Value = serde_json::from_str(&read(&path)).unwrap();
    assert_eq!(dashboard["uid"], "tikv-operator");
    let exposed = exposed_names(&operator_registry());
    let queries = dashboard_queries(&dashboard);
    assert!(queries.len() >= 15, "{queries:?}");
    let errors: Vec<String> = queries
        .iter()
        .filter_map(|(what, expr)| check_expr(what, expr, &exposed).err())
        .collect();
    assert!(errors.is_empty(), "{}", errors.join("\n"));

    // Every family the operator exports is on the dashboard.
    let used: BTreeSet<String> = queries
        .iter()
        .flat_map(|(_, expr)| promql_metric_names(expr).unwrap())
        .collect();
    let families = |names: &BTreeSet<String>| -> BTreeSet<String> {
        names
            .iter()
            .map(|n| {
                ["_total", "_bucket", "_sum", "_count", "_info"]
                    .iter()
                    .find_map(|s| n.strip_suffix(s))
                    .unwrap_or(n)
                    .to_owned()
            })
            .collect()
    };
    let missing: Vec<String> = families(&exposed)
        .difference(&families(&used))
        .cloned()
        .collect();
    assert!(missing.is_empty(), "not on the dashboard: {missing:?}");

    // Panel ids are unique (Grafana keys panel state by id) and every panel uses the
    // dashboard's data source variable.
    let mut ids = BTreeSet::new();
    let mut stack: Vec<&Value> = dashboard["panels"].as_array().unwrap().iter().collect();
    while let Some(panel) = stack.pop() {
        assert!(ids.insert(panel["id"].as_u64().unwrap()), "{panel}");
        if panel["type"] != "row" {
            assert_eq!(panel["datasource"]["uid"], "${datasource}", "{panel}");
        }
        stack.extend(panel["panels"].as_array().into_iter().flatten());
    }
}

#[test]
fn the_podmonitor_scrapes_the_operator_deployment() {
    let monitor = yaml_documents(&monitoring().join("podmonitor.yaml"));
    let [monitor] = monitor.as_slice() else {
        panic!("one PodMonitor expected")
    };
    assert_eq!(monitor["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(monitor["kind"], "PodMonitor");
    let deployment = yaml_documents(&repo().join("manifests/operator/base/deployment.yaml"));
    let deployment = &deployment[0];
    let template = &deployment["spec"]["template"];

    // The selector picks the operator's pods.
    let selector = monitor["spec"]["selector"]["matchLabels"]
        .as_object()
        .unwrap();
    assert!(!selector.is_empty());
    for (k, v) in selector {
        assert_eq!(&template["metadata"]["labels"][k], v, "label {k}");
    }
    // The job label is a label the pods carry.
    let job_label = monitor["spec"]["jobLabel"].as_str().unwrap();
    assert!(template["metadata"]["labels"][job_label].is_string());

    // Each endpoint is a named port of the operator container, on the annotated path.
    let container = &template["spec"]["containers"][0];
    let annotations = &template["metadata"]["annotations"];
    let endpoints = monitor["spec"]["podMetricsEndpoints"].as_array().unwrap();
    assert_eq!(endpoints.len(), 1);
    for endpoint in endpoints {
        let port = container["ports"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == endpoint["port"])
            .unwrap_or_else(|| panic!("no container port named {}", endpoint["port"]));
        assert_eq!(
            port["containerPort"].to_string(),
            annotations["prometheus.io/port"].as_str().unwrap()
        );
        assert_eq!(endpoint["path"], annotations["prometheus.io/path"]);
        assert!(is_duration(endpoint["interval"].as_str().unwrap()));
    }
}

#[test]
fn the_kustomization_lists_every_monitoring_file() {
    let dir = monitoring();
    let kustomization = &yaml_documents(&dir.join("kustomization.yaml"))[0];
    let mut listed = BTreeSet::new();
    for r in kustomization["resources"].as_array().unwrap() {
        listed.insert(r.as_str().unwrap().to_owned());
    }
    for generator in kustomization["configMapGenerator"].as_array().unwrap() {
        for f in generator["files"].as_array().unwrap() {
            listed.insert(f.as_str().unwrap().to_owned());
        }
    }
    let mut present = BTreeSet::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        if name != "kustomization.yaml" {
            present.insert(name);
        }
    }
    assert_eq!(listed, present);
}

/// The promtool binary of `e2e/scripts/build-binaries.sh promtool` (its version is read from
/// the script) in the e2e binary cache, built once (minutes, from the Go module proxy) when
/// missing, so `cargo test --workspace` works on a fresh machine; a build that fails fails the
/// test.
fn promtool() -> PathBuf {
    static BUILT: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    let script = repo().join("e2e/scripts/build-binaries.sh");
    let version = read(&script)
        .lines()
        .find_map(|l| l.strip_prefix("PROMTOOL_VERSION=\"${E2E_PROMTOOL_VERSION:-"))
        .and_then(|l| l.strip_suffix("}\""))
        .expect("PROMTOOL_VERSION in e2e/scripts/build-binaries.sh")
        .to_owned();
    let cache = std::env::var_os("TIKV_OPERATOR_E2E_CACHE").map_or_else(
        || PathBuf::from(std::env::var_os("HOME").unwrap()).join(".cache/tikv-operator-e2e"),
        PathBuf::from,
    );
    let path = cache.join("bin").join(format!("promtool-{version}"));
    BUILT.get_or_init(|| {
        if !path.is_file() {
            let status = std::process::Command::new("bash")
                .arg(&script)
                .arg("promtool")
                .status()
                .expect("running e2e/scripts/build-binaries.sh promtool");
            assert!(status.success(), "building promtool failed ({status})");
        }
    });
    assert!(
        path.is_file(),
        "{} is missing after `bash e2e/scripts/build-binaries.sh promtool`",
        path.display()
    );
    path
}

/// Runs `promtool check rules` on `rules` (a rule file's content) and returns its output.
fn promtool_check_rules(rules: &Value) -> Result<String, String> {
    let promtool = promtool();
    let dir = std::env::temp_dir().join(format!(
        "tikv-operator-rules-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("rules.yaml");
    std::fs::write(&file, serde_norway::to_string(rules).unwrap()).unwrap();
    let out = std::process::Command::new(&promtool)
        .args(["check", "rules"])
        .arg(&file)
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() {
        Ok(text)
    } else {
        Err(text)
    }
}

#[test]
fn promtool_accepts_the_rules() {
    // promtool reads a plain rule file: the PrometheusRule's spec.
    let rule = rule_object();
    let text = promtool_check_rules(&rule["spec"])
        .unwrap_or_else(|e| panic!("promtool check rules failed:\n{e}"));
    let count = alerts(&rule).len();
    assert!(
        text.contains(&format!("SUCCESS: {count} rules found")),
        "{text}"
    );
}

#[test]
fn promtool_parses_the_dashboard_queries() {
    // Each query as a recording rule, with Grafana's interval variables replaced by a
    // duration (other variables only appear inside label matcher strings).
    let path = monitoring().join("tikv-operator-dashboard.json");
    let dashboard: Value = serde_json::from_str(&read(&path)).unwrap();
    let queries = dashboard_queries(&dashboard);
    let rules: Vec<Value> = queries
        .iter()
        .enumerate()
        .map(|(i, (_, expr))| {
            let expr = ["$__rate_interval", "$__interval", "$__range"]
                .iter()
                .fold(expr.clone(), |e, v| e.replace(v, "5m"));
            serde_json::json!({ "record": format!("dashboard:query_{i}"), "expr": expr })
        })
        .collect();
    let file = serde_json::json!({ "groups": [{ "name": "dashboard", "rules": rules }] });
    let text = promtool_check_rules(&file).unwrap_or_else(|e| {
        panic!("promtool check rules failed on the dashboard queries {queries:#?}:\n{e}")
    });
    assert!(
        text.contains(&format!("SUCCESS: {} rules found", queries.len())),
        "{text}"
    );
}
