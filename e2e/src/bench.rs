//! `cargo xtask bench <scenario>`: convergence time, API load, memory and CPU of the operator
//! against the running e2e environment (real kube-apiserver, kwok nodes, real pd-server
//! processes, simulated stores).
//!
//! Every scenario starts its own operator (release build unless `TIKV_OPERATOR_BIN` says
//! otherwise, `RUST_LOG=info`), works only in namespaces named `bench-...`, prints a table and
//! writes JSON to `target/bench/<scenario>-<timestamp>.json` with the machine it ran on. The
//! numbers come from the environment's API, PD's HTTP API, the operator's `/metrics` and
//! `/proc/<pid>`; nothing here asserts a timing.
//!
//! The command re-runs itself inside the environment's mount namespace (see
//! [`cluster::hosts_wrapper`]) so that it and the operator resolve Service and pod names.

use std::collections::BTreeMap;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use k8s_openapi::api::core::v1::{Namespace, Pod, ServiceAccount};
use kube::Api;
use kube::api::{ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use serde_json::{Value, json};

use crate::cluster;
use crate::config::{self, Layout};
use crate::harness::Env;
use crate::operator::Metrics;

/// Set in the re-run of the command inside the environment's mount namespace.
const WRAPPED_ENV: &str = "TIKV_OPERATOR_BENCH_WRAPPED";

/// Verbs that write.
const WRITE_VERBS: &[&str] = &["create", "update", "patch", "delete", "deletecollection"];

const REQUESTS: &str = "tikv_operator_kube_requests_total";
const RECONCILES: &str = "tikv_operator_reconciles_total";
const PD_REQUESTS: &str = "tikv_operator_pd_requests_total";

/// Arguments of `cargo xtask bench`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Debug, clap::Subcommand)]
enum Scenario {
    /// Apply the basic example (3 PD + 3 TiKV) into a fresh namespace with a fresh operator:
    /// time to PD leader + 3 members, to 3 stores Up, to Cluster Ready; repeated.
    Converge {
        /// Repetitions (median, min and max are reported).
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// Give up on one run after this long.
        #[arg(long, default_value_t = 600)]
        timeout_secs: u64,
    },
    /// N clusters (3 PD + 3 TiKV, smallest resources) created at once in N namespaces, one
    /// operator watching them all: time to all Ready, peak RSS, API requests during
    /// convergence, then a steady-state window (writes/min, requests/min, CPU).
    Fleet {
        /// Clusters (1..=200). Each runs 3 real pd-server processes: on a 2-core machine the
        /// pd-servers, not the operator, limit how many fit.
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u64).range(1..=200))]
        clusters: u64,
        /// Length of the steady-state window after all clusters are Ready.
        #[arg(long, default_value_t = 300)]
        steady_secs: u64,
        /// Run the operator without `--namespace` (watching every namespace). Only on an
        /// environment nobody else uses: it would also reconcile other people's Clusters.
        #[arg(long)]
        all_namespaces: bool,
        /// Give up waiting for all Ready after this long.
        #[arg(long, default_value_t = 1800)]
        timeout_secs: u64,
    },
    /// Scale a TiKV group 4 -> 3: time from the replicas change to the removed store's Pod
    /// being gone, minus the time PD needed to tombstone the store.
    ScaleIn {
        /// Give up after this long (per phase).
        #[arg(long, default_value_t = 600)]
        timeout_secs: u64,
    },
    /// Rolling upgrade of 3 PD + 6 TiKV (v8.5.5 -> v8.5.6, both groups changed at once): the PD
    /// part (one member at a time) and then the TiKV part (one store at a time, leaders evicted
    /// first; it waits for PD) are timed, each split into time waiting on the operator and on
    /// PD/pods.
    Upgrade {
        /// Give up after this long (per phase).
        #[arg(long, default_value_t = 600)]
        timeout_secs: u64,
    },
    /// TiKV failover (3 PD + 3 TiKV, PD's max-store-down-time and the group's failover period
    /// both set to `--period-secs`): one store's process is stopped for good, and the run is
    /// timed until its replacement serves and the failed store is Tombstone and its instance
    /// gone. Reported: the time PD and the stores needed, and the operator's own added time
    /// (seeing the failure, starting the replacement after the period, taking the failed store
    /// offline once the replacement serves, deleting the instance after Tombstone).
    Failover {
        /// PD's max-store-down-time and the TiKVGroup's `failover.periodSeconds`.
        #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=3600))]
        period_secs: u64,
        /// Give up after this long.
        #[arg(long, default_value_t = 600)]
        timeout_secs: u64,
    },
}

/// Runs `cargo xtask bench`.
pub fn run(args: Args) -> Result<()> {
    let layout = Layout::from_env();
    if !cluster::is_up(&layout) {
        bail!("the e2e environment is not up: run `cargo xtask e2e env up`");
    }
    if std::env::var_os(WRAPPED_ENV).is_none() {
        return reexec(&layout);
    }
    cluster::install_crypto_provider();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async {
        let client = cluster::client(&layout).await?;
        let b = Bench {
            env: Env::new(client, layout.clone()),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()?,
            started_at: utc_stamp(SystemTime::now()),
            machine: machine_info(),
        };
        match args.scenario {
            Scenario::Converge { runs, timeout_secs } => {
                converge(&b, runs, Duration::from_secs(timeout_secs)).await
            }
            Scenario::Fleet {
                clusters,
                steady_secs,
                all_namespaces,
                timeout_secs,
            } => {
                fleet(
                    &b,
                    usize::try_from(clusters)?,
                    Duration::from_secs(steady_secs),
                    all_namespaces,
                    Duration::from_secs(timeout_secs),
                )
                .await
            }
            Scenario::ScaleIn { timeout_secs } => {
                scale_in(&b, Duration::from_secs(timeout_secs)).await
            }
            Scenario::Upgrade { timeout_secs } => {
                upgrade(&b, Duration::from_secs(timeout_secs)).await
            }
            Scenario::Failover {
                period_secs,
                timeout_secs,
            } => failover(&b, period_secs, Duration::from_secs(timeout_secs)).await,
        }
    })
}

/// Builds the operator (release) unless `TIKV_OPERATOR_BIN` names one, then runs this same
/// command again inside the environment's mount namespace.
fn reexec(layout: &Layout) -> Result<()> {
    let bin = match std::env::var_os(crate::operator::OPERATOR_BIN_ENV) {
        Some(b) => PathBuf::from(b),
        None => {
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            // Without the variable cargo set for xtask (ring's build script tracks it), this is
            // the same release build as a plain `cargo build --release` and `cargo xtask image`.
            let status = Command::new(&cargo)
                .args(["build", "--release", "-p", "tikv-operator"])
                .current_dir(config::repo_root())
                .env_remove("CARGO_MANIFEST_DIR")
                .status()
                .context("building the operator")?;
            if !status.success() {
                bail!("building the operator failed ({status})");
            }
            std::env::var_os("CARGO_TARGET_DIR")
                .map_or_else(|| config::repo_root().join("target"), PathBuf::from)
                .join("release/tikv-operator")
        }
    };
    if !bin.exists() {
        bail!("operator binary {} not found", bin.display());
    }
    let mut argv = cluster::hosts_wrapper(layout);
    argv.push(
        std::env::current_exe()?
            .to_str()
            .context("non-UTF-8 executable path")?
            .to_owned(),
    );
    argv.extend(std::env::args().skip(1));
    let status = Command::new(&argv[0])
        .args(&argv[1..])
        .env(WRAPPED_ENV, "1")
        .env("KUBECONFIG", layout.kubeconfig())
        .env("TIKV_OPERATOR_E2E_STATE", &layout.root)
        .env(crate::operator::OPERATOR_BIN_ENV, &bin)
        .status()
        .context("running the benchmark inside the environment's mount namespace")?;
    if !status.success() {
        bail!("benchmark failed ({status})");
    }
    Ok(())
}

struct Bench {
    env: Env,
    http: reqwest::Client,
    started_at: String,
    machine: Value,
}

// ---------------------------------------------------------------------------------------------
// Operator process

/// Extra operator flags from `BENCH_OPERATOR_ARGS` (split at whitespace).
fn operator_args() -> Vec<String> {
    std::env::var("BENCH_OPERATOR_ARGS")
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

/// The operator under measurement: started with `RUST_LOG=info` (the e2e tests' debug logging
/// would cost CPU of its own), its own process group, killed when dropped.
struct Operator {
    child: Option<Child>,
    http: String,
    log: PathBuf,
}

impl Operator {
    async fn start(b: &Bench, name: &str, namespaces: &[String]) -> Result<(Self, Duration)> {
        let bin = crate::operator::binary();
        let port = crate::operator::free_port()?;
        let http = format!("127.0.0.1:{port}");
        let log = b.env.layout.log(&format!("operator-{name}"));
        let file = std::fs::File::create(&log)?;
        let mut cmd = Command::new(&bin);
        cmd.arg("run")
            .arg("--kubeconfig")
            .arg(b.env.layout.kubeconfig())
            .arg("--http-bind-address")
            .arg(&http)
            .arg("--leader-elect=false");
        for ns in namespaces {
            cmd.arg("--namespace").arg(ns);
        }
        // Flags under comparison (e.g. `--pd-refresh-fast 1s`), recorded in the results.
        cmd.args(operator_args());
        cmd.env("RUST_LOG", "info")
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file);
        let started = Instant::now();
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let mut op = Self {
            child: Some(child),
            http,
            log,
        };
        // Ready = every watch cache has listed.
        let deadline = started + Duration::from_secs(120);
        loop {
            if let Some(c) = op.child.as_mut()
                && let Ok(Some(st)) = c.try_wait()
            {
                bail!(
                    "the operator exited ({st}); log {}:\n{}",
                    op.log.display(),
                    crate::process::tail(&op.log, 30)
                );
            }
            let ok = b
                .http
                .get(format!("http://{}/readyz", op.http))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ok {
                break;
            }
            if Instant::now() > deadline {
                op.stop();
                bail!("the operator was not ready after 120 s");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok((op, started.elapsed()))
    }

    fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    async fn metrics(&self, b: &Bench) -> Result<Metrics> {
        let text = b
            .http
            .get(format!("http://{}/metrics", self.http))
            .send()
            .await?
            .text()
            .await?;
        Ok(Metrics::parse(&text))
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            crate::process::stop_pid(child.id(), Duration::from_secs(10));
            let _ = child.wait();
        }
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `(VmRSS, VmHWM)` of a process in KiB.
fn proc_memory(pid: u32) -> Option<(u64, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// utime + stime of a process, in clock ticks.
fn proc_cpu_ticks(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start at field 3 (state).
    let rest = &text[text.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse::<f64>().ok())
        .unwrap_or(100.0)
}

/// Samples the operator's RSS every second until stopped; returns the largest sample.
struct RssSampler {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    handle: tokio::task::JoinHandle<u64>,
}

impl RssSampler {
    fn start(pid: u32) -> Self {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let s = stop.clone();
        let handle = tokio::spawn(async move {
            let mut max = 0;
            while !s.load(std::sync::atomic::Ordering::SeqCst) {
                if let Some((rss, _)) = proc_memory(pid) {
                    max = max.max(rss);
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            max
        });
        Self { stop, handle }
    }

    async fn finish(self) -> u64 {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        self.handle.await.unwrap_or_default()
    }
}

// ---------------------------------------------------------------------------------------------
// Metrics

/// `after - before` per key, dropping zeros.
fn delta(before: &BTreeMap<String, f64>, after: &BTreeMap<String, f64>) -> BTreeMap<String, f64> {
    after
        .iter()
        .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0.0)))
        .filter(|(_, v)| *v != 0.0)
        .collect()
}

fn writes(by_verb: &BTreeMap<String, f64>) -> f64 {
    by_verb
        .iter()
        .filter(|(k, _)| WRITE_VERBS.contains(&k.as_str()))
        .map(|(_, v)| v)
        .sum()
}

/// Requests other than watches (a watch is one long request, not a per-minute load).
fn non_watch(by_verb: &BTreeMap<String, f64>) -> f64 {
    by_verb
        .iter()
        .filter(|(k, _)| k.as_str() != "watch")
        .map(|(_, v)| v)
        .sum()
}

// ---------------------------------------------------------------------------------------------
// Objects and namespaces

fn core_ar(kind: &str, plural: &str) -> ApiResource {
    ApiResource {
        group: "core.tikv.org".into(),
        version: "v1alpha1".into(),
        api_version: "core.tikv.org/v1alpha1".into(),
        kind: kind.into(),
        plural: plural.into(),
    }
}

fn condition_true(obj: &Value, type_: &str) -> bool {
    obj["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == type_ && c["status"] == "True")
}

fn pod_ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .any(|c| c.type_ == "Ready" && c.status == "True")
}

fn unique_suffix() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!(
        "{:x}",
        (nanos as u64 ^ u64::from(std::process::id())) & 0xff_ffff
    )
}

async fn create_namespace(b: &Bench, name: &str) -> Result<()> {
    let api: Api<Namespace> = Api::all(b.env.client.clone());
    let ns: Namespace = serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": name, "labels": {"bench.tikv.org/bench": "true"}},
    }))?;
    api.create(&Default::default(), &ns).await?;
    let sas: Api<ServiceAccount> = Api::namespaced(b.env.client.clone(), name);
    let deadline = Instant::now() + Duration::from_secs(60);
    while sas.get_opt("default").await?.is_none() {
        if Instant::now() > deadline {
            bail!("namespace {name}: no default ServiceAccount after 60 s");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}

/// Deletes the Clusters of `namespaces` and waits (up to `timeout`) until they and their PD
/// and TiKV instances are gone (the operator must still run: finalizers); then stops the
/// operator and deletes the namespaces without waiting.
async fn teardown(b: &Bench, mut op: Operator, namespaces: &[String], timeout: Duration) {
    let clusters = core_ar("Cluster", "clusters");
    for ns in namespaces {
        let api: Api<DynamicObject> = Api::namespaced_with(b.env.client.clone(), ns, &clusters);
        let _ = api
            .delete_collection(&DeleteParams::default(), &ListParams::default())
            .await;
    }
    let deadline = Instant::now() + timeout;
    let mut left = Vec::new();
    loop {
        left.clear();
        for (kind, plural) in [("Cluster", "clusters"), ("PD", "pds"), ("TiKV", "tikvs")] {
            let ar = core_ar(kind, plural);
            let api: Api<DynamicObject> = Api::all_with(b.env.client.clone(), &ar);
            if let Ok(list) = api.list(&ListParams::default()).await {
                for o in list.items {
                    if o.metadata
                        .namespace
                        .as_ref()
                        .is_some_and(|n| namespaces.contains(n))
                    {
                        left.push(format!(
                            "{kind} {}/{}",
                            o.metadata.namespace.unwrap_or_default(),
                            o.metadata.name.unwrap_or_default()
                        ));
                    }
                }
            }
        }
        if left.is_empty() || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    if !left.is_empty() {
        eprintln!(
            "bench: teardown: {} objects still there after {timeout:?} (namespaces are deleted \
             anyway; finalizers may keep them): {}",
            left.len(),
            left.iter().take(5).cloned().collect::<Vec<_>>().join(", ")
        );
    }
    op.stop();
    let api: Api<Namespace> = Api::all(b.env.client.clone());
    for ns in namespaces {
        let _ = api.delete(ns, &DeleteParams::default()).await;
    }
}

/// A 3 PD + `tikv` TiKV cluster named `basic`, with no resource requests and 1 GiB volumes.
fn small_cluster(tikv: u32) -> String {
    format!(
        r#"
apiVersion: core.tikv.org/v1alpha1
kind: Cluster
metadata:
  name: basic
spec: {{}}
---
apiVersion: core.tikv.org/v1alpha1
kind: PDGroup
metadata:
  name: pd
spec:
  cluster:
    name: basic
  replicas: 3
  template:
    spec:
      version: v8.5.5
      volumes:
        - name: data
          mounts:
            - type: data
          storage: 1Gi
---
apiVersion: core.tikv.org/v1alpha1
kind: TiKVGroup
metadata:
  name: tikv
spec:
  cluster:
    name: basic
  replicas: {tikv}
  template:
    spec:
      version: v8.5.5
      volumes:
        - name: data
          mounts:
            - type: data
          storage: 1Gi
"#
    )
}

fn pd_addr(ns: &str) -> String {
    format!("pd-pd.{ns}.svc:2379")
}

/// Members and whether PD has a leader.
async fn pd_members(b: &Bench, ns: &str) -> Option<(usize, bool)> {
    let m = b
        .env
        .pd_get(&pd_addr(ns), "/pd/api/v1/members")
        .await
        .ok()?;
    let n = m["members"].as_array().map_or(0, Vec::len);
    let leader = m["leader"]["name"].as_str().is_some_and(|s| !s.is_empty());
    Some((n, leader))
}

// ---------------------------------------------------------------------------------------------
// converge

/// Milestones of one converge run, in order.
const MILESTONES: &[(&str, &str)] = &[
    ("pd_pods_created", "3 PD pods exist"),
    ("pd_pods_ready", "3 PD pods Ready"),
    ("pd_leader", "PD leader + 3 members"),
    ("tikv_pods_created", "3 TiKV pods exist"),
    ("tikv_pods_ready", "3 TiKV pods Ready"),
    ("stores_up", "3 stores Up in PD"),
    ("cluster_ready", "Cluster Ready"),
];

async fn converge(b: &Bench, runs: usize, timeout: Duration) -> Result<()> {
    let example = std::fs::read_to_string(config::repo_root().join("examples/basic/cluster.yaml"))
        .context("reading examples/basic/cluster.yaml")?;
    let mut results = Vec::new();
    for run in 0..runs {
        let ns = format!("bench-converge-{}-{run}", unique_suffix());
        eprintln!("bench: converge run {}/{runs} in {ns}", run + 1);
        create_namespace(b, &ns).await?;
        let (op, startup) = Operator::start(b, &ns, std::slice::from_ref(&ns)).await?;
        let r = converge_once(b, &op, &ns, &example, timeout).await;
        teardown(b, op, std::slice::from_ref(&ns), Duration::from_secs(180)).await;
        let mut r = r?;
        r["operator_startup_s"] = json!(startup.as_secs_f64());
        results.push(r);
    }

    println!("\nconverge: basic example (3 PD + 3 TiKV), {runs} runs, seconds after apply");
    println!(
        "{:<34} {:>8} {:>8} {:>8}",
        "milestone / phase", "median", "min", "max"
    );
    let mut summary = serde_json::Map::new();
    let mut row = |label: &str, key: &str, values: Vec<f64>| {
        if let Some((med, min, max)) = stats(&values) {
            println!("{label:<34} {med:>8.2} {min:>8.2} {max:>8.2}");
            summary.insert(
                key.into(),
                json!({"median": med, "min": min, "max": max, "values": values}),
            );
        } else {
            println!("{label:<34} {:>8}", "n/a");
        }
    };
    let get = |r: &Value, k: &str| r["milestones"][k].as_f64();
    for (key, label) in MILESTONES {
        row(
            label,
            key,
            results.iter().filter_map(|r| get(r, key)).collect(),
        );
    }
    let phase = |a: Option<&str>, z: &str| -> Vec<f64> {
        results
            .iter()
            .filter_map(|r| {
                let start = a.map_or(Some(0.0), |a| get(r, a))?;
                Some(get(r, z)? - start)
            })
            .collect()
    };
    println!("phases:");
    row(
        "  PD bootstrap (apply->leader)",
        "phase_pd_bootstrap",
        phase(None, "pd_leader"),
    );
    row(
        "  TiKV join (leader->stores Up)",
        "phase_tikv_join",
        phase(Some("pd_leader"), "stores_up"),
    );
    row(
        "  operator: apply->PD pods",
        "phase_operator_pd_pods",
        phase(None, "pd_pods_created"),
    );
    row(
        "  kwok: PD pods created->Ready",
        "phase_pd_pods_start",
        phase(Some("pd_pods_created"), "pd_pods_ready"),
    );
    row(
        "  PD: pods Ready->leader+3",
        "phase_pd_election",
        phase(Some("pd_pods_ready"), "pd_leader"),
    );
    row(
        "  kwok: TiKV pods created->Ready",
        "phase_tikv_pods_start",
        phase(Some("tikv_pods_created"), "tikv_pods_ready"),
    );
    row(
        "  TiKV pods Ready->stores Up",
        "phase_store_join",
        phase(Some("tikv_pods_ready"), "stores_up"),
    );
    row(
        "  stores Up->Cluster Ready",
        "phase_status",
        phase(Some("stores_up"), "cluster_ready"),
    );
    row(
        "operator start->ready (caches)",
        "operator_startup",
        results
            .iter()
            .filter_map(|r| r["operator_startup_s"].as_f64())
            .collect(),
    );
    println!("API requests from apply to Ready (per run):");
    for r in &results {
        println!(
            "  {}",
            r["requests_by_verb"]
                .as_object()
                .map(|o| o
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(" "))
                .unwrap_or_default()
        );
    }
    let out = json!({
        "scenario": "converge",
        "started_at": b.started_at,
        "machine": b.machine,
        "runs": runs,
        "summary": summary,
        "results": results,
    });
    write_json(b, "converge", &out)
}

async fn converge_once(
    b: &Bench,
    op: &Operator,
    ns: &str,
    yaml: &str,
    timeout: Duration,
) -> Result<Value> {
    let m0 = op.metrics(b).await?;
    let t0 = Instant::now();
    b.env.apply(Some(ns), yaml).await?;
    let apply_s = t0.elapsed().as_secs_f64();
    let pods: Api<Pod> = Api::namespaced(b.env.client.clone(), ns);
    let clusters: Api<DynamicObject> =
        Api::namespaced_with(b.env.client.clone(), ns, &core_ar("Cluster", "clusters"));
    let mut at: BTreeMap<&str, f64> = BTreeMap::new();
    let lp = ListParams::default().labels("app.kubernetes.io/managed-by=tikv-operator");
    while at.len() < MILESTONES.len() {
        if t0.elapsed() > timeout {
            bail!(
                "converge in {ns}: timed out after {timeout:?}; reached {:?}; operator log {}",
                at,
                op.log.display()
            );
        }
        let now = t0.elapsed().as_secs_f64();
        let list = pods.list(&lp).await.map(|l| l.items).unwrap_or_default();
        let comp = |c: &str| {
            list.iter()
                .filter(|p| {
                    p.metadata
                        .labels
                        .as_ref()
                        .and_then(|l| l.get("app.kubernetes.io/component"))
                        .is_some_and(|v| v == c)
                })
                .collect::<Vec<_>>()
        };
        let (pd, kv) = (comp("pd"), comp("tikv"));
        let mut mark = |k: &'static str, cond: bool| {
            if cond {
                at.entry(k).or_insert(now);
            }
        };
        mark("pd_pods_created", pd.len() >= 3);
        mark(
            "pd_pods_ready",
            pd.iter().filter(|p| pod_ready(p)).count() >= 3,
        );
        mark("tikv_pods_created", kv.len() >= 3);
        mark(
            "tikv_pods_ready",
            kv.iter().filter(|p| pod_ready(p)).count() >= 3,
        );
        if !pd.is_empty() {
            if let Some((n, leader)) = pd_members(b, ns).await {
                mark("pd_leader", n >= 3 && leader);
            }
            if let Ok(stores) = b.env.pd_stores(&pd_addr(ns)).await {
                mark(
                    "stores_up",
                    stores.iter().filter(|s| s.state == "Up").count() >= 3,
                );
            }
        }
        if let Ok(c) = clusters.get("basic").await {
            mark("cluster_ready", condition_true(&c.data, "Ready"));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let m1 = op.metrics(b).await?;
    Ok(json!({
        "namespace": ns,
        "apply_s": apply_s,
        "milestones": at,
        "requests_by_verb": delta(&m0.by(REQUESTS, "verb"), &m1.by(REQUESTS, "verb")),
        "requests_by_verb_resource": delta(
            &m0.by2(REQUESTS, "verb", "resource"),
            &m1.by2(REQUESTS, "verb", "resource"),
        ),
        "reconciles": delta(&m0.by(RECONCILES, "controller"), &m1.by(RECONCILES, "controller")),
        "pd_requests": delta(&m0.by(PD_REQUESTS, "operation"), &m1.by(PD_REQUESTS, "operation")),
    }))
}

// ---------------------------------------------------------------------------------------------
// fleet

async fn fleet(
    b: &Bench,
    n: usize,
    steady: Duration,
    all_namespaces: bool,
    timeout: Duration,
) -> Result<()> {
    let prefix = format!("bench-fleet-{}", unique_suffix());
    let namespaces: Vec<String> = (0..n).map(|i| format!("{prefix}-{i}")).collect();
    eprintln!("bench: fleet of {n} clusters in {prefix}-*");
    for ns in &namespaces {
        create_namespace(b, ns).await?;
    }
    let watch: &[String] = if all_namespaces { &[] } else { &namespaces };
    let (op, startup) = Operator::start(b, &prefix, watch).await?;
    let r = fleet_run(b, &op, &namespaces, steady, timeout).await;
    eprintln!("bench: tearing down {n} clusters");
    teardown(b, op, &namespaces, Duration::from_secs(600)).await;
    let mut r = r?;

    let f = |k: &str| r[k].as_f64().unwrap_or(f64::NAN);
    println!(
        "\nfleet: {n} clusters x (3 PD + 3 TiKV), one operator ({})",
        if all_namespaces {
            "all namespaces".to_owned()
        } else {
            format!("{n} --namespace flags")
        }
    );
    println!("{:<44} {:>12}", "measure", "value");
    let line = |label: &str, v: String| println!("{label:<44} {v:>12}");
    line(
        "operator start -> ready (s)",
        format!("{:.2}", startup.as_secs_f64()),
    );
    line(
        "clusters Ready",
        format!("{}/{n}", r["ready_clusters"].as_u64().unwrap_or(0)),
    );
    line(
        "time to first Ready (s)",
        format!("{:.1}", f("first_ready_s")),
    );
    line(
        "time to median Ready (s)",
        format!("{:.1}", f("median_ready_s")),
    );
    line("time to all Ready (s)", format!("{:.1}", f("all_ready_s")));
    line(
        "operator peak RSS, VmHWM (MiB)",
        format!("{:.1}", f("vmhwm_kib") / 1024.0),
    );
    line(
        "operator RSS at end (MiB)",
        format!("{:.1}", f("rss_end_kib") / 1024.0),
    );
    line(
        "converge: API requests (non-watch)",
        format!("{:.0}", f("converge_requests")),
    );
    line(
        "converge: API writes",
        format!("{:.0}", f("converge_writes")),
    );
    line(
        "converge: operator CPU (s)",
        format!("{:.1}", f("converge_cpu_s")),
    );
    line(
        &format!("steady ({}s): writes/min", steady.as_secs()),
        format!("{:.2}", f("steady_writes_per_min")),
    );
    line(
        "steady: requests/min (non-watch)",
        format!("{:.1}", f("steady_requests_per_min")),
    );
    line(
        "steady: operator CPU (% of one core)",
        format!("{:.2}", f("steady_cpu_percent")),
    );
    line(
        "steady: reconciles/min",
        format!("{:.1}", f("steady_reconciles_per_min")),
    );
    line(
        "steady: PD requests/min",
        format!("{:.1}", f("steady_pd_requests_per_min")),
    );
    for (title, key) in [
        ("operator start: requests by verb", "startup_by_verb"),
        ("converge: requests by verb", "converge_by_verb"),
        (
            "steady: requests by verb/resource",
            "steady_by_verb_resource",
        ),
        ("steady: reconciles by controller", "steady_reconciles"),
    ] {
        println!("{title}:");
        if let Some(o) = r[key].as_object() {
            for (k, v) in o {
                println!("  {k:<42} {v:>12}");
            }
        }
    }
    r["scenario"] = json!("fleet");
    r["started_at"] = json!(b.started_at);
    r["machine"] = b.machine.clone();
    r["clusters"] = json!(n);
    r["all_namespaces"] = json!(all_namespaces);
    r["steady_secs"] = json!(steady.as_secs());
    r["operator_startup_s"] = json!(startup.as_secs_f64());
    write_json(b, "fleet", &r)
}

async fn fleet_run(
    b: &Bench,
    op: &Operator,
    namespaces: &[String],
    steady: Duration,
    timeout: Duration,
) -> Result<Value> {
    let pid = op.pid().context("operator not running")?;
    let ticks = clock_ticks();
    let yaml = small_cluster(3);
    let sampler = RssSampler::start(pid);
    let m0 = op.metrics(b).await?;
    let cpu0 = proc_cpu_ticks(pid).unwrap_or_default();
    let t0 = Instant::now();
    let applies = namespaces.iter().map(|ns| {
        let yaml = yaml.clone();
        async move { b.env.apply(Some(ns), &yaml).await }
    });
    for r in futures::future::join_all(applies).await {
        r?;
    }
    let apply_s = t0.elapsed().as_secs_f64();
    eprintln!(
        "bench: applied {} clusters in {apply_s:.1}s",
        namespaces.len()
    );
    let clusters: Api<DynamicObject> =
        Api::all_with(b.env.client.clone(), &core_ar("Cluster", "clusters"));
    let mut ready: BTreeMap<String, f64> = BTreeMap::new();
    let mut last_report = Instant::now();
    while ready.len() < namespaces.len() && t0.elapsed() < timeout {
        let now = t0.elapsed().as_secs_f64();
        if let Ok(list) = clusters.list(&ListParams::default()).await {
            for c in list.items {
                let ns = c.metadata.namespace.clone().unwrap_or_default();
                if namespaces.contains(&ns) && condition_true(&c.data, "Ready") {
                    ready.entry(ns).or_insert(now);
                }
            }
        }
        if last_report.elapsed() > Duration::from_secs(30) {
            eprintln!(
                "bench: {:.0}s: {}/{} Ready",
                now,
                ready.len(),
                namespaces.len()
            );
            last_report = Instant::now();
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let m1 = op.metrics(b).await?;
    let cpu1 = proc_cpu_ticks(pid).unwrap_or_default();
    let converge_s = t0.elapsed().as_secs_f64();
    let mut times: Vec<f64> = ready.values().copied().collect();
    times.sort_by(f64::total_cmp);
    let all_ready = ready.len() == namespaces.len();
    let conv_verbs = delta(&m0.by(REQUESTS, "verb"), &m1.by(REQUESTS, "verb"));
    let mut out = json!({
        "startup_by_verb": m0.by(REQUESTS, "verb"),
        "startup_by_verb_resource": m0.by2(REQUESTS, "verb", "resource"),
        "apply_s": apply_s,
        "ready_clusters": ready.len(),
        "all_ready": all_ready,
        "first_ready_s": times.first(),
        "median_ready_s": stats(&times).map(|s| s.0),
        "all_ready_s": if all_ready { times.last().copied() } else { None },
        "ready_times_s": times,
        "converge_wall_s": converge_s,
        "converge_by_verb": conv_verbs,
        "converge_by_verb_resource": delta(
            &m0.by2(REQUESTS, "verb", "resource"),
            &m1.by2(REQUESTS, "verb", "resource"),
        ),
        "converge_requests": non_watch(&conv_verbs),
        "converge_writes": writes(&conv_verbs),
        "converge_cpu_s": (cpu1.saturating_sub(cpu0)) as f64 / ticks,
        "converge_reconciles": delta(&m0.by(RECONCILES, "controller"), &m1.by(RECONCILES, "controller")),
        "converge_pd_requests": delta(&m0.by(PD_REQUESTS, "operation"), &m1.by(PD_REQUESTS, "operation")),
    });
    if !all_ready {
        eprintln!(
            "bench: only {}/{} clusters Ready after {timeout:?}; skipping the steady window",
            ready.len(),
            namespaces.len()
        );
    } else {
        eprintln!(
            "bench: all Ready; steady-state window of {}s",
            steady.as_secs()
        );
        let s0 = Instant::now();
        tokio::time::sleep(steady).await;
        let m2 = op.metrics(b).await?;
        let cpu2 = proc_cpu_ticks(pid).unwrap_or_default();
        let secs = s0.elapsed().as_secs_f64();
        // `+ 0.0` turns the -0.0 of an empty float sum into 0.
        let per_min = |x: f64| x * 60.0 / secs + 0.0;
        let verbs = delta(&m1.by(REQUESTS, "verb"), &m2.by(REQUESTS, "verb"));
        let rec = delta(
            &m1.by(RECONCILES, "controller"),
            &m2.by(RECONCILES, "controller"),
        );
        let pdr = delta(
            &m1.by(PD_REQUESTS, "operation"),
            &m2.by(PD_REQUESTS, "operation"),
        );
        out["steady_window_s"] = json!(secs);
        out["steady_by_verb"] = json!(verbs);
        out["steady_by_verb_resource"] = json!(delta(
            &m1.by2(REQUESTS, "verb", "resource"),
            &m2.by2(REQUESTS, "verb", "resource"),
        ));
        out["steady_writes_per_min"] = json!(per_min(writes(&verbs)));
        out["steady_requests_per_min"] = json!(per_min(non_watch(&verbs)));
        out["steady_cpu_percent"] =
            json!(100.0 * (cpu2.saturating_sub(cpu1)) as f64 / ticks / secs);
        out["steady_reconciles"] = json!(rec);
        out["steady_reconciles_per_min"] = json!(per_min(rec.values().sum()));
        out["steady_pd_requests"] = json!(pdr);
        out["steady_pd_requests_per_min"] = json!(per_min(pdr.values().sum()));
    }
    let peak = sampler.finish().await;
    let (rss_end, hwm) = proc_memory(pid).unwrap_or_default();
    out["rss_sampled_peak_kib"] = json!(peak);
    out["vmhwm_kib"] = json!(hwm);
    out["rss_end_kib"] = json!(rss_end);
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// scale-in

async fn scale_in(b: &Bench, timeout: Duration) -> Result<()> {
    let ns = format!("bench-scalein-{}", unique_suffix());
    eprintln!("bench: scale-in in {ns}");
    create_namespace(b, &ns).await?;
    let (op, _) = Operator::start(b, &ns, std::slice::from_ref(&ns)).await?;
    let r = scale_in_run(b, &op, &ns, timeout).await;
    teardown(b, op, std::slice::from_ref(&ns), Duration::from_secs(180)).await;
    let mut r = r?;
    let ms = |k: &str| r["milestones"][k].as_f64();
    println!("\nscale-in: TiKV 4 -> 3 (3 PD), seconds after the replicas change");
    println!("{:<48} {:>10}", "milestone", "t (s)");
    for (k, label) in [
        (
            "evict_leader_scheduler",
            "evict-leader scheduler added in PD",
        ),
        ("store_offline", "store Offline in PD (operator deleted it)"),
        ("store_tombstone", "store Tombstone in PD"),
        ("tikv_object_gone", "TiKV object gone"),
        ("pod_gone", "Pod gone"),
    ] {
        println!(
            "{label:<48} {:>10}",
            ms(k).map_or("not reached".to_owned(), |v| format!("{v:.2}"))
        );
    }
    let complete = ms("pod_gone").is_some();
    if let (Some(off), Some(tomb), Some(gone)) =
        (ms("store_offline"), ms("store_tombstone"), ms("pod_gone"))
    {
        let pd = tomb - off;
        let added = gone - pd;
        println!(
            "{:<48} {:>10.2}",
            "total (replicas change -> Pod gone)", gone
        );
        println!("{:<48} {:>10.2}", "PD: Offline -> Tombstone", pd);
        println!("{:<48} {:>10.2}", "operator's own added latency", added);
        println!(
            "{:<48} {:>10.2}",
            "  of which before PD delete (incl. eviction)", off
        );
        println!(
            "{:<48} {:>10.2}",
            "  of which Tombstone -> Pod gone",
            gone - tomb
        );
        r["pd_tombstone_s"] = json!(pd);
        r["operator_added_s"] = json!(added);
        r["total_s"] = json!(gone);
    }
    r["scenario"] = json!("scale-in");
    r["started_at"] = json!(b.started_at);
    r["machine"] = b.machine.clone();
    r["complete"] = json!(complete);
    write_json(b, "scale-in", &r)?;
    if !complete {
        bail!(
            "scale-in did not complete within {timeout:?}: the removed store's Pod was never \
             deleted (reached: {}); TiKV scale-in may not work yet — no latency is reported",
            r["milestones"]
        );
    }
    Ok(())
}

/// Waits until the Cluster `basic` of `ns` is Ready and PD lists `stores` stores Up (`what`
/// names the scenario in the error).
async fn wait_ready_with_stores(
    b: &Bench,
    ns: &str,
    stores: usize,
    what: &str,
    timeout: Duration,
) -> Result<()> {
    let addr = pd_addr(ns);
    let clusters: Api<DynamicObject> =
        Api::namespaced_with(b.env.client.clone(), ns, &core_ar("Cluster", "clusters"));
    let started = Instant::now();
    loop {
        let ready = clusters
            .get("basic")
            .await
            .is_ok_and(|c| condition_true(&c.data, "Ready"));
        let up = b
            .env
            .pd_stores(&addr)
            .await
            .map(|s| s.iter().filter(|s| s.state == "Up").count())
            .unwrap_or(0);
        if ready && up == stores {
            return Ok(());
        }
        if started.elapsed() > timeout {
            bail!("{what} setup: {stores} stores Up and Cluster Ready not reached in {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn scale_in_run(b: &Bench, op: &Operator, ns: &str, timeout: Duration) -> Result<Value> {
    let m0 = op.metrics(b).await?;
    b.env.apply(Some(ns), &small_cluster(4)).await?;
    let addr = pd_addr(ns);
    let t_setup = Instant::now();
    wait_ready_with_stores(b, ns, 4, "scale-in", timeout).await?;
    // Let PD spread the replicas, so that the removed store has peers to move.
    let replicated = tokio::time::timeout(
        Duration::from_secs(120),
        crate::harness::replicated(&b.env, &addr),
    )
    .await;
    let setup_s = t_setup.elapsed().as_secs_f64();
    let before = b.env.pd_stores(&addr).await?;
    eprintln!(
        "bench: 4 stores Up after {setup_s:.1}s ({}); scaling to 3",
        before
            .iter()
            .map(|s| format!("{}:{} regions", s.id, s.regions))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let pods: Api<Pod> = Api::namespaced(b.env.client.clone(), ns);
    let tikvs: Api<DynamicObject> =
        Api::namespaced_with(b.env.client.clone(), ns, &core_ar("TiKV", "tikvs"));
    let groups: Api<DynamicObject> = Api::namespaced_with(
        b.env.client.clone(),
        ns,
        &core_ar("TiKVGroup", "tikvgroups"),
    );
    let tikv_pods = ListParams::default()
        .labels("app.kubernetes.io/component=tikv,app.kubernetes.io/managed-by=tikv-operator");
    let pods_before: Vec<String> = pods
        .list(&tikv_pods)
        .await?
        .items
        .into_iter()
        .filter_map(|p| p.metadata.name)
        .collect();
    let tikvs_before: Vec<String> = tikvs
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter_map(|t| t.metadata.name)
        .collect();
    let t0 = Instant::now();
    groups
        .patch(
            "tikv",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 3}})),
        )
        .await?;
    let mut at: BTreeMap<&str, f64> = BTreeMap::new();
    let mut victim: Option<(u64, String)> = None;
    let mut last = String::new();
    while !at.contains_key("pod_gone") && t0.elapsed() < timeout {
        let now = t0.elapsed().as_secs_f64();
        let stores = b.env.pd_stores(&addr).await.unwrap_or_default();
        if victim.is_none()
            && let Some(s) = stores.iter().find(|s| s.state != "Up")
        {
            victim = Some((s.id, s.address.clone()));
        }
        if let Some((id, _)) = &victim {
            if let Some(s) = stores.iter().find(|s| s.id == *id) {
                at.entry("store_offline").or_insert(now);
                if s.state == "Tombstone" {
                    at.entry("store_tombstone").or_insert(now);
                }
                last = format!("store {id} {} ({} regions)", s.state, s.regions);
            } else if stores.iter().all(|s| s.id != *id) {
                // Removed from PD's list entirely (tombstones pruned): counts as tombstoned.
                at.entry("store_tombstone").or_insert(now);
            }
        }
        if let Ok(s) = b.env.pd_get(&addr, "/pd/api/v1/schedulers").await
            && s.as_array()
                .into_iter()
                .flatten()
                .any(|x| x.as_str().is_some_and(|x| x.starts_with("evict-leader")))
        {
            at.entry("evict_leader_scheduler").or_insert(now);
        }
        let tikv_now: Vec<String> = tikvs
            .list(&ListParams::default())
            .await
            .map(|l| {
                l.items
                    .into_iter()
                    .filter_map(|t| t.metadata.name)
                    .collect()
            })
            .unwrap_or_else(|_| tikvs_before.clone());
        if tikv_now.len() < tikvs_before.len() {
            at.entry("tikv_object_gone").or_insert(now);
        }
        let pods_now: Vec<String> = pods
            .list(&tikv_pods)
            .await
            .map(|l| {
                l.items
                    .into_iter()
                    .filter_map(|p| p.metadata.name)
                    .collect()
            })
            .unwrap_or_else(|_| pods_before.clone());
        let gone: Vec<&String> = pods_before
            .iter()
            .filter(|p| !pods_now.contains(p))
            .collect();
        if let Some(p) = gone.first() {
            let matches_victim = victim
                .as_ref()
                .is_none_or(|(_, a)| a.starts_with(p.as_str()));
            if !matches_victim {
                eprintln!("bench: pod {p} went, but PD's removed store is {victim:?}");
            }
            at.entry("pod_gone").or_insert(now);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let m1 = op.metrics(b).await?;
    Ok(json!({
        "namespace": ns,
        "setup_s": setup_s,
        "replicated_before_scale_in": matches!(replicated, Ok(Ok(_))),
        "stores_before": before.iter().map(|s| json!({"id": s.id, "state": s.state, "regions": s.regions, "leaders": s.leaders})).collect::<Vec<_>>(),
        "victim_store": victim.as_ref().map(|(id, a)| json!({"id": id, "address": a})),
        "last_store_state": last,
        "milestones": at,
        "requests_by_verb": delta(&m0.by(REQUESTS, "verb"), &m1.by(REQUESTS, "verb")),
        "pd_requests": delta(&m0.by(PD_REQUESTS, "operation"), &m1.by(PD_REQUESTS, "operation")),
        "operator_log": op.log.display().to_string(),
    }))
}

// ---------------------------------------------------------------------------------------------
// upgrade

/// One PD member's restart during the rollout (seconds after the version change).
#[derive(Debug, Default, Clone, serde::Serialize)]
struct MemberRoll {
    /// The old Pod got a deletionTimestamp (or vanished, if that was never seen).
    deleting: Option<f64>,
    /// The old Pod is gone.
    gone: Option<f64>,
    /// A Pod with a new uid exists.
    recreated: Option<f64>,
    /// The new Pod is Ready.
    ready: Option<f64>,
    /// PD reports the member healthy again (after `ready`).
    healthy: Option<f64>,
}

async fn upgrade(b: &Bench, timeout: Duration) -> Result<()> {
    let ns = format!("bench-upgrade-{}", unique_suffix());
    eprintln!("bench: upgrade in {ns}");
    create_namespace(b, &ns).await?;
    let (op, _) = Operator::start(b, &ns, std::slice::from_ref(&ns)).await?;
    let r = upgrade_run(b, &op, &ns, timeout).await;
    teardown(b, op, std::slice::from_ref(&ns), Duration::from_secs(180)).await;
    let mut r = r?;
    println!(
        "\nupgrade: 3 PD + 6 TiKV, v8.5.5 -> v8.5.6 on both groups at once (PD: seconds after \
         the version change; TiKV: seconds after PD rolled out)"
    );
    println!(
        "{:<12} {:>9} {:>9} {:>10} {:>9} {:>9}",
        "PD member", "deleting", "gone", "recreated", "ready", "healthy"
    );
    let f = |v: &Value| v.as_f64().map_or("-".to_owned(), |x| format!("{x:.2}"));
    if let Some(members) = r["members"].as_object() {
        for (name, m) in members {
            println!(
                "{name:<12} {:>9} {:>9} {:>10} {:>9} {:>9}",
                f(&m["deleting"]),
                f(&m["gone"]),
                f(&m["recreated"]),
                f(&m["ready"]),
                f(&m["healthy"])
            );
        }
    }
    for (label, key) in [
        ("PD rollout: total (change -> group rolled out)", "total_s"),
        ("  waiting on the operator", "operator_s"),
        ("  waiting on PD / pods", "pd_pods_s"),
        ("  status (last healthy -> rolled out)", "status_lag_s"),
    ] {
        println!("{label:<48} {:>9}", f(&r[key]));
    }
    println!(
        "\n{:<12} {:>8} {:>8} {:>9} {:>8} {:>10} {:>8} {:>8}",
        "TiKV store", "evict", "leaders0", "deleting", "gone", "recreated", "ready", "done"
    );
    if let Some(stores) = r["tikv"]["stores"].as_object() {
        for (name, m) in stores {
            println!(
                "{name:<12} {:>8} {:>8} {:>9} {:>8} {:>10} {:>8} {:>8}",
                f(&m["evict_start"]),
                f(&m["leaders_zero"]),
                f(&m["deleting"]),
                f(&m["gone"]),
                f(&m["recreated"]),
                f(&m["ready"]),
                f(&m["done"])
            );
        }
    }
    for (label, key) in [
        (
            "TiKV rollout: start (PD rolled out -> first eviction)",
            "start_s",
        ),
        (
            "TiKV rollout: total (PD rolled out -> group rolled out)",
            "total_s",
        ),
        ("  waiting on the operator", "operator_s"),
        (
            "  waiting on PD / pods (evictions, pod restarts)",
            "pd_pods_s",
        ),
        ("  most stores disrupted at once", "most_disrupted"),
    ] {
        println!("{label:<56} {:>9}", f(&r["tikv"][key]));
    }
    r["scenario"] = json!("upgrade");
    r["started_at"] = json!(b.started_at);
    r["machine"] = b.machine.clone();
    write_json(b, "upgrade", &r)
}

fn group_rolled_out(g: &Value, replicas: i64) -> bool {
    let st = &g["status"];
    st["updatedReplicas"].as_i64() == Some(replicas)
        && st["readyReplicas"].as_i64() == Some(replicas)
        && !st["updateRevision"].is_null()
        && st["updateRevision"] == st["currentRevision"]
        && condition_true(g, "Ready")
}

async fn upgrade_run(b: &Bench, op: &Operator, ns: &str, timeout: Duration) -> Result<Value> {
    b.env.apply(Some(ns), &small_cluster(6)).await?;
    let addr = pd_addr(ns);
    let clusters: Api<DynamicObject> =
        Api::namespaced_with(b.env.client.clone(), ns, &core_ar("Cluster", "clusters"));
    let pdgroups: Api<DynamicObject> =
        Api::namespaced_with(b.env.client.clone(), ns, &core_ar("PDGroup", "pdgroups"));
    let t_setup = Instant::now();
    loop {
        let ready = clusters
            .get("basic")
            .await
            .is_ok_and(|c| condition_true(&c.data, "Ready"));
        let rolled = pdgroups
            .get("pd")
            .await
            .is_ok_and(|g| group_rolled_out(&g.data, 3));
        let up = b
            .env
            .pd_stores(&addr)
            .await
            .map(|s| s.iter().filter(|s| s.state == "Up").count())
            .unwrap_or(0);
        if ready && rolled && up == 6 {
            break;
        }
        if t_setup.elapsed() > timeout {
            bail!(
                "upgrade setup: Cluster Ready, PDGroup rolled out and 6 stores Up not reached in \
                 {timeout:?} (ready {ready}, rolled out {rolled}, {up} stores Up)"
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let setup_s = t_setup.elapsed().as_secs_f64();
    eprintln!("bench: 3 PD + 6 TiKV ready after {setup_s:.1}s; upgrading PD");
    let pods: Api<Pod> = Api::namespaced(b.env.client.clone(), ns);
    let pd_pods = ListParams::default()
        .labels("app.kubernetes.io/component=pd,app.kubernetes.io/managed-by=tikv-operator");
    let old: BTreeMap<String, String> = pods
        .list(&pd_pods)
        .await?
        .items
        .into_iter()
        .filter_map(|p| Some((p.metadata.name?, p.metadata.uid?)))
        .collect();
    let m0 = op.metrics(b).await?;
    let t0 = Instant::now();
    let tikvgroups: Api<DynamicObject> = Api::namespaced_with(
        b.env.client.clone(),
        ns,
        &core_ar("TiKVGroup", "tikvgroups"),
    );
    let tikv_pods = ListParams::default()
        .labels("app.kubernetes.io/component=tikv,app.kubernetes.io/managed-by=tikv-operator");
    let old_tikv: BTreeMap<String, String> = pods
        .list(&tikv_pods)
        .await?
        .items
        .into_iter()
        .filter_map(|p| Some((p.metadata.name?, p.metadata.uid?)))
        .collect();
    let version = json!({"spec": {"template": {"spec": {"version": "v8.5.6"}}}});
    pdgroups
        .patch("pd", &PatchParams::default(), &Patch::Merge(&version))
        .await?;
    tikvgroups
        .patch("tikv", &PatchParams::default(), &Patch::Merge(&version))
        .await?;
    let mut members: BTreeMap<String, MemberRoll> = old
        .keys()
        .map(|k| (k.clone(), MemberRoll::default()))
        .collect();
    let mut leaders: Vec<(f64, String)> = Vec::new();
    let mut done_at = None;
    while t0.elapsed() < timeout {
        let now = t0.elapsed().as_secs_f64();
        let list = pods.list(&pd_pods).await.map(|l| l.items).ok();
        let health: BTreeMap<String, bool> = b
            .env
            .pd_get(&addr, "/pd/api/v1/health")
            .await
            .ok()
            .and_then(|v| v.as_array().cloned())
            .into_iter()
            .flatten()
            .filter_map(|m| Some((m["name"].as_str()?.to_owned(), m["health"].as_bool()?)))
            .collect();
        if let Ok(m) = b.env.pd_get(&addr, "/pd/api/v1/members").await
            && let Some(l) = m["leader"]["name"].as_str()
            && leaders.last().is_none_or(|(_, x)| x != l)
        {
            leaders.push((now, l.to_owned()));
        }
        if let Some(list) = &list {
            for (name, roll) in &mut members {
                let old_uid = &old[name];
                let pod = list
                    .iter()
                    .find(|p| p.metadata.name.as_deref() == Some(name.as_str()));
                let old_pod = pod.filter(|p| p.metadata.uid.as_ref() == Some(old_uid));
                let new_pod = pod.filter(|p| p.metadata.uid.as_ref() != Some(old_uid));
                if old_pod.is_some_and(|p| p.metadata.deletion_timestamp.is_some())
                    || old_pod.is_none()
                {
                    roll.deleting.get_or_insert(now);
                }
                if old_pod.is_none() {
                    roll.gone.get_or_insert(now);
                }
                if let Some(p) = new_pod {
                    roll.recreated.get_or_insert(now);
                    if pod_ready(p) {
                        roll.ready.get_or_insert(now);
                    }
                }
                if roll.ready.is_some() && health.get(name) == Some(&true) {
                    roll.healthy.get_or_insert(now);
                }
            }
        }
        let all_healthy = members.values().all(|m| m.healthy.is_some());
        if all_healthy
            && pdgroups
                .get("pd")
                .await
                .is_ok_and(|g| group_rolled_out(&g.data, 3))
        {
            done_at = Some(now);
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let m1 = op.metrics(b).await?;
    let mut out = json!({
        "namespace": ns,
        "setup_s": setup_s,
        "members": members,
        "leader_changes": leaders,
        "requests_by_verb": delta(&m0.by(REQUESTS, "verb"), &m1.by(REQUESTS, "verb")),
        "pd_requests": delta(&m0.by(PD_REQUESTS, "operation"), &m1.by(PD_REQUESTS, "operation")),
        "complete": done_at.is_some(),
    });
    let Some(total) = done_at else {
        bail!(
            "the PD rollout did not complete within {timeout:?}: {}",
            serde_json::to_string(&out["members"])?
        );
    };
    // Members in the order they went down; PD/pod time is deletion -> gone and recreated ->
    // healthy; the rest until the next member (or the end) is waiting on the operator.
    let mut order: Vec<&MemberRoll> = members.values().collect();
    order.sort_by(|a, b| {
        a.deleting
            .unwrap_or(f64::MAX)
            .total_cmp(&b.deleting.unwrap_or(f64::MAX))
    });
    let mut pd_pods_s = 0.0;
    let mut last_healthy: f64 = 0.0;
    for m in &order {
        if let (Some(d), Some(g), Some(c), Some(h)) = (m.deleting, m.gone, m.recreated, m.healthy) {
            pd_pods_s += (g - d) + (h - c);
            last_healthy = last_healthy.max(h);
        }
    }
    out["total_s"] = json!(total);
    out["pd_pods_s"] = json!(pd_pods_s);
    out["operator_s"] = json!(total - pd_pods_s);
    out["status_lag_s"] = json!(total - last_healthy);
    eprintln!("bench: PD rolled out after {total:.1}s; timing the TiKV rollout");
    out["tikv"] = tikv_rollout(b, ns, &old_tikv, timeout).await?;
    let m2 = op.metrics(b).await?;
    out["requests_by_verb_total"] =
        json!(delta(&m0.by(REQUESTS, "verb"), &m2.by(REQUESTS, "verb")));
    out["pd_requests_total"] = json!(delta(
        &m0.by(PD_REQUESTS, "operation"),
        &m2.by(PD_REQUESTS, "operation")
    ));
    Ok(out)
}

/// When each step of one TiKV store's restart was first seen, in seconds after PD rolled out.
#[derive(Debug, Default, Clone, Copy, serde::Serialize)]
struct StoreRoll {
    /// The instance recorded the start of its leader eviction.
    evict_start: Option<f64>,
    /// PD counted no leader on the store (after `evict_start`).
    leaders_zero: Option<f64>,
    /// The old Pod got a deletionTimestamp (or vanished, if that was never seen).
    deleting: Option<f64>,
    /// The old Pod is gone.
    gone: Option<f64>,
    /// A Pod with a new uid exists.
    recreated: Option<f64>,
    /// The new Pod is Ready.
    ready: Option<f64>,
    /// The new Pod is Ready, the store Up and the eviction record cleared (the evict-leader
    /// entry removed).
    done: Option<f64>,
}

/// Times the TiKV half of the upgrade: from now (PD rolled out) until the TiKVGroup is rolled
/// out, per store, and how many stores were disrupted at once.
async fn tikv_rollout(
    b: &Bench,
    ns: &str,
    old: &BTreeMap<String, String>,
    timeout: Duration,
) -> Result<Value> {
    let addr = pd_addr(ns);
    let pods: Api<Pod> = Api::namespaced(b.env.client.clone(), ns);
    let tikv_pods = ListParams::default()
        .labels("app.kubernetes.io/component=tikv,app.kubernetes.io/managed-by=tikv-operator");
    let tikvs: Api<DynamicObject> =
        Api::namespaced_with(b.env.client.clone(), ns, &core_ar("TiKV", "tikvs"));
    let groups: Api<DynamicObject> = Api::namespaced_with(
        b.env.client.clone(),
        ns,
        &core_ar("TiKVGroup", "tikvgroups"),
    );
    let mut stores: BTreeMap<String, StoreRoll> = old
        .keys()
        .map(|k| (k.clone(), StoreRoll::default()))
        .collect();
    let mut most_disrupted = 0_usize;
    let t0 = Instant::now();
    let mut done_at = None;
    while t0.elapsed() < timeout {
        let now = t0.elapsed().as_secs_f64();
        let (Ok(list), Ok(instances), Ok(pd)) = (
            pods.list(&tikv_pods).await,
            tikvs.list(&ListParams::default()).await,
            b.env.pd_stores(&addr).await,
        ) else {
            tokio::time::sleep(Duration::from_millis(250)).await;
            continue;
        };
        let mut disrupted = 0;
        for (name, roll) in &mut stores {
            let inst = instances
                .items
                .iter()
                .find(|i| i.metadata.name.as_deref() == Some(name.as_str()));
            let status = inst.map(|i| &i.data["status"]);
            let evicting = status.is_some_and(|s| !s["leaderEvictionStartedAt"].is_null());
            let store = status
                .and_then(|s| s["id"].as_str())
                .and_then(|id| id.parse::<u64>().ok())
                .and_then(|id| pd.iter().find(|s| s.id == id));
            let pod = list
                .items
                .iter()
                .find(|p| p.metadata.name.as_deref() == Some(name.as_str()));
            let old_uid = &old[name];
            let old_pod = pod.filter(|p| p.metadata.uid.as_ref() == Some(old_uid));
            let new_pod = pod.filter(|p| p.metadata.uid.as_ref() != Some(old_uid));
            if evicting {
                roll.evict_start.get_or_insert(now);
            }
            if roll.evict_start.is_some() && store.is_some_and(|s| s.leaders == 0) {
                roll.leaders_zero.get_or_insert(now);
            }
            if old_pod.is_some_and(|p| p.metadata.deletion_timestamp.is_some()) || old_pod.is_none()
            {
                roll.deleting.get_or_insert(now);
            }
            if old_pod.is_none() {
                roll.gone.get_or_insert(now);
            }
            let new_ready = new_pod.is_some_and(pod_ready);
            if new_pod.is_some() {
                roll.recreated.get_or_insert(now);
            }
            if new_ready {
                roll.ready.get_or_insert(now);
            }
            let up = store.is_some_and(|s| s.state == "Up");
            if new_ready && up && !evicting {
                roll.done.get_or_insert(now);
            }
            let serving =
                pod.is_some_and(|p| p.metadata.deletion_timestamp.is_none() && pod_ready(p));
            if evicting || !serving || !up {
                disrupted += 1;
            }
        }
        most_disrupted = most_disrupted.max(disrupted);
        if stores.values().all(|r| r.done.is_some())
            && groups
                .get("tikv")
                .await
                .is_ok_and(|g| group_rolled_out(&g.data, 6))
        {
            done_at = Some(now);
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let mut out = json!({ "stores": stores, "most_disrupted": most_disrupted });
    let Some(total) = done_at else {
        bail!(
            "the TiKV rollout did not complete within {timeout:?}: {}",
            serde_json::to_string(&out["stores"])?
        );
    };
    // PD/pods: leaders moving off (eviction start -> no leader), the old Pod terminating, and
    // the new Pod starting until its store serves. The rest is the operator: noticing each
    // step, granting the next store, removing the evict-leader entry.
    let mut pd_pods_s = 0.0;
    for r in stores.values() {
        if let (Some(e), Some(z)) = (r.evict_start, r.leaders_zero) {
            pd_pods_s += (z - e).max(0.0);
        }
        if let (Some(d), Some(g)) = (r.deleting, r.gone) {
            pd_pods_s += g - d;
        }
        if let (Some(c), Some(rd)) = (r.recreated, r.ready) {
            pd_pods_s += rd - c;
        }
    }
    let start = stores
        .values()
        .filter_map(|r| r.evict_start.or(r.deleting))
        .fold(f64::MAX, f64::min);
    out["start_s"] = json!(start);
    out["total_s"] = json!(total);
    out["pd_pods_s"] = json!(pd_pods_s);
    out["operator_s"] = json!(total - pd_pods_s);
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Output

/// `(median, min, max)`.
fn stats(values: &[f64]) -> Option<(f64, f64, f64)> {
    if values.is_empty() {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let med = if n % 2 == 1 {
        v[n / 2]
    } else {
        f64::midpoint(v[n / 2 - 1], v[n / 2])
    };
    Some((med, v[0], v[n - 1]))
}

fn write_json(b: &Bench, scenario: &str, value: &Value) -> Result<()> {
    let dir = config::repo_root().join("target/bench");
    std::fs::create_dir_all(&dir)?;
    let path = dir.join(format!("{scenario}-{}.json", b.started_at));
    std::fs::write(&path, serde_json::to_string_pretty(value)?)?;
    println!("\nwrote {}", path.display());
    Ok(())
}

/// Cores, memory, kernel, CPU model, load average now.
fn machine_info() -> Value {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let meminfo = read("/proc/meminfo");
    let mem_kib = meminfo
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<u64>().ok());
    let cpuinfo = read("/proc/cpuinfo");
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, m)| m.trim().to_owned());
    let load: Vec<f64> = read("/proc/loadavg")
        .split_whitespace()
        .take(3)
        .filter_map(|v| v.parse().ok())
        .collect();
    json!({
        "cores": std::thread::available_parallelism().map(usize::from).ok(),
        "memory_gib": mem_kib.map(|k| k as f64 / 1024.0 / 1024.0),
        "kernel": read("/proc/sys/kernel/osrelease").trim(),
        "cpu_model": model,
        "load_average_at_start": load,
        "operator_binary": crate::operator::binary().display().to_string(),
        "operator_args": operator_args(),
    })
}

/// `YYYYMMDDTHHMMSSZ` in UTC.
fn utc_stamp(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let days = i64::try_from(secs / 86_400).unwrap_or_default();
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (proleptic Gregorian).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

// ---------------------------------------------------------------------------------------------
// failover

/// Milestones of a failover run (seconds after the store's process was stopped), in order.
const FAILOVER_MILESTONES: &[(&str, &str)] = &[
    ("since", "record's since (PD's last heartbeat)"),
    ("store_unhealthy", "store Disconnected/Down in PD"),
    ("recorded", "record seen in the group's status"),
    ("period_over", "since + period"),
    ("replacement_created", "replacement TiKV object created"),
    ("replacement_up", "replacement store Up in PD"),
    // PD's node_state: a new store is Preparing until it holds its share of Regions.
    ("replacement_serving", "replacement store Serving in PD"),
    ("failed_offline", "failed store Offline in PD"),
    // No Region with a peer on the failed store, none with a down or missing peer.
    ("regions_replicated", "every Region fully replicated again"),
    ("failed_tombstone", "failed store Tombstone in PD"),
    ("failed_instance_gone", "failed TiKV object gone"),
    ("completed", "record Completed"),
];

async fn failover(b: &Bench, period_secs: u64, timeout: Duration) -> Result<()> {
    let ns = format!("bench-failover-{}", unique_suffix());
    eprintln!("bench: failover in {ns} (period {period_secs}s)");
    create_namespace(b, &ns).await?;
    let (op, _) = Operator::start(b, &ns, std::slice::from_ref(&ns)).await?;
    let stopped = std::sync::Mutex::new(None::<String>);
    let r = failover_run(b, &op, &ns, period_secs, timeout, &stopped).await;
    let pod = stopped.lock().ok().and_then(|mut p| p.take());
    if let Some(pod) = pod {
        let _ = b.env.start_pod_process(&ns, &pod);
    }
    teardown(b, op, std::slice::from_ref(&ns), Duration::from_secs(180)).await;
    let mut r = r?;
    let ms = |k: &str| r["milestones"][k].as_f64();
    println!(
        "\nfailover: one of 3 TiKV stores stopped for good (period {period_secs}s), seconds after the stop"
    );
    println!("{:<48} {:>10}", "milestone", "t (s)");
    for (k, label) in FAILOVER_MILESTONES {
        println!(
            "{label:<48} {:>10}",
            ms(k).map_or("not reached".to_owned(), |v| format!("{v:.2}"))
        );
    }
    let complete = ms("failed_instance_gone").is_some() && ms("completed").is_some();
    if let (Some(due), Some(created), Some(up), Some(offline), Some(tomb), Some(gone)) = (
        ms("period_over"),
        ms("replacement_created"),
        ms("replacement_up"),
        ms("failed_offline"),
        ms("failed_tombstone"),
        ms("failed_instance_gone"),
    ) {
        // The failed store is removed only once PD reports the replacement Serving (not
        // Preparing); without the Serving reading (an old PD), from Up.
        let serves = ms("replacement_serving").unwrap_or(up).max(up);
        // What the operator adds on top of the period and of what PD and the stores need.
        let parts = [
            ("starting the replacement after the period", created - due),
            (
                "taking the failed store offline once the new one serves",
                offline - serves,
            ),
            ("deleting the instance after Tombstone", gone - tomb),
        ];
        let added: f64 = parts.iter().map(|(_, v)| v).sum();
        println!(
            "{:<48} {:>10.2}",
            "total (stop -> failed instance gone)", gone
        );
        println!(
            "{:<48} {:>10.2}",
            "PD: Offline -> Tombstone",
            tomb - offline
        );
        println!(
            "{:<48} {:>10.2}",
            "replacement: created -> store Up",
            up - created
        );
        println!(
            "{:<48} {:>10.2}",
            "PD: replacement Up -> Serving",
            serves - up
        );
        if let Some(replicated) = ms("regions_replicated") {
            println!(
                "{:<48} {:>10.2}",
                "PD: replacement Up -> Regions replicated",
                replicated - up
            );
        }
        println!("{:<48} {:>10.2}", "operator's own added time", added);
        for (label, v) in parts {
            println!("  {label:<46} {v:>10.2}");
        }
        r["operator_added_s"] = json!(added);
        r["operator_added_parts_s"] = json!(
            parts
                .iter()
                .map(|(k, v)| (k.to_string(), *v))
                .collect::<BTreeMap<_, _>>()
        );
        r["pd_offline_to_tombstone_s"] = json!(tomb - offline);
        r["replacement_created_to_up_s"] = json!(up - created);
        r["total_s"] = json!(gone);
    }
    r["scenario"] = json!("failover");
    r["period_s"] = json!(period_secs);
    r["started_at"] = json!(b.started_at);
    r["machine"] = b.machine.clone();
    r["complete"] = json!(complete);
    write_json(b, "failover", &r)?;
    if !complete {
        bail!(
            "failover did not complete within {timeout:?} (reached: {}); no latency is reported",
            r["milestones"]
        );
    }
    Ok(())
}

/// [`small_cluster`] with PD's max-store-down-time and the group's failover period set.
fn failover_cluster(period_secs: u64) -> Result<String> {
    let base = small_cluster(3);
    let pd = "  replicas: 3\n  template:\n    spec:\n      version: v8.5.5\n";
    let kv_at = base
        .rfind(pd)
        .context("small_cluster changed: no TiKV template")?;
    let pd_at = base
        .find(pd)
        .context("small_cluster changed: no PD template")?;
    if pd_at == kv_at {
        bail!("small_cluster changed: one template only");
    }
    let mut out = base.clone();
    out.replace_range(
        kv_at..kv_at + pd.len(),
        &format!(
            "  replicas: 3\n  failover:\n    periodSeconds: {period_secs}\n  template:\n    spec:\n      version: v8.5.5\n"
        ),
    );
    out.replace_range(
        pd_at..pd_at + pd.len(),
        &format!(
            "{pd}      config: |\n        [schedule]\n        max-store-down-time = \"{period_secs}s\"\n"
        ),
    );
    Ok(out)
}

/// The wall-clock `since` of the group's failure record for `instance`, and its phase.
fn failure_record(group: &Value, instance: &str) -> Option<(Option<SystemTime>, String)> {
    let rec = group["status"]["failover"]["failures"]
        .as_array()?
        .iter()
        .find(|r| r["instance"].as_str() == Some(instance))?;
    let since = rec["since"]
        .as_str()
        .and_then(|t| t.parse::<k8s_openapi::jiff::Timestamp>().ok())
        .and_then(|t| {
            let s = u64::try_from(t.as_second()).ok()?;
            Some(UNIX_EPOCH + Duration::from_secs(s))
        });
    Some((since, rec["phase"].as_str().unwrap_or_default().to_owned()))
}

/// Whether PD reports no Region with a down peer and none with a missing peer.
async fn region_check_clean(b: &Bench, addr: &str) -> bool {
    let mut clean = true;
    for check in ["down-peer", "miss-peer"] {
        let count = b
            .env
            .pd_get(addr, &format!("/pd/api/v1/regions/check/{check}"))
            .await
            .ok()
            .and_then(|v| v["count"].as_u64());
        clean &= count == Some(0);
    }
    clean
}

async fn failover_run(
    b: &Bench,
    op: &Operator,
    ns: &str,
    period_secs: u64,
    timeout: Duration,
    stopped: &std::sync::Mutex<Option<String>>,
) -> Result<Value> {
    let m0 = op.metrics(b).await?;
    b.env
        .apply(Some(ns), &failover_cluster(period_secs)?)
        .await?;
    let addr = pd_addr(ns);
    let tikvs: Api<DynamicObject> =
        Api::namespaced_with(b.env.client.clone(), ns, &core_ar("TiKV", "tikvs"));
    let groups: Api<DynamicObject> = Api::namespaced_with(
        b.env.client.clone(),
        ns,
        &core_ar("TiKVGroup", "tikvgroups"),
    );
    let t_setup = Instant::now();
    wait_ready_with_stores(b, ns, 3, "failover", timeout).await?;
    tokio::time::timeout(
        Duration::from_secs(120),
        crate::harness::replicated(&b.env, &addr),
    )
    .await
    .context("failover setup: Regions not replicated 3 times in 120 s")??;
    let setup_s = t_setup.elapsed().as_secs_f64();
    let names = |l: kube::core::ObjectList<DynamicObject>| -> Vec<String> {
        l.items
            .into_iter()
            .filter_map(|t| t.metadata.name)
            .collect()
    };
    let before = names(tikvs.list(&ListParams::default()).await?);
    let victim = before.first().cloned().context("no TiKV instance")?;
    let victim_obj = tikvs.get(&victim).await?;
    let victim_store: u64 = victim_obj.data["status"]["id"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("{victim} has no store id"))?;
    let m1 = op.metrics(b).await?;
    eprintln!(
        "bench: Cluster Ready after {setup_s:.1}s; stopping the store of {victim} (store {victim_store})"
    );

    let t0 = Instant::now();
    let wall0 = SystemTime::now();
    if let Ok(mut s) = stopped.lock() {
        *s = Some(victim.clone());
    }
    b.env.stop_pod_process(ns, &victim)?;
    let mut at: BTreeMap<&str, f64> = BTreeMap::new();
    let mut replacement: Option<(String, Option<u64>)> = None;
    let mut last = String::new();
    while !(at.contains_key("failed_instance_gone") && at.contains_key("completed"))
        && t0.elapsed() < timeout
    {
        let now = t0.elapsed().as_secs_f64();
        let stores = b.env.pd_stores(&addr).await.unwrap_or_default();
        if let Some(s) = stores.iter().find(|s| s.id == victim_store) {
            if matches!(s.state.as_str(), "Disconnected" | "Down") {
                at.entry("store_unhealthy").or_insert(now);
            }
            if s.state == "Offline" {
                at.entry("failed_offline").or_insert(now);
            }
            if s.state == "Tombstone" {
                at.entry("failed_offline").or_insert(now);
                at.entry("failed_tombstone").or_insert(now);
            }
            last = format!("store {victim_store} {} ({} regions)", s.state, s.regions);
            // Every Region fully replicated again: no peer left on the failed store, and PD's
            // checks report no Region with a down or a missing peer.
            if at.contains_key("store_unhealthy")
                && !at.contains_key("regions_replicated")
                && s.regions == 0
                && region_check_clean(b, &addr).await
            {
                at.insert("regions_replicated", now);
            }
        }
        if let Ok(g) = groups.get("tikv").await
            && let Some((since, phase)) = failure_record(&g.data, &victim)
        {
            if let Some(since) = since
                && !at.contains_key("since")
            {
                // Before the stop (the last heartbeat came earlier): negative.
                let rel = match since.duration_since(wall0) {
                    Ok(d) => d.as_secs_f64(),
                    Err(e) => -e.duration().as_secs_f64(),
                };
                at.insert("since", rel);
                at.insert("period_over", rel + period_secs as f64);
                at.insert("recorded", now);
            }
            if phase == "Completed" {
                at.entry("completed").or_insert(now);
            }
        }
        if let Ok(l) = tikvs.list(&ListParams::default()).await {
            let now_names = names(l);
            if replacement.is_none()
                && let Some(n) = now_names.iter().find(|n| !before.contains(n))
            {
                at.entry("replacement_created").or_insert(now);
                replacement = Some((n.clone(), None));
            }
            if !now_names.contains(&victim) {
                at.entry("failed_instance_gone").or_insert(now);
            }
        }
        if let Some((name, id)) = replacement.as_mut() {
            if id.is_none() {
                *id = tikvs
                    .get(name)
                    .await
                    .ok()
                    .and_then(|o| o.data["status"]["id"].as_str()?.parse().ok());
            }
            if let Some(s) = id.and_then(|id| stores.iter().find(|s| s.id == id)) {
                if s.state == "Up" {
                    at.entry("replacement_up").or_insert(now);
                }
                if s.state == "Up" && s.serving {
                    at.entry("replacement_serving").or_insert(now);
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let m2 = op.metrics(b).await?;
    Ok(json!({
        "namespace": ns,
        "setup_s": setup_s,
        "victim": {"instance": victim, "store": victim_store},
        "replacement": replacement.as_ref().map(|(n, id)| json!({"instance": n, "store": id})),
        "last_store_state": last,
        "milestones": at,
        "requests_by_verb": delta(&m1.by(REQUESTS, "verb"), &m2.by(REQUESTS, "verb")),
        "requests_by_verb_setup": delta(&m0.by(REQUESTS, "verb"), &m1.by(REQUESTS, "verb")),
        "pd_requests": delta(&m1.by(PD_REQUESTS, "operation"), &m2.by(PD_REQUESTS, "operation")),
        "operator_log": op.log.display().to_string(),
    }))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn parses_prometheus_text_with_labels() {
        let m = Metrics::parse(
            "# TYPE tikv_operator_kube_requests_total counter\n\
             tikv_operator_kube_requests_total{verb=\"get\",resource=\"pods\"} 3\n\
             tikv_operator_kube_requests_total{resource=\"pds/status\",verb=\"patch\"} 2\n\
             tikv_operator_kube_requests_total{verb=\"get\",resource=\"pds\"} 4\n\
             tikv_operator_leader 1\n",
        );
        let by = m.by(REQUESTS, "verb");
        assert_eq!(by["get"], 7.0);
        assert_eq!(by["patch"], 2.0);
        assert_eq!(m.by2(REQUESTS, "verb", "resource")["patch pds/status"], 2.0);
        assert_eq!(writes(&by), 2.0);
    }

    #[test]
    fn utc_stamp_formats_a_known_instant() {
        let t = UNIX_EPOCH + Duration::from_secs(1_795_397_130);
        assert_eq!(utc_stamp(t), "20261123T012530Z");
    }

    #[test]
    fn stats_median_min_max() {
        assert_eq!(stats(&[3.0, 1.0, 2.0]), Some((2.0, 1.0, 3.0)));
        assert_eq!(stats(&[4.0, 1.0]), Some((2.5, 1.0, 4.0)));
        assert_eq!(stats(&[]), None);
    }
}
