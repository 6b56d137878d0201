//! `tikv-operator`: runs TiKV clusters (PD + TiKV) on Kubernetes.
//!
//! This binary is thin wiring: flags, and the pieces the other crates provide.

use std::io::Write;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Runs TiKV clusters (PD + TiKV) on Kubernetes.
#[derive(Debug, Parser)]
#[command(name = "tikv-operator", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print every CustomResourceDefinition of the core.tikv.org API as YAML
    /// (install with `tikv-operator crd | kubectl apply --server-side -f -`).
    Crd,
    /// Print the version.
    Version,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli.command, &mut std::io::stdout().lock()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(command: Command, out: &mut impl Write) -> anyhow::Result<()> {
    match command {
        Command::Crd => out.write_all(tikv_operator_api::render_all_crds_yaml()?.as_bytes())?,
        Command::Version => writeln!(out, "tikv-operator {}", env!("CARGO_PKG_VERSION"))?,
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn output(args: &[&str]) -> String {
        let cli = Cli::try_parse_from(args).unwrap();
        let mut buf = Vec::new();
        run(cli.command, &mut buf).unwrap();
        String::from_utf8(buf).unwrap()
    }

    #[test]
    fn crd_prints_the_committed_manifests() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../manifests/crds");
        let expected: Vec<String> = tikv_operator_api::all_crds()
            .iter()
            .map(|crd| {
                let path = dir.join(tikv_operator_api::crd_file_name(crd));
                std::fs::read_to_string(&path).unwrap_or_else(|e| {
                    panic!("{}: {e}; run `cargo xtask gen-crds`", path.display())
                })
            })
            .collect();
        assert_eq!(output(&["tikv-operator", "crd"]), expected.join("---\n"));
    }

    #[test]
    fn version_prints_the_package_version() {
        assert_eq!(
            output(&["tikv-operator", "version"]),
            format!("tikv-operator {}\n", env!("CARGO_PKG_VERSION"))
        );
    }

    #[test]
    fn unknown_subcommand_is_an_error() {
        assert!(Cli::try_parse_from(["tikv-operator", "frobnicate"]).is_err());
        assert!(Cli::try_parse_from(["tikv-operator"]).is_err());
    }
}
