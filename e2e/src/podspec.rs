//! Turning a pod's container spec into a host process: environment variables, `$(VAR)`
//! expansion, flags, and volume mount paths mapped onto host directories.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{Container, Pod};

/// The container named `name`, or the pod's first container.
pub fn container<'a>(pod: &'a Pod, name: &str) -> Option<&'a Container> {
    let containers = &pod.spec.as_ref()?.containers;
    containers
        .iter()
        .find(|c| c.name == name)
        .or_else(|| containers.first())
}

/// The container's environment with `value` and `valueFrom.fieldRef` resolved (other sources
/// are left out).
pub fn resolve_env(pod: &Pod, c: &Container) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    for e in c.env.iter().flatten() {
        let value = if let Some(v) = &e.value {
            Some(expand(v, &env))
        } else if let Some(f) = e.value_from.as_ref().and_then(|v| v.field_ref.as_ref()) {
            field_ref(pod, &f.field_path)
        } else {
            None
        };
        if let Some(v) = value {
            env.insert(e.name.clone(), v);
        }
    }
    env
}

fn field_ref(pod: &Pod, path: &str) -> Option<String> {
    let m = &pod.metadata;
    match path {
        "metadata.name" => m.name.clone(),
        "metadata.namespace" => m.namespace.clone(),
        "metadata.uid" => m.uid.clone(),
        "spec.nodeName" => pod.spec.as_ref()?.node_name.clone(),
        "spec.serviceAccountName" => pod.spec.as_ref()?.service_account_name.clone(),
        "status.podIP" => pod.status.as_ref()?.pod_ip.clone(),
        "status.hostIP" => pod.status.as_ref()?.host_ip.clone(),
        _ => {
            let rest = path
                .strip_prefix("metadata.labels['")
                .map(|r| (r, true))
                .or_else(|| {
                    path.strip_prefix("metadata.annotations['")
                        .map(|r| (r, false))
                })?;
            let key = rest.0.strip_suffix("']")?;
            let map = if rest.1 { &m.labels } else { &m.annotations };
            map.as_ref()?.get(key).cloned()
        }
    }
}

/// Expands `$(VAR)` references as the kubelet does (`$$` escapes; unknown names stay).
pub fn expand(s: &str, env: &BTreeMap<String, String>) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(body) = after.strip_prefix('(') {
            if let Some(end) = body.find(')') {
                let name = &body[..end];
                match env.get(name) {
                    Some(v) => out.push_str(v),
                    None => {
                        out.push_str("$(");
                        out.push_str(name);
                        out.push(')');
                    }
                }
                rest = &body[end + 1..];
            } else {
                out.push('$');
                rest = after;
            }
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// The program's arguments: `command[1..] + args` when `command` runs `binary`, `args` alone
/// when `command` is empty (the image's entrypoint is the binary). `None` for other commands
/// (e.g. a shell script), which the environment cannot run as a host process.
pub fn program_args(c: &Container, binary: &str) -> Option<Vec<String>> {
    let command = c.command.clone().unwrap_or_default();
    let args = c.args.clone().unwrap_or_default();
    match command.first() {
        None => Some(args),
        Some(first) if Path::new(first).file_name().is_some_and(|n| n == binary) => {
            Some(command[1..].iter().cloned().chain(args).collect())
        }
        Some(_) => None,
    }
}

/// Value of a `--name=value` or `--name value` flag (the last occurrence wins).
pub fn flag(args: &[String], names: &[&str]) -> Option<String> {
    let mut found = None;
    let mut i = 0;
    while i < args.len() {
        let a = &args[i];
        for n in names {
            let long = format!("--{n}");
            if let Some(v) = a.strip_prefix(&format!("{long}=")) {
                found = Some(v.to_string());
            } else if *a == long
                && let Some(v) = args.get(i + 1)
            {
                found = Some(v.clone());
                i += 1;
            }
        }
        i += 1;
    }
    found
}

/// Mount paths of a container mapped onto host directories (longest path first).
#[derive(Debug, Clone, Default)]
pub struct Mounts {
    entries: Vec<(String, PathBuf)>,
}

impl Mounts {
    /// Adds a mount.
    pub fn add(&mut self, mount_path: &str, host: PathBuf) {
        self.entries
            .push((mount_path.trim_end_matches('/').to_string(), host));
        self.entries
            .sort_by_key(|(p, _)| std::cmp::Reverse(p.len()));
    }

    /// Host path of a container path, if it lies under a mount.
    pub fn host_path(&self, path: &str) -> Option<PathBuf> {
        for (m, host) in &self.entries {
            if path == m {
                return Some(host.clone());
            }
            if let Some(rest) = path
                .strip_prefix(m.as_str())
                .and_then(|r| r.strip_prefix('/'))
            {
                return Some(host.join(rest));
            }
        }
        None
    }

    /// Replaces every container path under a mount, wherever it appears in `text` (flag values,
    /// configuration files), with the host path.
    pub fn rewrite(&self, text: &str) -> String {
        let mut out = text.to_string();
        for (m, host) in &self.entries {
            if m.is_empty() {
                continue;
            }
            let host = host.display().to_string();
            let mut result = String::with_capacity(out.len());
            let mut rest = out.as_str();
            while let Some(i) = rest.find(m.as_str()) {
                let before_ok = i == 0
                    || matches!(
                        rest.as_bytes()[i - 1],
                        b'"' | b'\'' | b'=' | b' ' | b':' | b'\n' | b'\t'
                    );
                let after = &rest[i + m.len()..];
                let after_ok = after.is_empty()
                    || matches!(
                        after.as_bytes()[0],
                        b'/' | b'"' | b'\'' | b' ' | b'\n' | b',' | b'\t'
                    );
                result.push_str(&rest[..i]);
                if before_ok && after_ok {
                    result.push_str(&host);
                } else {
                    result.push_str(m);
                }
                rest = after;
            }
            result.push_str(rest);
            out = result;
        }
        out
    }
}

/// Replaces wildcard listen addresses (`0.0.0.0`, `[::]`) by the pod IP: every pod of the
/// environment shares the host's network, so each must listen on its own loopback address.
pub fn bind_to_pod_ip(text: &str, pod_ip: &str) -> String {
    text.replace("0.0.0.0", pod_ip).replace("[::]", pod_ip)
}

/// The version in an image reference's tag (`pingcap/tikv:v8.5.5` -> `8.5.5`).
pub fn image_version(image: &str) -> Option<String> {
    let (_, tag) = image.rsplit_once(':')?;
    if tag.contains('/') {
        return None;
    }
    let v = tag.trim_start_matches('v');
    v.chars()
        .next()
        .filter(char::is_ascii_digit)
        .map(|_| v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expands_variables_like_the_kubelet() {
        let env = BTreeMap::from([("POD".to_string(), "pd-0".to_string())]);
        assert_eq!(expand("--name=$(POD)", &env), "--name=pd-0");
        assert_eq!(expand("$(NOPE)-$$(POD)", &env), "$(NOPE)-$(POD)");
        assert_eq!(expand("a$b", &env), "a$b");
    }

    #[test]
    fn reads_flags_in_both_forms() {
        let args: Vec<String> = ["--name=a", "--data-dir", "/x", "--name=b"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(flag(&args, &["name"]).as_deref(), Some("b"));
        assert_eq!(flag(&args, &["data-dir"]).as_deref(), Some("/x"));
        assert_eq!(flag(&args, &["config"]), None);
    }

    #[test]
    fn rewrites_mount_paths_only_at_path_boundaries() {
        let mut m = Mounts::default();
        m.add("/var/lib/pd", PathBuf::from("/tmp/v1"));
        m.add("/etc/pd", PathBuf::from("/tmp/cm"));
        assert_eq!(
            m.rewrite("--data-dir=/var/lib/pd --config=/etc/pd/pd.toml"),
            "--data-dir=/tmp/v1 --config=/tmp/cm/pd.toml"
        );
        assert_eq!(
            m.rewrite("data-dir = \"/var/lib/pdx\""),
            "data-dir = \"/var/lib/pdx\""
        );
        assert_eq!(m.host_path("/etc/pd/a"), Some(PathBuf::from("/tmp/cm/a")));
    }

    #[test]
    fn image_versions() {
        assert_eq!(
            image_version("pingcap/tikv:v8.5.5").as_deref(),
            Some("8.5.5")
        );
        assert_eq!(image_version("localhost:5000/tikv"), None);
        assert_eq!(image_version("tikv:latest"), None);
    }
}
