//! The test world shared by the TiKV-layer reconciler tests: the fake
//! Kubernetes writer (whose stored objects play the watch caches), the fake
//! PD and a fake clock, driven like the controllers drive the reconcilers.
#![allow(clippy::unwrap_used, dead_code, unreachable_pub, unused_imports)]

pub use std::collections::BTreeMap;
pub use std::sync::Arc;
pub use std::time::Duration;

pub use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Pod, Service};
pub use pd_client::{FakeOp, FakePd, PdApi, ReplicationConfig, StoreId};
pub use serde_json::{Value, json};
pub use tikv_operator_api::common::condition;
pub use tikv_operator_api::tikv::StoreState as ApiStoreState;
pub use tikv_operator_api::{TiKV, TiKVGroup, labels};
pub use tikv_operator_core::component::naming::SuffixSource;
pub use tikv_operator_core::conditions;
pub use tikv_operator_core::fake::{FakeClock, FakeKube, KubeCall, KubeOp};
pub use tikv_operator_core::{KubeWriter, ObjectKey, Requeue, RequeuePolicy};
pub use tikv_operator_tikv_layer::reconcile::{
    ClusterFacts, Ctx, EvictionGate, GroupSnapshot, InstanceSnapshot, Options, RegionHealth,
    needs_region_health, reconcile_group, reconcile_instance,
};
pub use tikv_operator_tikv_layer::{StoreView, reasons};

pub const NS: &str = "ns";
pub const PD_URL: &str = "http://pd-pd.ns.svc:2379";
pub const ZONE: &str = "topology.kubernetes.io/zone";

#[derive(Default)]
pub struct Counter(pub u32);
impl SuffixSource for Counter {
    fn next_suffix(&mut self) -> String {
        self.0 += 1;
        format!("s{:05}", self.0)
    }
}

pub struct World {
    pub kube: FakeKube,
    pub pd: FakePd,
    pub clock: FakeClock,
    pub ctx: Ctx,
    pub suffixes: Counter,
    pub cluster: ClusterFacts,
    pub options: Options,
    pub next_store: u64,
    /// Instances (and their stores) whose Pod and PVC must not disappear
    /// before the store is Removed: checked after every reconcile and every
    /// PD tick of [`World::round`].
    pub watched: Vec<(String, StoreId)>,
    /// Pod uids handed out by the simulated kubelet.
    pub uids: u64,
    /// Most stores that may be disrupted at once (rolling tests).
    pub max_disrupted: usize,
    /// Most stores seen disrupted at once (rolling tests).
    pub most_disrupted: usize,
    /// Instances whose new Pod's process has not registered its store yet.
    pub booting: Vec<(String, u32)>,
    /// The uid of each instance's Pod the simulated kubelet last saw.
    pub pod_uids: BTreeMap<String, String>,
    /// The Cluster's eviction gate, as the controller shares it.
    pub eviction_gate: EvictionGate,
}

pub fn group_key() -> ObjectKey {
    ObjectKey::new::<TiKVGroup>(Some(NS), "kv")
}

pub fn kv_key(name: &str) -> ObjectKey {
    ObjectKey::new::<TiKV>(Some(NS), name)
}

pub fn pod_key(name: &str) -> ObjectKey {
    ObjectKey::new::<Pod>(Some(NS), name)
}

pub fn pvc_key(name: &str) -> ObjectKey {
    ObjectKey::new::<PersistentVolumeClaim>(Some(NS), &format!("data-{name}"))
}

/// The node every Pod of zone `z` lands on.
pub fn node_labels(zone: &str) -> BTreeMap<String, String> {
    [
        (ZONE.to_owned(), zone.to_owned()),
        ("kubernetes.io/hostname".to_owned(), format!("node-{zone}")),
    ]
    .into()
}

impl World {
    pub fn new(replicas: i32) -> Self {
        let kube = FakeKube::new();
        kube.insert(
            group_key(),
            json!({
                "apiVersion": "core.tikv.org/v1alpha1",
                "kind": "TiKVGroup",
                "metadata": {"name": "kv", "namespace": NS, "uid": "group-uid", "generation": 1},
                "spec": {
                    "cluster": {"name": "basic"},
                    "replicas": replicas,
                    "schedulePolicies": [{"type": "EvenlySpread", "evenlySpread": {"topologies": [
                        {"topology": {ZONE: "a"}}, {"topology": {ZONE: "b"}}, {"topology": {ZONE: "c"}}
                    ]}}],
                    "template": {"spec": {
                        "version": "v8.5.5",
                        "server": {"labels": {"disk": "ssd"}},
                        "volumes": [{"name": "data", "mounts": [{"type": "data"}], "storage": "1Gi"}]
                    }}
                }
            }),
        );
        let clock = FakeClock::default();
        let ctx = Ctx {
            kube: Arc::new(kube.clone()),
            clock: Arc::new(clock.clone()),
            policy: RequeuePolicy::default(),
        };
        let pd = FakePd::with_cluster(3, 0);
        pd.set_replication(ReplicationConfig {
            max_replicas: 3,
            location_labels: vec!["zone".into(), "host".into()],
        });
        Self {
            kube,
            pd,
            clock,
            ctx,
            suffixes: Counter::default(),
            cluster: ClusterFacts {
                pd_url: Some(PD_URL.into()),
                ..ClusterFacts::default()
            },
            options: Options::default(),
            next_store: 1,
            watched: Vec::new(),
            uids: 0,
            max_disrupted: 1,
            most_disrupted: 0,
            booting: Vec::new(),
            pod_uids: BTreeMap::new(),
            eviction_gate: EvictionGate::default(),
        }
    }

    pub fn group(&self) -> TiKVGroup {
        self.kube.get_typed(&group_key()).unwrap()
    }

    pub fn set_replicas(&self, n: i32) {
        let mut g = self.kube.get(&group_key()).unwrap();
        g["spec"]["replicas"] = n.into();
        self.kube.insert(group_key(), g);
    }

    pub fn instance(&self, name: &str) -> Option<TiKV> {
        self.kube.get_typed(&kv_key(name))
    }

    pub fn instances(&self) -> Vec<TiKV> {
        self.kube.list("TiKV", NS)
    }

    pub fn instance_names(&self) -> Vec<String> {
        self.instances()
            .iter()
            .map(|i| i.metadata.name.clone().unwrap())
            .collect()
    }

    pub async fn view(&self) -> StoreView {
        StoreView::observe(&self.pd).await
    }

    pub async fn reconcile_group(&mut self) -> Requeue {
        self.reconcile_group_named("kv").await
    }

    /// Adds another TiKVGroup of the same Cluster (heterogeneous stores).
    pub fn add_group(&self, name: &str, replicas: i32, disk: &str) {
        let mut g = self.kube.get(&group_key()).unwrap();
        g["metadata"]["name"] = name.into();
        g["metadata"]["uid"] = format!("{name}-uid").into();
        g["spec"]["replicas"] = replicas.into();
        g["spec"]["template"]["spec"]["server"]["labels"]["disk"] = disk.into();
        self.kube
            .insert(ObjectKey::new::<TiKVGroup>(Some(NS), name), g);
    }

    pub async fn reconcile_group_named(&mut self, name: &str) -> Requeue {
        let group: TiKVGroup = self
            .kube
            .get_typed(&ObjectKey::new::<TiKVGroup>(Some(NS), name))
            .unwrap();
        let (instances, others): (Vec<TiKV>, Vec<TiKV>) = self
            .instances()
            .into_iter()
            .partition(|i| i.metadata.labels.as_ref().unwrap()[labels::GROUP] == name);
        let pods: Vec<Pod> = self.kube.list("Pod", NS);
        let services: Vec<Service> = self.kube.list("Service", NS);
        let revisions: Vec<k8s_openapi::api::apps::v1::ControllerRevision> =
            self.kube.list("ControllerRevision", NS);
        let view = self.view().await;
        let regions = if needs_region_health(&instances, &view) {
            RegionHealth::observe(&self.pd).await
        } else {
            RegionHealth::NotRead
        };
        let snap = GroupSnapshot {
            group: &group,
            cluster: &self.cluster,
            instances: &instances,
            pods: &pods,
            others: &others,
            other_pods: &pods,
            revisions: &revisions,
            services: &services,
            pd: &view,
            regions: &regions,
        };
        reconcile_group(&self.ctx, &snap, &mut self.suffixes)
            .await
            .unwrap()
    }

    pub async fn reconcile_instance(&self, name: &str) {
        self.try_reconcile_instance(name).await.unwrap();
    }

    pub async fn try_reconcile_instance(&self, name: &str) -> tikv_operator_core::Result<()> {
        let view = self.view().await;
        self.reconcile_instance_on(name, &view).await
    }

    /// Reconciles `name` on a PD view read earlier (what a reconcile that
    /// runs at the same moment as another one sees).
    pub async fn reconcile_instance_on(
        &self,
        name: &str,
        view: &StoreView,
    ) -> tikv_operator_core::Result<()> {
        let Some(instance) = self.instance(name) else {
            return Ok(());
        };
        let pod: Option<Pod> = self.kube.get_typed(&pod_key(name));
        let cm: Option<ConfigMap> = self
            .kube
            .get_typed(&ObjectKey::new::<ConfigMap>(Some(NS), name));
        let pvcs: Vec<PersistentVolumeClaim> = self
            .kube
            .list::<PersistentVolumeClaim>("PersistentVolumeClaim", NS)
            .into_iter()
            .filter(|p| p.metadata.labels.as_ref().unwrap()[labels::INSTANCE] == name)
            .collect();
        let node = pod.as_ref().and_then(|_| {
            instance
                .spec
                .topology
                .as_ref()
                .map(|t| node_labels(&t[ZONE]))
        });
        // Its group's maxUnavailable, as the controller passes it.
        let group = instance.metadata.labels.as_ref().unwrap()[labels::GROUP].clone();
        let max_unavailable = self
            .kube
            .get_typed::<TiKVGroup>(&ObjectKey::new::<TiKVGroup>(Some(NS), &group))
            .and_then(|g| g.spec.max_unavailable)
            .map_or(1, |m| usize::try_from(m.max(1)).unwrap());
        let snap = InstanceSnapshot {
            instance: &instance,
            max_unavailable,
            cluster: &self.cluster,
            pod: pod.as_ref(),
            node_labels: node.as_ref(),
            config_map: cm.as_ref(),
            pvcs: &pvcs,
            pd: view,
            options: self.options,
            eviction_gate: &self.eviction_gate,
        };
        reconcile_instance(&self.ctx, &snap, &self.pd)
            .await
            .map(|_| ())
    }

    pub async fn reconcile_all_instances(&self) {
        for name in self.instance_names() {
            self.reconcile_instance(&name).await;
        }
    }

    /// What the kubelet and TiKV would do: every Pod runs and is Ready, and
    /// its store registers in PD with the address and labels of its config.
    pub fn run_pods(&mut self) {
        for pod in self.kube.list::<Value>("Pod", NS) {
            let name = pod["metadata"]["name"].as_str().unwrap().to_owned();
            let mut pod = pod.clone();
            pod["status"] = json!({"conditions": [{"type": "Ready", "status": "True"}]});
            self.kube.insert(pod_key(&name), pod);
            let cm: ConfigMap = self
                .kube
                .get_typed(&ObjectKey::new::<ConfigMap>(Some(NS), &name))
                .unwrap();
            let cfg: toml::Table = cm.data.unwrap()["tikv.toml"].parse().unwrap();
            assert_eq!(cfg["pd"]["endpoints"][0].as_str(), Some(PD_URL));
            let address = cfg["server"]["advertise-addr"].as_str().unwrap().to_owned();
            let known = (1..self.next_store).any(|id| {
                self.pd
                    .store_snapshot(StoreId(id))
                    .is_some_and(|s| s.address == address)
            });
            if !known {
                let id = StoreId(self.next_store);
                self.next_store += 1;
                self.pd.add_store(id, &address);
                self.pd.set_store_counts(id, 20, 10);
            }
        }
        self.pd.tick();
    }

    /// A group of `n` serving stores.
    pub async fn serving(n: i32) -> Self {
        let mut w = Self::new(n);
        w.reconcile_group().await;
        w.reconcile_all_instances().await;
        w.run_pods();
        w.reconcile_all_instances().await;
        w.reconcile_group().await;
        assert_eq!(w.pd.stores().await.unwrap().len(), n as usize);
        w
    }

    pub fn group_condition(&self, type_: &str) -> (String, String, String) {
        let g = self.group();
        let c = conditions::find(&g.status.as_ref().unwrap().common.conditions, type_)
            .unwrap()
            .clone();
        (c.status, c.reason, c.message)
    }

    pub fn instance_condition(&self, name: &str, type_: &str) -> Option<(String, String)> {
        let i = self.instance(name)?;
        conditions::find(&i.status.as_ref()?.common.conditions, type_)
            .map(|c| (c.status.clone(), c.reason.clone()))
    }

    pub fn offline_instances(&self) -> Vec<String> {
        self.instances()
            .into_iter()
            .filter(|i| i.spec.offline)
            .map(|i| i.metadata.name.unwrap())
            .collect()
    }

    pub fn store_of(&self, name: &str) -> StoreId {
        StoreId(
            self.instance(name)
                .unwrap()
                .status
                .unwrap()
                .id
                .unwrap()
                .parse()
                .unwrap(),
        )
    }

    pub fn deletes(&self) -> Vec<ObjectKey> {
        self.kube
            .calls()
            .into_iter()
            .filter_map(|c| match c {
                KubeCall::Delete(k) => Some(k),
                _ => None,
            })
            .collect()
    }

    pub fn event_reasons(&self) -> Vec<String> {
        self.kube.events().into_iter().map(|e| e.reason).collect()
    }

    /// Safety rule 1, checked after every step: a Pod or PVC of an instance
    /// exists unless its store is Removed in PD.
    pub fn assert_nothing_deleted_before_tombstone(&self, name: &str, store: StoreId) {
        let removed = self.pd.store_snapshot(store).is_none_or(|s| s.is_removed());
        if !removed {
            assert!(
                self.kube.get(&pod_key(name)).is_some(),
                "Pod of {name} gone while store {store} is not removed"
            );
            assert!(
                self.kube.get(&pvc_key(name)).is_some(),
                "PVC of {name} gone while store {store} is not removed"
            );
        }
    }

    pub fn watch(&mut self, name: &str) -> StoreId {
        let store = self.store_of(name);
        self.watched.push((name.to_owned(), store));
        store
    }

    pub async fn watch_after_register(&mut self, name: &str) -> StoreId {
        self.reconcile_instance(name).await;
        self.watch(name)
    }

    pub fn check_watched(&self) {
        for (name, store) in &self.watched {
            self.assert_nothing_deleted_before_tombstone(name, *store);
        }
    }

    /// One round: group, instances, PD's background work, time; the
    /// watched instances are checked after each part.
    pub async fn round(&mut self) {
        self.reconcile_group().await;
        self.check_watched();
        for name in self.instance_names() {
            self.reconcile_instance(&name).await;
            self.check_watched();
        }
        self.pd.tick();
        self.check_watched();
        self.clock.advance(Duration::from_secs(5));
    }
}
