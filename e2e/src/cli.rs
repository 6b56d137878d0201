//! `cargo xtask e2e ...` entry point.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
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
    /// Build (or reuse) the cached binaries: etcd, Kubernetes, kwok, pd-server, helm.
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
    let mut child = Command::new(&argv[0])
        .args(&argv[1..])
        .current_dir(config::repo_root())
        .env("KUBECONFIG", layout.kubeconfig())
        .env("TIKV_OPERATOR_E2E_STATE", &layout.root)
        .env(crate::harness::E2E_ENV, "1")
        .env(crate::operator::OPERATOR_BIN_ENV, &operator_bin)
        .stdout(Stdio::piped())
        .spawn()
        .context("running cargo test")?;
    // Echo the test output as it comes and keep what names the failures, to repeat it
    // after the (long) log report: a truncated CI log still says which test failed.
    let mut failures = FailureSummary::default();
    if let Some(stdout) = child.stdout.take() {
        let mut out = std::io::stdout();
        for line in BufReader::new(stdout).lines() {
            let line = line.context("reading cargo test output")?;
            let _ = writeln!(out, "{line}");
            failures.observe(&line);
        }
    }
    let status = child.wait().context("waiting for cargo test")?;
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
        eprintln!("{}", failures.render());
        bail!("e2e tests failed ({status})");
    }
    Ok(())
}

/// The parts of libtest's output that say which tests failed and why.
#[derive(Debug, Default)]
struct FailureSummary {
    failed: Vec<String>,
    /// Output of each failed test (`---- name stdout ----` sections), first lines only, up to
    /// its backtrace.
    sections: Vec<(String, Vec<String>)>,
    in_failures: bool,
}

impl FailureSummary {
    const LINES_PER_TEST: usize = 25;

    fn observe(&mut self, line: &str) {
        if let Some(rest) = line.strip_prefix("test ")
            && let Some(name) = rest.strip_suffix(" ... FAILED")
        {
            self.failed.push(name.to_owned());
        }
        if line.starts_with("---- ") && line.ends_with(" stdout ----") {
            self.in_failures = true;
            let name = line
                .trim_start_matches("---- ")
                .trim_end_matches(" stdout ----");
            self.sections.push((name.to_owned(), Vec::new()));
            return;
        }
        if line == "failures:" || line.starts_with("test result:") {
            self.in_failures = false;
            return;
        }
        // The error comes first; the backtrace and the operator log that follow it are in
        // the full output above.
        if line.starts_with("Stack backtrace:") || line.starts_with("--- operator log") {
            self.in_failures = false;
            return;
        }
        if self.in_failures
            && let Some((_, lines)) = self.sections.last_mut()
            && lines.len() < Self::LINES_PER_TEST
        {
            lines.push(line.to_owned());
        }
    }

    fn render(&self) -> String {
        let mut out = String::from("e2e: failure summary\n");
        if self.failed.is_empty() {
            out.push_str("  (no test reported FAILED: a test binary failed to build or crashed)\n");
        }
        for name in &self.failed {
            out.push_str(&format!("  FAILED {name}\n"));
        }
        for (name, lines) in &self.sections {
            out.push_str(&format!("----- {name} -----\n"));
            for line in lines {
                out.push_str(line);
                out.push('\n');
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::FailureSummary;

    #[test]
    fn failure_summary_names_failed_tests_and_keeps_their_output() {
        let mut f = FailureSummary::default();
        for line in [
            "running 2 tests",
            "test a::passes ... ok",
            "test b::breaks ... FAILED",
            "",
            "failures:",
            "",
            "---- b::breaks stdout ----",
            "thread 'b::breaks' panicked at e2e/tests/b.rs:10:5:",
            "two stores down at once",
            "Stack backtrace:",
            "   0: anyhow::error::msg",
            "",
            "failures:",
            "    b::breaks",
            "",
            "test result: FAILED. 1 passed; 1 failed",
        ] {
            f.observe(line);
        }
        assert_eq!(f.failed, vec!["b::breaks".to_owned()]);
        let text = f.render();
        assert!(text.contains("FAILED b::breaks"), "{text}");
        assert!(text.contains("two stores down at once"), "{text}");
        assert!(!text.contains("a::passes"), "{text}");
        assert!(!text.contains("anyhow::error::msg"), "{text}");
        assert!(!text.contains("    b::breaks\n"), "{text}");
    }

    #[test]
    fn failure_summary_says_when_no_test_failed() {
        let f = FailureSummary::default();
        assert!(f.render().contains("no test reported FAILED"));
    }
}
