//! PD member failover planning: when a PD member that stays unhealthy is
//! replaced. Pure: every input, the time included, is passed in.
//!
//! A replacement removes first and adds after: the failed instance object is
//! deleted, its finalizer runs the ordinary safe removal ([`crate::removal`]:
//! the member is removed from PD by id only while every other member is
//! healthy and the members left keep a majority, then its Pod and PVCs go),
//! and the group then creates a new member as it does for any missing
//! replica (one at a time, only while every member is healthy). Adding
//! first would be worse for PD: with one member dead, a fourth member makes
//! the majority 3 of 4 while only 2 run, so PD would stop until the new one
//! started.
//!
//! Refusals (safety rules 2, 3 and 5): PD unreachable (a PD that lost its
//! quorum answers nothing, so it is reported, never repaired); more than one
//! member unhealthy; the failed member leads; another instance of the group
//! being removed or not ready; the members left would not keep a majority;
//! `maxTotal` replacements recorded. Off (the default for PD), nothing is
//! tracked at all.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use tikv_operator_api::{FailoverPhase, MemberFailure, PdFailoverStatus};
use tikv_operator_core::failover::reasons as fo;
use tikv_operator_core::failover::{Settings, recheck_in, set_phase, summarize};

use crate::group::{Blocked, InstanceState};
use crate::pd_view::{Membership, PdView};
use crate::reasons;

/// Finished failures (Completed) kept in the status.
pub const KEEP_FINISHED: usize = 5;

/// The settings of a PDGroup's `spec.failover` (absent: disabled).
pub fn settings_of(spec: Option<&tikv_operator_api::Failover>) -> Settings {
    Settings::of(spec, false)
}

/// What PD failover looks at.
#[derive(Debug, Clone)]
pub struct FailoverInput<'a> {
    /// `spec.failover`, defaulted.
    pub settings: Settings,
    /// The time now.
    pub now: Timestamp,
    /// Every instance of the group, deleting ones included.
    pub instances: &'a [InstanceState],
    /// PD's membership and health.
    pub pd: &'a PdView,
    /// `status.failover` as last written.
    pub previous: Option<&'a PdFailoverStatus>,
}

/// What PD failover decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailoverPlan {
    /// The instance to delete (its finalizer removes the member safely);
    /// `None`: nothing to do.
    pub replace: Option<String>,
    /// The new `status.failover` (`None`: nothing to report).
    pub status: Option<PdFailoverStatus>,
    /// The `Failover` condition: status, reason, message.
    pub condition: (bool, String, String),
    /// A refusal not reported before (for a Warning Event).
    pub new_refusal: Option<Blocked>,
    /// Replacements that finished in this step (for their Event).
    pub completed: Vec<String>,
    /// When the earliest watched member reaches the period: look again then.
    pub recheck_after: Option<std::time::Duration>,
}

fn blocked(reason: &'static str, message: String) -> Blocked {
    Blocked { reason, message }
}

/// Plans PD failover for one PDGroup. See the module docs.
pub fn plan_failover(input: &FailoverInput<'_>) -> FailoverPlan {
    let now = input.now;
    let previous = input.previous.cloned().unwrap_or_default();
    let mut total = previous.total.max(0);
    let (mut done, active): (Vec<MemberFailure>, Vec<MemberFailure>) = previous
        .failures
        .into_iter()
        .partition(|r| r.phase == FailoverPhase::Completed);
    if !input.settings.enabled {
        return disabled_plan(total, done);
    }
    let mut completed = Vec::new();
    let mut replace = None;
    let mut refusal: Option<Blocked> = None;
    let mut kept = finish_replacements(input, &active, &mut done, &mut completed);
    let in_flight = !kept.is_empty();

    let Some(m) = input.pd.membership() else {
        return unreachable_plan(input, total, active, kept, done, completed);
    };

    // Unhealthy members of live instances (one whose replacement started is
    // not watched again, even on a cache that does not show it deleting yet).
    let replacing: Vec<String> = kept.iter().map(|r| r.instance.clone()).collect();
    let failed: Vec<(&InstanceState, &crate::pd_view::MemberView)> = input
        .instances
        .iter()
        .filter(|i| !i.deleting && !replacing.contains(&i.name))
        .filter_map(|i| m.member_of(&i.name, &i.peer_url).map(|mv| (i, mv)))
        .filter(|(_, mv)| !mv.healthy)
        .collect();
    let unhealthy_all = m.members.iter().filter(|mv| !mv.healthy).count();
    let (due, recheck_after) = watch_failed_members(input, &failed, &active, &mut kept);

    for (n, at) in due.iter().copied().enumerate() {
        let name = kept[at].instance.clone();
        let member = failed
            .iter()
            .find(|(i, _)| i.name == name)
            .map(|(_, mv)| *mv);
        let busy = n > 0 || in_flight || replace.is_some();
        let check = replace_check(input, m, &name, member, busy, total, unhealthy_all);
        let r = &mut kept[at];
        match check {
            Ok(()) => {
                total += 1;
                set_phase(
                    r,
                    FailoverPhase::Replacing,
                    fo::FAILOVER_STARTED,
                    format!(
                        "PD member {name} was unhealthy for at least {}s: removing it from PD \
                         (then its Pod and PVCs); a new member joins once it is gone",
                        input.settings.period.as_secs()
                    ),
                    now,
                );
                replace = Some(name);
            }
            Err(b) => {
                let new = r.phase != FailoverPhase::Refused
                    || r.message.as_deref() != Some(b.message.as_str());
                if new && b.reason != fo::FAILOVER_IN_FLIGHT {
                    refusal.get_or_insert(b.clone());
                }
                set_phase(r, FailoverPhase::Refused, b.reason, b.message, now);
            }
        }
    }
    finish(total, kept, done, None, refusal, completed, recheck_after).with_replace(replace)
}

/// Decides the plan when failover is off: nothing tracked, history kept.
fn disabled_plan(total: i32, done: Vec<MemberFailure>) -> FailoverPlan {
    // Off (the default for PD): nothing is tracked, so a PD rollout's
    // restarts write no records and the condition does not flap. What
    // was recorded while it was on stays as history.
    let status = (total > 0 || !done.is_empty()).then_some(PdFailoverStatus {
        total,
        failures: done,
    });
    FailoverPlan {
        replace: None,
        status,
        condition: (
            false,
            fo::FAILOVER_DISABLED.to_owned(),
            "failover is off for this PDGroup (spec.failover.enabled); unhealthy members \
             are not replaced"
                .to_owned(),
        ),
        new_refusal: None,
        completed: Vec::new(),
        recheck_after: None,
    }
}

/// Decides which replacements in flight are done (the failed instance is
/// gone: moved to `done`, named in `completed`); returns the others.
fn finish_replacements(
    input: &FailoverInput<'_>,
    active: &[MemberFailure],
    done: &mut Vec<MemberFailure>,
    completed: &mut Vec<String>,
) -> Vec<MemberFailure> {
    let now = input.now;
    let instance = |n: &str| input.instances.iter().find(|i| i.name == n);
    let mut kept: Vec<MemberFailure> = Vec::new();
    // Replacements in flight: done once the failed instance is gone.
    for mut r in active
        .iter()
        .filter(|r| r.phase == FailoverPhase::Replacing)
        .cloned()
    {
        if instance(&r.instance).is_none() {
            set_phase(
                &mut r,
                FailoverPhase::Completed,
                fo::FAILOVER_COMPLETED,
                "the failed member was removed from PD and its instance, Pod and PVCs are \
                 gone; a new member joins in its place"
                    .to_owned(),
                now,
            );
            completed.push(r.instance.clone());
            done.push(r);
        } else {
            kept.push(r);
        }
    }
    kept
}

/// Decides the plan when PD does not answer: no action, every watch restarts.
fn unreachable_plan(
    input: &FailoverInput<'_>,
    total: i32,
    active: Vec<MemberFailure>,
    mut kept: Vec<MemberFailure>,
    done: Vec<MemberFailure>,
    completed: Vec<String>,
) -> FailoverPlan {
    let now = input.now;
    // Safety rule 5: without PD's answer nothing is decided. The records
    // stay, but what a member did while PD did not answer is unknown, so
    // its period starts over when PD answers again: found by e2e, after a
    // lost quorum came back, a member still catching up was replaced at
    // once because its record's clock had run through the outage.
    kept.extend(
        active
            .into_iter()
            .filter(|r| r.phase != FailoverPhase::Replacing)
            .map(|mut r| {
                r.since = Time(now);
                r
            }),
    );
    let why = match input.pd {
        PdView::Unreachable { message } => message.as_str(),
        PdView::Reachable(_) => "no answer",
    };
    finish(total, kept, done, Some(why), None, completed, None)
}

/// Finds the failed members to watch: appends a record for each to `kept`
/// and returns which are due (unhealthy for the whole period) and when the
/// next one will be.
fn watch_failed_members(
    input: &FailoverInput<'_>,
    failed: &[(&InstanceState, &crate::pd_view::MemberView)],
    active: &[MemberFailure],
    kept: &mut Vec<MemberFailure>,
) -> (Vec<usize>, Option<std::time::Duration>) {
    let now = input.now;
    let mut recheck_after: Option<std::time::Duration> = None;
    let mut due: Vec<usize> = Vec::new();
    for (i, mv) in failed {
        let prev = active.iter().find(|r| {
            r.instance == i.name
                && r.member_id == mv.id.0.to_string()
                && matches!(r.phase, FailoverPhase::Observing | FailoverPhase::Refused)
        });
        let mut r = prev.cloned().unwrap_or_else(|| MemberFailure {
            instance: i.name.clone(),
            member_id: mv.id.0.to_string(),
            since: Time(now),
            phase: FailoverPhase::Observing,
            reason: None,
            message: None,
            last_transition_time: Time(now),
        });
        let unhealthy_for = now.duration_since(r.since.0);
        if unhealthy_for >= input.settings.period {
            due.push(kept.len());
        } else {
            let left = input.settings.period - unhealthy_for;
            let wait = recheck_in(left);
            recheck_after = Some(recheck_after.map_or(wait, |w| w.min(wait)));
            set_phase(
                &mut r,
                FailoverPhase::Observing,
                reasons::MEMBER_UNHEALTHY,
                format!(
                    "PD member {} is unhealthy; replaced if it stays so for {}s more",
                    mv.display(),
                    left.as_secs()
                ),
                now,
            );
        }
        kept.push(r);
    }
    (due, recheck_after)
}

/// Decides whether the due member of instance `name` may be replaced now
/// (safety rules 2, 3 and 5) or why not; `busy`: another replacement runs
/// or comes first.
fn replace_check(
    input: &FailoverInput<'_>,
    m: &Membership,
    name: &str,
    member: Option<&crate::pd_view::MemberView>,
    busy: bool,
    total: i32,
    unhealthy_all: usize,
) -> Result<(), Blocked> {
    if total >= input.settings.max_total {
        Err(blocked(
            fo::MAX_TOTAL_REACHED,
            format!(
                "{total} replacement(s) recorded, failover.maxTotal is {}; a person must \
                 look (then set status.failover.total to 0)",
                input.settings.max_total
            ),
        ))
    } else if unhealthy_all > 1 {
        Err(blocked(
            fo::TOO_MANY_FAILURES,
            format!(
                "{unhealthy_all} PD members are unhealthy at once ({}); not replacing any \
                 (a member is removed only while every other member is healthy)",
                m.unhealthy_except("").join(", ")
            ),
        ))
    } else if busy {
        Err(blocked(
            fo::FAILOVER_IN_FLIGHT,
            "another PD member is being replaced first".to_owned(),
        ))
    } else if m.is_leader(name) {
        Err(blocked(
            reasons::MEMBER_UNHEALTHY,
            format!("{name} leads PD while unhealthy; failover waits for a new leader"),
        ))
    } else if let Some(other) = input
        .instances
        .iter()
        .find(|i| i.name != name && (i.deleting || !i.ready))
    {
        Err(blocked(
            reasons::WAITING_FOR_MEMBER,
            format!(
                "PD member {} is {}; failover waits until every other member serves",
                other.name,
                if other.deleting {
                    "being removed"
                } else {
                    "not ready"
                }
            ),
        ))
    } else if !m.quorum_without(member.map(|mv| mv.id)) {
        Err(blocked(
            reasons::QUORUM_AT_RISK,
            format!(
                "removing PD member {name} would leave PD without a healthy majority; \
                 not replacing it"
            ),
        ))
    } else {
        Ok(())
    }
}

fn finish(
    total: i32,
    active: Vec<MemberFailure>,
    mut done: Vec<MemberFailure>,
    unreachable: Option<&str>,
    new_refusal: Option<Blocked>,
    completed: Vec<String>,
    recheck_after: Option<std::time::Duration>,
) -> FailoverPlan {
    done.sort_by_key(|r| std::cmp::Reverse(r.last_transition_time.0));
    done.truncate(KEEP_FINISHED);
    let condition = condition_of(&active, unreachable);
    let mut failures = active;
    failures.extend(done);
    let status =
        (total > 0 || !failures.is_empty()).then_some(PdFailoverStatus { total, failures });
    FailoverPlan {
        replace: None,
        status,
        condition,
        new_refusal,
        completed,
        recheck_after,
    }
}

impl FailoverPlan {
    fn with_replace(mut self, replace: Option<String>) -> Self {
        self.replace = replace;
        self
    }
}

/// The `Failover` condition; `unreachable`: why PD did not answer.
fn condition_of(active: &[MemberFailure], unreachable: Option<&str>) -> (bool, String, String) {
    let of = |phase: FailoverPhase| {
        summarize(active, &[phase]).map(|(reason, message)| (reason.unwrap_or_default(), message))
    };
    if let Some((reason, message)) = of(FailoverPhase::Replacing) {
        return (true, reason, message);
    }
    if let Some(why) = unreachable {
        return (
            false,
            reasons::PD_UNAVAILABLE.to_owned(),
            format!(
                "PD does not answer ({why}); failover takes no action. If a majority of the PD \
                 members is down, PD lost its quorum: see docs/failover.md for the recovery"
            ),
        );
    }
    for phase in [FailoverPhase::Refused, FailoverPhase::Observing] {
        if let Some((reason, message)) = of(phase) {
            return (false, reason, message);
        }
    }
    (
        false,
        fo::NO_FAILURE.to_owned(),
        "every PD member is healthy".to_owned(),
    )
}

#[cfg(test)]
mod tests;
