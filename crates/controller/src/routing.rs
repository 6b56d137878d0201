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
    /// `TiKVGroup`.
    TikvGroup,
    /// `TiKV`.
    Tikv,
}

/// A component: which group and instance kinds its objects belong to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Component {
    /// PD.
    Pd,
    /// TiKV.
    Tikv,
}

impl Component {
    fn kinds(self) -> (Kind, Kind) {
        match self {
            Self::Pd => (Kind::PdGroup, Kind::Pd),
            Self::Tikv => (Kind::TikvGroup, Kind::Tikv),
        }
    }
}

/// The groups and instances of one Cluster, by name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterObjects {
    /// PDGroups.
    pub pd_groups: Vec<String>,
    /// PD instances.
    pub pd_instances: Vec<String>,
    /// TiKVGroups.
    pub tikv_groups: Vec<String>,
    /// TiKV instances.
    pub tikv_instances: Vec<String>,
}

impl ClusterObjects {
    fn triggers(&self, namespace: &str, with_instances: bool) -> Vec<Trigger> {
        let mut out = Vec::new();
        for (kind, names) in [
            (Kind::PdGroup, &self.pd_groups),
            (Kind::TikvGroup, &self.tikv_groups),
        ] {
            out.extend(names.iter().map(|n| Trigger::new(kind, namespace, n)));
        }
        if with_instances {
            for (kind, names) in [
                (Kind::Pd, &self.pd_instances),
                (Kind::Tikv, &self.tikv_instances),
            ] {
                out.extend(names.iter().map(|n| Trigger::new(kind, namespace, n)));
            }
        }
        out
    }
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
        Some(labels::COMPONENT_PD) => Component::Pd.kinds(),
        Some(labels::COMPONENT_TIKV) => Component::Tikv.kinds(),
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

/// Triggers of a changed instance object: itself, its group (counts,
/// readiness) and its Cluster (instances left while deleting).
pub fn for_instance(meta: &ObjectMeta, cluster: &str, component: Component) -> Vec<Trigger> {
    let (Some(ns), Some(name)) = (meta.namespace.as_deref(), meta.name.as_deref()) else {
        return Vec::new();
    };
    let (group_kind, instance_kind) = component.kinds();
    let mut out = vec![Trigger::new(instance_kind, ns, name)];
    if let Some(group) = label(meta, labels::GROUP) {
        out.push(Trigger::new(group_kind, ns, group));
    }
    out.push(Trigger::new(Kind::Cluster, ns, cluster));
    out
}

/// Triggers of a changed group: itself and its Cluster.
pub fn for_group(meta: &ObjectMeta, cluster: &str, component: Component) -> Vec<Trigger> {
    let (Some(ns), Some(name)) = (meta.namespace.as_deref(), meta.name.as_deref()) else {
        return Vec::new();
    };
    vec![
        Trigger::new(component.kinds().0, ns, name),
        Trigger::new(Kind::Cluster, ns, cluster),
    ]
}

/// Triggers of a changed Cluster: itself, every group and every instance of
/// it (`paused`, `suspendCompute`, deletion, `status.pd` and the recorded PD
/// cluster id change what they do).
pub fn for_cluster(namespace: &str, name: &str, objects: &ClusterObjects) -> Vec<Trigger> {
    let mut out = vec![Trigger::new(Kind::Cluster, namespace, name)];
    out.extend(objects.triggers(namespace, true));
    out
}

/// Triggers of a PD state change in one Cluster: the Cluster, every group,
/// the PD instances whose member changed (presence, health, leadership;
/// every member when reachability changed) and the TiKV instances whose
/// store changed.
pub fn for_pd_state(
    namespace: &str,
    cluster: &str,
    changed_members: &BTreeSet<String>,
    changed_tikv: &BTreeSet<String>,
    objects: &ClusterObjects,
) -> Vec<Trigger> {
    let mut out = vec![Trigger::new(Kind::Cluster, namespace, cluster)];
    out.extend(objects.triggers(namespace, false));
    // A PD member is named after its instance.
    out.extend(
        objects
            .pd_instances
            .iter()
            .filter(|i| changed_members.contains(*i))
            .map(|i| Trigger::new(Kind::Pd, namespace, i)),
    );
    out.extend(
        objects
            .tikv_instances
            .iter()
            .filter(|i| changed_tikv.contains(*i))
            .map(|i| Trigger::new(Kind::Tikv, namespace, i)),
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
    fn a_tikv_pod_wakes_its_tikv_instance_and_group() {
        let mut l = PD_POD.to_vec();
        l[1] = (labels::COMPONENT, labels::COMPONENT_TIKV);
        l[3] = (labels::GROUP, "tikv");
        l[4] = (labels::INSTANCE, "tikv-x");
        assert_eq!(
            for_child(&meta(Some("ns"), "tikv-x", &l)),
            vec![
                Trigger::new(Kind::Tikv, "ns", "tikv-x"),
                Trigger::new(Kind::TikvGroup, "ns", "tikv"),
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
            for_instance(&i, "basic", Component::Pd),
            vec![
                Trigger::new(Kind::Pd, "ns", "pd-abc123"),
                Trigger::new(Kind::PdGroup, "ns", "pd"),
                Trigger::new(Kind::Cluster, "ns", "basic"),
            ]
        );
        let g = meta(Some("ns"), "pd", &[]);
        assert_eq!(
            for_group(&g, "basic", Component::Pd),
            vec![
                Trigger::new(Kind::PdGroup, "ns", "pd"),
                Trigger::new(Kind::Cluster, "ns", "basic"),
            ]
        );
    }

    #[test]
    fn a_cluster_wakes_everything_below_it() {
        let objects = ClusterObjects {
            pd_groups: vec!["pd".into()],
            pd_instances: vec!["pd-a".into(), "pd-b".into()],
            tikv_groups: vec!["tikv".into()],
            tikv_instances: vec!["tikv-a".into()],
        };
        let t = for_cluster("ns", "basic", &objects);
        assert_eq!(t.len(), 6);
        assert!(t.contains(&Trigger::new(Kind::Pd, "ns", "pd-b")));
        assert!(t.contains(&Trigger::new(Kind::TikvGroup, "ns", "tikv")));
        assert!(t.contains(&Trigger::new(Kind::Tikv, "ns", "tikv-a")));
    }

    #[test]
    fn a_pd_state_change_wakes_only_the_changed_members() {
        let changed = BTreeSet::from(["pd-b".to_owned(), "gone".to_owned()]);
        let changed_tikv = BTreeSet::from(["tikv-b".to_owned()]);
        let objects = ClusterObjects {
            pd_groups: vec!["pd".into()],
            pd_instances: vec!["pd-a".into(), "pd-b".into()],
            tikv_groups: vec!["tikv".into()],
            tikv_instances: vec!["tikv-a".into(), "tikv-b".into()],
        };
        let t = for_pd_state("ns", "basic", &changed, &changed_tikv, &objects);
        assert_eq!(
            t,
            vec![
                Trigger::new(Kind::Cluster, "ns", "basic"),
                Trigger::new(Kind::PdGroup, "ns", "pd"),
                Trigger::new(Kind::TikvGroup, "ns", "tikv"),
                Trigger::new(Kind::Pd, "ns", "pd-b"),
                Trigger::new(Kind::Tikv, "ns", "tikv-b"),
            ]
        );
    }
}
