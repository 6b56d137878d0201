//! Helpers for e2e tests: connect to the running environment, per-test namespaces that clean
//! up after themselves, "apply this YAML", "wait until", "watch an invariant for the whole
//! test", kubectl, and log reports for failures.

use std::future::Future;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use k8s_openapi::api::core::v1::{Namespace, Pod, ServiceAccount};
use kube::api::{DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::GroupVersionKind;
use kube::discovery::Scope;
use kube::{Api, Client};

use crate::cluster;
use crate::config::{self, Layout};
use crate::fixtures;
use crate::simulator::StoreStatus;

/// Environment variable set by `cargo xtask e2e test`; tests fail without an environment.
pub const E2E_ENV: &str = "TIKV_OPERATOR_E2E";

/// A connection to the running environment.
#[derive(Clone)]
pub struct Env {
    /// Administrator client.
    pub client: Client,
    /// Where the environment keeps its state.
    pub layout: Layout,
    /// Mutual TLS of the PD requests ([`Env::pd_get`] and the other `pd_*` helpers), shared by
    /// every clone (watchers included); see [`Env::set_pd_tls`].
    pd_tls: Arc<std::sync::RwLock<Option<PdTls>>>,
}

/// What the harness's PD requests present and trust when PD speaks TLS.
#[derive(Clone)]
pub struct PdTls {
    /// The CA bundle (`ca.crt`).
    pub ca_bundle: String,
    /// The client certificate and key.
    pub leaf: crate::pki::Leaf,
    /// The name PD's certificate is checked against when a request goes to a Pod IP (e.g.
    /// the PD client Service, `<group>-pd.<ns>.svc`).
    pub name_for_ips: String,
}

impl std::fmt::Debug for PdTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PdTls")
            .field("name_for_ips", &self.name_for_ips)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for Env {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Env").field("layout", &self.layout).finish()
    }
}

impl Env {
    /// Connects to the environment; fails (never skips) when it is not up.
    pub async fn get() -> Result<Self> {
        cluster::install_crypto_provider();
        let layout = Layout::from_env();
        if !cluster::is_up(&layout) {
            bail!(
                "the e2e environment is not up (state {}): run `cargo xtask e2e test`, or \
                 `cargo xtask e2e env up` first",
                layout.root.display()
            );
        }
        let client = cluster::client(&layout).await?;
        Ok(Self::new(client, layout))
    }

    /// An environment handle from its parts (PD requests in plaintext).
    pub fn new(client: Client, layout: Layout) -> Self {
        Self {
            client,
            layout,
            pd_tls: Arc::default(),
        }
    }

    /// From now on the PD requests of this handle and of all its clones use `https` with this
    /// material (`None`: plain `http`). Every request builds a new client, so a new TLS
    /// connection: after a rotation, the next request shows whether PD accepts the new
    /// certificates.
    pub fn set_pd_tls(&self, tls: Option<PdTls>) {
        if let Ok(mut g) = self.pd_tls.write() {
            *g = tls;
        }
    }

    /// An HTTP client for one PD request and the URL scheme to use.
    fn pd_http(&self, timeout: Duration) -> Result<(reqwest::Client, &'static str)> {
        let tls = self.pd_tls.read().ok().and_then(|g| g.clone());
        let builder = reqwest::Client::builder().timeout(timeout);
        Ok(match tls {
            None => (builder.build()?, "http"),
            Some(t) => (
                builder
                    .tls_backend_preconfigured(crate::pki::client_config(
                        &t.ca_bundle,
                        Some(&t.leaf),
                        &t.name_for_ips,
                    )?)
                    .build()?,
                "https",
            ),
        })
    }

    /// Creates a namespace `e2e-<prefix>-<suffix>` (deleted when the value is dropped) and waits
    /// until its default ServiceAccount exists.
    pub async fn namespace(&self, prefix: &str) -> Result<TestNamespace> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or_default();
        let name = format!("e2e-{prefix}-{:x}", nanos ^ std::process::id());
        let api: Api<Namespace> = Api::all(self.client.clone());
        let ns: Namespace = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": name, "labels": {"e2e.tikv.org/test": prefix}},
        }))?;
        api.create(&PostParams::default(), &ns).await?;
        let tn = TestNamespace {
            name: name.clone(),
            env: self.clone(),
        };
        let sas: Api<ServiceAccount> = Api::namespaced(self.client.clone(), &name);
        wait_until(
            self,
            "the namespace's default ServiceAccount",
            Duration::from_secs(30),
            || {
                let sas = sas.clone();
                async move { Ok(sas.get_opt("default").await?.map(|_| ())) }
            },
        )
        .await?;
        Ok(tn)
    }

    /// Server-side applies every document of `yaml` (namespaced objects go to `namespace`
    /// unless they name their own).
    pub async fn apply(&self, namespace: Option<&str>, yaml: &str) -> Result<Vec<DynamicObject>> {
        let mut out = Vec::new();
        for doc in crate::yaml::documents(yaml)? {
            let mut obj: DynamicObject = serde_json::from_value(doc)?;
            let tm = obj
                .types
                .clone()
                .context("object without apiVersion/kind")?;
            let gvk = GroupVersionKind::try_from(&tm)?;
            let (ar, caps) = kube::discovery::pinned_kind(&self.client, &gvk).await?;
            let name = obj
                .metadata
                .name
                .clone()
                .context("object without metadata.name")?;
            let api: Api<DynamicObject> = if caps.scope == Scope::Namespaced {
                let ns = obj
                    .metadata
                    .namespace
                    .clone()
                    .or_else(|| namespace.map(str::to_string))
                    .context("namespaced object without a namespace")?;
                obj.metadata.namespace = Some(ns.clone());
                Api::namespaced_with(self.client.clone(), &ns, &ar)
            } else {
                Api::all_with(self.client.clone(), &ar)
            };
            let applied = api
                .patch(
                    &name,
                    &PatchParams::apply(cluster::FIELD_MANAGER).force(),
                    &Patch::Apply(&obj),
                )
                .await
                .with_context(|| format!("applying {} {name}", tm.kind))?;
            out.push(applied);
        }
        Ok(out)
    }

    /// The API of one of the operator's kinds (`Cluster`, `PDGroup`, `PD`, ...) in `ns`, as
    /// dynamic objects.
    pub fn tikv_api(&self, ns: &str, kind: &str) -> Api<DynamicObject> {
        Api::namespaced_with(
            self.client.clone(),
            ns,
            &kube::core::ApiResource::from_gvk(&GroupVersionKind::gvk(
                "core.tikv.org",
                "v1alpha1",
                kind,
            )),
        )
    }

    /// Runs kubectl against the environment; returns stdout, fails with stderr.
    pub fn kubectl(&self, args: &[&str]) -> Result<String> {
        let out = self.kubectl_output(args)?;
        if !out.status.success() {
            bail!(
                "kubectl {} failed: {}{}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr),
                String::from_utf8_lossy(&out.stdout)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Runs kubectl and returns its raw output (for commands expected to fail).
    pub fn kubectl_output(&self, args: &[&str]) -> Result<std::process::Output> {
        Ok(Command::new(config::binary("kubectl", config::K8S_VERSION))
            .args(args)
            .env("KUBECONFIG", self.layout.kubeconfig())
            .output()?)
    }

    /// Runs helm (the cached `helm-<HELM_VERSION>`, like kubectl) against the environment, with
    /// helm's own state in the environment's directory; returns stdout, fails with stderr.
    pub fn helm(&self, args: &[&str]) -> Result<String> {
        let bin = config::binary("helm", config::HELM_VERSION);
        if !bin.is_file() {
            bail!(
                "{} is missing: run `bash e2e/scripts/build-binaries.sh helm`",
                bin.display()
            );
        }
        let home = self.layout.root.join("helm");
        let out = Command::new(bin)
            .args(args)
            .env("KUBECONFIG", self.layout.kubeconfig())
            .env("HELM_CACHE_HOME", home.join("cache"))
            .env("HELM_CONFIG_HOME", home.join("config"))
            .env("HELM_DATA_HOME", home.join("data"))
            .output()?;
        if !out.status.success() {
            bail!(
                "helm {} failed: {}{}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr),
                String::from_utf8_lossy(&out.stdout)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Tails of every log of the environment (control plane, agent, pd-server processes).
    pub fn logs_report(&self) -> String {
        cluster::logs_report(&self.layout, 30)
    }

    /// The status the store simulator reports for a TiKV pod.
    pub fn store_status(&self, namespace: &str, pod: &str) -> Option<StoreStatus> {
        let path = self.layout.stores().join(format!("{namespace}_{pod}.json"));
        serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()
    }

    /// Stops the process behind a Pod (pd-server or store simulator) while the Pod stays
    /// Running, until [`Env::start_pod_process`]; the agent acts within about a second.
    pub fn stop_pod_process(&self, namespace: &str, pod: &str) -> Result<()> {
        std::fs::create_dir_all(self.layout.faults())?;
        std::fs::write(self.layout.stopped_marker(namespace, pod), b"")?;
        Ok(())
    }

    /// Kills the process behind a Pod as a crash the kubelet notices: like
    /// [`Env::stop_pod_process`], and the agent also turns the Pod's `Ready` and
    /// `ContainersReady` conditions False (as a failing readiness probe would) and drops it from
    /// its Services' addresses, until [`Env::start_pod_process`].
    pub fn kill_pod_process(&self, namespace: &str, pod: &str) -> Result<()> {
        std::fs::create_dir_all(self.layout.faults())?;
        std::fs::write(
            self.layout.stopped_marker(namespace, pod),
            crate::config::NOT_READY_FAULT,
        )?;
        Ok(())
    }

    /// Lets the agent start the process behind a Pod again (see [`Env::stop_pod_process`]).
    pub fn start_pod_process(&self, namespace: &str, pod: &str) -> Result<()> {
        match std::fs::remove_file(self.layout.stopped_marker(namespace, pod)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        }
    }

    /// Takes a node away as if its machine died with its local disks: the agent stops the
    /// process of every Pod bound to it (within about a second) and starts none there, and the
    /// Node object is deleted. Kubernetes' pod garbage collector then deletes its Pods (about
    /// 40 s after the Node goes); claims bound to its local volumes keep their volume, so a Pod
    /// recreated with them stays Pending. The environment has no node lifecycle controller, so
    /// "NotReady for a while" is not produced; deletion is the loss. Undo with
    /// [`Env::bring_node_back`] (the volumes' data is still there: a machine that came back).
    pub async fn take_node_away(&self, node: &str) -> Result<()> {
        anyhow::ensure!(
            config::NODES.iter().any(|(n, _)| *n == node),
            "{node} is not a node of the environment"
        );
        std::fs::create_dir_all(self.layout.faults())?;
        std::fs::write(self.layout.node_lost_marker(node), b"")?;
        let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(self.client.clone());
        match nodes.delete(node, &Default::default()).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Brings a node taken away by [`Env::take_node_away`] back: the Node is created again,
    /// without the API server's `not-ready` taint (no node lifecycle controller runs here to
    /// lift it), kwok makes it Ready, Pods left Pending for it are scheduled there again, and
    /// the agent runs their processes.
    pub async fn bring_node_back(&self, node: &str) -> Result<()> {
        let (name, zone) = config::NODES
            .iter()
            .find(|(n, _)| *n == node)
            .with_context(|| format!("{node} is not a node of the environment"))?;
        cluster::create_node(&self.client, name, zone, true).await?;
        match std::fs::remove_file(self.layout.node_lost_marker(node)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        }
    }

    /// Restarts the API server (see [`cluster::restart_apiserver`]).
    pub async fn restart_apiserver(&self, down: Duration) -> Result<()> {
        cluster::restart_apiserver(&self.layout, down).await
    }

    /// The CRD manifests directory (see [`config::crd_dir`]).
    pub fn crd_dir(&self) -> std::path::PathBuf {
        config::crd_dir()
    }

    /// GET on a PD member's HTTP API (`path` starts with `/pd/api/...`).
    pub async fn pd_get(&self, addr: &str, path: &str) -> Result<serde_json::Value> {
        let (http, scheme) = self.pd_http(Duration::from_secs(5))?;
        let resp = http.get(format!("{scheme}://{addr}{path}")).send().await?;
        let status = resp.status();
        let text = resp.text().await?;
        if !status.is_success() {
            bail!("GET {addr}{path}: {status}: {text}");
        }
        Ok(serde_json::from_str(&text)?)
    }

    /// The certificate (DER) a PD member presents on a new TLS connection (with
    /// [`Env::set_pd_tls`]'s material), read from a GET of `/pd/api/v1/version`.
    pub async fn pd_served_certificate(&self, addr: &str) -> Result<Vec<u8>> {
        let tls = self
            .pd_tls
            .read()
            .ok()
            .and_then(|g| g.clone())
            .context("no PD TLS material set (Env::set_pd_tls)")?;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .tls_info(true)
            .tls_backend_preconfigured(crate::pki::client_config(
                &tls.ca_bundle,
                Some(&tls.leaf),
                &tls.name_for_ips,
            )?)
            .build()?;
        let resp = http
            .get(format!("https://{addr}/pd/api/v1/version"))
            .send()
            .await?;
        resp.extensions()
            .get::<reqwest::tls::TlsInfo>()
            .and_then(|i| i.peer_certificate())
            .map(<[u8]>::to_vec)
            .context("no peer certificate in the TLS session")
    }

    /// Status code of a GET on a PD member's client port, body ignored (e.g. the embedded
    /// etcd's `/health`).
    pub async fn pd_status(&self, addr: &str, path: &str) -> Result<u16> {
        let (http, scheme) = self.pd_http(Duration::from_secs(3))?;
        let resp = http.get(format!("{scheme}://{addr}{path}")).send().await?;
        Ok(resp.status().as_u16())
    }

    /// POST of a JSON body to a PD member's HTTP API.
    pub async fn pd_post(
        &self,
        addr: &str,
        path: &str,
        body: &serde_json::Value,
    ) -> Result<String> {
        let (http, scheme) = self.pd_http(Duration::from_secs(5))?;
        let resp = http
            .post(format!("{scheme}://{addr}{path}"))
            .header("content-type", "application/json")
            .body(serde_json::to_vec(body)?)
            .send()
            .await?;
        let status = resp.status();
        let text = resp.text().await?;
        if !status.is_success() {
            bail!("POST {addr}{path}: {status}: {text}");
        }
        Ok(text)
    }

    /// Every store PD's HTTP API reports (all states, Tombstone ones included).
    pub async fn pd_stores(&self, addr: &str) -> Result<Vec<PdStore>> {
        let v = self
            .pd_get(addr, "/pd/api/v1/stores?state=0&state=1&state=2")
            .await?;
        Ok(v["stores"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|s| PdStore {
                id: s["store"]["id"].as_u64().unwrap_or_default(),
                address: s["store"]["address"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                state: s["store"]["state_name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                leaders: s["status"]["leader_count"].as_u64().unwrap_or_default(),
                regions: s["status"]["region_count"].as_u64().unwrap_or_default(),
                // Absent means 0, Preparing (Go omitempty); 1 is Serving.
                serving: s["store"]["node_state"].as_u64() == Some(1),
                labels: s["store"]["labels"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|l| {
                        Some((
                            l["key"].as_str()?.to_owned(),
                            l["value"].as_str()?.to_owned(),
                        ))
                    })
                    .collect(),
            })
            .collect())
    }

    /// DELETE on a PD member's HTTP API.
    pub async fn pd_delete(&self, addr: &str, path: &str) -> Result<String> {
        let (http, scheme) = self.pd_http(Duration::from_secs(5))?;
        let resp = http
            .delete(format!("{scheme}://{addr}{path}"))
            .send()
            .await?;
        let status = resp.status();
        let text = resp.text().await?;
        if !status.is_success() {
            bail!("DELETE {addr}{path}: {status}: {text}");
        }
        Ok(text)
    }
}

/// A store as PD's HTTP API shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PdStore {
    /// Store id.
    pub id: u64,
    /// Advertised address.
    pub address: String,
    /// `state_name` (Up, Offline, Tombstone, Disconnected, Down, ...).
    pub state: String,
    /// Leaders PD counts on the store.
    pub leaders: u64,
    /// Region peers PD counts on the store.
    pub regions: u64,
    /// PD's `node_state` is Serving (a new store is Preparing until PD has given it its share
    /// of Regions).
    pub serving: bool,
    /// The store's labels.
    pub labels: std::collections::BTreeMap<String, String>,
}

/// A namespace owned by one test; deleted (without waiting) when dropped.
#[derive(Debug)]
pub struct TestNamespace {
    /// Its name.
    pub name: String,
    env: Env,
}

impl TestNamespace {
    /// Applies YAML into this namespace.
    pub async fn apply(&self, yaml: &str) -> Result<Vec<DynamicObject>> {
        self.env.apply(Some(&self.name), yaml).await
    }

    /// Deletes the namespace and waits until it is gone (its pods and their processes too).
    pub async fn cleanup(self) -> Result<()> {
        let api: Api<Namespace> = Api::all(self.env.client.clone());
        let _ = api.delete(&self.name, &DeleteParams::foreground()).await;
        let name = self.name.clone();
        wait_until(
            &self.env,
            &format!("namespace {name} deleted"),
            Duration::from_secs(120),
            || {
                let api = api.clone();
                let name = name.clone();
                async move { Ok(api.get_opt(&name).await?.is_none().then_some(())) }
            },
        )
        .await
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        let _ = Command::new(config::binary("kubectl", config::K8S_VERSION))
            .args([
                "delete",
                "namespace",
                &self.name,
                "--wait=false",
                "--ignore-not-found",
            ])
            .env("KUBECONFIG", self.env.layout.kubeconfig())
            .output();
    }
}

/// Polls `check` every 500 ms until it returns `Some`; on timeout fails with the last error and
/// the environment's logs.
pub async fn wait_until<T, F, Fut>(
    env: &Env,
    what: &str,
    timeout: Duration,
    mut check: F,
) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>>>,
{
    let deadline = Instant::now() + timeout;
    let mut last = String::from("(condition was never true)");
    loop {
        match check().await {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(e) => last = format!("{e:#}"),
        }
        if Instant::now() > deadline {
            bail!(
                "timed out after {timeout:?} waiting for {what}; last error: {last}\n{}",
                env.logs_report()
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// A window in which a test makes the API server unavailable on purpose (see
/// [`Env::restart_apiserver`]): watchers built with [`Invariant::watch_through`] ignore
/// their check's errors (reads that fail) while it lasts and for [`Outage::SETTLE`] after.
/// A check that read what it needed and found a rule broken returns a [`Violation`], which
/// fails the test during an outage too: the outage excuses failed reads, never a broken rule.
#[derive(Debug, Clone, Default)]
pub struct Outage(Arc<std::sync::Mutex<(bool, Option<Instant>)>>);

impl Outage {
    /// Clients reconnect and watches resync within this after the API server is back.
    pub const SETTLE: Duration = Duration::from_secs(15);

    /// The outage starts.
    pub fn begin(&self) {
        if let Ok(mut g) = self.0.lock() {
            *g = (true, None);
        }
    }

    /// The outage is over.
    pub fn end(&self) {
        if let Ok(mut g) = self.0.lock() {
            *g = (false, Some(Instant::now()));
        }
    }

    /// Whether a failed read now is explained by the outage.
    pub fn explains_errors(&self) -> bool {
        self.0
            .lock()
            .is_ok_and(|g| g.0 || g.1.is_some_and(|t| t.elapsed() < Self::SETTLE))
    }
}

/// A rule found broken by a watcher (as opposed to a read that failed); see [`Outage`].
#[derive(Debug)]
pub struct Violation(pub String);

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Violation {}

/// Fails a watcher's check with a [`Violation`] unless `cond` holds.
#[macro_export]
macro_rules! holds {
    ($cond:expr, $($arg:tt)+) => {
        if !$cond {
            return Err($crate::harness::Violation(format!($($arg)+)).into());
        }
    };
}

/// A condition checked in the background for the whole test.
#[derive(Debug)]
pub struct Invariant {
    what: String,
    stop: Arc<AtomicBool>,
    handle: tokio::task::JoinHandle<Option<String>>,
}

impl Invariant {
    /// Starts checking `check` every `interval`; the first failure is kept.
    pub fn watch<F, Fut>(what: &str, interval: Duration, check: F) -> Self
    where
        F: FnMut() -> Fut + Send + 'static,
        Fut: Future<Output = Result<()>> + Send,
    {
        Self::watch_through(what, interval, Outage::default(), check)
    }

    /// Like [`Invariant::watch`], but an error of `check` during `outage` is retried
    /// instead of failing the test, unless it is a [`Violation`].
    pub fn watch_through<F, Fut>(
        what: &str,
        interval: Duration,
        outage: Outage,
        mut check: F,
    ) -> Self
    where
        F: FnMut() -> Fut + Send + 'static,
        Fut: Future<Output = Result<()>> + Send,
    {
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let handle = tokio::spawn(async move {
            while !stop2.load(Ordering::SeqCst) {
                let failed = match check().await {
                    Ok(()) => None,
                    Err(e)
                        if e.downcast_ref::<Violation>().is_none() && outage.explains_errors() =>
                    {
                        eprintln!("invariant check could not read during an API outage: {e:#}");
                        None
                    }
                    Err(e) => Some(e),
                };
                if let Some(e) = failed {
                    // When, so the failure can be matched with the pod and operator logs.
                    let at = k8s_openapi::jiff::Timestamp::now();
                    return Some(format!("at {at}: {e:#}"));
                }
                tokio::time::sleep(interval).await;
            }
            None
        });
        Self {
            what: what.to_string(),
            stop,
            handle,
        }
    }

    /// Stops watching; fails if the invariant was ever violated.
    pub async fn finish(self) -> Result<()> {
        self.stop.store(true, Ordering::SeqCst);
        match self.handle.await {
            Ok(None) => Ok(()),
            Ok(Some(e)) => bail!("invariant violated: {}: {e}", self.what),
            Err(e) => bail!("invariant checker of {} panicked: {e}", self.what),
        }
    }
}

/// Reads a YAML fixture relative to the e2e crate (`e2e/<path>`).
pub fn fixture(path: &str) -> Result<String> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))
}

/// Waits until pod `ns/name` runs and returns its IP.
pub async fn pod_ip(env: &Env, ns: &str, name: &str) -> Result<String> {
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), ns);
    wait_until(
        env,
        &format!("pod {ns}/{name} running with an IP"),
        Duration::from_secs(60),
        || {
            let pods = pods.clone();
            let name = name.to_string();
            async move {
                let p = pods.get(&name).await?;
                let st = p.status.unwrap_or_default();
                Ok((st.phase.as_deref() == Some("Running"))
                    .then_some(st.pod_ip)
                    .flatten())
            }
        },
    )
    .await
}

/// Starts a PD cluster of `replicas` members (pods `e2e-pd-<i>`) and waits until it has a
/// leader and every member; returns the address of the first member and `/members`.
pub async fn pd_cluster(
    env: &Env,
    ns: &TestNamespace,
    replicas: usize,
) -> Result<(String, serde_json::Value)> {
    ns.apply(&fixtures::pd_cluster(&ns.name, "e2e", replicas))
        .await?;
    let ip = pod_ip(env, &ns.name, "e2e-pd-0").await?;
    let addr = format!("{ip}:2379");
    // kwok hands a deleted pod's IP to a new pod at once: until the old pd-server has stopped,
    // another test's PD may answer on this address. Only our members count.
    let ours = format!(".{}.svc:", ns.name);
    let members = wait_until(
        env,
        "PD members with a leader",
        Duration::from_secs(90),
        || {
            let env = env.clone();
            let addr = addr.clone();
            let ours = ours.clone();
            async move {
                let m = env.pd_get(&addr, "/pd/api/v1/members").await?;
                let list = m["members"].as_array().cloned().unwrap_or_default();
                let all_ours = list.iter().all(|x| {
                    x["client_urls"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .any(|u| u.as_str().is_some_and(|u| u.contains(&ours)))
                });
                let has_leader = m["leader"]["name"].as_str().is_some_and(|s| !s.is_empty());
                Ok((list.len() == replicas && all_ours && has_leader).then_some(m))
            }
        },
    )
    .await?;
    Ok((addr, members))
}

/// Waits until every region has 3 voters and returns the stores.
pub async fn replicated(env: &Env, addr: &str) -> Result<Vec<PdStore>> {
    wait_until(
        env,
        "every region with 3 replicas and leaders reported",
        Duration::from_secs(120),
        || {
            let env = env.clone();
            let addr = addr.to_string();
            async move {
                let miss = env
                    .pd_get(&addr, "/pd/api/v1/regions/check/miss-peer")
                    .await?;
                let missing = miss["count"].as_u64().unwrap_or_default();
                let regions = env.pd_get(&addr, "/pd/api/v1/regions").await?;
                let total = regions["count"].as_u64().unwrap_or_default();
                let stores = env.pd_stores(&addr).await?;
                let leaders: u64 = stores.iter().map(|s| s.leaders).sum();
                Ok((missing == 0 && total > 0 && leaders == total).then_some(stores))
            }
        },
    )
    .await
}
