//! Self-test of the environment: scheduling onto zone nodes with volumes, real PD processes
//! behind PD pods, and the store simulator against that PD.
//!
//! Run with `cargo xtask e2e test` (the tests are ignored in a plain `cargo test`).

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use k8s_openapi::api::core::v1::{Node, PersistentVolumeClaim, Pod};
use kube::Api;
use kube::api::DeleteParams;
use tikv_operator_e2e::fixtures;
use tikv_operator_e2e::harness::{Env, Invariant, pd_cluster, pod_ip, replicated, wait_until};

#[tokio::test]
#[ignore = "needs the e2e environment: run `cargo xtask e2e test`"]
async fn pod_with_volume_is_scheduled_to_a_zone_node() -> Result<()> {
    let env = Env::get().await?;
    let ns = env.namespace("sched").await?;
    ns.apply(
        r#"
apiVersion: v1
kind: PersistentVolumeClaim
metadata:
  name: data
spec:
  accessModes: [ReadWriteOnce]
  resources:
    requests:
      storage: 1Gi
---
apiVersion: v1
kind: Pod
metadata:
  name: app
spec:
  nodeSelector:
    topology.kubernetes.io/zone: zone-b
  containers:
  - name: app
    image: example.invalid/app:1
    volumeMounts:
    - name: data
      mountPath: /data
  volumes:
  - name: data
    persistentVolumeClaim:
      claimName: data
"#,
    )
    .await?;
    pod_ip(&env, &ns.name, "app").await?;
    let pod = Api::<Pod>::namespaced(env.client.clone(), &ns.name)
        .get("app")
        .await?;
    let node_name = pod
        .spec
        .and_then(|s| s.node_name)
        .context("pod not scheduled")?;
    let node = Api::<Node>::all(env.client.clone()).get(&node_name).await?;
    let zone = node
        .metadata
        .labels
        .unwrap_or_default()
        .get("topology.kubernetes.io/zone")
        .cloned();
    ensure!(
        zone.as_deref() == Some("zone-b"),
        "scheduled to {node_name} in {zone:?}"
    );
    let pvc = Api::<PersistentVolumeClaim>::namespaced(env.client.clone(), &ns.name)
        .get("data")
        .await?;
    let phase = pvc.status.and_then(|s| s.phase);
    ensure!(phase.as_deref() == Some("Bound"), "claim is {phase:?}");
    ns.cleanup().await
}

#[tokio::test]
#[ignore = "needs the e2e environment: run `cargo xtask e2e test`"]
async fn three_pd_pods_form_a_cluster_with_a_leader() -> Result<()> {
    let env = Env::get().await?;
    let ns = env.namespace("pd").await?;
    let (addr, members) = pd_cluster(&env, &ns, 3).await?;
    let names: Vec<&str> = members["members"]
        .as_array()
        .context("no members")?
        .iter()
        .filter_map(|m| m["name"].as_str())
        .collect();
    ensure!(names.len() == 3, "members: {names:?}");

    // Deleting a pod stops its pd-server; recreating it starts a new one on the same volume.
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), &ns.name);
    pods.delete("e2e-pd-2", &DeleteParams::default()).await?;
    wait_until(
        &env,
        "PD member e2e-pd-2 unhealthy",
        Duration::from_secs(60),
        || {
            let env = env.clone();
            let addr = addr.clone();
            async move {
                let h = env.pd_get(&addr, "/pd/api/v1/health").await?;
                let healthy = h
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|m| m["name"] == "e2e-pd-2" && m["health"] == true);
                Ok((!healthy).then_some(()))
            }
        },
    )
    .await?;
    ns.apply(&fixtures::pd_cluster(&ns.name, "e2e", 3)).await?;
    wait_until(
        &env,
        "PD member e2e-pd-2 healthy again",
        Duration::from_secs(90),
        || {
            let env = env.clone();
            let addr = addr.clone();
            async move {
                let h = env.pd_get(&addr, "/pd/api/v1/health").await?;
                let healthy = h
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|m| m["health"] == true)
                    .count();
                Ok((healthy == 3).then_some(()))
            }
        },
    )
    .await?;
    ns.cleanup().await
}

#[tokio::test]
#[ignore = "needs the e2e environment: run `cargo xtask e2e test`"]
async fn simulated_stores_register_and_a_deleted_store_ends_tombstone() -> Result<()> {
    let env = Env::get().await?;
    let ns = env.namespace("stores").await?;
    let (addr, _) = pd_cluster(&env, &ns, 3).await?;
    // PD must stay with a leader for the whole test.
    let inv = {
        let env = env.clone();
        let addr = addr.clone();
        Invariant::watch("PD has a leader", Duration::from_secs(2), move || {
            let env = env.clone();
            let addr = addr.clone();
            async move {
                let l = env.pd_get(&addr, "/pd/api/v1/leader").await?;
                ensure!(
                    l["name"].as_str().is_some_and(|n| !n.is_empty()),
                    "no leader: {l}"
                );
                Ok(())
            }
        })
    };
    for i in 0..3 {
        ns.apply(&fixtures::tikv_pod(&ns.name, "e2e", i)).await?;
    }
    let stores = wait_until(&env, "3 stores Up", Duration::from_secs(90), || {
        let env = env.clone();
        let addr = addr.clone();
        async move {
            let s = env.pd_stores(&addr).await?;
            Ok((s.len() == 3 && s.iter().all(|s| s.state == "Up")).then_some(s))
        }
    })
    .await?;
    let status = env
        .store_status(&ns.name, "e2e-tikv-0")
        .context("no simulator status for e2e-tikv-0")?;
    ensure!(
        stores.iter().any(|s| s.address == status.address),
        "store of e2e-tikv-0 ({}) not in PD: {stores:?}",
        status.address
    );
    let v = env.pd_get(&addr, "/pd/api/v1/stores").await?;
    ensure!(
        v["stores"][0]["store"]["version"] == "8.5.5",
        "store version: {}",
        v["stores"][0]["store"]["version"]
    );

    // A fourth store, then delete one: PD moves its region peers away (the simulators apply
    // PD's steps), the store ends Tombstone and its simulator stops.
    ns.apply(&fixtures::tikv_pod(&ns.name, "e2e", 3)).await?;
    wait_until(&env, "4 stores Up", Duration::from_secs(60), || {
        let env = env.clone();
        let addr = addr.clone();
        async move {
            let s = env.pd_stores(&addr).await?;
            Ok((s.len() == 4 && s.iter().all(|s| s.state == "Up")).then_some(()))
        }
    })
    .await?;
    let victim = (0..4)
        .filter_map(|i| {
            env.store_status(&ns.name, &format!("e2e-tikv-{i}"))
                .map(|s| (i, s))
        })
        .find(|(_, s)| !s.bootstrapped_cluster && s.store_id.is_some())
        .context("no non-bootstrap store")?;
    let id = victim.1.store_id.unwrap_or_default();
    env.pd_delete(&addr, &format!("/pd/api/v1/store/{id}"))
        .await?;
    wait_until(
        &env,
        &format!("store {id} Tombstone"),
        Duration::from_secs(180),
        || {
            let env = env.clone();
            let addr = addr.clone();
            async move {
                let s = env.pd_stores(&addr).await?;
                Ok(s.iter()
                    .any(|s| s.id == id && s.state == "Tombstone")
                    .then_some(()))
            }
        },
    )
    .await?;
    let pod = format!("e2e-tikv-{}", victim.0);
    wait_until(
        &env,
        "the simulator of the tombstoned store stops",
        Duration::from_secs(30),
        || {
            let st = env.store_status(&ns.name, &pod);
            async move { Ok(st.filter(|s| s.phase == "Tombstone").map(|_| ())) }
        },
    )
    .await?;
    inv.finish().await?;
    ns.cleanup().await
}

#[tokio::test]
#[ignore = "needs the e2e environment: run `cargo xtask e2e test`"]
async fn leaders_are_evicted_from_a_store() -> Result<()> {
    let env = Env::get().await?;
    let ns = env.namespace("evict").await?;
    let (addr, _) = pd_cluster(&env, &ns, 3).await?;
    for i in 0..3 {
        ns.apply(&fixtures::tikv_pod(&ns.name, "e2e", i)).await?;
    }
    let stores = replicated(&env, &addr).await?;
    let busiest = stores
        .iter()
        .max_by_key(|s| s.leaders)
        .context("no stores")?
        .clone();
    ensure!(busiest.leaders > 0, "no store has leaders: {stores:?}");
    env.pd_post(
        &addr,
        "/pd/api/v1/schedulers",
        &serde_json::json!({"name": "evict-leader-scheduler", "store_id": busiest.id}),
    )
    .await?;
    let id = busiest.id;
    wait_until(
        &env,
        &format!("no leaders on store {id}"),
        Duration::from_secs(120),
        || {
            let env = env.clone();
            let addr = addr.clone();
            async move {
                let s = env.pd_stores(&addr).await?;
                let total: u64 = s.iter().map(|s| s.leaders).sum();
                Ok(s.iter()
                    .any(|s| s.id == id && s.leaders == 0 && total > 0)
                    .then_some(()))
            }
        },
    )
    .await?;
    ns.cleanup().await
}

/// A store simulator stopped behind its live Pod: PD marks the store Down after
/// `max-store-down-time` (set short here) and, because the Regions' leaders report the peers on
/// it as down (as TiKV does), PD re-replicates every Region onto the other stores. This is what
/// failover relies on: the Regions are whole again before the dead store is removed.
#[tokio::test]
#[ignore = "needs the e2e environment: run `cargo xtask e2e test`"]
async fn a_stopped_store_is_reported_down_and_pd_moves_its_replicas() -> Result<()> {
    let env = Env::get().await?;
    let ns = env.namespace("down").await?;
    let (addr, _) = pd_cluster(&env, &ns, 1).await?;
    env.pd_post(
        &addr,
        "/pd/api/v1/config",
        &serde_json::json!({"max-store-down-time": "15s"}),
    )
    .await?;
    // Four stores for three replicas: a Region can move off any one of them.
    for i in 0..4 {
        ns.apply(&fixtures::tikv_pod(&ns.name, "e2e", i)).await?;
    }
    let stores = wait_until(&env, "4 stores Up", Duration::from_secs(90), || {
        let (env, addr) = (env.clone(), addr.clone());
        async move {
            let s = env.pd_stores(&addr).await?;
            Ok((s.len() == 4 && s.iter().all(|s| s.state == "Up")).then_some(s))
        }
    })
    .await?;
    replicated(&env, &addr).await?;
    let on_store = |env: Env, addr: String, id: u64| async move {
        let v = env
            .pd_get(&addr, &format!("/pd/api/v1/regions/store/{id}"))
            .await?;
        anyhow::Ok(v["count"].as_u64().unwrap_or_default())
    };
    // The store holding the most Region peers (a store may hold none yet).
    let mut victim = (0, 0);
    for s in &stores {
        let n = on_store(env.clone(), addr.clone(), s.id).await?;
        if n > victim.1 {
            victim = (s.id, n);
        }
    }
    ensure!(victim.1 > 0, "no store holds a Region peer: {stores:?}");
    let victim = victim.0;
    let address = &stores
        .iter()
        .find(|s| s.id == victim)
        .context("the victim store")?
        .address;
    // Stores advertise `<pod>.<service>.<namespace>.svc:20160`.
    let victim_pod = address
        .split('.')
        .next()
        .context("store address")?
        .to_owned();
    let victim_pod = victim_pod.as_str();
    let on_victim = move |env: Env, addr: String| on_store(env, addr, victim);
    env.stop_pod_process(&ns.name, victim_pod)?;
    let r = async {
        wait_until(
            &env,
            &format!("PD reports the peers on store {victim} down"),
            Duration::from_secs(60),
            || {
                let (env, addr) = (env.clone(), addr.clone());
                async move {
                    let v = env
                        .pd_get(&addr, "/pd/api/v1/regions/check/down-peer")
                        .await?;
                    Ok((v["count"].as_u64().unwrap_or_default() > 0).then_some(()))
                }
            },
        )
        .await?;
        wait_until(
            &env,
            &format!("store {victim} Down, no Region peer left on it, every Region whole"),
            Duration::from_secs(240),
            || {
                let (env, addr) = (env.clone(), addr.clone());
                async move {
                    let s = env.pd_stores(&addr).await?;
                    let down = s.iter().any(|s| s.id == victim && s.state == "Down");
                    let left = on_victim(env.clone(), addr.clone()).await?;
                    let miss = env
                        .pd_get(&addr, "/pd/api/v1/regions/check/miss-peer")
                        .await?;
                    let missing = miss["count"].as_u64().unwrap_or_default();
                    Ok((down && left == 0 && missing == 0).then_some(()))
                }
            },
        )
        .await
    }
    .await;
    env.start_pod_process(&ns.name, victim_pod)?;
    r?;
    ns.cleanup().await
}
