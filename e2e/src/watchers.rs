//! Watchers shared by the e2e tests: invariants polled in the background while a test changes
//! a cluster.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use anyhow::{Result, bail};
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::ListParams;

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
    let env = w.env.clone();
    let pods = w.api::<Pod>();
    let failures = Arc::new(AtomicU32::new(0));
    Invariant::watch("PD quorum", Duration::from_millis(500), move || {
        let (env, pods, failures) = (env.clone(), pods.clone(), failures.clone());
        async move {
            match probe_pd_quorum(&env, &pods).await {
                Ok(()) => {
                    failures.store(0, Ordering::SeqCst);
                    Ok(())
                }
                Err(e) if failures.fetch_add(1, Ordering::SeqCst) >= 2 => Err(e),
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
        let healthy = health
            .as_array()
            .into_iter()
            .flatten()
            .filter(|h| h["health"].as_bool() == Some(true))
            .count();
        if listed == 0 || healthy * 2 <= listed {
            bail!("only {healthy} of {listed} PD members healthy");
        }
        return Ok(());
    }
    bail!("no PD member answered: {last}")
}
