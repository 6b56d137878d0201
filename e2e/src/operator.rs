//! Runs the `tikv-operator` binary against the environment, as a child of the test process
//! (so it shares the environment's hosts file and reaches PD through Service names).
//!
//! `cargo xtask e2e test` builds the binary first and passes its path in [`OPERATOR_BIN_ENV`].

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use std::collections::BTreeMap;

use anyhow::{Context, Result, bail};

use crate::config::Layout;
use crate::harness::{Env, wait_until};

/// Environment variable holding the path of the `tikv-operator` binary under test.
pub const OPERATOR_BIN_ENV: &str = "TIKV_OPERATOR_BIN";

/// Path of the operator binary: `$TIKV_OPERATOR_BIN`, else `target/debug/tikv-operator`.
pub fn binary() -> PathBuf {
    std::env::var_os(OPERATOR_BIN_ENV).map_or_else(
        || crate::config::repo_root().join("target/debug/tikv-operator"),
        PathBuf::from,
    )
}

/// A free loopback port (bound, then released; good enough for tests on loopback).
pub fn free_port() -> Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

/// One running operator process; killed when dropped.
#[derive(Debug)]
pub struct OperatorProcess {
    child: Option<Child>,
    /// Where its stdout and stderr go.
    pub log: PathBuf,
    /// `host:port` of its HTTP endpoint (`/healthz`, `/readyz`, `/metrics`).
    pub http: String,
}

/// Options of [`OperatorProcess::start`].
#[derive(Debug, Clone)]
pub struct OperatorOptions {
    /// Names the log file (`operator-<name>.log` in the environment's log directory).
    pub name: String,
    /// Watched namespaces (empty: all).
    pub namespaces: Vec<String>,
    /// Extra arguments after the defaults.
    pub extra_args: Vec<String>,
    /// Leader election (off by default in tests).
    pub leader_elect: bool,
}

impl OperatorOptions {
    /// An operator for one test namespace, without leader election.
    pub fn for_namespace(ns: &str) -> Self {
        Self {
            name: ns.to_owned(),
            namespaces: vec![ns.to_owned()],
            extra_args: Vec::new(),
            leader_elect: false,
        }
    }
}

impl OperatorProcess {
    /// Starts `tikv-operator run` with the environment's kubeconfig.
    pub fn start(layout: &Layout, opts: &OperatorOptions) -> Result<Self> {
        let bin = binary();
        if !bin.exists() {
            bail!(
                "operator binary {} not found: build it with `cargo build -p tikv-operator` or \
                 run the tests through `cargo xtask e2e test`",
                bin.display()
            );
        }
        let port = free_port()?;
        let http = format!("127.0.0.1:{port}");
        let log = layout.log(&format!("operator-{}", opts.name));
        // Appended: a restarted operator keeps its predecessor's log.
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .with_context(|| format!("opening {}", log.display()))?;
        let mut cmd = Command::new(&bin);
        cmd.arg("run")
            .arg("--kubeconfig")
            .arg(layout.kubeconfig())
            .arg("--http-bind-address")
            .arg(&http)
            .arg(format!("--leader-elect={}", opts.leader_elect));
        for ns in &opts.namespaces {
            cmd.arg("--namespace").arg(ns);
        }
        cmd.args(&opts.extra_args)
            .env("RUST_LOG", "info,tikv_operator=debug")
            // Its own process group, so stopping it never signals the test process.
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file);
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        Ok(Self {
            child: Some(child),
            log,
            http,
        })
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the process is still running.
    pub fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Stops the process: SIGTERM, then SIGKILL after `grace`.
    pub fn stop(&mut self, grace: Duration) {
        if let Some(child) = self.child.take() {
            crate::process::stop_pid(child.id(), grace);
            let mut child = child;
            let _ = child.wait();
        }
    }

    /// Kills the process at once (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// One scrape of its `/metrics`.
    pub async fn metrics(&self) -> Result<Metrics> {
        let text = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()?
            .get(format!("http://{}/metrics", self.http))
            .send()
            .await?
            .error_for_status()?
            .text()
            .await?;
        Ok(Metrics::parse(&text))
    }

    /// The last `lines` lines of the log.
    pub fn log_tail(&self, lines: usize) -> String {
        crate::process::tail(&self.log, lines)
    }

    /// One GET of `path` on its HTTP endpoint: status code and body.
    pub async fn get(&self, path: &str) -> Result<(u16, String)> {
        http_get(&self.http, path).await
    }

    /// Waits until its `/readyz` answers 200 (every watch cache has listed).
    pub async fn wait_ready(&self, env: &Env, timeout: Duration) -> Result<()> {
        wait_until(env, "/readyz 200", timeout, || async {
            Ok(self
                .get("/readyz")
                .await
                .ok()
                .and_then(|(c, _)| (c == 200).then_some(())))
        })
        .await
    }
}

/// One GET of `path` on `addr` (host:port) with a short timeout: status code and body.
pub async fn http_get(addr: &str, path: &str) -> Result<(u16, String)> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(3))
        .build()?;
    let resp = http.get(format!("http://{addr}{path}")).send().await?;
    let status = resp.status().as_u16();
    Ok((status, resp.text().await?))
}

/// `e` with the tails of the operators' logs attached, for a test failure.
pub fn fail_with_logs(e: anyhow::Error, ops: &[&OperatorProcess]) -> anyhow::Error {
    let logs: Vec<String> = ops
        .iter()
        .map(|o| format!("----- {} -----\n{}", o.log.display(), o.log_tail(40)))
        .collect();
    e.context(logs.join("\n"))
}

/// One scrape of the operator's `/metrics`: `(name, labels, value)` per sample.
#[derive(Debug, Clone, Default)]
pub struct Metrics(Vec<(String, BTreeMap<String, String>, f64)>);

impl Metrics {
    pub fn parse(text: &str) -> Self {
        let mut out = Vec::new();
        for line in text.lines() {
            if line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            let (head, value) = match line.find('}') {
                Some(i) => (&line[..=i], line[i + 1..].trim()),
                None => match line.split_once(' ') {
                    Some((h, v)) => (h, v.trim()),
                    None => continue,
                },
            };
            let value = value.split_whitespace().next().unwrap_or_default();
            let Ok(value) = value.parse::<f64>() else {
                continue;
            };
            let (name, labels) = match head.split_once('{') {
                Some((n, l)) => (n, parse_labels(l.trim_end_matches('}'))),
                None => (head, BTreeMap::new()),
            };
            out.push((name.to_owned(), labels, value));
        }
        Self(out)
    }

    /// Sum of `name` grouped by the value of `label`.
    pub fn by(&self, name: &str, label: &str) -> BTreeMap<String, f64> {
        let mut out = BTreeMap::new();
        for (n, l, v) in &self.0 {
            if n == name {
                *out.entry(l.get(label).cloned().unwrap_or_default())
                    .or_insert(0.0) += v;
            }
        }
        out
    }

    /// Sum of `name` grouped by the values of two labels (`a/b`).
    pub fn by2(&self, name: &str, a: &str, b: &str) -> BTreeMap<String, f64> {
        let mut out = BTreeMap::new();
        for (n, l, v) in &self.0 {
            if n == name {
                let key = format!(
                    "{} {}",
                    l.get(a).map_or("", String::as_str),
                    l.get(b).map_or("", String::as_str)
                );
                *out.entry(key).or_insert(0.0) += v;
            }
        }
        out
    }
}

fn parse_labels(s: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut rest = s;
    while let Some((k, after)) = rest.split_once("=\"") {
        let Some(end) = after.find('"') else { break };
        out.insert(
            k.trim_start_matches(',').trim().to_owned(),
            after[..end].to_owned(),
        );
        rest = &after[end + 1..];
    }
    out
}

impl Drop for OperatorProcess {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(5));
    }
}
