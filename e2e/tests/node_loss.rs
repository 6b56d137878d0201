//! The environment takes a node away (`Env::take_node_away`): its own test binary, because
//! the other tests of a binary run alongside and may have Pods on that node.
//!
//! Run with `cargo xtask e2e test` (the tests are ignored in a plain `cargo test`).

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::Api;
use tikv_operator_e2e::fixtures;
use tikv_operator_e2e::harness::{Env, TestNamespace, pd_cluster, pod_ip, wait_until};

/// The only node of zone-c: the PD member of [`pd_cluster`] (one member, zone-a) is never on it.
const NODE: &str = "e2e-node-c1";

/// A TiKV Pod (store simulator) pinned to [`NODE`] through its nodeSelector (the fixture's
/// zone replaced by the node's hostname).
fn pinned_tikv(ns: &str) -> String {
    fixtures::tikv_pod(ns, "e2e", 0).replace(
        "topology.kubernetes.io/zone: zone-a",
        &format!("kubernetes.io/hostname: {NODE}"),
    )
}

/// A node taken away: its store's process stops (PD stops hearing from it), the Node is gone,
/// the Pod is garbage-collected, a recreated Pod stays Pending (its claim's volume is on that
/// node), and once the node is back the Pod runs there and the store is Up again.
#[tokio::test]
#[ignore = "needs the e2e environment: run `cargo xtask e2e test`"]
async fn a_node_taken_away_stops_its_pods_until_it_comes_back() -> Result<()> {
    let env = Env::get().await?;
    let ns = env.namespace("nodeloss").await?;
    let r = node_loss(&env, &ns).await;
    let back = env.bring_node_back(NODE).await;
    r?;
    back?;
    ns.cleanup().await
}

async fn node_loss(env: &Env, ns: &TestNamespace) -> Result<()> {
    let (addr, _) = pd_cluster(env, ns, 1).await?;
    let pod_yaml = pinned_tikv(&ns.name);
    ensure!(
        pod_yaml.contains(NODE),
        "the fixture's nodeSelector changed"
    );
    ns.apply(&pod_yaml).await?;
    pod_ip(env, &ns.name, "e2e-tikv-0").await?;
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), &ns.name);
    let node_of = |p: &Pod| p.spec.as_ref().and_then(|s| s.node_name.clone());
    let pod = pods.get("e2e-tikv-0").await?;
    ensure!(
        node_of(&pod).as_deref() == Some(NODE),
        "{:?}",
        node_of(&pod)
    );
    let store_up = |want: &'static str| {
        let (env, addr) = (env.clone(), addr.clone());
        async move {
            let s = env.pd_stores(&addr).await?;
            Ok((s.len() == 1 && s[0].state == want).then_some(()))
        }
    };
    wait_until(env, "the store Up", Duration::from_secs(60), || {
        store_up("Up")
    })
    .await?;

    env.take_node_away(NODE).await?;
    let nodes: Api<Node> = Api::all(env.client.clone());
    wait_until(env, "the Node gone", Duration::from_secs(30), || {
        let nodes = nodes.clone();
        async move { Ok(nodes.get_opt(NODE).await?.is_none().then_some(())) }
    })
    .await?;
    // PD stops hearing from the store (Disconnected after 20 s without a heartbeat).
    wait_until(
        env,
        "the store Disconnected in PD",
        Duration::from_secs(90),
        || store_up("Disconnected"),
    )
    .await?;
    wait_until(
        env,
        "the Pod deleted by the pod garbage collector",
        Duration::from_secs(180),
        || {
            let pods = pods.clone();
            async move { Ok(pods.get_opt("e2e-tikv-0").await?.is_none().then_some(())) }
        },
    )
    .await?;
    // Recreated, it cannot run anywhere: its volume is on the lost node.
    ns.apply(&pod_yaml).await?;
    tokio::time::sleep(Duration::from_secs(15)).await;
    let pod = pods.get("e2e-tikv-0").await?;
    ensure!(
        node_of(&pod).is_none(),
        "the recreated Pod was scheduled to {:?}",
        node_of(&pod)
    );

    env.bring_node_back(NODE).await?;
    wait_until(
        env,
        "the Node back and Ready",
        Duration::from_secs(60),
        || {
            let nodes = nodes.clone();
            async move {
                let ready = nodes.get_opt(NODE).await?.is_some_and(|n| {
                    n.status
                        .and_then(|s| s.conditions)
                        .unwrap_or_default()
                        .iter()
                        .any(|c| c.type_ == "Ready" && c.status == "True")
                });
                Ok(ready.then_some(()))
            }
        },
    )
    .await?;
    // The Pod left Pending while the node was gone runs there now, and its store is back.
    pod_ip(env, &ns.name, "e2e-tikv-0")
        .await
        .context("the Pod after the node came back")?;
    wait_until(env, "the store Up again", Duration::from_secs(90), || {
        store_up("Up")
    })
    .await?;
    Ok(())
}
