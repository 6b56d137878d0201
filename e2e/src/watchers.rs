//! Watchers shared by the e2e tests: invariants polled in the background while a test changes
//! a cluster.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use anyhow::{Result, bail};
use k8s_openapi::api::core::v1::Pod;
use kube::api::ListParams;
use kube::{Api, ResourceExt};

use crate::harness::{Env, Invariant};
use crate::world::World;

/// Label selector of the operator's PD Pods.
pub const PD_PODS: &str =
    "app.kubernetes.io/component=pd,app.kubernetes.io/managed-by=tikv-operator";
/// Label selector of the operator's TiKV Pods.
pub const TIKV_PODS: &str =
    "app.kubernetes.io/component=tikv,app.kubernetes.io/managed-by=tikv-operator";

/// At every moment some PD member answers, and a majority of the members PD lists is
/// healthy. A single failed probe is tolerated (a member being removed may be the one asked);
/// three in a row are a violation.
pub fn pd_quorum_watch(w: &World) -> Invariant {
    pd_quorum_watch_tolerating(w, 2)
}

/// [`pd_quorum_watch`] that tolerates `failures` probes in a row (500 ms apart) without an
/// answer: a test that kills PD's leader itself lets PD elect another, during which PD answers
/// "no leader" for a few seconds without having lost its majority.
pub fn pd_quorum_watch_tolerating(w: &World, failures: u32) -> Invariant {
    let env = w.env.clone();
    let pods = w.api::<Pod>();
    let failed = Arc::new(AtomicU32::new(0));
    Invariant::watch("PD quorum", Duration::from_millis(500), move || {
        let (env, pods, failed) = (env.clone(), pods.clone(), failed.clone());
        async move {
            match probe_pd_quorum(&env, &pods).await {
                Ok(()) => {
                    failed.store(0, Ordering::SeqCst);
                    Ok(())
                }
                Err(e) if failed.fetch_add(1, Ordering::SeqCst) >= failures => Err(e),
                Err(_) => Ok(()),
            }
        }
    })
}

/// Asks the PD Pods in turn until one answers: fails when none does, or when the one that
/// answers lists no member or no healthy majority.
pub async fn probe_pd_quorum(env: &Env, pods: &Api<Pod>) -> Result<()> {
    let list = pods.list(&ListParams::default().labels(PD_PODS)).await?;
    let ips: Vec<String> = list
        .items
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter_map(|p| p.status.as_ref()?.pod_ip.clone())
        .collect();
    let mut last = String::from("no PD pod with an IP");
    for ip in ips {
        let addr = format!("{ip}:2379");
        let members = match env.pd_get(&addr, "/pd/api/v1/members").await {
            Ok(m) => m,
            Err(e) => {
                last = format!("{e:#}");
                continue;
            }
        };
        let health = match env.pd_get(&addr, "/pd/api/v1/health").await {
            Ok(h) => h,
            Err(e) => {
                last = format!("{e:#}");
                continue;
            }
        };
        let listed = members["members"].as_array().map_or(0, Vec::len);
        let healthy = healthy_members(&health);
        if listed == 0 || healthy * 2 <= listed {
            bail!("only {healthy} of {listed} PD members healthy");
        }
        return Ok(());
    }
    bail!("no PD member answered: {last}")
}

/// How many members PD's `/pd/api/v1/health` answer reports healthy.
pub fn healthy_members(health: &serde_json::Value) -> usize {
    health
        .as_array()
        .into_iter()
        .flatten()
        .filter(|h| h["health"].as_bool() == Some(true))
        .count()
}

/// The PD Pods (not being deleted) whose member does not answer itself, with the reason:
/// `GET /health?serializable=true` at the Pod's IP (3 s timeout), the embedded etcd's own
/// answer (its process is up and its raft group has a leader). Pods without an IP count as
/// not answering.
///
/// This is the member's own word. PD's HTTP API is not used for it: PD's `/health` checks
/// each member at its DNS name, which can still lead to the old process (or nowhere) for a
/// few seconds after a restart, so it reported two members unhealthy while only one was
/// ever down (seen in CI); and a follower forwards `/pd/api/v1/ping` and `/pd/api/v2/ready`
/// to the leader, answering 500 or 503 for the leader's trouble, not its own (measured in
/// the e2e environment: 503 from both followers while the leader restarted, 500 from a
/// follower 10 s after a PD rollout).
pub async fn pd_members_not_answering(
    env: &Env,
    pods: &Api<Pod>,
) -> Result<std::collections::BTreeMap<String, String>> {
    let list = pods.list(&ListParams::default().labels(PD_PODS)).await?;
    let mut out = std::collections::BTreeMap::new();
    for p in list
        .items
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
    {
        let name = p.name_any();
        let Some(ip) = p.status.as_ref().and_then(|s| s.pod_ip.clone()) else {
            out.insert(name, "no Pod IP".to_owned());
            continue;
        };
        match env
            .pd_status(&format!("{ip}:2379"), "/health?serializable=true")
            .await
        {
            Ok(200) => {}
            Ok(code) => {
                out.insert(name, format!("etcd health answers {code}"));
            }
            Err(e) => {
                out.insert(name, format!("does not answer: {e:#}"));
            }
        }
    }
    Ok(out)
}

/// At every poll (1 s) PD lists exactly `n` stores that are not Tombstone, every one of them
/// Up (not Disconnected, Down or Offline). Reads that fail are tolerated twice in a row: PD's
/// availability is the quorum watcher's to judge.
pub fn stores_up_watch(w: &World, n: usize) -> Invariant {
    let env = w.env.clone();
    let addr = w.pd_addr();
    let failed = Arc::new(AtomicU32::new(0));
    Invariant::watch(
        &format!("{n} TiKV stores Up in PD"),
        Duration::from_secs(1),
        move || {
            let (env, addr, failed) = (env.clone(), addr.clone(), failed.clone());
            async move {
                let stores = match env.pd_stores(&addr).await {
                    Ok(s) => {
                        failed.store(0, Ordering::SeqCst);
                        s
                    }
                    Err(e) if failed.fetch_add(1, Ordering::SeqCst) >= 2 => return Err(e),
                    Err(_) => return Ok(()),
                };
                let live: Vec<String> = stores
                    .iter()
                    .filter(|s| s.state != "Tombstone")
                    .map(|s| format!("{} {}", s.id, s.state))
                    .collect();
                let up = stores.iter().filter(|s| s.state == "Up").count();
                if live.len() != n || up != n {
                    bail!("PD's stores: {live:?}");
                }
                Ok(())
            }
        },
    )
}
