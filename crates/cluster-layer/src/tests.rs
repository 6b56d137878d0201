#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::sync::Arc;
use tikv_operator_api::labels;

use pd_client::{ClusterId, Members};
use serde_json::json;
use tikv_operator_core::fake::{FakeClock, FakeKube, KubeCall};

use super::*;

fn cluster(status: Option<serde_json::Value>, deleting: bool) -> Cluster {
    let mut v = json!({
        "apiVersion": "core.tikv.org/v1alpha1",
        "kind": "Cluster",
        "metadata": {"name": "basic", "namespace": "ns", "uid": "c-uid", "generation": 2},
        "spec": {}
    });
    if let Some(s) = status {
        v["status"] = s;
    }
    if deleting {
        v["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z".into();
        v["metadata"]["finalizers"] = json!([labels::FINALIZER]);
    }
    serde_json::from_value(v).unwrap()
}

fn reachable(id: u64) -> PdSnapshot {
    PdSnapshot {
        members: Some(Members {
            cluster_id: ClusterId(id),
            members: vec![],
            leader: None,
            etcd_leader: None,
        }),
        ..PdSnapshot::default()
    }
}

fn unreachable() -> PdSnapshot {
    PdSnapshot {
        error: Some("down".into()),
        ..PdSnapshot::default()
    }
}

fn group(kind: Kind, name: &str, replicas: i32, ready: i32) -> GroupSummary {
    GroupSummary {
        kind,
        name: name.into(),
        replicas,
        ready_replicas: ready,
        ready: replicas == ready,
        progressing: None,
        not_synced: None,
        deleting: false,
        client_port: (kind == Kind::PD).then_some(2379),
    }
}

fn t0() -> k8s_openapi::jiff::Timestamp {
    k8s_openapi::jiff::Timestamp::UNIX_EPOCH
}

fn cond(status: &ClusterStatus, type_: &str) -> (String, String) {
    let c = conditions::find(&status.common.conditions, type_).unwrap();
    (c.status.clone(), c.reason.clone())
}

#[test]
fn records_the_pd_cluster_id_once_and_never_overwrites_it() {
    let groups = [group(Kind::PD, "pd", 3, 3)];
    let c = cluster(None, false);
    assert_eq!(
        plan_status(&c, &groups, &unreachable(), None, t0()).id,
        None
    );
    let s = plan_status(&c, &groups, &reachable(7), None, t0());
    assert_eq!(s.id.as_deref(), Some("7"));
    assert_eq!(cond(&s, condition::SYNCED).0, "True");

    let c = cluster(Some(serde_json::to_value(&s).unwrap()), false);
    let s2 = plan_status(&c, &groups, &reachable(8), None, t0());
    assert_eq!(
        s2.id.as_deref(),
        Some("7"),
        "a recorded id is never overwritten"
    );
    assert_eq!(
        cond(&s2, condition::SYNCED),
        ("False".into(), REASON_CLUSTER_ID_MISMATCH.into())
    );
    // An outage keeps the recorded id.
    assert_eq!(
        plan_status(&c, &groups, &unreachable(), None, t0())
            .id
            .as_deref(),
        Some("7")
    );
}

/// A group whose template is rejected (its config does not parse) makes the
/// Cluster `Synced=False` with the group's reason and not `Ready`: `kubectl get
/// tkc` must not look healthy.
#[test]
fn a_group_with_a_rejected_template_makes_the_cluster_not_synced() {
    let mut groups = vec![group(Kind::PD, "pd", 3, 3), group(Kind::TiKV, "tikv", 3, 3)];
    groups[1].ready = false;
    groups[1].not_synced = Some((
        "InvalidConfig".into(),
        "config is not valid TOML: line 2, column 1: ...".into(),
    ));
    let s = plan_status(&cluster(None, false), &groups, &reachable(1), None, t0());
    assert_eq!(
        cond(&s, condition::SYNCED),
        ("False".into(), "InvalidConfig".into())
    );
    assert_eq!(cond(&s, condition::READY).0, "False");
    let synced = conditions::find(&s.common.conditions, condition::SYNCED).unwrap();
    assert!(
        synced.message.starts_with("TiKVGroup tikv: "),
        "{}",
        synced.message
    );
    // Also before PD ever answered (a PDGroup whose template is rejected never
    // brings PD up).
    let s = plan_status(&cluster(None, false), &groups, &unreachable(), None, t0());
    assert_eq!(
        cond(&s, condition::SYNCED),
        ("False".into(), "InvalidConfig".into())
    );
}

#[test]
fn components_sum_groups_and_ready_needs_every_group_and_pd() {
    let mut groups = vec![
        group(Kind::PD, "pd", 3, 3),
        group(Kind::TiKV, "ssd", 3, 3),
        group(Kind::TiKV, "hdd", 2, 1),
    ];
    groups[2].progressing = Some(("WaitingForStore".into(), "store 4 joining".into()));
    let c = cluster(None, false);
    let s = plan_status(&c, &groups, &reachable(1), None, t0());
    assert_eq!(
        s.components,
        vec![
            ComponentStatus {
                kind: "PD".into(),
                replicas: 3,
                ready_replicas: 3
            },
            ComponentStatus {
                kind: "TiKV".into(),
                replicas: 5,
                ready_replicas: 4
            },
        ]
    );
    assert_eq!(
        cond(&s, condition::READY),
        ("False".into(), "GroupsNotReady".into())
    );
    assert_eq!(
        cond(&s, condition::PROGRESSING),
        ("True".into(), "WaitingForStore".into())
    );
    assert_eq!(s.pd.as_deref(), Some("http://pd-pd.ns.svc:2379"));

    groups[2] = group(Kind::TiKV, "hdd", 2, 2);
    let s = plan_status(&c, &groups, &reachable(1), None, t0());
    assert_eq!(cond(&s, condition::READY).0, "True");
    assert_eq!(cond(&s, condition::PROGRESSING).0, "False");
    // PD unreachable: not Ready, whatever the groups say.
    let s = plan_status(&c, &groups, &unreachable(), None, t0());
    assert_eq!(
        cond(&s, condition::READY),
        ("False".into(), "PDUnavailable".into())
    );
    // No PD group at all.
    let s = plan_status(&c, &groups[1..], &reachable(1), None, t0());
    assert_eq!(cond(&s, condition::READY), ("False".into(), "NoPD".into()));
}

#[test]
fn suspended_follows_suspend_compute() {
    let mut c = cluster(None, false);
    let s = plan_status(&c, &[], &reachable(1), None, t0());
    assert_eq!(cond(&s, condition::SUSPENDED).0, "False");
    c.spec.suspend_action = Some(tikv_operator_api::cluster::SuspendAction {
        suspend_compute: true,
    });
    let s = plan_status(&c, &[], &reachable(1), None, t0());
    assert_eq!(cond(&s, condition::SUSPENDED).0, "True");
}

#[test]
fn a_cluster_asking_for_tls_names_its_client_secret_and_speaks_https() {
    let mut c = cluster(None, false);
    assert!(!tls_requested(&c));
    assert_eq!(client_tls_secret(&c), None);
    let groups = [group(Kind::PD, "pd", 3, 3)];
    let st = plan_status(&c, &groups, &reachable(7), None, t0());
    assert_eq!(st.pd.as_deref(), Some("http://pd-pd.ns.svc:2379"));
    c.spec.tls_cluster = serde_json::from_value(json!({"enabled": true})).unwrap();
    assert!(tls_requested(&c));
    assert_eq!(client_tls_secret(&c).as_deref(), Some("basic-client-tls"));
    let st = plan_status(&c, &groups, &reachable(7), None, t0());
    assert_eq!(st.pd.as_deref(), Some("https://pd-pd.ns.svc:2379"));
    // A Secret that passes: synced as any other Cluster.
    assert_eq!(
        cond(&st, condition::SYNCED),
        ("True".into(), "Synced".into())
    );
    c.spec.tls_cluster =
        serde_json::from_value(json!({"enabled": true, "clientSecretName": "mine"})).unwrap();
    assert_eq!(client_tls_secret(&c).as_deref(), Some("mine"));
}

#[test]
fn a_refused_client_secret_is_reported_on_synced_before_anything_else() {
    let mut c = cluster(Some(json!({"id": "7"})), false);
    c.spec.tls_cluster = serde_json::from_value(json!({"enabled": true})).unwrap();
    let mut pd_group = group(Kind::PD, "pd", 3, 0);
    pd_group.not_synced = Some(("InvalidConfig".into(), "bad".into()));
    for e in [
        tikv_operator_core::tls::SecretError::NotFound {
            secret: "ns/basic-client-tls".into(),
        },
        tikv_operator_core::tls::SecretError::KeyMismatch {
            secret: "ns/basic-client-tls".into(),
        },
    ] {
        let st = plan_status(
            &c,
            std::slice::from_ref(&pd_group),
            &reachable(7),
            Some(&e),
            t0(),
        );
        let synced = conditions::find(&st.common.conditions, condition::SYNCED).unwrap();
        assert_eq!(
            (synced.status.as_str(), synced.reason.as_str()),
            ("False", e.reason())
        );
        assert!(
            synced.message.contains("ns/basic-client-tls"),
            "{}",
            synced.message
        );
    }
}

#[test]
fn deletion_goes_tikv_first_then_pd_and_waits_for_instances() {
    let mut groups = vec![
        group(Kind::PD, "pd", 3, 3),
        group(Kind::TiKV, "a", 3, 3),
        group(Kind::TiKV, "b", 3, 3),
    ];
    let none = BTreeMap::new();
    assert_eq!(
        next_deletion_step(&groups, &none),
        DeletionStep::DeleteGroups(Kind::TiKV, vec!["a".into(), "b".into()])
    );
    groups[1].deleting = true;
    groups[2].deleting = true;
    assert_eq!(
        next_deletion_step(&groups, &none),
        DeletionStep::Wait(Kind::TiKV)
    );
    groups.truncate(1);
    let tikv_left = BTreeMap::from([(Kind::TiKV, 2)]);
    assert_eq!(
        next_deletion_step(&groups, &tikv_left),
        DeletionStep::Wait(Kind::TiKV),
        "PD waits until every TiKV instance is gone"
    );
    assert_eq!(
        next_deletion_step(&groups, &none),
        DeletionStep::DeleteGroups(Kind::PD, vec!["pd".into()])
    );
    groups[0].deleting = true;
    assert_eq!(
        next_deletion_step(&groups, &none),
        DeletionStep::Wait(Kind::PD)
    );
    let pd_left = BTreeMap::from([(Kind::PD, 1)]);
    assert_eq!(
        next_deletion_step(&[], &pd_left),
        DeletionStep::Wait(Kind::PD)
    );
    assert_eq!(next_deletion_step(&[], &none), DeletionStep::Done);
}

fn ctx(kube: &FakeKube) -> Ctx {
    Ctx {
        kube: Arc::new(kube.clone()),
        clock: Arc::new(FakeClock::default()),
        policy: tikv_operator_core::RequeuePolicy::default(),
    }
}

#[tokio::test]
async fn reconcile_adds_finalizer_reports_status_then_stays_quiet() {
    let kube = FakeKube::new();
    let key = ObjectKey::new::<Cluster>(Some("ns"), "basic");
    kube.insert(
        key.clone(),
        serde_json::to_value(cluster(None, false)).unwrap(),
    );
    let groups = [group(Kind::PD, "pd", 3, 3)];
    let left = BTreeMap::new();
    let pd = reachable(42);
    for _ in 0..2 {
        let c: Cluster = kube.get_typed(&key).unwrap();
        reconcile_cluster(
            &ctx(&kube),
            &ClusterSnapshot {
                cluster: &c,
                groups: &groups,
                instances_left: &left,
                pd: &pd,
            },
        )
        .await
        .unwrap();
    }
    let c: Cluster = kube.get_typed(&key).unwrap();
    assert_eq!(c.status.as_ref().unwrap().id.as_deref(), Some("42"));
    assert!(c.finalizers().contains(&labels::FINALIZER.to_owned()));
    // First pass: finalizer + status; second pass: nothing.
    assert_eq!(kube.calls().len(), 2, "{:?}", kube.calls());
}

/// A Cluster asking for TLS reads its client Secret at every reconcile: a
/// missing one is reported (Synced, a Warning Event) and polled; once it is
/// there and valid, the Cluster is synced.
#[tokio::test]
async fn reconcile_checks_the_client_secret_and_polls_it_while_refused() {
    let kube = FakeKube::new();
    let key = ObjectKey::new::<Cluster>(Some("ns"), "basic");
    let mut c = cluster(Some(json!({"id": "42"})), false);
    c.spec.tls_cluster = serde_json::from_value(json!({"enabled": true})).unwrap();
    kube.insert(key.clone(), serde_json::to_value(&c).unwrap());
    let groups = [group(Kind::PD, "pd", 3, 3)];
    let left = BTreeMap::new();
    let pd = reachable(42);
    let run = || async {
        let c: Cluster = kube.get_typed(&key).unwrap();
        reconcile_cluster(
            &ctx(&kube),
            &ClusterSnapshot {
                cluster: &c,
                groups: &groups,
                instances_left: &left,
                pd: &pd,
            },
        )
        .await
        .unwrap()
    };
    let synced = || {
        let c: Cluster = kube.get_typed(&key).unwrap();
        let s = c.status.unwrap();
        let cond = conditions::find(&s.common.conditions, condition::SYNCED).unwrap();
        (cond.reason.clone(), cond.message.clone())
    };

    let requeue = run().await;
    assert_eq!(synced().0, tikv_operator_core::tls::SECRET_MISSING);
    assert!(synced().1.contains("ns/basic-client-tls"), "{}", synced().1);
    assert!(
        matches!(requeue, Requeue::After(d) if d <= tikv_operator_core::tls::RECHECK),
        "{requeue:?}"
    );
    let events = kube.events();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].type_, EventType::Warning);
    assert_eq!(events[0].reason, tikv_operator_core::tls::SECRET_MISSING);
    assert!(
        kube.calls()
            .iter()
            .any(|c| matches!(c, KubeCall::GetSecret(k) if k.name == "basic-client-tls"))
    );

    // A certificate of another CA than its ca.crt: invalid.
    let ca = tikv_operator_core::fake::pki::TestCa::new("ca");
    let other = tikv_operator_core::fake::pki::TestCa::new("other");
    kube.insert_tls_secret("ns", "basic-client-tls", &ca.pem(), &other.client());
    run().await;
    assert_eq!(synced().0, tikv_operator_core::tls::SECRET_INVALID);

    kube.insert_tls_secret("ns", "basic-client-tls", &ca.pem(), &ca.client());
    kube.clear_calls();
    let requeue = run().await;
    assert_eq!(synced().0, "Synced");
    assert!(kube.events().is_empty());
    assert_eq!(
        requeue,
        Requeue::After(tikv_operator_core::RequeuePolicy::default().at_rest)
    );
}

#[tokio::test]
async fn reconcile_of_a_deleted_cluster_deletes_groups_in_order_then_lets_go() {
    let kube = FakeKube::new();
    let key = ObjectKey::new::<Cluster>(Some("ns"), "basic");
    kube.insert(
        key.clone(),
        serde_json::to_value(cluster(None, true)).unwrap(),
    );
    let c: Cluster = kube.get_typed(&key).unwrap();
    let pd = unreachable();
    let run = |groups: Vec<GroupSummary>, left: BTreeMap<Kind, usize>| {
        let kube = kube.clone();
        let c = c.clone();
        let pd = pd.clone();
        async move {
            reconcile_cluster(
                &ctx(&kube),
                &ClusterSnapshot {
                    cluster: &c,
                    groups: &groups,
                    instances_left: &left,
                    pd: &pd,
                },
            )
            .await
            .unwrap()
        }
    };
    run(
        vec![group(Kind::PD, "pd", 3, 3), group(Kind::TiKV, "t", 3, 3)],
        BTreeMap::new(),
    )
    .await;
    let deleted: Vec<String> = kube
        .calls()
        .iter()
        .filter_map(|c| match c {
            KubeCall::Delete(k) => Some(format!("{} {}", k.kind, k.name)),
            _ => None,
        })
        .collect();
    assert_eq!(deleted, vec!["TiKVGroup t".to_owned()]);
    kube.clear_calls();
    run(vec![group(Kind::PD, "pd", 3, 3)], BTreeMap::new()).await;
    assert!(matches!(&kube.calls()[0], KubeCall::Delete(k) if k.kind == "PDGroup"));
    assert!(kube.get(&key).is_some());
    run(vec![], BTreeMap::new()).await;
    assert!(kube.get(&key).is_none(), "finalizer removed, Cluster gone");
}

/// The caches lag: a PD created a moment before the Cluster was deleted may
/// not be in them yet. The finalizer stays while the API server still holds
/// one of the Cluster's instances; with it gone, the PD could never finish
/// its removal and would hold its namespace forever.
#[tokio::test]
async fn a_deleted_cluster_keeps_its_finalizer_while_the_api_server_holds_an_instance_the_caches_miss()
 {
    let kube = FakeKube::new();
    let key = ObjectKey::new::<Cluster>(Some("ns"), "basic");
    kube.insert(
        key.clone(),
        serde_json::to_value(cluster(None, true)).unwrap(),
    );
    let pd_key = ObjectKey::new::<tikv_operator_api::PD>(Some("ns"), "pd-abc123");
    kube.insert(
        pd_key.clone(),
        json!({
            "apiVersion": "core.tikv.org/v1alpha1",
            "kind": "PD",
            "metadata": {"name": "pd-abc123", "namespace": "ns",
                         "finalizers": [labels::FINALIZER]},
            "spec": {"cluster": {"name": "basic"}, "version": "v8.5.5"},
        }),
    );
    // Another Cluster's PD in the namespace does not hold this one.
    kube.insert(
        ObjectKey::new::<tikv_operator_api::PD>(Some("ns"), "pd-other"),
        json!({
            "apiVersion": "core.tikv.org/v1alpha1",
            "kind": "PD",
            "metadata": {"name": "pd-other", "namespace": "ns"},
            "spec": {"cluster": {"name": "other"}, "version": "v8.5.5"},
        }),
    );
    let c: Cluster = kube.get_typed(&key).unwrap();
    let pd = unreachable();
    let nothing_cached = BTreeMap::new();
    let snapshot = ClusterSnapshot {
        cluster: &c,
        groups: &[],
        instances_left: &nothing_cached,
        pd: &pd,
    };
    let requeue = reconcile_cluster(&ctx(&kube), &snapshot).await.unwrap();
    assert!(
        kube.get(&key).is_some(),
        "the Cluster went while its PD exists"
    );
    assert_ne!(requeue, Requeue::AwaitChange, "it must look again");
    kube.remove(&pd_key);
    reconcile_cluster(&ctx(&kube), &snapshot).await.unwrap();
    assert!(kube.get(&key).is_none(), "finalizer removed, Cluster gone");
}
