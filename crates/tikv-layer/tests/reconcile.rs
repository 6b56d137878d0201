//! Reconciler tests: the TiKV-layer reconcilers against the fake Kubernetes
//! writer (whose stored objects play the watch caches) and the fake PD.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;

#[tokio::test]
async fn stores_join_report_their_state_and_carry_their_labels() {
    let w = World::serving(3).await;
    let names = w.instance_names();
    assert_eq!(names.len(), 3);
    let zones: Vec<String> = w
        .instances()
        .iter()
        .map(|i| i.spec.topology.as_ref().unwrap()[ZONE].clone())
        .collect();
    assert_eq!(zones, ["a", "b", "c"], "spread over the topologies");
    assert!(
        w.kube
            .get(&ObjectKey::new::<Service>(Some(NS), "kv-tikv-peer"))
            .is_some()
    );
    for name in &names {
        let st = w.instance(name).unwrap().status.unwrap();
        assert!(st.id.is_some());
        assert_eq!(st.state, Some(ApiStoreState::Serving));
        assert_eq!(st.leader_count, Some(10));
        assert_eq!(st.region_count, Some(20));
        assert_eq!(
            w.instance_condition(name, condition::READY).unwrap().0,
            "True"
        );
        // server.labels plus the node's labels PD's location-labels name.
        let store = w.pd.store_snapshot(w.store_of(name)).unwrap();
        let zone = &w.instance(name).unwrap().spec.topology.unwrap()[ZONE];
        assert_eq!(store.labels["disk"], "ssd");
        assert_eq!(&store.labels["zone"], zone);
        assert_eq!(store.labels["host"], format!("node-{zone}"));
    }
    let st = w.group().status.unwrap();
    assert_eq!((st.group.replicas, st.group.ready_replicas), (3, 3));
    assert_eq!(st.group.updated_replicas, 3);
    assert_eq!(st.group.version.as_deref(), Some("v8.5.5"));
    assert!(
        st.group
            .selector
            .unwrap()
            .contains("app.kubernetes.io/component=tikv")
    );
    assert_eq!(w.group_condition(condition::READY).0, "True");

    // At rest, a reconcile writes nothing and asks PD nothing but reads.
    w.kube.clear_calls();
    let calls_before = w.pd.calls().len();
    let mut w = w;
    w.reconcile_group().await;
    w.reconcile_all_instances().await;
    assert_eq!(w.kube.calls(), vec![], "an idle reconcile must not write");
    assert!(
        w.pd.calls()[calls_before..].iter().all(|op| matches!(
            op,
            FakeOp::Members | FakeOp::Stores | FakeOp::ReplicationConfig | FakeOp::EvictingStores
        )),
        "{:?}",
        &w.pd.calls()[calls_before..]
    );
}

#[tokio::test]
async fn a_store_not_serving_is_not_ready() {
    let mut w = World::new(1);
    w.reconcile_group().await;
    w.reconcile_all_instances().await;
    let name = w.instance_names()[0].clone();
    // Pod exists but no store registered yet.
    assert_eq!(
        w.instance_condition(&name, condition::READY).unwrap(),
        ("False".into(), "StoreNotRegistered".into())
    );
    w.run_pods();
    w.reconcile_instance(&name).await;
    assert_eq!(
        w.instance_condition(&name, condition::READY).unwrap().0,
        "True"
    );
    w.pd.set_store_liveness(w.store_of(&name), pd_client::StoreLiveness::Disconnected);
    w.reconcile_instance(&name).await;
    assert_eq!(
        w.instance_condition(&name, condition::READY).unwrap(),
        ("False".into(), "StoreNotServing".into())
    );
    w.pd.set_unreachable(true);
    w.reconcile_instance(&name).await;
    assert_eq!(
        w.instance_condition(&name, condition::READY).unwrap(),
        ("Unknown".into(), reasons::PD_UNAVAILABLE.into())
    );
}

#[tokio::test]
async fn scale_in_evicts_leaders_removes_the_store_then_deletes_pod_pvcs_and_instance() {
    let mut w = World::serving(4).await;
    w.pd.set_rates(3, 4);
    w.set_replicas(3);
    w.kube.clear_calls();
    w.reconcile_group().await;
    let offline = w.offline_instances();
    assert_eq!(offline.len(), 1, "exactly one instance marked offline");
    let victim = offline[0].clone();
    let store = w.watch(&victim);
    // Two-step: the group only marks; nothing is deleted by the group.
    assert!(w.deletes().is_empty());
    assert_eq!(w.instances().len(), 4);
    w.reconcile_group().await;
    assert_eq!(w.offline_instances(), vec![victim.clone()], "one at a time");

    // Leaders leave first, through an evict-leader entry of ours.
    w.reconcile_instance(&victim).await;
    assert!(w.pd.evicting_stores().await.unwrap().contains(&store));
    assert!(
        w.instance(&victim)
            .unwrap()
            .status
            .unwrap()
            .leader_eviction_started_at
            .is_some()
    );
    assert_eq!(
        w.instance_condition(&victim, reasons::CONDITION_OFFLINE)
            .unwrap(),
        ("True".into(), reasons::EVICTING_LEADERS.into())
    );
    assert!(!w.pd.calls().contains(&FakeOp::DeleteStore));

    for _ in 0..30 {
        if w.instance(&victim).is_none() {
            break;
        }
        w.round().await;
    }
    assert!(w.instance(&victim).is_none(), "instance gone at the end");
    assert!(w.kube.get(&pod_key(&victim)).is_none());
    assert!(w.kube.get(&pvc_key(&victim)).is_none());
    assert!(w.pd.store_snapshot(store).unwrap().is_removed());
    assert!(
        w.pd.evicting_stores().await.unwrap().is_empty(),
        "our evict-leader entry is removed"
    );
    assert_eq!(w.instances().len(), 3);
    let reasons_seen = w.event_reasons();
    for r in [
        reasons::OFFLINE_REQUESTED,
        reasons::EVICTING_LEADERS,
        reasons::STORE_REMOVING,
        reasons::STORE_TOMBSTONED,
    ] {
        assert!(
            reasons_seen.iter().any(|x| x == r),
            "{r} in {reasons_seen:?}"
        );
    }
    w.round().await;
    assert_eq!(w.group_condition(condition::PROGRESSING).0, "False");
    let st = w.group().status.unwrap();
    assert_eq!((st.group.replicas, st.group.ready_replicas), (3, 3));
}

#[tokio::test]
async fn scale_in_below_max_replicas_is_refused_and_reported() {
    let mut w = World::serving(3).await;
    w.set_replicas(2);
    w.kube.clear_calls();
    w.reconcile_group().await;
    assert!(w.offline_instances().is_empty());
    let (status, reason, message) = w.group_condition(condition::PROGRESSING);
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("True", reasons::BELOW_MAX_REPLICAS)
    );
    assert!(message.contains("max-replicas (3)"), "{message}");
    let warnings: Vec<_> = w
        .kube
        .events()
        .into_iter()
        .filter(|e| e.reason == reasons::BELOW_MAX_REPLICAS)
        .collect();
    assert_eq!(warnings.len(), 1);
    // Reported once, not at every reconcile.
    w.reconcile_group().await;
    assert_eq!(
        w.kube
            .events()
            .iter()
            .filter(|e| e.reason == reasons::BELOW_MAX_REPLICAS)
            .count(),
        1
    );

    // Deleting an instance directly is refused the same way by the instance.
    let name = w.instance_names()[0].clone();
    w.kube.delete(&kv_key(&name)).await.unwrap();
    for _ in 0..5 {
        w.round().await;
    }
    assert!(!w.pd.calls().contains(&FakeOp::DeleteStore));
    assert!(!w.pd.calls().contains(&FakeOp::AddEvictLeader));
    assert!(w.kube.get(&pod_key(&name)).is_some());
    assert!(w.kube.get(&pvc_key(&name)).is_some());
    assert_eq!(
        w.instance_condition(&name, reasons::CONDITION_OFFLINE)
            .unwrap(),
        ("True".into(), reasons::REMOVAL_REFUSED.into())
    );
}

#[tokio::test]
async fn raising_replicas_mid_removal_cancels_it_instead_of_creating_a_store() {
    let mut w = World::serving(4).await;
    w.pd.set_rates(10, 1); // Regions leave slowly.
    w.set_replicas(3);
    w.reconcile_group().await;
    let victim = w.offline_instances()[0].clone();
    let store = w.watch(&victim);
    // Drive until PD is removing the store.
    for _ in 0..10 {
        w.round().await;
        if w.pd.store_snapshot(store).unwrap().is_removing() {
            break;
        }
    }
    assert!(w.pd.store_snapshot(store).unwrap().is_removing());

    w.set_replicas(4);
    w.kube.clear_calls();
    w.reconcile_group().await;
    assert!(w.offline_instances().is_empty(), "offline cleared");
    assert_eq!(w.instances().len(), 4, "no new instance created");
    assert_eq!(
        w.group_condition(condition::PROGRESSING).1,
        reasons::REMOVAL_CANCELLED
    );
    for _ in 0..3 {
        w.round().await;
    }
    let s = w.pd.store_snapshot(store).unwrap();
    assert!(
        !s.is_removing() && !s.is_removed(),
        "store back to Up: {s:?}"
    );
    assert!(
        w.pd.evicting_stores().await.unwrap().is_empty(),
        "our evict-leader entry is removed on cancel"
    );
    assert!(
        w.instance(&victim)
            .unwrap()
            .status
            .unwrap()
            .leader_eviction_started_at
            .is_none()
    );
    assert!(w.kube.get(&pod_key(&victim)).is_some());
    assert_eq!(
        w.instance_condition(&victim, reasons::CONDITION_OFFLINE)
            .unwrap(),
        ("False".into(), reasons::REMOVAL_CANCELLED.into())
    );
    assert!(
        w.event_reasons()
            .iter()
            .any(|r| r == reasons::REMOVAL_CANCELLED)
    );
    assert_eq!(w.instances().len(), 4);
    assert!(w.deletes().is_empty());
}

#[tokio::test]
async fn cancelling_during_leader_eviction_removes_our_evict_leader_entry() {
    let mut w = World::serving(4).await;
    w.pd.set_rates(1, 10); // Leaders leave slowly.
    w.set_replicas(3);
    w.reconcile_group().await;
    let victim = w.offline_instances()[0].clone();
    let store = w.store_of(&victim);
    w.reconcile_instance(&victim).await;
    assert!(w.pd.evicting_stores().await.unwrap().contains(&store));
    // An evict-leader entry on a store that is not the Cluster's (another
    // client's) stays.
    let foreign = StoreId(99);
    w.pd.add_store(foreign, "elsewhere:20160");
    w.pd.add_evict_leader(foreign).await.unwrap();

    w.set_replicas(4);
    w.round().await;
    w.round().await;
    assert_eq!(
        w.pd.evicting_stores().await.unwrap(),
        [foreign].into(),
        "only our entry is removed"
    );
    assert!(!w.pd.calls().contains(&FakeOp::DeleteStore));
    assert!(!w.pd.calls().contains(&FakeOp::CancelStoreRemoval));
}

/// Item 6 of the safety issue: an evict-leader entry for a store of ours
/// that no operation of ours holds (no eviction record: leaked by a lost
/// status write, or made by hand) is removed, with an Event; a store would
/// otherwise stay leaderless for good. A paused Cluster leaves it alone (the
/// way to keep leaders off a store by hand).
#[tokio::test]
async fn a_stray_evict_leader_entry_on_our_store_is_removed() {
    let mut w = World::serving(3).await;
    let name = w.instance_names()[0].clone();
    let store = w.store_of(&name);
    w.pd.add_evict_leader(store).await.unwrap();
    w.cluster.paused = true;
    w.round().await;
    assert!(
        w.pd.evicting_stores().await.unwrap().contains(&store),
        "paused: left alone"
    );
    w.cluster.paused = false;
    w.round().await;
    assert!(w.pd.evicting_stores().await.unwrap().is_empty());
    assert!(
        w.event_reasons()
            .iter()
            .any(|r| r == reasons::STRAY_EVICT_LEADER_REMOVED),
        "{:?}",
        w.event_reasons()
    );
    assert!(w.deletes().is_empty());
}

#[tokio::test]
async fn pd_outage_mid_removal_stops_everything_destructive_and_resumes() {
    let mut w = World::serving(4).await;
    w.pd.set_rates(10, 5);
    w.set_replicas(3);
    w.reconcile_group().await;
    let victim = w.offline_instances()[0].clone();
    let store = w.watch(&victim);
    for _ in 0..10 {
        w.round().await;
        if w.pd.store_snapshot(store).unwrap().is_removing() {
            break;
        }
    }
    assert!(w.pd.store_snapshot(store).unwrap().is_removing());

    // PD goes away; meanwhile PD's own work finishes the store.
    w.pd.set_unreachable(true);
    w.pd.advance(20);
    assert!(w.pd.store_snapshot(store).unwrap().is_removed());
    w.kube.clear_calls();
    for _ in 0..5 {
        w.reconcile_group().await;
        w.reconcile_all_instances().await;
        w.clock.advance(Duration::from_secs(60));
    }
    assert!(w.deletes().is_empty(), "{:?}", w.deletes());
    assert!(w.kube.get(&pod_key(&victim)).is_some());
    assert_eq!(
        w.instance_condition(&victim, reasons::CONDITION_OFFLINE)
            .unwrap(),
        ("True".into(), reasons::PD_UNAVAILABLE.into())
    );
    let (status, reason, message) = w.group_condition(condition::PROGRESSING);
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("True", reasons::PD_UNAVAILABLE),
        "the group reports the blocked removal: {message}"
    );
    assert!(message.contains(&victim), "{message}");

    // PD is back: the removal resumes and finishes.
    w.pd.set_unreachable(false);
    for _ in 0..10 {
        if w.instance(&victim).is_none() {
            break;
        }
        w.round().await;
    }
    assert!(w.instance(&victim).is_none());
    assert!(w.kube.get(&pvc_key(&victim)).is_none());
    assert!(w.pd.evicting_stores().await.unwrap().is_empty());
}

#[tokio::test]
async fn pd_outage_before_removal_starts_blocks_the_scale_in() {
    let mut w = World::serving(4).await;
    w.pd.set_unreachable(true);
    w.set_replicas(3);
    w.kube.clear_calls();
    w.reconcile_group().await;
    assert!(w.offline_instances().is_empty());
    assert_eq!(
        w.group_condition(condition::PROGRESSING).1,
        reasons::PD_UNAVAILABLE
    );
    // Deleting an instance directly while PD is down: nothing happens to it.
    let name = w.instance_names()[1].clone();
    w.kube.delete(&kv_key(&name)).await.unwrap();
    w.kube.clear_calls();
    for _ in 0..3 {
        w.reconcile_all_instances().await;
    }
    assert!(w.deletes().is_empty());
    assert!(w.instance(&name).is_some());
}

#[tokio::test]
async fn deleting_an_instance_directly_goes_through_the_same_removal() {
    let mut w = World::serving(4).await;
    w.pd.set_rates(3, 4);
    let name = w.instance_names()[0].clone();
    let store = w.watch(&name);
    w.kube.delete(&kv_key(&name)).await.unwrap();
    for _ in 0..30 {
        if w.instance(&name).is_none() {
            break;
        }
        w.round().await;
    }
    assert!(w.instance(&name).is_none());
    assert!(w.pd.store_snapshot(store).unwrap().is_removed());
    assert!(w.pd.evicting_stores().await.unwrap().is_empty());
    // The group replaced it (replicas is still 4).
    assert_eq!(w.instances().len(), 4);
}

/// Safety rules 1 and 5: an instance deleted while its Cluster object is
/// missing (its finalizer stripped by hand) keeps its store, Pod and PVC
/// and says why; only a Cluster being deleted skips PD.
#[tokio::test]
async fn deleting_an_instance_whose_cluster_is_missing_deletes_nothing() {
    let mut w = World::serving(4).await;
    let name = w.instance_names()[0].clone();
    let store = w.watch(&name);
    w.cluster = ClusterFacts::from_cluster(None);
    w.kube.clear_calls();
    w.kube.delete(&kv_key(&name)).await.unwrap();
    for _ in 0..10 {
        w.round().await;
    }
    assert!(w.instance(&name).is_some(), "the finalizer stays");
    assert!(w.kube.get(&pod_key(&name)).is_some(), "the Pod stays");
    assert!(
        !w.deletes()
            .iter()
            .any(|k| k.kind == "PersistentVolumeClaim"),
        "{:?}",
        w.deletes()
    );
    assert!(!w.pd.store_snapshot(store).unwrap().is_removed());
    assert!(!w.pd.calls().contains(&FakeOp::DeleteStore));
    assert!(
        w.event_reasons()
            .iter()
            .any(|r| r == tikv_operator_core::conditions::CLUSTER_MISSING),
        "{:?}",
        w.event_reasons()
    );
}

/// Safety rule 1: a Pod lost (node drain, eviction) while its store is being
/// removed (scale-in, or the instance deleted by hand) is recreated: the store
/// must stay up until PD has moved its Regions away. The Pod goes only once
/// the store is Tombstone.
#[tokio::test]
async fn a_pod_lost_mid_removal_is_recreated_until_the_store_is_removed() {
    for by_hand in [false, true] {
        let mut w = World::serving(4).await;
        w.pd.set_rates(1, 1); // Leaders and Regions leave slowly.
        let victim = if by_hand {
            let name = w.instance_names()[0].clone();
            w.kube.delete(&kv_key(&name)).await.unwrap();
            name
        } else {
            w.set_replicas(3);
            w.reconcile_group().await;
            w.offline_instances()[0].clone()
        };
        let store = w.watch(&victim);
        w.reconcile_instance(&victim).await;
        assert!(w.pd.evicting_stores().await.unwrap().contains(&store));
        let uid = w.kube.get(&pod_key(&victim)).unwrap()["metadata"]["uid"].clone();
        // The node is drained: the Pod goes behind the operator's back.
        w.kube.remove(&pod_key(&victim));
        w.reconcile_instance(&victim).await;
        let again = w.kube.get(&pod_key(&victim));
        assert!(
            again.is_some(),
            "by_hand={by_hand}: the lost Pod is recreated"
        );
        assert_ne!(again.unwrap()["metadata"]["uid"], uid);
        assert!(!w.pd.store_snapshot(store).unwrap().is_removed());
        for _ in 0..60 {
            if w.pd.store_snapshot(store).unwrap().is_removed()
                && w.kube.get(&pod_key(&victim)).is_none()
            {
                break;
            }
            w.round().await;
        }
        assert!(w.pd.store_snapshot(store).unwrap().is_removed());
        assert!(w.kube.get(&pod_key(&victim)).is_none(), "by_hand={by_hand}");
    }
}

/// Safety rule 2: two instances deleted by hand at once are removed one
/// after the other: at no point are two of their stores evicting or
/// removing together.
#[tokio::test]
async fn two_instances_deleted_at_once_are_removed_one_at_a_time() {
    let mut w = World::serving(5).await;
    w.pd.set_rates(1, 2);
    let names = w.instance_names();
    let (a, b) = (names[0].clone(), names[1].clone());
    let (sa, sb) = (w.watch(&a), w.watch(&b));
    w.kube.delete(&kv_key(&a)).await.unwrap();
    w.kube.delete(&kv_key(&b)).await.unwrap();
    for _ in 0..120 {
        if w.instance(&a).is_none() && w.instance(&b).is_none() {
            break;
        }
        w.reconcile_instance(&a).await;
        w.reconcile_instance(&b).await;
        let busy = |id| {
            w.pd.evicting_snapshot().contains(&id)
                || w.pd.store_snapshot(id).is_some_and(|s| s.is_removing())
        };
        assert!(
            !(busy(sa) && busy(sb)),
            "both stores in removal at once: {:?}",
            w.pd.evicting_snapshot()
        );
        w.pd.tick();
        w.clock.advance(Duration::from_secs(5));
    }
    assert!(w.instance(&a).is_none() && w.instance(&b).is_none());
    assert!(w.pd.store_snapshot(sa).unwrap().is_removed());
    assert!(w.pd.store_snapshot(sb).unwrap().is_removed());
}

/// Safety rule 2, the race: two instances deleted at the same instant are
/// reconciled at the same moment on the same PD view (read before either
/// acted). Under the Cluster's eviction gate the second re-reads PD's
/// entries and waits instead of evicting too.
#[tokio::test]
async fn two_instances_reconciled_on_one_view_evict_one_at_a_time() {
    let w = World::serving(5).await;
    let names = w.instance_names();
    let (a, b) = (names[0].clone(), names[1].clone());
    let (sa, sb) = (w.store_of(&a), w.store_of(&b));
    w.kube.delete(&kv_key(&a)).await.unwrap();
    w.kube.delete(&kv_key(&b)).await.unwrap();
    let view = w.view().await;
    let (ra, rb) = tokio::join!(
        w.reconcile_instance_on(&a, &view),
        w.reconcile_instance_on(&b, &view)
    );
    ra.unwrap();
    rb.unwrap();
    let evicting = w.pd.evicting_snapshot();
    assert_eq!(evicting.len(), 1, "evicting at once: {evicting:?}");
    assert!(evicting.contains(&sa) || evicting.contains(&sb));
    let waiting = if evicting.contains(&sa) { &b } else { &a };
    let status = w.instance(waiting).unwrap().status.unwrap();
    assert!(status.leader_eviction_started_at.is_none(), "{status:?}");
    let offline = status
        .common
        .conditions
        .iter()
        .find(|c| c.type_ == "Offline")
        .map(|c| c.reason.clone());
    assert_eq!(offline.as_deref(), Some("AnotherRemovalInFlight"));
}

#[tokio::test]
async fn leader_eviction_is_bounded_by_the_timeout() {
    let mut w = World::serving(4).await;
    w.options.evict_leader_timeout = Duration::from_secs(60);
    w.set_replicas(3);
    w.reconcile_group().await;
    let victim = w.offline_instances()[0].clone();
    let store = w.store_of(&victim);
    // Leaders never leave (PD does no work meanwhile).
    w.reconcile_instance(&victim).await;
    w.reconcile_instance(&victim).await;
    assert!(!w.pd.calls().contains(&FakeOp::DeleteStore));
    assert_eq!(w.pd.store_snapshot(store).unwrap().leader_count, Some(10));
    w.clock.advance(Duration::from_secs(61));
    w.reconcile_instance(&victim).await;
    assert!(w.pd.calls().contains(&FakeOp::DeleteStore));
    assert!(w.pd.store_snapshot(store).unwrap().is_removing());
}

#[tokio::test]
async fn cluster_deletion_skips_store_removal() {
    let mut w = World::serving(3).await;
    w.cluster.deleting = true;
    w.pd.set_unreachable(true);
    for name in w.instance_names() {
        w.kube.delete(&kv_key(&name)).await.unwrap();
    }
    for _ in 0..4 {
        w.reconcile_group().await;
        w.reconcile_all_instances().await;
    }
    assert!(w.instances().is_empty(), "{:?}", w.instance_names());
    assert!(w.kube.list::<Value>("Pod", NS).is_empty());
    assert!(w.kube.list::<Value>("PersistentVolumeClaim", NS).is_empty());
    assert!(!w.pd.calls().contains(&FakeOp::DeleteStore));
}

/// In a namespace being deleted the API server refuses new Events; the instances must still
/// drop their finalizers (found by e2e: the namespace stayed Terminating forever).
#[tokio::test]
async fn refused_events_do_not_block_cluster_deletion() {
    let mut w = World::serving(3).await;
    w.cluster.deleting = true;
    for name in w.instance_names() {
        w.kube.delete(&kv_key(&name)).await.unwrap();
    }
    for _ in 0..100 {
        w.kube.fail_next(
            KubeOp::PublishEvent,
            "unable to create new content in namespace because it is being terminated",
        );
    }
    for _ in 0..4 {
        w.reconcile_group().await;
        w.reconcile_all_instances().await;
    }
    assert!(w.instances().is_empty(), "{:?}", w.instance_names());
    assert!(w.kube.list::<Value>("Pod", NS).is_empty());
    assert!(w.kube.list::<Value>("PersistentVolumeClaim", NS).is_empty());
}

#[tokio::test]
async fn an_owned_config_key_is_reported_not_overridden() {
    // The group refuses a template that sets an owned key: no store is
    // created with it, and the group says which key.
    let mut w = World::new(1);
    let mut g = w.kube.get(&group_key()).unwrap();
    g["spec"]["template"]["spec"]["config"] = "[pd]\nendpoints = [\"http://mine:2379\"]\n".into();
    w.kube.insert(group_key(), g);
    w.reconcile_group().await;
    assert!(w.instance_names().is_empty(), "{:?}", w.instance_names());
    let (status, reason, message) = w.group_condition(condition::SYNCED);
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", reasons::INVALID_CONFIG)
    );
    assert!(message.contains("pd.endpoints"), "{message}");
    // An instance that carries such a config anyway (made by hand) renders
    // nothing and reports it too.
    let mut w = World::new(1);
    w.reconcile_group().await;
    let name = w.instance_names()[0].clone();
    let mut kv = w.kube.get(&kv_key(&name)).unwrap();
    kv["spec"]["config"] = "[pd]\nendpoints = [\"http://mine:2379\"]\n".into();
    w.kube.insert(kv_key(&name), kv);
    w.reconcile_instance(&name).await;
    let (status, reason) = w.instance_condition(&name, condition::SYNCED).unwrap();
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", reasons::INVALID_CONFIG)
    );
    assert!(w.kube.get(&pod_key(&name)).is_none());
    assert!(
        w.kube
            .get(&ObjectKey::new::<ConfigMap>(Some(NS), &name))
            .is_none()
    );
}

#[tokio::test]
async fn without_a_pd_url_instances_wait() {
    let mut w = World::new(1);
    w.cluster.pd_url = None;
    w.reconcile_group().await;
    w.reconcile_all_instances().await;
    let name = w.instance_names()[0].clone();
    assert_eq!(
        w.instance_condition(&name, condition::SYNCED).unwrap(),
        ("False".into(), reasons::WAITING_FOR_PD.into())
    );
    assert!(w.kube.get(&pod_key(&name)).is_none());
}

#[tokio::test]
async fn an_eviction_is_recorded_before_it_is_added_so_it_is_never_leaked() {
    let mut w = World::serving(4).await;
    w.set_replicas(3);
    w.reconcile_group().await;
    let victim = w.offline_instances()[0].clone();
    let store = w.store_of(&victim);
    // Recording fails: no evict-leader entry may exist that no status knows of.
    w.kube.fail_next(KubeOp::PatchStatus, "conflict");
    assert!(w.try_reconcile_instance(&victim).await.is_err());
    assert!(
        !w.pd.evicting_stores().await.unwrap().contains(&store),
        "an entry was added without being recorded"
    );
    w.reconcile_instance(&victim).await;
    assert!(w.pd.evicting_stores().await.unwrap().contains(&store));
    assert!(
        w.instance(&victim)
            .unwrap()
            .status
            .unwrap()
            .leader_eviction_started_at
            .is_some()
    );
}

#[tokio::test]
async fn a_paused_cluster_changes_nothing_even_mid_removal() {
    let mut w = World::serving(4).await;
    w.set_replicas(3);
    w.reconcile_group().await;
    let victim = w.offline_instances()[0].clone();
    w.reconcile_instance(&victim).await;
    w.cluster.paused = true;
    w.set_replicas(5);
    let pd_calls = w.pd.calls().len();
    w.kube.clear_calls();
    for _ in 0..5 {
        w.reconcile_group().await;
        w.reconcile_all_instances().await;
        w.pd.advance(5);
        w.clock.advance(Duration::from_secs(600));
    }
    assert!(
        w.kube
            .calls()
            .iter()
            .all(|c| matches!(c.op(), KubeOp::PatchStatus)),
        "{:?}",
        w.kube.calls()
    );
    assert!(
        w.pd.calls()[pd_calls..].iter().all(|op| matches!(
            op,
            FakeOp::Members | FakeOp::Stores | FakeOp::ReplicationConfig | FakeOp::EvictingStores
        )),
        "{:?}",
        &w.pd.calls()[pd_calls..]
    );
    assert_eq!(w.instances().len(), 4);
}

#[tokio::test]
async fn heterogeneous_groups_carry_their_own_labels_and_share_one_removal_at_a_time() {
    let mut w = World::serving(3).await;
    w.add_group("hdd", 2, "hdd");
    w.reconcile_group_named("hdd").await;
    w.reconcile_all_instances().await;
    w.run_pods();
    w.reconcile_all_instances().await;
    let by_group = |w: &World, g: &str| -> Vec<String> {
        w.instances()
            .into_iter()
            .filter(|i| i.metadata.labels.as_ref().unwrap()[labels::GROUP] == g)
            .map(|i| i.metadata.name.unwrap())
            .collect()
    };
    let hdd = by_group(&w, "hdd");
    assert_eq!(hdd.len(), 2);
    for name in &hdd {
        assert!(name.starts_with("hdd-"), "{name}");
        let inst = w.instance(name).unwrap();
        assert_eq!(inst.spec.subdomain, "hdd-tikv-peer");
        let store = w.pd.store_snapshot(w.store_of(name)).unwrap();
        assert_eq!(store.labels["disk"], "hdd");
        assert!(store.address.contains(".hdd-tikv-peer.ns.svc:"));
    }
    for name in by_group(&w, "kv") {
        let store = w.pd.store_snapshot(w.store_of(&name)).unwrap();
        assert_eq!(store.labels["disk"], "ssd");
    }
    assert!(
        w.kube
            .get(&ObjectKey::new::<Service>(Some(NS), "hdd-tikv-peer"))
            .is_some()
    );
    // 5 Up stores, max-replicas 3: the ssd group may shrink to 2 (4 Up left)
    // and the hdd group to 1, but not both at once: one removal at a time
    // in the cluster.
    w.pd.set_rates(10, 1);
    w.set_replicas(2);
    w.reconcile_group().await;
    let victim = w.offline_instances()[0].clone();
    for _ in 0..3 {
        w.reconcile_instance(&victim).await;
        w.pd.tick();
    }
    assert!(
        w.pd.store_snapshot(w.store_of(&victim))
            .unwrap()
            .is_removing()
    );
    let mut g = w
        .kube
        .get(&ObjectKey::new::<TiKVGroup>(Some(NS), "hdd"))
        .unwrap();
    g["spec"]["replicas"] = 1.into();
    w.kube
        .insert(ObjectKey::new::<TiKVGroup>(Some(NS), "hdd"), g);
    w.reconcile_group_named("hdd").await;
    assert!(
        by_group(&w, "hdd")
            .iter()
            .all(|n| !w.instance(n).unwrap().spec.offline),
        "the hdd group waits for the ssd removal"
    );
    let hdd_group: TiKVGroup = w
        .kube
        .get_typed(&ObjectKey::new::<TiKVGroup>(Some(NS), "hdd"))
        .unwrap();
    let c = conditions::find(
        &hdd_group.status.unwrap().common.conditions,
        condition::PROGRESSING,
    )
    .unwrap()
    .clone();
    assert_eq!(c.reason, reasons::ANOTHER_REMOVAL_IN_FLIGHT);
}

#[tokio::test]
async fn store_labels_follow_the_spec() {
    let mut w = World::serving(1).await;
    let name = w.instance_names()[0].clone();
    let mut g = w.kube.get(&group_key()).unwrap();
    g["spec"]["template"]["spec"]["server"]["labels"] = json!({"disk": "nvme", "rack": "r1"});
    w.kube.insert(group_key(), g);
    w.reconcile_group().await;
    w.reconcile_instance(&name).await;
    let store = w.pd.store_snapshot(w.store_of(&name)).unwrap();
    assert_eq!(store.labels["disk"], "nvme");
    assert_eq!(store.labels["rack"], "r1");
    // The rendered config changed: the only store is not disrupted by
    // anything else, so its group granted the restart, which starts by
    // evicting the store's leaders.
    assert_eq!(
        w.instance_condition(&name, condition::SYNCED).unwrap(),
        ("False".into(), reasons::EVICTING_LEADERS.into())
    );
    // Labels already in PD are not sent again.
    let sets = |w: &World| {
        w.pd.calls()
            .iter()
            .filter(|o| **o == FakeOp::SetStoreLabels)
            .count()
    };
    let before = sets(&w);
    w.reconcile_instance(&name).await;
    assert_eq!(sets(&w), before);
}

#[tokio::test]
async fn a_running_store_missing_from_pds_view_is_waited_for_not_deleted() {
    let mut w = World::serving(3).await;
    w.set_replicas(4);
    w.reconcile_group().await;
    w.reconcile_all_instances().await;
    let new = w
        .instance_names()
        .into_iter()
        .find(|n| w.instance(n).unwrap().status.is_none_or(|s| s.id.is_none()))
        .unwrap();
    // Its Pod runs, but the PD view does not list its store yet.
    let mut pod = w.kube.get(&pod_key(&new)).unwrap();
    pod["status"] = json!({"conditions": [{"type": "Ready", "status": "True"}]});
    w.kube.insert(pod_key(&new), pod);
    w.set_replicas(3);
    w.reconcile_group().await;
    assert_eq!(
        w.offline_instances(),
        vec![new.clone()],
        "not ready: chosen first"
    );
    w.kube.clear_calls();
    for _ in 0..3 {
        w.reconcile_instance(&new).await;
    }
    assert!(w.deletes().is_empty(), "{:?}", w.deletes());
    assert_eq!(
        w.instance_condition(&new, reasons::CONDITION_OFFLINE)
            .unwrap(),
        ("True".into(), reasons::STORE_NOT_REGISTERED.into())
    );
    // The store shows up: the normal removal follows.
    w.run_pods();
    let store = w.watch_after_register(&new).await;
    for _ in 0..30 {
        if w.instance(&new).is_none() {
            break;
        }
        w.round().await;
    }
    assert!(w.instance(&new).is_none());
    assert!(w.pd.store_snapshot(store).unwrap().is_removed());
}

#[tokio::test]
async fn a_store_removed_behind_the_operators_back_is_replaced() {
    let mut w = World::serving(4).await;
    let name = w.instance_names()[2].clone();
    let store = w.watch(&name);
    // Someone removes the store with pd-ctl while the instance wants it.
    w.pd.delete_store(store).await.unwrap();
    w.round().await;
    // Not offline: the operator brings it back instead.
    let s = w.pd.store_snapshot(store).unwrap();
    assert!(!s.is_removing() && !s.is_removed(), "{s:?}");
    // Removed for good before the operator could see it: too late to cancel.
    w.pd.delete_store(store).await.unwrap();
    w.pd.advance(10);
    assert!(w.pd.store_snapshot(store).unwrap().is_removed());
    for _ in 0..6 {
        w.round().await;
    }
    assert!(
        w.instance(&name).is_none(),
        "the instance of a removed store goes"
    );
    assert!(w.kube.get(&pod_key(&name)).is_none());
    assert!(w.kube.get(&pvc_key(&name)).is_none());
    assert_eq!(w.instances().len(), 4, "and is replaced");
    assert!(
        w.event_reasons()
            .iter()
            .any(|r| r == reasons::TOO_LATE_TO_CANCEL)
    );
}

/// A Cluster that does not carry the operator's finalizer yet gets no TiKV
/// instance (see the PD layer's test of the same name): the group waits with
/// `WaitingForCluster` and creates its instances once the Cluster is claimed.
#[tokio::test]
async fn nothing_is_created_for_a_cluster_not_yet_claimed() {
    let mut w = World::new(3);
    w.cluster.unclaimed = true;
    for _ in 0..3 {
        w.reconcile_group().await;
    }
    assert!(
        w.instances().is_empty(),
        "a TiKV was created for an unclaimed Cluster"
    );
    let (status, reason, _) = w.group_condition(condition::PROGRESSING);
    assert_eq!(
        (status.as_str(), reason.as_str()),
        (
            "True",
            tikv_operator_core::component::group::WAITING_FOR_CLUSTER
        )
    );
    w.cluster.unclaimed = false;
    w.reconcile_group().await;
    assert_eq!(w.instances().len(), 3);
}
