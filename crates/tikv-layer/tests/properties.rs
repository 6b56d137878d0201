//! Property tests of the TiKV planners: random Cluster snapshots (stores in every state,
//! liveness, leader counts, evict-leader entries, disrupted stores of other groups, PD
//! unreachable) never yield a plan that breaks a safety rule.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use pd_client::{NodeState, ReplicationConfig, Store, StoreId, StoreLiveness, StoreState};
use proptest::prelude::*;
use tikv_operator_tikv_layer::removal::{RemovalInput, RemovalStep, Request, next_removal_step};
use tikv_operator_tikv_layer::restart::{
    Candidate, RestartInput, RestartPlan, RestartStep, StepInput, next_restart_step, plan_restart,
};
use tikv_operator_tikv_layer::{StoreView, Stores};

fn arb_store(id: u64) -> impl Strategy<Value = Store> {
    (
        prop_oneof![
            Just(StoreState::Up),
            Just(StoreState::Offline),
            Just(StoreState::Tombstone)
        ],
        prop_oneof![
            Just(NodeState::Preparing),
            Just(NodeState::Serving),
            Just(NodeState::Removing),
            Just(NodeState::Removed)
        ],
        prop_oneof![
            Just(StoreLiveness::Alive),
            Just(StoreLiveness::Disconnected),
            Just(StoreLiveness::Down),
            Just(StoreLiveness::Unknown)
        ],
        proptest::option::of(0u64..20),
        0u64..50,
        proptest::option::of(-100i64..2000),
    )
        .prop_map(
            move |(state, node_state, liveness, leaders, regions, start)| Store {
                id: StoreId(id),
                address: format!("kv-{id}:20160"),
                state,
                node_state,
                liveness,
                leader_count: leaders,
                region_count: regions,
                start_timestamp: start,
                ..Store::default()
            },
        )
}

/// A PD view of 3 to 6 stores (ids 1..), with random evict-leader entries, or PD unreachable.
fn arb_view() -> impl Strategy<Value = StoreView> {
    (3u64..=6)
        .prop_flat_map(|n| {
            (
                (1..=n).map(arb_store).collect::<Vec<_>>(),
                proptest::collection::btree_set(1..=n, 0..3),
                proptest::bool::weighted(0.1),
                1usize..=3,
            )
        })
        .prop_map(|(stores, evicting, unreachable, max_replicas)| {
            if unreachable {
                return StoreView::Unreachable {
                    message: "down".into(),
                };
            }
            StoreView::Reachable(Stores {
                stores,
                replication: ReplicationConfig {
                    max_replicas: max_replicas as u64,
                    ..ReplicationConfig::default()
                },
                evicting: Some(evicting.into_iter().map(StoreId).collect()),
                ..Stores::default()
            })
        })
}

fn unavailable_others(view: &StoreView, me: StoreId) -> usize {
    view.stores().map_or(0, |s| {
        s.stores
            .iter()
            .filter(|o| o.id != me && !o.is_removed())
            .filter(|o| {
                o.is_removing()
                    || o.state != StoreState::Up
                    || o.node_state != NodeState::Serving
                    || matches!(
                        o.liveness,
                        StoreLiveness::Disconnected | StoreLiveness::Down
                    )
            })
            .count()
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Safety rules 2 and 5: a restart is granted only with PD answering, and never while
    /// the other unavailable stores of the Cluster already use the whole budget.
    #[test]
    fn a_grant_never_exceeds_the_cluster_budget(
        max_unavailable in 1usize..=3,
        disrupted_names in proptest::collection::btree_set("[a-f]", 0..5),
        candidate_disrupted in proptest::bool::ANY,
        pd_reachable in proptest::bool::ANY,
        in_progress in proptest::collection::vec("[a-f]", 0..2),
    ) {
        let mut disrupted: Vec<(String, String)> =
            disrupted_names.iter().map(|n| (n.clone(), "down".into())).collect();
        if candidate_disrupted {
            disrupted.push(("me".into(), "not ready".into()));
        }
        let input = RestartInput {
            max_unavailable,
            candidates: vec![Candidate {
                name: "me".into(),
                revision: "r".into(),
                disrupted: candidate_disrupted.then(|| "not ready".to_owned()),
            }],
            in_progress,
            disrupted: disrupted.clone(),
            pd_reachable,
            waiting_for_pd: None,
            removal_in_flight: None,
        };
        if let RestartPlan::Grant { name, .. } = plan_restart(&input) {
            prop_assert!(pd_reachable);
            let others = disrupted.iter().filter(|(n, _)| *n != name).count();
            prop_assert!(others < max_unavailable, "granted with {others} others disrupted");
        }
    }

    /// Safety rules 2, 3 and 5: a restarting store's Pod goes only with PD answering, no
    /// leader left on it (or past the eviction timeout), and the other unavailable stores
    /// within the budget; unless the store itself is not serving (no leader to move).
    #[test]
    fn a_pod_is_deleted_only_when_safe(
        view in arb_view(),
        me in 1u64..=3,
        started in proptest::option::of(0i64..1000),
        now in 500i64..2000,
        settled in proptest::bool::ANY,
        max_unavailable in 1usize..=2,
    ) {
        let store = view.stores().and_then(|s| s.stores.iter().find(|x| x.id == StoreId(me)));
        let input = StepInput {
            pd: &view,
            store,
            pod_running: true,
            pod_terminating: false,
            pod_current: false,
            pod_ready: true,
            store_back: true,
            leader_counts_settled: settled,
            granted: true,
            eviction_started_at: started.map(|s| Timestamp::from_second(s).unwrap()),
            now: Timestamp::from_second(now).unwrap(),
            evict_leader_timeout: Duration::from_secs(300),
            max_unavailable,
        };
        if let RestartStep::DeletePod { .. } = next_restart_step(&input) {
            prop_assert!(view.stores().is_some(), "deleted while PD is unreachable");
            if let Some(s) = store {
                let alive = s.state == StoreState::Up
                    && !s.is_removing()
                    && !s.is_removed()
                    && !matches!(s.liveness, StoreLiveness::Disconnected | StoreLiveness::Down);
                if alive {
                    prop_assert!(started.is_some(), "deleted without evicting leaders");
                    prop_assert!(
                        unavailable_others(&view, s.id) < max_unavailable,
                        "deleted while other stores are unavailable"
                    );
                    let timed_out = now - started.unwrap() >= 300;
                    prop_assert!(
                        timed_out || (s.leader_count == Some(0) && settled),
                        "deleted with leaders left before the timeout"
                    );
                }
            }
        }
    }

    /// Safety rules 1 and 5: a removal deletes the Pod or PVCs only once PD reports the store
    /// removed (or never knew it, or purged it), never while PD is unreachable, and only a
    /// Cluster being deleted skips PD; it starts only one removal at a time.
    #[test]
    fn a_removal_deletes_only_after_the_store_is_removed(
        view in arb_view(),
        me in 1u64..=7,
        recorded in proptest::bool::ANY,
        started in proptest::option::of(0i64..1000),
        delete in proptest::bool::ANY,
        missing in proptest::bool::ANY,
        pod_ready in proptest::bool::ANY,
    ) {
        let store = view.stores().and_then(|s| s.stores.iter().find(|x| x.id == StoreId(me)));
        let input = RemovalInput {
            instance: "me",
            request: if delete { Request::Delete } else { Request::Offline },
            cluster_deleting: false,
            cluster_missing: missing,
            pd: &view,
            store,
            recorded_store_id: recorded.then_some(StoreId(me)),
            eviction_started_at: started.map(|s| Timestamp::from_second(s).unwrap()),
            now: Timestamp::from_second(2000).unwrap(),
            evict_leader_timeout: Duration::from_secs(300),
            pod_exists: true,
            pod_ready,
            pvcs: vec!["data-me".into()],
        };
        let step = next_removal_step(&input);
        match &step {
            RemovalStep::DeletePod | RemovalStep::DeletePvcs(_) | RemovalStep::Done => {
                prop_assert!(!missing, "{step:?} with the Cluster missing");
                let stores = view.stores();
                prop_assert!(stores.is_some(), "{step:?} while PD is unreachable");
                let stores = stores.unwrap();
                match store {
                    Some(s) => prop_assert!(s.is_removed(), "{step:?} with store {s:?}"),
                    None => {
                        // Never registered (and not running), or purged by PD after removal.
                        prop_assert!(!stores.stores.is_empty() || !recorded);
                        prop_assert!(recorded || !pod_ready);
                    }
                }
            }
            RemovalStep::EvictLeaders(id) | RemovalStep::DeleteStore(id) => {
                prop_assert!(!missing);
                let stores = view.stores().unwrap();
                let others: BTreeSet<StoreId> = stores
                    .removing()
                    .iter()
                    .map(|s| s.id)
                    .filter(|o| o != id)
                    .collect();
                prop_assert!(others.is_empty(), "{step:?} while {others:?} are being removed");
            }
            _ => {}
        }
    }
}
