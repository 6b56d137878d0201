//! `env up | down | status`: the local control plane (etcd, kube-apiserver,
//! kube-controller-manager, kube-scheduler, kwok), its nodes and StorageClass, the CRDs, and the
//! agent that backs pods (see [`crate::agent`]).

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use k8s_openapi::api::core::v1::{Namespace, Node, ServiceAccount};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::json;

use crate::config::{self, Layout};
use crate::process;

/// Field manager of everything the environment applies.
pub const FIELD_MANAGER: &str = "tikv-operator-e2e";
/// Environment variable that makes the CLI run the agent instead of parsing arguments.
pub const AGENT_ENV: &str = "TIKV_OPERATOR_E2E_RUN_AGENT";

/// Components in start order (stopped in reverse).
const COMPONENTS: &[&str] = &[
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kwok",
    "agent",
];

/// Options of `env up`.
#[derive(Debug, Clone, Default)]
pub struct UpOptions {
    /// Do not run the build script (fail if a binary is missing).
    pub skip_build: bool,
}

/// Builds a kube client from the environment's kubeconfig.
pub async fn client(layout: &Layout) -> Result<kube::Client> {
    let path = layout.kubeconfig();
    let kc = kube::config::Kubeconfig::read_from(&path).with_context(|| {
        format!(
            "reading {} (is the environment up? run `cargo xtask e2e env up`)",
            path.display()
        )
    })?;
    let cfg = kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
        .await?;
    Ok(kube::Client::try_from(cfg)?)
}

/// Installs the process-wide rustls crypto provider (needed before any TLS client is built).
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

fn bin(name: &str, version: &str) -> Result<PathBuf> {
    let path = config::binary(name, version);
    if !path.exists() {
        bail!(
            "{} is missing: run {} (or `cargo xtask e2e env up` without --skip-build)",
            path.display(),
            config::build_script().display()
        );
    }
    Ok(path)
}

/// Runs the build script (it reuses every cached binary).
pub fn build_binaries() -> Result<()> {
    let script = config::build_script();
    eprintln!("e2e: ensuring binaries ({})", script.display());
    let status = Command::new("bash")
        .arg(&script)
        .arg("all")
        .status()
        .with_context(|| format!("running {}", script.display()))?;
    if !status.success() {
        bail!("{} failed ({status})", script.display());
    }
    Ok(())
}

/// Whether an environment is running (its kube-apiserver process is alive).
pub fn is_up(layout: &Layout) -> bool {
    process::read_pid(&process::pid_file(&layout.pids(), "kube-apiserver"))
        .is_some_and(process::is_alive)
}

fn write_kubeconfig(layout: &Layout) -> Result<()> {
    let ca = layout.pki().join("ca.crt");
    let text = format!(
        "apiVersion: v1
kind: Config
clusters:
- name: e2e
  cluster:
    server: https://127.0.0.1:{port}
    certificate-authority: {ca}
users:
- name: admin
  user:
    token: {token}
contexts:
- name: e2e
  context:
    cluster: e2e
    user: admin
current-context: e2e
",
        port = config::APISERVER_PORT,
        ca = ca.display(),
        token = config::ADMIN_TOKEN,
    );
    fs::write(layout.kubeconfig(), text)?;
    Ok(())
}

/// The command prefix that runs a program with the environment's hosts file over `/etc/hosts`
/// (a private mount namespace; the network stays the host's loopback).
pub fn hosts_wrapper(layout: &Layout) -> Vec<String> {
    vec![
        "unshare".into(),
        "--mount".into(),
        "--propagation".into(),
        "private".into(),
        "--".into(),
        "/bin/sh".into(),
        "-c".into(),
        "mount --bind \"$0\" /etc/hosts && exec \"$@\"".into(),
        layout.hosts().display().to_string(),
    ]
}

fn spawn(layout: &Layout, name: &str, program: &Path, args: &[String]) -> Result<()> {
    let mut cmd = Command::new(program);
    cmd.args(args).current_dir(&layout.root);
    process::spawn_detached(&layout.pids(), name, &layout.log(name), &mut cmd)?;
    Ok(())
}

fn s(v: impl Into<String>) -> String {
    v.into()
}

async fn wait_for<F, Fut>(what: &str, timeout: Duration, mut check: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<bool>>,
{
    let deadline = Instant::now() + timeout;
    let mut last_err = String::new();
    loop {
        match check().await {
            Ok(true) => return Ok(()),
            Ok(false) => {}
            Err(e) if e.is::<Exited>() => return Err(e.context(format!("waiting for {what}"))),
            Err(e) => last_err = format!("{e:#}"),
        }
        if Instant::now() > deadline {
            bail!("timed out after {timeout:?} waiting for {what} (last error: {last_err})");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// A report of the environment's logs (tails), for failures: the control plane and the agent,
/// plus the logs of pod processes written in the last five minutes.
pub fn logs_report(layout: &Layout, lines: usize) -> String {
    let mut out = String::new();
    let mut files: Vec<PathBuf> = fs::read_dir(layout.logs())
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    files.sort();
    let recent = |p: &Path| {
        fs::metadata(p)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age < Duration::from_secs(300))
    };
    for f in files {
        let name = f.file_stem().and_then(|s| s.to_str()).unwrap_or_default();
        if !COMPONENTS.contains(&name) && !recent(&f) {
            continue;
        }
        let _ = writeln!(
            out,
            "----- {} (last {lines} lines) -----\n{}",
            f.display(),
            process::tail(&f, lines)
        );
    }
    out
}

/// `env up`: starts everything; on failure prints the logs and tears down what was started.
pub async fn up(layout: &Layout, opts: &UpOptions) -> Result<()> {
    if is_up(layout) {
        eprintln!(
            "e2e: environment already up (state {}); checking it",
            layout.root.display()
        );
        let client = client(layout).await?;
        wait_ready(layout, &client).await?;
        return Ok(());
    }
    if layout.root.exists() {
        // Leftovers of a crashed run.
        down(layout)?;
    }
    if !opts.skip_build {
        build_binaries()?;
    }
    let started = Instant::now();
    match up_inner(layout).await {
        Ok(()) => {
            eprintln!(
                "e2e: environment up in {:.1}s\n  export KUBECONFIG={}\n  state: {}",
                started.elapsed().as_secs_f64(),
                layout.kubeconfig().display(),
                layout.root.display()
            );
            Ok(())
        }
        Err(e) => {
            eprintln!("{}", logs_report(layout, 40));
            eprintln!("e2e: env up failed: {e:#}; tearing down");
            let _ = down(layout);
            Err(e)
        }
    }
}

async fn up_inner(layout: &Layout) -> Result<()> {
    install_crypto_provider();
    let etcd = bin("etcd", config::ETCD_VERSION)?;
    let apiserver = bin("kube-apiserver", config::K8S_VERSION)?;
    let kcm = bin("kube-controller-manager", config::K8S_VERSION)?;
    let scheduler = bin("kube-scheduler", config::K8S_VERSION)?;
    let kwok = bin("kwok", config::KWOK_VERSION)?;
    if let Err(e) = bin("pd-server", config::PD_VERSION) {
        eprintln!("e2e: WARNING: PD pods will not be backed by processes: {e:#}");
    }

    for dir in [
        layout.root.clone(),
        layout.logs(),
        layout.pids(),
        layout.volumes(),
        layout.pods(),
        layout.stores(),
    ] {
        fs::create_dir_all(&dir)?;
    }
    crate::pki::generate(&layout.pki())?;
    write_kubeconfig(layout)?;
    let machine_hosts = fs::read_to_string("/etc/hosts").unwrap_or_default();
    fs::write(layout.hosts(), &machine_hosts)?;
    fs::write(layout.root.join("hosts.base"), &machine_hosts)?;
    fs::write(
        layout.pki().join("tokens.csv"),
        format!(
            "{},admin,admin-uid,\"system:masters\"\n",
            config::ADMIN_TOKEN
        ),
    )?;
    let pki = layout.pki();
    let p = |f: &str| pki.join(f).display().to_string();

    eprintln!("e2e: starting etcd");
    let etcd_url = format!("http://127.0.0.1:{}", config::ETCD_CLIENT_PORT);
    let peer_url = format!("http://127.0.0.1:{}", config::ETCD_PEER_PORT);
    spawn(
        layout,
        "etcd",
        &etcd,
        &[
            s("--name=e2e"),
            format!("--data-dir={}", layout.root.join("etcd").display()),
            format!("--listen-client-urls={etcd_url}"),
            format!("--advertise-client-urls={etcd_url}"),
            format!("--listen-peer-urls={peer_url}"),
            format!("--initial-advertise-peer-urls={peer_url}"),
            format!("--initial-cluster=e2e={peer_url}"),
            s("--listen-metrics-urls="),
            s("--unsafe-no-fsync=true"),
            s("--quota-backend-bytes=4294967296"),
        ],
    )?;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(3))
        .build()?;
    wait_for("etcd /health", Duration::from_secs(30), || {
        let http = http.clone();
        let alive = component_alive(layout, "etcd");
        let url = format!("{etcd_url}/health");
        async move {
            alive?;
            Ok(http.get(url).send().await?.status().is_success())
        }
    })
    .await?;

    eprintln!("e2e: starting kube-apiserver");
    spawn(
        layout,
        "kube-apiserver",
        &apiserver,
        &[
            format!("--etcd-servers={etcd_url}"),
            s("--bind-address=127.0.0.1"),
            s("--advertise-address=127.0.0.1"),
            format!("--secure-port={}", config::APISERVER_PORT),
            format!("--tls-cert-file={}", p("apiserver.crt")),
            format!("--tls-private-key-file={}", p("apiserver.key")),
            format!("--client-ca-file={}", p("ca.crt")),
            format!("--token-auth-file={}", p("tokens.csv")),
            s("--authorization-mode=Node,RBAC"),
            format!("--service-account-key-file={}", p("sa.pub")),
            format!("--service-account-signing-key-file={}", p("sa.key")),
            s("--service-account-issuer=https://kubernetes.default.svc"),
            format!("--service-cluster-ip-range={}", config::SERVICE_CIDR),
            s("--allow-privileged=true"),
            s("--profiling=false"),
            format!(
                "--cert-dir={}",
                layout.root.join("apiserver-certs").display()
            ),
            s("--v=1"),
        ],
    )?;
    let client = client(layout).await?;
    wait_apiserver_ready(layout, &client, "kube-apiserver /readyz").await?;

    let kc = layout.kubeconfig().display().to_string();
    eprintln!("e2e: starting kube-controller-manager, kube-scheduler, kwok");
    spawn(
        layout,
        "kube-controller-manager",
        &kcm,
        &[
            format!("--kubeconfig={kc}"),
            format!("--authentication-kubeconfig={kc}"),
            format!("--authorization-kubeconfig={kc}"),
            s("--bind-address=127.0.0.1"),
            format!("--secure-port={}", config::KCM_PORT),
            s("--leader-elect=false"),
            format!("--root-ca-file={}", p("ca.crt")),
            format!("--service-account-private-key-file={}", p("sa.key")),
            s("--use-service-account-credentials=false"),
            format!("--service-cluster-ip-range={}", config::SERVICE_CIDR),
            // No node lifecycle controller: under CPU load kwok's heartbeats lag, and that
            // controller would mark every pod NotReady, which kwok never reverts.
            s("--controllers=*,-nodeipam,-cloud-node-lifecycle,-node-lifecycle-controller"),
            s("--profiling=false"),
            s("--v=1"),
        ],
    )?;
    spawn(
        layout,
        "kube-scheduler",
        &scheduler,
        &[
            format!("--kubeconfig={kc}"),
            format!("--authentication-kubeconfig={kc}"),
            format!("--authorization-kubeconfig={kc}"),
            s("--bind-address=127.0.0.1"),
            format!("--secure-port={}", config::SCHEDULER_PORT),
            s("--leader-elect=false"),
            s("--profiling=false"),
            s("--v=1"),
        ],
    )?;
    spawn(
        layout,
        "kwok",
        &kwok,
        &[
            format!("--kubeconfig={kc}"),
            s("--manage-all-nodes=false"),
            s("--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake"),
            format!("--cidr={}", config::POD_CIDR),
            s("--node-ip=127.0.0.1"),
            format!("--server-address=127.0.0.1:{}", config::KWOK_PORT),
        ],
    )?;

    create_nodes(&client).await?;
    create_storage_class(&client).await?;

    eprintln!("e2e: starting the agent (provisioner, pod hosts, PD processes, store simulator)");
    spawn_agent(layout)?;

    if let Err(e) = install_crds(&client, &config::crd_dir()).await {
        // Reported, not fatal: the CRD tests fail on it with the API server's message.
        eprintln!("e2e: WARNING: the API server rejected CRDs: {e:#}");
    }
    wait_ready(layout, &client).await
}

/// Restarts the kube-apiserver of a running environment, as an upgrade or a crash of the
/// control plane would: SIGTERM (SIGKILL after 10 s), `down` without any API server, then the
/// same command line again (read from the running process), and waits for `/readyz`. Every
/// client (the operator, kwok, the agent, the tests) sees connection errors meanwhile.
pub async fn restart_apiserver(layout: &Layout, down: Duration) -> Result<()> {
    restart_component(layout, "kube-apiserver", down).await?;
    let client = client(layout).await?;
    wait_apiserver_ready(layout, &client, "kube-apiserver /readyz after a restart").await
}

/// Stops a component the environment started and, `down` later, starts it again with the
/// command line it had (read from /proc).
async fn restart_component(layout: &Layout, name: &str, down: Duration) -> Result<()> {
    let pid = process::read_pid(&process::pid_file(&layout.pids(), name))
        .filter(|p| process::is_alive(*p))
        .with_context(|| format!("{name} is not running"))?;
    let argv = process::cmdline(pid).with_context(|| format!("reading {name}'s command line"))?;
    process::stop_pid(pid, Duration::from_secs(10));
    tokio::time::sleep(down).await;
    spawn(layout, name, Path::new(&argv[0]), &argv[1..])?;
    Ok(())
}

/// Waits (up to 90 s) until the kube-apiserver answers `/readyz` with `ok`; fails at once if
/// its process has exited.
async fn wait_apiserver_ready(layout: &Layout, client: &kube::Client, what: &str) -> Result<()> {
    wait_for(what, Duration::from_secs(90), || {
        let client = client.clone();
        let alive = component_alive(layout, "kube-apiserver");
        async move {
            alive?;
            let req = http_get("/readyz")?;
            let text = client.request_text(req).await?;
            Ok(text.trim() == "ok")
        }
    })
    .await
}

/// Fails when a started component has exited (so waits end at once, with its log).
fn component_alive(layout: &Layout, name: &str) -> Result<()> {
    let pid = process::read_pid(&process::pid_file(&layout.pids(), name));
    if pid.is_some_and(process::is_alive) {
        Ok(())
    } else {
        Err(Exited(format!("{name} exited; see {}", layout.log(name).display())).into())
    }
}

/// A component the environment started has exited.
#[derive(Debug)]
struct Exited(String);

impl std::fmt::Display for Exited {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Exited {}

fn http_get(path: &str) -> Result<http::Request<Vec<u8>>> {
    Ok(http::Request::get(path).body(Vec::new())?)
}

fn spawn_agent(layout: &Layout) -> Result<()> {
    let exe = std::env::current_exe()?;
    let mut argv = hosts_wrapper(layout);
    argv.push(exe.display().to_string());
    argv.extend(std::env::args().skip(1));
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..])
        .env(AGENT_ENV, "1")
        .env("TIKV_OPERATOR_E2E_STATE", &layout.root)
        .current_dir(&layout.root);
    process::spawn_detached(&layout.pids(), "agent", &layout.log("agent"), &mut cmd)?;
    Ok(())
}

/// Waits until nodes are Ready, the default ServiceAccount exists (controller-manager works)
/// and the agent is alive.
async fn wait_ready(layout: &Layout, client: &kube::Client) -> Result<()> {
    let nodes: Api<Node> = Api::all(client.clone());
    wait_for("kwok nodes Ready", Duration::from_secs(60), || {
        let nodes = nodes.clone();
        async move {
            let list = nodes.list(&Default::default()).await?;
            let ready = list
                .items
                .iter()
                .filter(|n| {
                    n.status
                        .as_ref()
                        .and_then(|s| s.conditions.as_ref())
                        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
                })
                .count();
            Ok(ready >= config::NODES.len())
        }
    })
    .await?;
    // The API server taints new nodes `not-ready`; the node lifecycle controller, which
    // would lift the taint, is off (see the controller-manager flags above), so lift it here.
    for (name, _) in config::NODES {
        untaint_node(&nodes, name).await?;
    }
    let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), "default");
    wait_for(
        "ServiceAccount default/default (kube-controller-manager)",
        Duration::from_secs(60),
        || {
            let sas = sas.clone();
            async move { Ok(sas.get_opt("default").await?.is_some()) }
        },
    )
    .await?;
    let pid = process::read_pid(&process::pid_file(&layout.pids(), "agent"));
    if !pid.is_some_and(process::is_alive) {
        bail!(
            "the agent is not running (see {})",
            layout.log("agent").display()
        );
    }
    Ok(())
}

async fn create_nodes(client: &kube::Client) -> Result<()> {
    for (name, zone) in config::NODES {
        create_node(client, name, zone, false).await?;
    }
    Ok(())
}

/// Lifts the `not-ready` taint the API server puts on a new Node (no node lifecycle controller
/// runs here to lift it).
async fn untaint_node(nodes: &Api<Node>, name: &str) -> Result<()> {
    nodes
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"taints": null}})),
        )
        .await?;
    Ok(())
}

/// Creates (or updates) one of the environment's nodes, [`config::NODES`]; kwok makes it Ready.
/// `untaint`: also lift the API server's `not-ready` taint (a node created again after the
/// environment is up; at start-up the taints are lifted once every node is Ready).
pub async fn create_node(
    client: &kube::Client,
    name: &str,
    zone: &str,
    untaint: bool,
) -> Result<()> {
    let nodes: Api<Node> = Api::all(client.clone());
    let pp = PatchParams::apply(FIELD_MANAGER).force();
    {
        let node = json!({
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": name,
                "annotations": {
                    "node.alpha.kubernetes.io/ttl": "0",
                    "kwok.x-k8s.io/node": "fake",
                },
                "labels": {
                    "kubernetes.io/hostname": name,
                    "kubernetes.io/os": "linux",
                    "kubernetes.io/arch": "amd64",
                    "type": "kwok",
                    "topology.kubernetes.io/zone": zone,
                    "topology.kubernetes.io/region": "e2e",
                },
            },
        });
        nodes.patch(name, &pp, &Patch::Apply(&node)).await?;
        let status = json!({
            "apiVersion": "v1",
            "kind": "Node",
            "status": {
                "allocatable": {"cpu": "32", "memory": "256Gi", "pods": "110"},
                "capacity": {"cpu": "32", "memory": "256Gi", "pods": "110"},
            },
        });
        nodes
            .patch_status(name, &pp, &Patch::Apply(&status))
            .await?;
    }
    if untaint {
        untaint_node(&nodes, name).await?;
    }
    Ok(())
}

async fn create_storage_class(client: &kube::Client) -> Result<()> {
    use k8s_openapi::api::storage::v1::StorageClass;
    let api: Api<StorageClass> = Api::all(client.clone());
    let sc = json!({
        "apiVersion": "storage.k8s.io/v1",
        "kind": "StorageClass",
        "metadata": {
            "name": config::STORAGE_CLASS,
            "annotations": {"storageclass.kubernetes.io/is-default-class": "true"},
        },
        "provisioner": config::PROVISIONER,
        "reclaimPolicy": "Delete",
        "volumeBindingMode": "WaitForFirstConsumer",
        "allowVolumeExpansion": true,
    });
    api.patch(
        config::STORAGE_CLASS,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&sc),
    )
    .await?;
    Ok(())
}

/// The CRD manifests in `dir` (`*.yaml`, possibly several documents each).
pub fn read_crds(dir: &Path) -> Result<Vec<CustomResourceDefinition>> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    files.sort();
    let mut out = Vec::new();
    for f in files {
        let text = fs::read_to_string(&f)?;
        for doc in
            crate::yaml::documents(&text).with_context(|| format!("parsing {}", f.display()))?
        {
            let crd: CustomResourceDefinition = serde_json::from_value(doc)
                .with_context(|| format!("{} is not a CustomResourceDefinition", f.display()))?;
            out.push(crd);
        }
    }
    Ok(out)
}

/// Applies every CRD in `dir` and waits until each is Established. A missing or empty
/// directory is reported (the CRDs are generated by `cargo xtask gen-crds`), not fatal: the
/// CRD tests fail on it instead.
pub async fn install_crds(client: &kube::Client, dir: &Path) -> Result<Vec<String>> {
    let crds = match read_crds(dir) {
        Ok(c) if !c.is_empty() => c,
        Ok(_) | Err(_) => {
            eprintln!(
                "e2e: WARNING: no CRDs in {} (generate them with `cargo xtask gen-crds`); \
                 the environment runs without them",
                dir.display()
            );
            return Ok(Vec::new());
        }
    };
    apply_crds(client, &crds).await
}

/// Applies CRDs and waits until each is Established. Every CRD is tried; the error lists each
/// rejected one with the API server's message.
pub async fn apply_crds(
    client: &kube::Client,
    crds: &[CustomResourceDefinition],
) -> Result<Vec<String>> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let pp = PatchParams::apply(FIELD_MANAGER).force();
    let mut names = Vec::new();
    let mut rejected = Vec::new();
    for crd in crds {
        let name = crd
            .metadata
            .name
            .clone()
            .context("CRD without metadata.name")?;
        let mut body = serde_json::to_value(crd)?;
        if let Some(obj) = body.as_object_mut() {
            obj.insert("apiVersion".into(), json!("apiextensions.k8s.io/v1"));
            obj.insert("kind".into(), json!("CustomResourceDefinition"));
            obj.remove("status");
        }
        match api.patch(&name, &pp, &Patch::Apply(&body)).await {
            Ok(_) => names.push(name),
            Err(kube::Error::Api(e)) => rejected.push(format!("{name}: {}", e.message)),
            Err(e) => rejected.push(format!("{name}: {e}")),
        }
    }
    for name in &names {
        let api = api.clone();
        wait_for(
            &format!("CRD {name} Established"),
            Duration::from_secs(30),
            || {
                let api = api.clone();
                let name = name.clone();
                async move {
                    let crd = api.get(&name).await?;
                    Ok(crd.status.and_then(|s| s.conditions).is_some_and(|c| {
                        c.iter()
                            .any(|c| c.type_ == "Established" && c.status == "True")
                    }))
                }
            },
        )
        .await?;
    }
    eprintln!("e2e: installed {} CRDs", names.len());
    if !rejected.is_empty() {
        bail!(
            "{} of {} CRDs rejected:\n  {}",
            rejected.len(),
            crds.len(),
            rejected.join("\n  ")
        );
    }
    Ok(names)
}

/// `env down`: stops every process of the environment and removes its state directory.
pub fn down(layout: &Layout) -> Result<()> {
    let pids = layout.pids();
    let mut listed = process::list(&pids);
    // Agent first (it stops the processes backing pods), then the control plane in reverse.
    listed.sort_by_key(|(name, _)| {
        std::cmp::Reverse(
            COMPONENTS
                .iter()
                .position(|c| c == name)
                .map_or(usize::MAX, |i| i),
        )
    });
    for (name, pid) in &listed {
        if process::is_alive(*pid) {
            eprintln!("e2e: stopping {name} (pid {pid})");
        }
        process::stop_pid(*pid, Duration::from_secs(10));
    }
    // Anything else started from the state directory (e.g. a pd-server whose agent was killed).
    let root = layout.root.display().to_string();
    for pid in process::find_by_cmdline(&root) {
        eprintln!("e2e: stopping leftover process {pid}");
        process::stop_pid(pid, Duration::from_secs(5));
    }
    if layout.root.exists() {
        fs::remove_dir_all(&layout.root)
            .with_context(|| format!("removing {}", layout.root.display()))?;
    }
    eprintln!("e2e: environment down");
    Ok(())
}

/// `env status`: processes, API server, nodes.
pub async fn status(layout: &Layout) -> Result<bool> {
    let listed = process::list(&layout.pids());
    if listed.is_empty() {
        println!(
            "e2e environment: down (no state in {})",
            layout.root.display()
        );
        return Ok(false);
    }
    let mut healthy = true;
    println!("e2e environment (state {}):", layout.root.display());
    for (name, pid) in &listed {
        let alive = process::is_alive(*pid);
        healthy &= alive || !COMPONENTS.contains(&name.as_str());
        println!(
            "  {name:<32} pid {pid:<8} {}",
            if alive { "running" } else { "DEAD" }
        );
    }
    install_crypto_provider();
    match client(layout).await {
        Ok(c) => {
            let nodes: Api<Node> = Api::all(c.clone());
            match nodes.list(&Default::default()).await {
                Ok(list) => {
                    println!("  api server: ok, {} nodes", list.items.len());
                    let nss: Api<Namespace> = Api::all(c);
                    if let Ok(l) = nss.list(&Default::default()).await {
                        println!("  namespaces: {}", l.items.len());
                    }
                }
                Err(e) => {
                    healthy = false;
                    println!("  api server: ERROR {e}");
                }
            }
        }
        Err(e) => {
            healthy = false;
            println!("  api server: ERROR {e:#}");
        }
    }
    println!("  export KUBECONFIG={}", layout.kubeconfig().display());
    Ok(healthy)
}
