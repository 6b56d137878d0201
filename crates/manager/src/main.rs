//! `tikv-operator`: runs TiKV clusters (PD + TiKV) on Kubernetes.
//!
//! This binary is thin wiring: flags, leader election, the HTTP endpoint (health, readiness,
//! metrics), logging, and the controllers of `tikv-operator-controller`.

mod cli;
mod http;
mod leader;
#[cfg(test)]
mod monitoring_tests;
mod run;
mod telemetry;

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

use cli::{Cli, Command, RunArgs};

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.into_command() {
        Command::Run(args) => run_operator(&args),
        other => match print(other, &mut std::io::stdout().lock()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                eprintln!("error: {err:#}");
                ExitCode::FAILURE
            }
        },
    }
}

/// `run`: validates the flags, then runs the operator on a multi-threaded runtime. Exit status
/// 0 after a signal, 1 on any error (including a lost Lease).
fn run_operator(args: &RunArgs) -> ExitCode {
    let settings = match args.validate(default_identity) {
        Ok(s) => s,
        Err(err) => {
            eprintln!("error: {err}");
            return ExitCode::FAILURE;
        }
    };
    if let Err(err) = run::init_tracing(settings.log_format, &settings.log_level) {
        eprintln!("error: {err:#}");
        return ExitCode::FAILURE;
    }
    if !settings.test_extra_pod_env.is_empty() {
        // Test only (a hidden flag): changes the rendering, never a Pod's revision.
        tikv_operator_core::test_hooks::set_extra_pod_env(&settings.test_extra_pod_env);
        tracing::warn!(
            vars = ?settings.test_extra_pod_env,
            "test only: every rendered PD and TiKV container gets extra environment variables"
        );
    }
    // kube is built with the `ring` TLS backend and installs no process-wide default.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("error: starting the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(run::run(settings));
    match result {
        Ok(()) => {
            runtime.shutdown_timeout(Duration::from_secs(5));
            tracing::info!("tikv-operator stopped");
            ExitCode::SUCCESS
        }
        Err(err) => {
            tracing::error!(error = %format!("{err:#}"), "tikv-operator failed");
            eprintln!("error: {err:#}");
            // Whatever the controllers left running stops now.
            runtime.shutdown_background();
            ExitCode::FAILURE
        }
    }
}

/// Leader election identity when neither `--leader-elect-identity` nor `POD_NAME` is set: the
/// host name plus a random suffix (two processes on one host never share an identity).
fn default_identity() -> String {
    use std::hash::{BuildHasher, Hasher};
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "tikv-operator".to_owned());
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    format!("{host}-{:08x}", hasher.finish() as u32)
}

fn print(command: Command, out: &mut impl Write) -> anyhow::Result<()> {
    match command {
        Command::Crd => out.write_all(tikv_operator_api::render_all_crds_yaml()?.as_bytes())?,
        Command::Version => writeln!(out, "tikv-operator {}", env!("CARGO_PKG_VERSION"))?,
        Command::Run(_) => anyhow::bail!("`run` prints nothing"),
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
        print(cli.into_command(), &mut buf).unwrap();
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
    fn default_identities_differ() {
        let (a, b) = (default_identity(), default_identity());
        assert_ne!(a, b);
        assert!(!a.is_empty());
    }
}
