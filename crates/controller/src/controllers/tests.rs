#![allow(clippy::unwrap_used)]
use super::*;
use pd_client::StoreId;
use std::collections::BTreeSet;
use std::sync::atomic::AtomicUsize;
use tikv_operator_core::fake::FakeKube;
use tikv_operator_core::pd_state::RefreshPolicy;

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
    let metrics = Arc::new(Metrics::unregistered());
    let factory: pd_registry::PdFactory = Arc::new(|_: &str| {
        Err(pd_client::PdError::Unavailable {
            message: "no PD in this test".into(),
            source: None,
        })
    });
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
    (shared, pod_writer, kube)
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
