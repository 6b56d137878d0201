//! Project automation: `cargo xtask <command>`.

mod api_doc;
mod chart;
mod image;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;

#[derive(Debug, Parser)]
#[command(name = "cargo xtask", about = "tikv-operator project automation")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Write one YAML file per CRD under manifests/crds/ and charts/tikv-operator/crds/,
    /// docs/api.md, and the chart's copies of manifests/monitoring/ (charts/tikv-operator/files/).
    GenCrds {
        /// Do not write; fail if the files on disk differ from what would be written.
        #[arg(long)]
        check: bool,
    },
    /// Build the operator image with buildah (no registry, no container engine) into an OCI
    /// archive under the target directory, then check its config and run the binary from it.
    Image(image::Args),
    /// End-to-end environment and tests.
    E2e(tikv_operator_e2e::cli::Args),
    /// Benchmarks against the e2e environment (converge, fleet, scale-in, upgrade).
    Bench(tikv_operator_e2e::bench::Args),
}

fn main() -> ExitCode {
    match run(Cli::parse().command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::GenCrds { check } => {
            let root = project_root();
            let crds = tikv_operator_api::all_crds();
            // Both places are checked before failing, so one run names every stale file.
            let kustomize = gen_crds(&crds, &root.join("manifests/crds"), check);
            let chart = gen_crds(&crds, &root.join(chart::CRD_DIR), check);
            let monitoring = gen_chart_monitoring(
                &root.join(chart::MONITORING_SOURCE_DIR),
                &root.join(chart::MONITORING_DIR),
                check,
            );
            let api_doc = gen_api_doc(&crds, &root.join("docs/api.md"), check);
            kustomize?;
            chart?;
            monitoring?;
            api_doc
        }
        Command::Image(args) => image::run_image(&args, &project_root()),
        Command::E2e(args) => tikv_operator_e2e::cli::run(args),
        Command::Bench(args) => tikv_operator_e2e::bench::run(args),
    }
}

fn project_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Brings `path` to `content`. With `check`, writes nothing and returns why
/// the file is stale (`missing` or `differs`); otherwise writes it if needed.
fn sync_file(path: &Path, content: &str, check: bool) -> anyhow::Result<Option<&'static str>> {
    let current = std::fs::read_to_string(path).ok();
    if current.as_deref() == Some(content) {
        return Ok(None);
    }
    if check {
        return Ok(Some(if current.is_some() {
            "differs"
        } else {
            "missing"
        }));
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(path, content).with_context(|| format!("writing {}", path.display()))?;
    println!("wrote {}", path.display());
    Ok(None)
}

fn stale_error(stale: &[String]) -> anyhow::Result<()> {
    if stale.is_empty() {
        return Ok(());
    }
    bail!(
        "generated files are stale; run `cargo xtask gen-crds` and commit the result:\n  {}",
        stale.join("\n  ")
    )
}

/// Generates (or, with `check`, verifies) the CRD files in `dir`. Files in
/// `dir` that no CRD produces are reported as stale too.
fn gen_crds(crds: &[CustomResourceDefinition], dir: &Path, check: bool) -> anyhow::Result<()> {
    let mut files = Vec::new();
    for crd in crds {
        let name = tikv_operator_api::crd_file_name(crd);
        let yaml =
            tikv_operator_api::render_crd_yaml(crd).with_context(|| format!("rendering {name}"))?;
        files.push((name, yaml));
    }
    sync_dir(
        dir,
        &files,
        |f| f.ends_with(".yaml"),
        "no CRD generates it",
        check,
    )
}

/// Brings the generated files of `dir` to `files` (name, content): writes what differs and
/// removes the files `owned` claims that are not in `files`. With `check`, writes nothing and
/// fails naming every stale file, an extra one with `extra_reason`.
fn sync_dir(
    dir: &Path,
    files: &[(String, String)],
    owned: impl Fn(&str) -> bool,
    extra_reason: &str,
    check: bool,
) -> anyhow::Result<()> {
    let mut stale = Vec::new();
    for (name, content) in files {
        let path = dir.join(name);
        if let Some(why) = sync_file(&path, content, check)? {
            stale.push(format!("{} ({why})", path.display()));
        }
    }
    if dir.exists() {
        for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
            let path = entry?.path();
            let file = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default()
                .to_owned();
            if owned(&file) && !files.iter().any(|(name, _)| *name == file) {
                if check {
                    stale.push(format!("{} ({extra_reason})", path.display()));
                } else {
                    std::fs::remove_file(&path)
                        .with_context(|| format!("removing {}", path.display()))?;
                    println!("removed {}", path.display());
                }
            }
        }
    }
    stale_error(&stale)
}

/// Generates (or, with `check`, verifies) the chart's copies of the monitoring objects: every
/// file of [`chart::MONITORING_FILES`] from `source` (manifests/monitoring/) into `dir`, YAML
/// with a header naming its source, the dashboard JSON byte for byte (JSON has no comments).
/// The chart's templates read these copies with `.Files.Get`, so the chart and the kustomize
/// install ship the same rules, dashboard and scrape configuration.
fn gen_chart_monitoring(source: &Path, dir: &Path, check: bool) -> anyhow::Result<()> {
    let mut files = Vec::new();
    for name in chart::MONITORING_FILES {
        let from = source.join(name);
        let text = std::fs::read_to_string(&from)
            .with_context(|| format!("reading {}", from.display()))?;
        let content = if name.ends_with(".yaml") {
            format!(
                "# Generated by `cargo xtask gen-crds` from manifests/monitoring/{name}. DO NOT EDIT.\n{text}"
            )
        } else {
            text
        };
        files.push(((*name).to_owned(), content));
    }
    sync_dir(
        dir,
        &files,
        |_| true,
        "not a copy of a manifests/monitoring/ file",
        check,
    )
}

/// Generates (or, with `check`, verifies) the API reference.
fn gen_api_doc(crds: &[CustomResourceDefinition], path: &Path, check: bool) -> anyhow::Result<()> {
    let doc = api_doc::render(crds);
    match sync_file(path, &doc, check)? {
        Some(why) => stale_error(&[format!("{} ({why})", path.display())]),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("xtask-gen-crds-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn check_fails_on_missing_changed_and_extra_files_and_passes_after_generation() {
        let crds = tikv_operator_api::all_crds();
        let dir = temp_dir("check");
        let err = gen_crds(&crds, &dir, true).unwrap_err().to_string();
        assert!(err.contains("missing"), "{err}");

        gen_crds(&crds, &dir, false).unwrap();
        gen_crds(&crds, &dir, true).unwrap();

        let file = dir.join("pdgroups.core.tikv.org.yaml");
        std::fs::write(&file, "edited by hand\n").unwrap();
        let err = gen_crds(&crds, &dir, true).unwrap_err().to_string();
        assert!(
            err.contains("pdgroups.core.tikv.org.yaml (differs)"),
            "{err}"
        );

        gen_crds(&crds, &dir, false).unwrap();
        std::fs::write(dir.join("old.core.tikv.org.yaml"), "x").unwrap();
        let err = gen_crds(&crds, &dir, true).unwrap_err().to_string();
        assert!(err.contains("no CRD generates it"), "{err}");
        gen_crds(&crds, &dir, false).unwrap();
        gen_crds(&crds, &dir, true).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn chart_monitoring_copies_follow_their_source_and_check_catches_drift() {
        let source = temp_dir("monitoring-source");
        let dir = temp_dir("monitoring-chart");
        std::fs::create_dir_all(&source).unwrap();
        for name in chart::MONITORING_FILES {
            std::fs::write(source.join(name), format!("{name} v1\n")).unwrap();
        }
        let err = gen_chart_monitoring(&source, &dir, true)
            .unwrap_err()
            .to_string();
        assert!(err.contains("prometheusrule.yaml (missing)"), "{err}");

        gen_chart_monitoring(&source, &dir, false).unwrap();
        gen_chart_monitoring(&source, &dir, true).unwrap();
        let rule = std::fs::read_to_string(dir.join("prometheusrule.yaml")).unwrap();
        assert!(
            rule.starts_with("# Generated by `cargo xtask gen-crds`"),
            "{rule}"
        );
        assert!(rule.ends_with("\nprometheusrule.yaml v1\n"), "{rule}");
        // JSON carries no comment: the dashboard is copied byte for byte.
        assert_eq!(
            std::fs::read_to_string(dir.join("tikv-operator-dashboard.json")).unwrap(),
            "tikv-operator-dashboard.json v1\n"
        );

        // An edit of the source, of a copy, or a file of its own in the chart's directory.
        std::fs::write(source.join("prometheusrule.yaml"), "v2\n").unwrap();
        let err = gen_chart_monitoring(&source, &dir, true)
            .unwrap_err()
            .to_string();
        assert!(err.contains("prometheusrule.yaml (differs)"), "{err}");
        gen_chart_monitoring(&source, &dir, false).unwrap();
        std::fs::write(dir.join("tikv-operator-dashboard.json"), "{}").unwrap();
        let err = gen_chart_monitoring(&source, &dir, true)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("tikv-operator-dashboard.json (differs)"),
            "{err}"
        );
        gen_chart_monitoring(&source, &dir, false).unwrap();
        std::fs::write(dir.join("extra-rules.yaml"), "x").unwrap();
        let err = gen_chart_monitoring(&source, &dir, true)
            .unwrap_err()
            .to_string();
        assert!(err.contains("extra-rules.yaml (not a copy"), "{err}");
        gen_chart_monitoring(&source, &dir, false).unwrap();
        assert!(!dir.join("extra-rules.yaml").exists());
        gen_chart_monitoring(&source, &dir, true).unwrap();
        std::fs::remove_dir_all(&source).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn api_doc_covers_every_kind_and_field() {
        let doc = api_doc::render(&tikv_operator_api::all_crds());
        for kind in [
            "## Cluster",
            "## PDGroup",
            "## PD\n",
            "## TiKVGroup",
            "## TiKV\n",
        ] {
            assert!(doc.contains(kind), "missing {kind}");
        }
        for field in [
            "`spec.template.spec.volumes[].mounts[].type`",
            "`spec.tlsCluster.enabled`",
            "`status.leaderCount`",
            "`spec.offline`",
            "`spec.template.spec.server.labels`",
        ] {
            assert!(doc.contains(field), "missing {field}");
        }
        assert!(doc.contains("*topology is immutable*"));
        // Per-field rules: OpenAPI bounds and CEL messages next to the field.
        let line = |field: &str| {
            doc.lines()
                .find(|l| l.starts_with(&format!("| `{field}` |")))
                .unwrap_or_default()
                .to_owned()
        };
        let storage = line("spec.template.spec.volumes[].storage");
        assert!(storage.contains("at most 64 characters"), "{storage}");
        assert!(
            storage.contains("*storage must be a positive quantity"),
            "{storage}"
        );
        let volumes = line("spec.template.spec.volumes");
        assert!(volumes.contains("unique `name`"), "{volumes}");
        assert!(volumes.contains("*mount paths must be unique"), "{volumes}");
        assert!(doc.contains("`server.addr`"));
    }
}
