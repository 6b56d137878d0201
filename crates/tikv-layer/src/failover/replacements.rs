//! The replacements in flight (a failed instance and the instance
//! annotated as its replacement): each advances by one step per plan, and a
//! record whose pair is gone is finished from what the instances show.

use k8s_openapi::jiff::Timestamp;
use pd_client::Store;
use tikv_operator_api::tikv::{FailoverPhase, StoreFailure};

use super::plan::Progress;
use super::safety::safety_check;
use super::{
    FailoverAction, FailoverInput, Member, UNSEEN_REPLACEMENT_GRACE, healthy, liveness_name,
    member_named, record, set_phase, store_by_id,
};
use crate::reasons;
use crate::store_view::{Stores, is_serving};

/// Decides the next step of the replacement of `failed` by `repl`: finish it
/// once the failed instance is gone, cancel it when the failed store came
/// back, else remove the failed store once `repl` serves and it is safe.
pub(super) fn advance_replacement(
    input: &FailoverInput<'_>,
    stores: Option<&Stores>,
    failed: &str,
    repl: &Member,
    p: &mut Progress,
) {
    let now = input.now;
    let fm = member_named(&input.members, failed);
    let fstore = fm.and_then(|m| store_by_id(stores, m.store_id));
    let at = pair_record(p, failed, fstore, repl, now);
    let r = &mut p.active[at];
    let Some(fm) = fm else {
        set_phase(
            r,
            FailoverPhase::Completed,
            reasons::FAILOVER_COMPLETED,
            format!("replaced by {}; the failed store is removed", repl.name),
            now,
        );
        if p.action == FailoverAction::None {
            p.action = FailoverAction::Finish {
                failed: failed.to_owned(),
                replacement: repl.name.clone(),
            };
        }
        return;
    };
    if fm.leaving {
        set_phase(
            r,
            FailoverPhase::Removing,
            reasons::FAILOVER_REMOVING,
            format!(
                "{} serves; PD removes the failed store, then its instance, Pod and PVCs go",
                repl.name
            ),
            now,
        );
        return;
    }
    let Some(stores) = stores else {
        r.message = Some("PD is unreachable; failover waits".to_owned());
        return;
    };
    if fstore.is_some_and(healthy) {
        set_phase(
            r,
            FailoverPhase::Cancelled,
            reasons::FAILOVER_CANCELLED,
            format!(
                "the store came back before its removal started; {} is taken out again",
                repl.name
            ),
            now,
        );
        if p.action == FailoverAction::None {
            p.action = FailoverAction::Cancel {
                failed: failed.to_owned(),
                replacement: repl.name.clone(),
            };
        }
        return;
    }
    if let Some(s) = fstore {
        r.store_state = liveness_name(s);
    }
    remove_failed_when_safe(input, stores, fm, repl, at, p);
}

/// Finds the record (index in `p.active`) of the replacement of `failed` by
/// `repl`, bringing back or creating it, and counts the replacement once.
fn pair_record(
    p: &mut Progress,
    failed: &str,
    fstore: Option<&Store>,
    repl: &Member,
    now: Timestamp,
) -> usize {
    let at = match p.active.iter().position(|r| r.instance == failed) {
        Some(at) => at,
        None => {
            // A finished record of this very replacement (the view of
            // the replacement predates its Finish), else none at all
            // (the status write was lost): record it now.
            let r =
                match p.done.iter().position(|r| {
                    r.instance == failed && r.replacement.as_ref() == Some(&repl.name)
                }) {
                    Some(d) => p.done.remove(d),
                    None => record(failed, fstore, now, FailoverPhase::Replacing, now),
                };
            p.active.push(r);
            p.active.len() - 1
        }
    };
    let r = &mut p.active[at];
    // `total` counts each replacement once. A replacement that the
    // record does not name yet was created on a reconcile whose status
    // write was lost or is not in this (cached, possibly older) view of
    // the group yet: count it now, or a stale view would write the
    // count back down.
    if r.replacement.as_deref() != Some(repl.name.as_str()) {
        p.total += 1;
    }
    r.replacement = Some(repl.name.clone());
    at
}

/// Decides whether the failed store of `fm` is removed now: once `repl`
/// serves and the safety checks pass; else its record says what it waits for.
fn remove_failed_when_safe(
    input: &FailoverInput<'_>,
    stores: &Stores,
    fm: &Member,
    repl: &Member,
    at: usize,
    p: &mut Progress,
) {
    let now = input.now;
    let r = &mut p.active[at];
    // The replacement serves by every measure the disruption budget
    // uses (Ready for minReadySeconds, store registered by its running
    // process), not only in PD's eyes.
    let repl_serves = repl.ready
        && repl.disrupted.is_none()
        && store_by_id(Some(stores), repl.store_id).is_some_and(is_serving);
    if !repl_serves {
        set_phase(
            r,
            FailoverPhase::Replacing,
            reasons::FAILOVER_STARTED,
            format!("waiting for the store of {} to serve", repl.name),
            now,
        );
        return;
    }
    match safety_check(
        input,
        stores,
        fm.store_id,
        &[fm.name.as_str(), repl.name.as_str()],
    ) {
        Ok(()) => {
            set_phase(
                r,
                FailoverPhase::Removing,
                reasons::FAILOVER_REMOVING,
                format!("{} serves; removing the failed store through PD", repl.name),
                now,
            );
            if p.action == FailoverAction::None {
                p.action = FailoverAction::RemoveFailed {
                    failed: fm.name.clone(),
                    replacement: repl.name.clone(),
                };
            }
        }
        Err(b) => {
            if r.message.as_deref() != Some(b.message.as_str()) {
                p.refusal.get_or_insert(b.clone());
            }
            set_phase(
                r,
                FailoverPhase::Replacing,
                b.reason,
                b.message.clone(),
                now,
            );
        }
    }
}

/// Records of a replacement (Replacing, Removing) whose pair no longer
/// exists, though this reconcile did not end it: the step that ended it
/// (a Finish or Cancel that took the annotation off the replacement) ran on
/// an earlier reconcile whose status this view of the group does not show,
/// or its status write was lost. Their outcome is read from the instances,
/// so such a record is finished, never dropped (which would lose what
/// failover did; found by e2e: `total` 1 with no record). Returns the
/// failed instances whose replacement is not visible yet: they stay
/// Replacing within [`UNSEEN_REPLACEMENT_GRACE`] and are not watched as a
/// new failure meanwhile (which would surge a second time).
pub(super) fn resolve_unpaired(
    active: &mut [StoreFailure],
    pairs: &[(&str, &Member)],
    members: &[Member],
    now: Timestamp,
) -> Vec<String> {
    let member = |n: &str| members.iter().find(|m| m.name == n);
    let mut awaiting = Vec::new();
    for r in active.iter_mut().filter(|r| {
        matches!(r.phase, FailoverPhase::Replacing | FailoverPhase::Removing)
            && !pairs.iter().any(|(f, _)| *f == r.instance)
    }) {
        let repl = r.replacement.clone().unwrap_or_default();
        let (phase, reason, message) = match (member(&r.instance), member(&repl)) {
            (None, Some(m)) if !m.leaving => (
                FailoverPhase::Completed,
                reasons::FAILOVER_COMPLETED,
                format!("replaced by {repl}; the failed store is removed"),
            ),
            (None, _) => (
                FailoverPhase::Completed,
                reasons::FAILOVER_COMPLETED,
                format!(
                    "the failed store is removed; its replacement {repl} is gone or leaving too"
                ),
            ),
            (Some(_), Some(m)) if m.leaving => (
                FailoverPhase::Cancelled,
                reasons::FAILOVER_CANCELLED,
                format!("{repl} is taken out again; the failed instance stays"),
            ),
            (Some(_), Some(_)) => (
                FailoverPhase::Cancelled,
                reasons::FAILOVER_CANCELLED,
                format!("{repl} no longer replaces it (its annotation is gone)"),
            ),
            (Some(_), None)
                if now.duration_since(r.last_transition_time.0) < UNSEEN_REPLACEMENT_GRACE =>
            {
                awaiting.push(r.instance.clone());
                continue;
            }
            (Some(_), None) => (
                FailoverPhase::Cancelled,
                reasons::FAILOVER_CANCELLED,
                format!(
                    "its replacement {repl} does not exist (not seen for {}s); the failed \
                     store is watched again",
                    UNSEEN_REPLACEMENT_GRACE.as_secs()
                ),
            ),
        };
        tracing::info!(
            failed = %r.instance,
            replacement = %repl,
            ?phase,
            %message,
            "failover record of an earlier step finished from what the instances show"
        );
        set_phase(r, phase, reason, message, now);
    }
    awaiting
}
