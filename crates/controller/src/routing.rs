//! Which objects a change wakes: pure functions from a changed object (or a
//! PD state change) to the reconcile triggers of the objects that depend on it.
//!
//! Child objects (Pods, ConfigMaps, PVCs, Services, instance objects) carry the
//! operator's labels (`app.kubernetes.io/component`, `core.tikv.org/cluster`,
//! `core.tikv.org/group`, `core.tikv.org/instance`), so routing reads labels
//! rather than walking owner references. Deletions route like updates: the
//! watcher reports both.

use std::collections::BTreeSet;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use tikv_operator_api::labels;

/// The kinds the operator reconciles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// `Cluster`.
    Cluster,
    /// `PDGroup`.
    PdGroup,
    /// `PD`.
    Pd,
}

/// "Reconcile this object".
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Trigger {
    /// Its kind.
    pub kind: Kind,
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
}

impl Trigger {
    fn new(kind: Kind, namespace: &str, name: &str) -> Self {
        Self {
            kind,
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        }
    }
}

fn label<'a>(meta: &'a ObjectMeta, key: &str) -> Option<&'a str> {
    meta.labels.as_ref()?.get(key).map(String::as_str)
}

/// Triggers of a changed child object (Pod, ConfigMap, PVC, Service) by its
/// labels: its instance, its group and, for Services (group-level), the group.
/// Objects without the operator's labels trigger nothing.
pub fn for_child(meta: &ObjectMeta) -> Vec<Trigger> {
    let Some(ns) = meta.namespace.as_deref() else {
        return Vec::new();
    };
    if label(meta, labels::MANAGED_BY) != Some(labels::MANAGED_BY_VALUE) {
        return Vec::new();
    }
    let (group_kind, instance_kind) = match label(meta, labels::COMPONENT) {
        Some(labels::COMPONENT_PD) => (Kind::PdGroup, Kind::Pd),
        _ => return Vec::new(),
    };
    let mut out = Vec::new();
    if let Some(instance) = label(meta, labels::INSTANCE) {
        out.push(Trigger::new(instance_kind, ns, instance));
    }
    if let Some(group) = label(meta, labels::GROUP) {
        out.push(Trigger::new(group_kind, ns, group));
    }
    out
}

/// Triggers of a changed PD instance object: itself, its group (counts,
/// readiness) and its Cluster (instances left while deleting).
pub fn for_pd_instance(meta: &ObjectMeta, cluster: &str) -> Vec<Trigger> {
    let (Some(ns), Some(name)) = (meta.namespace.as_deref(), meta.name.as_deref()) else {
        return Vec::new();
    };
    let mut out = vec![Trigger::new(Kind::Pd, ns, name)];
    if let Some(group) = label(meta, labels::GROUP) {
        out.push(Trigger::new(Kind::PdGroup, ns, group));
    }
    out.push(Trigger::new(Kind::Cluster, ns, cluster));
    out
}

/// Triggers of a changed PDGroup: itself and its Cluster.
pub fn for_pd_group(meta: &ObjectMeta, cluster: &str) -> Vec<Trigger> {
    let (Some(ns), Some(name)) = (meta.namespace.as_deref(), meta.name.as_deref()) else {
        return Vec::new();
    };
    vec![
        Trigger::new(Kind::PdGroup, ns, name),
        Trigger::new(Kind::Cluster, ns, cluster),
    ]
}

/// Triggers of a changed Cluster: itself, every group and every instance of
/// it (`paused`, `suspendCompute`, deletion and the recorded PD cluster id
/// change what they do).
pub fn for_cluster(
    namespace: &str,
    name: &str,
    pd_groups: &[String],
    pd_instances: &[String],
) -> Vec<Trigger> {
    let mut out = vec![Trigger::new(Kind::Cluster, namespace, name)];
    out.extend(
        pd_groups
            .iter()
            .map(|g| Trigger::new(Kind::PdGroup, namespace, g)),
    );
    out.extend(
        pd_instances
            .iter()
            .map(|i| Trigger::new(Kind::Pd, namespace, i)),
    );
    out
}

/// Triggers of a PD state change in one Cluster: the instances whose member
/// changed (presence, health, leadership; every member when reachability
/// changed), every PD group of the Cluster and the Cluster itself.
pub fn for_pd_state(
    namespace: &str,
    cluster: &str,
    changed_members: &BTreeSet<String>,
    pd_groups: &[String],
    pd_instances: &[String],
) -> Vec<Trigger> {
    let mut out = vec![Trigger::new(Kind::Cluster, namespace, cluster)];
    out.extend(
        pd_groups
            .iter()
            .map(|g| Trigger::new(Kind::PdGroup, namespace, g)),
    );
    // A PD member is named after its instance.
    out.extend(
        pd_instances
            .iter()
            .filter(|i| changed_members.contains(*i))
            .map(|i| Trigger::new(Kind::Pd, namespace, i)),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn meta(ns: Option<&str>, name: &str, l: &[(&str, &str)]) -> ObjectMeta {
        ObjectMeta {
            namespace: ns.map(str::to_owned),
            name: Some(name.to_owned()),
            labels: Some(
                l.iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect::<BTreeMap<_, _>>(),
            ),
            ..ObjectMeta::default()
        }
    }

    const PD_POD: &[(&str, &str)] = &[
        (labels::MANAGED_BY, labels::MANAGED_BY_VALUE),
        (labels::COMPONENT, labels::COMPONENT_PD),
        (labels::CLUSTER, "basic"),
        (labels::GROUP, "pd"),
        (labels::INSTANCE, "pd-abc123"),
    ];

    #[test]
    fn a_pd_pod_wakes_its_instance_and_group() {
        let t = for_child(&meta(Some("ns"), "pd-abc123", PD_POD));
        assert_eq!(
            t,
            vec![
                Trigger::new(Kind::Pd, "ns", "pd-abc123"),
                Trigger::new(Kind::PdGroup, "ns", "pd"),
            ]
        );
    }

    #[test]
    fn a_service_wakes_its_group_only() {
        let t = for_child(&meta(Some("ns"), "pd-pd", &PD_POD[..4]));
        assert_eq!(t, vec![Trigger::new(Kind::PdGroup, "ns", "pd")]);
    }

    #[test]
    fn objects_not_managed_by_the_operator_wake_nothing() {
        let mut foreign = PD_POD.to_vec();
        foreign[0] = (labels::MANAGED_BY, "helm");
        assert!(for_child(&meta(Some("ns"), "x", &foreign)).is_empty());
        assert!(for_child(&meta(None, "x", PD_POD)).is_empty());
        let mut other = PD_POD.to_vec();
        other[1] = (labels::COMPONENT, "tidb");
        assert!(for_child(&meta(Some("ns"), "x", &other)).is_empty());
    }

    #[test]
    fn instances_and_groups_wake_upwards() {
        let i = meta(Some("ns"), "pd-abc123", PD_POD);
        assert_eq!(
            for_pd_instance(&i, "basic"),
            vec![
                Trigger::new(Kind::Pd, "ns", "pd-abc123"),
                Trigger::new(Kind::PdGroup, "ns", "pd"),
                Trigger::new(Kind::Cluster, "ns", "basic"),
            ]
        );
        let g = meta(Some("ns"), "pd", &[]);
        assert_eq!(
            for_pd_group(&g, "basic"),
            vec![
                Trigger::new(Kind::PdGroup, "ns", "pd"),
                Trigger::new(Kind::Cluster, "ns", "basic"),
            ]
        );
    }

    #[test]
    fn a_cluster_wakes_everything_below_it() {
        let t = for_cluster(
            "ns",
            "basic",
            &["pd".into()],
            &["pd-a".into(), "pd-b".into()],
        );
        assert_eq!(t.len(), 4);
        assert!(t.contains(&Trigger::new(Kind::Pd, "ns", "pd-b")));
    }

    #[test]
    fn a_pd_state_change_wakes_only_the_changed_members() {
        let changed = BTreeSet::from(["pd-b".to_owned(), "gone".to_owned()]);
        let t = for_pd_state(
            "ns",
            "basic",
            &changed,
            &["pd".into()],
            &["pd-a".into(), "pd-b".into()],
        );
        assert_eq!(
            t,
            vec![
                Trigger::new(Kind::Cluster, "ns", "basic"),
                Trigger::new(Kind::PdGroup, "ns", "pd"),
                Trigger::new(Kind::Pd, "ns", "pd-b"),
            ]
        );
    }
}
