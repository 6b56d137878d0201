//! The store simulator itself, run in the test process against a real PD: stores that lead no
//! Region keep their session (and stay live for leader transfers), so PD can move leaders onto
//! them. (Found by the TiKV e2e tests: such stores re-registered every ~12 s and, after the
//! first restart, no longer counted as live, so every leader transfer to them stalled.)

use std::time::Duration;

use anyhow::{Result, ensure};
use tikv_operator_e2e::harness::{Env, PdStore, pd_cluster, wait_until};
use tikv_operator_e2e::raftsim::World;
use tikv_operator_e2e::simulator::{StoreParams, StoreStatus, run};

#[tokio::test]
#[ignore = "needs the e2e environment: run `cargo xtask e2e test`"]
async fn simulated_stores_keep_their_sessions_and_take_leaders() -> Result<()> {
    let env = Env::get().await?;
    let ns = env.namespace("storesim").await?;
    let (addr, _) = pd_cluster(&env, &ns, 1).await?;
    let dir = env.layout.root.join("storesim").join(&ns.name);
    std::fs::create_dir_all(&dir)?;
    let world = World::default();
    let mut tasks = Vec::new();
    for i in 0..4 {
        let data = dir.join(format!("store-{i}"));
        std::fs::create_dir_all(&data)?;
        let p = StoreParams {
            pd_endpoints: vec![addr.clone()],
            address: format!("store-{i}.{}.sim:20160", ns.name),
            status_address: format!("store-{i}.{}.sim:20180", ns.name),
            version: "8.5.5".into(),
            labels: Vec::new(),
            data_dir: Some(data),
            status_file: dir.join(format!("store-{i}.json")),
            heartbeat: Duration::from_secs(5),
            capacity_bytes: 100 << 30,
            world: world.clone(),
            tls: None,
        };
        tasks.push(tokio::spawn(run(p)));
        if i == 0 {
            // The first store bootstraps the cluster alone.
            tokio::time::sleep(Duration::from_secs(3)).await;
        }
    }
    // Every store takes a leader. PD's own balancing is not relied on: with 5 small Regions it
    // may leave every leader on the bootstrap store for minutes (its tolerance is larger than the
    // imbalance), so the test asks PD for the transfers, one Region at a time, as an operator
    // would. Each transfer goes to a store that led nothing so far: exactly the stores whose
    // sessions used to lapse.
    let stores = wait_until(
        &env,
        "4 stores Up, each leading at least one Region",
        Duration::from_secs(180),
        || {
            let (env, addr) = (env.clone(), addr.clone());
            async move {
                let s = env.pd_stores(&addr).await?;
                if s.len() == 4 && s.iter().all(|s| s.state == "Up" && s.leaders > 0) {
                    return Ok(Some(s));
                }
                if s.len() == 4 && s.iter().all(|s| s.state == "Up") {
                    request_a_transfer(&env, &addr, &s).await?;
                }
                Ok(None)
            }
        },
    )
    .await;
    // Longer than a request timeout plus a retry: a session that lost its stream would have
    // re-registered by then.
    tokio::time::sleep(Duration::from_secs(25)).await;
    for t in &tasks {
        t.abort();
    }
    let stores = stores?;
    eprintln!("stores: {stores:?}");
    for i in 0..4 {
        let path = dir.join(format!("store-{i}.json"));
        let st: StoreStatus = serde_json::from_str(&std::fs::read_to_string(&path)?)?;
        ensure!(
            st.sessions == 1 && st.phase == "Heartbeating",
            "store {i} restarted its session: {st:?}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// Asks PD to move one leader onto a store that leads nothing, from a store that leads more
/// than one Region. Does nothing while a Region still lacks a voter on such a store (PD is
/// still replicating) or when PD refuses (an operator already runs on the Region).
async fn request_a_transfer(env: &Env, addr: &str, stores: &[PdStore]) -> Result<()> {
    let regions = env.pd_get(addr, "/pd/api/v1/regions").await?;
    let leads = |id: u64| stores.iter().find(|s| s.id == id).map_or(0, |s| s.leaders);
    for target in stores.iter().filter(|s| s.leaders == 0) {
        let region = regions["regions"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|r| {
                let leader = r["leader"]["store_id"].as_u64().unwrap_or_default();
                let voter_on_target = r["peers"].as_array().into_iter().flatten().any(|p| {
                    p["store_id"].as_u64() == Some(target.id)
                        && p["role_name"].as_str().unwrap_or("Voter") == "Voter"
                });
                voter_on_target && leads(leader) > 1
            });
        if let Some(r) = region {
            let body = serde_json::json!({
                "name": "transfer-leader",
                "region_id": r["id"].as_u64().unwrap_or_default(),
                "to_store_id": target.id,
            });
            if let Err(e) = env.pd_post(addr, "/pd/api/v1/operators", &body).await {
                eprintln!("transfer to store {} not accepted yet: {e}", target.id);
            }
            return Ok(());
        }
    }
    Ok(())
}
