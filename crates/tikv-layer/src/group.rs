//! TiKVGroup planning: which TiKV instances to create, which one to take
//! offline on scale-in, when a raised `replicas` cancels a removal instead of
//! creating a store, and when a scale-in is refused. Pure: every input is
//! passed in, including the source of random name suffixes.
//!
//! Scale-in is two-step: the group marks one instance `offline`; the
//! instance removes its store safely (see [`crate::removal`]); once the store
//! is Removed the group deletes the instance object and its finalizer deletes
//! the Pod and PVCs.

use std::cmp::Ordering;

use pd_client::StoreId;
use tikv_operator_api::tikv::StoreState as ApiStoreState;
use tikv_operator_api::{TiKV, Topology};
use tikv_operator_core::component::naming::{self, SuffixSource};
use tikv_operator_core::component::spread::{Spread, cmp_fraction};

use crate::reasons;
use crate::store_view::{StoreView, is_up};

/// One TiKV instance of the group, as the watch caches and PD show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceState {
    /// Instance name (also its Pod name).
    pub name: String,
    /// The topology the instance is pinned to.
    pub topology: Option<Topology>,
    /// Whether the instance is Ready (Pod Ready and store serving).
    pub ready: bool,
    /// Whether the instance object is being deleted.
    pub deleting: bool,
    /// `spec.offline`: its store is being taken out.
    pub offline: bool,
    /// Its store is Removed (Tombstone) or gone: the instance only waits to
    /// be deleted.
    pub removed: bool,
    /// Value of the [`tikv_operator_api::labels::DELETE_PRIORITY`] annotation (0 when absent or not an integer).
    pub delete_priority: i64,
    /// Its store id, when known.
    pub store_id: Option<StoreId>,
    /// Regions on its store (0 when unknown).
    pub region_count: i64,
    /// Its running Pod is outdated (a rolling update has not reached it):
    /// preferred on scale-in, after not-ready instances.
    pub outdated: bool,
}

impl InstanceState {
    /// The state of a TiKV instance object, `ready` as computed by the caller.
    pub fn from_instance(kv: &TiKV, ready: bool) -> Self {
        let meta = &kv.metadata;
        let status = kv.status.as_ref();
        Self {
            name: meta.name.clone().unwrap_or_default(),
            topology: kv.spec.topology.clone(),
            ready,
            deleting: meta.deletion_timestamp.is_some(),
            offline: kv.spec.offline,
            removed: status.is_some_and(|s| s.state == Some(ApiStoreState::Removed)),
            delete_priority: naming::delete_priority(meta),
            store_id: status
                .and_then(|s| s.id.as_deref())
                .and_then(|id| id.parse().ok())
                .map(StoreId),
            region_count: status.and_then(|s| s.region_count).unwrap_or(0),
            outdated: false,
        }
    }
}

/// Everything the TiKVGroup planner looks at.
#[derive(Debug, Clone)]
pub struct GroupInput<'a> {
    /// Group name (prefix of instance names).
    pub group: &'a str,
    /// `spec.replicas`.
    pub replicas: i32,
    /// The group's spread policy.
    pub spread: Spread,
    /// Every instance of the group, deleting ones included.
    pub instances: Vec<InstanceState>,
    /// PD's view of the stores of the whole cluster (every TiKVGroup).
    pub pd: &'a StoreView,
    /// Instances of the Cluster's other TiKVGroups whose store is being
    /// taken out (offline, or the instance deleted) and not removed yet: a
    /// removal still evicting leaders is not "removing" in PD yet.
    pub other_removals: Vec<String>,
    /// Failed instances a failover replacement stands in for (see
    /// [`crate::failover`]): they count neither toward `replicas` nor as
    /// removals to cancel, and are never chosen on scale-in.
    pub held: Vec<String>,
}

/// A TiKV instance to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewInstance {
    /// Its name.
    pub name: String,
    /// Its topology.
    pub topology: Option<Topology>,
}

pub use tikv_operator_core::component::Blocked;

/// What the TiKVGroup should do now. One kind of change per reconcile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupPlan {
    /// The instances match `replicas`; nothing to do (removals already
    /// marked may still be running).
    Steady,
    /// Delete these instance objects: their stores are Removed; their
    /// finalizers delete Pods and PVCs.
    DeleteRemoved(Vec<String>),
    /// `replicas` rose while these instances were being taken offline:
    /// clear their `offline` flag (their stores go back to Up) instead of
    /// creating new stores.
    CancelOffline(Vec<String>),
    /// Create these instances.
    Create(Vec<NewInstance>),
    /// Mark this instance offline (first step of a scale-in).
    MarkOffline {
        /// Instance to take out.
        name: String,
        /// Why this one was chosen, for the Event.
        why: String,
    },
    /// A change is in flight or must wait; not an error.
    Wait(Blocked),
    /// The scale-in `replicas` asks for is unsafe; report and wait.
    Refuse(Blocked),
}

impl GroupPlan {
    /// Whether the group should be polled fast (something is in flight).
    pub fn in_flight(&self) -> bool {
        !matches!(self, Self::Steady | Self::Refuse(_))
    }
}

fn fresh_name(input: &GroupInput<'_>, taken: &[String], suffixes: &mut dyn SuffixSource) -> String {
    naming::fresh_name(
        input.group,
        |name| taken.iter().any(|t| t == name) || input.instances.iter().any(|i| i.name == name),
        suffixes,
    )
}

/// Plans the next step of a TiKVGroup.
pub fn plan_group(input: &GroupInput<'_>, suffixes: &mut dyn SuffixSource) -> GroupPlan {
    let desired = usize::try_from(input.replicas.max(0)).unwrap_or(0);

    // Instances whose store is gone for good only wait to be deleted.
    let removed: Vec<String> = input
        .instances
        .iter()
        .filter(|i| i.removed && !i.deleting)
        .map(|i| i.name.clone())
        .collect();
    if !removed.is_empty() {
        return GroupPlan::DeleteRemoved(removed);
    }

    let live: Vec<&InstanceState> = input
        .instances
        .iter()
        .filter(|i| !i.deleting && !i.removed && !input.held.contains(&i.name))
        .collect();
    let serving: Vec<&InstanceState> = live.iter().copied().filter(|i| !i.offline).collect();
    let mut going: Vec<&InstanceState> = live.iter().copied().filter(|i| i.offline).collect();

    match serving.len().cmp(&desired) {
        Ordering::Less if !going.is_empty() => {
            // Safety rule 4: a removal in flight is cancelled rather than a
            // new store created. The least advanced removals (most Regions
            // left) first.
            going.sort_by(|a, b| {
                b.region_count
                    .cmp(&a.region_count)
                    .then_with(|| a.name.cmp(&b.name))
            });
            let n = desired - serving.len();
            GroupPlan::CancelOffline(going.iter().take(n).map(|i| i.name.clone()).collect())
        }
        Ordering::Less => {
            let mut topologies: Vec<Option<Topology>> =
                live.iter().map(|i| i.topology.clone()).collect();
            let mut taken: Vec<String> = Vec::new();
            let mut new = Vec::new();
            for _ in serving.len()..desired {
                let name = fresh_name(input, &taken, suffixes);
                let topology = input.spread.next(topologies.iter().map(Option::as_ref));
                topologies.push(topology.clone());
                taken.push(name.clone());
                new.push(NewInstance { name, topology });
            }
            GroupPlan::Create(new)
        }
        Ordering::Greater => plan_scale_in(input, &serving, &going),
        Ordering::Equal => GroupPlan::Steady,
    }
}

/// The instance to take offline: not-ready first, then outdated ones (a
/// rolling update need not restart them), then the most crowded
/// topology, then the highest delete priority, then the fewest Regions (the
/// least data to move), then the name.
pub fn choose_victim<'a>(
    spread: &Spread,
    candidates: &[&'a InstanceState],
) -> Option<&'a InstanceState> {
    let crowding = |i: &InstanceState| {
        spread.crowding(
            i.topology.as_ref(),
            candidates.iter().map(|c| c.topology.as_ref()),
        )
    };
    let mut sorted: Vec<&InstanceState> = candidates.to_vec();
    sorted.sort_by(|a, b| {
        a.ready
            .cmp(&b.ready)
            .then_with(|| b.outdated.cmp(&a.outdated))
            .then_with(|| cmp_fraction(crowding(b), crowding(a)))
            .then_with(|| b.delete_priority.cmp(&a.delete_priority))
            .then_with(|| a.region_count.cmp(&b.region_count))
            .then_with(|| a.name.cmp(&b.name))
    });
    sorted.first().copied()
}

fn plan_scale_in(
    input: &GroupInput<'_>,
    serving: &[&InstanceState],
    going: &[&InstanceState],
) -> GroupPlan {
    // One removal at a time per group.
    if let Some(g) = going.first() {
        return GroupPlan::Wait(Blocked {
            reason: reasons::SCALING_IN,
            message: format!("waiting for the store of {} to be removed", g.name),
        });
    }
    // Safety rule 5.
    let Some(stores) = input.pd.stores() else {
        return GroupPlan::Refuse(Blocked {
            reason: reasons::PD_UNAVAILABLE,
            message: "PD is unreachable; scale-in waits until it answers".to_owned(),
        });
    };
    let Some(victim) = choose_victim(&input.spread, serving) else {
        return GroupPlan::Steady;
    };
    let victim_store = victim
        .store_id
        .and_then(|id| stores.stores.iter().find(|s| s.id == id));
    // Safety rule 2: one store removal at a time in the whole cluster, the
    // other groups' removals that PD does not show yet included.
    if let Some(other) = input.other_removals.first() {
        return GroupPlan::Wait(Blocked {
            reason: reasons::ANOTHER_REMOVAL_IN_FLIGHT,
            message: format!(
                "the store of {other} (another TiKVGroup) is being removed; the next removal \
                 waits for it"
            ),
        });
    }
    if let Some(other) = stores
        .removing()
        .into_iter()
        .find(|s| Some(s.id) != victim.store_id)
    {
        return GroupPlan::Wait(Blocked {
            reason: reasons::ANOTHER_REMOVAL_IN_FLIGHT,
            message: format!(
                "store {} ({}) is being removed; the next removal waits for it",
                other.id, other.address
            ),
        });
    }
    // Safety rule 4: never fewer Up stores than max-replicas. Removing an
    // instance whose store is not Up (never registered) does not lower it.
    if victim_store.is_some_and(is_up) {
        let up = stores.up_count();
        let max = stores.max_replicas();
        if up.saturating_sub(1) < max {
            return GroupPlan::Refuse(Blocked {
                reason: reasons::BELOW_MAX_REPLICAS,
                message: format!(
                    "removing a store would leave {} Up stores, fewer than PD's max-replicas ({max}); \
                     scale-in refused (replicas {} of group {} stays unmet)",
                    up.saturating_sub(1),
                    input.replicas,
                    input.group
                ),
            });
        }
    }
    let why = if !victim.ready {
        "not ready".to_owned()
    } else {
        "most crowded topology / highest delete priority".to_owned()
    };
    GroupPlan::MarkOffline {
        name: victim.name.clone(),
        why,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::store_view::Stores;
    use crate::store_view::tests::store;
    use pd_client::{ReplicationConfig, StoreState};
    use tikv_operator_api::{EvenlySpreadPolicy, SchedulePolicy, SchedulePolicyType};
    use tikv_operator_api::{ScheduleTopology, Topology};

    #[derive(Default)]
    struct Counter(u32);
    impl SuffixSource for Counter {
        fn next_suffix(&mut self) -> String {
            self.0 += 1;
            format!("s{:05}", self.0)
        }
    }

    fn zone(z: &str) -> Topology {
        [("topology.kubernetes.io/zone".to_owned(), z.to_owned())].into()
    }

    fn spread(zones: &[(&str, Option<i32>)]) -> Spread {
        Spread::from_policies(&[SchedulePolicy {
            type_: SchedulePolicyType::EvenlySpread,
            evenly_spread: Some(EvenlySpreadPolicy {
                topologies: zones
                    .iter()
                    .map(|(z, w)| ScheduleTopology {
                        topology: zone(z),
                        weight: *w,
                    })
                    .collect(),
            }),
        }])
    }

    fn inst(name: &str, z: &str, store: u64) -> InstanceState {
        InstanceState {
            name: name.to_owned(),
            topology: Some(zone(z)),
            ready: true,
            deleting: false,
            offline: false,
            removed: false,
            delete_priority: 0,
            store_id: Some(StoreId(store)),
            region_count: 20,
            outdated: false,
        }
    }

    /// PD with Up stores `1..=n` at `kv-<id>` and max-replicas `max`.
    fn pd(n: u64, max: u64) -> StoreView {
        StoreView::Reachable(Stores {
            stores: (1..=n)
                .map(|i| store(i, &format!("kv-{i}"), StoreState::Up))
                .collect(),
            replication: ReplicationConfig {
                max_replicas: max,
                location_labels: vec![],
            },
            ..Stores::default()
        })
    }

    fn four() -> Vec<InstanceState> {
        vec![
            inst("kv-1", "a", 1),
            inst("kv-2", "b", 2),
            inst("kv-3", "c", 3),
            inst("kv-4", "a", 4),
        ]
    }

    fn plan(replicas: i32, instances: Vec<InstanceState>, pd: &StoreView) -> GroupPlan {
        plan_group(
            &GroupInput {
                group: "kv",
                replicas,
                spread: spread(&[("a", None), ("b", None), ("c", None)]),
                instances,
                pd,
                other_removals: vec![],
                held: vec![],
            },
            &mut Counter::default(),
        )
    }

    #[test]
    fn scale_out_creates_every_missing_store_spread_over_topologies() {
        let p = plan(5, vec![inst("kv-1", "a", 1)], &pd(1, 3));
        assert_eq!(
            p,
            GroupPlan::Create(vec![
                NewInstance {
                    name: "kv-s00001".into(),
                    topology: Some(zone("b"))
                },
                NewInstance {
                    name: "kv-s00002".into(),
                    topology: Some(zone("c"))
                },
                NewInstance {
                    name: "kv-s00003".into(),
                    topology: Some(zone("a"))
                },
                NewInstance {
                    name: "kv-s00004".into(),
                    topology: Some(zone("b"))
                },
            ])
        );
        // Creating needs no PD: stores join by themselves.
        let down = StoreView::Unreachable {
            message: "down".into(),
        };
        assert!(matches!(plan(2, vec![], &down), GroupPlan::Create(n) if n.len() == 2));
        assert_eq!(plan(4, four(), &pd(4, 3)), GroupPlan::Steady);
    }

    #[test]
    fn scale_in_takes_not_ready_first_then_most_crowded_then_priority() {
        // Zone a holds two stores: one of them goes.
        let p = plan(3, four(), &pd(4, 3));
        assert!(
            matches!(&p, GroupPlan::MarkOffline { name, .. } if name == "kv-1"),
            "{p:?}"
        );
        // A delete priority decides within the crowded zone.
        let mut i = four();
        i[3].delete_priority = 5;
        let p = plan(3, i.clone(), &pd(4, 3));
        assert!(
            matches!(&p, GroupPlan::MarkOffline { name, .. } if name == "kv-4"),
            "{p:?}"
        );
        // ... but not across zones: kv-2 (zone b, priority 9) stays while
        // zone a is crowded.
        i[1].delete_priority = 9;
        let p = plan(3, i.clone(), &pd(4, 3));
        assert!(
            matches!(&p, GroupPlan::MarkOffline { name, .. } if name == "kv-4"),
            "{p:?}"
        );
        // A not-ready instance goes first, wherever it is.
        i[2].ready = false;
        let p = plan(3, i, &pd(4, 3));
        assert!(
            matches!(&p, GroupPlan::MarkOffline { name, why } if name == "kv-3" && why == "not ready"),
            "{p:?}"
        );
    }

    #[test]
    fn among_equals_the_store_with_the_fewest_regions_goes() {
        let mut i = four();
        i[1].region_count = 3;
        let p = plan_group(
            &GroupInput {
                group: "kv",
                replicas: 3,
                spread: Spread::default(),
                instances: i.clone(),
                pd: &pd(4, 3),
                other_removals: vec![],
                held: vec![],
            },
            &mut Counter::default(),
        );
        assert!(
            matches!(&p, GroupPlan::MarkOffline { name, .. } if name == "kv-2"),
            "{p:?}"
        );
        // Priority comes first.
        i[3].delete_priority = 1;
        let p = plan_group(
            &GroupInput {
                group: "kv",
                replicas: 3,
                spread: Spread::default(),
                instances: i,
                pd: &pd(4, 3),
                other_removals: vec![],
                held: vec![],
            },
            &mut Counter::default(),
        );
        assert!(
            matches!(&p, GroupPlan::MarkOffline { name, .. } if name == "kv-4"),
            "{p:?}"
        );
    }

    /// Safety rule 2: another group's removal that is still evicting
    /// leaders (PD does not show it removing yet) holds this group's
    /// scale-in.
    #[test]
    fn another_groups_removal_still_evicting_holds_the_scale_in() {
        let p = plan_group(
            &GroupInput {
                group: "kv",
                replicas: 3,
                spread: Spread::default(),
                instances: four(),
                pd: &pd(4, 3),
                other_removals: vec!["hdd-1".into()],
                held: vec![],
            },
            &mut Counter::default(),
        );
        assert!(
            matches!(&p, GroupPlan::Wait(b) if b.reason == reasons::ANOTHER_REMOVAL_IN_FLIGHT),
            "{p:?}"
        );
    }

    #[test]
    fn without_spreading_the_priority_decides() {
        let mut i = four();
        i[1].delete_priority = 3;
        let p = plan_group(
            &GroupInput {
                group: "kv",
                replicas: 3,
                spread: Spread::default(),
                instances: i,
                pd: &pd(4, 3),
                other_removals: vec![],
                held: vec![],
            },
            &mut Counter::default(),
        );
        assert!(
            matches!(&p, GroupPlan::MarkOffline { name, .. } if name == "kv-2"),
            "{p:?}"
        );
    }

    #[test]
    fn scale_in_refused_below_max_replicas() {
        let three = four()[..3].to_vec();
        let p = plan(2, three.clone(), &pd(3, 3));
        let GroupPlan::Refuse(b) = p else {
            panic!("{p:?}")
        };
        assert_eq!(b.reason, reasons::BELOW_MAX_REPLICAS);
        assert!(b.message.contains("max-replicas (3)"), "{}", b.message);
        // With max-replicas 2 the same scale-in goes ahead.
        assert!(matches!(
            plan(2, three.clone(), &pd(3, 2)),
            GroupPlan::MarkOffline { .. }
        ));
        // Up stores of other groups count: 3 here + 1 elsewhere.
        assert!(matches!(
            plan(2, three.clone(), &pd(4, 3)),
            GroupPlan::MarkOffline { .. }
        ));
        // An instance whose store never registered can always go.
        let mut i = three;
        i.push(InstanceState {
            store_id: None,
            ready: false,
            ..inst("kv-9", "b", 0)
        });
        let p = plan(3, i, &pd(3, 3));
        assert!(
            matches!(&p, GroupPlan::MarkOffline { name, .. } if name == "kv-9"),
            "{p:?}"
        );
    }

    #[test]
    fn scale_in_refused_while_pd_is_unreachable() {
        let down = StoreView::Unreachable {
            message: "down".into(),
        };
        let p = plan(3, four(), &down);
        assert!(
            matches!(&p, GroupPlan::Refuse(b) if b.reason == reasons::PD_UNAVAILABLE),
            "{p:?}"
        );
    }

    #[test]
    fn one_removal_at_a_time_in_the_group_and_in_the_cluster() {
        let mut i = four();
        i[0].offline = true;
        let p = plan(2, i, &pd(4, 2));
        assert!(
            matches!(&p, GroupPlan::Wait(b) if b.reason == reasons::SCALING_IN),
            "{p:?}"
        );
        // A store of another group being removed blocks too.
        let mut view = pd(5, 2);
        if let StoreView::Reachable(s) = &mut view {
            s.stores[4].state = StoreState::Offline;
            s.stores[4].node_state = pd_client::NodeState::Removing;
        }
        let p = plan(3, four(), &view);
        assert!(
            matches!(&p, GroupPlan::Wait(b) if b.reason == reasons::ANOTHER_REMOVAL_IN_FLIGHT),
            "{p:?}"
        );
    }

    #[test]
    fn raising_replicas_during_a_removal_cancels_it_instead_of_creating() {
        let mut i = four();
        i[0].offline = true;
        i[0].region_count = 5;
        i[1].offline = true;
        i[1].region_count = 15;
        // 2 serving, 2 going; replicas 3: cancel the least advanced removal.
        assert_eq!(
            plan(3, i.clone(), &pd(4, 3)),
            GroupPlan::CancelOffline(vec!["kv-2".into()])
        );
        // replicas 5: cancel both; the extra one is created at the next step.
        assert_eq!(
            plan(5, i.clone(), &pd(4, 3)),
            GroupPlan::CancelOffline(vec!["kv-2".into(), "kv-1".into()])
        );
        // Replicas equal to the serving ones: the removals continue.
        assert_eq!(plan(2, i, &pd(4, 2)), GroupPlan::Steady);
    }

    #[test]
    fn removed_instances_are_deleted_and_then_replaced() {
        let mut i = four();
        i[3].offline = true;
        i[3].removed = true;
        assert_eq!(
            plan(3, i.clone(), &pd(4, 3)),
            GroupPlan::DeleteRemoved(vec!["kv-4".into()])
        );
        // A store tombstoned behind the operator's back: the instance is
        // deleted, and a new one created afterwards.
        i[3].offline = false;
        assert_eq!(
            plan(4, i.clone(), &pd(4, 3)),
            GroupPlan::DeleteRemoved(vec!["kv-4".into()])
        );
        i[3].deleting = true;
        assert!(matches!(plan(4, i, &pd(4, 3)), GroupPlan::Create(n) if n.len() == 1));
    }

    #[test]
    fn scale_in_during_an_update_prefers_an_outdated_store() {
        let sp = spread(&[("a", None), ("b", None), ("c", None)]);
        let a = inst("kv-1", "a", 1);
        let b = InstanceState {
            outdated: true,
            ..inst("kv-2", "b", 2)
        };
        let c = inst("kv-3", "c", 3);
        assert_eq!(
            choose_victim(&sp, &[&a, &b, &c]).map(|i| i.name.as_str()),
            Some("kv-2")
        );
        // A not-ready one still goes first.
        let c = InstanceState {
            ready: false,
            ..inst("kv-3", "c", 3)
        };
        assert_eq!(
            choose_victim(&sp, &[&a, &b, &c]).map(|i| i.name.as_str()),
            Some("kv-3")
        );
    }

    /// A failed instance held by a failover replacement counts neither
    /// toward replicas nor as a removal to cancel.
    #[test]
    fn a_held_instance_is_neither_counted_nor_cancelled_nor_chosen() {
        let mut i = four()[..3].to_vec();
        i.push(inst("kv-r", "c", 5));
        let held_plan = |i: Vec<InstanceState>, held: Vec<String>| {
            plan_group(
                &GroupInput {
                    group: "kv",
                    replicas: 3,
                    spread: Spread::default(),
                    instances: i,
                    pd: &pd(5, 3),
                    other_removals: vec![],
                    held,
                },
                &mut Counter::default(),
            )
        };
        // kv-3 failed, kv-r replaces it: 3 counted, nothing to do.
        assert_eq!(held_plan(i.clone(), vec!["kv-3".into()]), GroupPlan::Steady);
        // Without the hold the group would scale in.
        assert!(matches!(
            held_plan(i.clone(), vec![]),
            GroupPlan::MarkOffline { .. }
        ));
        // Its removal (offline) is never cancelled by a raised replicas: a
        // new store is created instead.
        i[2].offline = true;
        let raised = |held: Vec<String>| {
            plan_group(
                &GroupInput {
                    group: "kv",
                    replicas: 4,
                    spread: Spread::default(),
                    instances: i.clone(),
                    pd: &pd(5, 3),
                    other_removals: vec![],
                    held,
                },
                &mut Counter::default(),
            )
        };
        assert!(matches!(raised(vec!["kv-3".into()]), GroupPlan::Create(n) if n.len() == 1));
        assert_eq!(
            raised(vec![]),
            GroupPlan::CancelOffline(vec!["kv-3".into()])
        );
    }
}
