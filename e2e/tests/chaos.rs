//! Chaos: one Cluster driven through a version upgrade of PD and TiKV, a TiKV scale-out and a
//! TiKV scale-in while the operator is SIGKILLed and restarted every 2-9 seconds throughout,
//! and PD's leader Pod is deleted once while a TiKV store's leaders are being evicted (the
//! operator SIGKILLed at the same moment).
//!
//! Watchers check the safety rules from PD's and the API server's view, independently of the
//! operator's own bookkeeping: PD keeps a healthy majority (each member's etcd asked at its Pod
//! IP), at most one PD member and one TiKV store disrupted at any moment (beyond the one fault
//! injected), a TiKV Pod goes only with no leader on its store, and a restarted store keeps its
//! evict-leader entry until it serves again. At the end: PD members equal PD Pods, Up stores
//! equal replicas, no evict-leader entry is left, and no PVC of a live instance was replaced.
//!
//! Two more tests stop a process behind its live Pod during a rolling restart (a store; a PD
//! member): no other member may go until it is back. The
//! API server restart has a test binary of its own (`apiserver_restart.rs`: it would disturb
//! every test running beside it), and two TiKVGroups scaled in at once are in
//! `tikv_lifecycle.rs`.
//!
//! Run with `cargo xtask e2e test chaos` (ignored in a plain `cargo test`).

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use kube::ResourceExt;
use kube::api::DeleteParams;
use serde_json::json;
use tikv_operator_api::{PD, PDGroup, TiKV, TiKVGroup};
use tikv_operator_e2e::harness::wait_until;
use tikv_operator_e2e::operator::{OperatorOptions, OperatorProcess};
use tikv_operator_e2e::watchers::{PD_PODS, pd_quorum_watch, pd_quorum_watch_tolerating};
use tikv_operator_e2e::world::World;

use support::*;

/// Kills and restarts the test's operator at random intervals until stopped.
struct OperatorChaos {
    stop: Arc<AtomicBool>,
    kills: Arc<AtomicUsize>,
    /// Pid of the operator running now (0 between a kill and the next start).
    pid: Arc<AtomicU32>,
    task: tokio::task::JoinHandle<Result<()>>,
}

impl OperatorChaos {
    /// Takes over from `w`'s operator (killed now) and runs its own, killing it every
    /// `min..=max` seconds (a small generator seeded from the clock; the seed is printed).
    fn start(w: &mut World, min: u64, max: u64) -> Self {
        w.operator.kill();
        let layout = w.env.layout.clone();
        let opts = OperatorOptions::for_namespace(&w.ns.name);
        let stop = Arc::new(AtomicBool::new(false));
        let kills = Arc::new(AtomicUsize::new(0));
        let pid = Arc::new(AtomicU32::new(0));
        let (stop2, kills2, pid2) = (stop.clone(), kills.clone(), pid.clone());
        let mut seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
            | 1;
        eprintln!("operator chaos: seed {seed}, killed every {min}-{max} s");
        let task = tokio::spawn(async move {
            let mut op = OperatorProcess::start(&layout, &opts)?;
            pid2.store(op.pid().unwrap_or(0), Ordering::SeqCst);
            while !stop2.load(Ordering::SeqCst) {
                // xorshift64
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let wait = Duration::from_millis(min * 1000 + seed % ((max - min) * 1000 + 1));
                let until = Instant::now() + wait;
                while Instant::now() < until && !stop2.load(Ordering::SeqCst) {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                if stop2.load(Ordering::SeqCst) {
                    break;
                }
                pid2.store(0, Ordering::SeqCst);
                op.kill();
                kills2.fetch_add(1, Ordering::SeqCst);
                op = OperatorProcess::start(&layout, &opts)?;
                pid2.store(op.pid().unwrap_or(0), Ordering::SeqCst);
            }
            op.kill();
            Ok(())
        });
        Self {
            stop,
            kills,
            pid,
            task,
        }
    }

    /// SIGKILLs the operator running now (if any) outside the schedule; the schedule starts
    /// the next one at its next turn, so the operator stays down for up to `max` seconds.
    fn kill_now(pid: &AtomicU32) -> bool {
        let p = pid.load(Ordering::SeqCst);
        p != 0
            && nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(i32::try_from(p).unwrap_or(i32::MAX)),
                nix::sys::signal::Signal::SIGKILL,
            )
            .is_ok()
    }

    /// Stops killing; `w` gets a fresh operator that is left alone. Returns the kill count.
    async fn finish(self, w: &mut World) -> Result<usize> {
        self.stop.store(true, Ordering::SeqCst);
        self.task.await.context("operator chaos task")??;
        w.restart_operator()?;
        Ok(self.kills.load(Ordering::SeqCst))
    }
}

/// The name of PD's leader, asked of any PD that answers.
async fn pd_leader(w: &World) -> Result<String> {
    let v = pd_get_any(&w.env, &w.api::<Pod>(), &w.pd_addr(), "/pd/api/v1/leader").await?;
    v["name"]
        .as_str()
        .map(str::to_owned)
        .context("PD answered no leader name")
}

/// Deletes PD's leader Pod once, the first time a TiKV store's leaders are being evicted, and
/// SIGKILLs the operator at the same moment.
fn kill_pd_leader_during_an_eviction(
    w: &World,
    operator: Arc<AtomicU32>,
) -> tokio::task::JoinHandle<Result<String>> {
    let (env, pods, service) = (w.env.clone(), w.api::<Pod>(), w.pd_addr());
    tokio::spawn(async move {
        let deadline = Instant::now() + Duration::from_secs(900);
        loop {
            ensure!(
                Instant::now() < deadline,
                "no TiKV leader eviction seen to kill PD's leader during"
            );
            if let Ok(ev) = evicting_stores(&env, &pods, &service).await
                && !ev.is_empty()
            {
                let v = pd_get_any(&env, &pods, &service, "/pd/api/v1/leader").await?;
                let leader = v["name"].as_str().context("no PD leader")?.to_owned();
                pods.delete(&leader, &DeleteParams::default()).await?;
                let op = OperatorChaos::kill_now(&operator);
                eprintln!(
                    "chaos: deleted PD leader Pod {leader} while evicting {ev:?} (operator \
                     killed with it: {op})"
                );
                return Ok(leader);
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    })
}

/// Waits until the TiKVGroup has `n` instances whose stores PD lists Up, none offline, and
/// no other store PD keeps (beside Tombstone ones).
async fn wait_tikv_stores(w: &World, n: usize, timeout: Duration) -> Result<()> {
    let pods = w.api::<Pod>();
    let service = w.pd_addr();
    wait_until(&w.env, &format!("{n} TiKV stores Up"), timeout, || async {
        let kvs = w.list::<TiKV>(None).await?;
        let ids: BTreeSet<u64> = kvs.iter().filter_map(store_id).collect();
        let st = stores(&w.env, &pods, &service).await?;
        let up: BTreeSet<u64> = st
            .iter()
            .filter(|s| s.state == "Up")
            .map(|s| s.id)
            .collect();
        let live = st.iter().filter(|s| s.state != "Tombstone").count();
        let ok = kvs.len() == n
            && kvs.iter().all(|k| !k.spec.offline)
            && ids.len() == n
            && up == ids
            && live == n;
        Ok(ok.then_some(()))
    })
    .await
}

async fn pvc_uids(w: &World) -> Result<BTreeMap<String, String>> {
    Ok(
        w.list::<PersistentVolumeClaim>(Some("app.kubernetes.io/managed-by=tikv-operator"))
            .await?
            .iter()
            .map(|p| (p.name_any(), p.uid().unwrap_or_default()))
            .collect(),
    )
}

#[tokio::test]
#[ignore = "needs the e2e environment: run `cargo xtask e2e test`"]
async fn chaos_upgrade_and_scaling_with_the_operator_killed_every_few_seconds() -> Result<()> {
    let mut w = World::start("chaos").await?;
    let r = chaos(&mut w).await;
    r.map_err(|e| w.explain(e))?;
    w.finish().await
}

async fn chaos(w: &mut World) -> Result<()> {
    let members = ready_cluster(w).await?;
    ensure!(members.len() == 3, "instances {members:?}");
    let pvcs_before = pvc_uids(w).await?;
    let pd_members = pd_instance_names(w).await?;
    let pd_rev = update_revision(w, "PDGroup").await?;
    let kv_rev = update_revision(w, "TiKVGroup").await?;

    // PD's leader is killed on purpose below: PD answers "no leader" while it elects
    // another (up to the leader lease and an election, ~10 s); a majority that does not
    // come back within 15 s still fails.
    let quorum = pd_quorum_watch_tolerating(w, 30);
    let pd_one = pd_disruption_watch(w, pd_members.clone());
    let watch = StoreWatch::start(w, members.clone());
    let chaos = OperatorChaos::start(w, 2, 9);
    let started = Instant::now();

    // 1. A version upgrade of PD and TiKV; PD's leader Pod goes once mid-eviction.
    let killer = kill_pd_leader_during_an_eviction(w, chaos.pid.clone());
    let version = json!({"spec": {"template": {"spec": {"version": NEW}}}});
    patch_merge(&w.api::<PDGroup>(), "pd", version.clone()).await?;
    patch_merge(&w.api::<TiKVGroup>(), "tikv", version).await?;
    wait_pd_rolled_out(w, NEW, pd_rev.as_deref(), Duration::from_secs(900)).await?;
    wait_kv_rolled_out(w, NEW, kv_rev.as_deref(), Duration::from_secs(1200)).await?;
    let killed = killer.await.context("PD leader killer")??;
    eprintln!(
        "chaos: upgrade done after {:.1}s (PD leader {killed} killed mid-eviction)",
        started.elapsed().as_secs_f64()
    );
    // The PD leader's Pod came back as the same member.
    wait_until(
        &w.env,
        "every PD Pod back and Ready",
        Duration::from_secs(300),
        || async {
            let pods = w.list::<Pod>(Some(PD_PODS)).await?;
            let ready = pods.iter().filter(|p| pod_ready(p)).count();
            Ok((pods.len() == 3 && ready == 3).then_some(()))
        },
    )
    .await?;

    // 2. TiKV scale-out 3 -> 4, then scale-in 4 -> 3.
    let groups = w.api::<TiKVGroup>();
    patch_merge(&groups, "tikv", json!({"spec": {"replicas": 4}})).await?;
    wait_tikv_stores(w, 4, Duration::from_secs(600)).await?;
    eprintln!(
        "chaos: 4 stores after {:.1}s",
        started.elapsed().as_secs_f64()
    );
    patch_merge(&groups, "tikv", json!({"spec": {"replicas": 3}})).await?;
    wait_tikv_stores(w, 3, Duration::from_secs(900)).await?;
    eprintln!(
        "chaos: 3 stores after {:.1}s",
        started.elapsed().as_secs_f64()
    );

    let kills = chaos.finish(w).await?;
    ensure!(kills >= 5, "the operator was killed only {kills} times");
    eprintln!("chaos: the operator was killed {kills} times");
    // Nothing moves once the operator is left alone.
    tokio::time::sleep(Duration::from_secs(10)).await;
    finish_all(vec![quorum, pd_one], watch).await?;

    // PD members equal PD Pods.
    let pd_pods: BTreeSet<String> = w
        .list::<Pod>(Some(PD_PODS))
        .await?
        .iter()
        .map(ResourceExt::name_any)
        .collect();
    let listed = pd_get_any(&w.env, &w.api::<Pod>(), &w.pd_addr(), "/pd/api/v1/members").await?;
    let names: BTreeSet<String> = listed["members"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m["name"].as_str().map(str::to_owned))
        .collect();
    ensure!(
        names == pd_pods && names.len() == 3,
        "PD members {names:?} but PD Pods {pd_pods:?}"
    );
    ensure!(pd_leader(w).await.is_ok(), "PD has no leader");
    // Up stores equal replicas; no evict-leader entry left.
    wait_tikv_stores(w, 3, Duration::from_secs(60)).await?;
    let evicting = evicting_stores(&w.env, &w.api::<Pod>(), &w.pd_addr()).await?;
    ensure!(
        evicting.is_empty(),
        "evict-leader entries left: {evicting:?}"
    );
    // No PVC of a live instance lost or replaced.
    let now = pvc_uids(w).await?;
    let live: BTreeSet<String> = w
        .list::<TiKV>(None)
        .await?
        .iter()
        .map(ResourceExt::name_any)
        .chain(w.list::<PD>(None).await?.iter().map(ResourceExt::name_any))
        .collect();
    for (pvc, uid) in &pvcs_before {
        let Some(owner) = live.iter().find(|i| pvc.ends_with(&format!("-{i}"))) else {
            continue;
        };
        match now.get(pvc) {
            Some(u) if u == uid => {}
            other => {
                bail!("the PVC {pvc} of live instance {owner} was lost or replaced: {other:?}")
            }
        }
    }
    Ok(())
}

/// A store whose process stops behind a live Pod (crashed or hung; the Pod stays Running) while
/// a rolling restart is requested: once PD reports the store not heartbeating, that store is
/// the Cluster's one disruption (`maxUnavailable` 1), so no other store's Pod may go until it
/// is back. The operator may restart the failed store itself (PD cannot move leaders off a
/// store that does not heartbeat; raft already did). Then the process comes back and the
/// rollout finishes: every store restarted exactly once, no evict-leader entry left.
#[tokio::test]
#[ignore = "needs the e2e environment: run `cargo xtask e2e test`"]
async fn a_store_stopped_behind_its_pod_holds_a_rolling_restart() -> Result<()> {
    let w = World::start("stopped").await?;
    let r = stopped_store(&w).await;
    r.map_err(|e| w.explain(e))?;
    w.finish().await
}

async fn stopped_store(w: &World) -> Result<()> {
    let members = ready_cluster(w).await?;
    ensure!(members.len() == 3, "instances {members:?}");
    let ids = instance_store_ids(w).await?;
    let uids = tikv_pod_uids(w).await?;
    let victim = members.first().context("no instance")?.clone();
    let victim_store = *ids.get(&victim).context("victim has no store id")?;
    let faults = InjectedFaults::default();
    lock(&faults.stopped).insert(victim.clone());
    let quorum = pd_quorum_watch(w);
    let watch = StoreWatch::start_with(w, members.clone(), faults);

    // 1. The victim's process stops; its Pod stays Running and Ready.
    w.env.stop_pod_process(&w.ns.name, &victim)?;
    let pods = w.api::<Pod>();
    let service = w.pd_addr();
    wait_until(
        &w.env,
        &format!("PD to report store {victim_store} of {victim} not heartbeating"),
        Duration::from_secs(120),
        || async {
            let st = stores(&w.env, &pods, &service).await?;
            let s = st.iter().find(|s| s.id == victim_store);
            Ok(
                s.is_some_and(|s| s.state == "Disconnected" || s.state == "Down")
                    .then_some(()),
            )
        },
    )
    .await?;
    let pod = pods.get(&victim).await?;
    ensure!(
        pod_ready(&pod),
        "the victim's Pod must stay Ready: the fault is in the process"
    );

    // 2. A rolling restart is requested; for a while, only the victim may be restarted.
    patch_merge(
        &w.api::<TiKVGroup>(),
        "tikv",
        json!({"metadata": {"annotations": {"core.tikv.org/restarted-at": "2026-12-06T21:00:00Z"}}}),
    )
    .await?;
    hold_others(&members, &victim, &uids, || tikv_pod_uids(w))
        .await
        .with_context(|| format!("store {victim_store} of {victim} was down (maxUnavailable 1)"))?;
    let group = w.api::<TiKVGroup>().get("tikv").await?;
    let progressing = group
        .status
        .as_ref()
        .and_then(|s| condition(&s.common.conditions, "Progressing").cloned());
    eprintln!("stopped store: held 45 s; TiKVGroup Progressing: {progressing:?}");

    // 3. The process comes back; the rollout finishes.
    w.env.start_pod_process(&w.ns.name, &victim)?;
    let new_uids = wait_all_restarted(w, &uids, OLD, Duration::from_secs(900)).await?;
    wait_kv_rolled_out(w, OLD, None, Duration::from_secs(300)).await?;
    tokio::time::sleep(Duration::from_secs(10)).await;
    let restarts = finish_all(vec![quorum], watch).await?;
    check_restarted_once(w, &members, &restarts, &new_uids, &ids).await?;
    Ok(())
}

/// For 45 s, every half second: the Pods of `members` other than `victim` keep the UIDs of
/// `before` (read by `now`), i.e. nothing but the failed member is restarted.
async fn hold_others<F, Fut>(
    members: &BTreeSet<String>,
    victim: &str,
    before: &BTreeMap<String, String>,
    mut now: F,
) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<BTreeMap<String, String>>>,
{
    let hold = Instant::now();
    while hold.elapsed() < Duration::from_secs(45) {
        let uids = now().await?;
        for m in members.iter().filter(|m| *m != victim) {
            ensure!(
                uids.get(m) == before.get(m),
                "the Pod of {m} went while another member was down: {:?} -> {:?}",
                before.get(m),
                uids.get(m)
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Ok(())
}

/// The UID of each PD Pod of the test.
async fn pd_pod_uids(w: &World) -> Result<BTreeMap<String, String>> {
    Ok(w.list::<Pod>(Some(PD_PODS))
        .await?
        .iter()
        .map(|p| (p.name_any(), uid(p)))
        .collect())
}

/// A PD member whose process stops behind its live Pod while a PD rolling restart is
/// requested: the member counts as down (its etcd does not answer), so the rollout may restart
/// that member but no other until it answers again; PD keeps a healthy majority throughout.
#[tokio::test]
#[ignore = "needs the e2e environment: run `cargo xtask e2e test`"]
async fn a_pd_member_stopped_behind_its_pod_holds_a_pd_rolling_restart() -> Result<()> {
    let w = World::start("pdstopped").await?;
    let r = stopped_pd_member(&w).await;
    r.map_err(|e| w.explain(e))?;
    w.finish().await
}

async fn stopped_pd_member(w: &World) -> Result<()> {
    ready_cluster(w).await?;
    let members = pd_instance_names(w).await?;
    ensure!(members.len() == 3, "PD instances {members:?}");
    let leader = pd_leader(w).await?;
    let victim = members
        .iter()
        .find(|m| **m != leader)
        .context("no PD follower")?
        .clone();
    let uids = pd_pod_uids(w).await?;
    let quorum = pd_quorum_watch(w);
    let pd_one = pd_disruption_watch(w, members.clone());

    // 1. The victim's pd-server stops; its Pod stays Running and Ready.
    w.env.stop_pod_process(&w.ns.name, &victim)?;
    let pods = w.api::<Pod>();
    wait_until(
        &w.env,
        &format!("PD member {victim} not answering"),
        Duration::from_secs(60),
        || async {
            let silent =
                tikv_operator_e2e::watchers::pd_members_not_answering(&w.env, &pods).await?;
            Ok(silent.contains_key(&victim).then_some(()))
        },
    )
    .await?;

    // 2. A PD rolling restart is requested; for a while, only the victim may be restarted.
    patch_merge(
        &w.api::<PDGroup>(),
        "pd",
        json!({"metadata": {"annotations": {"core.tikv.org/restarted-at": "2026-12-06T21:10:00Z"}}}),
    )
    .await?;
    hold_others(&members, &victim, &uids, || pd_pod_uids(w))
        .await
        .with_context(|| format!("PD member {victim} was down"))?;

    // 3. The process comes back; the rollout finishes: every PD Pod recreated once.
    w.env.start_pod_process(&w.ns.name, &victim)?;
    wait_until(
        &w.env,
        "every PD Pod recreated and Ready",
        Duration::from_secs(600),
        || async {
            let pods = w.list::<Pod>(Some(PD_PODS)).await?;
            let done = pods.len() == 3
                && pods
                    .iter()
                    .all(|p| pod_ready(p) && uids.get(&p.name_any()) != Some(&uid(p)));
            Ok(done.then_some(()))
        },
    )
    .await?;
    wait_pd_rolled_out(w, OLD, None, Duration::from_secs(300)).await?;
    wait_until(
        &w.env,
        "every PD member answering",
        Duration::from_secs(120),
        || async {
            let silent =
                tikv_operator_e2e::watchers::pd_members_not_answering(&w.env, &pods).await?;
            Ok(silent.is_empty().then_some(()))
        },
    )
    .await?;
    tokio::time::sleep(Duration::from_secs(10)).await;
    let q = quorum.finish().await;
    let one = pd_one.finish().await;
    q?;
    one?;
    Ok(())
}
