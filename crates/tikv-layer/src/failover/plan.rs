//! [`plan_failover`], step by step: advance the replacements in flight,
//! watch the failed stores, start (or refuse) one replacement, then build
//! the status and the condition.

use tikv_operator_api::tikv::{FailoverPhase, FailoverStatus, StoreFailure};
use tikv_operator_core::component::naming::{self, SuffixSource};
use tikv_operator_core::failover::summarize;

use super::replacements::{advance_replacement, resolve_unpaired};
use super::safety::{blocked, safety_check, too_many_failures};
use super::{
    FailoverAction, FailoverInput, FailoverPlan, KEEP_FINISHED, Member, finished, liveness_name,
    member_named, recheck_in, record, set_phase, store_by_id, unhealthy, unhealthy_since,
};
use crate::group::{Blocked, NewInstance};
use crate::reasons;
use crate::store_view::Stores;

/// What [`plan_failover`] has decided so far.
pub(super) struct Progress {
    /// Replacements counted (`status.failover.total`).
    pub(super) total: i32,
    /// Finished records (Completed, Cancelled).
    pub(super) done: Vec<StoreFailure>,
    /// The other records.
    pub(super) active: Vec<StoreFailure>,
    /// The one change asked for.
    pub(super) action: FailoverAction,
    /// The first refusal not reported before.
    pub(super) refusal: Option<Blocked>,
}

/// Plans failover for one TiKVGroup. See the module docs.
pub fn plan_failover(input: &FailoverInput<'_>, suffixes: &mut dyn SuffixSource) -> FailoverPlan {
    let now = input.now;
    let previous = input.previous.cloned().unwrap_or_default();
    let total = previous.total.max(0);
    let (done, active): (Vec<StoreFailure>, Vec<StoreFailure>) = previous
        .failures
        .into_iter()
        .partition(|r| finished(r.phase));
    let mut p = Progress {
        total,
        done,
        active,
        action: FailoverAction::None,
        refusal: None,
    };
    let stores = input.pd.stores();

    // Replacements in flight: (failed, replacement).
    let pairs: Vec<(&str, &Member)> = input
        .members
        .iter()
        .filter(|m| !m.leaving)
        .filter_map(|m| m.replaces.as_deref().map(|f| (f, m)))
        .collect();
    let held: Vec<String> = pairs
        .iter()
        .filter(|(f, _)| member_named(&input.members, f).is_some())
        .map(|(f, _)| (*f).to_owned())
        .collect();
    for (failed, repl) in &pairs {
        advance_replacement(input, stores, failed, repl, &mut p);
    }

    let awaiting = resolve_unpaired(&mut p.active, &pairs, &input.members, now);

    // Records whose instance is neither failing nor part of a replacement go.
    let in_pair = |n: &str| {
        pairs.iter().any(|(f, r)| *f == n || r.name == n) || awaiting.iter().any(|a| a == n)
    };
    let mut recheck_after: Option<std::time::Duration> = None;
    if let Some(stores) = stores {
        let (kept, due, wait) = watch_failed_stores(input, stores, &p.active, &in_pair);
        recheck_after = wait;
        let due = merge_watched(&mut p.active, kept, due, &in_pair);
        start_replacements(input, stores, &pairs, &held, &due, suffixes, &mut p);
    }
    finish_plan(input, p, held, stores.is_some(), recheck_after)
}

/// Finds the failed stores to watch: a record for each instance whose store
/// is unhealthy, which of them are due (unhealthy for the whole period), and
/// when the next one will be.
fn watch_failed_stores(
    input: &FailoverInput<'_>,
    stores: &Stores,
    active: &[StoreFailure],
    in_pair: &impl Fn(&str) -> bool,
) -> (Vec<StoreFailure>, Vec<usize>, Option<std::time::Duration>) {
    let now = input.now;
    let mut due: Vec<usize> = Vec::new();
    let mut recheck_after: Option<std::time::Duration> = None;
    let mut kept: Vec<StoreFailure> = Vec::new();
    for m in input
        .members
        .iter()
        .filter(|m| !m.leaving && !m.restarting && !in_pair(&m.name))
    {
        let Some(store) = store_by_id(Some(stores), m.store_id).filter(|s| unhealthy(s)) else {
            continue;
        };
        let prev = active.iter().find(|r| {
            r.instance == m.name
                && r.store_id == store.id.to_string()
                && matches!(r.phase, FailoverPhase::Observing | FailoverPhase::Refused)
        });
        let mut r = prev.cloned().unwrap_or_else(|| {
            record(
                &m.name,
                Some(store),
                unhealthy_since(store, now),
                FailoverPhase::Observing,
                now,
            )
        });
        r.store_state = liveness_name(store);
        if now.duration_since(r.since.0) >= input.settings.period {
            due.push(kept.len());
        } else {
            let left = input.settings.period - now.duration_since(r.since.0);
            let wait = recheck_in(left);
            recheck_after = Some(recheck_after.map_or(wait, |w| w.min(wait)));
            let message = format!(
                "store {} is {}; replaced if it stays so for {}s more",
                store.id,
                r.store_state,
                left.as_secs()
            );
            set_phase(
                &mut r,
                FailoverPhase::Observing,
                reasons::STORE_UNHEALTHY,
                message,
                now,
            );
        }
        kept.push(r);
    }
    (kept, due, recheck_after)
}

/// Decides which records stay (replacements, finished ones, then the
/// watched `kept`) and returns the due ones' indices, oldest failure first.
fn merge_watched(
    active: &mut Vec<StoreFailure>,
    kept: Vec<StoreFailure>,
    mut due: Vec<usize>,
    in_pair: &impl Fn(&str) -> bool,
) -> Vec<usize> {
    active.retain(|r| in_pair(&r.instance) || finished(r.phase));
    let base = active.len();
    active.extend(kept);
    due.iter_mut().for_each(|i| *i += base);
    // Oldest failure first.
    due.sort_by(|a, b| {
        active[*a]
            .since
            .0
            .cmp(&active[*b].since.0)
            .then_with(|| active[*a].instance.cmp(&active[*b].instance))
    });
    due
}

/// Decides, for each due failure in turn, whether its replacement starts
/// (a surge) or is refused.
fn start_replacements(
    input: &FailoverInput<'_>,
    stores: &Stores,
    pairs: &[(&str, &Member)],
    held: &[String],
    due: &[usize],
    suffixes: &mut dyn SuffixSource,
    p: &mut Progress,
) {
    let now = input.now;
    let in_flight = pairs
        .iter()
        .filter(|(f, _)| member_named(&input.members, f).is_some_and(|m| !m.leaving))
        .count();
    for (n, at) in due.iter().copied().enumerate() {
        let name = p.active[at].instance.clone();
        let check = start_check(input, stores, pairs, p, n, &name, in_flight);
        match check {
            Ok(()) => start_surge(input, held, name, at, suffixes, p),
            Err(b) => {
                let r = &mut p.active[at];
                let new = r.phase != FailoverPhase::Refused
                    || r.message.as_deref() != Some(b.message.as_str());
                if new && b.reason != reasons::FAILOVER_IN_FLIGHT {
                    p.refusal.get_or_insert(b.clone());
                }
                set_phase(r, FailoverPhase::Refused, b.reason, b.message, now);
            }
        }
    }
}

/// Decides whether the `n`-th due failure, of instance `name`, may start a
/// replacement now (every check passes) or why not.
fn start_check(
    input: &FailoverInput<'_>,
    stores: &Stores,
    pairs: &[(&str, &Member)],
    p: &Progress,
    n: usize,
    name: &str,
    in_flight: usize,
) -> Result<(), Blocked> {
    let total = p.total;
    let failed_store = member_named(&input.members, name).and_then(|m| m.store_id);
    if !input.settings.enabled {
        Err(blocked(
            reasons::FAILOVER_DISABLED,
            "failover is disabled (spec.failover.enabled: false)".to_owned(),
        ))
    } else if total >= input.settings.max_total {
        Err(blocked(
            reasons::MAX_TOTAL_REACHED,
            format!(
                "{total} replacement(s) recorded, failover.maxTotal is {}; a person \
                 must look (then set status.failover.total to 0)",
                input.settings.max_total
            ),
        ))
    } else if let Err(b) = too_many_failures(input, stores) {
        Err(b)
    } else if n > 0 || p.action != FailoverAction::None {
        Err(blocked(
            reasons::FAILOVER_IN_FLIGHT,
            "another failover step runs first".to_owned(),
        ))
    } else {
        let exempt: Vec<&str> = pairs
            .iter()
            .flat_map(|(f, r)| [*f, r.name.as_str()])
            .chain([name])
            .collect();
        safety_check(input, stores, failed_store, &exempt).and_then(|()| {
            if in_flight >= input.settings.max_in_flight {
                Err(blocked(
                    reasons::FAILOVER_IN_FLIGHT,
                    format!(
                        "{in_flight} replacement(s) in flight, failover.maxInFlight is {}",
                        input.settings.max_in_flight
                    ),
                ))
            } else {
                Ok(())
            }
        })
    }
}

/// Decides the surge that replaces `name` (record `at`): a fresh instance
/// name and the topology the spread policy picks for it.
fn start_surge(
    input: &FailoverInput<'_>,
    held: &[String],
    name: String,
    at: usize,
    suffixes: &mut dyn SuffixSource,
    p: &mut Progress,
) {
    let now = input.now;
    let r = &mut p.active[at];
    let taken = |c: &str| input.members.iter().any(|m| m.name == c);
    let new_name = naming::fresh_name(input.group, taken, suffixes);
    let topology = input.spread.next(
        input
            .members
            .iter()
            .filter(|m| !m.leaving && m.name != name && !held.contains(&m.name))
            .map(|m| m.topology.as_ref()),
    );
    p.total += 1;
    r.replacement = Some(new_name.clone());
    set_phase(
        r,
        FailoverPhase::Replacing,
        reasons::FAILOVER_STARTED,
        format!(
            "store {} was {} for at least {}s; {new_name} replaces it",
            r.store_id,
            r.store_state,
            input.settings.period.as_secs()
        ),
        now,
    );
    p.action = FailoverAction::Surge {
        failed: name,
        new: NewInstance {
            name: new_name,
            topology,
        },
    };
}

/// Builds the plan: the records (the finished ones: the newest few), the
/// new `status.failover` and the `Failover` condition.
fn finish_plan(
    input: &FailoverInput<'_>,
    p: Progress,
    held: Vec<String>,
    pd_reachable: bool,
    recheck_after: Option<std::time::Duration>,
) -> FailoverPlan {
    let Progress {
        total,
        mut done,
        active,
        action,
        refusal,
    } = p;
    // Finished records: the newest few.
    let (fin, still): (Vec<StoreFailure>, Vec<StoreFailure>) =
        active.into_iter().partition(|r| finished(r.phase));
    done.extend(fin);
    done.sort_by_key(|r| std::cmp::Reverse(r.last_transition_time.0));
    done.truncate(KEEP_FINISHED);
    let mut failures = still;
    failures.extend(done);

    let condition = condition_of(&failures, pd_reachable);
    let status = (input.previous.is_some() || !failures.is_empty())
        .then_some(FailoverStatus { total, failures });
    FailoverPlan {
        action,
        held,
        status,
        condition,
        new_refusal: refusal,
        recheck_after,
    }
}

/// Decides the `Failover` condition from the records: status, reason, message.
fn condition_of(failures: &[StoreFailure], pd_reachable: bool) -> (bool, String, String) {
    if let Some((reason, running)) = summarize(
        failures,
        &[FailoverPhase::Replacing, FailoverPhase::Removing],
    ) {
        return (
            true,
            reason.unwrap_or_else(|| reasons::FAILOVER_STARTED.to_owned()),
            running,
        );
    }
    if !pd_reachable && !failures.iter().all(|r| finished(r.phase)) {
        return (
            false,
            reasons::PD_UNAVAILABLE.to_owned(),
            "PD is unreachable; failover takes no action".to_owned(),
        );
    }
    for phase in [FailoverPhase::Refused, FailoverPhase::Observing] {
        if let Some((reason, list)) = summarize(failures, &[phase]) {
            return (
                false,
                reason.unwrap_or_else(|| reasons::STORE_UNHEALTHY.to_owned()),
                list,
            );
        }
    }
    (
        false,
        reasons::NO_FAILURE.to_owned(),
        "no store of the group is unhealthy".to_owned(),
    )
}
