//! Rolling updates of TiKV stores through the reconcilers, with the fake PD
//! and a simulated kubelet: one store disrupted at a time (checked after
//! every single step), leaders evicted first, no evict-leader entry left
//! behind on any path, PD first for version upgrades, downgrades refused.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;

use common::*;
use pd_client::{DownPeer, PdError, StoreLiveness};
use tikv_operator_api::PDGroup;
use tikv_operator_api::tikv::StoreState;
use tikv_operator_core::Clock;
use tikv_operator_core::fake::KubeOp;
use tikv_operator_tikv_layer::reconcile::pd_upgrading;

/// Kubelet calls (rounds of 5 s) a restarted store takes to register again.
const BOOT_ROUNDS: u32 = 3;

impl World {
    fn patch_template(&self, f: impl FnOnce(&mut Value)) {
        let mut g = self.kube.get(&group_key()).unwrap();
        f(&mut g["spec"]["template"]["spec"]);
        g["metadata"]["generation"] = (g["metadata"]["generation"].as_i64().unwrap() + 1).into();
        self.kube.insert(group_key(), g);
    }

    fn annotate_group(&self, key: &str, value: &str) {
        let mut g = self.kube.get(&group_key()).unwrap();
        g["metadata"]["annotations"][key] = value.into();
        self.kube.insert(group_key(), g);
    }

    fn pod_uid(&self, name: &str) -> Option<String> {
        self.kube
            .get(&pod_key(name))
            .map(|p| p["metadata"]["uid"].as_str().unwrap_or("").to_owned())
    }

    /// The kubelet and TiKV around restarts: a new Pod gets a creation time,
    /// runs and turns Ready; its process registers the store again only
    /// [`BOOT_ROUNDS`] calls later (TiKV opens its engines first). Until then PD still reports
    /// the store Up from the old process's heartbeats (PD notices a missing
    /// heartbeat only after about 20 s), which must not count as back.
    fn kubelet(&mut self) {
        let mut still = Vec::new();
        for (name, left) in std::mem::take(&mut self.booting) {
            if left > 0 {
                still.push((name, left - 1));
                continue;
            }
            if let Some(id) = self.instance(&name).and_then(|i| i.status?.id) {
                let id = StoreId(id.parse().unwrap());
                self.pd.set_store_started(id, self.clock.now().as_second());
                self.pd.set_store_liveness(id, StoreLiveness::Alive);
            }
        }
        self.booting = still;
        for name in self.instance_names() {
            let Some(mut pod) = self.kube.get(&pod_key(&name)) else {
                continue;
            };
            let uid = pod["metadata"]["uid"].as_str().unwrap().to_owned();
            if self.pod_uids.get(&name) != Some(&uid) {
                // A Pod the kubelet has not run yet.
                pod["metadata"]["creationTimestamp"] = self.clock.now().to_string().into();
                self.kube.insert(pod_key(&name), pod);
                if self.pod_uids.insert(name.clone(), uid).is_some() {
                    self.booting.push((name, BOOT_ROUNDS));
                }
            }
        }
        self.run_pods();
    }

    /// Safety rule 2, checked after every step: at most `max` stores are
    /// disrupted (Pod missing or not Ready, store not heartbeating, or its
    /// leaders being evicted).
    fn check_disruption(&mut self) {
        let evicting = self.evicting_now();
        let mut disrupted = Vec::new();
        for i in self.instances() {
            let name = i.metadata.name.clone().unwrap();
            let pod_ok = self
                .kube
                .get(&pod_key(&name))
                .is_some_and(|p| p["status"]["conditions"][0]["status"].as_str() == Some("True"));
            let store = i
                .status
                .as_ref()
                .and_then(|s| s.id.as_ref())
                .map(|id| id.parse::<u64>().unwrap());
            let store_ok = store.is_none_or(|id| {
                self.pd.store_snapshot(StoreId(id)).is_some_and(|s| {
                    !matches!(
                        s.liveness,
                        StoreLiveness::Disconnected | StoreLiveness::Down
                    )
                }) && !evicting.contains(&id)
            }) && !self.booting.iter().any(|(n, _)| *n == name);
            if !pod_ok || !store_ok {
                disrupted.push(name);
            }
        }
        assert!(
            disrupted.len() <= self.max_disrupted,
            "more than {} store(s) disrupted at once: {disrupted:?}",
            self.max_disrupted
        );
        self.most_disrupted = self.most_disrupted.max(disrupted.len());
    }

    fn evicting_now(&self) -> BTreeSet<u64> {
        self.pd
            .evicting_snapshot()
            .into_iter()
            .map(|s| s.0)
            .collect()
    }

    /// One round of everything, the disruption checked after each step.
    async fn rolling_round(&mut self) {
        self.reconcile_group().await;
        self.check_disruption();
        for name in self.instance_names() {
            self.reconcile_instance(&name).await;
            self.check_disruption();
        }
        self.kubelet();
        self.check_disruption();
        self.pd.tick();
        self.check_disruption();
        self.clock.advance(Duration::from_secs(5));
    }

    async fn roll_until_done(&mut self, max_rounds: usize) -> usize {
        for round in 0..max_rounds {
            self.rolling_round().await;
            let st = self.group().status.unwrap();
            let done = st.group.update_revision == st.group.current_revision
                && st.group.updated_replicas == 3
                && self.evicting_now().is_empty()
                && self.group_condition(condition::PROGRESSING).0 == "False";
            if done {
                return round;
            }
        }
        let detail: Vec<String> = self
            .instances()
            .iter()
            .map(|i| {
                let name = i.metadata.name.clone().unwrap();
                let store = i.status.as_ref().and_then(|s| s.id.clone());
                format!(
                    "{name}: {:?} pod={:?} store={:?}",
                    i.status.as_ref().map(|s| &s.common.conditions),
                    self.kube
                        .get(&pod_key(&name))
                        .map(|p| p["metadata"].clone()),
                    store.and_then(|id| self.pd.store_snapshot(StoreId(id.parse().unwrap())))
                )
            })
            .collect();
        panic!(
            "the rolling update did not finish in {max_rounds} rounds: {:?}\n{}",
            self.group_condition(condition::PROGRESSING),
            detail.join("\n")
        );
    }

    fn uids_of_pods(&self) -> Vec<Option<String>> {
        self.instance_names()
            .iter()
            .map(|n| self.pod_uid(n))
            .collect()
    }
}

async fn serving3() -> World {
    let mut w = World::serving(3).await;
    w.kubelet();
    // The Pods and their stores' processes started long before this test.
    for name in w.instance_names() {
        let mut pod = w.kube.get(&pod_key(&name)).unwrap();
        pod["metadata"]["creationTimestamp"] = "1969-12-31T22:00:00Z".into();
        w.kube.insert(pod_key(&name), pod);
        w.pd.set_store_started(w.store_of(&name), -3600);
    }
    w.rolling_round().await;
    w
}

fn pod_deletes(w: &World) -> usize {
    w.deletes().iter().filter(|k| k.kind == "Pod").count()
}

#[tokio::test]
async fn a_version_change_restarts_every_store_once_one_at_a_time_leaders_first() {
    let mut w = serving3().await;
    let before = w.uids_of_pods();
    let stores_before: Vec<StoreId> = w.instance_names().iter().map(|n| w.store_of(n)).collect();
    w.kube.clear_calls();
    w.patch_template(|t| t["version"] = "v8.5.6".into());
    w.roll_until_done(200).await;

    assert_eq!(pod_deletes(&w), 3, "every Pod restarted exactly once");
    let after = w.uids_of_pods();
    for (b, a) in before.iter().zip(&after) {
        assert_ne!(b, a);
        assert!(a.is_some());
    }
    let stores_after: Vec<StoreId> = w.instance_names().iter().map(|n| w.store_of(n)).collect();
    assert_eq!(stores_before, stores_after, "same stores after restarts");
    assert_eq!(w.most_disrupted, 1);
    // Leaders left before each Pod went: every restart evicted first.
    let ops = w.pd.calls();
    assert!(ops.iter().filter(|o| **o == FakeOp::AddEvictLeader).count() >= 3);
    assert!(w.evicting_now().is_empty(), "no evict-leader entry left");
    let st = w.group().status.unwrap();
    assert_eq!(st.group.version.as_deref(), Some("v8.5.6"));
    assert_eq!(
        (st.group.updated_replicas, st.group.current_replicas),
        (3, 3)
    );
    for n in w.instance_names() {
        let i = w.instance(&n).unwrap();
        assert!(i.status.unwrap().leader_eviction_started_at.is_none());
        assert!(
            !i.metadata
                .annotations
                .unwrap_or_default()
                .contains_key(labels::RESTART_ALLOWED),
            "grants are withdrawn once a restart finished"
        );
    }
    let reasons_ = w.event_reasons();
    for r in [
        reasons::ROLLING_UPDATE,
        reasons::EVICTING_LEADERS,
        reasons::RESTARTING,
        reasons::RESTARTED,
    ] {
        assert!(
            reasons_.iter().any(|e| e == r),
            "no {r} Event: {reasons_:?}"
        );
    }
}

#[tokio::test]
async fn max_unavailable_two_restarts_two_at_a_time() {
    let mut w = serving3().await;
    let mut g = w.kube.get(&group_key()).unwrap();
    g["spec"]["maxUnavailable"] = 2.into();
    w.kube.insert(group_key(), g);
    w.max_disrupted = 2;
    w.patch_template(|t| t["version"] = "v8.5.6".into());
    w.roll_until_done(200).await;
    assert_eq!(w.most_disrupted, 2, "the larger budget is used");
}

#[tokio::test]
async fn no_second_grant_before_the_first_restart_shows_and_no_grant_while_another_store_is_down() {
    let mut w = serving3().await;
    w.patch_template(|t| t["config"] = "[raftstore]\ncapacity = \"10GB\"\n".into());
    // The group reconciles many times before any instance does.
    for _ in 0..5 {
        w.reconcile_group().await;
    }
    let granted: Vec<String> = w
        .instances()
        .into_iter()
        .filter(|i| {
            i.metadata
                .annotations
                .as_ref()
                .is_some_and(|a| a.contains_key(labels::RESTART_ALLOWED))
        })
        .map(|i| i.metadata.name.unwrap())
        .collect();
    assert_eq!(granted.len(), 1, "{granted:?}");

    // Another store is down (not the granted one): nothing more is granted,
    // and the group says why.
    let mut w = serving3().await;
    let names = w.instance_names();
    w.pd.set_store_liveness(w.store_of(&names[2]), StoreLiveness::Disconnected);
    w.patch_template(|t| t["version"] = "v8.5.6".into());
    w.reconcile_group().await;
    let granted: Vec<String> = w
        .instances()
        .into_iter()
        .filter(|i| {
            i.metadata
                .annotations
                .as_ref()
                .is_some_and(|a| a.contains_key(labels::RESTART_ALLOWED))
        })
        .map(|i| i.metadata.name.unwrap())
        .collect();
    // The unavailable store itself is restarted first: that adds nothing.
    assert_eq!(granted, vec![names[2].clone()]);
    w.reconcile_group().await;
    let (_, reason, message) = w.group_condition(condition::PROGRESSING);
    assert_eq!(reason, reasons::WAITING_FOR_STORES, "{message}");
    assert!(message.contains(&names[2]), "{message}");
}

#[tokio::test]
async fn a_store_of_another_group_that_is_down_uses_up_the_budget() {
    let mut w = serving3().await;
    w.add_group("hdd", 1, "hdd");
    w.reconcile_group_named("hdd").await;
    w.reconcile_all_instances().await;
    w.run_pods();
    w.reconcile_all_instances().await;
    let hdd = w
        .instance_names()
        .into_iter()
        .find(|n| n.starts_with("hdd"))
        .unwrap();
    w.pd.set_store_liveness(w.store_of(&hdd), StoreLiveness::Disconnected);
    w.patch_template(|t| t["version"] = "v8.5.6".into());
    for _ in 0..3 {
        w.reconcile_group().await;
    }
    let (_, reason, message) = w.group_condition(condition::PROGRESSING);
    assert_eq!(reason, reasons::WAITING_FOR_STORES, "{message}");
    assert!(message.contains(&hdd), "{message}");
    assert!(w.instances().iter().all(|i| {
        i.metadata
            .annotations
            .as_ref()
            .is_none_or(|a| !a.contains_key(labels::RESTART_ALLOWED))
    }));
}

#[tokio::test]
async fn eviction_timeout_proceeds_only_without_down_peers_elsewhere() {
    let mut w = serving3().await;
    w.patch_template(|t| t["version"] = "v8.5.6".into());
    w.reconcile_group().await;
    let target = w
        .instances()
        .into_iter()
        .find(|i| {
            i.metadata
                .annotations
                .as_ref()
                .is_some_and(|a| a.contains_key(labels::RESTART_ALLOWED))
        })
        .unwrap()
        .metadata
        .name
        .unwrap();
    let id = w.store_of(&target);
    let other = w
        .instance_names()
        .into_iter()
        .find(|n| *n != target)
        .unwrap();
    let other_id = w.store_of(&other);
    w.pd.set_down_peers(vec![DownPeer {
        region_id: 1,
        peer_id: 2,
        store_id: other_id,
        down_seconds: 100,
    }]);
    let before = w.pod_uid(&target);
    // Leaders never leave (PD cannot move them).
    for _ in 0..80 {
        w.reconcile_instance(&target).await;
        w.pd.set_store_counts(id, 20, 10);
        w.clock.advance(Duration::from_secs(5));
    }
    assert_eq!(
        w.pod_uid(&target),
        before,
        "no restart with down peers elsewhere"
    );
    assert_eq!(
        w.instance_condition(&target, condition::SYNCED).unwrap(),
        ("False".into(), reasons::EVICTION_TIMED_OUT.into())
    );
    let warnings = w
        .kube
        .events()
        .into_iter()
        .filter(|e| e.reason == reasons::EVICTION_TIMED_OUT)
        .count();
    assert_eq!(warnings, 1, "one Warning, not one per poll");
    // Down peers recover: the restart goes ahead, with a Warning.
    w.pd.set_down_peers(vec![]);
    w.reconcile_instance(&target).await;
    assert!(
        w.pod_uid(&target).is_none(),
        "Pod deleted after the timeout"
    );
    assert_eq!(
        w.kube
            .events()
            .into_iter()
            .filter(|e| e.reason == reasons::EVICTION_TIMED_OUT)
            .count(),
        2
    );
    w.roll_until_done(200).await;
    assert!(w.evicting_now().is_empty());
}

#[tokio::test]
async fn pd_outage_mid_restart_stops_everything_and_the_restart_resumes() {
    let mut w = serving3().await;
    w.patch_template(|t| t["version"] = "v8.5.6".into());
    w.reconcile_group().await;
    let names = w.instance_names();
    for n in &names {
        w.reconcile_instance(n).await;
    }
    assert!(!w.evicting_now().is_empty(), "eviction started");
    w.pd.set_unreachable(true);
    w.kube.clear_calls();
    for _ in 0..20 {
        w.reconcile_group().await;
        for n in &names {
            w.reconcile_instance(n).await;
        }
        w.clock.advance(Duration::from_secs(30));
    }
    assert_eq!(
        pod_deletes(&w),
        0,
        "nothing destructive while PD is unreachable"
    );
    let (_, reason, _) = w.group_condition(condition::PROGRESSING);
    assert_eq!(reason, reasons::PD_UNAVAILABLE);
    w.pd.set_unreachable(false);
    w.roll_until_done(200).await;
    assert!(w.evicting_now().is_empty());
}

/// A PD leader change while a restarted store boots: the new leader lists no
/// scheduler until it has loaded them, and the evict-leader calls answer
/// `Unavailable` meanwhile (the real client's rule, tested in pd-client). The
/// instance keeps its eviction record and its entry, no other store is
/// restarted, and once PD loaded its schedulers the entry goes as usual.
#[tokio::test]
async fn a_pd_leader_that_has_not_loaded_its_schedulers_keeps_the_entry_and_the_record() {
    let mut w = serving3().await;
    let before = w.uids_of_pods();
    w.patch_template(|t| t["version"] = "v8.5.6".into());
    let mut restarted = None;
    for _ in 0..60 {
        w.rolling_round().await;
        let now = w.uids_of_pods();
        if let Some(i) = (0..now.len()).find(|i| now[*i].is_some() && now[*i] != before[*i]) {
            restarted = Some(w.instance_names()[i].clone());
            break;
        }
    }
    let target = restarted.expect("one store restarted");
    let store = w.store_of(&target).0;
    assert!(w.evicting_now().contains(&store));
    w.pd.set_schedulers_loaded(false);
    let deletes = pod_deletes(&w);
    let names = w.instance_names();
    for _ in 0..20 {
        w.reconcile_group().await;
        for n in &names {
            // Removing the entry fails while PD has not loaded its schedulers.
            let _ = w.try_reconcile_instance(n).await;
            w.check_disruption();
        }
        w.kubelet();
        w.check_disruption();
        w.clock.advance(Duration::from_secs(5));
    }
    assert!(
        w.evicting_now().contains(&store),
        "the entry stays in PD's storage"
    );
    assert!(
        w.instance(&target)
            .unwrap()
            .status
            .unwrap()
            .leader_eviction_started_at
            .is_some(),
        "the record stays until the entry is removed"
    );
    assert_eq!(
        pod_deletes(&w),
        deletes,
        "no other store restarted meanwhile"
    );
    w.pd.set_schedulers_loaded(true);
    w.roll_until_done(200).await;
    assert!(w.evicting_now().is_empty(), "no evict-leader entry left");
}

/// A template whose config does not parse reaches no instance and restarts
/// nothing; the group says so (`Synced=False`, not `Ready`, the parse error's
/// line), and fixing the config rolls out as usual.
#[tokio::test]
async fn a_template_with_a_broken_config_reaches_no_instance() {
    let mut w = serving3().await;
    let before: Vec<Option<String>> = w
        .instances()
        .iter()
        .map(|i| i.spec.template.config.clone())
        .collect();
    w.kube.clear_calls();
    w.patch_template(|t| t["config"] = "[log]\nlevel = \"warn\"\nbroken\n".into());
    for _ in 0..5 {
        w.rolling_round().await;
    }
    let after: Vec<Option<String>> = w
        .instances()
        .iter()
        .map(|i| i.spec.template.config.clone())
        .collect();
    assert_eq!(before, after, "no instance got the broken config");
    assert_eq!(pod_deletes(&w), 0);
    let (status, reason, message) = w.group_condition(condition::SYNCED);
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", reasons::INVALID_CONFIG)
    );
    assert!(message.contains("line 3"), "{message}");
    assert_eq!(w.group_condition(condition::READY).0, "False");
    // Fixed: the template rolls out.
    w.patch_template(|t| t["config"] = "[log]\nlevel = \"warn\"\n".into());
    w.roll_until_done(200).await;
    assert_eq!(w.group_condition(condition::SYNCED).0, "True");
    assert!(
        w.instances()
            .iter()
            .all(|i| i.spec.template.config.as_deref() == Some("[log]\nlevel = \"warn\"\n"))
    );
}

#[tokio::test]
async fn an_operator_restart_mid_eviction_leaves_no_orphaned_entry() {
    let mut w = serving3().await;
    w.patch_template(|t| t["version"] = "v8.5.6".into());
    w.reconcile_group().await;
    let target = w
        .instances()
        .into_iter()
        .find(|i| {
            i.metadata
                .annotations
                .as_ref()
                .is_some_and(|a| a.contains_key(labels::RESTART_ALLOWED))
        })
        .unwrap()
        .metadata
        .name
        .unwrap();
    // The operator dies between recording the eviction and adding the
    // entry: the record is there, the entry is not.
    w.pd.inject_error(
        FakeOp::AddEvictLeader,
        PdError::Unavailable {
            message: "operator killed".into(),
            source: None,
        },
    );
    assert!(w.try_reconcile_instance(&target).await.is_err());
    assert!(
        w.instance(&target)
            .unwrap()
            .status
            .unwrap()
            .leader_eviction_started_at
            .is_some()
    );
    assert!(w.evicting_now().is_empty());
    // A fresh operator (the reconcilers keep no memory) re-adds it.
    w.reconcile_instance(&target).await;
    assert!(w.evicting_now().contains(&w.store_of(&target).0));
    // Then the user reverts the change mid-eviction: the entry goes.
    w.patch_template(|t| t["version"] = "v8.5.5".into());
    for _ in 0..5 {
        w.rolling_round().await;
    }
    assert!(
        w.evicting_now().is_empty(),
        "no orphaned evict-leader entry"
    );
    assert!(
        w.instance(&target)
            .unwrap()
            .status
            .unwrap()
            .leader_eviction_started_at
            .is_none()
    );
    assert_eq!(
        pod_deletes(&w),
        0,
        "{:?} {:?}",
        w.deletes(),
        w.event_reasons()
    );
}

#[tokio::test]
async fn tikv_version_upgrades_wait_for_pd_unless_no_constraints() {
    let mut w = serving3().await;
    w.cluster.pd_upgrading = Some("PDGroup pd is still updating to v8.5.6".into());
    w.patch_template(|t| t["version"] = "v8.5.6".into());
    for _ in 0..5 {
        w.rolling_round().await;
    }
    let (_, reason, message) = w.group_condition(condition::PROGRESSING);
    assert_eq!(reason, reasons::WAITING_FOR_PD_UPGRADE, "{message}");
    assert_eq!(pod_deletes(&w), 0);
    w.cluster.pd_upgrading = None;
    w.roll_until_done(200).await;

    // A config-only change is not a version upgrade: it does not wait.
    w.cluster.pd_upgrading = Some("PDGroup pd is still updating".into());
    w.patch_template(|t| t["config"] = "[raftstore]\ncapacity = \"10GB\"\n".into());
    w.roll_until_done(200).await;
}

fn pd_group(version: &str, status_version: &str, updated: bool) -> PDGroup {
    serde_json::from_value(json!({
        "apiVersion": "core.tikv.org/v1alpha1",
        "kind": "PDGroup",
        "metadata": {"name": "pd", "namespace": NS, "generation": 2},
        "spec": {"cluster": {"name": "basic"}, "replicas": 3, "template": {"spec": {
            "version": version,
            "volumes": [{"name": "data", "mounts": [{"type": "data"}], "storage": "1Gi"}]
        }}},
        "status": {
            "observedGeneration": 2,
            "conditions": [{"type": "Ready", "status": "True", "reason": "AllMembersReady",
                            "message": "", "lastTransitionTime": "2026-11-22T00:00:00Z"}],
            "version": status_version,
            "replicas": 3, "readyReplicas": 3, "updatedReplicas": if updated { 3 } else { 1 },
            "currentReplicas": 3,
            "updateRevision": "new",
            "currentRevision": if updated { "new" } else { "old" }
        }
    }))
    .unwrap()
}

#[test]
fn pd_is_done_when_every_group_runs_its_version_on_its_update_revision() {
    assert!(pd_upgrading(None, &[pd_group("v8.5.6", "v8.5.5", false)]).is_some());
    assert!(pd_upgrading(None, &[pd_group("v8.5.6", "v8.5.6", true)]).is_none());
    let cluster: tikv_operator_api::Cluster = serde_json::from_value(json!({
        "apiVersion": "core.tikv.org/v1alpha1",
        "kind": "Cluster",
        "metadata": {"name": "basic", "namespace": NS},
        "spec": {"upgradePolicy": "NoConstraints"}
    }))
    .unwrap();
    assert!(pd_upgrading(Some(&cluster), &[pd_group("v8.5.6", "v8.5.5", false)]).is_none());
}

#[tokio::test]
async fn a_downgrade_is_refused_and_reaches_no_instance_unless_allowed() {
    let mut w = serving3().await;
    w.patch_template(|t| t["version"] = "v8.1.0".into());
    w.kube.clear_calls();
    for _ in 0..3 {
        w.rolling_round().await;
    }
    let (_, reason, message) = w.group_condition(condition::PROGRESSING);
    assert_eq!(reason, reasons::DOWNGRADE_REFUSED, "{message}");
    assert!(
        w.instances()
            .iter()
            .all(|i| i.spec.template.version == "v8.5.5")
    );
    assert_eq!(pod_deletes(&w), 0);
    assert_eq!(
        w.kube
            .events()
            .into_iter()
            .filter(|e| e.reason == reasons::DOWNGRADE_REFUSED)
            .count(),
        1,
        "one Warning, not one per reconcile"
    );
    w.annotate_group(labels::ALLOW_DOWNGRADE, "true");
    w.roll_until_done(200).await;
    assert!(
        w.instances()
            .iter()
            .all(|i| i.spec.template.version == "v8.1.0")
    );
}

#[tokio::test]
async fn hot_reload_config_changes_restart_nothing_and_a_restart_request_restarts_each_once() {
    let mut w = serving3().await;
    w.kube.clear_calls();
    w.patch_template(|t| {
        t["updateStrategy"] = json!({"config": "HotReload"});
        t["config"] = "[raftstore]\ncapacity = \"10GB\"\n".into();
    });
    w.roll_until_done(50).await;
    assert_eq!(pod_deletes(&w), 0, "HotReload restarts no Pod");
    for n in w.instance_names() {
        let cm: ConfigMap = w
            .kube
            .get_typed(&ObjectKey::new::<ConfigMap>(Some(NS), &n))
            .unwrap();
        assert!(cm.data.unwrap()["tikv.toml"].contains("10GB"));
    }
    let kv_ops_before = w.kube.calls().len();
    w.annotate_group(labels::RESTARTED_AT, "2026-11-22T05:00:00Z");
    w.roll_until_done(200).await;
    assert_eq!(pod_deletes(&w), 3, "each Pod restarted exactly once");
    assert!(w.kube.calls().len() > kv_ops_before);
    // Nothing more happens afterwards.
    w.kube.clear_calls();
    for _ in 0..5 {
        w.rolling_round().await;
    }
    assert!(
        w.kube
            .calls()
            .iter()
            .all(|c| c.op() != KubeOp::Delete && c.op() != KubeOp::Apply),
        "{:?}",
        w.kube.calls()
    );
}

#[tokio::test]
async fn scaling_during_an_update_new_stores_start_updated_and_scale_in_takes_an_outdated_one() {
    let mut w = serving3().await;
    w.patch_template(|t| t["version"] = "v8.5.6".into());
    w.set_replicas(4);
    w.reconcile_group().await;
    let new: Vec<TiKV> = w
        .instances()
        .into_iter()
        .filter(|i| i.status.is_none())
        .collect();
    assert_eq!(new.len(), 1);
    assert_eq!(new[0].spec.template.version, "v8.5.6");
    // Scale back in before any restart: an outdated store goes, not the new one.
    let new_name = new[0].metadata.name.clone().unwrap();
    w.reconcile_instance(&new_name).await;
    w.kubelet();
    w.reconcile_instance(&new_name).await;
    w.set_replicas(3);
    w.reconcile_group().await;
    let offline = w.offline_instances();
    assert_eq!(offline.len(), 1);
    assert_ne!(offline[0], new_name, "the updated store stays");
    let st = w
        .instance(&offline[0])
        .unwrap()
        .status
        .unwrap()
        .state
        .unwrap();
    assert_eq!(st, StoreState::Serving);
}

#[tokio::test]
async fn the_revision_history_keeps_each_template_and_is_bounded_by_the_limit() {
    use k8s_openapi::api::apps::v1::ControllerRevision;
    let history = |w: &World| -> Vec<(i64, String)> {
        let mut v: Vec<(i64, String)> = w
            .kube
            .list::<ControllerRevision>("ControllerRevision", NS)
            .into_iter()
            .map(|cr| {
                (
                    cr.revision,
                    cr.metadata.labels.unwrap()[labels::TEMPLATE_REVISION].clone(),
                )
            })
            .collect();
        v.sort();
        v
    };
    let mut w = serving3().await;
    w.cluster.revision_history_limit = 1;
    let first = w.group().status.unwrap().group.update_revision.unwrap();
    assert_eq!(history(&w), vec![(1, first.clone())]);
    let cr: ControllerRevision = w
        .kube
        .list::<ControllerRevision>("ControllerRevision", NS)
        .remove(0);
    assert_eq!(
        cr.data.unwrap().0["template"]["spec"]["version"],
        json!("v8.5.5"),
        "the revision holds the template it stands for"
    );

    w.patch_template(|t| t["version"] = "v8.5.6".into());
    w.roll_until_done(200).await;
    let second = w.group().status.unwrap().group.update_revision.unwrap();
    assert_eq!(history(&w), vec![(1, first.clone()), (2, second.clone())]);

    // A third revision: with limit 1, the oldest goes once it is neither the
    // update nor the current revision.
    w.annotate_group(labels::RESTARTED_AT, "now");
    w.roll_until_done(200).await;
    let third = w.group().status.unwrap().group.update_revision.unwrap();
    assert_eq!(history(&w), vec![(2, second), (3, third)]);
}

/// Issue 23: upgrading the operator restarts no TiKV Pod. A Pod stamped by
/// an operator version before the rendering generation (a legacy revision of
/// today's rendering) is re-stamped in place; Pods another rendering made
/// keep their spec, and only their metadata follows the template.
#[tokio::test]
async fn an_operator_upgrade_restarts_no_tikv_pod() {
    let mut w = World::serving(3).await;
    let names = w.instance_names();
    for (i, name) in names.iter().enumerate() {
        let mut pod: Value = w.kube.get(&pod_key(name)).unwrap();
        if i == 0 {
            let typed: Pod = serde_json::from_value(pod.clone()).unwrap();
            pod["metadata"]["annotations"][labels::INSTANCE_REVISION] = json!(
                tikv_operator_core::revision::legacy_pod_revision(&typed, true)
            );
            pod["metadata"]["annotations"]
                .as_object_mut()
                .unwrap()
                .remove(labels::RENDERED_SPEC);
        } else {
            pod["spec"]["containers"][0]["env"] = json!([{"name": "OLD_RENDERING", "value": "1"}]);
            pod["metadata"]["annotations"][labels::RENDERED_SPEC] = json!("another-rendering");
        }
        w.kube.insert(pod_key(name), pod);
    }
    let mut g = w.kube.get(&group_key()).unwrap();
    g["spec"]["template"]["metadata"] = json!({"labels": {"team": "storage"}});
    w.kube.insert(group_key(), g);
    w.kube.clear_calls();
    for _ in 0..4 {
        w.round().await;
    }
    let pods_deleted: Vec<ObjectKey> = w
        .deletes()
        .into_iter()
        .filter(|k| k.kind == "Pod")
        .collect();
    assert_eq!(
        pods_deleted,
        vec![],
        "an operator upgrade restarted TiKV Pods"
    );
    assert!(
        !w.event_reasons()
            .iter()
            .any(|r| r == reasons::ROLLING_UPDATE)
    );
    for (i, name) in names.iter().enumerate() {
        let pod: Pod = w.kube.get_typed(&pod_key(name)).unwrap();
        let revision = &pod.metadata.annotations.as_ref().unwrap()[labels::INSTANCE_REVISION];
        assert!(
            revision.starts_with('g'),
            "{name} not re-stamped: {revision}"
        );
        assert_eq!(pod.metadata.labels.as_ref().unwrap()["team"], "storage");
        let env = pod.spec.unwrap().containers[0].env.clone();
        assert_eq!(env.is_some(), i != 0, "{name}: the running spec changed");
    }
    let st = w.group().status.unwrap().group;
    assert_eq!((st.updated_replicas, st.current_replicas), (3, 3));
    assert_eq!(st.update_revision, st.current_revision);
    assert_eq!(w.group_condition(condition::PROGRESSING).0, "False");
}
