//! Store failover through the TiKVGroup and TiKV reconcilers, against the
//! fake Kubernetes writer and the fake PD.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use pd_client::{PdError, StoreLiveness, UnhealthyRegion};
use tikv_operator_api::tikv::FailoverPhase;

fn set_group(w: &World, path: &[&str], value: Value) {
    let mut g = w.kube.get(&group_key()).unwrap();
    let mut at = &mut g;
    for p in &path[..path.len() - 1] {
        if at.get(*p).is_none() {
            at[*p] = json!({});
        }
        at = &mut at[*p];
    }
    at[path[path.len() - 1]] = value;
    w.kube.insert(group_key(), g);
}

fn set_pod_ready(w: &World, name: &str, ready: bool) {
    let mut pod = w.kube.get(&pod_key(name)).unwrap();
    pod["status"] =
        json!({"conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"}}]});
    w.kube.insert(pod_key(name), pod);
}

/// Every Region has a voter on each of `stores`, `down` reported down.
fn regions(stores: &[StoreId], down: &[StoreId]) -> Vec<UnhealthyRegion> {
    vec![UnhealthyRegion {
        id: 1,
        voters: stores.to_vec(),
        down: down.to_vec(),
        pending: vec![],
    }]
}

/// Three serving stores, failover after 60 s; the last instance's store
/// goes Down (its leaders already moved away, as Raft does).
async fn one_down() -> (World, String, StoreId) {
    let mut w = World::serving(3).await;
    set_group(&w, &["spec", "failover"], json!({"periodSeconds": 60}));
    let names = w.instance_names();
    let victim = names[2].clone();
    for n in &names {
        w.watch(n);
    }
    let store = w.store_of(&victim);
    let all: Vec<StoreId> = names.iter().map(|n| w.store_of(n)).collect();
    w.pd.set_store_counts(store, 20, 0);
    w.pd.set_store_liveness(store, StoreLiveness::Down);
    w.pd.set_unhealthy_regions(regions(&all, &[store]));
    (w, victim, store)
}

fn failures(w: &World) -> Vec<tikv_operator_api::tikv::StoreFailure> {
    w.group()
        .status
        .and_then(|s| s.failover)
        .map(|f| f.failures)
        .unwrap_or_default()
}

fn replacement(w: &World) -> Option<TiKV> {
    w.instances().into_iter().find(|i| {
        i.metadata
            .annotations
            .as_ref()
            .is_some_and(|a| a.contains_key(labels::FAILOVER_REPLACES))
    })
}

/// Rounds until past the period; returns whether a replacement was created.
async fn past_the_period(w: &mut World) -> bool {
    w.round().await;
    w.clock.advance(Duration::from_secs(61));
    w.round().await;
    replacement(w).is_some()
}

#[tokio::test]
async fn a_down_store_is_replaced_end_to_end() {
    let (mut w, victim, store) = one_down().await;
    w.round().await;
    let f = failures(&w);
    assert_eq!(f[0].phase, FailoverPhase::Observing, "{f:?}");
    assert_eq!(f[0].store_state, "Down");
    assert_eq!(
        w.group_condition(reasons::CONDITION_FAILOVER).1,
        reasons::STORE_UNHEALTHY
    );
    assert!(replacement(&w).is_none(), "nothing before the period");

    w.clock.advance(Duration::from_secs(61));
    w.round().await;
    let r = replacement(&w).expect("a replacement is created");
    let r_name = r.metadata.name.clone().unwrap();
    assert_eq!(
        r.metadata.annotations.as_ref().unwrap()[labels::FAILOVER_REPLACES],
        victim
    );
    // In the failed store's zone.
    assert_eq!(r.spec.topology, w.instance(&victim).unwrap().spec.topology);
    assert_eq!(w.instances().len(), 4);
    assert!(!w.instance(&victim).unwrap().spec.offline, "surge first");
    assert!(
        w.event_reasons()
            .contains(&reasons::FAILOVER_STARTED.to_owned())
    );
    assert_eq!(w.group().status.unwrap().failover.unwrap().total, 1);

    // The replacement joins; then the failed store is removed through PD.
    for _ in 0..40 {
        w.run_pods();
        w.round().await;
        if w.instance(&victim).is_none() {
            break;
        }
    }
    assert!(w.instance(&victim).is_none(), "{:?}", failures(&w));
    assert!(w.pd.store_snapshot(store).unwrap().is_removed());
    assert!(w.kube.get(&pvc_key(&victim)).is_none());
    // One more round finishes the record and drops the annotation.
    w.round().await;
    let f = failures(&w);
    assert_eq!(f[0].phase, FailoverPhase::Completed, "{f:?}");
    assert_eq!(f[0].replacement.as_deref(), Some(r_name.as_str()));
    assert!(replacement(&w).is_none());
    assert!(w.instance(&r_name).is_some());
    assert_eq!(w.instances().len(), 3);
    let ev = w.event_reasons();
    for r in [reasons::FAILOVER_REMOVING, reasons::FAILOVER_COMPLETED] {
        assert!(ev.contains(&r.to_owned()), "{r} missing from {ev:?}");
    }
    assert_eq!(
        w.group_condition(reasons::CONDITION_FAILOVER).1,
        reasons::NO_FAILURE
    );
}

#[tokio::test]
async fn another_store_disrupted_refuses_failover() {
    let (mut w, _, _) = one_down().await;
    let other = w.instance_names()[0].clone();
    set_pod_ready(&w, &other, false);
    assert!(!past_the_period(&mut w).await);
    let c = w.group_condition(reasons::CONDITION_FAILOVER);
    assert_eq!(
        (c.0.as_str(), c.1.as_str()),
        ("False", reasons::ANOTHER_STORE_DISRUPTED),
        "{c:?}"
    );
    assert!(c.2.contains(&other), "{c:?}");
    assert!(
        w.event_reasons()
            .contains(&reasons::ANOTHER_STORE_DISRUPTED.to_owned())
    );
    // Once it serves again, failover goes ahead.
    w.run_pods();
    w.round().await;
    assert!(replacement(&w).is_some());
}

#[tokio::test]
async fn two_stores_down_are_reported_not_acted_on() {
    let (mut w, _, _) = one_down().await;
    let second = w.store_of(&w.instance_names()[1]);
    w.pd.set_store_liveness(second, StoreLiveness::Down);
    assert!(!past_the_period(&mut w).await);
    for _ in 0..5 {
        w.round().await;
    }
    assert!(replacement(&w).is_none());
    assert_eq!(w.instances().len(), 3);
    assert!(w.offline_instances().is_empty());
    let c = w.group_condition(reasons::CONDITION_FAILOVER);
    assert_eq!(c.1, reasons::TOO_MANY_FAILURES, "{c:?}");
    let warnings = w
        .event_reasons()
        .into_iter()
        .filter(|r| r == reasons::TOO_MANY_FAILURES)
        .count();
    assert_eq!(warnings, 1, "the refusal is announced once");
}

#[tokio::test]
async fn region_health_unreachable_or_a_lost_majority_refuses() {
    let (mut w, _, store) = one_down().await;
    w.round().await;
    w.clock.advance(Duration::from_secs(61));
    w.pd.inject_error(
        FakeOp::UnhealthyRegions,
        PdError::Unavailable {
            message: "timeout".into(),
            source: None,
        },
    );
    w.round().await;
    assert!(replacement(&w).is_none());
    assert_eq!(
        w.group_condition(reasons::CONDITION_FAILOVER).1,
        reasons::REGION_HEALTH_UNKNOWN
    );
    // A Region whose other voters are not a majority without the failed store.
    let names = w.instance_names();
    let other = w.store_of(&names[0]);
    w.pd.set_unhealthy_regions(vec![UnhealthyRegion {
        id: 9,
        voters: vec![other, store],
        down: vec![store],
        pending: vec![],
    }]);
    w.round().await;
    assert!(replacement(&w).is_none());
    assert_eq!(
        w.group_condition(reasons::CONDITION_FAILOVER).1,
        reasons::REGION_MAJORITY_AT_RISK
    );
}

#[tokio::test]
async fn pd_unreachable_takes_no_failover_action() {
    let (mut w, _, _) = one_down().await;
    w.round().await;
    w.clock.advance(Duration::from_secs(61));
    w.pd.set_unreachable(true);
    w.round().await;
    assert!(replacement(&w).is_none());
    assert_eq!(
        w.group_condition(reasons::CONDITION_FAILOVER).1,
        reasons::PD_UNAVAILABLE
    );
}

#[tokio::test]
async fn the_store_back_before_its_removal_cancels_and_scales_back() {
    let (mut w, victim, store) = one_down().await;
    assert!(past_the_period(&mut w).await);
    let r_name = replacement(&w).unwrap().metadata.name.unwrap();
    // The failed store heartbeats again before the replacement serves.
    w.pd.set_store_liveness(store, StoreLiveness::Alive);
    w.round().await;
    assert!(replacement(&w).is_none());
    assert!(
        w.offline_instances().contains(&r_name),
        "{:?}",
        w.offline_instances()
    );
    assert!(
        w.event_reasons()
            .contains(&reasons::FAILOVER_CANCELLED.to_owned())
    );
    assert_eq!(failures(&w)[0].phase, FailoverPhase::Cancelled);
    for _ in 0..20 {
        w.run_pods();
        w.round().await;
    }
    assert!(
        w.instance(&r_name).is_none(),
        "the surge is taken out again"
    );
    assert!(w.instance(&victim).is_some_and(|i| !i.spec.offline));
    assert_eq!(w.instances().len(), 3);
}

#[tokio::test]
async fn max_total_reached_refuses() {
    let (mut w, _, _) = one_down().await;
    set_group(&w, &["spec", "failover", "maxTotal"], json!(1));
    set_group(&w, &["status", "failover"], json!({"total": 1}));
    assert!(!past_the_period(&mut w).await);
    assert_eq!(
        w.group_condition(reasons::CONDITION_FAILOVER).1,
        reasons::MAX_TOTAL_REACHED
    );
    // Reset by hand.
    set_group(&w, &["status", "failover", "total"], json!(0));
    w.round().await;
    assert!(replacement(&w).is_some());
}

#[tokio::test]
async fn disabled_failover_only_reports() {
    let (mut w, _, _) = one_down().await;
    set_group(&w, &["spec", "failover", "enabled"], json!(false));
    assert!(!past_the_period(&mut w).await);
    assert_eq!(
        w.group_condition(reasons::CONDITION_FAILOVER).1,
        reasons::FAILOVER_DISABLED
    );
}
