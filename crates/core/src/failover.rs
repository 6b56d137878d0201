//! What TiKV store failover and PD member failover share: the defaulted
//! `spec.failover` settings and the reasons of the `Failover` condition and
//! its Events. Each layer plans its own failover (`docs/failover.md`).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use tikv_operator_api::tikv::StoreFailure;
use tikv_operator_api::{Failover, FailoverPhase, MemberFailure};

/// `spec.failover`, defaulted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// Whether new replacements may start.
    pub enabled: bool,
    /// How long a member must stay unhealthy before it is replaced.
    pub period: SignedDuration,
    /// Replacements at once, and the most unhealthy members to act at all.
    pub max_in_flight: usize,
    /// Replacements recorded before a person must look.
    pub max_total: i32,
}

impl Settings {
    /// The settings of a group's `spec.failover`; `enabled_by_default`: what
    /// an absent `enabled` means for the component (TiKV on, PD off).
    pub fn of(spec: Option<&Failover>, enabled_by_default: bool) -> Self {
        let period = spec
            .and_then(|f| f.period_seconds)
            .unwrap_or(Failover::DEFAULT_PERIOD_SECONDS)
            .max(1);
        Self {
            enabled: spec.and_then(|f| f.enabled).unwrap_or(enabled_by_default),
            period: SignedDuration::from_secs(i64::from(period)),
            max_in_flight: usize::try_from(
                spec.and_then(|f| f.max_in_flight)
                    .unwrap_or(Failover::DEFAULT_MAX_IN_FLIGHT)
                    .max(1),
            )
            .unwrap_or(1),
            max_total: spec
                .and_then(|f| f.max_total)
                .unwrap_or(Failover::DEFAULT_MAX_TOTAL)
                .max(1),
        }
    }
}

/// A failure record of either failover (a TiKV store's, a PD member's).
pub trait FailureRecord {
    /// Its instance, phase, reason and message, to read.
    fn summary_parts(&self) -> (&str, FailoverPhase, Option<&str>, Option<&str>);

    /// Its phase, reason, message and last transition time.
    fn phase_parts(
        &mut self,
    ) -> (
        &mut FailoverPhase,
        &mut Option<String>,
        &mut Option<String>,
        &mut Time,
    );
}

impl FailureRecord for StoreFailure {
    fn summary_parts(&self) -> (&str, FailoverPhase, Option<&str>, Option<&str>) {
        (
            &self.instance,
            self.phase,
            self.reason.as_deref(),
            self.message.as_deref(),
        )
    }

    fn phase_parts(
        &mut self,
    ) -> (
        &mut FailoverPhase,
        &mut Option<String>,
        &mut Option<String>,
        &mut Time,
    ) {
        (
            &mut self.phase,
            &mut self.reason,
            &mut self.message,
            &mut self.last_transition_time,
        )
    }
}

impl FailureRecord for MemberFailure {
    fn summary_parts(&self) -> (&str, FailoverPhase, Option<&str>, Option<&str>) {
        (
            &self.instance,
            self.phase,
            self.reason.as_deref(),
            self.message.as_deref(),
        )
    }

    fn phase_parts(
        &mut self,
    ) -> (
        &mut FailoverPhase,
        &mut Option<String>,
        &mut Option<String>,
        &mut Time,
    ) {
        (
            &mut self.phase,
            &mut self.reason,
            &mut self.message,
            &mut self.last_transition_time,
        )
    }
}

/// The records in one of `phases`, for the `Failover` condition: the first one's reason and
/// each one's `instance: message`, joined by "; ". `None` when no record is in those phases.
pub fn summarize<R: FailureRecord>(
    records: &[R],
    phases: &[FailoverPhase],
) -> Option<(Option<String>, String)> {
    let matching: Vec<_> = records
        .iter()
        .map(FailureRecord::summary_parts)
        .filter(|(_, phase, _, _)| phases.contains(phase))
        .collect();
    let (_, _, reason, _) = matching.first()?;
    let message = matching
        .iter()
        .map(|(instance, _, _, message)| format!("{instance}: {}", message.unwrap_or("no details")))
        .collect::<Vec<_>>()
        .join("; ");
    Some((reason.map(str::to_owned), message))
}

/// Moves `record` to `phase` (its transition time changes only with the
/// phase) with `reason` and `message`.
pub fn set_phase(
    record: &mut impl FailureRecord,
    phase: FailoverPhase,
    reason: &str,
    message: String,
    now: Timestamp,
) {
    let (p, r, m, at) = record.phase_parts();
    if *p != phase {
        *p = phase;
        *at = Time(now);
    }
    *r = Some(reason.to_owned());
    *m = Some(message);
}

/// When to look again at a member unhealthy for `left` less than the
/// period: just after the period ends (a timer that fires a little early
/// finds a few milliseconds left and looks again that much later).
pub fn recheck_in(left: SignedDuration) -> std::time::Duration {
    std::time::Duration::try_from(left).unwrap_or_default() + std::time::Duration::from_millis(100)
}

/// Reasons shared by both failovers (conditions and Events).
pub mod reasons {
    /// Type of the group condition that reports failover: `True` while a
    /// failed member is being replaced, `False` otherwise (the reason says
    /// why: nothing failed, a member is watched, or a safety check refuses).
    pub const CONDITION_FAILOVER: &str = "Failover";
    /// No member of the group is unhealthy.
    pub const NO_FAILURE: &str = "NoFailure";
    /// A replacement was started for a failed member (failover started).
    pub const FAILOVER_STARTED: &str = "FailoverStarted";
    /// The failed member is gone; failover completed.
    pub const FAILOVER_COMPLETED: &str = "FailoverCompleted";
    /// Failover is disabled (`spec.failover.enabled: false`).
    pub const FAILOVER_DISABLED: &str = "FailoverDisabled";
    /// Refused: more members are unhealthy at once than failover acts on
    /// (for example a zone outage); reported, not acted on.
    pub const TOO_MANY_FAILURES: &str = "TooManyFailures";
    /// Refused: a replacement is already running (one step at a time).
    pub const FAILOVER_IN_FLIGHT: &str = "FailoverInFlight";
    /// Refused: `status.failover.total` reached `failover.maxTotal`.
    pub const MAX_TOTAL_REACHED: &str = "FailoverMaxTotalReached";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_clamps() {
        let s = Settings::of(None, true);
        assert!(s.enabled);
        assert_eq!(s.period, SignedDuration::from_secs(1800));
        assert_eq!((s.max_in_flight, s.max_total), (1, 3));
        assert!(!Settings::of(None, false).enabled);
        let s = Settings::of(
            Some(&Failover {
                enabled: Some(true),
                period_seconds: Some(-5),
                max_in_flight: Some(0),
                max_total: Some(-1),
            }),
            false,
        );
        assert!(s.enabled);
        assert_eq!(s.period, SignedDuration::from_secs(1));
        assert_eq!((s.max_in_flight, s.max_total), (1, 1));
    }

    fn member(
        instance: &str,
        phase: FailoverPhase,
        reason: Option<&str>,
        message: Option<&str>,
    ) -> MemberFailure {
        MemberFailure {
            instance: instance.into(),
            member_id: "1".into(),
            since: Time(Timestamp::UNIX_EPOCH),
            phase,
            reason: reason.map(Into::into),
            message: message.map(Into::into),
            last_transition_time: Time(Timestamp::UNIX_EPOCH),
        }
    }

    #[test]
    fn summarize_takes_the_first_reason_and_lists_every_record_of_the_phases() {
        let records = [
            member(
                "pd-a",
                FailoverPhase::Observing,
                Some("MemberUnhealthy"),
                Some("down 10s"),
            ),
            member(
                "pd-b",
                FailoverPhase::Refused,
                Some("TooManyFailures"),
                None,
            ),
            member(
                "pd-c",
                FailoverPhase::Observing,
                Some("Other"),
                Some("down 20s"),
            ),
        ];
        assert_eq!(
            summarize(&records, &[FailoverPhase::Observing]),
            Some((
                Some("MemberUnhealthy".to_owned()),
                "pd-a: down 10s; pd-c: down 20s".to_owned()
            ))
        );
        assert_eq!(
            summarize(
                &records,
                &[FailoverPhase::Refused, FailoverPhase::Replacing]
            ),
            Some((
                Some("TooManyFailures".to_owned()),
                "pd-b: no details".to_owned()
            ))
        );
        assert_eq!(summarize(&records, &[FailoverPhase::Replacing]), None);
    }
}
