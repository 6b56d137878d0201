#![allow(clippy::unwrap_used)]
use super::adapters::tikv_pd_entry;
use super::*;
use pd_client::StoreId;
use std::collections::BTreeSet;
use std::sync::atomic::AtomicUsize;
use tikv_operator_core::fake::FakeKube;
use tikv_operator_core::pd_state::RefreshPolicy;

use crate::pd_registry::{ClientTls, TlsMaterial};
use crate::secrets::{FakeSecrets, SecretRead};
use crate::test_pki;

fn empty_store<K>() -> Store<K>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    let (store, mut writer) = reflector::store::<K>();
    writer.apply_watcher_event(&watcher::Event::Init);
    writer.apply_watcher_event(&watcher::Event::InitDone);
    store
}

/// A scope with empty caches except Pods, fed by the returned writer.
fn scope() -> (Arc<Shared>, reflector::store::Writer<Pod>, FakeKube) {
    let (pods, mut pod_writer) = reflector::store::<Pod>();
    pod_writer.apply_watcher_event(&watcher::Event::Init);
    pod_writer.apply_watcher_event(&watcher::Event::InitDone);
    let stores = Stores {
        clusters: empty_store(),
        pd_groups: empty_store(),
        pds: empty_store(),
        tikv_groups: empty_store(),
        tikvs: empty_store(),
        pods,
        config_maps: empty_store(),
        pvcs: empty_store(),
        services: empty_store(),
        revisions: empty_store(),
        nodes: empty_store(),
    };
    let factory: pd_registry::PdFactory = Arc::new(|_: &str, _| {
        Err(pd_client::PdError::Unavailable {
            message: "no PD in this test".into(),
            source: None,
        })
    });
    let (shared, kube) = shared_of(stores, factory, Arc::default());
    (shared, pod_writer, kube)
}

fn shared_of(
    stores: Stores,
    factory: pd_registry::PdFactory,
    secrets: Arc<FakeSecrets>,
) -> (Arc<Shared>, FakeKube) {
    let metrics = Arc::new(Metrics::unregistered());
    let on_change: OnChange =
        Arc::new(|_: &str, _: &str, _: &BTreeSet<String>, _: &BTreeSet<StoreId>| {});
    let ledger = Arc::new(WriteLedger::default());
    let kube = FakeKube::new();
    let shared = Arc::new(Shared {
        ctx: Ctx {
            kube: Arc::new(LedgerWriter::new(kube.clone(), ledger.clone())),
            clock: Arc::new(SystemClock),
            policy: RequeuePolicy::default(),
        },
        stores,
        registry: Arc::new(PdRegistry::new(
            factory,
            secrets,
            RefreshPolicy::default(),
            metrics.clone(),
            on_change,
        )),
        metrics,
        config: Config::default(),
        failures: Mutex::new(HashMap::new()),
        ledger,
        group_locks: Mutex::new(HashMap::new()),
    });
    (shared, kube)
}

fn pod(name: &str, uid: &str) -> Pod {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "namespace": "ns", "uid": uid},
        "status": {"conditions": [{"type": "Ready", "status": "True"}]}
    }))
    .unwrap()
}

/// The object a reconcile is for (its kind does not matter to the gate).
fn group(name: &str) -> Arc<ConfigMap> {
    Arc::new(ConfigMap {
        metadata: kube::api::ObjectMeta {
            name: Some(name.into()),
            namespace: Some("ns".into()),
            ..Default::default()
        },
        ..Default::default()
    })
}

/// A cache that shows the object as it was dispatched.
fn as_dispatched(o: &ConfigMap) -> Option<Arc<ConfigMap>> {
    Some(Arc::new(o.clone()))
}

async fn run(sh: &Arc<Shared>, controller: &'static str, ran: &Arc<AtomicUsize>) -> Action {
    let ran = ran.clone();
    observed(
        controller,
        group("pd"),
        sh.clone(),
        as_dispatched,
        move |_, _| async move {
            ran.fetch_add(1, Ordering::SeqCst);
            Ok(Action::await_change())
        },
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn no_reconcile_runs_until_the_cache_shows_the_pod_it_deleted() {
    let (sh, mut pods, kube) = scope();
    pods.apply_watcher_event(&watcher::Event::Apply(pod("pd-a", "u1")));
    let ran = Arc::new(AtomicUsize::new(0));
    // The operator deletes pd-a; the cache still shows it running.
    let key = ObjectKey::new::<Pod>(Some("ns"), "pd-a");
    kube.insert(
        key.clone(),
        serde_json::to_value(pod("pd-a", "u1")).unwrap(),
    );
    sh.ctx.kube.delete_exact(&key, "u1").await.unwrap();
    assert_eq!(sh.ledger.len(), 1);
    for controller in ["pdgroup", "pd", "tikvgroup", "tikv", "cluster"] {
        assert_eq!(
            run(&sh, controller, &ran).await,
            Action::requeue(CACHE_LAG_RETRY),
            "{controller}"
        );
    }
    assert_eq!(
        ran.load(Ordering::SeqCst),
        0,
        "no reconcile ran on the stale cache"
    );
    // Another namespace is not held up.
    let other = ran.clone();
    let mut g = (*group("pd")).clone();
    g.metadata.namespace = Some("elsewhere".into());
    observed(
        "pdgroup",
        Arc::new(g),
        sh.clone(),
        as_dispatched,
        move |_, _| async move {
            other.fetch_add(1, Ordering::SeqCst);
            Ok(Action::await_change())
        },
    )
    .await
    .unwrap();
    assert_eq!(ran.load(Ordering::SeqCst), 1);
    // The deletion reaches the cache: reconciles run again.
    pods.apply_watcher_event(&watcher::Event::Delete(pod("pd-a", "u1")));
    assert_eq!(run(&sh, "pdgroup", &ran).await, Action::await_change());
    assert_eq!(ran.load(Ordering::SeqCst), 2);
    assert!(sh.ledger.is_empty());
}

#[tokio::test]
async fn group_reconciles_of_a_namespace_never_overlap() {
    let (sh, _pods, _kube) = scope();
    let active = Arc::new(AtomicUsize::new(0));
    let max = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for controller in ["pdgroup", "tikvgroup", "pdgroup", "tikvgroup"] {
        let (sh, active, max) = (sh.clone(), active.clone(), max.clone());
        tasks.push(tokio::spawn(async move {
            observed(
                controller,
                group("g"),
                sh,
                as_dispatched,
                move |_, _| async move {
                    let now = active.fetch_add(1, Ordering::SeqCst) + 1;
                    max.fetch_max(now, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    active.fetch_sub(1, Ordering::SeqCst);
                    Ok(Action::await_change())
                },
            )
            .await
            .unwrap()
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(
        max.load(Ordering::SeqCst),
        1,
        "two group reconciles overlapped"
    );
    // Instance reconciles are not serialised.
    let mut tasks = Vec::new();
    for _ in 0..3 {
        let (sh, active, max) = (sh.clone(), active.clone(), max.clone());
        tasks.push(tokio::spawn(async move {
            observed(
                "tikv",
                group("g"),
                sh,
                as_dispatched,
                move |_, _| async move {
                    let now = active.fetch_add(1, Ordering::SeqCst) + 1;
                    max.fetch_max(now, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    active.fetch_sub(1, Ordering::SeqCst);
                    Ok(Action::await_change())
                },
            )
            .await
            .unwrap()
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert!(
        max.load(Ordering::SeqCst) > 1,
        "instance reconciles ran one at a time"
    );
}

#[tokio::test]
async fn a_reconcile_decides_on_the_cached_object_not_the_dispatched_copy() {
    let (sh, _pods, _kube) = scope();
    // Dispatched with an older copy; by the time it runs, the cache holds
    // a newer one (e.g. the status this operator wrote last).
    let mut newer = (*group("g")).clone();
    newer.data = Some([("status".to_owned(), "written".to_owned())].into());
    let newer = Arc::new(newer);
    let seen = Arc::new(Mutex::new(None::<Arc<ConfigMap>>));
    let got = seen.clone();
    let cached = newer.clone();
    observed(
        "tikvgroup",
        group("g"),
        sh.clone(),
        move |_| Some(cached),
        move |o, _| async move {
            *got.lock().unwrap() = Some(o);
            Ok(Action::await_change())
        },
    )
    .await
    .unwrap();
    assert_eq!(seen.lock().unwrap().as_deref(), Some(newer.as_ref()));
    // Gone from the cache: nothing runs.
    let ran = Arc::new(AtomicUsize::new(0));
    let r = ran.clone();
    let action = observed(
        "tikvgroup",
        group("g"),
        sh,
        |_| None,
        move |_, _| async move {
            r.fetch_add(1, Ordering::SeqCst);
            Ok(Action::await_change())
        },
    )
    .await
    .unwrap();
    assert_eq!(action, Action::await_change());
    assert_eq!(ran.load(Ordering::SeqCst), 0);
}

fn from_json<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> T {
    serde_json::from_value(v).unwrap()
}

fn tls_cluster(name: &str, tls: serde_json::Value) -> Cluster {
    from_json(serde_json::json!({
        "apiVersion": "core.tikv.org/v1alpha1", "kind": "Cluster",
        "metadata": {"name": name, "namespace": "ns"},
        "spec": {"tlsCluster": tls},
    }))
}

fn pd_group(name: &str, cluster: &str, tls_secret: Option<&str>) -> PDGroup {
    let mut spec = serde_json::json!({"version": "v8.5.5", "volumes": [{"name": "data", "mounts": [{"type": "data"}], "storage": "1Gi"}]});
    if let Some(s) = tls_secret {
        spec["tlsSecretName"] = serde_json::json!(s);
    }
    from_json(serde_json::json!({
        "apiVersion": "core.tikv.org/v1alpha1", "kind": "PDGroup",
        "metadata": {"name": name, "namespace": "ns"},
        "spec": {"cluster": {"name": cluster}, "replicas": 3, "template": {"spec": spec}},
    }))
}

fn store_of<K>(objs: Vec<K>) -> (Store<K>, reflector::store::Writer<K>)
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    let (store, mut writer) = reflector::store::<K>();
    writer.apply_watcher_event(&watcher::Event::Init);
    for o in objs {
        writer.apply_watcher_event(&watcher::Event::InitApply(o));
    }
    writer.apply_watcher_event(&watcher::Event::InitDone);
    (store, writer)
}

type Made = Arc<Mutex<Vec<(String, Option<TlsMaterial>)>>>;

/// A scope holding `clusters` and `pd_groups`, whose PD clients are fakes
/// (recorded in the returned list).
fn tls_scope(
    clusters: Vec<Cluster>,
    pd_groups: Vec<PDGroup>,
    secrets: Arc<FakeSecrets>,
) -> (Arc<Shared>, reflector::store::Writer<Cluster>, Made) {
    let (clusters, cluster_writer) = store_of(clusters);
    let stores = Stores {
        clusters,
        pd_groups: store_of(pd_groups).0,
        pds: empty_store(),
        tikv_groups: empty_store(),
        tikvs: empty_store(),
        pods: empty_store(),
        config_maps: empty_store(),
        pvcs: empty_store(),
        services: empty_store(),
        revisions: empty_store(),
        nodes: empty_store(),
    };
    let made: Made = Arc::default();
    let seen = made.clone();
    let factory: pd_registry::PdFactory = Arc::new(move |e: &str, tls: Option<&ClientTls>| {
        seen.lock()
            .unwrap()
            .push((e.to_owned(), tls.map(|t| t.material.clone())));
        Ok(Arc::new(pd_client::FakePd::with_cluster(1, 0)) as Arc<dyn pd_client::PdApi>)
    });
    let (shared, _kube) = shared_of(stores, factory, secrets);
    (shared, cluster_writer, made)
}

#[tokio::test]
async fn a_tls_cluster_without_its_client_secret_has_no_pd_access_and_says_why() {
    let secrets = Arc::new(FakeSecrets::default());
    let (sh, _clusters, made) = tls_scope(
        vec![tls_cluster("basic", serde_json::json!({"enabled": true}))],
        vec![pd_group("pd", "basic", None)],
        secrets.clone(),
    );
    let e = sh.pd_entry("ns", "basic", None).unwrap_err();
    let e = pd_access_error(e);
    assert_eq!(e.category(), "invalid_spec");
    assert!(
        e.to_string()
            .contains("the PD client TLS Secret ns/basic-client-tls does not exist"),
        "{e}"
    );
    // The TiKV objects' PD access says the same (no plaintext fallback on
    // the published URL either).
    let cluster = sh.stores.cluster("ns", "basic");
    assert!(tikv_pd_entry(&sh, "ns", cluster.as_deref(), "basic").is_err());
    assert!(made.lock().unwrap().is_empty(), "a PD client was built");

    // The Secret appears: a TLS client to the https URL.
    let ca = test_pki::ca();
    secrets.set(
        "ns",
        test_pki::SECRET,
        SecretRead::Present(Arc::new(test_pki::client_secret(&ca, "1"))),
    );
    let e = sh.pd_entry("ns", "basic", None).unwrap().unwrap();
    assert!(e.is_tls());
    let made = made.lock().unwrap();
    assert_eq!(made.len(), 1);
    assert_eq!(made[0].0, "https://pd-pd.ns.svc:2379");
    assert!(made[0].1.is_some());
}

#[tokio::test]
async fn a_plaintext_cluster_keeps_its_plaintext_client() {
    let secrets = Arc::new(FakeSecrets::default());
    let mut plain = tls_cluster("basic", serde_json::json!({"enabled": false}));
    plain.spec.tls_cluster = None;
    let (sh, _clusters, made) = tls_scope(
        vec![plain],
        vec![pd_group("pd", "basic", None)],
        secrets.clone(),
    );
    let e = sh.pd_entry("ns", "basic", None).unwrap().unwrap();
    assert!(!e.is_tls());
    assert_eq!(
        *made.lock().unwrap(),
        vec![("http://pd-pd.ns.svc:2379".to_owned(), None)]
    );
    assert!(secrets.users("ns", test_pki::SECRET).is_empty());
}

#[tokio::test]
async fn a_tls_client_is_never_replaced_by_a_plaintext_one_when_the_cluster_leaves_the_cache() {
    let secrets = Arc::new(FakeSecrets::default());
    let ca = test_pki::ca();
    secrets.set(
        "ns",
        test_pki::SECRET,
        SecretRead::Present(Arc::new(test_pki::client_secret(&ca, "1"))),
    );
    let cluster = tls_cluster("basic", serde_json::json!({"enabled": true}));
    let (sh, mut clusters, made) = tls_scope(
        vec![cluster.clone()],
        vec![pd_group("pd", "basic", None)],
        secrets,
    );
    let a = sh.pd_entry("ns", "basic", None).unwrap().unwrap();
    clusters.apply_watcher_event(&watcher::Event::Delete(cluster));
    let b = sh.pd_entry("ns", "basic", None).unwrap().unwrap();
    assert!(Arc::ptr_eq(&a, &b));
    assert!(b.is_tls());
    assert_eq!(made.lock().unwrap().len(), 1);
}

#[test]
fn a_secret_change_wakes_the_tls_clusters_that_use_it() {
    let (sh, _clusters, _made) = tls_scope(
        vec![
            tls_cluster("a", serde_json::json!({"enabled": true})),
            tls_cluster(
                "b",
                serde_json::json!({"enabled": true, "clientSecretName": "shared"}),
            ),
            tls_cluster(
                "c",
                serde_json::json!({"enabled": false, "clientSecretName": "shared"}),
            ),
            tls_cluster("d", serde_json::json!({"enabled": true})),
        ],
        vec![
            pd_group("pd", "d", None),
            pd_group("other", "b", Some("custom-pd")),
        ],
        Arc::default(),
    );
    let st = &sh.stores;
    assert_eq!(st.clusters_using_secret("ns", "a-client-tls"), ["a"]);
    assert_eq!(st.clusters_using_secret("ns", "shared"), ["b"]);
    assert_eq!(st.clusters_using_secret("ns", "pd-pd-tls"), ["d"]);
    assert_eq!(st.clusters_using_secret("ns", "custom-pd"), ["b"]);
    assert!(st.clusters_using_secret("ns", "other-pd-tls").is_empty());
    assert!(
        st.clusters_using_secret("elsewhere", "a-client-tls")
            .is_empty()
    );
    assert!(st.clusters_using_secret("ns", "unrelated").is_empty());
}

#[test]
fn a_refused_client_secret_waits_for_the_user_and_one_not_read_yet_is_retried() {
    let missing = pd_access_error(PdAccessError::SecretMissing {
        namespace: "ns".into(),
        secret: "basic-client-tls".into(),
    });
    assert_eq!(missing.category(), "invalid_spec");
    assert!(!missing.is_transient());
    let not_read = pd_access_error(PdAccessError::SecretNotRead {
        namespace: "ns".into(),
        secret: "basic-client-tls".into(),
        why: None,
    });
    assert!(not_read.is_transient(), "{not_read}");
    assert!(
        not_read
            .to_string()
            .contains("ns/basic-client-tls is not read yet")
    );
}
