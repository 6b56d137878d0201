//! PDGroup planning: how many PD instances to create or remove, where to put
//! them, and when to refuse. Pure: every input is passed in, including the
//! source of random name suffixes.

use std::cmp::Ordering;

use tikv_operator_api::{PD, Topology};

use crate::pd_view::PdView;
use crate::reasons;
use tikv_operator_core::component::naming::{self, StableSuffix, SuffixSource};
use tikv_operator_core::component::spread::{Spread, cmp_fraction};

/// One PD instance of the group, as the watch caches show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceState {
    /// Instance name (also its Pod and PD member name).
    pub name: String,
    /// The peer URL it advertises (identifies its member before the member
    /// has a name).
    pub peer_url: String,
    /// The topology the instance is pinned to.
    pub topology: Option<Topology>,
    /// Whether its Pod is Ready.
    pub ready: bool,
    /// Whether the instance object is being deleted (its removal is in flight).
    pub deleting: bool,
    /// Value of the [`tikv_operator_api::labels::DELETE_PRIORITY`] annotation (0 when absent or not an integer).
    pub delete_priority: i64,
    /// For instances created at bootstrap: every initial member's name
    /// ([`tikv_operator_api::labels::PD_BOOTSTRAP_MEMBERS`]).
    pub bootstrap_members: Option<Vec<String>>,
    /// Its running Pod was created from an older rendering and must be
    /// restarted (the instance reports `Synced=False`, `RestartPending`).
    pub outdated: bool,
}

impl InstanceState {
    /// The state of a PD instance object whose Pod is `pod_ready`.
    pub fn from_instance(pd: &PD, pod_ready: bool) -> Self {
        let meta = &pd.metadata;
        Self {
            name: meta.name.clone().unwrap_or_default(),
            peer_url: crate::render::member_peer_url(pd),
            topology: pd.spec.topology.clone(),
            ready: pod_ready,
            deleting: meta.deletion_timestamp.is_some(),
            delete_priority: naming::delete_priority(meta),
            bootstrap_members: crate::render::bootstrap_members(pd),
            outdated: pd.status.as_ref().is_some_and(|st| {
                st.common.conditions.iter().any(|c| {
                    c.type_ == tikv_operator_api::common::condition::SYNCED
                        && c.status == "False"
                        && c.reason == reasons::RESTART_PENDING
                })
            }),
        }
    }
}

/// Everything the PDGroup planner looks at.
#[derive(Debug, Clone)]
pub struct GroupInput<'a> {
    /// Group name (prefix of instance names).
    pub group: &'a str,
    /// The group's uid: seeds the initial members' names ([`StableSuffix`]).
    pub group_uid: &'a str,
    /// `spec.replicas`.
    pub replicas: i32,
    /// The group's spread policy.
    pub spread: Spread,
    /// Every instance of the group, deleting ones included.
    pub instances: Vec<InstanceState>,
    /// PD's view of its members.
    pub pd: &'a PdView,
    /// Whether the PD cluster of this group has been formed (the Cluster has a
    /// PD cluster id, or PD answered with a leader). Before that, all initial
    /// members are created at once with `initial-cluster`; after it, one
    /// member at a time joins.
    pub bootstrapped: bool,
}

/// A PD instance to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewInstance {
    /// Its name.
    pub name: String,
    /// Its topology.
    pub topology: Option<Topology>,
    /// For bootstrap members: the names of every initial member (this one
    /// included). `None`: the member joins the running cluster.
    pub bootstrap_members: Option<Vec<String>>,
}

pub use tikv_operator_core::component::Blocked;

/// What the PDGroup should do now. At most one kind of change per reconcile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupPlan {
    /// The instances match `replicas`; nothing to do.
    Steady,
    /// Create these instances.
    Create(Vec<NewInstance>),
    /// Delete this instance object; its finalizer removes the PD member
    /// safely (see [`crate::removal`]).
    Remove {
        /// Instance to remove.
        name: String,
        /// Why this one was chosen, for the Event.
        why: String,
    },
    /// A change is in flight; wait for it (not an error).
    Wait(Blocked),
    /// Restart this instance's Pod (it runs an outdated rendering). When
    /// `transfer_leader_to` is set, the instance leads: move leadership there
    /// first and restart at a later reconcile.
    Restart {
        /// Instance whose Pod is deleted (and recreated by the instance).
        name: String,
        /// Leadership target, when the instance is the PD leader.
        transfer_leader_to: Option<String>,
    },
    /// The change `replicas` asks for is unsafe now; report and wait.
    Refuse(Blocked),
}

impl GroupPlan {
    /// Whether the group should be polled fast (something is in flight).
    pub fn in_flight(&self) -> bool {
        !matches!(self, Self::Steady)
    }
}

/// Plans the next step of a PDGroup.
pub fn plan_group(input: &GroupInput<'_>, suffixes: &mut dyn SuffixSource) -> GroupPlan {
    let desired = usize::try_from(input.replicas.max(0)).unwrap_or(0);
    let live: Vec<&InstanceState> = input.instances.iter().filter(|i| !i.deleting).collect();

    if !input.bootstrapped {
        if input.instances.is_empty() {
            if desired == 0 {
                return GroupPlan::Steady;
            }
            // Names from the group's uid, not `suffixes`: a retry after an
            // ambiguous failure names the same members (safety rule 7).
            return GroupPlan::Create(bootstrap_members(
                input,
                desired,
                &mut StableSuffix::new(input.group_uid),
            ));
        }
        // A bootstrap interrupted half-way (some creates failed): create the
        // missing initial members under their listed names, or PD never forms.
        if let Some(list) = input
            .instances
            .iter()
            .find_map(|i| i.bootstrap_members.clone())
        {
            let mut topologies: Vec<Option<Topology>> =
                input.instances.iter().map(|i| i.topology.clone()).collect();
            let missing: Vec<NewInstance> = list
                .iter()
                .filter(|n| !input.instances.iter().any(|i| &i.name == *n))
                .map(|name| {
                    let topology = input.spread.next(topologies.iter().map(Option::as_ref));
                    topologies.push(topology.clone());
                    NewInstance {
                        name: name.clone(),
                        topology,
                        bootstrap_members: Some(list.clone()),
                    }
                })
                .collect();
            if !missing.is_empty() {
                return GroupPlan::Create(missing);
            }
        }
        return GroupPlan::Wait(Blocked {
            reason: reasons::WAITING_FOR_BOOTSTRAP,
            message: format!(
                "waiting for the {} initial PD members to form a cluster",
                input.instances.len()
            ),
        });
    }

    if let Some(d) = input.instances.iter().find(|i| i.deleting) {
        return GroupPlan::Wait(Blocked {
            reason: reasons::REMOVING_MEMBER,
            message: format!("waiting for PD member {} to be removed", d.name),
        });
    }

    match live.len().cmp(&desired) {
        Ordering::Equal => plan_restart(input, &live),
        Ordering::Less => plan_scale_out(input, &live, suffixes),
        Ordering::Greater => plan_scale_in(input, &live),
    }
}

/// One restart at a time, only while every member is ready and healthy and
/// PD answers (safety rule 2); the leader last, after a leadership transfer.
fn plan_restart(input: &GroupInput<'_>, live: &[&InstanceState]) -> GroupPlan {
    let outdated: Vec<&&InstanceState> = live.iter().filter(|i| i.outdated).collect();
    if outdated.is_empty() {
        return GroupPlan::Steady;
    }
    let Some(membership) = input.pd.membership() else {
        return GroupPlan::Wait(Blocked {
            reason: reasons::PD_UNAVAILABLE,
            message: "PD is unreachable; restarts wait until it answers".to_owned(),
        });
    };
    let not_ready: Vec<String> = live
        .iter()
        .filter(|i| !i.ready)
        .map(|i| i.name.clone())
        .chain(membership.unhealthy_except(""))
        .collect();
    if !not_ready.is_empty() {
        return GroupPlan::Wait(Blocked {
            reason: reasons::WAITING_FOR_MEMBER,
            message: format!(
                "restarts wait for every PD member to be ready and healthy: {}",
                not_ready.join(", ")
            ),
        });
    }
    let mut order = outdated;
    order.sort_by(|a, b| {
        membership
            .is_leader(&a.name)
            .cmp(&membership.is_leader(&b.name))
            .then_with(|| a.name.cmp(&b.name))
    });
    let Some(target) = order.first() else {
        return GroupPlan::Steady;
    };
    let transfer_leader_to = if membership.is_leader(&target.name) {
        let to = membership
            .members
            .iter()
            .filter(|m| m.name != target.name && m.healthy)
            .map(|m| m.name.clone())
            .min();
        match to {
            Some(to) => Some(to),
            None if membership.members.len() <= 1 => None,
            None => {
                return GroupPlan::Wait(Blocked {
                    reason: reasons::NO_LEADER_TRANSFER_TARGET,
                    message: format!("no healthy member can take over from {}", target.name),
                });
            }
        }
    } else {
        None
    };
    GroupPlan::Restart {
        name: target.name.clone(),
        transfer_leader_to,
    }
}

fn fresh_name(input: &GroupInput<'_>, taken: &[String], suffixes: &mut dyn SuffixSource) -> String {
    naming::fresh_name(
        input.group,
        |name| taken.iter().any(|t| t == name) || input.instances.iter().any(|i| i.name == name),
        suffixes,
    )
}

fn bootstrap_members(
    input: &GroupInput<'_>,
    desired: usize,
    suffixes: &mut dyn SuffixSource,
) -> Vec<NewInstance> {
    let mut names_taken = Vec::new();
    let mut topologies: Vec<Option<Topology>> = Vec::new();
    for _ in 0..desired {
        names_taken.push(fresh_name(input, &names_taken, suffixes));
        let t = input.spread.next(topologies.iter().map(Option::as_ref));
        topologies.push(t);
    }
    names_taken
        .iter()
        .zip(topologies)
        .map(|(name, topology)| NewInstance {
            name: name.clone(),
            topology,
            bootstrap_members: Some(names_taken.clone()),
        })
        .collect()
}

fn plan_scale_out(
    input: &GroupInput<'_>,
    live: &[&InstanceState],
    suffixes: &mut dyn SuffixSource,
) -> GroupPlan {
    let Some(membership) = input.pd.membership() else {
        return GroupPlan::Wait(Blocked {
            reason: reasons::PD_UNAVAILABLE,
            message: "PD is unreachable; new members join only a reachable PD".to_owned(),
        });
    };
    // One member joins at a time: the previous one must be Ready and healthy.
    if let Some(i) = live.iter().find(|i| !i.ready) {
        return GroupPlan::Wait(Blocked {
            reason: reasons::WAITING_FOR_MEMBER,
            message: format!("waiting for PD member {} to become ready", i.name),
        });
    }
    let unhealthy = membership.unhealthy_except("");
    if !unhealthy.is_empty() {
        return GroupPlan::Wait(Blocked {
            reason: reasons::WAITING_FOR_MEMBER,
            message: format!(
                "waiting for PD members to be healthy: {}",
                unhealthy.join(", ")
            ),
        });
    }
    let name = fresh_name(input, &[], suffixes);
    let topology = input.spread.next(live.iter().map(|i| i.topology.as_ref()));
    GroupPlan::Create(vec![NewInstance {
        name,
        topology,
        bootstrap_members: None,
    }])
}

fn plan_scale_in(input: &GroupInput<'_>, live: &[&InstanceState]) -> GroupPlan {
    // Safety rule 5: nothing destructive while PD is unreachable.
    let Some(membership) = input.pd.membership() else {
        return GroupPlan::Refuse(Blocked {
            reason: reasons::PD_UNAVAILABLE,
            message: "PD is unreachable; scale-in waits until it answers".to_owned(),
        });
    };
    if live.len() <= 1 {
        return GroupPlan::Refuse(Blocked {
            reason: reasons::LAST_MEMBER,
            message: "the last PD member cannot be removed; delete the Cluster instead".to_owned(),
        });
    }
    let unready =
        |i: &InstanceState| !i.ready || membership.member(&i.name).is_some_and(|m| !m.healthy);
    let crowding = |i: &InstanceState| {
        input.spread.crowding(
            i.topology.as_ref(),
            live.iter().map(|l| l.topology.as_ref()),
        )
    };
    let mut candidates: Vec<&InstanceState> = live.to_vec();
    candidates.sort_by(|a, b| {
        // The leader last (never removed if avoidable), then not-ready first,
        // most crowded topology first, highest delete priority first, name.
        membership
            .is_leader(&a.name)
            .cmp(&membership.is_leader(&b.name))
            .then_with(|| unready(b).cmp(&unready(a)))
            .then_with(|| cmp_fraction(crowding(b), crowding(a)))
            .then_with(|| b.delete_priority.cmp(&a.delete_priority))
            .then_with(|| a.name.cmp(&b.name))
    });
    let Some(victim) = candidates.first() else {
        return GroupPlan::Steady;
    };

    // Safety rule 3: another member that is not healthy blocks any removal.
    // The victim's member is found by name or peer URL (safety rule 3).
    let victim_member = membership
        .member_of(&victim.name, &victim.peer_url)
        .map(|m| m.id);
    let mut others_unhealthy: Vec<String> = membership.unhealthy_except_id(victim_member);
    others_unhealthy.extend(
        live.iter()
            .filter(|i| i.name != victim.name && !i.ready)
            .map(|i| i.name.clone()),
    );
    others_unhealthy.sort();
    others_unhealthy.dedup();
    if !others_unhealthy.is_empty() {
        return GroupPlan::Refuse(Blocked {
            reason: reasons::MEMBER_UNHEALTHY,
            message: format!(
                "scale-in waits: PD members other than {} are not healthy: {}",
                victim.name,
                others_unhealthy.join(", ")
            ),
        });
    }
    if !membership.quorum_without(victim_member) {
        return GroupPlan::Refuse(Blocked {
            reason: reasons::QUORUM_AT_RISK,
            message: format!(
                "removing PD member {} would leave the remaining members without a healthy majority",
                victim.name
            ),
        });
    }
    let why = if unready(victim) {
        "not ready".to_owned()
    } else if membership.is_leader(&victim.name) {
        "only candidate (PD leader; leadership is transferred first)".to_owned()
    } else {
        "most crowded topology / highest delete priority".to_owned()
    };
    GroupPlan::Remove {
        name: victim.name.clone(),
        why,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::pd_view::tests::membership;
    use tikv_operator_api::names;
    use tikv_operator_core::component::spread::fixtures::{policy, zone};

    /// Deterministic suffixes: `s00001`, `s00002`, ...
    #[derive(Default)]
    struct Counter(u32);
    impl SuffixSource for Counter {
        fn next_suffix(&mut self) -> String {
            self.0 += 1;
            format!("s{:05}", self.0)
        }
    }

    fn inst(name: &str, z: Option<&str>, ready: bool) -> InstanceState {
        InstanceState {
            name: name.to_owned(),
            peer_url: format!("http://{name}:2380"),
            topology: z.map(zone),
            ready,
            deleting: false,
            delete_priority: 0,
            bootstrap_members: None,
            outdated: false,
        }
    }

    fn input<'a>(
        replicas: i32,
        instances: Vec<InstanceState>,
        pd: &'a PdView,
        bootstrapped: bool,
    ) -> GroupInput<'a> {
        GroupInput {
            group: "pd",
            group_uid: "uid-1",
            replicas,
            spread: Spread::from_policies(&policy(&[("a", None), ("b", None), ("c", None)])),
            instances,
            pd,
            bootstrapped,
        }
    }

    fn healthy3(leader: &str) -> PdView {
        PdView::Reachable(membership(
            &[("pd-1", true), ("pd-2", true), ("pd-3", true)],
            Some(leader),
        ))
    }

    fn three(ready: [bool; 3]) -> Vec<InstanceState> {
        vec![
            inst("pd-1", Some("a"), ready[0]),
            inst("pd-2", Some("b"), ready[1]),
            inst("pd-3", Some("c"), ready[2]),
        ]
    }

    #[test]
    fn bootstrap_creates_all_initial_members_spread_with_one_member_list() {
        let pd = PdView::Unreachable {
            message: "no PD yet".into(),
        };
        let plan = plan_group(&input(3, vec![], &pd, false), &mut Counter::default());
        let GroupPlan::Create(new) = plan else {
            panic!("expected create, got {plan:?}")
        };
        let names: Vec<_> = new.iter().map(|n| n.name.clone()).collect();
        assert_eq!(names.len(), 3);
        assert!(
            names
                .iter()
                .all(|n| n.starts_with("pd-") && n.len() == 3 + names::INSTANCE_SUFFIX_LEN)
        );
        // Safety rule 7: planned again (a retry after an ambiguous failure,
        // by another operator process), the same names: creating them again
        // is idempotent, never a second initial set. Another group's differ.
        let again = plan_group(&input(3, vec![], &pd, false), &mut Counter::default());
        assert_eq!(again, GroupPlan::Create(new.clone()));
        let mut other = input(3, vec![], &pd, false);
        other.group_uid = "uid-2";
        let GroupPlan::Create(other) = plan_group(&other, &mut Counter::default()) else {
            panic!()
        };
        assert!(other.iter().all(|o| !names.contains(&o.name)));
        for n in &new {
            assert_eq!(n.bootstrap_members.as_deref(), Some(&names[..]));
        }
        let zones: Vec<_> = new.iter().map(|n| n.topology.clone().unwrap()).collect();
        assert_eq!(zones, [zone("a"), zone("b"), zone("c")]);
    }

    #[test]
    fn while_bootstrapping_nothing_else_happens() {
        let pd = PdView::Unreachable {
            message: "forming".into(),
        };
        // Even if the user scaled up meanwhile.
        let plan = plan_group(
            &input(5, three([false; 3]), &pd, false),
            &mut Counter::default(),
        );
        assert!(matches!(
            plan,
            GroupPlan::Wait(Blocked {
                reason: reasons::WAITING_FOR_BOOTSTRAP,
                ..
            })
        ));
    }

    #[test]
    fn an_interrupted_bootstrap_creates_the_missing_initial_members() {
        let pd = PdView::Unreachable {
            message: "forming".into(),
        };
        let list: Vec<String> = ["pd-1", "pd-2", "pd-3"].map(String::from).to_vec();
        let mut first = inst("pd-1", Some("a"), false);
        first.bootstrap_members = Some(list.clone());
        let plan = plan_group(&input(3, vec![first], &pd, false), &mut Counter::default());
        assert_eq!(
            plan,
            GroupPlan::Create(vec![
                NewInstance {
                    name: "pd-2".into(),
                    topology: Some(zone("b")),
                    bootstrap_members: Some(list.clone()),
                },
                NewInstance {
                    name: "pd-3".into(),
                    topology: Some(zone("c")),
                    bootstrap_members: Some(list),
                },
            ])
        );
    }

    #[test]
    fn scale_out_joins_one_member_at_a_time_into_the_emptiest_topology() {
        let pd = healthy3("pd-1");
        let plan = plan_group(
            &input(5, three([true; 3]), &pd, true),
            &mut Counter::default(),
        );
        assert_eq!(
            plan,
            GroupPlan::Create(vec![NewInstance {
                name: "pd-s00001".into(),
                topology: Some(zone("a")),
                bootstrap_members: None,
            }])
        );
        // The new member is not ready yet: the next one waits.
        let mut instances = three([true; 3]);
        instances.push(inst("pd-4", Some("a"), false));
        let plan = plan_group(&input(5, instances, &pd, true), &mut Counter::default());
        assert!(matches!(
            plan,
            GroupPlan::Wait(Blocked {
                reason: reasons::WAITING_FOR_MEMBER,
                ..
            })
        ));
    }

    #[test]
    fn scale_out_waits_for_unhealthy_members_and_unreachable_pd() {
        let pd = PdView::Reachable(membership(
            &[("pd-1", true), ("pd-2", false), ("pd-3", true)],
            Some("pd-1"),
        ));
        let plan = plan_group(
            &input(4, three([true; 3]), &pd, true),
            &mut Counter::default(),
        );
        assert!(matches!(plan, GroupPlan::Wait(_)), "{plan:?}");
        let down = PdView::Unreachable {
            message: "down".into(),
        };
        let plan = plan_group(
            &input(4, three([true; 3]), &down, true),
            &mut Counter::default(),
        );
        assert!(matches!(
            plan,
            GroupPlan::Wait(Blocked {
                reason: reasons::PD_UNAVAILABLE,
                ..
            })
        ));
    }

    #[test]
    fn new_names_never_collide_with_existing_instances() {
        let pd = healthy3("pd-1");
        let mut instances = three([true; 3]);
        instances[0].name = "pd-s00001".into();
        instances[1].name = "pd-s00002".into();
        let plan = plan_group(&input(4, instances, &pd, true), &mut Counter::default());
        let GroupPlan::Create(new) = plan else {
            panic!("{plan:?}")
        };
        assert_eq!(new[0].name, "pd-s00003");
    }

    #[test]
    fn scale_in_never_picks_the_leader_when_avoidable() {
        for leader in ["pd-1", "pd-2", "pd-3"] {
            let pd = healthy3(leader);
            let plan = plan_group(
                &input(2, three([true; 3]), &pd, true),
                &mut Counter::default(),
            );
            let GroupPlan::Remove { name, .. } = plan else {
                panic!("{plan:?}")
            };
            assert_ne!(name, leader);
        }
    }

    #[test]
    fn scale_in_prefers_unready_then_crowded_then_priority() {
        // Not ready first (removing the one broken member is allowed).
        let pd = healthy3("pd-1");
        let plan = plan_group(
            &input(2, three([true, true, false]), &pd, true),
            &mut Counter::default(),
        );
        assert!(
            matches!(plan, GroupPlan::Remove { ref name, .. } if name == "pd-3"),
            "{plan:?}"
        );

        // Most crowded topology: two members in zone a.
        let pd4 = PdView::Reachable(membership(
            &[
                ("pd-1", true),
                ("pd-2", true),
                ("pd-3", true),
                ("pd-4", true),
            ],
            Some("pd-1"),
        ));
        let mut instances = three([true; 3]);
        instances.push(inst("pd-4", Some("a"), true));
        let plan = plan_group(
            &input(3, instances.clone(), &pd4, true),
            &mut Counter::default(),
        );
        // pd-1 (zone a) is the leader, so its zone-mate pd-4 goes.
        assert!(
            matches!(plan, GroupPlan::Remove { ref name, .. } if name == "pd-4"),
            "{plan:?}"
        );

        // Delete priority among equally crowded topologies.
        let pd_lead4 = PdView::Reachable(membership(
            &[
                ("pd-1", true),
                ("pd-2", true),
                ("pd-3", true),
                ("pd-4", true),
            ],
            Some("pd-4"),
        ));
        let mut instances = three([true; 3]);
        instances.push(inst("pd-4", Some("a"), true));
        instances[1].delete_priority = 10; // zone b, less crowded than a
        let plan = plan_group(
            &input(3, instances.clone(), &pd_lead4, true),
            &mut Counter::default(),
        );
        // Zone a is most crowded; pd-4 is the leader there, so pd-1 goes.
        assert!(
            matches!(plan, GroupPlan::Remove { ref name, .. } if name == "pd-1"),
            "{plan:?}"
        );
        // Without spreading, priority decides.
        let mut no_spread = input(3, instances, &pd_lead4, true);
        no_spread.spread = Spread::default();
        let plan = plan_group(&no_spread, &mut Counter::default());
        assert!(
            matches!(plan, GroupPlan::Remove { ref name, .. } if name == "pd-2"),
            "{plan:?}"
        );
    }

    #[test]
    fn scale_in_refused_while_another_member_is_unhealthy() {
        // Safety rule 3. A 3-member PD with one unhealthy member (pd-3, whose
        // instance is already gone: a leftover member) must not lose another.
        let pd = PdView::Reachable(membership(
            &[("pd-1", true), ("pd-2", true), ("pd-3", false)],
            Some("pd-1"),
        ));
        let instances = vec![inst("pd-1", Some("a"), true), inst("pd-2", Some("b"), true)];
        let plan = plan_group(&input(1, instances, &pd, true), &mut Counter::default());
        assert!(
            matches!(
                plan,
                GroupPlan::Refuse(Blocked {
                    reason: reasons::MEMBER_UNHEALTHY,
                    ..
                })
            ),
            "{plan:?}"
        );

        // Two members not ready (one unhealthy in PD, one whose Pod is not
        // Ready): removing either would leave the other one broken.
        let pd = PdView::Reachable(membership(
            &[("pd-1", true), ("pd-2", false), ("pd-3", true)],
            Some("pd-1"),
        ));
        let plan = plan_group(
            &input(2, three([true, true, false]), &pd, true),
            &mut Counter::default(),
        );
        assert!(
            matches!(
                plan,
                GroupPlan::Refuse(Blocked {
                    reason: reasons::MEMBER_UNHEALTHY,
                    ..
                })
            ),
            "{plan:?}"
        );
    }

    #[test]
    fn scale_in_of_the_unhealthy_member_itself_is_allowed() {
        let pd = PdView::Reachable(membership(
            &[("pd-1", true), ("pd-2", false), ("pd-3", true)],
            Some("pd-1"),
        ));
        let plan = plan_group(
            &input(2, three([true; 3]), &pd, true),
            &mut Counter::default(),
        );
        assert!(
            matches!(plan, GroupPlan::Remove { ref name, .. } if name == "pd-2"),
            "{plan:?}"
        );
    }

    #[test]
    fn scale_in_refused_while_pd_is_unreachable() {
        // Safety rule 5.
        let pd = PdView::Unreachable {
            message: "down".into(),
        };
        let plan = plan_group(
            &input(1, three([true; 3]), &pd, true),
            &mut Counter::default(),
        );
        assert!(matches!(
            plan,
            GroupPlan::Refuse(Blocked {
                reason: reasons::PD_UNAVAILABLE,
                ..
            })
        ));
    }

    #[test]
    fn scale_in_never_removes_the_last_member_and_goes_one_at_a_time() {
        let pd = PdView::Reachable(membership(&[("pd-1", true)], Some("pd-1")));
        let plan = plan_group(
            &input(0, vec![inst("pd-1", Some("a"), true)], &pd, true),
            &mut Counter::default(),
        );
        assert!(matches!(
            plan,
            GroupPlan::Refuse(Blocked {
                reason: reasons::LAST_MEMBER,
                ..
            })
        ));
        let pd = healthy3("pd-1");
        let mut instances = three([true; 3]);
        instances[2].deleting = true;
        let plan = plan_group(&input(1, instances, &pd, true), &mut Counter::default());
        assert!(matches!(
            plan,
            GroupPlan::Wait(Blocked {
                reason: reasons::REMOVING_MEMBER,
                ..
            })
        ));
    }

    #[test]
    fn restarts_go_one_at_a_time_leader_last_and_only_when_all_are_healthy() {
        let pd = healthy3("pd-1");
        let mut instances = three([true; 3]);
        for i in &mut instances {
            i.outdated = true;
        }
        let plan = plan_group(
            &input(3, instances.clone(), &pd, true),
            &mut Counter::default(),
        );
        assert_eq!(
            plan,
            GroupPlan::Restart {
                name: "pd-2".into(),
                transfer_leader_to: None
            }
        );
        // Only the leader is left: leadership moves first.
        instances[1].outdated = false;
        instances[2].outdated = false;
        let plan = plan_group(
            &input(3, instances.clone(), &pd, true),
            &mut Counter::default(),
        );
        assert_eq!(
            plan,
            GroupPlan::Restart {
                name: "pd-1".into(),
                transfer_leader_to: Some("pd-2".into())
            }
        );
        // A member that is not ready (e.g. the one just restarted) blocks the next.
        instances[2].ready = false;
        let plan = plan_group(
            &input(3, instances.clone(), &pd, true),
            &mut Counter::default(),
        );
        assert!(matches!(plan, GroupPlan::Wait(_)), "{plan:?}");
        // PD unreachable: no restart.
        instances[2].ready = true;
        let down = PdView::Unreachable {
            message: "down".into(),
        };
        let plan = plan_group(&input(3, instances, &down, true), &mut Counter::default());
        assert!(
            matches!(
                plan,
                GroupPlan::Wait(Blocked {
                    reason: reasons::PD_UNAVAILABLE,
                    ..
                })
            ),
            "{plan:?}"
        );
    }

    #[test]
    fn steady_when_counts_match() {
        let pd = healthy3("pd-1");
        assert_eq!(
            plan_group(
                &input(3, three([true; 3]), &pd, true),
                &mut Counter::default()
            ),
            GroupPlan::Steady
        );
    }
}
