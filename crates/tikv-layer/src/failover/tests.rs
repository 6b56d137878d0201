#![allow(clippy::unwrap_used)]
use super::*;
use crate::reasons;
use crate::store_view::tests::store;
use k8s_openapi::jiff::SignedDuration;
use pd_client::{ReplicationConfig, StoreState};
use proptest::prelude::*;
use tikv_operator_api::{EvenlySpreadPolicy, SchedulePolicy, SchedulePolicyType, ScheduleTopology};
use tikv_operator_core::component::naming::SuffixSource;

#[derive(Default)]
struct Counter(u32);
impl SuffixSource for Counter {
    fn next_suffix(&mut self) -> String {
        self.0 += 1;
        format!("n{:05}", self.0)
    }
}

fn t(secs: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + secs).unwrap()
}

fn zone(z: &str) -> Topology {
    [("zone".to_owned(), z.to_owned())].into()
}

fn spread3() -> Spread {
    Spread::from_policies(&[SchedulePolicy {
        type_: SchedulePolicyType::EvenlySpread,
        evenly_spread: Some(EvenlySpreadPolicy {
            topologies: ["a", "b", "c"]
                .iter()
                .map(|z| ScheduleTopology {
                    topology: zone(z),
                    weight: None,
                })
                .collect(),
        }),
    }])
}

fn member(name: &str, z: &str, id: u64) -> Member {
    Member {
        name: name.to_owned(),
        topology: Some(zone(z)),
        store_id: Some(StoreId(id)),
        ready: true,
        ..Member::default()
    }
}

/// kv-1..kv-3 in zones a, b, c on stores 1..3.
fn three() -> Vec<Member> {
    vec![
        member("kv-1", "a", 1),
        member("kv-2", "b", 2),
        member("kv-3", "c", 3),
    ]
}

/// PD with Up, heartbeating stores `ids`; `down` Down, `disconnected` Disconnected.
fn pd(ids: &[u64], down: &[u64], disconnected: &[u64]) -> StoreView {
    StoreView::Reachable(Stores {
        stores: ids
            .iter()
            .map(|i| {
                let mut s = store(*i, &format!("kv-{i}"), StoreState::Up);
                s.node_state = pd_client::NodeState::Serving;
                s.liveness = if down.contains(i) {
                    StoreLiveness::Down
                } else if disconnected.contains(i) {
                    StoreLiveness::Disconnected
                } else {
                    StoreLiveness::Alive
                };
                s
            })
            .collect(),
        replication: ReplicationConfig {
            max_replicas: 3,
            location_labels: vec![],
        },
        ..Stores::default()
    })
}

fn region(id: u64, voters: &[u64], down: &[u64], pending: &[u64]) -> UnhealthyRegion {
    let ids = |v: &[u64]| v.iter().copied().map(StoreId).collect();
    UnhealthyRegion {
        id,
        voters: ids(voters),
        down: ids(down),
        pending: ids(pending),
    }
}

/// Store 3 down in Regions 1 and 2 (healthy majorities elsewhere).
fn regions_ok() -> RegionHealth {
    RegionHealth::Read(vec![
        region(1, &[1, 2, 3], &[3], &[]),
        region(2, &[1, 2, 3], &[3], &[]),
    ])
}

fn settings() -> Settings {
    Settings {
        period: SignedDuration::from_secs(600),
        ..settings_of(None)
    }
}

struct Case {
    members: Vec<Member>,
    others: Vec<Member>,
    pd: StoreView,
    regions: RegionHealth,
    previous: Option<FailoverStatus>,
    settings: Settings,
    now: Timestamp,
}

impl Case {
    fn new(members: Vec<Member>, pd: StoreView) -> Self {
        Self {
            members,
            others: vec![],
            pd,
            regions: regions_ok(),
            previous: None,
            settings: settings(),
            now: t(0),
        }
    }

    fn plan(&self) -> FailoverPlan {
        let spread = spread3();
        plan_failover(
            &FailoverInput {
                group: "kv",
                settings: self.settings,
                now: self.now,
                spread: &spread,
                members: self.members.clone(),
                others: self.others.clone(),
                pd: &self.pd,
                regions: &self.regions,
                previous: self.previous.as_ref(),
            },
            &mut Counter::default(),
        )
    }

    /// Plans at `now`, then carries the status over (as the reconciler does).
    fn step(&mut self, now: i64) -> FailoverPlan {
        self.now = t(now);
        let p = self.plan();
        self.previous = p.status.clone();
        p
    }
}

/// Store 3 seen down at t=0, past the period at t=600.
fn down_past_period() -> Case {
    let mut c = Case::new(three(), pd(&[1, 2, 3], &[3], &[]));
    c.members[2].disrupted = Some("store 3 not serving".into());
    assert_eq!(c.step(0).action, FailoverAction::None);
    c
}

fn refusal_reason(p: &FailoverPlan) -> Option<&str> {
    p.status
        .as_ref()?
        .failures
        .iter()
        .find(|r| r.phase == FailoverPhase::Refused)?
        .reason
        .as_deref()
}

#[test]
fn a_store_down_past_the_period_is_replaced_by_a_surge_in_its_zone() {
    let mut c = down_past_period();
    let p = c.step(300);
    assert_eq!(p.action, FailoverAction::None, "within the period");
    let st = p.status.unwrap();
    assert_eq!(st.failures[0].phase, FailoverPhase::Observing);
    assert_eq!(st.failures[0].since, Time(t(0)));
    assert_eq!(st.failures[0].store_state, "Down");
    assert_eq!(p.condition.1, reasons::STORE_UNHEALTHY);

    let p = c.step(600);
    assert_eq!(
        p.action,
        FailoverAction::Surge {
            failed: "kv-3".into(),
            new: NewInstance {
                name: "kv-n00001".into(),
                topology: Some(zone("c")),
            },
        }
    );
    let st = p.status.unwrap();
    assert_eq!(st.total, 1);
    assert_eq!(st.failures[0].phase, FailoverPhase::Replacing);
    assert_eq!(st.failures[0].replacement.as_deref(), Some("kv-n00001"));
    assert!(p.condition.0);
}

#[test]
fn disconnected_counts_like_down_and_recovery_drops_the_record() {
    let mut c = Case::new(three(), pd(&[1, 2, 3], &[], &[3]));
    c.members[2].disrupted = Some("not serving".into());
    c.step(0);
    c.pd = pd(&[1, 2, 3], &[], &[]);
    c.members[2].disrupted = None;
    let p = c.step(100);
    assert!(p.status.unwrap().failures.is_empty());
    assert_eq!(p.condition.1, reasons::NO_FAILURE);
    // Seen again later: the period starts over.
    c.pd = pd(&[1, 2, 3], &[], &[3]);
    c.step(700);
    assert_eq!(c.step(1200).action, FailoverAction::None);
    assert!(matches!(c.step(1300).action, FailoverAction::Surge { .. }));
}

/// The period counts from the store's last heartbeat in PD, not from the operator's first
/// look: a store silent for 500 s when first seen is replaced 100 s later (period 600 s). A
/// heartbeat time ahead of the operator's clock counts from the first look.
#[test]
fn the_period_counts_from_the_last_heartbeat_pd_reports() {
    let silent = |heartbeat: i64| {
        let mut v = pd(&[1, 2, 3], &[3], &[]);
        if let StoreView::Reachable(st) = &mut v {
            st.stores[2].last_heartbeat = Some(t(heartbeat).as_second());
        }
        v
    };
    let mut c = Case::new(three(), silent(-500));
    c.members[2].disrupted = Some("not serving".into());
    let p = c.step(0);
    assert_eq!(p.status.unwrap().failures[0].since, Time(t(-500)));
    assert_eq!(
        p.recheck_after,
        Some(std::time::Duration::from_millis(100_100)),
        "looks again when the period ends"
    );
    assert_eq!(c.step(99).action, FailoverAction::None);
    assert!(matches!(c.step(100).action, FailoverAction::Surge { .. }));

    let mut c = Case::new(three(), silent(30));
    c.members[2].disrupted = Some("not serving".into());
    assert_eq!(c.step(0).status.unwrap().failures[0].since, Time(t(0)));
}

/// The group after the surge: kv-r replaces kv-3 (store 4).
fn replacing(r_serving: bool) -> Case {
    let mut c = down_past_period();
    assert!(matches!(c.step(600).action, FailoverAction::Surge { .. }));
    let mut r = member("kv-n00001", "c", 4);
    r.replaces = Some("kv-3".into());
    if r_serving {
        c.pd = pd(&[1, 2, 3, 4], &[3], &[]);
    } else {
        r.ready = false;
        r.store_id = None;
        r.disrupted = Some("store not registered".into());
    }
    c.members.push(r);
    c
}

#[test]
fn once_the_replacement_serves_the_failed_store_is_removed_then_finished() {
    let mut c = replacing(false);
    let p = c.step(620);
    assert_eq!(p.action, FailoverAction::None);
    assert_eq!(p.held, vec!["kv-3".to_owned()]);
    assert_eq!(p.condition.1, reasons::FAILOVER_STARTED);

    let mut c = replacing(true);
    let p = c.step(700);
    assert_eq!(
        p.action,
        FailoverAction::RemoveFailed {
            failed: "kv-3".into(),
            replacement: "kv-n00001".into()
        }
    );
    // Removal running (offline): nothing more to do.
    c.members[2].leaving = true;
    c.members[2].disrupted = Some("its store is being removed".into());
    let p = c.step(710);
    assert_eq!(p.action, FailoverAction::None);
    assert_eq!(
        p.status.as_ref().unwrap().failures[0].phase,
        FailoverPhase::Removing
    );
    // The failed instance is gone: the annotation goes, the record completes.
    c.members.remove(2);
    let p = c.step(900);
    assert_eq!(
        p.action,
        FailoverAction::Finish {
            failed: "kv-3".into(),
            replacement: "kv-n00001".into()
        }
    );
    let st = p.status.unwrap();
    assert_eq!(st.failures[0].phase, FailoverPhase::Completed);
    assert_eq!(st.total, 1);
    assert!(p.held.is_empty());
}

#[test]
fn the_failed_store_back_before_its_removal_cancels_the_replacement() {
    let mut c = replacing(false);
    c.pd = pd(&[1, 2, 3], &[], &[]);
    c.members[2].disrupted = None;
    let p = c.step(650);
    assert_eq!(
        p.action,
        FailoverAction::Cancel {
            failed: "kv-3".into(),
            replacement: "kv-n00001".into()
        }
    );
    assert_eq!(
        p.status.unwrap().failures[0].phase,
        FailoverPhase::Cancelled
    );
    // Back after its removal started: the removal goes on.
    let mut c = replacing(true);
    c.members[2].leaving = true;
    c.pd = pd(&[1, 2, 3, 4], &[], &[]);
    assert_eq!(c.step(700).action, FailoverAction::None);
}

#[test]
fn another_disrupted_store_refuses_the_start_and_the_removal() {
    // Another instance of the group restarting.
    let mut c = down_past_period();
    c.members[0].disrupted = Some("restarting".into());
    let p = c.step(600);
    assert_eq!(p.action, FailoverAction::None);
    assert_eq!(refusal_reason(&p), Some(reasons::ANOTHER_STORE_DISRUPTED));
    assert_eq!(
        p.new_refusal.unwrap().reason,
        reasons::ANOTHER_STORE_DISRUPTED
    );
    assert_eq!(p.condition.1, reasons::ANOTHER_STORE_DISRUPTED);
    // Reported once: the same refusal again is no new Event.
    assert!(c.step(610).new_refusal.is_none());
    // An instance of another group.
    let mut c = down_past_period();
    let mut o = member("hdd-1", "a", 9);
    o.disrupted = Some("Pod not ready".into());
    c.others.push(o);
    assert_eq!(c.step(600).action, FailoverAction::None);
    // Re-checked before the removal.
    let mut c = replacing(true);
    c.members[1].disrupted = Some("restarting".into());
    let p = c.step(700);
    assert_eq!(p.action, FailoverAction::None);
    assert_eq!(
        p.status.unwrap().failures[0].reason.as_deref(),
        Some(reasons::ANOTHER_STORE_DISRUPTED)
    );
}

/// PD lists its stores in no fixed order: the refusal's message (the condition, the Event) must
/// not change with it, or every reconcile rewrites the condition and repeats the Event (seen in
/// e2e: the message alternated between "10, 4" and "4, 10").
#[test]
fn the_too_many_failures_message_does_not_depend_on_pds_listing_order() {
    let message = |ids: &[u64]| {
        let mut c = Case::new(three(), pd(ids, &[2, 3], &[]));
        c.members[1].disrupted = Some("not serving".into());
        c.members[2].disrupted = Some("not serving".into());
        c.step(0);
        c.step(600).condition.2
    };
    assert_eq!(message(&[1, 2, 3]), message(&[3, 1, 2]));
}

#[test]
fn two_stores_down_at_once_are_reported_not_acted_on() {
    let mut c = Case::new(three(), pd(&[1, 2, 3], &[2, 3], &[]));
    c.members[1].disrupted = Some("not serving".into());
    c.members[2].disrupted = Some("not serving".into());
    c.step(0);
    let p = c.step(600);
    assert_eq!(p.action, FailoverAction::None);
    assert_eq!(refusal_reason(&p), Some(reasons::TOO_MANY_FAILURES));
    assert!(p.condition.2.contains("2 stores"), "{}", p.condition.2);
    // A down store of another group counts too.
    let mut c = down_past_period();
    c.pd = pd(&[1, 2, 3, 9], &[3, 9], &[]);
    assert_eq!(
        refusal_reason(&c.step(600)),
        Some(reasons::TOO_MANY_FAILURES)
    );
    // With maxInFlight 2 and Regions keeping their majority, both go.
    let mut c = Case::new(three(), pd(&[1, 2, 3], &[2, 3], &[]));
    c.settings.max_in_flight = 2;
    c.regions = RegionHealth::Read(vec![]);
    c.step(0);
    let p = c.step(600);
    assert!(
        matches!(&p.action, FailoverAction::Surge { failed, .. } if failed == "kv-2"),
        "{p:?}"
    );
    // One step per reconcile: the other one waits for the next.
    assert_eq!(refusal_reason(&p), Some(reasons::FAILOVER_IN_FLIGHT));
    assert!(
        p.new_refusal.is_none(),
        "waiting its turn is no refusal Event"
    );
}

/// Two stores that went down at different times are both due at once: every record, and so the
/// condition, says TooManyFailures, whichever is first in the group's listing (seen in e2e: the
/// condition said FailoverInFlight when the store listed first was the one that failed later).
#[test]
fn two_stores_down_at_different_times_both_report_too_many_failures() {
    let mut c = Case::new(three(), pd(&[1, 2, 3], &[3], &[]));
    c.members[2].disrupted = Some("not serving".into());
    c.step(0);
    c.pd = pd(&[1, 2, 3], &[2, 3], &[]);
    c.members[1].disrupted = Some("not serving".into());
    c.step(100);
    let p = c.step(700);
    assert_eq!(p.action, FailoverAction::None);
    let st = p.status.unwrap();
    assert_eq!(st.failures.len(), 2, "{st:?}");
    for r in &st.failures {
        assert_eq!(r.phase, FailoverPhase::Refused, "{r:?}");
        assert_eq!(
            r.reason.as_deref(),
            Some(reasons::TOO_MANY_FAILURES),
            "{r:?}"
        );
    }
    assert_eq!(
        p.condition.1,
        reasons::TOO_MANY_FAILURES,
        "{}",
        p.condition.2
    );
    assert_eq!(
        p.new_refusal.map(|b| b.reason),
        Some(reasons::TOO_MANY_FAILURES)
    );
}

/// The reconcile after a surge can see the group as it was before its own status write (the
/// new instance's watch event arrives first). The replacement is counted once all the same:
/// a stale view must not write `total` back down, and a fresh one must not count it twice.
#[test]
fn a_replacement_is_counted_once_whatever_view_of_the_status_the_reconcile_has() {
    let mut c = down_past_period();
    let before_surge = c.previous.clone();
    assert!(matches!(c.step(600).action, FailoverAction::Surge { .. }));
    let after_surge = c.previous.clone();
    let mut r = member("kv-n00001", "c", 4);
    r.replaces = Some("kv-3".into());
    r.ready = false;
    r.store_id = None;
    r.disrupted = Some("store not registered".into());
    c.members.push(r);
    // Stale: the status from before the surge (record Observing, total 0).
    c.previous = before_surge;
    let p = c.step(601);
    assert_eq!(p.status.as_ref().unwrap().total, 1, "{p:?}");
    // Fresh, and the next ones: still 1.
    c.previous = after_surge;
    assert_eq!(c.step(602).status.unwrap().total, 1);
    assert_eq!(c.step(603).status.unwrap().total, 1);
    // No status at all (the write was lost): recorded and counted.
    c.previous = None;
    let st = c.step(604).status.unwrap();
    assert_eq!(st.total, 1);
    assert_eq!(st.failures[0].replacement.as_deref(), Some("kv-n00001"));
    // Finished, then a view of the replacement from before its Finish: not counted again.
    c.pd = pd(&[1, 2, 3, 4], &[3], &[]);
    c.members[3] = Member {
        replaces: Some("kv-3".into()),
        ..member("kv-n00001", "c", 4)
    };
    assert!(matches!(
        c.step(700).action,
        FailoverAction::RemoveFailed { .. }
    ));
    c.members.remove(2);
    assert!(matches!(c.step(800).action, FailoverAction::Finish { .. }));
    let st = c.step(801).status.unwrap();
    assert_eq!(st.total, 1, "{st:?}");
    assert_eq!(st.failures.len(), 1, "{st:?}");
}

#[test]
fn region_health_unknown_or_a_lost_majority_refuses() {
    for (regions, reason) in [
        (RegionHealth::NotRead, reasons::REGION_HEALTH_UNKNOWN),
        (
            RegionHealth::Unknown("PD timed out".into()),
            reasons::REGION_HEALTH_UNKNOWN,
        ),
        // Region 7: store 3 down and store 2's peer pending: 1 of 3 healthy.
        (
            RegionHealth::Read(vec![region(7, &[1, 2, 3], &[3], &[2])]),
            reasons::REGION_MAJORITY_AT_RISK,
        ),
        // Region 8 has only two voters, one on store 3.
        (
            RegionHealth::Read(vec![region(8, &[1, 3], &[3], &[])]),
            reasons::REGION_MAJORITY_AT_RISK,
        ),
    ] {
        let mut c = down_past_period();
        c.regions = regions.clone();
        let p = c.step(600);
        assert_eq!(p.action, FailoverAction::None, "{regions:?}");
        assert_eq!(refusal_reason(&p), Some(reason), "{regions:?}");
        // The same before the removal.
        let mut c = replacing(true);
        c.regions = regions.clone();
        assert_eq!(c.step(700).action, FailoverAction::None, "{regions:?}");
    }
    // A pending peer in a Region without store 3 does not matter.
    let mut c = down_past_period();
    c.regions = RegionHealth::Read(vec![region(9, &[1, 2, 4], &[], &[2])]);
    assert!(matches!(c.step(600).action, FailoverAction::Surge { .. }));
}

#[test]
fn pd_unreachable_takes_no_action() {
    let mut c = down_past_period();
    c.pd = StoreView::Unreachable {
        message: "down".into(),
    };
    let p = c.step(600);
    assert_eq!(p.action, FailoverAction::None);
    assert_eq!(p.condition.1, reasons::PD_UNAVAILABLE);
    // The record is kept, not restarted.
    assert_eq!(p.status.unwrap().failures[0].since, Time(t(0)));
    let mut c = replacing(true);
    c.pd = StoreView::Unreachable {
        message: "down".into(),
    };
    assert_eq!(c.step(700).action, FailoverAction::None);
}

#[test]
fn max_total_and_max_in_flight_refuse_new_replacements() {
    let mut c = down_past_period();
    c.previous.as_mut().unwrap().total = 3;
    let p = c.step(600);
    assert_eq!(p.action, FailoverAction::None);
    assert_eq!(refusal_reason(&p), Some(reasons::MAX_TOTAL_REACHED));
    // Reset by hand: it goes.
    c.previous.as_mut().unwrap().total = 0;
    assert!(matches!(c.step(610).action, FailoverAction::Surge { .. }));

    // One replacement running, a second store fails: with maxInFlight 1
    // that is too many failures; with 2 (and Regions keeping a majority) the
    // second one is replaced too.
    let mut c = replacing(false);
    c.members[1].disrupted = Some("not serving".into());
    c.pd = pd(&[1, 2, 3], &[2, 3], &[]);
    c.regions = RegionHealth::Read(vec![]);
    c.step(620);
    let p = c.step(1300);
    assert_eq!(p.action, FailoverAction::None);
    assert_eq!(refusal_reason(&p), Some(reasons::TOO_MANY_FAILURES));
    c.settings.max_in_flight = 2;
    let p = c.step(1310);
    assert!(
        matches!(&p.action, FailoverAction::Surge { failed, .. } if failed == "kv-2"),
        "{p:?}"
    );
    assert_eq!(p.status.unwrap().total, 2);
}

#[test]
fn disabled_planned_and_leaving_stores_are_not_replaced() {
    let mut c = down_past_period();
    c.settings.enabled = false;
    let p = c.step(600);
    assert_eq!(p.action, FailoverAction::None);
    assert_eq!(refusal_reason(&p), Some(reasons::FAILOVER_DISABLED));
    let planned: [fn(&mut Member); 2] = [|m| m.restarting = true, |m| m.leaving = true];
    for planned in planned {
        let mut c = Case::new(three(), pd(&[1, 2, 3], &[3], &[]));
        planned(&mut c.members[2]);
        c.step(0);
        let p = c.step(600);
        assert_eq!(p.action, FailoverAction::None);
        assert!(p.status.is_none_or(|s| s.failures.is_empty()));
    }
}

#[test]
fn tikv_failover_is_on_unless_disabled() {
    assert!(settings_of(None).enabled);
    assert!(
        !settings_of(Some(&Failover {
            enabled: Some(false),
            ..Failover::default()
        }))
        .enabled
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4096))]

    /// Whatever the snapshot, failover starts or removes only when PD
    /// answers, the unhealthy stores are at most maxInFlight, no other store
    /// is disrupted, and no Region with a peer on the failed store lacks a
    /// healthy majority without it.
    #[test]
    fn acts_only_when_every_safety_check_passes(
        down in proptest::collection::vec(any::<bool>(), 4),
        disrupted in proptest::collection::vec(any::<bool>(), 4),
        reachable in any::<bool>(),
        region_state in 0u8..4,
        replacement in 0u8..3,
        elapsed in 0i64..2000,
        total in 0i32..5,
        max_in_flight in 1usize..3,
    ) {
        let ids: Vec<u64> = (1..=4).collect();
        let down_ids: Vec<u64> = ids.iter().copied().filter(|i| down[(*i - 1) as usize]).collect();
        let mut members: Vec<Member> = ["a", "b", "c"].iter().zip(1u64..)
            .map(|(z, i)| member(&format!("kv-{i}"), z, i)).collect();
        for m in &mut members {
            let i = m.store_id.unwrap().get();
            if down_ids.contains(&i) || disrupted[(i - 1) as usize] {
                m.disrupted = Some("x".into());
            }
        }
        if replacement > 0 {
            let mut r = member("kv-r", "c", 4);
            r.replaces = Some("kv-3".into());
            r.ready = replacement == 2;
            if down_ids.contains(&4) || disrupted[3] { r.disrupted = Some("x".into()); }
            members.push(r);
        }
        let view = if reachable { pd(&ids, &down_ids, &[]) } else {
            StoreView::Unreachable { message: "x".into() }
        };
        let regions = match region_state {
            0 => RegionHealth::NotRead,
            1 => RegionHealth::Unknown("x".into()),
            2 => RegionHealth::Read(vec![region(1, &[1, 2, 3], &[3], &[2])]),
            _ => RegionHealth::Read(vec![region(1, &[1, 2, 3], &down_ids, &[])]),
        };
        let previous = FailoverStatus {
            total,
            failures: members.iter().map(|m| {
                let mut r = record(&m.name, None, t(0), FailoverPhase::Observing, t(0));
                r.store_id = m.store_id.unwrap().to_string();
                r
            }).collect(),
        };
        let mut settings = settings();
        settings.max_in_flight = max_in_flight;
        let spread = spread3();
        let p = plan_failover(&FailoverInput {
            group: "kv", settings, now: t(elapsed), spread: &spread,
            members: members.clone(), others: vec![], pd: &view, regions: &regions,
            previous: Some(&previous),
        }, &mut Counter::default());
        let failed = match &p.action {
            FailoverAction::Surge { failed, .. } => {
                prop_assert!(elapsed >= 600);
                prop_assert!(total < settings.max_total);
                failed.clone()
            }
            FailoverAction::RemoveFailed { failed, replacement } => {
                prop_assert_eq!(replacement, "kv-r");
                prop_assert!(replacement == "kv-r" && !disrupted[3] && !down_ids.contains(&4));
                failed.clone()
            }
            _ => return Ok(()),
        };
        prop_assert!(reachable);
        prop_assert!(down_ids.len() <= max_in_flight);
        let fid = members.iter().find(|m| m.name == failed).unwrap().store_id.unwrap().get();
        prop_assert!(down_ids.contains(&fid));
        // No other disruption, except unhealthy stores (at most maxInFlight)
        // and this failover's own replacement.
        for m in &members {
            let i = m.store_id.unwrap().get();
            if m.name != failed && m.name != "kv-r" && !down_ids.contains(&i) {
                prop_assert!(m.disrupted.is_none(), "{} disrupted", m.name);
            }
        }
        prop_assert!(region_state >= 2);
        if region_state == 2 {
            prop_assert!(fid != 3 && fid != 2 && fid != 1);
        }
        if region_state == 3 && [1, 2, 3].contains(&fid) {
            prop_assert!(down_ids.iter().filter(|i| **i <= 3).count() < 2);
        }
    }
}

#[test]
fn a_replacement_ended_on_an_earlier_reconcile_is_finished_never_dropped() {
    // Finish ran (the failed instance is gone, the replacement's annotation
    // removed), but this view of the group shows the status from before it:
    // the record in Removing. It completes; it is not dropped.
    let mut c = replacing(true);
    assert!(matches!(
        c.step(700).action,
        FailoverAction::RemoveFailed { .. }
    ));
    c.members[2].leaving = true;
    c.step(710);
    let removing = c.previous.clone();
    c.members.remove(2);
    assert!(matches!(c.step(900).action, FailoverAction::Finish { .. }));
    c.members[2].replaces = None;
    c.previous = removing;
    let p = c.step(901);
    assert_eq!(p.action, FailoverAction::None);
    let st = p.status.unwrap();
    assert_eq!(st.total, 1, "{st:?}");
    assert_eq!(st.failures.len(), 1, "{st:?}");
    assert_eq!(st.failures[0].phase, FailoverPhase::Completed, "{st:?}");
    assert_eq!(st.failures[0].replacement.as_deref(), Some("kv-n00001"));

    // Cancel ran (the replacement lost its annotation and leaves), on a view
    // from before it: the record is Cancelled, and the failed store, now
    // healthy, is not watched.
    let mut c = replacing(false);
    let replacing_status = c.previous.clone();
    c.pd = pd(&[1, 2, 3], &[], &[]);
    c.members[2].disrupted = None;
    assert!(matches!(c.step(650).action, FailoverAction::Cancel { .. }));
    c.members[3].replaces = None;
    c.members[3].leaving = true;
    c.previous = replacing_status;
    let st = c.step(651).status.unwrap();
    assert_eq!(st.total, 1, "{st:?}");
    assert_eq!(st.failures.len(), 1, "{st:?}");
    assert_eq!(st.failures[0].phase, FailoverPhase::Cancelled, "{st:?}");
}

#[test]
fn a_replacement_not_visible_yet_is_awaited_not_surged_twice() {
    // The surge's status is written, but the instances do not show the
    // replacement (a cache behind): no second surge, the record waits.
    let mut c = down_past_period();
    assert!(matches!(c.step(600).action, FailoverAction::Surge { .. }));
    let p = c.step(630);
    assert_eq!(p.action, FailoverAction::None, "{p:?}");
    let st = p.status.unwrap();
    assert_eq!(st.total, 1);
    assert_eq!(st.failures.len(), 1, "{st:?}");
    assert_eq!(st.failures[0].phase, FailoverPhase::Replacing);
    // Still not there after the grace: the replacement is gone. The record
    // is Cancelled, and the failed store (still down) is watched again.
    let st = c.step(600 + 121).status.unwrap();
    assert_eq!(st.total, 1, "{st:?}");
    let phases: Vec<FailoverPhase> = st.failures.iter().map(|r| r.phase).collect();
    assert!(phases.contains(&FailoverPhase::Cancelled), "{st:?}");
    assert!(
        st.failures
            .iter()
            .any(|r| r.instance == "kv-3" && !super::finished(r.phase)),
        "{st:?}"
    );
}
