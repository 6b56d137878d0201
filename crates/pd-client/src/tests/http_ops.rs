//! HTTP operations against in-process PD members with scripted answers.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use super::client;
use super::mock::{MockCluster, Scripted, reply};
use crate::{
    ClusterId, MemberId, NodeState, PdApi, PdError, Readiness, StoreId, StoreLiveness, StoreState,
};

const CLUSTER: u64 = 6_000_000_000_000_000_001;

async fn cluster() -> MockCluster {
    MockCluster::start(&["pd-0", "pd-1"], CLUSTER).await
}

const STORES: &str = r#"{"count":2,"stores":[
  {"store":{"id":1,"address":"tikv-0:20160","state_name":"Up"},
   "status":{"capacity":"1.5TiB","available":"512GiB","leader_count":12,"region_count":30,"uptime":"1h2m"}},
  {"store":{"id":2,"address":"tikv-1:20160","state":1,"node_state":2,"state_name":"Offline"},
   "status":{"leader_count":0,"region_count":3}}]}"#;

#[tokio::test]
async fn stores_503_then_success() {
    let pd = cluster().await;
    let c = client(vec![pd.url(0)]).await;
    pd.script(
        "GET /pd/api/v1/stores?state=0&state=1&state=2",
        vec![reply(503, r#""no leader""#), reply(200, STORES)],
    );
    let stores = c.stores().await.unwrap();
    assert_eq!(pd.requests("GET /pd/api/v1/stores").len(), 2);

    let s1 = &stores[0];
    assert_eq!(
        (s1.state, s1.node_state),
        (StoreState::Up, NodeState::Preparing)
    );
    assert_eq!(s1.leader_count, Some(12));
    assert_eq!(s1.region_count, 30);
    assert_eq!(s1.capacity_bytes, Some(1024u64.pow(4) * 3 / 2));
    assert_eq!(s1.available_bytes, Some(512 << 30));
    assert_eq!(s1.uptime, Some(Duration::from_secs(3720)));
    assert_eq!(s1.liveness, StoreLiveness::Alive);
    let s2 = &stores[1];
    assert_eq!(
        (s2.state, s2.node_state),
        (StoreState::Offline, NodeState::Removing)
    );
}

#[tokio::test]
async fn persistent_503_gives_up_as_unavailable() {
    let pd = cluster().await;
    let c = client(vec![pd.url(0)]).await;
    pd.script("GET /pd/api/v1/health", vec![reply(503, "no leader")]);
    let err = c.health().await.unwrap_err();
    assert_eq!(err.category(), "unavailable");
    // max_attempts = 4 in the test config.
    assert_eq!(pd.requests("GET /pd/api/v1/health").len(), 4);
    // Discovery ran between attempts.
    assert!(pd.requests("grpc GetMembers").len() >= 4);
}

#[tokio::test]
async fn http_follows_the_leader_after_a_change() {
    let pd = cluster().await;
    let c = client(vec![pd.url(0)]).await;
    // pd-0 stepped down and has no leader to proxy to; pd-1 is the new leader.
    pd.set_leader("pd-1");
    let leader_body = format!(
        r#"{{"name":"pd-1","member_id":{},"client_urls":["{}"]}}"#,
        (1u64 << 60) + 1,
        pd.url(1)
    );
    pd.script("GET /pd/api/v1/leader", vec![reply(200, &leader_body)]);
    // Both members share the script table: make pd-0 fail by checking who served.
    let first = c.leader().await.unwrap();
    assert_eq!(first.name, "pd-1");
    assert_eq!(first.id, MemberId((1 << 60) + 1));
    // The client still talks to pd-0 until an error says otherwise.
    let served: Vec<_> = pd
        .requests("GET /pd/api/v1/leader")
        .iter()
        .map(|l| l.member.clone())
        .collect();
    assert_eq!(served, ["pd-0"]);
    // After a 503, the re-discovered leader pd-1 serves.
    pd.script(
        "GET /pd/api/v1/health",
        vec![reply(503, "no leader"), reply(200, "[]")],
    );
    c.health().await.unwrap();
    let served: Vec<_> = pd
        .requests("GET /pd/api/v1/health")
        .iter()
        .map(|l| l.member.clone())
        .collect();
    assert_eq!(served, ["pd-0", "pd-1"]);
}

#[tokio::test]
async fn http_timeout() {
    let pd = cluster().await;
    let mut cfg = super::config(vec![pd.url(0)]);
    cfg.request_timeout = Duration::from_millis(150);
    cfg.retry.max_attempts = 1;
    let c = crate::PdClient::connect(cfg).await.unwrap();
    pd.script(
        "GET /pd/api/v1/config",
        vec![Scripted {
            status: 200,
            body: "{}".into(),
            delay: Duration::from_secs(3),
        }],
    );
    let started = Instant::now();
    let err = c.replication_config().await.unwrap_err();
    assert!(matches!(err, PdError::Timeout { .. }), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(1));
}

#[tokio::test]
async fn delete_store_maps_statuses() {
    let pd = cluster().await;
    let c = client(vec![pd.url(0)]).await;
    pd.script(
        "DELETE /pd/api/v1/store/1",
        vec![reply(200, r#""The store is set as Offline.""#)],
    );
    c.delete_store(StoreId(1)).await.unwrap();

    pd.script(
        "DELETE /pd/api/v1/store/2",
        vec![reply(
            404,
            r#""[PD:core:ErrStoreNotFound]store id 2 not found""#,
        )],
    );
    let err = c.delete_store(StoreId(2)).await.unwrap_err();
    assert!(matches!(err, PdError::NotFound { .. }), "{err:?}");
    assert!(err.is_already_gone());

    pd.script(
        "DELETE /pd/api/v1/store/3",
        vec![reply(
            410,
            r#""[PD:core:ErrStoreRemoved]store 3 has been removed""#,
        )],
    );
    let err = c.delete_store(StoreId(3)).await.unwrap_err();
    assert!(matches!(err, PdError::AlreadyRemoved { .. }), "{err:?}");

    let msg = "[PD:cluster:ErrStoresNotEnough]can not remove store 4 since the number of up stores would be 2 while need 3";
    pd.script(
        "DELETE /pd/api/v1/store/4",
        vec![reply(400, &format!("{msg:?}"))],
    );
    match c.delete_store(StoreId(4)).await.unwrap_err() {
        PdError::Rejected {
            operation,
            status,
            message,
        } => {
            assert_eq!(operation, "delete_store");
            assert_eq!(status, Some(400));
            assert_eq!(message, msg);
        }
        other => panic!("unexpected {other:?}"),
    }
    // None of these were retried.
    assert_eq!(pd.requests("DELETE /pd/api/v1/store/4").len(), 1);
}

#[tokio::test]
async fn store_and_member_operations_send_pd_requests() {
    let pd = cluster().await;
    let c = client(vec![pd.url(0)]).await;
    for line in [
        "POST /pd/api/v1/store/5/state?state=Up",
        "POST /pd/api/v1/store/5/label",
        "DELETE /pd/api/v1/store/5/label",
        "POST /pd/api/v1/schedulers",
        "DELETE /pd/api/v1/schedulers/evict-leader-scheduler-5",
        "POST /pd/api/v1/leader/transfer/pd-1",
    ] {
        pd.script(line, vec![reply(200, r#""ok""#)]);
    }
    pd.script("GET /pd/api/v1/schedulers", vec![reply(200, SCHEDULERS)]);
    c.cancel_store_removal(StoreId(5)).await.unwrap();
    let labels = BTreeMap::from([("zone".to_owned(), "z1".to_owned())]);
    c.set_store_labels(StoreId(5), &labels).await.unwrap();
    c.delete_store_label(StoreId(5), "zone").await.unwrap();
    c.add_evict_leader(StoreId(5)).await.unwrap();
    c.remove_evict_leader(StoreId(5)).await.unwrap();
    c.transfer_leader("pd-1").await.unwrap();

    let body = |line: &str| -> serde_json::Value {
        let logged = pd.requests(line);
        assert_eq!(logged.len(), 1, "{line}");
        serde_json::from_str(&logged[0].body).unwrap()
    };
    assert_eq!(
        body("POST /pd/api/v1/store/5/label"),
        serde_json::json!({"zone": "z1"})
    );
    assert_eq!(
        body("DELETE /pd/api/v1/store/5/label"),
        serde_json::json!("zone")
    );
    assert_eq!(
        body("POST /pd/api/v1/schedulers"),
        serde_json::json!({"name": "evict-leader-scheduler", "store_id": 5})
    );
    assert_eq!(
        pd.requests("POST /pd/api/v1/store/5/state?state=Up").len(),
        1
    );
    assert_eq!(pd.requests("POST /pd/api/v1/leader/transfer/pd-1").len(), 1);
}

/// What a PD leader that runs its schedulers lists.
const SCHEDULERS: &str = r#"["balance-leader-scheduler","balance-region-scheduler"]"#;

#[tokio::test]
async fn idempotent_removals() {
    let pd = cluster().await;
    let c = client(vec![pd.url(0)]).await;
    pd.script("GET /pd/api/v1/schedulers", vec![reply(200, SCHEDULERS)]);
    // Removing an evict-leader scheduler that does not exist.
    pd.script(
        "DELETE /pd/api/v1/schedulers/evict-leader-scheduler-6",
        vec![reply(404, r#""scheduler not found""#)],
    );
    c.remove_evict_leader(StoreId(6)).await.unwrap();
    pd.script(
        "DELETE /pd/api/v1/schedulers/evict-leader-scheduler-7",
        vec![reply(
            500,
            r#""[PD:scheduler:ErrSchedulerNotFound]scheduler not found""#,
        )],
    );
    c.remove_evict_leader(StoreId(7)).await.unwrap();
    // Old PD refusing a second per-store scheduler.
    pd.script(
        "POST /pd/api/v1/schedulers",
        vec![reply(
            500,
            r#""[PD:scheduler:ErrSchedulerExisted]scheduler existed""#,
        )],
    );
    c.add_evict_leader(StoreId(6)).await.unwrap();
    // Deleting a label that is not there.
    pd.script(
        "DELETE /pd/api/v1/store/6/label",
        vec![reply(500, r#""the label key zone does not exist""#)],
    );
    c.delete_store_label(StoreId(6), "zone").await.unwrap();
    // Other failures are still errors.
    pd.script(
        "DELETE /pd/api/v1/store/7/label",
        vec![reply(500, r#""etcd write failed""#)],
    );
    assert_eq!(
        c.delete_store_label(StoreId(7), "zone")
            .await
            .unwrap_err()
            .category(),
        "rejected"
    );
    // Member removal, by id: etcd's "member not found" (PD: 500) means
    // already gone.
    pd.script(
        "DELETE /pd/api/v1/members/id/9",
        vec![reply(500, r#""etcdserver: member not found""#)],
    );
    let err = c.remove_member(MemberId(9)).await.unwrap_err();
    assert!(err.is_already_gone(), "{err:?}");
    pd.script(
        "DELETE /pd/api/v1/members/id/1",
        vec![reply(200, r#""removed, pd: 1""#)],
    );
    c.remove_member(MemberId(1)).await.unwrap();
    pd.script(
        "DELETE /pd/api/v1/members/id/2",
        vec![reply(500, r#""etcdserver: re-configuration failed""#)],
    );
    assert_eq!(
        c.remove_member(MemberId(2)).await.unwrap_err().category(),
        "rejected"
    );
}

/// A new PD leader lists no scheduler until it has loaded them (after Region
/// heartbeats arrive) and answers 404 for every scheduler meanwhile: neither
/// may read as "no entry" or "already removed" (the persisted entry comes
/// back once PD loads it), and nothing may be added (it would overwrite the
/// persisted entries).
#[tokio::test]
async fn evict_leader_calls_wait_until_pd_loaded_its_schedulers() {
    let pd = cluster().await;
    let c = client(vec![pd.url(0)]).await;
    pd.script("GET /pd/api/v1/schedulers", vec![reply(200, "[]")]);
    pd.script(
        "DELETE /pd/api/v1/schedulers/evict-leader-scheduler-4",
        vec![reply(404, "404 page not found")],
    );
    pd.script("POST /pd/api/v1/schedulers", vec![reply(200, r#""ok""#)]);
    let err = c.remove_evict_leader(StoreId(4)).await.unwrap_err();
    assert_eq!(err.category(), "unavailable", "{err:?}");
    let err = c.add_evict_leader(StoreId(4)).await.unwrap_err();
    assert_eq!(err.category(), "unavailable", "{err:?}");
    let err = c.evicting_stores().await.unwrap_err();
    assert_eq!(err.category(), "unavailable", "{err:?}");
    assert!(
        pd.requests("DELETE /pd/api/v1/schedulers/evict-leader-scheduler-4")
            .is_empty()
    );
    assert!(pd.requests("POST /pd/api/v1/schedulers").is_empty());
    // Loaded: the same calls go through.
    pd.script("GET /pd/api/v1/schedulers", vec![reply(200, SCHEDULERS)]);
    pd.script(
        "DELETE /pd/api/v1/schedulers/evict-leader-scheduler-4",
        vec![reply(200, r#""ok""#)],
    );
    c.remove_evict_leader(StoreId(4)).await.unwrap();
    c.add_evict_leader(StoreId(4)).await.unwrap();
    assert!(c.evicting_stores().await.unwrap().is_empty());
}

#[tokio::test]
async fn evicting_stores_with_both_scheduler_styles() {
    let pd = cluster().await;
    let c = client(vec![pd.url(0)]).await;
    pd.script(
        "GET /pd/api/v1/schedulers",
        vec![reply(
            200,
            r#"["balance-leader-scheduler","evict-leader-scheduler-3","evict-leader-scheduler"]"#,
        )],
    );
    pd.script(
        "GET /pd/api/v1/scheduler-config/evict-leader-scheduler/list",
        vec![reply(
            200,
            r#"{"store-id-ranges":{"1":[{"start-key":"","end-key":""}],"8":[]},"batch":3}"#,
        )],
    );
    assert_eq!(
        c.evicting_stores().await.unwrap(),
        BTreeSet::from([StoreId(1), StoreId(3), StoreId(8)])
    );
    // Old PD: only per-store names; the config endpoint is not asked.
    pd.script(
        "GET /pd/api/v1/schedulers",
        vec![reply(200, r#"["evict-leader-scheduler-2"]"#)],
    );
    let before = pd.requests("GET /pd/api/v1/scheduler-config").len();
    assert_eq!(
        c.evicting_stores().await.unwrap(),
        BTreeSet::from([StoreId(2)])
    );
    assert_eq!(pd.requests("GET /pd/api/v1/scheduler-config").len(), before);
}

#[tokio::test]
async fn readiness_health_config_down_peers_cluster() {
    let pd = cluster().await;
    let c = client(vec![pd.url(0)]).await;
    // Readiness is asked of the given member, not the leader.
    pd.script("GET /pd/api/v2/ready", vec![reply(200, "")]);
    assert_eq!(c.member_ready(&pd.url(1)).await.unwrap(), Readiness::Ready);
    assert_eq!(pd.requests("GET /pd/api/v2/ready")[0].member, "pd-1");
    pd.script("GET /pd/api/v2/ready", vec![reply(503, "")]);
    assert_eq!(
        c.member_ready(&pd.url(1)).await.unwrap(),
        Readiness::NotReady
    );
    pd.script(
        "GET /pd/api/v2/ready",
        vec![reply(404, "404 page not found")],
    );
    assert_eq!(
        c.member_ready(&pd.url(1)).await.unwrap(),
        Readiness::Unsupported
    );

    // The process start time, answered by the member itself (a follower
    // forwards `/status` to the leader unless the header says otherwise).
    pd.script(
        "GET /pd/api/v1/status",
        vec![reply(
            200,
            r#"{"version":"v8.5.5","git_hash":"x","start_timestamp":1796562557}"#,
        )],
    );
    assert_eq!(
        c.member_started(&pd.url(1)).await.unwrap(),
        Some(1_796_562_557)
    );
    let asked = pd.requests("GET /pd/api/v1/status");
    assert_eq!(asked[0].member, "pd-1");
    assert!(asked[0].allow_follower, "{asked:?}");
    pd.script(
        "GET /pd/api/v1/status",
        vec![reply(200, r#"{"version":"v3.0.0"}"#)],
    );
    assert_eq!(c.member_started(&pd.url(1)).await.unwrap(), None);
    pd.script("GET /pd/api/v1/status", vec![reply(500, r#""boom""#)]);
    assert!(c.member_started(&pd.url(1)).await.is_err());

    pd.script(
        "GET /pd/api/v1/health",
        vec![reply(
            200,
            r#"[{"name":"pd-0","member_id":18446744073709551614,"client_urls":["http://a"],"health":true},
               {"name":"pd-1","member_id":9007199254740993,"client_urls":["http://b"],"health":false}]"#,
        )],
    );
    let h = c.health().await.unwrap();
    assert_eq!(h[0].id, MemberId(18_446_744_073_709_551_614));
    assert_eq!(h[1].id, MemberId(9_007_199_254_740_993));
    assert!(h[0].healthy && !h[1].healthy);

    pd.script(
        "GET /pd/api/v1/config",
        vec![reply(
            200,
            r#"{"replication":{"max-replicas":5,"location-labels":"zone,host","isolation-level":""}}"#,
        )],
    );
    let r = c.replication_config().await.unwrap();
    assert_eq!(r.max_replicas, 5);
    assert_eq!(r.location_labels, ["zone", "host"]);

    pd.script(
        "GET /pd/api/v1/regions/check/down-peer",
        vec![reply(
            200,
            r#"{"count":1,"regions":[{"id":4,"down_peers":[{"peer":{"id":5,"store_id":2},"down_seconds":61}]}]}"#,
        )],
    );
    let d = c.down_peers().await.unwrap();
    assert_eq!(d.len(), 1);
    assert_eq!((d[0].store_id, d[0].down_seconds), (StoreId(2), 61));

    // Region health: both checks asked, merged per Region.
    pd.script(
        "GET /pd/api/v1/regions/check/down-peer",
        vec![reply(
            200,
            r#"{"count":1,"regions":[{"id":4,"peers":[{"id":5,"store_id":2},{"id":6,"store_id":1},{"id":7,"store_id":3}],"down_peers":[{"peer":{"id":5,"store_id":2},"down_seconds":61}]}]}"#,
        )],
    );
    pd.script(
        "GET /pd/api/v1/regions/check/pending-peer",
        vec![reply(
            200,
            r#"{"count":1,"regions":[{"id":4,"peers":[{"id":5,"store_id":2},{"id":6,"store_id":1},{"id":7,"store_id":3}],"pending_peers":[{"id":7,"store_id":3}]}]}"#,
        )],
    );
    let u = c.unhealthy_regions().await.unwrap();
    assert_eq!(u.len(), 1);
    assert_eq!(u[0].voters.len(), 3);
    assert_eq!(
        (u[0].down.clone(), u[0].pending.clone()),
        (vec![StoreId(2)], vec![StoreId(3)])
    );
    // One check failing fails the whole answer: no partial health.
    pd.script(
        "GET /pd/api/v1/regions/check/pending-peer",
        vec![reply(500, r#""boom""#)],
    );
    assert!(c.unhealthy_regions().await.is_err());

    pd.script(
        "GET /pd/api/v1/cluster",
        vec![reply(
            200,
            &format!(r#"{{"id":{CLUSTER},"max_peer_count":3}}"#),
        )],
    );
    assert_eq!(c.cluster_id().await.unwrap(), ClusterId(CLUSTER));
    pd.script(
        "GET /pd/api/v1/cluster",
        vec![reply(200, r#"{"id":12,"max_peer_count":3}"#)],
    );
    assert_eq!(
        c.cluster_id().await.unwrap_err().category(),
        "cluster_id_mismatch"
    );

    pd.script(
        "GET /pd/api/v1/store/1",
        vec![reply(
            200,
            r#"{"store":{"id":1,"state":2,"node_state":3,"state_name":"Tombstone"},"status":{}}"#,
        )],
    );
    assert!(c.store(StoreId(1)).await.unwrap().is_removed());
    pd.script(
        "GET /pd/api/v1/store/2",
        vec![reply(404, r#""store 2 not found""#)],
    );
    assert_eq!(
        c.store(StoreId(2)).await.unwrap_err().category(),
        "not_found"
    );
    pd.script("GET /pd/api/v1/store/3", vec![reply(200, "<html>")]);
    assert_eq!(
        c.store(StoreId(3)).await.unwrap_err().category(),
        "protocol"
    );
}

#[tokio::test]
async fn works_as_shared_trait_object() {
    let pd = cluster().await;
    let api: std::sync::Arc<dyn PdApi> = std::sync::Arc::new(client(vec![pd.url(0)]).await);
    let members = api.members().await.unwrap();
    assert_eq!(members.cluster_id, ClusterId(CLUSTER));
}
