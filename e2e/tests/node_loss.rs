//! The environment takes a node away (`Env::take_node_away`), and the operator fails over the
//! store that was on it. Its own test binary, because the other tests of a binary run alongside
//! and may have Pods on that node; its two tests take their nodes one at a time.
//!
//! Run with `cargo xtask e2e test` (the tests are ignored in a plain `cargo test`).

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::ListParams;
use kube::{Api, ResourceExt};
use tikv_operator_e2e::config::NODES;
use tikv_operator_e2e::fixtures;
use tikv_operator_e2e::harness::{Env, TestNamespace, pd_cluster, pod_ip, replicated, wait_until};
use tikv_operator_e2e::watchers::TIKV_PODS;
use tikv_operator_e2e::world::World;

mod kv;
use kv::*;

/// The tests take nodes away one at a time: each has Pods on nodes the other takes.
static ONE_NODE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

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
    let _one = ONE_NODE_AT_A_TIME.lock().await;
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

/// The node of a Cluster's zone-a TiKV store goes away for good (its Pod is garbage-collected,
/// a recreated one cannot run: its volume was on that node). PD reports the store down, and
/// after the group's failover period the operator replaces it in the same zone (on the other
/// zone-a node), then removes the lost store through PD. No PVC goes before its store is
/// Tombstone and PD never removes two stores at once; once the node is back the Cluster is
/// Ready again (a PD member that was on that node rejoins).
#[tokio::test]
#[ignore = "needs the e2e environment: run `cargo xtask e2e test`"]
async fn a_lost_nodes_store_is_replaced_in_its_zone_and_removed_after_tombstone() -> Result<()> {
    let _one = ONE_NODE_AT_A_TIME.lock().await;
    let w = World::start("nodefo").await?;
    let lost = std::sync::Mutex::new(None::<String>);
    let r = fail_over_lost_node(&w, &lost).await;
    let taken = kv::lock(&lost).take();
    let back = match taken {
        Some(node) => w.env.bring_node_back(&node).await,
        None => Ok(()),
    };
    r.map_err(|e| w.explain(e))?;
    back?;
    w.finish().await
}

/// The node a TiKV Pod is bound to.
fn node_of(p: &Pod) -> Option<String> {
    p.spec.as_ref().and_then(|s| s.node_name.clone())
}

fn zone_of_node(node: &str) -> Option<&'static str> {
    NODES.iter().find(|(n, _)| *n == node).map(|(_, z)| *z)
}

async fn fail_over_lost_node(w: &World, lost: &std::sync::Mutex<Option<String>>) -> Result<()> {
    w.ns.apply(&failover_cluster()).await?;
    w.wait_ready("basic", 3, Duration::from_secs(300)).await?;
    replicated(&w.env, &w.pd_addr()).await?;
    let kv_pods = w
        .api::<Pod>()
        .list(&ListParams::default().labels(TIKV_PODS))
        .await?
        .items;
    // zone-a has two nodes: the replacement has a node of its zone to go to.
    let (victim, node) = kv_pods
        .iter()
        .find_map(|p| {
            let node = node_of(p)?;
            (zone_of_node(&node) == Some("zone-a"))
                .then(|| Some((p.labels().get("core.tikv.org/instance")?.clone(), node)))?
        })
        .context("no TiKV Pod on a zone-a node")?;
    let kvs = w.tikvs().await?;
    let victim_store = kvs
        .iter()
        .find(|kv| kv.name_any() == victim)
        .and_then(store_id)
        .with_context(|| format!("{victim} has no store id"))?;
    let before: BTreeSet<String> = kvs.iter().map(ResourceExt::name_any).collect();
    let watch = pvc_removal_watch(w);
    let one_at_a_time = one_removal_at_a_time(w);

    *kv::lock(lost) = Some(node.clone());
    w.env.take_node_away(&node).await?;
    wait_replaced(w, &victim, victim_store, Duration::from_secs(480)).await?;

    // The replacement runs in the lost store's zone, on its other node.
    let replacement = completed_replacement(w, &victim, &before).await?;
    let pod = w
        .api::<Pod>()
        .list(&ListParams::default().labels(TIKV_PODS))
        .await?
        .items
        .into_iter()
        .find(|p| p.labels().get("core.tikv.org/instance") == Some(&replacement))
        .with_context(|| format!("no Pod of {replacement}"))?;
    let on = node_of(&pod).context("the replacement's Pod is not scheduled")?;
    ensure!(
        on != node && zone_of_node(&on) == Some("zone-a"),
        "the replacement runs on {on}, not on the other node of zone-a"
    );

    // The node comes back: whatever else ran there (a PD member) rejoins.
    w.env.bring_node_back(&node).await?;
    kv::lock(lost).take();
    w.wait_ready("basic", 3, Duration::from_secs(240)).await?;
    replicated(&w.env, &w.pd_addr()).await?;
    let one = one_at_a_time.finish().await;
    let safe = watch.finish().await;
    one?;
    safe
}
