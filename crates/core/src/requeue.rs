//! When a reconcile runs again.

use std::time::Duration;

use kube::runtime::controller::Action;

use crate::error::Error;

/// What a reconcile asks of its controller after it ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requeue {
    /// Run again only when a watched object changes.
    AwaitChange,
    /// Run again after this delay (or earlier, on a change).
    After(Duration),
}

impl Requeue {
    /// This requeue, or one after `timer` when that comes sooner: a timer of
    /// the reconcile's own (a failover period ending, a refused Secret
    /// polled) must not be lost to a later resync.
    #[must_use]
    pub fn or_sooner(self, timer: Option<Duration>) -> Self {
        match (self, timer) {
            (Self::After(d), Some(t)) if t < d => Self::After(t),
            (Self::AwaitChange, Some(t)) => Self::After(t),
            (q, _) => q,
        }
    }
}

impl From<Requeue> for Action {
    fn from(r: Requeue) -> Self {
        match r {
            Requeue::AwaitChange => Action::await_change(),
            Requeue::After(d) => Action::requeue(d),
        }
    }
}

/// Requeue delays. Level-triggered reconcilers are woken by watches; these
/// delays only bound how long a missed change or an external state change (PD)
/// can go unnoticed, and space out retries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequeuePolicy {
    /// While something is in flight (bootstrap, scale, removal): poll fast.
    pub in_flight: Duration,
    /// At rest: a slow resync.
    pub at_rest: Duration,
    /// First retry delay after a transient error; doubles per consecutive failure.
    pub error_base: Duration,
    /// Longest retry delay after transient errors.
    pub error_max: Duration,
    /// Delay after a permanent error (invalid spec): the user's fix wakes the
    /// object through its watch anyway.
    pub permanent_error: Duration,
}

impl Default for RequeuePolicy {
    fn default() -> Self {
        Self {
            in_flight: Duration::from_secs(5),
            at_rest: Duration::from_secs(300),
            error_base: Duration::from_secs(1),
            error_max: Duration::from_secs(300),
            permanent_error: Duration::from_secs(600),
        }
    }
}

impl RequeuePolicy {
    /// After a successful reconcile; `in_flight` when the plan is waiting for
    /// something to progress (a member to join, a removal to finish).
    pub fn after_success(&self, in_flight: bool) -> Requeue {
        Requeue::After(if in_flight {
            self.in_flight
        } else {
            self.at_rest
        })
    }

    /// After a failed reconcile; `consecutive_failures` counts this failure
    /// (1 for the first). Transient errors back off exponentially up to
    /// `error_max`; permanent ones wait `permanent_error`.
    pub fn after_error(&self, error: &Error, consecutive_failures: u32) -> Requeue {
        if !error.is_transient() {
            return Requeue::After(self.permanent_error);
        }
        let exp = consecutive_failures.saturating_sub(1).min(20);
        let delay = self.error_base.saturating_mul(1u32 << exp);
        Requeue::After(delay.min(self.error_max))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pd_client::PdError;

    #[test]
    fn transient_errors_back_off_exponentially_and_cap() {
        let p = RequeuePolicy::default();
        let e = Error::pd("members", PdError::unavailable("down"));
        assert_eq!(p.after_error(&e, 1), Requeue::After(Duration::from_secs(1)));
        assert_eq!(p.after_error(&e, 2), Requeue::After(Duration::from_secs(2)));
        assert_eq!(p.after_error(&e, 4), Requeue::After(Duration::from_secs(8)));
        assert_eq!(p.after_error(&e, 60), Requeue::After(p.error_max));
    }

    #[test]
    fn permanent_errors_wait_long_and_success_depends_on_progress() {
        let p = RequeuePolicy::default();
        let e = Error::InvalidSpec {
            message: "x".into(),
        };
        assert_eq!(p.after_error(&e, 1), Requeue::After(p.permanent_error));
        assert_eq!(p.after_success(true), Requeue::After(p.in_flight));
        assert_eq!(p.after_success(false), Requeue::After(p.at_rest));
        assert_eq!(
            Action::from(Requeue::After(Duration::from_secs(3))),
            Action::requeue(Duration::from_secs(3))
        );
        assert_eq!(Action::from(Requeue::AwaitChange), Action::await_change());
    }

    #[test]
    fn a_sooner_timer_wins_a_later_one_does_not() {
        let (s5, s9) = (Duration::from_secs(5), Duration::from_secs(9));
        assert_eq!(Requeue::After(s9).or_sooner(Some(s5)), Requeue::After(s5));
        assert_eq!(Requeue::After(s5).or_sooner(Some(s9)), Requeue::After(s5));
        assert_eq!(Requeue::After(s5).or_sooner(None), Requeue::After(s5));
        assert_eq!(Requeue::AwaitChange.or_sooner(Some(s9)), Requeue::After(s9));
        assert_eq!(Requeue::AwaitChange.or_sooner(None), Requeue::AwaitChange);
    }
}
