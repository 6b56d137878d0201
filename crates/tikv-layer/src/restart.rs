//! Rolling restarts of TiKV stores: which store may restart now (the group,
//! [`plan_restart`]) and the steps one store goes through (the instance,
//! [`next_restart_step`]). Pure: every input is passed in.
//!
//! A TiKV instance never recreates its running Pod on its own. When its
//! rendering changes (template, restart request, a new operator version),
//! it reports `RestartPending` until its group grants the restart by
//! stamping the new Pod revision into [`RESTART_ALLOWED`](tikv_operator_api::labels::RESTART_ALLOWED). The group
//! grants one restart at a time, and only while fewer than `maxUnavailable`
//! stores of the whole Cluster are disrupted (not Ready, being restarted or
//! removed); an instance that is already unavailable is restarted first, as
//! that adds no disruption, but still one at a time.
//!
//! A granted instance: evicts its store's leaders (records the start in
//! `status.leaderEvictionStartedAt`, then adds an evict-leader entry) ->
//! waits for zero leaders, or for the timeout; on timeout it proceeds only
//! if PD reports no down peers on other stores -> deletes its Pod -> creates
//! the new Pod -> once the Pod is Ready and the store serves, removes its
//! evict-leader entry and clears the record. The record makes every exit
//! path (a reverted change, an operator restart, a scale-in) remove the
//! entry, so no evict-leader entry is left behind.

use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use pd_client::{DownPeer, Store, StoreId, StoreLiveness};

use tikv_operator_core::objects::{started_by_pod, too_young_to_restart};

use crate::group::Blocked;
use crate::reasons;
use crate::store_view::{StoreView, is_serving, is_up};

/// A live TiKV instance of the group whose running Pod is outdated and whose
/// restart is not granted yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// Instance name.
    pub name: String,
    /// The Pod revision its restart would be granted for.
    pub revision: String,
    /// Why it is already unavailable (`None`: it serves).
    pub disrupted: Option<String>,
}

/// What the group's restart planner looks at.
#[derive(Debug, Clone)]
pub struct RestartInput {
    /// `maxUnavailable` of the group (at least 1).
    pub max_unavailable: usize,
    /// Instances of this group to restart, not granted yet.
    pub candidates: Vec<Candidate>,
    /// Instances of this group whose granted restart has not finished.
    pub in_progress: Vec<String>,
    /// Every disrupted TiKV instance of the Cluster (all groups), with why.
    pub disrupted: Vec<(String, String)>,
    /// Whether PD answered.
    pub pd_reachable: bool,
    /// Why version upgrades of TiKV must wait for PD (`None`: they need not).
    pub waiting_for_pd: Option<String>,
    /// A store of this group being removed (restarts wait for it).
    pub removal_in_flight: Option<String>,
}

/// What the group does about restarts now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RestartPlan {
    /// Nothing to restart.
    None,
    /// Grant this instance's restart to `revision`.
    Grant {
        /// Instance.
        name: String,
        /// Pod revision the restart is granted for.
        revision: String,
        /// Why now, for the Event.
        why: String,
    },
    /// Restarts are pending but must wait.
    Wait(Blocked),
}

/// Chooses the next restart of a group. See the module docs.
pub fn plan_restart(input: &RestartInput) -> RestartPlan {
    let mut candidates: Vec<&Candidate> = input.candidates.iter().collect();
    if candidates.is_empty() {
        return RestartPlan::None;
    }
    let wait =
        |reason: &'static str, message: String| RestartPlan::Wait(Blocked { reason, message });
    // Safety rule 5.
    if !input.pd_reachable {
        return wait(
            reasons::PD_UNAVAILABLE,
            "PD is unreachable; store restarts wait until it answers".to_owned(),
        );
    }
    // Safety rule 6.
    if let Some(why) = &input.waiting_for_pd {
        return wait(reasons::WAITING_FOR_PD_UPGRADE, why.clone());
    }
    if let Some(name) = &input.removal_in_flight {
        return wait(
            reasons::SCALING_IN,
            format!("store restarts wait for the removal of the store of {name}"),
        );
    }
    // Already unavailable first (restarting them adds no disruption), then by name.
    candidates.sort_by(|a, b| {
        b.disrupted
            .is_some()
            .cmp(&a.disrupted.is_some())
            .then_with(|| a.name.cmp(&b.name))
    });
    let Some(first) = candidates.first() else {
        return RestartPlan::None;
    };
    let pending = candidates.len();
    let budget = input.max_unavailable.max(1);
    if let Some(why) = &first.disrupted {
        // One at a time even among unavailable stores: a version that does not
        // start stops the rollout at one store.
        if let Some(other) = input.in_progress.iter().find(|n| **n != first.name) {
            return wait(
                reasons::ROLLING_UPDATE,
                format!(
                    "waiting for {other} to finish restarting ({pending} store(s) left to update)"
                ),
            );
        }
        // Safety rule 2, Cluster-wide: restarting a store that is already
        // unavailable adds no disruption only while the other unavailable
        // stores of the Cluster (every group) stay within the budget.
        let others: Vec<String> = input
            .disrupted
            .iter()
            .filter(|(n, _)| *n != first.name)
            .map(|(n, why)| format!("{n} ({why})"))
            .collect();
        if others.len() >= budget {
            return wait(
                reasons::WAITING_FOR_STORES,
                format!(
                    "{} other store(s) of the Cluster are unavailable, maxUnavailable is \
                     {budget}: {}; {pending} store(s) left to update",
                    others.len(),
                    others.join(", ")
                ),
            );
        }
        return RestartPlan::Grant {
            name: first.name.clone(),
            revision: first.revision.clone(),
            why: format!("already unavailable ({why}), restarted first"),
        };
    }
    // Safety rule 2: the Cluster's disruption budget.
    if input.disrupted.len() >= input.max_unavailable.max(1) {
        let list: Vec<String> = input
            .disrupted
            .iter()
            .map(|(n, why)| format!("{n} ({why})"))
            .collect();
        return wait(
            reasons::WAITING_FOR_STORES,
            format!(
                "{} store(s) of the Cluster are unavailable, maxUnavailable is {}: {}; {pending} \
                 store(s) left to update",
                input.disrupted.len(),
                input.max_unavailable.max(1),
                list.join(", ")
            ),
        );
    }
    RestartPlan::Grant {
        name: first.name.clone(),
        revision: first.revision.clone(),
        why: format!(
            "{} of at most {} store(s) unavailable",
            input.disrupted.len(),
            input.max_unavailable.max(1)
        ),
    }
}

/// Whether `store` was (re-)registered by a process of the Pod created at
/// `pod_created` (PD's start time of the store; see
/// [`tikv_operator_core::objects::started_by_pod`]). After a restart PD keeps
/// reporting the store Up from the old process's heartbeats for a while
/// (about 20 s); only the start time tells the new process serves.
pub fn store_back(store: &Store, pod_created: Option<Timestamp>) -> bool {
    started_by_pod(store.start_timestamp, pod_created)
}

/// What one instance's restart observes.
#[derive(Debug, Clone)]
pub struct StepInput<'a> {
    /// PD's view of the stores.
    pub pd: &'a StoreView,
    /// The instance's store.
    pub store: Option<&'a Store>,
    /// A Pod exists (not being deleted).
    pub pod_running: bool,
    /// A Pod exists but is being deleted.
    pub pod_terminating: bool,
    /// The running Pod runs the current rendering.
    pub pod_current: bool,
    /// The running Pod is Ready.
    pub pod_ready: bool,
    /// The store was registered by the running Pod's process ([`store_back`]).
    pub store_back: bool,
    /// PD's leader counts can be trusted (PD's leader did not change just now;
    /// see [`crate::store_view::Stores::leader_counts_settled`]).
    pub leader_counts_settled: bool,
    /// The group granted the restart to the current rendering.
    pub granted: bool,
    /// `status.leaderEvictionStartedAt`.
    pub eviction_started_at: Option<Timestamp>,
    /// Now.
    pub now: Timestamp,
    /// How long leaders may take to leave.
    pub evict_leader_timeout: Duration,
    /// The group's `maxUnavailable` (at least 1): re-checked against PD's
    /// view of the other stores right before the Pod goes.
    pub max_unavailable: usize,
}

/// The next step of one instance's restart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RestartStep {
    /// Nothing to restart, no entry of ours to remove.
    Idle,
    /// The Pod is outdated; the group has not granted its restart yet.
    Pending,
    /// Wait (report why).
    Wait(Blocked),
    /// Record the eviction start (when not recorded yet), then add the
    /// evict-leader entry (again: adding is idempotent, and an operator that
    /// died between recording and adding left none).
    EvictLeaders {
        /// The store.
        store: StoreId,
        /// Progress, for the condition.
        message: String,
    },
    /// The eviction timed out with leaders left: ask PD for down peers, then
    /// delete the Pod only if no other store has any.
    CheckDownPeers {
        /// The store.
        store: StoreId,
        /// Leaders it still holds.
        leaders: u64,
    },
    /// Delete the Pod (the instance recreates it from the new rendering).
    DeletePod {
        /// Why now, for the Event.
        why: String,
    },
    /// The new Pod serves: remove our evict-leader entry, clear the record.
    RemoveEvictLeader(Option<StoreId>),
}

impl RestartStep {
    /// Whether the restart moves (poll fast).
    pub fn in_flight(&self) -> bool {
        !matches!(self, Self::Idle | Self::Pending)
    }
}

fn alive(store: &Store) -> bool {
    is_up(store)
        && !matches!(
            store.liveness,
            StoreLiveness::Disconnected | StoreLiveness::Down
        )
}

/// Plans one instance's next restart step. Only for an instance that keeps
/// its store (not offline, not being deleted) whose store is not being
/// removed; see the module docs.
pub fn next_restart_step(input: &StepInput<'_>) -> RestartStep {
    let wait =
        |reason: &'static str, message: String| RestartStep::Wait(Blocked { reason, message });
    let outdated = input.pod_running && !input.pod_current;
    if !outdated && input.eviction_started_at.is_none() {
        return RestartStep::Idle;
    }
    if outdated && !input.granted && input.eviction_started_at.is_none() {
        return RestartStep::Pending;
    }
    // Safety rule 5.
    let Some(stores) = input.pd.stores() else {
        return wait(
            reasons::PD_UNAVAILABLE,
            "PD is unreachable; the restart waits".to_owned(),
        );
    };
    if input.pod_terminating {
        return wait(
            reasons::RESTARTING,
            "waiting for the old Pod to terminate".to_owned(),
        );
    }
    if !outdated {
        // Our entry is in place: the new Pod is up (or the change was
        // reverted). Remove it once the store serves again.
        return match input.store {
            Some(s) if input.pod_ready && is_serving(s) && input.store_back => {
                RestartStep::RemoveEvictLeader(Some(s.id))
            }
            // PD no longer lists the store (purged) while it lists others:
            // nothing left to evict from; clear the record.
            None if !stores.stores.is_empty() && input.pod_ready => {
                RestartStep::RemoveEvictLeader(None)
            }
            _ if !input.pod_running => {
                wait(reasons::RESTARTING, "waiting for the new Pod".to_owned())
            }
            _ => wait(
                reasons::RESTARTING,
                "waiting for the new Pod to be Ready and its process to register the store \
                 with PD again"
                    .to_owned(),
            ),
        };
    }
    if !input.granted {
        // A newer change arrived mid-restart; the group grants it next (this
        // instance already counts as disrupted).
        return RestartStep::Pending;
    }
    let Some(store) = input.store.filter(|s| alive(s)) else {
        // No store registered, or it does not heartbeat: no leader can be
        // moved off it; the Pod may go.
        return RestartStep::DeletePod {
            why: match input.store {
                None => "its store is not registered".to_owned(),
                Some(s) => format!("store {} is not heartbeating ({:?})", s.id, s.liveness),
            },
        };
    };
    let leaders = store.leader_count.unwrap_or(0);
    let Some(started) = input.eviction_started_at else {
        return RestartStep::EvictLeaders {
            store: store.id,
            message: format!(
                "evicting the leaders of store {} ({leaders} left) before the restart",
                store.id
            ),
        };
    };
    let elapsed = input.now.duration_since(started);
    let timeout = k8s_openapi::jiff::SignedDuration::try_from(input.evict_leader_timeout)
        .unwrap_or(k8s_openapi::jiff::SignedDuration::MAX);
    let ready_to_go =
        (store.leader_count == Some(0) && input.leader_counts_settled) || elapsed >= timeout;
    // Safety rule 2: re-checked right before the destructive step, not only
    // when the restart was granted: a store that went down meanwhile (a node
    // died) uses the budget, and this Pod waits.
    let down = others_down(stores, store.id);
    // A store whose process started moments ago could not be told apart
    // from its replacement (PD reports it Up from the old heartbeats for a
    // while, and only the start time tells the new process serves): its Pod
    // goes once it is old enough.
    if ready_to_go
        && let Some(why) = too_young_to_restart(
            &format!("store {}", store.id),
            store.start_timestamp,
            input.now,
        )
    {
        return wait(reasons::RESTARTING, why);
    }
    if ready_to_go && down.len() >= input.max_unavailable.max(1) {
        return wait(
            reasons::WAITING_FOR_STORES,
            format!(
                "the restart of store {} waits: {} other store(s) are unavailable in PD \
                 (maxUnavailable {}): {}",
                store.id,
                down.len(),
                input.max_unavailable.max(1),
                down.join(", ")
            ),
        );
    }
    if store.leader_count == Some(0) && input.leader_counts_settled {
        return RestartStep::DeletePod {
            why: format!("store {} leads no Region", store.id),
        };
    }
    if elapsed >= timeout {
        return RestartStep::CheckDownPeers {
            store: store.id,
            leaders,
        };
    }
    RestartStep::EvictLeaders {
        store: store.id,
        message: format!(
            "evicting the leaders of store {} before the restart ({leaders} left, {}s of {}s)",
            store.id,
            elapsed.as_secs(),
            input.evict_leader_timeout.as_secs()
        ),
    }
}

/// Other stores PD reports unavailable: kept (not removed) but not
/// heartbeating or not serving, or being removed.
fn others_down(stores: &crate::store_view::Stores, me: StoreId) -> Vec<String> {
    stores
        .stores
        .iter()
        .filter(|s| s.id != me && !s.is_removed())
        .filter_map(|s| {
            if s.is_removing() {
                Some(format!("store {} being removed", s.id))
            } else if !is_serving(s) {
                Some(format!(
                    "store {} {:?}/{:?}",
                    s.id, s.liveness, s.node_state
                ))
            } else {
                None
            }
        })
        .collect()
}

/// After an eviction timed out: the Pod may go only when no other store has
/// down peers (a Region with a down peer elsewhere could lose its majority).
pub fn after_timeout(store: StoreId, leaders: u64, down: &[DownPeer]) -> RestartStep {
    let mut elsewhere: Vec<String> = down
        .iter()
        .filter(|d| d.store_id != store)
        .map(|d| d.store_id.to_string())
        .collect();
    elsewhere.sort();
    elsewhere.dedup();
    if elsewhere.is_empty() {
        RestartStep::DeletePod {
            why: format!(
                "leader eviction timed out with {leaders} leader(s) left; PD reports no down \
                 peers on other stores"
            ),
        }
    } else {
        RestartStep::Wait(Blocked {
            reason: reasons::EVICTION_TIMED_OUT,
            message: format!(
                "leader eviction of store {store} timed out with {leaders} leader(s) left, and PD \
                 reports down peers on store(s) {}; the restart waits until they recover",
                elsewhere.join(", ")
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::store_view::Stores;
    use crate::store_view::tests::store;
    use pd_client::{NodeState, StoreState};
    use tikv_operator_core::objects::START_SKEW_SECONDS;

    fn cand(name: &str, disrupted: Option<&str>) -> Candidate {
        Candidate {
            name: name.into(),
            revision: format!("r-{name}"),
            disrupted: disrupted.map(str::to_owned),
        }
    }

    fn input(candidates: Vec<Candidate>) -> RestartInput {
        RestartInput {
            max_unavailable: 1,
            candidates,
            in_progress: vec![],
            disrupted: vec![],
            pd_reachable: true,
            waiting_for_pd: None,
            removal_in_flight: None,
        }
    }

    #[test]
    fn one_store_at_a_time_within_the_budget() {
        let mut i = input(vec![cand("kv-b", None), cand("kv-a", None)]);
        assert_eq!(
            plan_restart(&i),
            RestartPlan::Grant {
                name: "kv-a".into(),
                revision: "r-kv-a".into(),
                why: "0 of at most 1 store(s) unavailable".into()
            }
        );
        // kv-a restarting: the budget is used up, kv-b waits.
        i.candidates = vec![cand("kv-b", None)];
        i.in_progress = vec!["kv-a".into()];
        i.disrupted = vec![("kv-a".into(), "restarting".into())];
        assert!(matches!(
            plan_restart(&i),
            RestartPlan::Wait(Blocked {
                reason: reasons::WAITING_FOR_STORES,
                ..
            })
        ));
        // A store of another group that is down counts too.
        i.in_progress = vec![];
        i.disrupted = vec![("other-x".into(), "Pod not ready".into())];
        assert!(matches!(plan_restart(&i), RestartPlan::Wait(_)));
        // maxUnavailable 2 leaves room for one more.
        i.max_unavailable = 2;
        assert!(matches!(plan_restart(&i), RestartPlan::Grant { ref name, .. } if name == "kv-b"));
    }

    #[test]
    fn unavailable_stores_first_but_still_one_at_a_time() {
        let mut i = input(vec![
            cand("kv-a", None),
            cand("kv-c", Some("Pod not ready")),
        ]);
        i.disrupted = vec![("kv-c".into(), "Pod not ready".into())];
        // The budget is used up by kv-c itself; restarting it adds nothing.
        assert!(matches!(plan_restart(&i), RestartPlan::Grant { ref name, .. } if name == "kv-c"));
        // Two unavailable ones: the second waits for the first to finish.
        i.candidates = vec![cand("kv-d", Some("Pod not ready"))];
        i.in_progress = vec!["kv-c".into()];
        assert!(matches!(
            plan_restart(&i),
            RestartPlan::Wait(Blocked {
                reason: reasons::ROLLING_UPDATE,
                ..
            })
        ));
    }

    /// Safety rule 2, Cluster-wide: an unavailable store of this group is
    /// not restarted while another group's store is unavailable too (each
    /// group granting its own would disrupt two at once).
    #[test]
    fn an_unavailable_store_waits_for_other_groups_unavailable_stores() {
        let mut i = input(vec![cand("kv-c", Some("inside minReadySeconds"))]);
        i.disrupted = vec![
            ("kv-c".into(), "inside minReadySeconds".into()),
            ("hdd-a".into(), "restarting".into()),
        ];
        assert!(
            matches!(
                plan_restart(&i),
                RestartPlan::Wait(Blocked {
                    reason: reasons::WAITING_FOR_STORES,
                    ..
                })
            ),
            "{:?}",
            plan_restart(&i)
        );
        i.max_unavailable = 2;
        assert!(matches!(plan_restart(&i), RestartPlan::Grant { ref name, .. } if name == "kv-c"));
    }

    #[test]
    fn nothing_restarts_without_pd_before_pd_is_upgraded_or_during_a_removal() {
        let mut i = input(vec![cand("kv-a", None)]);
        i.pd_reachable = false;
        assert!(matches!(
            plan_restart(&i),
            RestartPlan::Wait(Blocked {
                reason: reasons::PD_UNAVAILABLE,
                ..
            })
        ));
        i.pd_reachable = true;
        i.waiting_for_pd = Some("PDGroup pd runs v8.5.5".into());
        assert!(matches!(
            plan_restart(&i),
            RestartPlan::Wait(Blocked {
                reason: reasons::WAITING_FOR_PD_UPGRADE,
                ..
            })
        ));
        i.waiting_for_pd = None;
        i.removal_in_flight = Some("kv-z".into());
        assert!(matches!(
            plan_restart(&i),
            RestartPlan::Wait(Blocked {
                reason: reasons::SCALING_IN,
                ..
            })
        ));
        assert_eq!(plan_restart(&input(vec![])), RestartPlan::None);
    }

    fn up(id: u64, leaders: u64) -> Store {
        let mut s = store(id, "kv:20160", StoreState::Up);
        s.node_state = NodeState::Serving;
        s.leader_count = Some(leaders);
        s
    }

    fn view(stores: Vec<Store>) -> StoreView {
        StoreView::Reachable(Stores {
            stores,
            ..Stores::default()
        })
    }

    fn step<'a>(pd: &'a StoreView, store: Option<&'a Store>) -> StepInput<'a> {
        StepInput {
            pd,
            store,
            pod_running: true,
            pod_terminating: false,
            pod_current: false,
            pod_ready: true,
            store_back: true,
            leader_counts_settled: true,
            granted: true,
            eviction_started_at: None,
            now: Timestamp::from_second(1_000).unwrap(),
            evict_leader_timeout: Duration::from_secs(300),
            max_unavailable: 1,
        }
    }

    /// Safety rule 2: the budget is re-checked right before the Pod goes. A
    /// store that went down after the grant (its node died) holds the Pod of
    /// a drained store until it is back; maxUnavailable 2 lets it go.
    #[test]
    fn the_pod_waits_when_another_store_went_down_after_the_grant() {
        let drained = up(1, 0);
        let mut dead = up(2, 3);
        dead.liveness = StoreLiveness::Disconnected;
        let pd = view(vec![drained.clone(), dead, up(3, 3)]);
        let mut i = step(&pd, Some(&drained));
        i.eviction_started_at = Some(Timestamp::from_second(900).unwrap());
        let s = next_restart_step(&i);
        assert!(
            matches!(&s, RestartStep::Wait(b) if b.reason == reasons::WAITING_FOR_STORES),
            "{s:?}"
        );
        // Also after the eviction timeout.
        i.now = Timestamp::from_second(900 + 301).unwrap();
        assert!(matches!(next_restart_step(&i), RestartStep::Wait(_)));
        i.max_unavailable = 2;
        assert!(matches!(
            next_restart_step(&i),
            RestartStep::DeletePod { .. }
        ));
        // A store being removed counts too.
        let mut removing = up(2, 0);
        removing.state = StoreState::Offline;
        removing.node_state = NodeState::Removing;
        let pd = view(vec![drained.clone(), removing, up(3, 3)]);
        let mut i = step(&pd, Some(&drained));
        i.eviction_started_at = Some(Timestamp::from_second(900).unwrap());
        assert!(matches!(next_restart_step(&i), RestartStep::Wait(_)));
    }

    /// A store whose process started less than
    /// `MIN_PROCESS_AGE_TO_RESTART` ago keeps its Pod: after the restart PD
    /// would still report it Up from the old heartbeats, and the old
    /// process's start time would pass as the new Pod's.
    #[test]
    fn a_store_whose_process_just_started_keeps_its_pod_until_it_could_be_told_apart() {
        use tikv_operator_core::objects::MIN_PROCESS_AGE_TO_RESTART;
        let mut drained = up(1, 0);
        drained.start_timestamp = Some(1_000 - 3);
        let pd = view(vec![drained.clone(), up(2, 3), up(3, 3)]);
        let mut i = step(&pd, Some(&drained));
        i.eviction_started_at = Some(Timestamp::from_second(999).unwrap());
        let s = next_restart_step(&i);
        assert!(
            matches!(&s, RestartStep::Wait(b) if b.reason == reasons::RESTARTING
                && b.message.contains("started 3s ago")),
            "{s:?}"
        );
        // Also when the eviction timed out.
        i.evict_leader_timeout = Duration::from_secs(1);
        assert!(matches!(next_restart_step(&i), RestartStep::Wait(_)));
        // Old enough (or no start time reported): the Pod goes.
        for started in [Some(1_000 - MIN_PROCESS_AGE_TO_RESTART), None] {
            drained.start_timestamp = started;
            let pd = view(vec![drained.clone(), up(2, 3), up(3, 3)]);
            let mut i = step(&pd, Some(&drained));
            i.eviction_started_at = Some(Timestamp::from_second(999).unwrap());
            assert!(
                matches!(next_restart_step(&i), RestartStep::DeletePod { .. }),
                "{started:?}"
            );
        }
    }

    #[test]
    fn a_granted_restart_evicts_leaders_then_deletes_the_pod_then_cleans_up() {
        let s = up(1, 4);
        let pd = view(vec![s.clone()]);
        let mut i = step(&pd, Some(&s));
        // Not granted: only reported.
        i.granted = false;
        assert_eq!(next_restart_step(&i), RestartStep::Pending);
        i.granted = true;
        assert!(matches!(
            next_restart_step(&i),
            RestartStep::EvictLeaders {
                store: StoreId(1),
                ..
            }
        ));
        // Leaders left: the entry is (re-)added at every step until they are gone.
        i.eviction_started_at = Some(Timestamp::from_second(900).unwrap());
        assert!(matches!(
            next_restart_step(&i),
            RestartStep::EvictLeaders { store: StoreId(1), ref message } if message.contains("4 left")
        ));
        let drained = up(1, 0);
        i.store = Some(&drained);
        // No leader left, but PD's leader just changed: its count may be
        // rebuilt still; keep evicting.
        i.leader_counts_settled = false;
        assert!(matches!(
            next_restart_step(&i),
            RestartStep::EvictLeaders { .. }
        ));
        i.leader_counts_settled = true;
        assert!(matches!(
            next_restart_step(&i),
            RestartStep::DeletePod { .. }
        ));
        // Old Pod terminating: nothing more.
        i.pod_terminating = true;
        assert!(matches!(next_restart_step(&i), RestartStep::Wait(_)));
        // New Pod, not ready yet: the entry stays.
        i.pod_terminating = false;
        i.pod_current = true;
        i.pod_ready = false;
        assert!(matches!(next_restart_step(&i), RestartStep::Wait(_)));
        // Ready, PD still reports the store Up, but from the old process's
        // heartbeats: the entry stays.
        i.pod_ready = true;
        i.store_back = false;
        assert!(matches!(next_restart_step(&i), RestartStep::Wait(_)));
        i.store_back = true;
        assert_eq!(
            next_restart_step(&i),
            RestartStep::RemoveEvictLeader(Some(StoreId(1)))
        );
        // Done: idle.
        i.eviction_started_at = None;
        assert_eq!(next_restart_step(&i), RestartStep::Idle);
    }

    #[test]
    fn eviction_timeout_asks_for_down_peers_and_pd_outage_stops_everything() {
        let s = up(1, 4);
        let pd = view(vec![s.clone()]);
        let mut i = step(&pd, Some(&s));
        i.eviction_started_at = Some(Timestamp::from_second(600).unwrap());
        assert_eq!(
            next_restart_step(&i),
            RestartStep::CheckDownPeers {
                store: StoreId(1),
                leaders: 4
            }
        );
        let peer = |store: u64| DownPeer {
            region_id: 7,
            peer_id: 8,
            store_id: StoreId(store),
            down_seconds: 60,
        };
        assert!(matches!(
            after_timeout(StoreId(1), 4, &[]),
            RestartStep::DeletePod { .. }
        ));
        assert!(matches!(
            after_timeout(StoreId(1), 4, &[peer(1)]),
            RestartStep::DeletePod { .. }
        ));
        assert!(matches!(
            after_timeout(StoreId(1), 4, &[peer(2)]),
            RestartStep::Wait(Blocked {
                reason: reasons::EVICTION_TIMED_OUT,
                ..
            })
        ));
        let down = StoreView::Unreachable {
            message: "x".into(),
        };
        let i = StepInput { pd: &down, ..i };
        assert!(matches!(
            next_restart_step(&i),
            RestartStep::Wait(Blocked {
                reason: reasons::PD_UNAVAILABLE,
                ..
            })
        ));
    }

    #[test]
    fn a_store_that_does_not_heartbeat_or_never_registered_is_restarted_directly() {
        let mut s = up(1, 4);
        s.liveness = StoreLiveness::Disconnected;
        let pd = view(vec![s.clone()]);
        assert!(matches!(
            next_restart_step(&step(&pd, Some(&s))),
            RestartStep::DeletePod { .. }
        ));
        assert!(matches!(
            next_restart_step(&step(&pd, None)),
            RestartStep::DeletePod { .. }
        ));
    }

    #[test]
    fn a_reverted_change_removes_our_entry_and_a_newer_change_waits_for_its_grant() {
        let s = up(1, 0);
        let pd = view(vec![s.clone()]);
        let mut i = step(&pd, Some(&s));
        i.eviction_started_at = Some(Timestamp::from_second(900).unwrap());
        i.pod_current = true;
        assert_eq!(
            next_restart_step(&i),
            RestartStep::RemoveEvictLeader(Some(StoreId(1)))
        );
        i.pod_current = false;
        i.granted = false;
        assert_eq!(next_restart_step(&i), RestartStep::Pending);
    }

    #[test]
    fn a_store_is_back_once_its_start_time_is_not_older_than_its_pod() {
        let mut s = up(1, 0);
        let pod_created = Timestamp::from_second(1_000).unwrap();
        assert!(store_back(&s, Some(pod_created)), "unknown start time");
        s.start_timestamp = Some(400);
        assert!(!store_back(&s, Some(pod_created)), "the old process");
        s.start_timestamp = Some(1_003);
        assert!(store_back(&s, Some(pod_created)));
        // A PD clock slightly behind the API server's.
        s.start_timestamp = Some(1_000 - START_SKEW_SECONDS);
        assert!(store_back(&s, Some(pod_created)));
        assert!(store_back(&s, None));
    }
}
