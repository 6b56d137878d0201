//! `cargo xtask e2e ...` entry point.

use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};

use crate::cluster::{self, UpOptions};
use crate::config::{self, Layout};

/// Arguments of `cargo xtask e2e`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: E2eCommand,
}

#[derive(Debug, clap::Subcommand)]
enum E2eCommand {
    /// Start, stop or inspect the local environment.
    Env {
        #[command(subcommand)]
        action: EnvAction,
    },
    /// Run the e2e tests (starts the environment if it is not up, and stops it afterwards
    /// unless --keep-env).
    Test(TestArgs),
    /// Build (or reuse) the cached binaries: etcd, Kubernetes, kwok, pd-server.
    Build,
    /// Run the operator against the environment (started if it is not up, and left
    /// running): builds `tikv-operator` and runs `tikv-operator run` with the environment's
    /// kubeconfig, no leader election and `/metrics` on 127.0.0.1:8080, plus ARGS
    /// (e.g. `--namespace demo`). Stop it with Ctrl-C.
    Operator {
        /// More arguments for `tikv-operator run`.
        #[arg(trailing_var_arg = true)]
        args: Vec<String>,
    },
    /// Run a command with the environment's KUBECONFIG and hosts file (pod names resolve),
    /// e.g. the operator out of cluster: `cargo xtask e2e exec -- target/debug/tikv-operator`.
    Exec {
        /// The command and its arguments.
        #[arg(trailing_var_arg = true, required = true)]
        command: Vec<String>,
    },
}

#[derive(Debug, clap::Subcommand)]
enum EnvAction {
    /// Start the environment (building missing binaries first).
    Up {
        /// Fail instead of building missing binaries.
        #[arg(long)]
        skip_build: bool,
    },
    /// Stop every process of the environment and remove its state.
    Down,
    /// Show processes and API server health.
    Status,
    /// Print the tails of the environment's logs.
    Logs {
        /// Lines per log.
        #[arg(long, default_value_t = 50)]
        lines: usize,
    },
}

#[derive(Debug, clap::Args)]
struct TestArgs {
    /// Leave the environment running after the tests.
    #[arg(long)]
    keep_env: bool,
    /// Parallel tests per test binary.
    #[arg(long, default_value_t = 2)]
    test_threads: usize,
    /// Test name filter and other arguments for the test harness.
    #[arg(trailing_var_arg = true)]
    filter: Vec<String>,
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?)
}

/// Runs `cargo xtask e2e`.
pub fn run(args: Args) -> Result<()> {
    let layout = Layout::from_env();
    if std::env::var_os(cluster::AGENT_ENV).is_some() {
        // Started by `env up` (see `cluster::spawn_agent`).
        return runtime()?.block_on(crate::agent::run(layout));
    }
    match args.command {
        E2eCommand::Env { action } => match action {
            EnvAction::Up { skip_build } => {
                runtime()?.block_on(cluster::up(&layout, &UpOptions { skip_build }))
            }
            EnvAction::Down => cluster::down(&layout),
            EnvAction::Status => {
                if runtime()?.block_on(cluster::status(&layout))? {
                    Ok(())
                } else {
                    bail!("the e2e environment is not healthy")
                }
            }
            EnvAction::Logs { lines } => {
                println!("{}", cluster::logs_report(&layout, lines));
                Ok(())
            }
        },
        E2eCommand::Test(t) => test(&layout, &t),
        E2eCommand::Build => cluster::build_binaries(),
        E2eCommand::Exec { command } => exec(&layout, &command),
        E2eCommand::Operator { args } => {
            if !cluster::is_up(&layout) {
                runtime()?.block_on(cluster::up(&layout, &UpOptions::default()))?;
            }
            let bin = build_operator()?;
            let mut command = vec![
                bin.display().to_string(),
                "run".into(),
                "--kubeconfig".into(),
                layout.kubeconfig().display().to_string(),
                "--leader-elect=false".into(),
                "--http-bind-address".into(),
                "127.0.0.1:8080".into(),
            ];
            command.extend(args);
            exec(&layout, &command)
        }
    }
}

/// Builds the operator binary (debug) and returns its path.
fn build_operator() -> Result<std::path::PathBuf> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let built = Command::new(&cargo)
        .args(["build", "-p", "tikv-operator"])
        .current_dir(config::repo_root())
        .status()
        .context("building the operator binary")?;
    if !built.success() {
        bail!("building the operator binary failed ({built})");
    }
    let target_dir = std::env::var_os("CARGO_TARGET_DIR").map_or_else(
        || config::repo_root().join("target"),
        std::path::PathBuf::from,
    );
    Ok(target_dir.join("debug").join("tikv-operator"))
}

fn exec(layout: &Layout, command: &[String]) -> Result<()> {
    if !cluster::is_up(layout) {
        bail!("the e2e environment is not up: run `cargo xtask e2e env up`");
    }
    let mut argv = cluster::hosts_wrapper(layout);
    argv.extend(command.iter().cloned());
    let status = Command::new(&argv[0])
        .args(&argv[1..])
        .env("KUBECONFIG", layout.kubeconfig())
        .env("TIKV_OPERATOR_E2E_STATE", &layout.root)
        .status()
        .with_context(|| format!("running {command:?}"))?;
    if !status.success() {
        bail!("{command:?} failed ({status})");
    }
    Ok(())
}

fn test(layout: &Layout, t: &TestArgs) -> Result<()> {
    let was_up = cluster::is_up(layout);
    let started = Instant::now();
    if !was_up {
        runtime()?.block_on(cluster::up(layout, &UpOptions::default()))?;
    }
    let env_ready = started.elapsed();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    // The tests start the operator binary themselves (see `operator.rs`).
    let operator_bin = build_operator()?;
    let mut argv = cluster::hosts_wrapper(layout);
    argv.extend([
        cargo,
        "test".into(),
        "-p".into(),
        "tikv-operator-e2e".into(),
        "--tests".into(),
        "--no-fail-fast".into(),
        "--".into(),
        "--ignored".into(),
        format!("--test-threads={}", t.test_threads),
    ]);
    argv.extend(t.filter.iter().cloned());
    eprintln!("e2e: running tests: {}", argv[9..].join(" "));
    let status = Command::new(&argv[0])
        .args(&argv[1..])
        .current_dir(config::repo_root())
        .env("KUBECONFIG", layout.kubeconfig())
        .env("TIKV_OPERATOR_E2E_STATE", &layout.root)
        .env(crate::harness::E2E_ENV, "1")
        .env(crate::operator::OPERATOR_BIN_ENV, &operator_bin)
        .status()
        .context("running cargo test")?;
    eprintln!(
        "e2e: environment ready after {:.1}s, tests took {:.1}s",
        env_ready.as_secs_f64(),
        (started.elapsed() - env_ready).as_secs_f64()
    );
    if !status.success() {
        eprintln!("{}", cluster::logs_report(layout, 30));
    }
    if !was_up && !t.keep_env {
        cluster::down(layout)?;
    }
    if !status.success() {
        bail!("e2e tests failed ({status})");
    }
    Ok(())
}
