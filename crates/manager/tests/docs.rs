//! docs/metrics.md lists exactly the metrics that are registered: the manager's
//! (crates/manager/src/telemetry.rs) and the controllers' (crates/controller/src/metrics.rs).

#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::path::Path;

fn read(rel: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Names passed to `registry.register(` (the first string literal after each call).
fn registered(source: &str) -> BTreeSet<String> {
    source
        .split(".register(")
        .skip(1)
        .map(|call| {
            let start = call.find('"').unwrap() + 1;
            let len = call[start..].find('"').unwrap();
            call[start..start + len].to_owned()
        })
        .collect()
}

/// Names in the tables of docs/metrics.md, without the prefix and without the suffix the
/// exposition format adds (`_total` for counters, `_info` for info metrics).
fn documented(doc: &str) -> BTreeSet<String> {
    doc.lines()
        .filter_map(|line| {
            let rest = line.strip_prefix("| `tikv_operator_")?;
            let (name, rest) = rest.split_once('`')?;
            let kind = rest.split('|').nth(1)?.trim();
            let base = match kind {
                "counter" => name.strip_suffix("_total")?,
                "info" => name.strip_suffix("_info")?,
                "gauge" | "histogram" => name,
                other => panic!("unknown metric type {other} for {name}"),
            };
            Some(base.to_owned())
        })
        .collect()
}

#[test]
fn metrics_doc_matches_the_registered_metrics() {
    let mut names = registered(&read("crates/manager/src/telemetry.rs"));
    let manager = names.len();
    names.extend(registered(&read("crates/controller/src/metrics.rs")));
    assert!(manager >= 3 && names.len() >= manager + 8, "{names:?}");
    assert_eq!(documented(&read("docs/metrics.md")), names);
}
