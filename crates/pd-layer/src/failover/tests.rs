#![allow(clippy::unwrap_used)]
use super::*;
use crate::pd_view::tests::membership;
use k8s_openapi::jiff::SignedDuration;
use tikv_operator_api::Failover;

fn t(secs: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + secs).unwrap()
}

fn instance(name: &str) -> InstanceState {
    InstanceState {
        name: name.to_owned(),
        peer_url: format!("http://{name}:2380"),
        topology: None,
        ready: true,
        deleting: false,
        delete_priority: 0,
        bootstrap_members: None,
        outdated: false,
    }
}

struct Case {
    instances: Vec<InstanceState>,
    pd: PdView,
    settings: Settings,
    previous: Option<PdFailoverStatus>,
}

impl Case {
    /// pd-a (leader), pd-b, pd-c; `healthy` per member.
    fn new(healthy: [bool; 3]) -> Self {
        Self {
            instances: ["pd-a", "pd-b", "pd-c"].map(instance).to_vec(),
            pd: PdView::Reachable(membership(
                &[
                    ("pd-a", healthy[0]),
                    ("pd-b", healthy[1]),
                    ("pd-c", healthy[2]),
                ],
                Some("pd-a"),
            )),
            settings: Settings {
                period: SignedDuration::from_secs(600),
                ..settings_of(Some(&Failover {
                    enabled: Some(true),
                    ..Failover::default()
                }))
            },
            previous: None,
        }
    }

    fn step(&mut self, now: i64) -> FailoverPlan {
        let p = plan_failover(&FailoverInput {
            settings: self.settings,
            now: t(now),
            instances: &self.instances,
            pd: &self.pd,
            previous: self.previous.as_ref(),
        });
        self.previous = p.status.clone();
        p
    }

    fn record(&self, name: &str) -> MemberFailure {
        self.previous
            .as_ref()
            .and_then(|s| s.failures.iter().find(|r| r.instance == name))
            .cloned()
            .unwrap()
    }
}

#[test]
fn pd_failover_is_off_unless_enabled() {
    assert!(!settings_of(None).enabled);
    let mut c = Case::new([true, true, false]);
    c.settings.enabled = false;
    for now in [0, 600, 700] {
        let p = c.step(now);
        assert_eq!(p.replace, None);
        assert_eq!(p.condition.1, fo::FAILOVER_DISABLED);
        assert!(p.new_refusal.is_none());
        assert!(p.status.is_none(), "nothing tracked while off: {p:?}");
    }
}

#[test]
fn an_unhealthy_member_past_the_period_is_removed_then_completed() {
    let mut c = Case::new([true, true, false]);
    let p = c.step(0);
    assert_eq!(p.replace, None);
    assert_eq!(p.condition.1, reasons::MEMBER_UNHEALTHY);
    assert_eq!(
        p.recheck_after,
        Some(std::time::Duration::from_millis(600_100))
    );
    assert_eq!(c.step(599).replace, None);
    let p = c.step(600);
    assert_eq!(p.replace.as_deref(), Some("pd-c"));
    assert!(p.condition.0);
    assert_eq!(p.status.as_ref().unwrap().total, 1);
    assert_eq!(c.record("pd-c").phase, FailoverPhase::Replacing);
    // A cache that does not show the deletion yet: no second record, no second removal.
    let p = c.step(605);
    assert_eq!(p.replace, None);
    assert_eq!(p.status.as_ref().unwrap().failures.len(), 1, "{p:?}");
    // The instance is being deleted (its finalizer removes the member): nothing more.
    c.instances[2].deleting = true;
    let p = c.step(610);
    assert_eq!(p.replace, None);
    assert_eq!(p.status.as_ref().unwrap().total, 1);
    assert!(p.condition.0);
    // Gone: completed, once.
    c.instances.remove(2);
    c.pd = PdView::Reachable(membership(&[("pd-a", true), ("pd-b", true)], Some("pd-a")));
    let p = c.step(700);
    assert_eq!(p.completed, vec!["pd-c".to_owned()]);
    assert_eq!(c.record("pd-c").phase, FailoverPhase::Completed);
    assert_eq!(p.condition.1, fo::NO_FAILURE);
    assert!(c.step(710).completed.is_empty());
    assert_eq!(c.previous.as_ref().unwrap().total, 1);
}

#[test]
fn a_member_healthy_again_drops_its_record() {
    let mut c = Case::new([true, true, false]);
    c.step(0);
    c.pd = PdView::Reachable(membership(
        &[("pd-a", true), ("pd-b", true), ("pd-c", true)],
        Some("pd-a"),
    ));
    let p = c.step(300);
    assert!(p.status.is_none(), "{p:?}");
    assert_eq!(p.condition.1, fo::NO_FAILURE);
}

#[test]
fn two_unhealthy_members_or_a_lost_quorum_are_reported_not_acted_on() {
    // 5 members, two unhealthy: PD keeps its quorum, but no member is removed while another
    // is unhealthy.
    let mut c = Case::new([true, true, false]);
    c.instances.extend(["pd-d", "pd-e"].map(instance));
    c.pd = PdView::Reachable(membership(
        &[
            ("pd-a", true),
            ("pd-b", true),
            ("pd-c", false),
            ("pd-d", false),
            ("pd-e", true),
        ],
        Some("pd-a"),
    ));
    c.step(0);
    let p = c.step(600);
    assert_eq!(p.replace, None);
    assert_eq!(p.condition.1, fo::TOO_MANY_FAILURES, "{}", p.condition.2);
    for n in ["pd-c", "pd-d"] {
        assert_eq!(c.record(n).reason.as_deref(), Some(fo::TOO_MANY_FAILURES));
    }
    // Two of three unhealthy: PD has no quorum and answers nothing.
    let mut c = Case::new([true, false, false]);
    c.pd = PdView::Unreachable {
        message: "no leader".into(),
    };
    let p = c.step(600);
    assert_eq!(p.replace, None);
    assert_eq!(p.condition.1, reasons::PD_UNAVAILABLE);
    // The condition says what PD answered, not only that it did not.
    assert!(p.condition.2.contains("(no leader)"), "{}", p.condition.2);
}

#[test]
fn pd_unreachable_keeps_the_records_and_acts_on_nothing() {
    let mut c = Case::new([true, true, false]);
    c.step(0);
    c.pd = PdView::Unreachable {
        message: "timeout".into(),
    };
    let p = c.step(900);
    assert_eq!(p.replace, None);
    assert_eq!(p.condition.1, reasons::PD_UNAVAILABLE);
    assert!(p.condition.2.contains("(timeout)"), "{}", p.condition.2);
    // The record stays, but its period starts over: nothing is known of the
    // member while PD did not answer (a quorum that came back with this
    // member still catching up must not lose it at once).
    assert_eq!(c.record("pd-c").since, Time(t(900)));
    c.pd = Case::new([true, true, false]).pd;
    assert_eq!(c.step(901).replace, None);
    assert_eq!(c.step(1499).replace, None);
    assert_eq!(c.step(1500).replace.as_deref(), Some("pd-c"));
}

#[test]
fn another_member_disrupted_the_leader_or_max_total_refuse() {
    // Another instance not ready, or being removed.
    for deleting in [false, true] {
        let mut c = Case::new([true, true, false]);
        if deleting {
            c.instances[1].deleting = true;
        } else {
            c.instances[1].ready = false;
        }
        c.step(0);
        let p = c.step(600);
        assert_eq!(p.replace, None);
        assert_eq!(
            p.condition.1,
            reasons::WAITING_FOR_MEMBER,
            "{}",
            p.condition.2
        );
    }
    // The unhealthy member still leads.
    let mut c = Case::new([false, true, true]);
    c.step(0);
    assert_eq!(c.step(600).replace, None);
    assert_eq!(
        c.record("pd-a").reason.as_deref(),
        Some(reasons::MEMBER_UNHEALTHY)
    );
    // maxTotal reached.
    let mut c = Case::new([true, true, false]);
    c.previous = Some(PdFailoverStatus {
        total: 3,
        failures: vec![],
    });
    c.step(0);
    let p = c.step(600);
    assert_eq!(p.replace, None);
    assert_eq!(p.condition.1, fo::MAX_TOTAL_REACHED);
}

#[test]
fn removing_the_member_must_leave_a_healthy_majority() {
    // Two members, one unhealthy: removing it leaves one of one, but a member whose
    // removal leaves no majority (the one healthy member of a two-member PD unhealthy
    // too) is never chosen. Here: 2 members, pd-b unhealthy, pd-a healthy -> allowed.
    let mut c = Case::new([true, false, true]);
    c.instances.truncate(2);
    c.pd = PdView::Reachable(membership(&[("pd-a", true), ("pd-b", false)], Some("pd-a")));
    c.step(0);
    assert_eq!(c.step(600).replace.as_deref(), Some("pd-b"));
    // One member only: never removed.
    let mut c = Case::new([false, true, true]);
    c.instances.truncate(1);
    c.pd = PdView::Reachable(membership(&[("pd-a", false)], None));
    c.step(0);
    let p = c.step(600);
    assert_eq!(p.replace, None);
    assert_eq!(p.condition.1, reasons::QUORUM_AT_RISK, "{}", p.condition.2);
}
