//! Removing one PD member safely: the step machine the PD instance's
//! finalizer runs when its instance object is deleted (by the group on
//! scale-in, or by a user).
//!
//! Order: transfer leadership away if it leads -> remove the member through PD
//! -> delete the Pod -> delete the PVCs -> done (drop the finalizer). Every
//! step is re-planned from fresh observations, so a step that already happened
//! (or a crash between steps) is harmless.
//!
//! PVCs: a removed member's data cannot be reused (its member id is gone from
//! the PD cluster), so its PVCs are deleted once the Pod is gone. A new member
//! created later gets a new name and new PVCs.

use pd_client::MemberId;

use crate::group::Blocked;
use crate::pd_view::PdView;
use crate::reasons;

/// What the removal of one instance observes.
#[derive(Debug, Clone)]
pub struct RemovalInput<'a> {
    /// The instance (= PD member = Pod) name.
    pub instance: &'a str,
    /// The peer URL the instance advertises: how a member that etcd lists
    /// before its process started (no name yet) is recognised.
    pub peer_url: &'a str,
    /// PD's view of its members.
    pub pd: &'a PdView,
    /// Whether the instance's Pod still exists (terminating or not).
    pub pod_exists: bool,
    /// PVCs of the instance that still exist.
    pub pvcs: Vec<String>,
    /// The whole Cluster is being deleted: PD goes away entirely, so members
    /// are not removed one by one and PD is not consulted (the exception to
    /// safety rules 3 and 5 that deleting a Cluster grants).
    pub cluster_deleting: bool,
    /// The Cluster does not exist (finalizer stripped by hand, or never
    /// created): the removal waits, since without it nothing says whether
    /// the Cluster is being torn down or one member is leaving.
    pub cluster_missing: bool,
}

/// The next step of a removal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RemovalStep {
    /// Nothing may happen now; report why and look again later.
    Wait(Blocked),
    /// Ask PD to move leadership to this member.
    TransferLeader {
        /// The new leader.
        to: String,
    },
    /// Remove the member from PD, by id (`DELETE /members/id/{id}`).
    RemoveMember {
        /// The member's id.
        id: MemberId,
    },
    /// Delete the Pod.
    DeletePod,
    /// Delete these PVCs.
    DeletePvcs(Vec<String>),
    /// Everything is gone: drop the finalizer.
    Done,
}

/// Plans the next removal step.
pub fn next_removal_step(input: &RemovalInput<'_>) -> RemovalStep {
    if input.cluster_missing && !input.cluster_deleting {
        return RemovalStep::Wait(Blocked {
            reason: tikv_operator_core::conditions::CLUSTER_MISSING,
            message: format!(
                "the Cluster of PD member {} does not exist; its removal waits (recreate the \
                 Cluster, or remove the finalizer by hand to abandon the member)",
                input.instance
            ),
        });
    }
    if !input.cluster_deleting {
        // Safety rule 5: without PD's answer we cannot know whether the
        // member is still part of the cluster; nothing destructive happens.
        let Some(m) = input.pd.membership() else {
            return RemovalStep::Wait(Blocked {
                reason: reasons::PD_UNAVAILABLE,
                message: format!(
                    "PD is unreachable; removal of PD member {} waits",
                    input.instance
                ),
            });
        };
        if let Some(member) = m.member_of(input.instance, input.peer_url) {
            if m.is_leader(&member.name) {
                // Safety rule 3: leadership moves before the leader goes.
                let target = m
                    .members
                    .iter()
                    .filter(|o| o.name != input.instance && o.healthy)
                    .map(|o| o.name.clone())
                    .min();
                return match target {
                    Some(to) => RemovalStep::TransferLeader { to },
                    None => RemovalStep::Wait(Blocked {
                        reason: reasons::NO_LEADER_TRANSFER_TARGET,
                        message: format!(
                            "PD member {} leads and no other member is healthy to take over",
                            input.instance
                        ),
                    }),
                };
            }
            let unhealthy = m.unhealthy_except_id(Some(member.id));
            if !unhealthy.is_empty() {
                return RemovalStep::Wait(Blocked {
                    reason: reasons::MEMBER_UNHEALTHY,
                    message: format!(
                        "removal of PD member {} waits for other members to be healthy: {}",
                        input.instance,
                        unhealthy.join(", ")
                    ),
                });
            }
            if !m.quorum_without(Some(member.id)) {
                return RemovalStep::Wait(Blocked {
                    reason: if m.members.len() <= 1 {
                        reasons::LAST_MEMBER
                    } else {
                        reasons::QUORUM_AT_RISK
                    },
                    message: format!(
                        "removing PD member {} would leave PD without a healthy majority",
                        input.instance
                    ),
                });
            }
            return RemovalStep::RemoveMember { id: member.id };
        }
    }
    if input.pod_exists {
        return RemovalStep::DeletePod;
    }
    if !input.pvcs.is_empty() {
        return RemovalStep::DeletePvcs(input.pvcs.clone());
    }
    RemovalStep::Done
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pd_view::tests::membership;

    fn step(instance: &str, pd: &PdView, pod_exists: bool, pvcs: &[&str]) -> RemovalStep {
        next_removal_step(&RemovalInput {
            instance,
            peer_url: &format!("http://{instance}:2380"),
            pd,
            pod_exists,
            pvcs: pvcs.iter().map(|s| (*s).to_owned()).collect(),
            cluster_deleting: false,
            cluster_missing: false,
        })
    }

    #[test]
    fn leader_hands_over_to_a_healthy_member_first() {
        let pd = PdView::Reachable(membership(
            &[("pd-1", true), ("pd-2", false), ("pd-3", true)],
            Some("pd-1"),
        ));
        assert_eq!(
            step("pd-1", &pd, true, &["data-pd-1"]),
            RemovalStep::TransferLeader { to: "pd-3".into() }
        );
        let alone = PdView::Reachable(membership(&[("pd-1", true), ("pd-2", false)], Some("pd-1")));
        assert!(matches!(
            step("pd-1", &alone, true, &[]),
            RemovalStep::Wait(Blocked {
                reason: reasons::NO_LEADER_TRANSFER_TARGET,
                ..
            })
        ));
    }

    #[test]
    fn member_removed_through_pd_before_the_pod_and_pvcs() {
        let pd = PdView::Reachable(membership(
            &[("pd-1", true), ("pd-2", true), ("pd-3", true)],
            Some("pd-1"),
        ));
        assert_eq!(
            step("pd-3", &pd, true, &["data-pd-3"]),
            RemovalStep::RemoveMember { id: MemberId(102) }
        );
        let after = PdView::Reachable(membership(&[("pd-1", true), ("pd-2", true)], Some("pd-1")));
        assert_eq!(
            step("pd-3", &after, true, &["data-pd-3"]),
            RemovalStep::DeletePod
        );
        assert_eq!(
            step("pd-3", &after, false, &["data-pd-3"]),
            RemovalStep::DeletePvcs(vec!["data-pd-3".into()])
        );
        assert_eq!(step("pd-3", &after, false, &[]), RemovalStep::Done);
    }

    #[test]
    fn another_unhealthy_member_blocks_the_removal() {
        // Safety rule 3: 3 members, pd-2 unhealthy: pd-3 must not go.
        let pd = PdView::Reachable(membership(
            &[("pd-1", true), ("pd-2", false), ("pd-3", true)],
            Some("pd-1"),
        ));
        let s = step("pd-3", &pd, true, &["data-pd-3"]);
        assert!(
            matches!(
                s,
                RemovalStep::Wait(Blocked {
                    reason: reasons::MEMBER_UNHEALTHY,
                    ..
                })
            ),
            "{s:?}"
        );
        // The unhealthy member itself may go.
        assert_eq!(
            step("pd-2", &pd, true, &[]),
            RemovalStep::RemoveMember { id: MemberId(101) }
        );
    }

    #[test]
    fn the_last_member_is_never_removed() {
        let pd = PdView::Reachable(membership(&[("pd-1", true)], None));
        assert!(matches!(
            step("pd-1", &pd, true, &[]),
            RemovalStep::Wait(Blocked {
                reason: reasons::LAST_MEMBER,
                ..
            })
        ));
    }

    #[test]
    fn nothing_destructive_while_pd_is_unreachable() {
        // Safety rule 5: whatever else is observed, no delete and no PD write.
        let pd = PdView::Unreachable {
            message: "down".into(),
        };
        for pod in [true, false] {
            for pvcs in [&["data-pd-3"][..], &[]] {
                let s = step("pd-3", &pd, pod, pvcs);
                assert!(
                    matches!(
                        s,
                        RemovalStep::Wait(Blocked {
                            reason: reasons::PD_UNAVAILABLE,
                            ..
                        })
                    ),
                    "{s:?}"
                );
            }
        }
    }

    #[test]
    fn cluster_deletion_skips_pd() {
        let pd = PdView::Unreachable {
            message: "gone".into(),
        };
        let s = next_removal_step(&RemovalInput {
            instance: "pd-1",
            peer_url: "http://pd-1:2380",
            pd: &pd,
            pod_exists: true,
            pvcs: vec![],
            cluster_deleting: true,
            cluster_missing: false,
        });
        assert_eq!(s, RemovalStep::DeletePod);
    }

    /// Safety rules 1 and 5: only a Cluster being deleted skips PD. A missing
    /// Cluster (finalizer stripped by hand) deletes nothing and asks PD
    /// nothing, whatever PD says.
    #[test]
    fn a_missing_cluster_deletes_nothing() {
        let reachable = PdView::Reachable(membership(
            &[("pd-1", true), ("pd-2", true), ("pd-3", true)],
            Some("pd-1"),
        ));
        let gone = PdView::Reachable(membership(&[("pd-1", true), ("pd-2", true)], Some("pd-1")));
        let unreachable = PdView::Unreachable {
            message: "gone".into(),
        };
        for pd in [&reachable, &gone, &unreachable] {
            let s = next_removal_step(&RemovalInput {
                instance: "pd-3",
                peer_url: "http://pd-3:2380",
                pd,
                pod_exists: true,
                pvcs: vec!["data-pd-3".into()],
                cluster_deleting: false,
                cluster_missing: true,
            });
            assert!(
                matches!(
                    s,
                    RemovalStep::Wait(Blocked {
                        reason: tikv_operator_core::conditions::CLUSTER_MISSING,
                        ..
                    })
                ),
                "{s:?}"
            );
        }
    }

    #[test]
    fn an_instance_that_never_joined_is_just_deleted() {
        let pd = PdView::Reachable(membership(&[("pd-1", true), ("pd-2", true)], Some("pd-1")));
        assert_eq!(step("pd-9", &pd, true, &[]), RemovalStep::DeletePod);
    }

    /// Safety rule 3: a member that etcd lists before its process started
    /// has no name, only its peer URL. It is still a member: it is removed
    /// (by id) before its Pod and PVCs go, or the cluster keeps a member that
    /// will never start (4 members, 3 healthy: one more failure loses quorum).
    #[test]
    fn a_member_added_but_not_started_is_found_by_peer_url_and_removed_by_id() {
        let mut m = membership(
            &[("pd-1", true), ("pd-2", true), ("pd-3", true), ("", false)],
            Some("pd-1"),
        );
        m.members[3].peer_urls = vec!["http://pd-4:2380".into()];
        let pd = PdView::Reachable(m);
        assert_eq!(
            step("pd-4", &pd, true, &["data-pd-4"]),
            RemovalStep::RemoveMember { id: MemberId(103) }
        );
        // The nameless member counts as unhealthy for others' removals.
        assert!(matches!(
            step("pd-3", &pd, true, &[]),
            RemovalStep::Wait(Blocked {
                reason: reasons::MEMBER_UNHEALTHY,
                ..
            })
        ));
        // Once it is gone from PD, the Pod goes.
        let after = PdView::Reachable(membership(
            &[("pd-1", true), ("pd-2", true), ("pd-3", true)],
            Some("pd-1"),
        ));
        assert_eq!(
            step("pd-4", &after, true, &["data-pd-4"]),
            RemovalStep::DeletePod
        );
    }
}
