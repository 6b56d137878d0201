//! Store labels: `server.labels` from the spec plus the node's topology
//! labels that PD's `location-labels` names.

use std::collections::BTreeMap;

/// Well-known Kubernetes node labels used when a node has no label named
/// exactly like a location label: `zone`, `region` and `host` are common
/// location-label names in PD configurations.
pub const WELL_KNOWN_NODE_LABELS: &[(&str, &str)] = &[
    ("zone", "topology.kubernetes.io/zone"),
    ("region", "topology.kubernetes.io/region"),
    ("host", "kubernetes.io/hostname"),
];

/// The labels a store should carry.
///
/// - Every key of `spec_labels` (`server.labels`) with its value: what the
///   user wrote explicitly wins.
/// - For every key of `location_labels` not set by the user: the node's label
///   of that name; failing that, the well-known node label it stands for
///   ([`WELL_KNOWN_NODE_LABELS`]); failing that, the instance's topology
///   (the node selector it was pinned with). Keys found nowhere are left out.
///
/// `node_labels` is `None` while the Pod is not scheduled.
pub fn desired_store_labels(
    spec_labels: &BTreeMap<String, String>,
    location_labels: &[String],
    node_labels: Option<&BTreeMap<String, String>>,
    topology: Option<&BTreeMap<String, String>>,
) -> BTreeMap<String, String> {
    let mut out = spec_labels.clone();
    for key in location_labels {
        if out.contains_key(key) {
            continue;
        }
        let well_known = WELL_KNOWN_NODE_LABELS
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, node_key)| *node_key);
        let lookup = |labels: Option<&BTreeMap<String, String>>| {
            let labels = labels?;
            labels
                .get(key)
                .or_else(|| well_known.and_then(|w| labels.get(w)))
                .filter(|v| !v.is_empty())
                .cloned()
        };
        if let Some(v) = lookup(node_labels).or_else(|| lookup(topology)) {
            out.insert(key.clone(), v);
        }
    }
    out
}

/// The labels of `desired` that `current` lacks or holds with another value
/// (what to send to PD). Labels only in `current` are left alone: they may
/// have been set by someone else.
pub fn labels_to_set(
    desired: &BTreeMap<String, String>,
    current: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    desired
        .iter()
        .filter(|(k, v)| current.get(*k) != Some(*v))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn keys(k: &[&str]) -> Vec<String> {
        k.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn spec_labels_plus_the_node_labels_pd_uses_for_placement() {
        let node = m(&[
            ("topology.kubernetes.io/zone", "us-east-1a"),
            ("kubernetes.io/hostname", "node-7"),
            ("rack", "r2"),
            ("unrelated", "x"),
        ]);
        let got = desired_store_labels(
            &m(&[("disk", "ssd")]),
            &keys(&["zone", "rack", "host"]),
            Some(&node),
            None,
        );
        assert_eq!(
            got,
            m(&[
                ("disk", "ssd"),
                ("zone", "us-east-1a"),
                ("rack", "r2"),
                ("host", "node-7")
            ])
        );
    }

    #[test]
    fn explicit_labels_win_and_unknown_keys_are_left_out() {
        let node = m(&[("zone", "z-node")]);
        let got = desired_store_labels(
            &m(&[("zone", "z-user")]),
            &keys(&["zone", "dc"]),
            Some(&node),
            None,
        );
        assert_eq!(got, m(&[("zone", "z-user")]));
        // A node label named exactly like the location label beats the
        // well-known mapping.
        let node = m(&[("zone", "exact"), ("topology.kubernetes.io/zone", "mapped")]);
        let got = desired_store_labels(&BTreeMap::new(), &keys(&["zone"]), Some(&node), None);
        assert_eq!(got, m(&[("zone", "exact")]));
    }

    #[test]
    fn before_scheduling_the_topology_fills_in() {
        let topo = m(&[("topology.kubernetes.io/zone", "b")]);
        let got = desired_store_labels(&BTreeMap::new(), &keys(&["zone"]), None, Some(&topo));
        assert_eq!(got, m(&[("zone", "b")]));
        // Without location labels, only the spec labels.
        let got = desired_store_labels(&m(&[("a", "1")]), &[], None, Some(&topo));
        assert_eq!(got, m(&[("a", "1")]));
    }

    #[test]
    fn only_missing_or_changed_labels_are_sent() {
        let desired = m(&[("a", "1"), ("b", "2")]);
        let current = m(&[("a", "1"), ("b", "old"), ("other", "x")]);
        assert_eq!(labels_to_set(&desired, &current), m(&[("b", "2")]));
        assert!(labels_to_set(&current, &current).is_empty());
    }
}
