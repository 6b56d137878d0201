//! The store simulator itself, run in the test process against a real PD: stores that lead no
//! Region keep their session (and stay live for leader transfers), so PD can balance leaders
//! onto them. (Found by the TiKV e2e tests: such stores re-registered every ~12 s and, after the
//! first restart, no longer counted as live, so every leader transfer to them stalled.)

use std::time::Duration;

use anyhow::{Result, ensure};
use tikv_operator_e2e::harness::{Env, pd_cluster, wait_until};
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
        };
        tasks.push(tokio::spawn(run(p)));
        if i == 0 {
            // The first store bootstraps the cluster alone.
            tokio::time::sleep(Duration::from_secs(3)).await;
        }
    }
    // Leaders move off the bootstrap store (balance-region transfers them to live voters).
    let stores = wait_until(
        &env,
        "4 stores Up, leaders on at least 2 of them",
        Duration::from_secs(120),
        || {
            let (env, addr) = (env.clone(), addr.clone());
            async move {
                let s = env.pd_stores(&addr).await?;
                let leading = s.iter().filter(|s| s.leaders > 0).count();
                Ok(
                    (s.len() == 4 && s.iter().all(|s| s.state == "Up") && leading >= 2)
                        .then_some(s),
                )
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
