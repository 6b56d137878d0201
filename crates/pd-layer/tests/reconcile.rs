//! Reconciler tests: the PD-layer reconcilers against the fake Kubernetes
//! writer (whose stored objects play the watch caches) and the fake PD.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Pod, Service};
use pd_client::{FakeOp, FakePd};
use serde_json::{Value, json};
use tikv_operator_api::common::condition;
use tikv_operator_api::{PD, PDGroup, labels};
use tikv_operator_core::component::naming::SuffixSource;
use tikv_operator_core::conditions;
use tikv_operator_core::failover::reasons as fo_reasons;
use tikv_operator_core::fake::pki::TestCa;
use tikv_operator_core::fake::{FakeClock, FakeKube, KubeCall, KubeOp};
use tikv_operator_core::{KubeWriter, ObjectKey, Requeue, RequeuePolicy, tls};
use tikv_operator_pd_layer::pd_view::Membership;
use tikv_operator_pd_layer::reconcile::{
    ClusterFacts, Ctx, GroupSnapshot, InstanceSnapshot, reconcile_group, reconcile_instance,
};
use tikv_operator_pd_layer::{PdView, reasons};

const NS: &str = "ns";

#[derive(Default)]
struct Counter(u32);
impl SuffixSource for Counter {
    fn next_suffix(&mut self) -> String {
        self.0 += 1;
        format!("s{:05}", self.0)
    }
}

struct World {
    kube: FakeKube,
    pd: FakePd,
    clock: FakeClock,
    ctx: Ctx,
    suffixes: Counter,
    cluster: ClusterFacts,
    /// The Cluster's PDGroup as the controller would pass it.
    cluster_pd_group: Option<String>,
    /// When the PD view the reconcilers get was read (`None`: unknown).
    observed_at: Option<k8s_openapi::jiff::Timestamp>,
}

fn group_key() -> ObjectKey {
    ObjectKey::new::<PDGroup>(Some(NS), "pd")
}

fn pd_key(name: &str) -> ObjectKey {
    ObjectKey::new::<PD>(Some(NS), name)
}

fn pod_key(name: &str) -> ObjectKey {
    ObjectKey::new::<Pod>(Some(NS), name)
}

impl World {
    fn new(replicas: i32, config: Option<&str>) -> Self {
        let kube = FakeKube::new();
        let mut spec = json!({
            "version": "v8.5.5",
            "volumes": [{"name": "data", "mounts": [{"type": "data"}], "storage": "1Gi"}]
        });
        if let Some(c) = config {
            spec["config"] = c.into();
        }
        kube.insert(
            group_key(),
            json!({
                "apiVersion": "core.tikv.org/v1alpha1",
                "kind": "PDGroup",
                "metadata": {"name": "pd", "namespace": NS, "uid": "group-uid", "generation": 1},
                "spec": {"cluster": {"name": "basic"}, "replicas": replicas, "template": {"spec": spec}}
            }),
        );
        let clock = FakeClock::default();
        let ctx = Ctx {
            kube: Arc::new(kube.clone()),
            clock: Arc::new(clock.clone()),
            policy: RequeuePolicy::default(),
        };
        Self {
            kube,
            pd: FakePd::default(),
            clock,
            ctx,
            suffixes: Counter::default(),
            cluster: ClusterFacts::default(),
            cluster_pd_group: None,
            observed_at: None,
        }
    }

    fn group(&self) -> PDGroup {
        self.kube.get_typed(&group_key()).unwrap()
    }

    fn set_replicas(&self, n: i32) {
        let mut g = self.kube.get(&group_key()).unwrap();
        g["spec"]["replicas"] = n.into();
        self.kube.insert(group_key(), g);
    }

    fn instances(&self) -> Vec<PD> {
        self.kube.list("PD", NS)
    }

    fn instance_names(&self) -> Vec<String> {
        self.instances()
            .iter()
            .map(|i| i.metadata.name.clone().unwrap())
            .collect()
    }

    async fn view(&self) -> PdView {
        match PdView::observe(&self.pd).await {
            PdView::Reachable(m) => PdView::Reachable(Membership {
                observed_at: self.observed_at,
                ..m
            }),
            other => other,
        }
    }

    async fn reconcile_group(&mut self) -> Requeue {
        let instances = self.instances();
        let pods: Vec<Pod> = self.kube.list("Pod", NS);
        self.reconcile_group_on(instances, pods).await
    }

    /// A group reconcile on caches that show `instances` and `pods` (possibly
    /// older than the objects).
    async fn reconcile_group_on(&mut self, instances: Vec<PD>, pods: Vec<Pod>) -> Requeue {
        let group = self.group();
        let services: Vec<Service> = self.kube.list("Service", NS);
        let revisions: Vec<k8s_openapi::api::apps::v1::ControllerRevision> =
            self.kube.list("ControllerRevision", NS);
        let view = self.view().await;
        let snap = GroupSnapshot {
            group: &group,
            cluster: self.cluster.clone(),
            instances: &instances,
            pods: &pods,
            services: &services,
            revisions: &revisions,
            pd: &view,
            cluster_pd_group: self.cluster_pd_group.as_deref(),
        };
        reconcile_group(&self.ctx, &snap, &self.pd, &mut self.suffixes)
            .await
            .unwrap()
    }

    async fn reconcile_instance(&self, name: &str) {
        let Some(instance) = self.kube.get_typed::<PD>(&pd_key(name)) else {
            return;
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
        let view = self.view().await;
        let snap = InstanceSnapshot {
            instance: &instance,
            cluster: self.cluster.clone(),
            pod: pod.as_ref(),
            config_map: cm.as_ref(),
            pvcs: &pvcs,
            pd: &view,
        };
        reconcile_instance(&self.ctx, &snap, &self.pd)
            .await
            .unwrap();
    }

    async fn reconcile_all_instances(&self) {
        for name in self.instance_names() {
            self.reconcile_instance(&name).await;
        }
    }

    /// What the kubelet and PD would do: every Pod that exists runs and is
    /// Ready, and is (or becomes) a PD member.
    fn run_pods(&self) {
        for pod in self.kube.list::<Value>("Pod", NS) {
            let name = pod["metadata"]["name"].as_str().unwrap().to_owned();
            let mut pod = pod.clone();
            // The fake PD knows a member's Pod by the member name as its host.
            pod["status"] = json!({
                "conditions": [{"type": "Ready", "status": "True"}],
                "podIP": name,
            });
            self.kube.insert(pod_key(&name), pod);
            if !self.pd.member_names().contains(&name) {
                self.pd.add_member(&name);
            }
        }
    }

    /// Brings up a bootstrapped group of `n` ready members.
    async fn bootstrapped(n: i32) -> Self {
        let mut w = Self::new(n, None);
        w.reconcile_group().await;
        w.reconcile_all_instances().await;
        w.run_pods();
        w.reconcile_group().await;
        w.reconcile_all_instances().await;
        assert_eq!(w.pd.member_names().len(), n as usize);
        // What the Cluster reconciler records once PD answers.
        w.cluster.pd_cluster_id_known = true;
        w
    }

    fn condition(&self, type_: &str) -> (String, String) {
        let g = self.group();
        let c = conditions::find(&g.status.as_ref().unwrap().common.conditions, type_)
            .unwrap()
            .clone();
        (c.status, c.reason)
    }

    /// Asks for a rolling restart of the group (the restart annotation).
    fn request_restart(&self) {
        let mut g = self.kube.get(&group_key()).unwrap();
        g["metadata"]["annotations"] = json!({ (labels::RESTARTED_AT): "now" });
        self.kube.insert(group_key(), g);
    }

    /// Members whose Pod is gone (deleted for a restart, not recreated yet).
    fn missing_pods(&self) -> Vec<String> {
        self.instance_names()
            .into_iter()
            .filter(|n| self.kube.get(&pod_key(n)).is_none())
            .collect()
    }

    /// Reconciles until a member's Pod is deleted for a restart (a
    /// leadership transfer may come first); that member, if any.
    async fn next_restart(&mut self) -> Option<String> {
        for _ in 0..4 {
            self.reconcile_group().await;
            if let Some(n) = self.missing_pods().pop() {
                return Some(n);
            }
            self.reconcile_all_instances().await;
        }
        None
    }

    fn deletes(&self) -> Vec<ObjectKey> {
        self.kube
            .calls()
            .into_iter()
            .filter_map(|c| match c {
                KubeCall::Delete(k) => Some(k),
                _ => None,
            })
            .collect()
    }
}

#[tokio::test]
async fn bootstrap_creates_initial_members_then_joins_one_at_a_time() {
    let mut w = World::new(3, Some("[replication]\nmax-replicas = 3\n"));
    w.reconcile_group().await;
    let instances = w.instances();
    assert_eq!(instances.len(), 3);
    for i in &instances {
        let members =
            i.metadata.annotations.as_ref().unwrap()[labels::PD_BOOTSTRAP_MEMBERS].clone();
        assert_eq!(members.split(',').count(), 3);
    }
    assert!(
        w.kube
            .get(&ObjectKey::new::<Service>(Some(NS), "pd-pd-peer"))
            .is_some()
    );
    assert!(
        w.kube
            .get(&ObjectKey::new::<Service>(Some(NS), "pd-pd"))
            .is_some()
    );
    assert_eq!(w.condition(condition::PROGRESSING).0, "True");

    // PD not formed yet: the group waits (status says so), and once that is
    // reported, a reconcile with nothing new writes nothing.
    w.reconcile_group().await;
    w.kube.clear_calls();
    w.reconcile_group().await;
    assert_eq!(w.kube.calls(), vec![], "an idle reconcile must not write");
    assert_eq!(
        w.condition(condition::PROGRESSING).1,
        reasons::WAITING_FOR_BOOTSTRAP
    );

    // Instances render their objects; bootstrap members start with initial-cluster.
    w.reconcile_all_instances().await;
    let name = &w.instance_names()[0];
    let cm: ConfigMap = w
        .kube
        .get_typed(&ObjectKey::new::<ConfigMap>(Some(NS), name))
        .unwrap();
    let toml = &cm.data.unwrap()["pd.toml"];
    assert!(toml.contains("initial-cluster = "), "{toml}");
    assert!(toml.contains("max-replicas = 3"), "{toml}");
    // A second pass over unchanged instances writes nothing but status.
    w.kube.clear_calls();
    w.reconcile_all_instances().await;
    assert!(
        w.kube.calls().iter().all(|c| c.op() == KubeOp::PatchStatus),
        "{:?}",
        w.kube.calls()
    );

    // PD forms; scale out to 5 joins one member at a time.
    w.run_pods();
    w.set_replicas(5);
    w.reconcile_group().await;
    assert_eq!(w.instances().len(), 4);
    w.reconcile_group().await;
    assert_eq!(w.instances().len(), 4, "the 4th member is not ready yet");
    let joining: Vec<PD> = w
        .instances()
        .into_iter()
        .filter(|i| {
            !i.metadata
                .annotations
                .as_ref()
                .is_some_and(|a| a.contains_key(labels::PD_BOOTSTRAP_MEMBERS))
        })
        .collect();
    assert_eq!(joining.len(), 1);
    let jname = joining[0].metadata.name.clone().unwrap();
    w.reconcile_instance(&jname).await;
    let cm: ConfigMap = w
        .kube
        .get_typed(&ObjectKey::new::<ConfigMap>(Some(NS), &jname))
        .unwrap();
    assert!(cm.data.unwrap()["pd.toml"].contains("join = \"http://pd-pd-peer.ns.svc:2379\""));
    w.run_pods();
    w.reconcile_group().await;
    assert_eq!(w.instances().len(), 5);
    w.reconcile_all_instances().await;
    w.run_pods();
    w.reconcile_group().await;
    assert_eq!(w.condition(condition::READY).0, "True");
    let st = w.group().status.unwrap();
    assert_eq!((st.group.replicas, st.group.ready_replicas), (5, 5));
}

#[tokio::test]
async fn scale_in_removes_the_member_through_pd_before_deleting_pod_and_pvcs() {
    let mut w = World::bootstrapped(3).await;
    let leader = w.pd.leader_name().unwrap();
    w.set_replicas(2);
    w.kube.clear_calls();
    w.reconcile_group().await;
    let deleted = w.deletes();
    assert_eq!(deleted.len(), 1);
    let victim = deleted[0].name.clone();
    assert_ne!(victim, leader, "the leader is not chosen when avoidable");
    // One removal at a time.
    w.kube.clear_calls();
    w.reconcile_group().await;
    assert!(w.deletes().is_empty());

    // Drive the instance's finalizer; at every step the Pod exists while PD
    // still lists the member.
    for _ in 0..10 {
        if w.kube.get(&pd_key(&victim)).is_none() {
            break;
        }
        w.reconcile_instance(&victim).await;
        if w.pd.member_names().contains(&victim) {
            assert!(w.kube.get(&pod_key(&victim)).is_some());
        }
    }
    assert!(w.kube.get(&pd_key(&victim)).is_none(), "finalizer dropped");
    assert!(w.kube.get(&pod_key(&victim)).is_none());
    assert!(
        w.kube
            .get(&ObjectKey::new::<PersistentVolumeClaim>(
                Some(NS),
                &format!("data-{victim}")
            ))
            .is_none()
    );
    assert_eq!(w.pd.member_names().len(), 2);
    w.reconcile_group().await;
    assert_eq!(w.condition(condition::PROGRESSING).0, "False");
}

/// The API server refuses Events in a namespace being deleted (and may refuse them at any
/// time); an Event is information, so a refused one never fails a PD reconcile or keeps a
/// member's removal from finishing (the harness fails on any reconcile error).
#[tokio::test]
async fn refused_events_do_not_stop_a_pd_scale_in() {
    let mut w = World::bootstrapped(3).await;
    w.set_replicas(2);
    for _ in 0..100 {
        w.kube.fail_next(
            KubeOp::PublishEvent,
            "unable to create new content in namespace because it is being terminated",
        );
    }
    for _ in 0..6 {
        w.reconcile_group().await;
        w.reconcile_all_instances().await;
    }
    assert_eq!(w.instance_names().len(), 2, "{:?}", w.instance_names());
    assert_eq!(w.pd.member_names().len(), 2);
}

/// Safety rule 3: a new member that PD's etcd lists before its process
/// started has no name. Scaling back in (or deleting the instance) must remove
/// that member, found by its peer URL and removed by id, before its Pod and
/// PVCs go; otherwise PD keeps a member that never starts (4 members, 3
/// healthy: one more failure loses quorum).
#[tokio::test]
async fn a_member_added_but_never_started_is_removed_from_pd_before_its_pod() {
    let mut w = World::bootstrapped(3).await;
    let before = w.instance_names();
    w.set_replicas(4);
    w.reconcile_group().await;
    let new: Vec<String> = w
        .instance_names()
        .into_iter()
        .filter(|n| !before.contains(n))
        .collect();
    assert_eq!(new.len(), 1);
    let new = new[0].clone();
    w.reconcile_instance(&new).await;
    assert!(w.kube.get(&pod_key(&new)).is_some());
    // `--join` added the member; its process never started (no name).
    let instance: PD = w.kube.get_typed(&pd_key(&new)).unwrap();
    let member =
        w.pd.add_unstarted_member(&tikv_operator_pd_layer::render::member_peer_url(&instance));
    assert_eq!(w.pd.member_names().len(), 4);

    w.set_replicas(3);
    w.kube.clear_calls();
    w.reconcile_group().await;
    assert_eq!(
        w.deletes(),
        vec![pd_key(&new)],
        "the member that never started goes"
    );
    for _ in 0..10 {
        if w.kube.get(&pd_key(&new)).is_none() {
            break;
        }
        w.reconcile_instance(&new).await;
        if w.pd.member_names().len() == 4 {
            assert!(
                w.kube.get(&pod_key(&new)).is_some(),
                "the Pod stays while PD lists the member"
            );
        }
    }
    assert!(w.kube.get(&pd_key(&new)).is_none(), "finalizer dropped");
    assert_eq!(
        w.pd.member_names().len(),
        3,
        "the nameless member was removed"
    );
    assert!(
        w.pd.member_names().iter().all(|n| !n.is_empty()),
        "{:?}",
        w.pd.member_names()
    );
    assert!(
        !w.view()
            .await
            .membership()
            .unwrap()
            .members
            .iter()
            .any(|m| m.id == member)
    );
}

/// Safety rules 3 and 5: a PD instance deleted while its Cluster object is
/// missing (finalizer stripped by hand) keeps its member, Pod and PVC; only a
/// Cluster being deleted skips PD.
#[tokio::test]
async fn deleting_an_instance_whose_cluster_is_missing_deletes_nothing() {
    let mut w = World::bootstrapped(3).await;
    w.cluster = ClusterFacts::from_cluster(None);
    let victim = w
        .instance_names()
        .into_iter()
        .find(|n| Some(n) != w.pd.leader_name().as_ref())
        .unwrap();
    w.kube.clear_calls();
    w.kube.delete(&pd_key(&victim)).await.unwrap();
    for _ in 0..5 {
        w.reconcile_instance(&victim).await;
        w.reconcile_group().await;
    }
    assert!(w.pd.member_names().contains(&victim));
    assert!(w.kube.get(&pod_key(&victim)).is_some());
    assert!(
        w.kube.get(&pd_key(&victim)).is_some(),
        "the finalizer stays"
    );
    assert!(
        w.deletes().iter().all(|k| k.kind == "PD"),
        "{:?}",
        w.deletes()
    );
    assert!(!w.pd.calls().contains(&FakeOp::RemoveMember));
}

/// Safety rule 7: a Cluster has one PD cluster. A PDGroup that is not the
/// Cluster's PDGroup (another, older one serves it) creates nothing and says
/// why; the same group as the Cluster's PDGroup bootstraps.
#[tokio::test]
async fn a_second_pd_group_of_a_cluster_creates_nothing() {
    let mut w = World::new(3, None);
    w.cluster_pd_group = Some("pd-main".into());
    w.reconcile_group().await;
    w.reconcile_group().await;
    assert!(w.instance_names().is_empty(), "{:?}", w.instance_names());
    let (_, reason) = w.condition(condition::PROGRESSING);
    assert_eq!(reason, reasons::DUPLICATE_PD_GROUP);
    w.cluster_pd_group = Some("pd".into());
    w.reconcile_group().await;
    assert_eq!(w.instance_names().len(), 3);
}

/// Safety rule 7: a bootstrap planned again on a view that does not show the
/// first one's writes (its create committed but the answer was lost, or the
/// cache lags) names the same initial members: applying them again creates
/// no second initial set.
#[tokio::test]
async fn a_bootstrap_retried_on_a_stale_view_creates_no_second_set() {
    let mut w = World::new(3, None);
    w.reconcile_group().await;
    let first = w.instance_names();
    assert_eq!(first.len(), 3);
    w.reconcile_group_on(vec![], vec![]).await;
    w.reconcile_group_on(vec![], vec![]).await;
    assert_eq!(
        w.instance_names(),
        first,
        "the same three members, no others"
    );
}

/// A PD Pod lost while its member is being removed is not recreated (the
/// member may already be gone from PD while the view still lists it); the
/// removal goes on, since an unhealthy member may be removed.
#[tokio::test]
async fn a_pod_lost_while_its_member_is_being_removed_is_not_recreated() {
    let w = World::bootstrapped(3).await;
    let leader = w.pd.leader_name().unwrap();
    let victim = w
        .instance_names()
        .into_iter()
        .find(|n| *n != leader)
        .unwrap();
    w.kube.delete(&pd_key(&victim)).await.unwrap();
    w.kube.remove(&pod_key(&victim));
    w.pd.set_member_healthy(&victim, false);
    for _ in 0..5 {
        w.reconcile_instance(&victim).await;
        assert!(w.kube.get(&pod_key(&victim)).is_none(), "not recreated");
        if w.kube.get(&pd_key(&victim)).is_none() {
            break;
        }
    }
    assert!(
        !w.pd.member_names().contains(&victim),
        "the member was removed"
    );
    assert!(
        w.kube.get(&pd_key(&victim)).is_none(),
        "the finalizer was dropped"
    );
}

#[tokio::test]
async fn deleting_the_leaders_instance_transfers_leadership_first() {
    let w = World::bootstrapped(3).await;
    let leader = w.pd.leader_name().unwrap();
    w.kube.delete(&pd_key(&leader)).await.unwrap();
    w.reconcile_instance(&leader).await;
    assert_ne!(w.pd.leader_name().unwrap(), leader);
    assert!(
        w.pd.member_names().contains(&leader),
        "not removed in the same step"
    );
    assert!(w.kube.get(&pod_key(&leader)).is_some());
    let calls = w.pd.calls();
    assert!(calls.contains(&FakeOp::TransferLeader));
    assert!(!calls.contains(&FakeOp::RemoveMember));
    w.reconcile_instance(&leader).await;
    assert!(!w.pd.member_names().contains(&leader));
}

#[tokio::test]
async fn nothing_destructive_happens_while_pd_is_unreachable() {
    let mut w = World::bootstrapped(3).await;
    w.pd.set_unreachable(true);
    w.set_replicas(2);
    w.kube.clear_calls();
    w.reconcile_group().await;
    assert!(w.deletes().is_empty());
    assert_eq!(
        w.condition(condition::PROGRESSING).1,
        reasons::PD_UNAVAILABLE
    );

    // Even an instance deleted by a user keeps its Pod, PVCs and member.
    let victim = w.instance_names()[1].clone();
    w.kube.delete(&pd_key(&victim)).await.unwrap();
    w.kube.clear_calls();
    for _ in 0..3 {
        w.reconcile_instance(&victim).await;
    }
    assert!(w.deletes().is_empty(), "{:?}", w.kube.calls());
    assert!(!w.pd.calls().contains(&FakeOp::RemoveMember));
    assert!(!w.pd.calls().contains(&FakeOp::TransferLeader));
    assert!(w.kube.get(&pod_key(&victim)).is_some());

    // PD comes back: the removal proceeds.
    w.pd.set_unreachable(false);
    for _ in 0..5 {
        w.reconcile_instance(&victim).await;
    }
    assert!(w.kube.get(&pd_key(&victim)).is_none());
}

#[tokio::test]
async fn scale_in_waits_while_another_member_is_unhealthy() {
    let w = World::bootstrapped(3).await;
    let names = w.pd.member_names();
    let leader = w.pd.leader_name().unwrap();
    let sick = names.iter().find(|n| **n != leader).unwrap().clone();
    w.pd.set_member_healthy(&sick, false);
    // A healthy non-leader instance is deleted by a user: it must stay a member.
    let other = names
        .iter()
        .find(|n| **n != leader && **n != sick)
        .unwrap()
        .clone();
    w.kube.delete(&pd_key(&other)).await.unwrap();
    for _ in 0..3 {
        w.reconcile_instance(&other).await;
    }
    assert!(w.pd.member_names().contains(&other));
    assert!(w.kube.get(&pod_key(&other)).is_some());
    let warnings: Vec<_> = w
        .kube
        .events()
        .into_iter()
        .filter(|e| e.reason == reasons::MEMBER_UNHEALTHY)
        .collect();
    assert!(!warnings.is_empty());
}

#[tokio::test]
async fn suspend_compute_deletes_pods_and_keeps_pvcs_and_config() {
    let mut w = World::bootstrapped(3).await;
    w.cluster.suspend_compute = true;
    w.reconcile_all_instances().await;
    for name in w.instance_names() {
        assert!(w.kube.get(&pod_key(&name)).is_none());
        assert!(
            w.kube
                .get(&ObjectKey::new::<ConfigMap>(Some(NS), &name))
                .is_some()
        );
        assert!(
            w.kube
                .get(&ObjectKey::new::<PersistentVolumeClaim>(
                    Some(NS),
                    &format!("data-{name}")
                ))
                .is_some()
        );
    }
    w.cluster.suspend_compute = false;
    w.reconcile_all_instances().await;
    for name in w.instance_names() {
        assert!(w.kube.get(&pod_key(&name)).is_some());
    }
}

#[tokio::test]
async fn an_owned_config_key_is_reported_not_overridden() {
    // The group refuses a template that sets an owned key: no member is
    // created with it, and the group says which key.
    let mut w = World::new(1, Some("name = \"mine\"\n"));
    w.reconcile_group().await;
    assert!(w.instance_names().is_empty(), "{:?}", w.instance_names());
    let g = w.group();
    let c = conditions::find(&g.status.unwrap().common.conditions, condition::SYNCED)
        .unwrap()
        .clone();
    assert_eq!(
        (c.status.as_str(), c.reason.as_str()),
        ("False", reasons::INVALID_CONFIG)
    );
    assert!(c.message.contains("name"), "{}", c.message);
    // An instance that carries such a config anyway (made by hand) renders
    // nothing and reports it too.
    let mut w = World::new(1, None);
    w.reconcile_group().await;
    let name = w.instance_names()[0].clone();
    let mut pd = w.kube.get(&pd_key(&name)).unwrap();
    pd["spec"]["config"] = "name = \"mine\"\n".into();
    w.kube.insert(pd_key(&name), pd);
    w.reconcile_instance(&name).await;
    assert!(w.kube.get(&pod_key(&name)).is_none());
    let pd: PD = w.kube.get_typed(&pd_key(&name)).unwrap();
    let c = conditions::find(&pd.status.unwrap().common.conditions, condition::SYNCED)
        .unwrap()
        .clone();
    assert_eq!(
        (c.status.as_str(), c.reason.as_str()),
        ("False", reasons::INVALID_CONFIG)
    );
}

#[tokio::test]
async fn scale_3_to_5_to_3_keeps_quorum_at_every_step() {
    let mut w = World::bootstrapped(3).await;
    let watch = |w: &World| {
        // The watcher: PD has a leader (quorum) and at most one instance is
        // being removed at any moment.
        assert!(w.pd.leader_name().is_some(), "quorum lost");
        let removing = w
            .instances()
            .iter()
            .filter(|i| i.metadata.deletion_timestamp.is_some())
            .count();
        assert!(removing <= 1, "{removing} removals at once");
    };
    w.set_replicas(5);
    let mut max_members = 0;
    for _ in 0..20 {
        w.reconcile_group().await;
        watch(&w);
        w.reconcile_all_instances().await;
        watch(&w);
        w.run_pods();
        max_members = max_members.max(w.pd.member_names().len());
        if w.pd.member_names().len() == 5 {
            break;
        }
    }
    assert_eq!(w.pd.member_names().len(), 5);
    assert_eq!(max_members, 5);

    w.set_replicas(3);
    let mut min_members = 5;
    for _ in 0..40 {
        w.reconcile_group().await;
        watch(&w);
        w.reconcile_all_instances().await;
        watch(&w);
        min_members = min_members.min(w.pd.member_names().len());
        if w.instances().len() == 3 {
            break;
        }
    }
    assert_eq!(w.pd.member_names().len(), 3);
    assert_eq!(min_members, 3, "never below the target");
    assert_eq!(w.instances().len(), 3);
    assert_eq!(w.kube.list::<Pod>("Pod", NS).len(), 3);
    w.reconcile_group().await;
    assert_eq!(w.condition(condition::PROGRESSING).0, "False");
}

/// Runs group and instance reconciles (Pods starting in between) until every
/// instance is in sync, asserting at every step that at most one member is
/// disrupted and that the leader's Pod goes only after leadership moved.
/// Returns the members restarted, in order.
async fn drive_restarts(w: &mut World) -> Vec<String> {
    let mut restarted = Vec::new();
    for _ in 0..30 {
        let before: Vec<String> = w
            .kube
            .list::<Pod>("Pod", NS)
            .iter()
            .map(|p| p.metadata.name.clone().unwrap())
            .collect();
        w.kube.clear_calls();
        w.reconcile_group().await;
        // At most one member is disrupted at a time.
        let missing: Vec<String> = w
            .instance_names()
            .into_iter()
            .filter(|n| w.kube.get(&pod_key(n)).is_none())
            .collect();
        assert!(missing.len() <= 1, "{missing:?}");
        for m in &missing {
            if before.contains(m) {
                restarted.push(m.clone());
                // The leader's Pod goes only after leadership moved away.
                assert_ne!(w.pd.leader_name().as_deref(), Some(m.as_str()));
            }
        }
        w.reconcile_all_instances().await;
        w.run_pods();
        w.reconcile_all_instances().await;
        let all_synced = w.instances().iter().all(|i| {
            conditions::is_true(
                &i.status.as_ref().unwrap().common.conditions,
                condition::SYNCED,
            )
        });
        if all_synced {
            break;
        }
    }
    restarted
}

/// A template whose config does not parse reaches no instance; the group is
/// `Synced=False` (reason `InvalidConfig`, the parse error's line) and not
/// `Ready`.
#[tokio::test]
async fn a_template_with_a_broken_config_reaches_no_instance() {
    let mut w = World::bootstrapped(3).await;
    let mut g = w.kube.get(&group_key()).unwrap();
    g["spec"]["template"]["spec"]["config"] = "[log]\nlevel = \"debug\"\n= oops\n".into();
    w.kube.insert(group_key(), g);
    w.kube.clear_calls();
    w.reconcile_group().await;
    w.reconcile_all_instances().await;
    for i in w.instances() {
        assert_eq!(
            i.spec.template.config, None,
            "no instance got the broken config"
        );
    }
    assert!(w.deletes().is_empty());
    assert_eq!(
        w.condition(condition::SYNCED),
        ("False".to_owned(), reasons::INVALID_CONFIG.to_owned())
    );
    assert_eq!(w.condition(condition::READY).0, "False");
}

#[tokio::test]
async fn a_config_change_restarts_members_one_at_a_time_leader_last() {
    let mut w = World::bootstrapped(3).await;
    let leader = w.pd.leader_name().unwrap();
    let mut g = w.kube.get(&group_key()).unwrap();
    g["spec"]["template"]["spec"]["config"] = "[log]\nlevel = \"debug\"\n".into();
    w.kube.insert(group_key(), g);

    // The group pushes the template to its instances; the instances update
    // their ConfigMaps and report their running Pods outdated.
    w.reconcile_group().await;
    for i in w.instances() {
        assert_eq!(
            i.spec.template.config.as_deref(),
            Some("[log]\nlevel = \"debug\"\n")
        );
    }
    w.reconcile_all_instances().await;
    for name in w.instance_names() {
        let pd: PD = w.kube.get_typed(&pd_key(&name)).unwrap();
        let c = conditions::find(&pd.status.unwrap().common.conditions, condition::SYNCED)
            .unwrap()
            .clone();
        assert_eq!(c.reason, reasons::RESTART_PENDING);
    }

    let restarted = drive_restarts(&mut w).await;
    assert_eq!(restarted.len(), 3, "{restarted:?}");
    assert_eq!(restarted.last(), Some(&leader), "the leader restarts last");
    for name in w.instance_names() {
        let cm: ConfigMap = w
            .kube
            .get_typed(&ObjectKey::new::<ConfigMap>(Some(NS), &name))
            .unwrap();
        assert!(cm.data.unwrap()["pd.toml"].contains("level = \"debug\""));
    }
    w.reconcile_group().await;
    assert_eq!(w.condition(condition::PROGRESSING).0, "False");
}

#[tokio::test]
async fn a_paused_cluster_changes_nothing() {
    let mut w = World::bootstrapped(3).await;
    w.cluster.paused = true;
    w.set_replicas(2);
    let victim = w.instance_names()[1].clone();
    w.kube.delete(&pd_key(&victim)).await.unwrap();
    w.kube.clear_calls();
    let pd_calls = w.pd.calls().len();
    w.reconcile_group().await;
    w.reconcile_all_instances().await;
    let writes: Vec<KubeCall> = w
        .kube
        .calls()
        .into_iter()
        .filter(|c| c.op() != KubeOp::PatchStatus)
        .collect();
    assert_eq!(writes, vec![], "paused: only status is written");
    assert!(
        w.pd.calls()[pd_calls..]
            .iter()
            .all(|op| !matches!(op, FakeOp::RemoveMember | FakeOp::TransferLeader))
    );
    assert_eq!(w.pd.member_names().len(), 3);
    let st = w.group().status.unwrap();
    assert_eq!(
        st.group.updated_replicas, 2,
        "the deleting instance is not counted"
    );
}

#[tokio::test]
async fn a_group_whose_cluster_is_missing_creates_nothing() {
    // A missing Cluster (not in the cache, or deleted) must never lead to a
    // fresh bootstrap: that would start a second PD cluster.
    let mut w = World::new(3, None);
    w.cluster = ClusterFacts::from_cluster(None);
    w.reconcile_group().await;
    assert!(w.instance_names().is_empty(), "{:?}", w.instance_names());
    // With its Cluster, the same group bootstraps.
    w.cluster = ClusterFacts::default();
    w.reconcile_group().await;
    assert_eq!(w.instance_names().len(), 3);
}

#[tokio::test]
async fn a_restart_annotation_restarts_every_member_once_leader_last() {
    let mut w = World::bootstrapped(3).await;
    let leader = w.pd.leader_name().unwrap();
    let mut g = w.kube.get(&group_key()).unwrap();
    g["metadata"]["annotations"] = json!({ (labels::RESTARTED_AT): "2026-11-22T02:00:00Z" });
    w.kube.insert(group_key(), g);
    w.reconcile_group().await;
    w.reconcile_all_instances().await;
    let restarted = drive_restarts(&mut w).await;
    assert_eq!(restarted.len(), 3, "{restarted:?}");
    assert_eq!(restarted.last(), Some(&leader), "the leader restarts last");
    for name in w.instance_names() {
        let pod: Pod = w.kube.get_typed(&pod_key(&name)).unwrap();
        assert_eq!(
            pod.metadata.annotations.unwrap()[labels::RESTARTED_AT],
            "2026-11-22T02:00:00Z"
        );
    }
    // The same value again restarts nothing.
    w.kube.clear_calls();
    w.reconcile_group().await;
    w.reconcile_all_instances().await;
    assert!(
        w.instance_names()
            .iter()
            .all(|n| w.kube.get(&pod_key(n)).is_some())
    );
    assert_eq!(w.condition(condition::PROGRESSING).0, "False");
}

/// Reconciles everything a few times and returns the Pods deleted meanwhile.
async fn settle_and_collect_pod_deletes(w: &mut World) -> Vec<ObjectKey> {
    w.kube.clear_calls();
    for _ in 0..3 {
        w.reconcile_group().await;
        w.reconcile_all_instances().await;
    }
    w.kube
        .calls()
        .into_iter()
        .filter_map(|c| match c {
            KubeCall::Delete(k) if k.kind == "Pod" => Some(k),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn metadata_only_changes_are_patched_in_place() {
    let mut w = World::bootstrapped(3).await;
    let mut g = w.kube.get(&group_key()).unwrap();
    g["spec"]["template"]["metadata"] = json!({"labels": {"team": "storage"}});
    w.kube.insert(group_key(), g);
    let deleted = settle_and_collect_pod_deletes(&mut w).await;
    assert_eq!(deleted, vec![], "a label change restarted Pods");
    for name in w.instance_names() {
        let pod: Pod = w.kube.get_typed(&pod_key(&name)).unwrap();
        assert_eq!(pod.metadata.labels.unwrap()["team"], "storage");
    }
}

#[tokio::test]
async fn a_hot_reload_config_change_updates_the_config_map_and_keeps_pods() {
    let mut w = World::bootstrapped(3).await;
    let mut g = w.kube.get(&group_key()).unwrap();
    g["spec"]["template"]["spec"]["updateStrategy"] = json!({"config": "HotReload"});
    w.kube.insert(group_key(), g);
    // Switching the strategy itself changes no Pod spec: nothing restarts.
    assert_eq!(settle_and_collect_pod_deletes(&mut w).await, vec![]);
    let mut g = w.kube.get(&group_key()).unwrap();
    g["spec"]["template"]["spec"]["config"] = "[log]\nlevel = \"debug\"\n".into();
    w.kube.insert(group_key(), g);
    assert_eq!(settle_and_collect_pod_deletes(&mut w).await, vec![]);
    for name in w.instance_names() {
        let cm: ConfigMap = w
            .kube
            .get_typed(&ObjectKey::new::<ConfigMap>(Some(NS), &name))
            .unwrap();
        assert!(cm.data.unwrap()["pd.toml"].contains("level = \"debug\""));
        let pd: PD = w.kube.get_typed(&pd_key(&name)).unwrap();
        assert!(conditions::is_true(
            &pd.status.unwrap().common.conditions,
            condition::SYNCED
        ));
    }
}

#[tokio::test]
async fn a_downgrade_is_refused_until_explicitly_allowed() {
    let mut w = World::bootstrapped(3).await;
    let mut g = w.kube.get(&group_key()).unwrap();
    g["spec"]["template"]["spec"]["version"] = "v8.1.0".into();
    w.kube.insert(group_key(), g);
    let deleted = settle_and_collect_pod_deletes(&mut w).await;
    assert_eq!(deleted, vec![], "a refused downgrade restarted Pods");
    for i in w.instances() {
        assert_eq!(
            i.spec.template.version, "v8.5.5",
            "the template reached {:?}",
            i.metadata.name
        );
    }
    let (status, reason) = w.condition(condition::PROGRESSING);
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("True", reasons::DOWNGRADE_REFUSED)
    );
    w.reconcile_group().await;
    w.reconcile_group().await;
    assert_eq!(
        w.kube
            .calls()
            .iter()
            .filter(|c| matches!(
                c,
                KubeCall::PublishEvent(e) if e.reason == reasons::DOWNGRADE_REFUSED
            ))
            .count(),
        1,
        "one Warning, not one per reconcile"
    );
    // Status tells the truth: members run v8.5.5 at the old revision.
    let st = w.group().status.unwrap().group;
    assert_eq!(st.version.as_deref(), Some("v8.5.5"));
    assert_eq!(st.updated_replicas, 0);
    assert_eq!(st.current_replicas, 3);
    assert_ne!(st.update_revision, st.current_revision);
    let old_revision = st.current_revision.clone();
    assert!(old_revision.is_some());

    // Allowed explicitly: the members move to the lower version, one at a time.
    let mut g = w.kube.get(&group_key()).unwrap();
    g["metadata"]["annotations"] = json!({ (labels::ALLOW_DOWNGRADE): "true" });
    w.kube.insert(group_key(), g);
    w.reconcile_group().await;
    w.reconcile_all_instances().await;
    let restarted = drive_restarts(&mut w).await;
    assert_eq!(restarted.len(), 3, "{restarted:?}");
    for i in w.instances() {
        assert_eq!(i.spec.template.version, "v8.1.0");
    }
    w.reconcile_group().await;
    let st = w.group().status.unwrap().group;
    assert_eq!(st.version.as_deref(), Some("v8.1.0"));
    assert_eq!((st.updated_replicas, st.current_replicas), (3, 3));
    assert_eq!(st.update_revision, st.current_revision);
    assert_ne!(st.current_revision, old_revision);
}

#[tokio::test]
async fn reverting_an_upgrade_that_reached_no_pod_is_not_a_downgrade() {
    let mut w = World::bootstrapped(3).await;
    let set_version = |w: &World, v: &str| {
        let mut g = w.kube.get(&group_key()).unwrap();
        g["spec"]["template"]["spec"]["version"] = v.into();
        w.kube.insert(group_key(), g);
    };
    set_version(&w, "v8.5.6");
    w.reconcile_group().await;
    assert!(
        w.instances()
            .iter()
            .all(|i| i.spec.template.version == "v8.5.6"),
        "the template reached the instances"
    );
    // No Pod runs v8.5.6 yet: going back is not a downgrade.
    set_version(&w, "v8.5.5");
    w.reconcile_group().await;
    let (_, reason) = w.condition(condition::PROGRESSING);
    assert_ne!(reason, reasons::DOWNGRADE_REFUSED);
    assert!(
        w.instances()
            .iter()
            .all(|i| i.spec.template.version == "v8.5.5")
    );
}

#[tokio::test]
async fn each_template_revision_is_kept_in_the_group_history() {
    use k8s_openapi::api::apps::v1::ControllerRevision;
    let mut w = World::bootstrapped(3).await;
    w.cluster.revision_history_limit = 10;
    let mut g = w.kube.get(&group_key()).unwrap();
    g["spec"]["template"]["spec"]["version"] = "v8.5.6".into();
    w.kube.insert(group_key(), g);
    w.reconcile_group().await;
    let mut revs: Vec<(i64, String)> = w
        .kube
        .list::<ControllerRevision>("ControllerRevision", NS)
        .into_iter()
        .map(|cr| {
            (
                cr.revision,
                cr.data.unwrap().0["template"]["spec"]["version"].to_string(),
            )
        })
        .collect();
    revs.sort();
    assert_eq!(
        revs,
        vec![(1, "\"v8.5.5\"".to_owned()), (2, "\"v8.5.6\"".to_owned())]
    );
}

#[tokio::test]
async fn the_next_restart_waits_for_a_pd_reading_taken_after_the_last_restarted_pod_turned_ready() {
    use tikv_operator_core::Clock;
    let mut w = World::bootstrapped(3).await;
    let mut g = w.kube.get(&group_key()).unwrap();
    g["metadata"]["annotations"] = json!({ (labels::RESTARTED_AT): "now" });
    w.kube.insert(group_key(), g);
    let pods_now = |w: &World| {
        w.instance_names()
            .iter()
            .filter(|n| w.kube.get(&pod_key(n)).is_some())
            .count()
    };
    w.reconcile_group().await;
    w.reconcile_all_instances().await;
    w.reconcile_group().await;
    assert_eq!(pods_now(&w), 2, "the first restart");
    // The replacement is Ready at `now`; PD's last reading is older: its
    // health says nothing about the new process.
    w.reconcile_all_instances().await;
    let at = w.clock.now();
    for pod in w.kube.list::<Value>("Pod", NS) {
        let name = pod["metadata"]["name"].as_str().unwrap().to_owned();
        let mut pod = pod.clone();
        pod["status"] = json!({"podIP": name, "conditions": [
            {"type": "Ready", "status": "True", "lastTransitionTime": at.to_string()}
        ]});
        w.kube.insert(pod_key(&name), pod);
    }
    w.observed_at = Some(at - k8s_openapi::jiff::SignedDuration::from_secs(1));
    for _ in 0..3 {
        w.reconcile_group().await;
    }
    assert_eq!(pods_now(&w), 3, "no second restart on a stale PD reading");
    let st = w.group().status.unwrap().group;
    assert_ne!(
        st.current_revision, st.update_revision,
        "not reported done on a stale reading"
    );
    // A reading from after the Pod turned Ready: the next member goes.
    w.observed_at = Some(at + k8s_openapi::jiff::SignedDuration::from_secs(1));
    w.reconcile_group().await;
    assert_eq!(pods_now(&w), 2);
}

#[tokio::test]
async fn the_next_restart_waits_until_every_other_member_answers_ready_itself() {
    let mut w = World::bootstrapped(3).await;
    let mut g = w.kube.get(&group_key()).unwrap();
    g["metadata"]["annotations"] = json!({ (labels::RESTARTED_AT): "now" });
    w.kube.insert(group_key(), g);
    let pods_now = |w: &World| {
        w.instance_names()
            .iter()
            .filter(|n| w.kube.get(&pod_key(n)).is_some())
            .count()
    };
    w.reconcile_group().await;
    w.reconcile_all_instances().await;
    w.reconcile_group().await;
    assert_eq!(pods_now(&w), 2, "the first restart");
    let first = w
        .instance_names()
        .into_iter()
        .find(|n| w.kube.get(&pod_key(n)).is_none())
        .unwrap();
    // The replacement's Pod is Ready and PD reports it healthy, but the
    // member itself does not answer ready yet.
    w.reconcile_all_instances().await;
    w.run_pods();
    w.pd.set_member_ready(&first, false);
    for _ in 0..3 {
        w.reconcile_group().await;
    }
    assert_eq!(pods_now(&w), 3, "no second restart");
    let (_, reason) = w.condition(condition::PROGRESSING);
    assert_eq!(reason, reasons::WAITING_FOR_MEMBER);
    w.pd.set_member_ready(&first, true);
    assert!(
        w.next_restart().await.is_some(),
        "the next restart once the member answers ready"
    );
}

#[tokio::test]
async fn lagging_caches_never_restart_two_members_at_once() {
    let mut w = World::bootstrapped(3).await;
    let mut g = w.kube.get(&group_key()).unwrap();
    g["metadata"]["annotations"] = json!({ (labels::RESTARTED_AT): "now" });
    w.kube.insert(group_key(), g);
    w.reconcile_group().await;
    w.reconcile_all_instances().await;
    let pod_uids = |w: &World| -> Vec<Option<String>> {
        w.instance_names()
            .iter()
            .map(|n| {
                w.kube
                    .get_typed::<Pod>(&pod_key(n))
                    .and_then(|p| p.metadata.uid)
            })
            .collect()
    };

    // The instance cache has seen the new template on one member only, a
    // non-leader (which would be restarted at once otherwise).
    let leader = w.pd.leader_name().unwrap();
    let mut lagging = w.instances();
    let mut kept = false;
    for i in &mut lagging {
        if !kept && i.metadata.name.as_deref() != Some(leader.as_str()) {
            kept = true;
            continue;
        }
        i.metadata
            .annotations
            .as_mut()
            .unwrap()
            .remove(labels::TEMPLATE_REVISION);
    }
    let before = pod_uids(&w);
    w.reconcile_group_on(lagging, w.kube.list("Pod", NS)).await;
    assert_eq!(pod_uids(&w), before, "no restart on a partly updated cache");

    // The first restart; then a reconcile whose Pod cache still shows the
    // deleted Pod Ready, after the instance already recreated it.
    let stale_pods: Vec<Pod> = w.kube.list("Pod", NS);
    let mut restarted = None;
    for _ in 0..3 {
        w.reconcile_group().await;
        if let Some(n) = w
            .instance_names()
            .into_iter()
            .find(|n| w.kube.get(&pod_key(n)).is_none())
        {
            restarted = Some(n);
            break;
        }
        w.reconcile_all_instances().await;
    }
    let restarted = restarted.expect("a first restart");
    w.reconcile_all_instances().await;
    w.run_pods();
    let after_first = pod_uids(&w);
    assert!(after_first.iter().all(Option::is_some));
    let instances = w.instances();
    w.reconcile_group_on(instances, stale_pods).await;
    assert_eq!(
        pod_uids(&w),
        after_first,
        "a stale cache restarted another member or hit {restarted}'s replacement"
    );
}

#[tokio::test]
async fn a_restarted_member_counts_only_once_its_new_pod_answers_at_its_own_ip() {
    let mut w = World::bootstrapped(3).await;
    w.request_restart();
    let first = w.next_restart().await.expect("a first restart");
    // The replacement is Ready (as kwok makes it at once) but has no IP yet:
    // whatever answers at the member's DNS name is not its process.
    w.reconcile_all_instances().await;
    let mut pod = w.kube.get(&pod_key(&first)).unwrap();
    pod["status"] = json!({"conditions": [{"type": "Ready", "status": "True"}]});
    w.kube.insert(pod_key(&first), pod);
    for _ in 0..3 {
        w.reconcile_group().await;
        assert!(w.missing_pods().is_empty(), "another member restarted");
    }
    let (_, reason) = w.condition(condition::PROGRESSING);
    assert_eq!(reason, reasons::WAITING_FOR_MEMBER);
}

#[tokio::test]
async fn a_restarted_member_counts_only_once_the_process_answering_is_its_new_pods() {
    use tikv_operator_core::Clock;
    let mut w = World::bootstrapped(3).await;
    w.request_restart();
    let first = w.next_restart().await.expect("a first restart");
    // The replacement Pod is Ready, has an IP and answers ready, but what
    // answers there is the old process (found by e2e: kwok gave the new Pod
    // the old Pod's IP while the old pd-server still shut down).
    w.reconcile_all_instances().await;
    w.run_pods();
    let created = w.clock.now();
    let mut pod = w.kube.get(&pod_key(&first)).unwrap();
    pod["metadata"]["creationTimestamp"] = json!(created.to_string());
    w.kube.insert(pod_key(&first), pod);
    w.pd.set_member_started(&first, Some(created.as_second() - 60));
    for _ in 0..3 {
        w.reconcile_group().await;
        assert!(w.missing_pods().is_empty(), "another member restarted");
    }
    let (_, reason) = w.condition(condition::PROGRESSING);
    assert_eq!(reason, reasons::WAITING_FOR_MEMBER);
    // The new process answers: the next member goes.
    w.pd.set_member_started(&first, Some(created.as_second() + 1));
    assert!(
        w.next_restart().await.is_some(),
        "the next restart once the new process answers"
    );
}

#[tokio::test]
async fn a_member_whose_process_just_started_is_restarted_only_once_it_could_be_told_apart() {
    use tikv_operator_core::Clock;
    let mut w = World::bootstrapped(3).await;
    // Every member's process started 3 s ago (a restart asked for right after the
    // Cluster became Ready): were one restarted now, its old process, answering for a
    // moment after the Pod went, would pass as the replacement's (it is younger than
    // the clock skew tolerated) and the next member would go too (found by e2e: two PD
    // Pods deleted 0.45 s apart).
    let now = w.clock.now().as_second();
    let members: Vec<String> = w
        .instances()
        .iter()
        .map(|i| i.metadata.name.clone().unwrap())
        .collect();
    for m in &members {
        w.pd.set_member_started(m, Some(now - 3));
    }
    w.request_restart();
    assert_eq!(
        w.next_restart().await,
        None,
        "a member too young to restart went"
    );
    let (_, reason) = w.condition(condition::PROGRESSING);
    assert_eq!(reason, reasons::WAITING_FOR_MEMBER);
    // Old enough: the restart goes ahead, and the old process is recognisable.
    for m in &members {
        w.pd.set_member_started(
            m,
            Some(now - tikv_operator_core::objects::MIN_PROCESS_AGE_TO_RESTART),
        );
    }
    assert!(
        w.next_restart().await.is_some(),
        "the restart once old enough"
    );
}

#[tokio::test]
async fn restarts_wait_min_ready_seconds_between_members() {
    use tikv_operator_core::Clock;
    let mut w = World::bootstrapped(3).await;
    let mut g = w.kube.get(&group_key()).unwrap();
    g["spec"]["minReadySeconds"] = 30.into();
    g["metadata"]["annotations"] = json!({ (labels::RESTARTED_AT): "now" });
    w.kube.insert(group_key(), g);
    // Every Pod became Ready "now".
    let mark_ready_now = |w: &World| {
        let at = w.clock.now().to_string();
        for pod in w.kube.list::<Value>("Pod", NS) {
            let name = pod["metadata"]["name"].as_str().unwrap().to_owned();
            if pod["status"]["conditions"][0]["lastTransitionTime"].is_string() {
                continue;
            }
            let mut pod = pod.clone();
            pod["status"] = json!({"podIP": name, "conditions": [
                {"type": "Ready", "status": "True", "lastTransitionTime": at}
            ]});
            w.kube.insert(pod_key(&name), pod);
        }
    };
    mark_ready_now(&w);
    w.reconcile_group().await;
    w.reconcile_all_instances().await;
    let pods_now = |w: &World| {
        w.instance_names()
            .iter()
            .filter(|n| w.kube.get(&pod_key(n)).is_some())
            .count()
    };

    // Not available for 30 s yet: nothing restarts.
    w.reconcile_group().await;
    assert_eq!(pods_now(&w), 3);
    w.clock.advance(std::time::Duration::from_secs(31));
    w.reconcile_group().await;
    assert_eq!(pods_now(&w), 2, "the first restart after minReadySeconds");

    // The replacement comes up Ready now; the next restart waits another 30 s.
    w.reconcile_all_instances().await;
    mark_ready_now(&w);
    assert_eq!(pods_now(&w), 3);
    w.reconcile_group().await;
    w.reconcile_group().await;
    assert_eq!(
        pods_now(&w),
        3,
        "the second restart must wait for minReadySeconds"
    );
    w.clock.advance(std::time::Duration::from_secs(31));
    w.reconcile_group().await;
    assert_eq!(pods_now(&w), 2);
}

#[tokio::test]
async fn switching_to_hot_reload_together_with_a_config_change_restarts_nothing() {
    let mut w = World::bootstrapped(3).await;
    let mut g = w.kube.get(&group_key()).unwrap();
    g["spec"]["template"]["spec"]["updateStrategy"] = json!({"config": "HotReload"});
    g["spec"]["template"]["spec"]["config"] = "[log]\nlevel = \"warn\"\n".into();
    w.kube.insert(group_key(), g);
    assert_eq!(settle_and_collect_pod_deletes(&mut w).await, vec![]);
    // Back to Restart: every member restarts once, so it runs what it shows.
    let mut g = w.kube.get(&group_key()).unwrap();
    g["spec"]["template"]["spec"]["updateStrategy"] = json!({"config": "Restart"});
    w.kube.insert(group_key(), g);
    w.reconcile_group().await;
    w.reconcile_all_instances().await;
    assert_eq!(drive_restarts(&mut w).await.len(), 3);
}

#[tokio::test]
async fn a_template_change_counts_no_member_updated_before_its_pod_is_replaced() {
    // Instance status lags a template change; the group must not report the
    // rollout done before any Pod was replaced.
    let mut w = World::bootstrapped(3).await;
    let mut g = w.kube.get(&group_key()).unwrap();
    g["spec"]["template"]["spec"]["version"] = "v8.5.6".into();
    w.kube.insert(group_key(), g);
    w.reconcile_group().await;
    w.reconcile_group().await;
    let st = w.group().status.unwrap().group;
    assert_eq!(st.updated_replicas, 0);
    assert_ne!(st.update_revision, st.current_revision);
    assert_eq!(st.version.as_deref(), Some("v8.5.5"));
}

#[tokio::test]
async fn a_replaced_pod_is_not_restarted_again_while_instance_status_lags() {
    let mut w = World::bootstrapped(3).await;
    let mut g = w.kube.get(&group_key()).unwrap();
    g["metadata"]["annotations"] = json!({ (labels::RESTARTED_AT): "once" });
    w.kube.insert(group_key(), g);
    w.reconcile_group().await;
    w.reconcile_all_instances().await;
    w.kube.clear_calls();
    w.reconcile_group().await;
    let deleted: Vec<String> = w
        .kube
        .calls()
        .into_iter()
        .filter_map(|c| match c {
            KubeCall::Delete(k) if k.kind == "Pod" => Some(k.name),
            _ => None,
        })
        .collect();
    assert_eq!(deleted.len(), 1, "{deleted:?}");
    let victim = deleted[0].clone();
    // The instance recreates its Pod, but its status (RestartPending) has not
    // caught up yet when the group looks again.
    let stale = w.kube.get(&pd_key(&victim)).unwrap();
    w.reconcile_instance(&victim).await;
    assert!(w.kube.get(&pod_key(&victim)).is_some());
    w.kube.insert(pd_key(&victim), stale);
    w.run_pods();
    w.kube.clear_calls();
    w.reconcile_group().await;
    assert!(
        !w.kube
            .calls()
            .iter()
            .any(|c| matches!(c, KubeCall::Delete(k) if k.kind == "Pod" && k.name == victim)),
        "the replacement Pod of {victim} was restarted again"
    );
}

/// Issue 23: upgrading the operator restarts no PD Pod. Pods stamped by an
/// operator version before the rendering generation (a legacy revision of
/// today's rendering) are re-stamped in place; Pods whose spec another
/// rendering made (here: an extra environment variable) keep it, and only
/// their metadata follows the template.
#[tokio::test]
async fn an_operator_upgrade_restarts_no_pd_pod() {
    let mut w = World::bootstrapped(3).await;
    w.reconcile_group().await;
    let names = w.instance_names();
    for (i, name) in names.iter().enumerate() {
        let mut pod: Value = w.kube.get(&pod_key(name)).unwrap();
        if i == 0 {
            // What the operator version before the rendering generation stamped.
            let typed: Pod = serde_json::from_value(pod.clone()).unwrap();
            pod["metadata"]["annotations"][labels::INSTANCE_REVISION] = json!(
                tikv_operator_core::revision::legacy_pod_revision(&typed, true)
            );
        } else {
            // Rendered by an operator whose rendering differs from today's.
            pod["spec"]["containers"][0]["env"] = json!([{"name": "OLD_RENDERING", "value": "1"}]);
            pod["metadata"]["annotations"][labels::RENDERED_SPEC] = json!("another-rendering");
        }
        w.kube.insert(pod_key(name), pod);
    }
    let mut g = w.kube.get(&group_key()).unwrap();
    g["spec"]["template"]["metadata"] = json!({"labels": {"team": "storage"}});
    w.kube.insert(group_key(), g);
    let deleted = settle_and_collect_pod_deletes(&mut w).await;
    assert_eq!(deleted, vec![], "an operator upgrade restarted PD Pods");
    for (i, name) in names.iter().enumerate() {
        let pod: Pod = w.kube.get_typed(&pod_key(name)).unwrap();
        let revision = &pod.metadata.annotations.as_ref().unwrap()[labels::INSTANCE_REVISION];
        assert!(
            revision.starts_with("g"),
            "{name} not re-stamped: {revision}"
        );
        assert_eq!(pod.metadata.labels.as_ref().unwrap()["team"], "storage");
        let env = pod.spec.unwrap().containers[0].env.clone();
        assert_eq!(env.is_some(), i != 0, "{name}: the running spec changed");
    }
    let st = w.group().status.unwrap().group;
    assert_eq!((st.updated_replicas, st.current_replicas), (3, 3));
    assert_eq!(st.update_revision, st.current_revision);
    assert_eq!(w.condition(condition::PROGRESSING).0, "False");
}

/// A Pod outdated only because the rendering generation was bumped is
/// announced (Progressing, an Event) before it is restarted.
#[tokio::test]
async fn a_rendering_generation_bump_is_announced_before_the_first_restart() {
    use tikv_operator_core::revision::{RENDERING_GENERATION, RENDERING_GENERATION_CHANGED};
    let mut w = World::bootstrapped(3).await;
    w.reconcile_group().await;
    // Simulate Pods of the previous generation: same inputs, generation - 1.
    for name in w.instance_names() {
        let pd: PD = w.kube.get_typed(&pd_key(&name)).unwrap();
        let old = tikv_operator_pd_layer::render::revision_inputs(&pd)
            .revision(RENDERING_GENERATION - 1, true);
        let mut pod: Value = w.kube.get(&pod_key(&name)).unwrap();
        pod["metadata"]["annotations"][labels::INSTANCE_REVISION] = json!(old);
        w.kube.insert(pod_key(&name), pod);
    }
    w.kube.clear_calls();
    w.reconcile_group().await;
    let progressing = conditions::find(
        &w.group().status.unwrap().common.conditions,
        condition::PROGRESSING,
    )
    .unwrap()
    .clone();
    assert_eq!(progressing.reason, RENDERING_GENERATION_CHANGED);
    assert!(
        progressing
            .message
            .contains(&format!("rendering generation is {RENDERING_GENERATION}")),
        "{}",
        progressing.message
    );
    let calls = w.kube.calls();
    assert!(calls.iter().any(|c| matches!(
        c,
        KubeCall::PublishEvent(e) if e.reason == RENDERING_GENERATION_CHANGED
    )));
    assert!(
        !calls.iter().any(|c| matches!(c, KubeCall::Delete(_))),
        "restarted before announcing: {calls:?}"
    );
    // Then the members restart, one at a time.
    let restarted = drive_restarts(&mut w).await;
    assert_eq!(restarted.len(), 3, "{restarted:?}");
}

/// PD failover (issue 18 item 3), with the fakes: a non-leader member unhealthy past the period
/// is removed through PD before its Pod and PVCs go, and only then does a new member join; the
/// group never has more members in PD than `replicas` (adding first would make the majority 3
/// of 4 with 2 running). Off by default: without `enabled: true` nothing is removed, and the
/// refusal is reported.
#[tokio::test]
async fn an_unhealthy_member_is_replaced_remove_first_when_failover_is_enabled() {
    for enabled in [false, true] {
        let mut w = World::bootstrapped(3).await;
        let mut g = w.kube.get(&group_key()).unwrap();
        g["spec"]["failover"] = json!({"enabled": enabled, "periodSeconds": 60});
        w.kube.insert(group_key(), g);
        let leader = w.pd.leader_name().unwrap();
        let names = w.pd.member_names();
        let sick = names.iter().find(|n| **n != leader).unwrap().clone();
        w.pd.set_member_healthy(&sick, false);
        w.reconcile_group().await;
        assert_eq!(
            w.condition(fo_reasons::CONDITION_FAILOVER),
            (
                "False".to_owned(),
                if enabled {
                    reasons::MEMBER_UNHEALTHY
                } else {
                    fo_reasons::FAILOVER_DISABLED
                }
                .to_owned()
            )
        );
        w.clock.advance(std::time::Duration::from_secs(61));
        w.kube.clear_calls();
        w.reconcile_group().await;
        if !enabled {
            assert!(w.deletes().is_empty(), "failover is off by default for PD");
            assert_eq!(
                w.condition(fo_reasons::CONDITION_FAILOVER).1,
                fo_reasons::FAILOVER_DISABLED
            );
            continue;
        }
        assert_eq!(w.deletes(), vec![pd_key(&sick)]);
        assert_eq!(
            w.condition(fo_reasons::CONDITION_FAILOVER),
            ("True".to_owned(), fo_reasons::FAILOVER_STARTED.to_owned())
        );
        // The finalizer removes the member through PD while its Pod still exists; the group
        // creates nothing meanwhile.
        for _ in 0..10 {
            if w.kube.get(&pd_key(&sick)).is_none() {
                break;
            }
            w.reconcile_instance(&sick).await;
            w.reconcile_group().await;
            if w.pd.member_names().contains(&sick) {
                assert!(w.kube.get(&pod_key(&sick)).is_some());
            }
            assert!(w.instance_names().len() <= 3);
            assert!(w.pd.member_names().len() <= 3);
        }
        assert!(w.kube.get(&pd_key(&sick)).is_none(), "finalizer dropped");
        assert!(!w.pd.member_names().contains(&sick));
        // A new member joins in its place.
        w.reconcile_group().await;
        w.reconcile_all_instances().await;
        w.run_pods();
        w.reconcile_group().await;
        let now = w.instance_names();
        assert_eq!(now.len(), 3, "{now:?}");
        assert!(!now.contains(&sick));
        let st = w.group().status.unwrap().failover.unwrap();
        assert_eq!(st.total, 1);
        assert_eq!(
            st.failures[0].phase,
            tikv_operator_api::FailoverPhase::Completed
        );
        let reasons_seen: Vec<String> = w.kube.events().into_iter().map(|e| e.reason).collect();
        for want in [fo_reasons::FAILOVER_STARTED, fo_reasons::FAILOVER_COMPLETED] {
            assert!(reasons_seen.iter().any(|r| r == want), "{reasons_seen:?}");
        }
    }
}

// ---------------------------------------------------------------------------
// TLS: the group's Secret and the Cluster's client Secret gate every member
// created or updated.

/// DNS names a good PD certificate of group `pd` in `ns` holds.
const PD_SANS: [&str; 3] = ["*.pd-pd-peer.ns.svc", "pd-pd.ns.svc", "pd-pd-peer.ns.svc"];

impl World {
    /// The Cluster asks for TLS (client Secret `basic-client-tls`).
    fn with_tls(mut self) -> Self {
        self.cluster.client_tls_secret = Some("basic-client-tls".into());
        self
    }

    /// A condition's message.
    fn message(&self, type_: &str) -> String {
        let g = self.group();
        conditions::find(&g.status.as_ref().unwrap().common.conditions, type_)
            .unwrap()
            .message
            .clone()
    }

    fn warnings(&self) -> Vec<String> {
        self.kube
            .events()
            .into_iter()
            .filter(|e| e.type_ == tikv_operator_core::EventType::Warning)
            .map(|e| e.reason)
            .collect()
    }

    /// The group is refused with `reason`: Synced and Ready False with it,
    /// a Warning Event, and the Secret polled soon.
    fn assert_refused(&self, reason: &str, requeue: Requeue) {
        assert_eq!(
            self.condition(condition::SYNCED),
            ("False".to_owned(), reason.to_owned()),
            "{}",
            self.message(condition::SYNCED)
        );
        assert_eq!(
            self.condition(condition::READY),
            ("False".to_owned(), reason.to_owned())
        );
        assert!(
            self.warnings().iter().any(|r| r == reason),
            "{:?}",
            self.kube.events()
        );
        assert!(
            matches!(requeue, Requeue::After(d) if d <= tls::RECHECK),
            "{requeue:?}"
        );
    }
}

#[tokio::test]
async fn a_tls_group_creates_no_member_until_both_secrets_pass() {
    let mut w = World::new(3, None).with_tls();
    let ca = TestCa::new("ca");

    // No client Secret: nothing created, and the Secret was read.
    let r = w.reconcile_group().await;
    assert!(w.instances().is_empty());
    w.assert_refused(tls::SECRET_MISSING, r);
    assert!(w.message(condition::SYNCED).contains("ns/basic-client-tls"));
    assert!(
        w.kube
            .calls()
            .iter()
            .any(|c| matches!(c, KubeCall::GetSecret(k) if k.name == "basic-client-tls"))
    );

    // The client Secret passes; the group's own is missing.
    w.kube
        .insert_tls_secret(NS, "basic-client-tls", &ca.pem(), &ca.client());
    let r = w.reconcile_group().await;
    assert!(w.instances().is_empty());
    w.assert_refused(tls::SECRET_MISSING, r);
    assert!(
        w.message(condition::SYNCED).contains("ns/pd-pd-tls"),
        "{}",
        w.message(condition::SYNCED)
    );

    // Signed by another CA than its ca.crt.
    let other = TestCa::new("other");
    w.kube
        .insert_tls_secret(NS, "pd-pd-tls", &ca.pem(), &other.member(&PD_SANS));
    let r = w.reconcile_group().await;
    assert!(w.instances().is_empty());
    w.assert_refused(tls::SECRET_INVALID, r);

    // Without the client Service's name.
    w.kube.insert_tls_secret(
        NS,
        "pd-pd-tls",
        &ca.pem(),
        &ca.member(&["*.pd-pd-peer.ns.svc", "pd-pd-peer.ns.svc"]),
    );
    let r = w.reconcile_group().await;
    assert!(w.instances().is_empty());
    w.assert_refused(tls::CERTIFICATE_MISSING_SAN, r);
    assert!(w.message(condition::SYNCED).contains("pd-pd.ns.svc"));

    // Fixed: the members are created speaking TLS.
    w.kube
        .insert_tls_secret(NS, "pd-pd-tls", &ca.pem(), &ca.member(&PD_SANS));
    w.reconcile_group().await;
    let instances = w.instances();
    assert_eq!(instances.len(), 3);
    assert!(instances.iter().all(|i| i.spec.tls_cluster));
    assert_eq!(w.condition(condition::SYNCED).0, "True");
    w.reconcile_all_instances().await;
    let name = &w.instance_names()[0];
    let cm: ConfigMap = w
        .kube
        .get_typed(&ObjectKey::new::<ConfigMap>(Some(NS), name))
        .unwrap();
    let toml = &cm.data.unwrap()["pd.toml"];
    assert!(
        toml.contains("cacert-path = \"/var/lib/pd-tls/ca.crt\""),
        "{toml}"
    );
    assert!(!toml.contains("http://"), "{toml}");
    let pod: Pod = w.kube.get_typed(&pod_key(name)).unwrap();
    assert!(
        pod.spec.unwrap().volumes.unwrap().iter().any(|v| v
            .secret
            .as_ref()
            .and_then(|s| s.secret_name.as_deref())
            == Some("pd-pd-tls"))
    );
}

/// A certificate that covers the Services but no member: the members the
/// group would create are named, with the wildcard that covers them all.
#[tokio::test]
async fn a_member_the_certificate_does_not_cover_is_not_created() {
    let mut w = World::new(3, None).with_tls();
    let ca = TestCa::new("ca");
    w.kube
        .insert_tls_secret(NS, "basic-client-tls", &ca.pem(), &ca.client());
    w.kube.insert_tls_secret(
        NS,
        "pd-pd-tls",
        &ca.pem(),
        &ca.member(&["pd-pd.ns.svc", "pd-pd-peer.ns.svc"]),
    );
    let r = w.reconcile_group().await;
    assert!(w.instances().is_empty());
    w.assert_refused(tls::CERTIFICATE_MISSING_SAN, r);
    let message = w.message(condition::SYNCED);
    assert!(message.contains(".pd-pd-peer.ns.svc"), "{message}");
    assert!(message.contains("*.pd-pd-peer.ns.svc"), "{message}");
}

/// A Secret that breaks after the members run: they keep running, a
/// template change reaches none of them until it is fixed.
#[tokio::test]
async fn a_broken_secret_leaves_running_members_alone_until_fixed() {
    let mut w = World::new(3, None).with_tls();
    let ca = TestCa::new("ca");
    w.kube
        .insert_tls_secret(NS, "basic-client-tls", &ca.pem(), &ca.client());
    let good = ca.member(&PD_SANS);
    w.kube.insert_tls_secret(NS, "pd-pd-tls", &ca.pem(), &good);
    w.reconcile_group().await;
    w.reconcile_all_instances().await;
    w.run_pods();
    w.reconcile_group().await;
    w.reconcile_all_instances().await;
    w.cluster.pd_cluster_id_known = true;
    assert_eq!(w.pd.member_names().len(), 3);

    // The key disappears, then the template changes.
    w.kube.insert_secret(
        NS,
        "pd-pd-tls",
        &[
            ("ca.crt", ca.pem().as_bytes()),
            ("tls.crt", good.cert.as_bytes()),
        ],
    );
    let mut g = w.kube.get(&group_key()).unwrap();
    g["spec"]["template"]["spec"]["config"] = "[log]\nlevel = \"debug\"\n".into();
    w.kube.insert(group_key(), g);
    w.kube.clear_calls();
    let r = w.reconcile_group().await;
    w.reconcile_all_instances().await;
    w.assert_refused(tls::SECRET_MISSING, r);
    assert!(w.message(condition::SYNCED).contains("no key tls.key"));
    assert!(w.deletes().is_empty(), "nothing deleted: {:?}", w.deletes());
    assert!(
        w.instances()
            .iter()
            .all(|i| i.spec.template.config.is_none())
    );
    assert_eq!(w.missing_pods(), Vec::<String>::new());

    // Fixed: the template rolls out as usual.
    w.kube.insert_tls_secret(NS, "pd-pd-tls", &ca.pem(), &good);
    w.reconcile_group().await;
    assert_eq!(w.condition(condition::SYNCED).0, "True");
    assert!(
        w.instances()
            .iter()
            .all(|i| i.spec.template.config.is_some())
    );
}

/// A plaintext Cluster never reads a Secret.
#[tokio::test]
async fn a_plaintext_group_reads_no_secret() {
    let mut w = World::new(3, None);
    w.reconcile_group().await;
    assert_eq!(w.instances().len(), 3);
    assert!(w.instances().iter().all(|i| !i.spec.tls_cluster));
    assert!(
        !w.kube
            .calls()
            .iter()
            .any(|c| matches!(c, KubeCall::GetSecret(_)))
    );
}

/// A Cluster that does not carry the operator's finalizer yet gets no PD
/// member: deleted at once, it would go without the operator seeing its
/// deletion through, and a PD created meanwhile would hold its namespace
/// forever (found by e2e). The group waits with `WaitingForCluster` and
/// creates the member once the Cluster is claimed.
#[tokio::test]
async fn nothing_is_created_for_a_cluster_not_yet_claimed() {
    let mut w = World::new(1, None);
    w.cluster.unclaimed = true;
    for _ in 0..3 {
        w.reconcile_group().await;
    }
    assert!(
        w.instances().is_empty(),
        "a PD was created for an unclaimed Cluster"
    );
    let (status, reason) = w.condition(condition::PROGRESSING);
    assert_eq!(
        (status.as_str(), reason.as_str()),
        (
            "True",
            tikv_operator_core::component::group::WAITING_FOR_CLUSTER
        )
    );
    w.cluster.unclaimed = false;
    w.reconcile_group().await;
    assert_eq!(w.instances().len(), 1);
}
