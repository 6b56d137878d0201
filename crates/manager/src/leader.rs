//! Leader election over a `coordination.k8s.io/v1` Lease.
//!
//! The decision (create, acquire, renew or follow) is the pure function [`decide`] over what the
//! Lease says and when this replica first saw that content ([`observe`]); times are durations on
//! this process's monotonic clock, so the decision never compares another machine's wall clock
//! with ours. A lease held by someone else is taken over only after its content stayed unchanged
//! for its whole `leaseDurationSeconds` as seen by us; a released lease (no holder) at once.
//!
//! Every write is a PUT (or a POST for a missing Lease) guarded by the `resourceVersion` that was
//! read, so two candidates never both win: the loser gets 409 Conflict and stays a follower.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::Api;
use kube::api::PostParams;
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::watch;

use crate::cli::LeaderElection;

/// The parts of a Lease that matter for the decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseRecord {
    /// `holderIdentity`; `None` (or empty in the object) means released.
    pub holder: Option<String>,
    /// `leaseDurationSeconds`.
    pub lease_duration: Duration,
    /// `renewTime` as written (compared, never interpreted).
    pub renew_time: Option<String>,
    /// `leaseTransitions`.
    pub transitions: i32,
}

impl LeaseRecord {
    /// Reads a Lease's spec (a missing duration counts as `default_duration`).
    pub fn from_spec(spec: Option<&LeaseSpec>, default_duration: Duration) -> Self {
        let spec = spec.cloned().unwrap_or_default();
        Self {
            holder: spec.holder_identity.filter(|h| !h.is_empty()),
            lease_duration: spec
                .lease_duration_seconds
                .and_then(|s| u64::try_from(s).ok())
                .map_or(default_duration, Duration::from_secs),
            renew_time: spec.renew_time.map(|t| t.0.to_string()),
            transitions: spec.lease_transitions.unwrap_or_default(),
        }
    }
}

/// A Lease content and when (on our clock) we first saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observation {
    /// The content.
    pub record: LeaseRecord,
    /// When it was first seen with this content.
    pub since: Duration,
}

/// Records a read of the Lease: the observation time stays if the content did not change.
pub fn observe(prev: Option<Observation>, record: LeaseRecord, now: Duration) -> Observation {
    match prev {
        Some(prev) if prev.record == record => prev,
        _ => Observation { record, since: now },
    }
}

/// What to do with the Lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// There is no Lease: create it, held by us.
    Create,
    /// We hold it: renew it.
    Renew,
    /// It is released or expired: take it.
    Acquire,
    /// Someone else holds it and it has not expired.
    Follow {
        /// The holder.
        holder: String,
        /// How long until it expires, unless renewed.
        expires_in: Duration,
    },
}

/// The decision for `me` given the current observation of the Lease (`None`: no Lease) at `now`.
pub fn decide(lease: Option<&Observation>, me: &str, now: Duration) -> Decision {
    let Some(obs) = lease else {
        return Decision::Create;
    };
    match &obs.record.holder {
        None => Decision::Acquire,
        Some(holder) if holder == me => Decision::Renew,
        Some(holder) => {
            let expires = obs.since + obs.record.lease_duration;
            if now >= expires {
                Decision::Acquire
            } else {
                Decision::Follow {
                    holder: holder.clone(),
                    expires_in: expires - now,
                }
            }
        }
    }
}

/// Whether a leader whose last successful renewal started at `last_renewed` must give up at
/// `now`: true once `renew_deadline` has passed.
pub fn renewal_lost(last_renewed: Duration, now: Duration, renew_deadline: Duration) -> bool {
    now.saturating_sub(last_renewed) >= renew_deadline
}

/// The Lease spec a holder writes: `acquired` is true when it takes the Lease over (new acquire
/// time, one more transition if the holder changes).
pub fn holder_spec(
    prev: Option<&LeaseSpec>,
    me: &str,
    lease_duration: Duration,
    acquired: bool,
    now: MicroTime,
) -> LeaseSpec {
    let mut spec = prev.cloned().unwrap_or_default();
    let prev_holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
    if acquired || spec.acquire_time.is_none() {
        spec.acquire_time = Some(now.clone());
        if prev_holder.as_deref().is_some_and(|h| h != me) {
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or_default() + 1);
        }
    }
    spec.lease_transitions.get_or_insert(0);
    spec.holder_identity = Some(me.to_owned());
    spec.lease_duration_seconds = Some(seconds(lease_duration));
    spec.renew_time = Some(now);
    spec
}

fn seconds(d: Duration) -> i32 {
    i32::try_from(d.as_secs().max(1)).unwrap_or(i32::MAX)
}

fn now_micro() -> MicroTime {
    MicroTime(k8s_openapi::jiff::Timestamp::now())
}

/// Why leadership ended.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Lost {
    /// Another replica holds the Lease.
    #[error("the Lease is held by {0}")]
    TakenBy(String),
    /// Renewal did not succeed within the renew deadline.
    #[error("could not renew the Lease for {0:?} (renew deadline): {1}")]
    Deadline(Duration, String),
}

/// This replica's leadership, as `/readyz` and the leader gauge see it.
#[derive(Debug, Clone)]
pub struct LeaderStatus {
    leading: Arc<AtomicBool>,
    gauge: Gauge,
}

impl LeaderStatus {
    /// A status reported through `gauge`.
    pub fn new(gauge: Gauge) -> Self {
        Self {
            leading: Arc::new(AtomicBool::new(false)),
            gauge,
        }
    }

    /// Whether this replica holds the Lease.
    pub fn is_leader(&self) -> bool {
        self.leading.load(Ordering::SeqCst)
    }

    pub(crate) fn set(&self, leading: bool) {
        self.leading.store(leading, Ordering::SeqCst);
        self.gauge.set(i64::from(leading));
    }
}

/// Runs the election for one replica.
#[derive(Debug)]
pub struct Elector {
    api: Api<Lease>,
    cfg: LeaderElection,
    start: Instant,
    observed: Option<Observation>,
    status: LeaderStatus,
}

impl Elector {
    /// An elector for the Lease named in `cfg`.
    pub fn new(client: kube::Client, cfg: LeaderElection, status: LeaderStatus) -> Self {
        Self {
            api: Api::namespaced(client, &cfg.namespace),
            cfg,
            start: Instant::now(),
            observed: None,
            status,
        }
    }

    fn now(&self) -> Duration {
        self.start.elapsed()
    }

    /// One round: read the Lease, decide, write if we take or keep it. `Ok(true)`: we hold it
    /// now. A 409 (someone else wrote first) is `Ok(false)`.
    async fn try_acquire_or_renew(&mut self) -> Result<bool, kube::Error> {
        let me = self.cfg.identity.clone();
        let current = self.api.get_opt(&self.cfg.lease_name).await?;
        let now = self.now();
        self.observed = current.as_ref().map(|lease| {
            let record = LeaseRecord::from_spec(lease.spec.as_ref(), self.cfg.lease_duration);
            observe(self.observed.take(), record, now)
        });
        let decision = decide(self.observed.as_ref(), &me, now);
        let result = match (&decision, current) {
            (Decision::Follow { holder, expires_in }, _) => {
                tracing::debug!(%holder, ?expires_in, "following the Lease holder");
                return Ok(false);
            }
            (Decision::Create, _) | (_, None) => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.cfg.lease_name.clone()),
                        namespace: Some(self.cfg.namespace.clone()),
                        ..ObjectMeta::default()
                    },
                    spec: Some(holder_spec(
                        None,
                        &me,
                        self.cfg.lease_duration,
                        true,
                        now_micro(),
                    )),
                };
                self.api.create(&PostParams::default(), &lease).await
            }
            (Decision::Acquire | Decision::Renew, Some(mut lease)) => {
                let acquired = decision == Decision::Acquire;
                lease.spec = Some(holder_spec(
                    lease.spec.as_ref(),
                    &me,
                    self.cfg.lease_duration,
                    acquired,
                    now_micro(),
                ));
                // `lease.metadata.resourceVersion` is the one read: a concurrent writer wins,
                // we get 409.
                self.api
                    .replace(&self.cfg.lease_name, &PostParams::default(), &lease)
                    .await
            }
        };
        match result {
            Ok(written) => {
                if decision != Decision::Renew {
                    tracing::info!(
                        lease = %self.cfg.lease_name,
                        namespace = %self.cfg.namespace,
                        identity = %me,
                        "acquired the leader Lease"
                    );
                }
                let record = LeaseRecord::from_spec(written.spec.as_ref(), self.cfg.lease_duration);
                self.observed = Some(observe(None, record, self.now()));
                Ok(true)
            }
            Err(kube::Error::Api(e)) if e.code == 409 => {
                tracing::debug!("another candidate wrote the Lease first");
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    /// Waits until this replica holds the Lease (`true`), or until `stop` turns true (`false`).
    pub async fn acquire(&mut self, mut stop: watch::Receiver<bool>) -> bool {
        tracing::info!(
            lease = %self.cfg.lease_name,
            namespace = %self.cfg.namespace,
            identity = %self.cfg.identity,
            "waiting for the leader Lease"
        );
        loop {
            if *stop.borrow() {
                return false;
            }
            match tokio::time::timeout(self.cfg.renew_deadline, self.try_acquire_or_renew()).await {
                Ok(Ok(true)) => {
                    self.status.set(true);
                    return true;
                }
                Ok(Ok(false)) => {}
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "leader election: reading or writing the Lease failed")
                }
                Err(_) => tracing::warn!("leader election: Lease request timed out"),
            }
            tokio::select! {
                () = tokio::time::sleep(self.cfg.retry_period) => {}
                _ = stop.wait_for(|s| *s) => return false,
            }
        }
    }

    /// Keeps renewing the Lease every retry period; returns when leadership is lost. The caller
    /// must stop acting at once.
    pub async fn hold(&mut self) -> Lost {
        let mut last_renewed = self.now();
        loop {
            tokio::time::sleep(self.cfg.retry_period).await;
            let started = self.now();
            let left = self
                .cfg
                .renew_deadline
                .saturating_sub(started.saturating_sub(last_renewed));
            let last_error = match tokio::time::timeout(left, self.try_acquire_or_renew()).await {
                Ok(Ok(true)) => {
                    last_renewed = started;
                    continue;
                }
                Ok(Ok(false)) => {
                    if let Some(holder) = self
                        .observed
                        .as_ref()
                        .and_then(|o| o.record.holder.clone())
                        .filter(|h| *h != self.cfg.identity)
                    {
                        self.status.set(false);
                        return Lost::TakenBy(holder);
                    }
                    "conflicting write".to_owned()
                }
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "renewing the leader Lease failed");
                    e.to_string()
                }
                Err(_) => "request timed out".to_owned(),
            };
            if renewal_lost(last_renewed, self.now(), self.cfg.renew_deadline) {
                self.status.set(false);
                return Lost::Deadline(self.cfg.renew_deadline, last_error);
            }
        }
    }

    /// Gives the Lease up (no holder, 1 s duration) so a standby takes over at once. Only if we
    /// still hold it.
    pub async fn release(&mut self) {
        self.status.set(false);
        let result = async {
            let Some(mut lease) = self.api.get_opt(&self.cfg.lease_name).await? else {
                return Ok(false);
            };
            let mut spec = lease.spec.clone().unwrap_or_default();
            if spec.holder_identity.as_deref() != Some(self.cfg.identity.as_str()) {
                return Ok(false);
            }
            spec.holder_identity = None;
            spec.lease_duration_seconds = Some(1);
            spec.renew_time = Some(now_micro());
            lease.spec = Some(spec);
            self.api
                .replace(&self.cfg.lease_name, &PostParams::default(), &lease)
                .await
                .map(|_| true)
        };
        match tokio::time::timeout(self.cfg.renew_deadline, result).await {
            Ok(Ok(true)) => {
                tracing::info!(lease = %self.cfg.lease_name, "released the leader Lease")
            }
            Ok(Ok(false)) => {
                tracing::info!("the leader Lease is not ours any more; nothing to release")
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "releasing the leader Lease failed; a standby takes over when it expires")
            }
            Err(_) => tracing::warn!(
                "releasing the leader Lease timed out; a standby takes over when it expires"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn t(secs: u64) -> Duration {
        Duration::from_secs(secs)
    }

    fn record(holder: Option<&str>, renew: &str) -> LeaseRecord {
        LeaseRecord {
            holder: holder.map(str::to_owned),
            lease_duration: t(15),
            renew_time: Some(renew.to_owned()),
            transitions: 0,
        }
    }

    #[test]
    fn no_lease_is_created() {
        assert_eq!(decide(None, "me", t(0)), Decision::Create);
    }

    #[test]
    fn own_lease_is_renewed() {
        let obs = observe(None, record(Some("me"), "r1"), t(0));
        assert_eq!(decide(Some(&obs), "me", t(100)), Decision::Renew);
    }

    #[test]
    fn released_lease_is_taken_at_once() {
        let obs = observe(None, record(None, "r1"), t(5));
        assert_eq!(decide(Some(&obs), "me", t(5)), Decision::Acquire);
    }

    #[test]
    fn foreign_lease_expires_one_duration_after_we_first_saw_it_unchanged() {
        let obs = observe(None, record(Some("other"), "r1"), t(0));
        assert_eq!(
            decide(Some(&obs), "me", t(10)),
            Decision::Follow {
                holder: "other".into(),
                expires_in: t(5)
            }
        );
        // Unchanged when read again: the first observation time stays.
        let obs = observe(Some(obs), record(Some("other"), "r1"), t(12));
        assert_eq!(obs.since, t(0));
        assert_eq!(decide(Some(&obs), "me", t(15)), Decision::Acquire);
    }

    #[test]
    fn a_renewal_restarts_the_expiry() {
        let obs = observe(None, record(Some("other"), "r1"), t(0));
        let obs = observe(Some(obs), record(Some("other"), "r2"), t(5));
        assert_eq!(obs.since, t(5));
        assert!(matches!(
            decide(Some(&obs), "me", t(15)),
            Decision::Follow { expires_in, .. } if expires_in == t(5)
        ));
        assert_eq!(decide(Some(&obs), "me", t(20)), Decision::Acquire);
    }

    #[test]
    fn a_new_holder_restarts_the_expiry() {
        let obs = observe(None, record(Some("a"), "r1"), t(0));
        let obs = observe(Some(obs), record(Some("b"), "r1"), t(14));
        assert!(matches!(
            decide(Some(&obs), "me", t(15)),
            Decision::Follow { .. }
        ));
    }

    #[test]
    fn a_stale_renew_time_does_not_expire_a_lease_we_just_saw() {
        // We never compare the holder's wall clock with ours: a Lease first seen now is valid
        // for a full duration from now, whatever its renewTime says.
        let obs = observe(
            None,
            record(Some("other"), "2000-01-01T00:00:00.000000Z"),
            t(1000),
        );
        assert!(matches!(
            decide(Some(&obs), "me", t(1014)),
            Decision::Follow { .. }
        ));
    }

    #[test]
    fn the_lease_duration_comes_from_the_lease() {
        let mut r = record(Some("other"), "r1");
        r.lease_duration = t(60);
        let obs = observe(None, r, t(0));
        assert!(matches!(
            decide(Some(&obs), "me", t(59)),
            Decision::Follow { .. }
        ));
        assert_eq!(decide(Some(&obs), "me", t(60)), Decision::Acquire);
    }

    #[test]
    fn renewal_deadline() {
        assert!(!renewal_lost(t(10), t(19), t(10)));
        assert!(renewal_lost(t(10), t(20), t(10)));
        assert!(!renewal_lost(t(10), t(5), t(10)));
    }

    #[test]
    fn record_from_spec() {
        let spec = LeaseSpec {
            holder_identity: Some(String::new()),
            lease_duration_seconds: Some(7),
            lease_transitions: Some(3),
            ..LeaseSpec::default()
        };
        let r = LeaseRecord::from_spec(Some(&spec), t(15));
        assert_eq!(r.holder, None);
        assert_eq!(r.lease_duration, t(7));
        assert_eq!(r.transitions, 3);
        assert_eq!(LeaseRecord::from_spec(None, t(15)).lease_duration, t(15));
    }

    #[test]
    fn holder_spec_counts_transitions_and_keeps_acquire_time_on_renew() {
        let ts = |s: i64| MicroTime(k8s_openapi::jiff::Timestamp::from_second(s).unwrap());
        let created = holder_spec(None, "a", t(15), true, ts(100));
        assert_eq!(created.holder_identity.as_deref(), Some("a"));
        assert_eq!(created.lease_transitions, Some(0));
        assert_eq!(created.lease_duration_seconds, Some(15));
        assert_eq!(created.acquire_time, Some(ts(100)));

        let renewed = holder_spec(Some(&created), "a", t(15), false, ts(102));
        assert_eq!(renewed.acquire_time, Some(ts(100)));
        assert_eq!(renewed.renew_time, Some(ts(102)));
        assert_eq!(renewed.lease_transitions, Some(0));

        let taken = holder_spec(Some(&renewed), "b", t(15), true, ts(120));
        assert_eq!(taken.holder_identity.as_deref(), Some("b"));
        assert_eq!(taken.acquire_time, Some(ts(120)));
        assert_eq!(taken.lease_transitions, Some(1));

        // Taking a released Lease is not a transition between holders.
        let released = LeaseSpec {
            holder_identity: None,
            ..taken
        };
        let retaken = holder_spec(Some(&released), "c", t(15), true, ts(130));
        assert_eq!(retaken.lease_transitions, Some(1));
    }
}
