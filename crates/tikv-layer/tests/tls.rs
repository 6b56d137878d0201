//! TLS: a TiKVGroup of a Cluster speaking TLS creates or updates no store
//! while its Secret is refused, and creates stores speaking TLS once it
//! passes.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use tikv_operator_core::fake::pki::TestCa;
use tikv_operator_core::tls;

const PEER: &str = "*.kv-tikv-peer.ns.svc";

fn tls_world(replicas: i32) -> World {
    let mut w = World::new(replicas);
    w.cluster.tls = true;
    w.cluster.pd_url = Some("https://pd-pd.ns.svc:2379".into());
    w
}

fn synced(w: &World) -> (String, String, String) {
    w.group_condition(condition::SYNCED)
}

/// Refused with `reason`: Synced and Ready False with it, a Warning Event,
/// the Secret polled soon.
fn assert_refused(w: &World, reason: &str, requeue: Requeue) {
    let (status, r, message) = synced(w);
    assert_eq!(
        (status.as_str(), r.as_str()),
        ("False", reason),
        "{message}"
    );
    let (status, r, _) = w.group_condition(condition::READY);
    assert_eq!((status.as_str(), r.as_str()), ("False", reason));
    assert!(
        w.kube
            .events()
            .iter()
            .any(|e| e.type_ == tikv_operator_core::EventType::Warning && e.reason == reason),
        "{:?}",
        w.kube.events()
    );
    assert!(
        matches!(requeue, Requeue::After(d) if d <= tls::RECHECK),
        "{requeue:?}"
    );
}

#[tokio::test]
async fn no_store_is_created_until_the_secret_passes() {
    let mut w = tls_world(3);
    let r = w.reconcile_group().await;
    assert!(w.instances().is_empty());
    assert_refused(&w, tls::SECRET_MISSING, r);
    assert!(synced(&w).2.contains("ns/kv-tikv-tls"), "{}", synced(&w).2);

    let ca = TestCa::new("ca");
    let other = TestCa::new("other");
    w.kube
        .insert_tls_secret(NS, "kv-tikv-tls", &ca.pem(), &other.member(&[PEER]));
    let r = w.reconcile_group().await;
    assert!(w.instances().is_empty());
    assert_refused(&w, tls::SECRET_INVALID, r);

    w.kube
        .insert_tls_secret(NS, "kv-tikv-tls", &ca.pem(), &ca.member(&[PEER]));
    w.reconcile_group().await;
    let instances = w.instances();
    assert_eq!(instances.len(), 3);
    assert!(instances.iter().all(|i| i.spec.tls_cluster));
    assert_eq!(synced(&w).0, "True");
    let name = &w.instance_names()[0];
    w.reconcile_instance(name).await;
    let cm: ConfigMap = w
        .kube
        .get_typed(&ObjectKey::new::<ConfigMap>(Some(NS), name))
        .unwrap();
    let cfg: toml::Table = cm.data.unwrap()["tikv.toml"].parse().unwrap();
    assert_eq!(
        cfg["pd"]["endpoints"][0].as_str(),
        Some("https://pd-pd.ns.svc:2379")
    );
    assert_eq!(
        cfg["security"]["cert-path"].as_str(),
        Some("/var/lib/tikv-tls/tls.crt")
    );
}

/// A certificate that covers no store: the stores the group would create
/// are named, with the wildcard that covers them all.
#[tokio::test]
async fn a_store_the_certificate_does_not_cover_is_not_created() {
    let mut w = tls_world(3);
    let ca = TestCa::new("ca");
    w.kube.insert_tls_secret(
        NS,
        "kv-tikv-tls",
        &ca.pem(),
        &ca.member(&["*.other-tikv-peer.ns.svc"]),
    );
    let r = w.reconcile_group().await;
    assert!(w.instances().is_empty());
    assert_refused(&w, tls::CERTIFICATE_MISSING_SAN, r);
    assert!(synced(&w).2.contains(PEER), "{}", synced(&w).2);
}

/// The template's Secret name is the one read; a broken Secret keeps a
/// template change from every store, and nothing is deleted.
#[tokio::test]
async fn a_broken_secret_keeps_template_changes_from_the_stores() {
    let mut w = tls_world(3);
    let ca = TestCa::new("ca");
    let mut g = w.kube.get(&group_key()).unwrap();
    g["spec"]["template"]["spec"]["tlsSecretName"] = "mine".into();
    w.kube.insert(group_key(), g);
    w.kube
        .insert_tls_secret(NS, "mine", &ca.pem(), &ca.member(&[PEER]));
    w.reconcile_group().await;
    assert_eq!(w.instances().len(), 3);

    w.kube
        .remove(&ObjectKey::new::<k8s_openapi::api::core::v1::Secret>(
            Some(NS),
            "mine",
        ));
    let mut g = w.kube.get(&group_key()).unwrap();
    g["spec"]["template"]["spec"]["config"] = "[log]\nlevel = \"debug\"\n".into();
    w.kube.insert(group_key(), g);
    w.kube.clear_calls();
    let r = w.reconcile_group().await;
    assert_refused(&w, tls::SECRET_MISSING, r);
    assert!(synced(&w).2.contains("ns/mine"), "{}", synced(&w).2);
    assert!(w.deletes().is_empty());
    assert!(
        w.instances()
            .iter()
            .all(|i| i.spec.template.config.is_none())
    );

    w.kube
        .insert_tls_secret(NS, "mine", &ca.pem(), &ca.member(&[PEER]));
    w.reconcile_group().await;
    assert_eq!(synced(&w).0, "True");
    assert!(
        w.instances()
            .iter()
            .all(|i| i.spec.template.config.is_some())
    );
}
