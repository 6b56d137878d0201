//! Versions, ports and on-disk layout of the e2e environment.
//!
//! Everything listens on loopback only. Binaries come from the cache filled by
//! `e2e/scripts/build-binaries.sh`; the running environment lives in one state directory that
//! `env down` removes.

use std::path::{Path, PathBuf};

/// Kubernetes release of kube-apiserver, kube-controller-manager, kube-scheduler and kubectl.
pub const K8S_VERSION: &str = "v1.33.13";
/// etcd release (shipped inside the `etcd-bin-vendored` crate).
pub const ETCD_VERSION: &str = "v3.5.34";
/// kwok release (the fake kubelet).
pub const KWOK_VERSION: &str = "v0.7.0";
/// PD build backing PD pods (see `e2e/scripts/build-binaries.sh`: v8.5.5 is the target, but only
/// this commit's pseudo-version is obtainable through the module proxy reachable here).
pub const PD_VERSION: &str = "v8.1.0-alpha-7179657d129b";
/// Version the store simulator reports when a TiKV pod's image has no usable tag.
pub const DEFAULT_TIKV_VERSION: &str = "8.5.5";

/// etcd client port (loopback).
pub const ETCD_CLIENT_PORT: u16 = 32379;
/// etcd peer port (loopback).
pub const ETCD_PEER_PORT: u16 = 32380;
/// kube-apiserver secure port (loopback).
pub const APISERVER_PORT: u16 = 36443;
/// kube-controller-manager secure port (loopback).
pub const KCM_PORT: u16 = 30257;
/// kube-scheduler secure port (loopback).
pub const SCHEDULER_PORT: u16 = 30259;
/// kwok's health/metrics server (loopback).
pub const KWOK_PORT: u16 = 30247;
/// Pod IPs: loopback addresses, so a process backing a pod can listen on its pod IP and the
/// host reaches it directly.
pub const POD_CIDR: &str = "127.1.0.1/16";
/// Service cluster IPs (bookkeeping only: nothing routes them; names resolve to pod IPs).
pub const SERVICE_CIDR: &str = "127.2.0.0/16";
/// Bearer token of the environment's administrator (member of `system:masters`).
pub const ADMIN_TOKEN: &str = "tikv-operator-e2e-admin-token";

/// Name of the StorageClass whose claims the environment provisions (also the default class).
pub const STORAGE_CLASS: &str = "e2e-local";
/// Provisioner name of [`STORAGE_CLASS`].
pub const PROVISIONER: &str = "e2e.tikv.org/local";
/// Fake nodes and their zones: three zones, one node each, plus a second node in zone-a.
pub const NODES: &[(&str, &str)] = &[
    ("e2e-node-a1", "zone-a"),
    ("e2e-node-b1", "zone-b"),
    ("e2e-node-c1", "zone-c"),
    ("e2e-node-a2", "zone-a"),
];

/// Root of the binary cache: `$TIKV_OPERATOR_E2E_CACHE` or `~/.cache/tikv-operator-e2e`.
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("TIKV_OPERATOR_E2E_CACHE") {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("/root"), PathBuf::from);
    home.join(".cache").join("tikv-operator-e2e")
}

/// Path of a cached binary, `<cache>/bin/<name>-<version>`.
pub fn binary(name: &str, version: &str) -> PathBuf {
    cache_dir().join("bin").join(format!("{name}-{version}"))
}

/// Root of the repository (the parent of the e2e crate).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

/// The script that builds the cached binaries.
pub fn build_script() -> PathBuf {
    repo_root().join("e2e/scripts/build-binaries.sh")
}

/// On-disk layout of a running environment.
#[derive(Debug, Clone)]
pub struct Layout {
    /// The state directory (`$TIKV_OPERATOR_E2E_STATE` or `/tmp/tikv-operator-e2e`).
    pub root: PathBuf,
}

impl Layout {
    /// The layout of the environment this process talks to.
    pub fn from_env() -> Self {
        let root = std::env::var_os("TIKV_OPERATOR_E2E_STATE")
            .map_or_else(|| PathBuf::from("/tmp/tikv-operator-e2e"), PathBuf::from);
        Self { root }
    }

    /// Kubeconfig of the administrator.
    pub fn kubeconfig(&self) -> PathBuf {
        self.root.join("kubeconfig")
    }
    /// Hosts file (the machine's plus one line per pod and service) bind-mounted over
    /// `/etc/hosts` for processes that must resolve pod names.
    pub fn hosts(&self) -> PathBuf {
        self.root.join("hosts")
    }
    /// Log directory (one file per process).
    pub fn logs(&self) -> PathBuf {
        self.root.join("logs")
    }
    /// Log file of one process.
    pub fn log(&self, name: &str) -> PathBuf {
        self.logs().join(format!("{name}.log"))
    }
    /// Pid files of every process the environment started.
    pub fn pids(&self) -> PathBuf {
        self.root.join("pids")
    }
    /// Certificates and keys.
    pub fn pki(&self) -> PathBuf {
        self.root.join("pki")
    }
    /// Directories backing provisioned PersistentVolumes.
    pub fn volumes(&self) -> PathBuf {
        self.root.join("volumes")
    }
    /// Per-pod scratch directories (ConfigMap/Secret/emptyDir contents, working directory).
    pub fn pods(&self) -> PathBuf {
        self.root.join("pods")
    }
    /// Store simulator status files (`<namespace>_<pod>.json`).
    pub fn stores(&self) -> PathBuf {
        self.root.join("stores")
    }
}
