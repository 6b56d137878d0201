//! Names of every object the operator derives from a user-chosen name.
//!
//! All derived names are built here so that the length limits enforced by
//! CEL (see [`crate::rules`]) and the names actually used can never drift
//! apart. The limits keep every derived name a valid DNS-1035 label (at most
//! 63 characters), which is what Service names, pod host names and label
//! values require.

/// Maximum length of a Cluster name.
pub const MAX_CLUSTER_NAME_LEN: usize = 40;
/// Maximum length of a PDGroup or TiKVGroup name.
pub const MAX_GROUP_NAME_LEN: usize = 40;
/// Length of the random suffix a group appends to its name to name an instance.
pub const INSTANCE_SUFFIX_LEN: usize = 6;
/// Maximum length of a PD or TiKV instance name (`<group>-<suffix>`).
pub const MAX_INSTANCE_NAME_LEN: usize = MAX_GROUP_NAME_LEN + 1 + INSTANCE_SUFFIX_LEN;
/// Maximum length of a volume name in `volumes[].name`.
pub const MAX_VOLUME_NAME_LEN: usize = 15;
/// Longest name Kubernetes accepts for a DNS-1035 label (Service names, host names, label values).
pub const DNS_LABEL_MAX_LEN: usize = 63;

// Checked at compile time: a cluster name is used as a label value.
const _: () = assert!(MAX_CLUSTER_NAME_LEN <= DNS_LABEL_MAX_LEN);

/// Name of a PD or TiKV instance created by `group`, with a random `suffix`.
pub fn instance(group: &str, suffix: &str) -> String {
    format!("{group}-{suffix}")
}

/// Name of the Pod of an instance (also its host name).
pub fn pod(instance: &str) -> String {
    instance.to_owned()
}

/// Name of the ConfigMap holding an instance's rendered configuration.
pub fn config_map(instance: &str) -> String {
    instance.to_owned()
}

/// Name of the PVC for volume `volume` of an instance.
pub fn pvc(volume: &str, instance: &str) -> String {
    format!("{volume}-{instance}")
}

/// Name of the headless Service of a PDGroup (peer traffic; pod DNS names).
pub fn pd_peer_service(group: &str) -> String {
    format!("{group}-pd-peer")
}

/// Name of the client Service of a PDGroup (what TiKV and the operator dial).
pub fn pd_client_service(group: &str) -> String {
    format!("{group}-pd")
}

/// Name of the headless Service of a TiKVGroup (pod DNS names).
pub fn tikv_peer_service(group: &str) -> String {
    format!("{group}-tikv-peer")
}

/// Default name of the Secret the members of a PDGroup mount when the Cluster enables TLS.
pub fn pd_tls_secret(group: &str) -> String {
    format!("{group}-pd-tls")
}

/// Default name of the Secret the members of a TiKVGroup mount when the Cluster enables TLS.
pub fn tikv_tls_secret(group: &str) -> String {
    format!("{group}-tikv-tls")
}

/// Default name of the Secret the operator uses to reach PD when the Cluster enables TLS.
pub fn client_tls_secret(cluster: &str) -> String {
    format!("{cluster}-client-tls")
}

/// Every name derived from a group name, for length checks.
pub fn all_group_derived(group: &str) -> Vec<String> {
    vec![
        pd_peer_service(group),
        pd_client_service(group),
        tikv_peer_service(group),
        instance(group, &"x".repeat(INSTANCE_SUFFIX_LEN)),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn longest_allowed_names_fit_in_a_dns_label() {
        let group = "g".repeat(MAX_GROUP_NAME_LEN);
        for name in all_group_derived(&group) {
            assert!(
                name.len() <= DNS_LABEL_MAX_LEN,
                "{name} is {} chars",
                name.len()
            );
        }
        let inst = instance(&group, &"a".repeat(INSTANCE_SUFFIX_LEN));
        assert_eq!(inst.len(), MAX_INSTANCE_NAME_LEN);
        assert!(pod(&inst).len() <= DNS_LABEL_MAX_LEN);
        assert!(config_map(&inst).len() <= DNS_LABEL_MAX_LEN);
        let volume = "v".repeat(MAX_VOLUME_NAME_LEN);
        assert!(pvc(&volume, &inst).len() <= DNS_LABEL_MAX_LEN);
    }

    #[test]
    fn derived_names_are_stable() {
        assert_eq!(instance("basic", "abc123"), "basic-abc123");
        assert_eq!(pvc("data", "basic-abc123"), "data-basic-abc123");
        assert_eq!(pd_peer_service("pd"), "pd-pd-peer");
        assert_eq!(pd_client_service("pd"), "pd-pd");
        assert_eq!(tikv_peer_service("ssd"), "ssd-tikv-peer");
    }
}
