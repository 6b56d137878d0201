//! The agent: a long-running process of the environment (started by `env up`, inside a mount
//! namespace whose `/etc/hosts` is the environment's hosts file) that does what a kubelet,
//! a CSI driver and cluster DNS would do for the fake nodes:
//!
//! - provisions a hostPath PersistentVolume for each pending claim of the test StorageClass
//!   once the scheduler picked a node, and deletes released ones;
//! - keeps the hosts file in step with pods (`<hostname>.<subdomain>.<ns>.svc`) and services
//!   (`<svc>.<ns>.svc` -> the oldest running pod of the selector);
//! - backs every PD pod (`app.kubernetes.io/component=pd`,
//!   `app.kubernetes.io/managed-by=tikv-operator`) with a real `pd-server` process running
//!   the pod's own arguments and ConfigMap files, listening on the pod IP; stops it when the
//!   pod goes away and starts a new one for a recreated pod;
//! - backs every TiKV pod (`component=tikv`) with a simulated store
//!   ([`crate::simulator`]);
//! - injects process faults: a pod named in [`Layout::faults`] has its process stopped
//!   and not started again while the marker exists, although the Pod stays Running; so has
//!   every pod bound to a node taken away. A marker reading [`config::NOT_READY_FAULT`] (a
//!   crash the kubelet's probe would notice) also turns the Pod NotReady and takes it out of
//!   its Services' addresses.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use k8s_openapi::api::core::v1::{
    ConfigMap, PersistentVolume, PersistentVolumeClaim, Pod, Secret, Service,
};
use kube::Api;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;

use crate::config::{self, Layout};
use crate::podspec::{self, Mounts};
use crate::simulator::{self, StoreParams};

/// Label of the component of a pod.
pub const COMPONENT_LABEL: &str = "app.kubernetes.io/component";
/// Label of the manager of a pod.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
/// Value of [`MANAGED_BY_LABEL`] on the operator's pods.
pub const MANAGED_BY: &str = "tikv-operator";

const SELECTED_NODE: &str = "volume.kubernetes.io/selected-node";
const PROVISIONED_BY: &str = "pv.kubernetes.io/provisioned-by";

fn log(msg: impl AsRef<str>) {
    println!("{} {}", humantime_now(), msg.as_ref());
}

fn humantime_now() -> String {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    format!("[{}.{:03}]", d.as_secs(), d.subsec_millis())
}

struct PdRun {
    child: tokio::process::Child,
    name: String,
    /// The pod IP it listens on.
    ip: String,
    started: Instant,
    restarts: u32,
}

struct Agent {
    client: kube::Client,
    layout: Layout,
    pd_binary: PathBuf,
    pds: HashMap<String, PdRun>,
    stores: HashMap<String, tokio::task::JoinHandle<()>>,
    world: crate::raftsim::World,
    hosts_base: String,
    hosts_last: String,
    /// pd-server processes of deleted pods still shutting down (by run name and by `ip <IP>`):
    /// a pod recreated under the same name, or given the same IP, waits for them, as a kubelet
    /// removes a pod only once its containers stopped (kwok removes it at once). Without this,
    /// the new pd-server found its ports or data directory still held, exited, and came back
    /// only after the restart back-off.
    stopping: std::sync::Arc<std::sync::Mutex<std::collections::HashSet<String>>>,
    /// UIDs of pods this agent turned NotReady for a fault (`Env::kill_pod_process`); only
    /// those are turned Ready again.
    unready: std::collections::HashSet<String>,
}

/// Runs the agent until SIGTERM/SIGINT.
pub async fn run(layout: Layout) -> Result<()> {
    crate::cluster::install_crypto_provider();
    let client = crate::cluster::client(&layout).await?;
    let hosts_base = fs::read_to_string(layout.root.join("hosts.base")).unwrap_or_default();
    let mut agent = Agent {
        client,
        pd_binary: config::binary("pd-server", config::PD_VERSION),
        layout,
        pds: HashMap::new(),
        stores: HashMap::new(),
        world: crate::raftsim::World::default(),
        hosts_base,
        hosts_last: String::new(),
        stopping: std::sync::Arc::default(),
        unready: std::collections::HashSet::new(),
    };
    log("agent started");
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut tick = tokio::time::interval(Duration::from_millis(1000));
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
            _ = tick.tick() => {
                if let Err(e) = agent.tick().await {
                    log(format!("tick failed: {e:#}"));
                }
            }
        }
    }
    log("agent stopping");
    agent.shutdown().await;
    Ok(())
}

fn labels(pod: &Pod) -> BTreeMap<String, String> {
    pod.metadata.labels.clone().unwrap_or_default()
}

fn is_component(pod: &Pod, component: &str) -> bool {
    let l = labels(pod);
    l.get(COMPONENT_LABEL).map(String::as_str) == Some(component)
        && l.get(MANAGED_BY_LABEL).map(String::as_str) == Some(MANAGED_BY)
}

fn running_ip(pod: &Pod) -> Option<String> {
    if pod.metadata.deletion_timestamp.is_some() {
        return None;
    }
    let st = pod.status.as_ref()?;
    if st.phase.as_deref() != Some("Running") {
        return None;
    }
    st.pod_ip.clone().filter(|ip| !ip.is_empty())
}

fn key(pod: &Pod) -> String {
    format!(
        "{}_{}",
        pod.metadata.namespace.clone().unwrap_or_default(),
        pod.metadata.name.clone().unwrap_or_default()
    )
}

impl Agent {
    /// Whether a test stopped the process of this pod, or took its node away (see
    /// [`Layout::faults`]).
    fn stopped_by_fault(&self, pod: &Pod) -> bool {
        let node_lost = pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.as_deref())
            .is_some_and(|n| self.layout.node_lost_marker(n).exists());
        node_lost
            || self
                .layout
                .stopped_marker(
                    pod.metadata.namespace.as_deref().unwrap_or_default(),
                    pod.metadata.name.as_deref().unwrap_or_default(),
                )
                .exists()
    }

    /// Whether a test killed this pod's process as a crash its readiness probe would notice
    /// (`Env::kill_pod_process`): the Pod must be NotReady.
    fn not_ready_by_fault(&self, pod: &Pod) -> bool {
        fs::read_to_string(self.layout.stopped_marker(
            pod.metadata.namespace.as_deref().unwrap_or_default(),
            pod.metadata.name.as_deref().unwrap_or_default(),
        ))
        .is_ok_and(|c| c.trim() == config::NOT_READY_FAULT)
    }

    /// Pod readiness follows killed processes: a PD or TiKV pod whose process a test killed
    /// turns NotReady (kwok never does this by itself), and Ready again once the marker goes.
    async fn sync_readiness(&mut self, pods: &[Pod]) {
        for pod in pods {
            if !(is_component(pod, "pd") || is_component(pod, "tikv")) || running_ip(pod).is_none()
            {
                continue;
            }
            let id = uid(pod);
            let want = !self.not_ready_by_fault(pod);
            let ready = pod
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
            if want == ready || (want && !self.unready.contains(&id)) {
                continue;
            }
            let status = if want { "True" } else { "False" };
            let now = k8s_openapi::jiff::Timestamp::now().to_string();
            let patch = json!({"status": {"conditions": [
                {"type": "Ready", "status": status, "lastTransitionTime": now},
                {"type": "ContainersReady", "status": status, "lastTransitionTime": now},
            ]}});
            let api: Api<Pod> = Api::namespaced(
                self.client.clone(),
                pod.metadata.namespace.as_deref().unwrap_or_default(),
            );
            let name = pod.metadata.name.clone().unwrap_or_default();
            match api
                .patch_status(&name, &PatchParams::default(), &Patch::Strategic(patch))
                .await
            {
                Ok(_) => {
                    log(format!("pod {} Ready={status} (fault)", key(pod)));
                    if want {
                        self.unready.remove(&id);
                    } else {
                        self.unready.insert(id);
                    }
                }
                Err(e) => log(format!("pod {}: cannot set Ready={status}: {e}", key(pod))),
            }
        }
    }
}

fn uid(pod: &Pod) -> String {
    pod.metadata.uid.clone().unwrap_or_default()
}

/// The running pods of `component` by UID, with their IPs, and the UIDs in
/// `tracked` whose pod no longer runs.
fn running_pods<'a, V>(
    pods: &'a [Pod],
    component: &str,
    tracked: &HashMap<String, V>,
) -> (HashMap<String, (&'a Pod, String)>, Vec<String>) {
    let mut wanted = HashMap::new();
    for pod in pods.iter().filter(|p| is_component(p, component)) {
        if let Some(ip) = running_ip(pod) {
            wanted.insert(uid(pod), (pod, ip));
        }
    }
    let gone = tracked
        .keys()
        .filter(|u| !wanted.contains_key(*u))
        .cloned()
        .collect();
    (wanted, gone)
}

impl Agent {
    async fn tick(&mut self) -> Result<()> {
        let lp = ListParams::default();
        let pods = Api::<Pod>::all(self.client.clone()).list(&lp).await?.items;
        let services = Api::<Service>::all(self.client.clone())
            .list(&lp)
            .await?
            .items;
        let pvcs = Api::<PersistentVolumeClaim>::all(self.client.clone())
            .list(&lp)
            .await?
            .items;
        let pvs = Api::<PersistentVolume>::all(self.client.clone())
            .list(&lp)
            .await?
            .items;
        if let Err(e) = self.provision(&pvcs, &pvs).await {
            log(format!("provisioner: {e:#}"));
        }
        self.sync_readiness(&pods).await;
        self.write_hosts(&pods, &services)?;
        self.sync_pds(&pods, &pvcs, &pvs).await;
        self.sync_stores(&pods, &pvcs, &pvs).await;
        if let Err(e) = self.refresh_secret_volumes(&pods).await {
            log(format!("secret volumes: {e:#}"));
        }
        Ok(())
    }

    /// Secret volumes follow their Secret, as a kubelet's do: the files of every Secret volume
    /// of a pod this agent runs a process for are rewritten (each atomically) when the Secret's
    /// data changes, so a certificate rotated in place reaches pd-server and the store
    /// simulator without a restart. A Secret that is gone leaves the last files (as a kubelet
    /// does); keys dropped from a Secret are not deleted.
    async fn refresh_secret_volumes(&self, pods: &[Pod]) -> Result<()> {
        let backed: Vec<&Pod> = pods
            .iter()
            .filter(|p| self.pds.contains_key(&uid(p)) || self.stores.contains_key(&uid(p)))
            .collect();
        let wants_secrets = backed.iter().any(|p| {
            p.spec
                .as_ref()
                .and_then(|s| s.volumes.as_ref())
                .is_some_and(|v| v.iter().any(|v| v.secret.is_some()))
        });
        if !wants_secrets {
            return Ok(());
        }
        let secrets = Api::<Secret>::all(self.client.clone())
            .list(&ListParams::default())
            .await?
            .items;
        for pod in backed {
            let ns = pod.metadata.namespace.as_deref().unwrap_or_default();
            let volumes = pod.spec.as_ref().and_then(|s| s.volumes.as_ref());
            for vol in volumes.into_iter().flatten() {
                let Some(src) = &vol.secret else { continue };
                let dir = self
                    .layout
                    .pods()
                    .join(uid(pod))
                    .join("volumes")
                    .join(&vol.name);
                let name = src.secret_name.as_deref().unwrap_or_default();
                let Some(sec) = secrets.iter().find(|s| {
                    s.metadata.namespace.as_deref() == Some(ns)
                        && s.metadata.name.as_deref() == Some(name)
                }) else {
                    continue;
                };
                if !dir.is_dir() {
                    continue;
                }
                if write_items(&dir, &secret_data(sec), src.items.as_deref())? {
                    log(format!(
                        "Secret {ns}/{name} changed: volume {} of pod {} rewritten",
                        vol.name,
                        key(pod)
                    ));
                }
            }
        }
        Ok(())
    }

    async fn provision(
        &self,
        pvcs: &[PersistentVolumeClaim],
        pvs: &[PersistentVolume],
    ) -> Result<()> {
        let pv_api: Api<PersistentVolume> = Api::all(self.client.clone());
        for pvc in pvcs {
            let spec = pvc.spec.clone().unwrap_or_default();
            if spec.storage_class_name.as_deref() != Some(config::STORAGE_CLASS)
                || spec.volume_name.as_deref().is_some_and(|v| !v.is_empty())
                || pvc.metadata.deletion_timestamp.is_some()
            {
                continue;
            }
            let Some(node) = pvc
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(SELECTED_NODE))
            else {
                continue;
            };
            let pv_name = format!("pvc-{}", pvc.metadata.uid.clone().unwrap_or_default());
            if pvs
                .iter()
                .any(|pv| pv.metadata.name.as_deref() == Some(&pv_name))
            {
                continue;
            }
            let dir = self.layout.volumes().join(&pv_name);
            fs::create_dir_all(&dir)?;
            let storage = spec
                .resources
                .as_ref()
                .and_then(|r| r.requests.as_ref())
                .and_then(|r| r.get("storage"))
                .map_or_else(|| "1Gi".to_string(), |q| q.0.clone());
            let pv = json!({
                "apiVersion": "v1",
                "kind": "PersistentVolume",
                "metadata": {
                    "name": pv_name,
                    "annotations": {PROVISIONED_BY: config::PROVISIONER},
                },
                "spec": {
                    "capacity": {"storage": storage},
                    "accessModes": spec.access_modes.clone().unwrap_or_else(|| vec!["ReadWriteOnce".into()]),
                    "persistentVolumeReclaimPolicy": "Delete",
                    "storageClassName": config::STORAGE_CLASS,
                    "volumeMode": spec.volume_mode.clone().unwrap_or_else(|| "Filesystem".into()),
                    "hostPath": {"path": dir.display().to_string(), "type": "DirectoryOrCreate"},
                    "claimRef": {
                        "apiVersion": "v1",
                        "kind": "PersistentVolumeClaim",
                        "namespace": pvc.metadata.namespace,
                        "name": pvc.metadata.name,
                        "uid": pvc.metadata.uid,
                    },
                    "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                        {"key": "kubernetes.io/hostname", "operator": "In", "values": [node]}
                    ]}]}},
                },
            });
            let pv: PersistentVolume = serde_json::from_value(pv)?;
            match pv_api.create(&PostParams::default(), &pv).await {
                Ok(_) => log(format!(
                    "provisioned {pv_name} on {node} for {}/{}",
                    pvc.metadata.namespace.as_deref().unwrap_or_default(),
                    pvc.metadata.name.as_deref().unwrap_or_default()
                )),
                Err(kube::Error::Api(e)) if e.code == 409 => {}
                Err(e) => return Err(e.into()),
            }
        }
        for pv in pvs {
            let ours = pv
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(PROVISIONED_BY))
                .is_some_and(|p| p == config::PROVISIONER);
            let phase = pv.status.as_ref().and_then(|s| s.phase.as_deref());
            if ours && matches!(phase, Some("Released" | "Failed")) {
                let name = pv.metadata.name.clone().unwrap_or_default();
                let _ = pv_api.delete(&name, &DeleteParams::default()).await;
                let _ = fs::remove_dir_all(self.layout.volumes().join(&name));
                log(format!("deleted released volume {name}"));
            }
        }
        Ok(())
    }

    fn write_hosts(&mut self, pods: &[Pod], services: &[Service]) -> Result<()> {
        let mut lines = BTreeMap::<String, String>::new();
        for pod in pods {
            let Some(ip) = running_ip(pod) else { continue };
            let ns = pod.metadata.namespace.clone().unwrap_or_default();
            let spec = pod.spec.clone().unwrap_or_default();
            let name = pod.metadata.name.clone().unwrap_or_default();
            if let Some(sub) = spec.subdomain.filter(|s| !s.is_empty()) {
                let host = spec.hostname.unwrap_or(name);
                let fqdn = format!("{host}.{sub}.{ns}.svc");
                lines.insert(fqdn.clone(), format!("{ip} {fqdn} {fqdn}.cluster.local"));
            }
        }
        for svc in services {
            let ns = svc.metadata.namespace.clone().unwrap_or_default();
            let name = svc.metadata.name.clone().unwrap_or_default();
            let Some(selector) = svc.spec.as_ref().and_then(|s| s.selector.clone()) else {
                continue;
            };
            if selector.is_empty() {
                continue;
            }
            // The oldest running pod: kwok makes every pod Ready at once, so a joining member
            // would otherwise be handed its own address for the client service.
            let mut backends: Vec<(Option<k8s_openapi::jiff::Timestamp>, &str, String)> = pods
                .iter()
                .filter(|p| p.metadata.namespace.as_deref() == Some(&ns))
                .filter(|p| {
                    let l = labels(p);
                    selector.iter().all(|(k, v)| l.get(k) == Some(v))
                })
                // A Service sends nothing to a Pod that is not Ready.
                .filter(|p| !self.not_ready_by_fault(p))
                .filter_map(|p| {
                    let created = p.metadata.creation_timestamp.as_ref().map(|t| t.0);
                    Some((created, p.metadata.name.as_deref()?, running_ip(p)?))
                })
                .collect();
            backends.sort();
            if let Some((_, _, ip)) = backends.first() {
                let fqdn = format!("{name}.{ns}.svc");
                lines.insert(fqdn.clone(), format!("{ip} {fqdn} {fqdn}.cluster.local"));
            }
        }
        let mut text = self.hosts_base.clone();
        if !text.ends_with('\n') && !text.is_empty() {
            text.push('\n');
        }
        text.push_str("# tikv-operator e2e: pods and services\n");
        for l in lines.values() {
            text.push_str(l);
            text.push('\n');
        }
        if text != self.hosts_last {
            // Written in place (the file is bind-mounted by inode), without truncating
            // first: a resolver reading meanwhile never sees an empty file.
            let mut f = fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .open(self.layout.hosts())?;
            std::io::Write::write_all(&mut f, text.as_bytes())?;
            f.set_len(text.len() as u64)?;
            self.hosts_last = text;
        }
        Ok(())
    }

    /// Prepares a pod's volumes on the host; returns the container's mounts.
    async fn mounts(
        &self,
        pod: &Pod,
        container: &k8s_openapi::api::core::v1::Container,
        pvcs: &[PersistentVolumeClaim],
        pvs: &[PersistentVolume],
    ) -> Result<Mounts> {
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        let pod_dir = self.layout.pods().join(uid(pod));
        let mut mounts = Mounts::default();
        let volumes = pod
            .spec
            .as_ref()
            .and_then(|s| s.volumes.clone())
            .unwrap_or_default();
        for vm in container.volume_mounts.iter().flatten() {
            let Some(vol) = volumes.iter().find(|v| v.name == vm.name) else {
                continue;
            };
            let host = if let Some(pvc_src) = &vol.persistent_volume_claim {
                let pvc = pvcs
                    .iter()
                    .find(|c| {
                        c.metadata.namespace.as_deref() == Some(&ns)
                            && c.metadata.name.as_deref() == Some(&pvc_src.claim_name)
                    })
                    .with_context(|| format!("claim {} not found", pvc_src.claim_name))?;
                let pv_name = pvc
                    .spec
                    .as_ref()
                    .and_then(|s| s.volume_name.clone())
                    .filter(|v| !v.is_empty())
                    .with_context(|| format!("claim {} not bound yet", pvc_src.claim_name))?;
                let pv = pvs
                    .iter()
                    .find(|p| p.metadata.name.as_deref() == Some(&pv_name))
                    .with_context(|| format!("volume {pv_name} not found"))?;
                let path = pv
                    .spec
                    .as_ref()
                    .and_then(|s| s.host_path.as_ref())
                    .map(|h| PathBuf::from(&h.path))
                    .with_context(|| format!("volume {pv_name} is not a hostPath volume"))?;
                fs::create_dir_all(&path)?;
                path
            } else if let Some(cm_src) = &vol.config_map {
                let dir = pod_dir.join("volumes").join(&vol.name);
                fs::create_dir_all(&dir)?;
                let cms: Api<ConfigMap> = Api::namespaced(self.client.clone(), &ns);
                let cm = cms
                    .get(&cm_src.name)
                    .await
                    .with_context(|| format!("ConfigMap {ns}/{}", cm_src.name))?;
                let data = cm.data.unwrap_or_default();
                write_items(&dir, &data, cm_src.items.as_deref())?;
                dir
            } else if let Some(sec_src) = &vol.secret {
                let dir = pod_dir.join("volumes").join(&vol.name);
                fs::create_dir_all(&dir)?;
                let name = sec_src.secret_name.clone().unwrap_or_default();
                let secrets: Api<Secret> = Api::namespaced(self.client.clone(), &ns);
                let sec = secrets
                    .get(&name)
                    .await
                    .with_context(|| format!("Secret {ns}/{name}"))?;
                write_items(&dir, &secret_data(&sec), sec_src.items.as_deref())?;
                dir
            } else {
                let dir = pod_dir.join("volumes").join(&vol.name);
                fs::create_dir_all(&dir)?;
                dir
            };
            let host = match vm.sub_path.as_deref().filter(|s| !s.is_empty()) {
                Some(sub) => host.join(sub),
                None => host,
            };
            mounts.add(&vm.mount_path, host);
        }
        Ok(mounts)
    }

    async fn start_pd(
        &self,
        pod: &Pod,
        ip: &str,
        pvcs: &[PersistentVolumeClaim],
        pvs: &[PersistentVolume],
    ) -> Result<tokio::process::Child> {
        let c = podspec::container(pod, "pd").context("pod has no container")?;
        let Some(args) = podspec::program_args(c, "pd-server") else {
            bail!(
                "container {} does not run pd-server directly (command {:?}); the environment \
                 runs `pd-server` with the container's flags",
                c.name,
                c.command
            );
        };
        let mut env = podspec::resolve_env(pod, c);
        env.entry("POD_IP".into()).or_insert_with(|| ip.to_string());
        let mounts = self.mounts(pod, c, pvcs, pvs).await?;
        // Configuration files carry container paths and listen addresses too.
        for file in config_files(&mounts, &args, &env) {
            if let Ok(text) = fs::read_to_string(&file) {
                let new = podspec::bind_to_pod_ip(&mounts.rewrite(&text), ip);
                if new != text {
                    fs::write(&file, new)?;
                }
            }
        }
        let args: Vec<String> = args
            .iter()
            .map(|a| podspec::bind_to_pod_ip(&mounts.rewrite(&podspec::expand(a, &env)), ip))
            .collect();
        let cwd = self.layout.pods().join(uid(pod)).join("cwd");
        fs::create_dir_all(&cwd)?;
        let name = format!("pd_{}", key(pod));
        let log_path = self.layout.log(&name);
        let out = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)?;
        let err = out.try_clone()?;
        log(format!(
            "starting pd-server for {} on {ip}: {}",
            key(pod),
            args.join(" ")
        ));
        let child = tokio::process::Command::new(&self.pd_binary)
            .args(&args)
            .envs(&env)
            .env("HOSTNAME", pod.metadata.name.clone().unwrap_or_default())
            .current_dir(&cwd)
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", self.pd_binary.display()))?;
        if let Some(pid) = child.id() {
            fs::write(
                crate::process::pid_file(&self.layout.pids(), &name),
                pid.to_string(),
            )?;
        }
        Ok(child)
    }

    async fn sync_pds(
        &mut self,
        pods: &[Pod],
        pvcs: &[PersistentVolumeClaim],
        pvs: &[PersistentVolume],
    ) {
        let (wanted, gone) = running_pods(pods, "pd", &self.pds);
        for u in gone {
            if let Some(run) = self.pds.remove(&u) {
                log(format!("pod gone: stopping {}", run.name));
                self.stop_child(run);
            }
        }
        for (u, (pod, ip)) in wanted {
            if self.stopped_by_fault(pod) {
                if let Some(run) = self.pds.remove(&u) {
                    log(format!("fault: stopping {} (its Pod stays)", run.name));
                    self.stop_child(run);
                }
                continue;
            }
            let run_name = format!("pd_{}", key(pod));
            let ip_key = format!("ip {ip}");
            if self
                .stopping
                .lock()
                .is_ok_and(|s| s.contains(&run_name) || s.contains(&ip_key))
            {
                // The previous pod's pd-server, or one of a deleted pod whose IP this pod got,
                // is still stopping: start at a later tick.
                continue;
            }
            if let Some(run) = self.pds.get_mut(&u) {
                match run.child.try_wait() {
                    Ok(None) => continue,
                    Ok(Some(status)) => {
                        // restartPolicy Always, with a short back-off.
                        if run.started.elapsed() < Duration::from_secs(3) {
                            continue;
                        }
                        log(format!("{} exited ({status}); restarting", run.name));
                    }
                    Err(_) => continue,
                }
            }
            let restarts = self.pds.get(&u).map_or(0, |r| r.restarts + 1);
            match self.start_pd(pod, &ip, pvcs, pvs).await {
                Ok(child) => {
                    self.pds.insert(
                        u,
                        PdRun {
                            child,
                            name: format!("pd_{}", key(pod)),
                            ip: ip.clone(),
                            started: Instant::now(),
                            restarts,
                        },
                    );
                }
                Err(e) => log(format!("cannot start pd-server for {}: {e:#}", key(pod))),
            }
        }
    }

    fn stop_child(&self, mut run: PdRun) {
        let pids = self.layout.pids();
        let stopping = self.stopping.clone();
        let ip_key = format!("ip {}", run.ip);
        if let Ok(mut s) = stopping.lock() {
            s.insert(run.name.clone());
            s.insert(ip_key.clone());
        }
        tokio::spawn(async move {
            if let Some(pid) = run.child.id() {
                let _ = nix::sys::signal::killpg(
                    nix::unistd::Pid::from_raw(i32::try_from(pid).unwrap_or(i32::MAX)),
                    nix::sys::signal::Signal::SIGTERM,
                );
            }
            if tokio::time::timeout(Duration::from_secs(10), run.child.wait())
                .await
                .is_err()
            {
                let _ = run.child.kill().await;
            }
            let _ = fs::remove_file(crate::process::pid_file(&pids, &run.name));
            if let Ok(mut s) = stopping.lock() {
                s.remove(&run.name);
                s.remove(&ip_key);
            }
        });
    }

    async fn sync_stores(
        &mut self,
        pods: &[Pod],
        pvcs: &[PersistentVolumeClaim],
        pvs: &[PersistentVolume],
    ) {
        let (wanted, gone) = running_pods(pods, "tikv", &self.stores);
        for u in gone {
            if let Some(h) = self.stores.remove(&u) {
                h.abort();
                log(format!("TiKV pod {u} gone: store simulator stopped"));
            }
        }
        for (u, (pod, ip)) in wanted {
            if self.stopped_by_fault(pod) {
                if let Some(h) = self.stores.remove(&u) {
                    h.abort();
                    log(format!(
                        "fault: store simulator of {} stopped (its Pod stays)",
                        key(pod)
                    ));
                }
                continue;
            }
            if self.stores.contains_key(&u) {
                continue;
            }
            match self.store_params(pod, &ip, pvcs, pvs).await {
                Ok(params) => {
                    log(format!(
                        "starting store simulator for {} at {} (PD {:?})",
                        key(pod),
                        params.address,
                        params.pd_endpoints
                    ));
                    let name = key(pod);
                    let handle = tokio::spawn(async move {
                        match simulator::run(params).await {
                            Ok(()) => log(format!("store of {name} is tombstone: simulator exits")),
                            Err(e) => log(format!("store simulator of {name} failed: {e:#}")),
                        }
                    });
                    self.stores.insert(u, handle);
                }
                Err(e) => log(format!("cannot simulate TiKV pod {}: {e:#}", key(pod))),
            }
        }
    }

    async fn store_params(
        &self,
        pod: &Pod,
        ip: &str,
        pvcs: &[PersistentVolumeClaim],
        pvs: &[PersistentVolume],
    ) -> Result<StoreParams> {
        let c = podspec::container(pod, "tikv").context("pod has no container")?;
        let mut env = podspec::resolve_env(pod, c);
        env.entry("POD_IP".into()).or_insert_with(|| ip.to_string());
        let args: Vec<String> = podspec::program_args(c, "tikv-server")
            .unwrap_or_default()
            .iter()
            .map(|a| podspec::expand(a, &env))
            .collect();
        let mounts = self.mounts(pod, c, pvcs, pvs).await?;
        let cfg: toml::Table = podspec::flag(&args, &["config", "C"])
            .and_then(|p| mounts.host_path(&p))
            .and_then(|p| fs::read_to_string(p).ok())
            .and_then(|t| t.parse().ok())
            .unwrap_or_default();
        let cfg_str = |section: &str, k: &str| {
            cfg.get(section)
                .and_then(|s| s.get(k))
                .and_then(|v| v.as_str())
                .map(|v| podspec::expand(v, &env))
        };
        let pd_endpoints: Vec<String> = podspec::flag(&args, &["pd", "pd-endpoints"])
            .map(|s| s.split(',').map(str::to_string).collect())
            .or_else(|| {
                cfg.get("pd")
                    .and_then(|p| p.get("endpoints"))
                    .and_then(|e| e.as_array())
                    .map(|a| {
                        a.iter()
                            .filter_map(|v| v.as_str().map(|s| podspec::expand(s, &env)))
                            .collect()
                    })
            })
            .filter(|v: &Vec<String>| !v.is_empty())
            .context("no PD endpoints (--pd or [pd] endpoints)")?;
        let name = pod.metadata.name.clone().unwrap_or_default();
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        let spec = pod.spec.clone().unwrap_or_default();
        let default_host = match spec.subdomain.filter(|s| !s.is_empty()) {
            Some(sub) => format!("{}.{sub}.{ns}.svc", spec.hostname.unwrap_or(name)),
            None => ip.to_string(),
        };
        let address = podspec::flag(&args, &["advertise-addr"])
            .or_else(|| cfg_str("server", "advertise-addr"))
            .unwrap_or_else(|| format!("{default_host}:20160"));
        let status_address = podspec::flag(&args, &["advertise-status-addr"])
            .or_else(|| cfg_str("server", "advertise-status-addr"))
            .unwrap_or_else(|| format!("{default_host}:20180"));
        let mut labels: Vec<(String, String)> = podspec::flag(&args, &["labels"])
            .map(|s| {
                s.split(',')
                    .filter_map(|kv| kv.split_once('='))
                    .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
                    .collect()
            })
            .unwrap_or_default();
        if let Some(t) = cfg
            .get("server")
            .and_then(|s| s.get("labels"))
            .and_then(|l| l.as_table())
        {
            for (k, v) in t {
                if let Some(v) = v.as_str() {
                    labels.push((k.clone(), v.to_string()));
                }
            }
        }
        let data_dir = podspec::flag(&args, &["data-dir", "s"])
            .or_else(|| cfg_str("storage", "data-dir"))
            .and_then(|d| mounts.host_path(&d))
            .or_else(|| {
                // No explicit data dir: the first persistent mount.
                c.volume_mounts
                    .iter()
                    .flatten()
                    .find_map(|m| mounts.host_path(&m.mount_path))
            });
        let version = c
            .image
            .as_deref()
            .and_then(podspec::image_version)
            .unwrap_or_else(|| config::DEFAULT_TIKV_VERSION.to_string());
        let tls = security_files(&cfg, &mounts, &env)?;
        Ok(StoreParams {
            pd_endpoints,
            address,
            status_address,
            version,
            labels,
            data_dir,
            status_file: self.layout.stores().join(format!("{}.json", key(pod))),
            heartbeat: Duration::from_secs(5),
            capacity_bytes: 100 << 30,
            world: self.world.clone(),
            tls,
        })
    }

    async fn shutdown(&mut self) {
        for (_, h) in self.stores.drain() {
            h.abort();
        }
        let runs: Vec<PdRun> = self.pds.drain().map(|(_, r)| r).collect();
        for mut run in runs {
            if let Some(pid) = run.child.id() {
                let _ = nix::sys::signal::killpg(
                    nix::unistd::Pid::from_raw(i32::try_from(pid).unwrap_or(i32::MAX)),
                    nix::sys::signal::Signal::SIGTERM,
                );
            }
            if tokio::time::timeout(Duration::from_secs(10), run.child.wait())
                .await
                .is_err()
            {
                let _ = run.child.kill().await;
            }
            let _ = fs::remove_file(crate::process::pid_file(&self.layout.pids(), &run.name));
        }
    }
}

/// Host paths of the configuration files a process reads: the `--config` flag and every file
/// in ConfigMap/Secret directories mounted into the container.
fn config_files(mounts: &Mounts, args: &[String], env: &BTreeMap<String, String>) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Some(p) = podspec::flag(args, &["config"])
        .map(|p| podspec::expand(&p, env))
        .and_then(|p| mounts.host_path(&p))
    {
        out.push(p);
    }
    out
}

/// A Secret's data as text (PEM files, tokens).
fn secret_data(sec: &Secret) -> BTreeMap<String, String> {
    sec.data
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), String::from_utf8_lossy(&v.0).into_owned()))
        .collect()
}

fn write_items(
    dir: &std::path::Path,
    data: &BTreeMap<String, String>,
    items: Option<&[k8s_openapi::api::core::v1::KeyToPath]>,
) -> Result<bool> {
    let files: Vec<(&str, &String)> = match items {
        Some(items) if !items.is_empty() => items
            .iter()
            .filter_map(|it| Some((it.path.as_str(), data.get(&it.key)?)))
            .collect(),
        _ => data.iter().map(|(k, v)| (k.as_str(), v)).collect(),
    };
    let mut changed = false;
    for (rel, v) in files {
        changed |= write_if_changed(&dir.join(rel), v.as_bytes())?;
    }
    Ok(changed)
}

/// Writes `content` to `path` unless it already holds it; atomically (a temporary file renamed
/// over it), so a process reading the file meanwhile sees the old or the new content, never a
/// part. Returns whether it wrote.
fn write_if_changed(path: &std::path::Path, content: &[u8]) -> Result<bool> {
    if fs::read(path).is_ok_and(|old| old == content) {
        return Ok(false);
    }
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent)?;
    }
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".agent-tmp");
    fs::write(&tmp, content)?;
    fs::rename(&tmp, path)?;
    Ok(true)
}

/// Host paths of TiKV's `[security] ca-path`, `cert-path`, `key-path` (container paths mapped
/// through the mounts); `None` when none is set (plaintext); an error when only some are set
/// or one lies outside every mount.
fn security_files(
    cfg: &toml::Table,
    mounts: &Mounts,
    env: &BTreeMap<String, String>,
) -> Result<Option<simulator::TlsFiles>> {
    let get = |k: &str| {
        cfg.get("security")
            .and_then(|s| s.get(k))
            .and_then(|v| v.as_str())
            .filter(|v| !v.is_empty())
            .map(|v| podspec::expand(v, env))
    };
    let (ca, cert, key) = (get("ca-path"), get("cert-path"), get("key-path"));
    if ca.is_none() && cert.is_none() && key.is_none() {
        return Ok(None);
    }
    let host = |k: &str, p: Option<String>| {
        let p = p.with_context(|| format!("[security] {k} missing (the others are set)"))?;
        mounts
            .host_path(&p)
            .with_context(|| format!("[security] {k} {p} is on no volume mount"))
    };
    Ok(Some(simulator::TlsFiles {
        ca: host("ca-path", ca)?,
        cert: host("cert-path", cert)?,
        key: host("key-path", key)?,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_files_are_rewritten_only_when_they_change() -> Result<()> {
        let dir = std::env::temp_dir().join(format!("agent-secret-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let mut data = BTreeMap::from([("tls.crt".to_owned(), "one".to_owned())]);
        assert!(write_items(&dir, &data, None)?);
        assert!(!write_items(&dir, &data, None)?);
        data.insert("tls.crt".to_owned(), "two".to_owned());
        assert!(write_items(&dir, &data, None)?);
        assert_eq!(fs::read_to_string(dir.join("tls.crt"))?, "two");
        let leftovers: Vec<_> = fs::read_dir(&dir)?
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().ends_with(".agent-tmp"))
            .collect();
        assert!(leftovers.is_empty());
        fs::remove_dir_all(&dir)?;
        Ok(())
    }

    #[test]
    fn tikv_security_paths_map_through_the_mounts() -> Result<()> {
        let mut mounts = Mounts::default();
        mounts.add("/var/lib/tikv", PathBuf::from("/h/data"));
        mounts.add("/var/lib/tikv-tls", PathBuf::from("/h/tls"));
        let env = BTreeMap::new();
        let cfg: toml::Table = r#"
            [security]
            ca-path = "/var/lib/tikv-tls/ca.crt"
            cert-path = "/var/lib/tikv-tls/tls.crt"
            key-path = "/var/lib/tikv-tls/tls.key"
        "#
        .parse()?;
        assert_eq!(
            security_files(&cfg, &mounts, &env)?,
            Some(simulator::TlsFiles {
                ca: PathBuf::from("/h/tls/ca.crt"),
                cert: PathBuf::from("/h/tls/tls.crt"),
                key: PathBuf::from("/h/tls/tls.key"),
            })
        );
        assert_eq!(security_files(&toml::Table::new(), &mounts, &env)?, None);
        let partial: toml::Table = "[security]\nca-path = \"/var/lib/tikv-tls/ca.crt\"".parse()?;
        assert!(security_files(&partial, &mounts, &env).is_err());
        Ok(())
    }

    #[test]
    fn pd_security_paths_are_rewritten_in_its_config() {
        let mut mounts = Mounts::default();
        mounts.add("/var/lib/pd", PathBuf::from("/h/data"));
        mounts.add("/var/lib/pd-tls", PathBuf::from("/h/tls"));
        let text =
            "data-dir = \"/var/lib/pd\"\n[security]\ncacert-path = \"/var/lib/pd-tls/ca.crt\"\n";
        assert_eq!(
            mounts.rewrite(text),
            "data-dir = \"/h/data\"\n[security]\ncacert-path = \"/h/tls/ca.crt\"\n"
        );
    }
}
