//! Conditions following Kubernetes API conventions: one entry per `type`,
//! `lastTransitionTime` changes only when `status` changes, every entry
//! carries the `observedGeneration` it was computed for.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use tikv_operator_api::common::condition;

/// `status` value of a condition that holds.
pub const TRUE: &str = "True";
/// `status` value of a condition that does not hold.
pub const FALSE: &str = "False";
/// `status` value of a condition that cannot be determined.
pub const UNKNOWN: &str = "Unknown";

/// Reason (both layers): the object's Cluster does not exist (never created,
/// or its finalizer was stripped by hand); nothing is created or removed.
pub const CLUSTER_MISSING: &str = "ClusterMissing";

/// A condition as a reconciler computes it (without the bookkeeping fields).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConditionUpdate {
    /// Condition type, e.g. `Ready` (see `tikv_operator_api::common::condition`).
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: &'static str,
    /// CamelCase machine-readable reason.
    pub reason: String,
    /// Human-readable message.
    pub message: String,
}

impl ConditionUpdate {
    /// A condition of `type_` with `status` `True` when `holds`, else `False`.
    pub fn new(
        type_: impl Into<String>,
        holds: bool,
        reason: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            type_: type_.into(),
            status: if holds { TRUE } else { FALSE },
            reason: reason.into(),
            message: message.into(),
        }
    }

    /// A condition whose status cannot be determined (e.g. PD unreachable).
    pub fn unknown(
        type_: impl Into<String>,
        reason: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            type_: type_.into(),
            status: UNKNOWN,
            reason: reason.into(),
            message: message.into(),
        }
    }
}

/// A group's `Synced` and `Ready` from whether its template was refused
/// (`refused`: reason and message, e.g. a config that does not parse) and its
/// members' readiness (`ready`: holds, reason, message). A group whose template
/// is refused is `Synced=False` and not `Ready`, whatever its members run: its
/// status must not look healthy while a change the user made is rejected.
pub fn group_sync_and_ready(
    refused: Option<(&str, &str)>,
    ready: (bool, &str, String),
) -> [ConditionUpdate; 2] {
    let (holds, reason, message) = ready;
    match refused {
        Some((r, m)) => [
            ConditionUpdate::new(condition::SYNCED, false, r, m),
            ConditionUpdate::new(condition::READY, false, r, format!("{message}; {m}")),
        ],
        None => [
            ConditionUpdate::new(
                condition::SYNCED,
                true,
                "Synced",
                "the template is accepted",
            ),
            ConditionUpdate::new(condition::READY, holds, reason, message),
        ],
    }
}

/// Sets `update` in `conditions` for `observed_generation` at `now`.
/// `lastTransitionTime` is set to `now` only when the condition is new or its
/// status changes; reason, message and observedGeneration are always updated.
/// Returns whether anything changed.
pub fn set(
    conditions: &mut Vec<Condition>,
    update: ConditionUpdate,
    observed_generation: Option<i64>,
    now: Timestamp,
) -> bool {
    match conditions.iter_mut().find(|c| c.type_ == update.type_) {
        Some(c) => {
            let before = c.clone();
            if c.status != update.status {
                c.status = update.status.to_owned();
                c.last_transition_time = Time(now);
            }
            c.reason = update.reason;
            c.message = update.message;
            c.observed_generation = observed_generation;
            *c != before
        }
        None => {
            conditions.push(Condition {
                type_: update.type_,
                status: update.status.to_owned(),
                reason: update.reason,
                message: update.message,
                observed_generation,
                last_transition_time: Time(now),
            });
            true
        }
    }
}

/// The condition of `type_`, if present.
pub fn find<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// Whether the condition of `type_` is present with status `True`.
pub fn is_true(conditions: &[Condition], type_: &str) -> bool {
    find(conditions, type_).is_some_and(|c| c.status == TRUE)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn t(secs: i64) -> Timestamp {
        Timestamp::from_second(secs).unwrap()
    }

    #[test]
    fn transition_time_moves_only_when_status_changes() {
        let mut conds = Vec::new();
        assert!(set(
            &mut conds,
            ConditionUpdate::new("Ready", false, "Starting", "0/3 ready"),
            Some(1),
            t(100)
        ));
        // Same status, new reason/message/generation: updated, time kept.
        assert!(set(
            &mut conds,
            ConditionUpdate::new("Ready", false, "Joining", "1/3 ready"),
            Some(2),
            t(200)
        ));
        let c = find(&conds, "Ready").unwrap();
        assert_eq!(c.last_transition_time, Time(t(100)));
        assert_eq!(c.reason, "Joining");
        assert_eq!(c.observed_generation, Some(2));
        // Identical update: nothing changes.
        assert!(!set(
            &mut conds,
            ConditionUpdate::new("Ready", false, "Joining", "1/3 ready"),
            Some(2),
            t(300)
        ));
        // Status flips: time moves.
        assert!(set(
            &mut conds,
            ConditionUpdate::new("Ready", true, "AllReady", "3/3 ready"),
            Some(2),
            t(400)
        ));
        let c = find(&conds, "Ready").unwrap();
        assert_eq!(c.last_transition_time, Time(t(400)));
        assert!(is_true(&conds, "Ready"));
        assert_eq!(conds.len(), 1);
    }

    #[test]
    fn conditions_of_different_types_are_independent() {
        let mut conds = Vec::new();
        set(
            &mut conds,
            ConditionUpdate::new("Ready", true, "R", ""),
            None,
            t(1),
        );
        set(
            &mut conds,
            ConditionUpdate::unknown("Synced", "PDUnavailable", "PD unreachable"),
            None,
            t(2),
        );
        assert_eq!(conds.len(), 2);
        assert!(is_true(&conds, "Ready"));
        assert!(!is_true(&conds, "Synced"));
        assert_eq!(find(&conds, "Synced").unwrap().status, UNKNOWN);
    }
}
