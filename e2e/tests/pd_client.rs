//! The PD client (`crates/pd-client`) against a real 3-member pd-server cluster with
//! simulated stores: every operation the operator relies on, with PD's real answers.
//!
//! Run with `cargo xtask e2e test` (ignored in a plain `cargo test`).

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use pd_client::{NodeState, PdApi, PdClient, PdClientConfig, Readiness, StoreId, StoreState};
use tikv_operator_e2e::fixtures;
use tikv_operator_e2e::harness::{Env, pd_cluster, replicated, wait_until};

/// Waits until `check` returns `Some` for the client's view of store `id`.
async fn wait_store<T>(
    env: &Env,
    pd: &PdClient,
    what: &str,
    id: StoreId,
    check: impl Fn(&pd_client::Store) -> Option<T>,
) -> Result<T> {
    wait_until(env, what, Duration::from_secs(180), || {
        let pd = pd.clone();
        let found = async move { pd.store(id).await };
        let check = &check;
        async move { Ok(check(&found.await?)) }
    })
    .await
}

#[tokio::test]
#[ignore = "needs the e2e environment: run `cargo xtask e2e test`"]
async fn pd_client_against_a_real_pd_cluster() -> Result<()> {
    let env = Env::get().await?;
    let ns = env.namespace("pdclient").await?;
    let (addr, http_members) = pd_cluster(&env, &ns, 3).await?;

    // Discovery from one seed: cluster id, members and leader agree with PD's HTTP answer.
    let pd = PdClient::connect(PdClientConfig::new([format!("http://{addr}")])).await?;
    let members = pd.members().await?;
    ensure!(members.members.len() == 3, "members: {members:?}");
    let http_id = env.pd_get(&addr, "/pd/api/v1/cluster").await?["id"].as_u64();
    ensure!(
        Some(members.cluster_id.0) == http_id,
        "cluster id {:?} vs HTTP {http_id:?}",
        members.cluster_id
    );
    ensure!(pd.cluster_id().await? == members.cluster_id);
    let leader = pd.leader().await?;
    ensure!(
        http_members["leader"]["name"].as_str() == Some(leader.name.as_str())
            || members.leader.as_ref().map(|l| &l.name) == Some(&leader.name),
        "leader {} not what PD reports",
        leader.name
    );
    // PD's health report lags its membership: a member that just joined may be reported
    // unhealthy for a few seconds (seen in CI). The client must come to report all three.
    let health = wait_until(
        &env,
        "PD reporting 3 healthy members",
        Duration::from_secs(60),
        || {
            let pd = pd.clone();
            async move {
                let health = pd.health().await?;
                Ok((health.len() == 3 && health.iter().all(|h| h.healthy)).then_some(health))
            }
        },
    )
    .await?;
    ensure!(
        health
            .iter()
            .all(|h| members.members.iter().any(|m| m.id == h.id)),
        "health names members PD does not list: {health:?} vs {members:?}"
    );
    for m in &members.members {
        let url = m.client_urls.first().context("member without client URL")?;
        let ready = pd.member_ready(url).await?;
        ensure!(ready != Readiness::NotReady, "{} not ready", m.name);
        // Each member's own process start time (not the leader's: a follower forwards
        // `/status` unless asked to answer itself).
        let started = pd.member_started(url).await?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_secs() as i64;
        ensure!(
            started.is_some_and(|t| t > now - 600 && t <= now + 5),
            "{} started at {started:?} (now {now})",
            m.name
        );
    }
    let replication = pd.replication_config().await?;
    ensure!(
        replication.max_replicas == 3,
        "replication: {replication:?}"
    );
    ensure!(
        !pd.is_bootstrapped().await?,
        "bootstrapped before any store registered"
    );

    // Three simulated stores register; the client sees them Up/Serving over HTTP and gRPC.
    for i in 0..3 {
        ns.apply(&fixtures::tikv_pod(&ns.name, "e2e", i)).await?;
    }
    let stores = wait_until(
        &env,
        "4 stores Up and Serving",
        Duration::from_secs(90),
        || {
            let pd = pd.clone();
            async move {
                let s = pd.stores().await?;
                let up = s
                    .iter()
                    .filter(|s| s.state == StoreState::Up && s.node_state == NodeState::Serving);
                Ok((up.count() == 3).then_some(s))
            }
        },
    )
    .await?;
    ensure!(
        pd.is_bootstrapped().await?,
        "not bootstrapped after stores registered"
    );
    let mut grpc_ids: Vec<StoreId> = pd
        .stores_via_grpc(false)
        .await?
        .iter()
        .map(|s| s.id)
        .collect();
    let mut http_ids: Vec<StoreId> = stores.iter().map(|s| s.id).collect();
    grpc_ids.sort();
    http_ids.sort();
    ensure!(
        grpc_ids == http_ids,
        "gRPC stores {grpc_ids:?} vs HTTP {http_ids:?}"
    );

    // Store labels: set, read back, delete.
    let labelled = stores[0].id;
    pd.set_store_labels(
        labelled,
        &BTreeMap::from([("disk".to_owned(), "ssd".to_owned())]),
    )
    .await?;
    let s = pd.store(labelled).await?;
    ensure!(
        s.labels.get("disk").map(String::as_str) == Some("ssd"),
        "labels: {:?}",
        s.labels
    );
    pd.delete_store_label(labelled, "disk").await?;
    ensure!(
        !pd.store(labelled).await?.labels.contains_key("disk"),
        "label not deleted"
    );

    // Evict-leader entries: add (twice: idempotent), list, remove (twice: idempotent). That PD
    // then drains the store's leaders is PD's and the simulator's part, covered by
    // `environment.rs::leaders_are_evicted_from_a_store`.
    let busiest = replicated(&env, &addr)
        .await?
        .into_iter()
        .max_by_key(|s| s.leaders)
        .context("no stores")?;
    let busiest = StoreId(busiest.id);
    pd.add_evict_leader(busiest).await?;
    pd.add_evict_leader(busiest).await?; // idempotent
    ensure!(
        pd.evicting_stores().await?.contains(&busiest),
        "store {busiest:?} not listed as evicting"
    );
    pd.remove_evict_leader(busiest).await?;
    pd.remove_evict_leader(busiest).await?; // idempotent
    ensure!(
        !pd.evicting_stores().await?.contains(&busiest),
        "evict-leader entry left behind"
    );
    let _ = pd.down_peers().await?;

    // A fourth store, so that one can be removed without going below max-replicas.
    ns.apply(&fixtures::tikv_pod(&ns.name, "e2e", 3)).await?;
    wait_until(&env, "4 stores Up", Duration::from_secs(90), || {
        let pd = pd.clone();
        async move {
            let s = pd.stores().await?;
            Ok((s.iter().filter(|s| s.state == StoreState::Up).count() == 4).then_some(()))
        }
    })
    .await?;

    // Removal: start, cancel (back to Up), start again, end Tombstone; deleting again is "already gone".
    let victim = (0..4)
        .filter_map(|i| env.store_status(&ns.name, &format!("e2e-tikv-{i}")))
        .find(|s| !s.bootstrapped_cluster && s.store_id.is_some())
        .and_then(|s| s.store_id)
        .map(StoreId)
        .context("no non-bootstrap store")?;
    pd.delete_store(victim).await?;
    ensure!(
        pd.store(victim).await?.is_removing() || pd.store(victim).await?.is_removed(),
        "removal did not start"
    );
    pd.cancel_store_removal(victim).await?;
    wait_store(&env, &pd, "store back Up after cancel", victim, |s| {
        (s.state == StoreState::Up).then_some(())
    })
    .await?;
    pd.delete_store(victim).await?;
    wait_store(&env, &pd, "store Tombstone", victim, |s| {
        s.is_removed().then_some(())
    })
    .await?;
    let again = pd.delete_store(victim).await;
    ensure!(
        again.as_ref().is_ok() || again.as_ref().is_err_and(|e| e.is_already_gone()),
        "deleting a tombstone: {again:?}"
    );

    // With 3 Up stores and max-replicas 3, PD refuses another removal; the store stays Up.
    let up: Vec<StoreId> = pd
        .stores()
        .await?
        .iter()
        .filter(|s| s.state == StoreState::Up)
        .map(|s| s.id)
        .collect();
    ensure!(up.len() == 3, "Up stores: {up:?}");
    let refused = pd.delete_store(up[0]).await;
    match &refused {
        Err(e) if !e.is_retryable() && !e.is_already_gone() => {}
        other => anyhow::bail!("removal below max-replicas was not refused: {other:?}"),
    }
    ensure!(
        pd.store(up[0]).await?.state == StoreState::Up,
        "refused store changed state"
    );

    // Leadership transfer to a follower.
    let current_leader = pd.leader().await?.name;
    let follower = members
        .members
        .iter()
        .find(|m| m.name != current_leader)
        .context("no follower")?
        .name
        .clone();
    pd.transfer_leader(&follower).await?;
    wait_until(&env, "leader transferred", Duration::from_secs(60), || {
        let pd = pd.clone();
        let follower = follower.clone();
        async move { Ok((pd.leader().await?.name == follower).then_some(())) }
    })
    .await?;

    // Member removal (idempotent).
    let (removed, removed_id) = members
        .members
        .iter()
        .find(|m| m.name != follower)
        .map(|m| (m.name.clone(), m.id))
        .context("no other member")?;
    pd.remove_member(removed_id).await?;
    wait_until(&env, "member removed", Duration::from_secs(60), || {
        let pd = pd.clone();
        let removed = removed.clone();
        async move {
            let m = pd.members().await?;
            Ok((m.members.len() == 2 && m.by_name(&removed).is_none()).then_some(()))
        }
    })
    .await?;
    // Removing it again says "already gone" (PD may answer "unavailable" for a moment while
    // the client still knows the removed member's URL: retried, as the operator would).
    let again = wait_until(
        &env,
        "removing the removed member again answers",
        Duration::from_secs(30),
        || {
            let pd = pd.clone();
            async move {
                match pd.remove_member(removed_id).await {
                    Err(e) if e.is_retryable() => Ok(None),
                    other => Ok(Some(other)),
                }
            }
        },
    )
    .await?;
    ensure!(
        again.as_ref().is_err_and(|e| e.is_already_gone()),
        "removing a removed member must say 'already gone': {again:?}"
    );
    ns.cleanup().await
}
