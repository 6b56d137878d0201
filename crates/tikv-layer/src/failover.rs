//! TiKV store failover planning: when a store that stays Disconnected or
//! Down is replaced, and the steps of one replacement. Pure: every input,
//! the time included, is passed in.
//!
//! A replacement is a surge: a new instance joins first (annotated
//! [`labels::FAILOVER_REPLACES`] with the failed instance's name, set at
//! creation so a retry never creates a second one); while it exists the
//! failed instance does not count toward `replicas`. Once the new store
//! serves, the failed instance is marked `offline` and the ordinary removal
//! runs (evict leaders, PD DeleteStore, wait for Tombstone, then Pod and
//! PVCs; safety rule 1); the group deletes the instance once its store is
//! Removed. If the failed store comes back before its removal starts, the
//! failover is cancelled: the replacement loses its annotation and is marked
//! `offline`, so the group goes back to `replicas` through the same safe
//! removal path.
//!
//! Refusals (safety rules 2, 5 and 8), each re-checked right before the
//! destructive step (marking the failed store offline): PD unreachable;
//! more unhealthy stores in the Cluster than `maxInFlight`; another store of
//! the Cluster disrupted; PD's Region health unknown, or a Region with a
//! peer on the failed store whose other voters are not a healthy majority.
//! Starting a replacement is also refused at `maxInFlight` replacements in
//! flight and at `maxTotal` replacements recorded.
//!
//! [`labels::FAILOVER_REPLACES`]: tikv_operator_api::labels::FAILOVER_REPLACES

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use pd_client::{PdApi, Store, StoreId, StoreLiveness, UnhealthyRegion};
use tikv_operator_api::tikv::{FailoverPhase, FailoverStatus, StoreFailure};
use tikv_operator_api::{Failover, Topology};
use tikv_operator_core::component::naming::{self, SuffixSource};
use tikv_operator_core::component::spread::Spread;

use crate::group::{Blocked, NewInstance};
use crate::reasons;
use crate::store_view::{StoreView, Stores, is_serving};

/// Finished failures (Completed, Cancelled) kept in the status.
pub const KEEP_FINISHED: usize = 5;

pub use tikv_operator_core::failover::{Settings, recheck_in, set_phase};

/// The settings of a TiKVGroup's `spec.failover` (absent: enabled).
pub fn settings_of(spec: Option<&Failover>) -> Settings {
    Settings::of(spec, true)
}

/// PD's Region health, as failover reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegionHealth {
    /// Not read (no store looked unhealthy when the snapshot was taken).
    NotRead,
    /// PD could not answer; nothing is replaced.
    Unknown(String),
    /// The Regions PD reports with down or pending peers.
    Read(Vec<UnhealthyRegion>),
}

impl RegionHealth {
    /// Reads PD's Region health checks.
    pub async fn observe(pd: &dyn PdApi) -> Self {
        match pd.unhealthy_regions().await {
            Ok(r) => Self::Read(r),
            Err(e) => Self::Unknown(format!(
                "cannot read PD's Region health ({}): {e}",
                e.category()
            )),
        }
    }
}

/// Whether a store counts as failed: Up in PD (not being removed) and
/// without heartbeats (Disconnected or Down).
pub fn unhealthy(store: &Store) -> bool {
    store.state == pd_client::StoreState::Up
        && !store.is_removing()
        && !store.is_removed()
        && matches!(
            store.liveness,
            StoreLiveness::Disconnected | StoreLiveness::Down
        )
}

/// Whether a store is healthy again: Up and heartbeating.
fn healthy(store: &Store) -> bool {
    is_serving(store) && store.liveness == StoreLiveness::Alive
}

/// Whether the group reconciler should read PD's Region health: failover
/// could act on (or re-check) one of these stores.
pub fn wants_region_health(members: &[Member], pd: &StoreView) -> bool {
    let Some(stores) = pd.stores() else {
        return false;
    };
    members.iter().any(|m| {
        m.replaces.is_some()
            || m.store_id
                .and_then(|id| stores.stores.iter().find(|s| s.id == id))
                .is_some_and(unhealthy)
    })
}

/// One instance, as failover sees it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Member {
    /// Instance name.
    pub name: String,
    /// Its topology.
    pub topology: Option<Topology>,
    /// Its store id, when known.
    pub store_id: Option<StoreId>,
    /// A planned removal: `offline`, being deleted, or its store Removed.
    pub leaving: bool,
    /// A granted restart has not finished (planned disruption).
    pub restarting: bool,
    /// The failed instance this one replaces (its annotation).
    pub replaces: Option<String>,
    /// Why it counts against the Cluster's disruption budget (`None`: it serves).
    pub disrupted: Option<String>,
    /// Whether the instance is Ready.
    pub ready: bool,
}

/// Everything failover looks at.
#[derive(Debug, Clone)]
pub struct FailoverInput<'a> {
    /// Group name (prefix of instance names).
    pub group: &'a str,
    /// `spec.failover`, defaulted.
    pub settings: Settings,
    /// Now.
    pub now: Timestamp,
    /// The group's spread policy (where a replacement goes).
    pub spread: &'a Spread,
    /// Every instance of the group.
    pub members: Vec<Member>,
    /// Instances of the Cluster's other TiKVGroups (only `name`, `store_id`
    /// and `disrupted` matter).
    pub others: Vec<Member>,
    /// PD's stores.
    pub pd: &'a StoreView,
    /// PD's Region health.
    pub regions: &'a RegionHealth,
    /// `status.failover` as last written.
    pub previous: Option<&'a FailoverStatus>,
}

/// The one change failover asks for now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FailoverAction {
    /// Nothing to change.
    None,
    /// Create `new`, annotated as the replacement of `failed`.
    Surge {
        /// The failed instance.
        failed: String,
        /// The replacement to create.
        new: NewInstance,
    },
    /// The replacement serves: mark `failed` offline (its removal starts).
    RemoveFailed {
        /// The failed instance.
        failed: String,
        /// Its replacement.
        replacement: String,
    },
    /// `failed` came back before its removal: drop the replacement's
    /// annotation and mark it offline.
    Cancel {
        /// The instance that came back.
        failed: String,
        /// The replacement to take out.
        replacement: String,
    },
    /// `failed` is gone: drop the replacement's annotation.
    Finish {
        /// The instance that was replaced.
        failed: String,
        /// Its replacement.
        replacement: String,
    },
}

/// What failover decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailoverPlan {
    /// The change to make.
    pub action: FailoverAction,
    /// Failed instances being replaced: they do not count toward `replicas`.
    pub held: Vec<String>,
    /// The new `status.failover` (`None`: nothing to report).
    pub status: Option<FailoverStatus>,
    /// The `Failover` condition: status, reason, message.
    pub condition: (bool, String, String),
    /// A refusal not reported before (for a Warning Event).
    pub new_refusal: Option<Blocked>,
    /// When the earliest watched store reaches the period: look again then.
    pub recheck_after: Option<std::time::Duration>,
}

fn blocked(reason: &'static str, message: String) -> Blocked {
    Blocked { reason, message }
}

/// The stores PD reports unhealthy, over the whole Cluster, by store id: PD lists its stores
/// in no fixed order, and a message that changed with the order would rewrite the condition
/// and repeat the refusal's Event at every reconcile.
fn unhealthy_stores(stores: &Stores) -> Vec<&Store> {
    let mut out: Vec<&Store> = stores.stores.iter().filter(|s| unhealthy(s)).collect();
    out.sort_by_key(|s| s.id);
    out
}

/// Safety rule 5 Cluster-wide: more unhealthy stores at once than
/// `failover.maxInFlight` is an outage to report, not to repair. It refuses every
/// due failure alike (not only the first), so the group reports it whatever the order.
fn too_many_failures(input: &FailoverInput<'_>, stores: &Stores) -> Result<(), Blocked> {
    let unhealthy = unhealthy_stores(stores);
    if unhealthy.len() > input.settings.max_in_flight {
        let list: Vec<String> = unhealthy
            .iter()
            .map(|s| format!("{} ({})", s.id, s.address))
            .collect();
        return Err(blocked(
            reasons::TOO_MANY_FAILURES,
            format!(
                "{} stores of the Cluster are unhealthy at once ({}), more than \
                 failover.maxInFlight ({}); not replacing any (a zone or network outage is \
                 reported, not repaired)",
                unhealthy.len(),
                list.join(", "),
                input.settings.max_in_flight
            ),
        ));
    }
    Ok(())
}

/// Safety rules 2, 5 and 8 for replacing (or removing) the store of
/// `failed`; `exempt`: instances whose disruption is this failover's own.
fn safety_check(
    input: &FailoverInput<'_>,
    stores: &Stores,
    failed_store: Option<StoreId>,
    exempt: &[&str],
) -> Result<(), Blocked> {
    too_many_failures(input, stores)?;
    let unhealthy_ids: Vec<StoreId> = unhealthy_stores(stores).iter().map(|s| s.id).collect();
    // Safety rule 2: any other disruption in the Cluster holds failover. An
    // instance whose store is itself one of the (at most maxInFlight)
    // unhealthy stores is a failure, counted above.
    let other = input
        .members
        .iter()
        .chain(&input.others)
        .filter(|m| !exempt.contains(&m.name.as_str()))
        .filter(|m| !m.store_id.is_some_and(|id| unhealthy_ids.contains(&id)))
        .find_map(|m| m.disrupted.as_ref().map(|why| (m.name.as_str(), why)));
    if let Some((name, why)) = other {
        return Err(blocked(
            reasons::ANOTHER_STORE_DISRUPTED,
            format!("{name} is disrupted ({why}); failover waits until every other store serves"),
        ));
    }
    if let Some(s) = stores
        .removing()
        .into_iter()
        .find(|s| Some(s.id) != failed_store)
    {
        return Err(blocked(
            reasons::ANOTHER_STORE_DISRUPTED,
            format!(
                "store {} ({}) is being removed; failover waits for it",
                s.id, s.address
            ),
        ));
    }
    // Safety rule 8: no Region may lose its majority.
    let Some(failed_store) = failed_store else {
        return Ok(());
    };
    match input.regions {
        RegionHealth::NotRead => Err(blocked(
            reasons::REGION_HEALTH_UNKNOWN,
            "PD's Region health was not read; failover waits for it".to_owned(),
        )),
        RegionHealth::Unknown(why) => Err(blocked(
            reasons::REGION_HEALTH_UNKNOWN,
            format!("{why}; failover waits until PD answers"),
        )),
        RegionHealth::Read(regions) => {
            for r in regions.iter().filter(|r| r.voters.contains(&failed_store)) {
                let healthy = r
                    .voters
                    .iter()
                    .filter(|s| {
                        **s != failed_store && !r.down.contains(s) && !r.pending.contains(s)
                    })
                    .count();
                if healthy * 2 <= r.voters.len() {
                    return Err(blocked(
                        reasons::REGION_MAJORITY_AT_RISK,
                        format!(
                            "Region {} has {healthy} healthy voter(s) of {} besides store \
                             {failed_store}: without it the Region has no majority; not \
                             replacing (a majority already lost is reported, not repaired)",
                            r.id,
                            r.voters.len()
                        ),
                    ));
                }
            }
            Ok(())
        }
    }
}

/// Since when `store` has been unhealthy: PD's last heartbeat from it. The period counts from
/// the silence, as PD's `max-store-down-time` does, not from whenever the operator first looked
/// (its view of PD is refreshed every 30 s at rest). `now` when PD reports no heartbeat, or one
/// later than `now` (PD's clock ahead of the operator's).
fn unhealthy_since(store: &Store, now: Timestamp) -> Timestamp {
    store
        .last_heartbeat
        .and_then(|s| Timestamp::from_second(s).ok())
        .filter(|t| *t <= now)
        .unwrap_or(now)
}

fn record(
    instance: &str,
    store: Option<&Store>,
    since: Timestamp,
    phase: FailoverPhase,
    now: Timestamp,
) -> StoreFailure {
    StoreFailure {
        instance: instance.to_owned(),
        store_id: store.map(|s| s.id.to_string()).unwrap_or_default(),
        since: Time(since),
        store_state: store.map_or_else(|| "Unknown".to_owned(), liveness_name),
        phase,
        reason: None,
        message: None,
        replacement: None,
        last_transition_time: Time(now),
    }
}

fn liveness_name(s: &Store) -> String {
    match s.liveness {
        StoreLiveness::Down => "Down",
        StoreLiveness::Disconnected => "Disconnected",
        StoreLiveness::Alive => "Up",
        StoreLiveness::Unknown => "Unknown",
    }
    .to_owned()
}

fn finished(p: FailoverPhase) -> bool {
    matches!(p, FailoverPhase::Completed | FailoverPhase::Cancelled)
}

/// How long a replacement record may name a replacement that the instances
/// do not show before it counts as gone (a cache that has not seen the
/// surge yet shows it within seconds).
pub const UNSEEN_REPLACEMENT_GRACE: k8s_openapi::jiff::SignedDuration =
    k8s_openapi::jiff::SignedDuration::from_secs(120);

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
fn resolve_unpaired(
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

/// Plans failover for one TiKVGroup. See the module docs.
#[allow(clippy::too_many_lines)]
pub fn plan_failover(input: &FailoverInput<'_>, suffixes: &mut dyn SuffixSource) -> FailoverPlan {
    let now = input.now;
    let previous = input.previous.cloned().unwrap_or_default();
    let mut total = previous.total.max(0);
    let (mut done, mut active): (Vec<StoreFailure>, Vec<StoreFailure>) = previous
        .failures
        .into_iter()
        .partition(|r| finished(r.phase));
    let mut action = FailoverAction::None;
    let mut refusal: Option<Blocked> = None;
    let stores = input.pd.stores();
    let find_store = |id: Option<StoreId>| -> Option<&Store> {
        let id = id?;
        stores?.stores.iter().find(|s| s.id == id)
    };
    let member = |n: &str| input.members.iter().find(|m| m.name == n);

    // Replacements in flight: (failed, replacement).
    let pairs: Vec<(&str, &Member)> = input
        .members
        .iter()
        .filter(|m| !m.leaving)
        .filter_map(|m| m.replaces.as_deref().map(|f| (f, m)))
        .collect();
    let held: Vec<String> = pairs
        .iter()
        .filter(|(f, _)| member(f).is_some())
        .map(|(f, _)| (*f).to_owned())
        .collect();
    for (failed, repl) in &pairs {
        let fm = member(failed);
        let fstore = fm.and_then(|m| find_store(m.store_id));
        let at = match active.iter().position(|r| r.instance == *failed) {
            Some(at) => at,
            None => {
                // A finished record of this very replacement (the view of
                // the replacement predates its Finish), else none at all
                // (the status write was lost): record it now.
                let r = match done.iter().position(|r| {
                    r.instance == *failed && r.replacement.as_ref() == Some(&repl.name)
                }) {
                    Some(d) => done.remove(d),
                    None => record(failed, fstore, now, FailoverPhase::Replacing, now),
                };
                active.push(r);
                active.len() - 1
            }
        };
        let r = &mut active[at];
        // `total` counts each replacement once. A replacement that the
        // record does not name yet was created on a reconcile whose status
        // write was lost or is not in this (cached, possibly older) view of
        // the group yet: count it now, or a stale view would write the
        // count back down.
        if r.replacement.as_deref() != Some(repl.name.as_str()) {
            total += 1;
        }
        r.replacement = Some(repl.name.clone());
        let Some(fm) = fm else {
            set_phase(
                r,
                FailoverPhase::Completed,
                reasons::FAILOVER_COMPLETED,
                format!("replaced by {}; the failed store is removed", repl.name),
                now,
            );
            if action == FailoverAction::None {
                action = FailoverAction::Finish {
                    failed: (*failed).to_owned(),
                    replacement: repl.name.clone(),
                };
            }
            continue;
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
            continue;
        }
        let Some(stores) = stores else {
            r.message = Some("PD is unreachable; failover waits".to_owned());
            continue;
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
            if action == FailoverAction::None {
                action = FailoverAction::Cancel {
                    failed: (*failed).to_owned(),
                    replacement: repl.name.clone(),
                };
            }
            continue;
        }
        if let Some(s) = fstore {
            r.store_state = liveness_name(s);
        }
        // The replacement serves by every measure the disruption budget
        // uses (Ready for minReadySeconds, store registered by its running
        // process), not only in PD's eyes.
        let repl_serves = repl.ready
            && repl.disrupted.is_none()
            && find_store(repl.store_id).is_some_and(is_serving);
        if !repl_serves {
            set_phase(
                r,
                FailoverPhase::Replacing,
                reasons::FAILOVER_STARTED,
                format!("waiting for the store of {} to serve", repl.name),
                now,
            );
            continue;
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
                if action == FailoverAction::None {
                    action = FailoverAction::RemoveFailed {
                        failed: fm.name.clone(),
                        replacement: repl.name.clone(),
                    };
                }
            }
            Err(b) => {
                if r.message.as_deref() != Some(b.message.as_str()) {
                    refusal.get_or_insert(b.clone());
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

    let awaiting = resolve_unpaired(&mut active, &pairs, &input.members, now);

    // Records whose instance is neither failing nor part of a replacement go.
    let in_pair = |n: &str| {
        pairs.iter().any(|(f, r)| *f == n || r.name == n) || awaiting.iter().any(|a| a == n)
    };
    let mut due: Vec<usize> = Vec::new();
    let mut recheck_after: Option<std::time::Duration> = None;
    if let Some(stores) = stores {
        let mut kept: Vec<StoreFailure> = Vec::new();
        for m in input
            .members
            .iter()
            .filter(|m| !m.leaving && !m.restarting && !in_pair(&m.name))
        {
            let Some(store) = find_store(m.store_id).filter(|s| unhealthy(s)) else {
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
        let in_flight = pairs
            .iter()
            .filter(|(f, _)| member(f).is_some_and(|m| !m.leaving))
            .count();
        for (n, at) in due.iter().copied().enumerate() {
            let name = active[at].instance.clone();
            let failed_store = member(&name).and_then(|m| m.store_id);
            let check = if !input.settings.enabled {
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
            } else if n > 0 || action != FailoverAction::None {
                Err(blocked(
                    reasons::FAILOVER_IN_FLIGHT,
                    "another failover step runs first".to_owned(),
                ))
            } else {
                let exempt: Vec<&str> = pairs
                    .iter()
                    .flat_map(|(f, r)| [*f, r.name.as_str()])
                    .chain([name.as_str()])
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
            };
            let r = &mut active[at];
            match check {
                Ok(()) => {
                    let taken = |c: &str| input.members.iter().any(|m| m.name == c);
                    let new_name = naming::fresh_name(input.group, taken, suffixes);
                    let topology = input.spread.next(
                        input
                            .members
                            .iter()
                            .filter(|m| !m.leaving && m.name != name && !held.contains(&m.name))
                            .map(|m| m.topology.as_ref()),
                    );
                    total += 1;
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
                    action = FailoverAction::Surge {
                        failed: name,
                        new: NewInstance {
                            name: new_name,
                            topology,
                        },
                    };
                }
                Err(b) => {
                    let new = r.phase != FailoverPhase::Refused
                        || r.message.as_deref() != Some(b.message.as_str());
                    if new && b.reason != reasons::FAILOVER_IN_FLIGHT {
                        refusal.get_or_insert(b.clone());
                    }
                    set_phase(r, FailoverPhase::Refused, b.reason, b.message, now);
                }
            }
        }
    }

    // Finished records: the newest few.
    let (fin, still): (Vec<StoreFailure>, Vec<StoreFailure>) =
        active.into_iter().partition(|r| finished(r.phase));
    done.extend(fin);
    done.sort_by_key(|r| std::cmp::Reverse(r.last_transition_time.0));
    done.truncate(KEEP_FINISHED);
    let mut failures = still;
    failures.extend(done);

    let condition = condition_of(&failures, stores.is_some());
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

fn condition_of(failures: &[StoreFailure], pd_reachable: bool) -> (bool, String, String) {
    let of = |phases: &[FailoverPhase]| -> (Option<String>, Vec<String>) {
        let matching: Vec<&StoreFailure> = failures
            .iter()
            .filter(|r| phases.contains(&r.phase))
            .collect();
        (
            matching.first().and_then(|r| r.reason.clone()),
            matching
                .iter()
                .map(|r| {
                    format!(
                        "{}: {}",
                        r.instance,
                        r.message.as_deref().unwrap_or("no details")
                    )
                })
                .collect(),
        )
    };
    let (reason, running) = of(&[FailoverPhase::Replacing, FailoverPhase::Removing]);
    if !running.is_empty() {
        return (
            true,
            reason.unwrap_or_else(|| reasons::FAILOVER_STARTED.to_owned()),
            running.join("; "),
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
        let (reason, list) = of(&[phase]);
        if !list.is_empty() {
            return (
                false,
                reason.unwrap_or_else(|| reasons::STORE_UNHEALTHY.to_owned()),
                list.join("; "),
            );
        }
    }
    (
        false,
        reasons::NO_FAILURE.to_owned(),
        "no store of the group is unhealthy".to_owned(),
    )
}

#[cfg(test)]
mod tests;
