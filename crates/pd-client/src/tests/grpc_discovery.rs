//! gRPC reads and leader discovery against in-process PD members.

use std::time::{Duration, Instant};

use super::mock::{MockCluster, lock};
use super::{client, config};
use crate::proto::metapb;
use crate::{ClusterId, NodeState, PdApi, PdClient, PdError, StoreId, StoreState};

const CLUSTER: u64 = 7_283_645_296_542_118_389;

#[tokio::test]
async fn discovers_leader_and_cluster_id_from_any_seed() {
    let pd = MockCluster::start(&["pd-0", "pd-1", "pd-2"], CLUSTER).await;
    pd.set_leader("pd-1");
    // Seeded with a follower only.
    let c = client(vec![pd.url(2)]).await;
    assert_eq!(c.known_cluster_id(), Some(ClusterId(CLUSTER)));
    assert_eq!(c.current_leader_url(), Some(pd.url(1)));

    let members = c.members().await.unwrap();
    assert_eq!(members.cluster_id, ClusterId(CLUSTER));
    assert_eq!(members.members.len(), 3);
    assert!(members.is_leader("pd-1"));
    assert_eq!(members.members[0].id.get(), 1 << 60, "u64 id exact");

    assert!(c.is_bootstrapped().await.unwrap());
    // Served by the leader, with our cluster id in the request header.
    let calls = pd.requests("grpc IsBootstrapped");
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].member, "pd-1");
    assert!(
        calls[0].body.contains(&CLUSTER.to_string()),
        "{}",
        calls[0].body
    );
}

#[tokio::test]
async fn grpc_store_reads_convert_states() {
    let pd = MockCluster::start(&["pd-0"], CLUSTER).await;
    lock(&pd.shared).stores = vec![
        metapb::Store {
            id: 1,
            address: "tikv-0:20160".into(),
            node_state: metapb::NodeState::Serving as i32,
            labels: vec![metapb::StoreLabel {
                key: "zone".into(),
                value: "a".into(),
            }],
            ..Default::default()
        },
        metapb::Store {
            id: 2,
            state: metapb::StoreState::Tombstone as i32,
            node_state: metapb::NodeState::Removed as i32,
            ..Default::default()
        },
        // An old PD: Offline without node_state.
        metapb::Store {
            id: 3,
            state: metapb::StoreState::Offline as i32,
            ..Default::default()
        },
    ];
    let c = client(vec![pd.url(0)]).await;
    let s = c.store_via_grpc(StoreId(1)).await.unwrap();
    assert_eq!(
        (s.state, s.node_state),
        (StoreState::Up, NodeState::Serving)
    );
    assert_eq!(s.region_count, 42);
    assert_eq!(s.capacity_bytes, Some(1 << 40));
    assert_eq!(s.labels.get("zone").map(String::as_str), Some("a"));
    assert_eq!(s.leader_count, None);

    let err = c.store_via_grpc(StoreId(9)).await.unwrap_err();
    assert!(matches!(err, PdError::NotFound { .. }), "{err:?}");

    let all = c.stores_via_grpc(false).await.unwrap();
    assert_eq!(all.len(), 3);
    assert_eq!(all[2].node_state, NodeState::Removing);
    let live = c.stores_via_grpc(true).await.unwrap();
    assert_eq!(live.iter().map(|s| s.id.get()).collect::<Vec<_>>(), [1, 3]);

    // A PD from before node states sends none: its Up stores serve.
    lock(&pd.shared).stores = vec![
        metapb::Store {
            id: 1,
            ..Default::default()
        },
        metapb::Store {
            id: 3,
            state: metapb::StoreState::Offline as i32,
            ..Default::default()
        },
    ];
    let old = c.stores_via_grpc(false).await.unwrap();
    assert_eq!(
        old.iter().map(|s| s.node_state).collect::<Vec<_>>(),
        [NodeState::Serving, NodeState::Removing]
    );
}

#[tokio::test]
async fn leader_change_mid_call_is_followed() {
    let pd = MockCluster::start(&["pd-0", "pd-1", "pd-2"], CLUSTER).await;
    let c = client(vec![pd.url(0)]).await;
    assert_eq!(c.current_leader_url(), Some(pd.url(0)));
    // The next call reaches pd-0, which loses leadership to pd-2 while
    // handling it and answers "not leader".
    lock(&pd.shared).move_leader_on_call = Some("pd-2".into());
    assert!(c.is_bootstrapped().await.unwrap());
    let calls = pd.requests("grpc IsBootstrapped");
    let served_by: Vec<_> = calls.iter().map(|l| l.member.as_str()).collect();
    assert_eq!(served_by, ["pd-0", "pd-2"]);
    assert_eq!(c.current_leader_url(), Some(pd.url(2)));
}

#[tokio::test]
async fn seeds_of_different_clusters_are_refused() {
    let pd = MockCluster::start(&["pd-0", "pd-1"], CLUSTER).await;
    lock(&pd.shared)
        .cluster_ids
        .insert("pd-1".into(), CLUSTER + 1);
    let err = PdClient::connect(config(vec![pd.url(0), pd.url(1)]))
        .await
        .unwrap_err();
    match err {
        PdError::ClusterIdMismatch { expected, got } => {
            assert_eq!(
                (expected, got),
                (ClusterId(CLUSTER), ClusterId(CLUSTER + 1))
            );
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn response_with_other_cluster_id_is_an_error_and_not_retried() {
    let pd = MockCluster::start(&["pd-0"], CLUSTER).await;
    let c = client(vec![pd.url(0)]).await;
    lock(&pd.shared).answer_cluster_id = Some(99);
    let err = c.is_bootstrapped().await.unwrap_err();
    assert_eq!(err.category(), "cluster_id_mismatch");
    assert!(!err.is_retryable());
    assert_eq!(pd.requests("grpc IsBootstrapped").len(), 1);
}

#[tokio::test]
async fn pd_replaced_by_another_cluster_is_detected_at_rediscovery() {
    let pd = MockCluster::start(&["pd-0"], CLUSTER).await;
    let c = client(vec![pd.url(0)]).await;
    // The same address now belongs to a different cluster (e.g. PD data wiped).
    lock(&pd.shared).cluster_ids.insert("pd-0".into(), 5);
    let err = c.refresh_members().await.unwrap_err();
    assert!(
        matches!(err, PdError::ClusterIdMismatch { expected, got } if expected == ClusterId(CLUSTER) && got == ClusterId(5)),
        "{err:?}"
    );
    // Calls are refused by PD (FailedPrecondition) and surface as mismatch too.
    let err = c.is_bootstrapped().await.unwrap_err();
    assert_eq!(err.category(), "cluster_id_mismatch", "{err:?}");
}

#[tokio::test]
async fn slow_leader_times_out_per_request() {
    let pd = MockCluster::start(&["pd-0"], CLUSTER).await;
    let mut cfg = config(vec![pd.url(0)]);
    cfg.request_timeout = Duration::from_millis(200);
    cfg.retry.max_attempts = 2;
    let c = PdClient::connect(cfg).await.unwrap();
    lock(&pd.shared)
        .grpc_delay
        .insert("pd-0".into(), Duration::from_secs(5));
    let started = Instant::now();
    let err = c.is_bootstrapped().await.unwrap_err();
    let elapsed = started.elapsed();
    assert!(matches!(err, PdError::Timeout { .. }), "{err:?}");
    assert!(err.is_retryable());
    // Two attempts (plus a re-discovery that also times out), well below the delay.
    assert!(elapsed < Duration::from_secs(2), "{elapsed:?}");
    assert!(elapsed >= Duration::from_millis(200), "{elapsed:?}");
}

#[tokio::test]
async fn unreachable_pd_is_unavailable() {
    // Bind and drop to get a port nobody listens on.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let c = PdClient::new(config(vec![format!("127.0.0.1:{port}")])).unwrap();
    let err = c.members().await.unwrap_err();
    assert_eq!(err.category(), "unavailable", "{err:?}");
    assert!(err.is_retryable());
}

#[tokio::test]
async fn one_live_seed_is_enough() {
    let pd = MockCluster::start(&["pd-0"], CLUSTER).await;
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let c = client(vec![dead, pd.url(0)]).await;
    assert_eq!(c.members().await.unwrap().members.len(), 1);
}

#[tokio::test]
async fn no_leader_is_retried_until_one_is_elected() {
    let pd = MockCluster::start(&["pd-0", "pd-1"], CLUSTER).await;
    let mut cfg = config(vec![pd.url(0)]);
    cfg.retry.max_attempts = 10;
    let c = PdClient::connect(cfg).await.unwrap();
    lock(&pd.shared).leader = None;
    let shared = pd.shared.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(30)).await;
        lock(&shared).leader = Some("pd-1".into());
    });
    assert!(c.is_bootstrapped().await.unwrap());
    assert_eq!(c.current_leader_url(), Some(pd.url(1)));
    // It did fail (and re-discover) before succeeding.
    assert!(pd.requests("grpc GetMembers").len() >= 3);
}

#[tokio::test]
async fn periodic_refresh_follows_leader_without_reconnecting() {
    let pd = MockCluster::start(&["pd-0", "pd-1"], CLUSTER).await;
    let cfg = config(vec![pd.url(0)]).with_member_refresh_interval(Duration::from_millis(50));
    let c = PdClient::connect(cfg).await.unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    // Several refreshes happened; each member was connected to once at most.
    assert!(pd.requests("grpc GetMembers").len() >= 6);
    let accepts = pd.total_accepts();
    assert!(
        accepts <= 2,
        "reconnected on unchanged membership: {accepts}"
    );

    pd.set_leader("pd-1");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(c.current_leader_url(), Some(pd.url(1)));
    assert!(pd.total_accepts() <= 2);
    drop(c);
    // Dropping the client stops the background refresh.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let before = pd.requests("grpc GetMembers").len();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(pd.requests("grpc GetMembers").len(), before);
}

#[tokio::test]
async fn bad_seed_url_is_a_config_error() {
    let err = PdClient::new(config(vec!["http://bad host:2379".into()])).unwrap_err();
    assert_eq!(err.category(), "config", "{err:?}");
    let err = PdClient::new(config(vec![])).unwrap_err();
    assert_eq!(err.category(), "config");
}
