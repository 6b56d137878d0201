//! Mutual TLS (issue #19) against real pd-server processes speaking TLS and simulated stores
//! dialing PD with TLS: a TLS Cluster reaches Ready and PD refuses plaintext; leaf and CA
//! rotations in place restart nothing; missing Secrets and a certificate without the right
//! name are refused with their conditions.
//!
//! Certificates are generated here (`tikv_operator_e2e::pki`). The harness's own PD requests
//! (`Env::pd_get`, the watchers) use the client certificate once `Env::set_pd_tls` is called,
//! each over a new TLS connection.
//!
//! Run with `cargo xtask e2e test tls` (the tests are ignored in a plain `cargo test`).

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use tikv_operator_api::{Cluster, PD, PDGroup, TiKV, TiKVGroup};
use tikv_operator_e2e::fixtures::BASIC_SMALL;
use tikv_operator_e2e::harness::{PdTls, wait_until};
use tikv_operator_e2e::pki::{self, Ca, ClusterCerts, Leaf};
use tikv_operator_e2e::watchers::{
    PD_PODS, TIKV_PODS, healthy_members, pd_quorum_watch, stores_up_watch,
};
use tikv_operator_e2e::world::{MANAGED, World};

use support::{condition, wait_cluster_ready};

const READY: Duration = Duration::from_secs(180);

/// The basic example (PDGroup `pd`, TiKVGroup `tikv`, Cluster `basic`) with TLS on.
fn tls_cluster() -> String {
    let anchor = "kind: Cluster\nmetadata:\n  name: basic\nspec: {}\n";
    assert_eq!(
        BASIC_SMALL.matches(anchor).count(),
        1,
        "BASIC_SMALL changed"
    );
    BASIC_SMALL.replace(
        anchor,
        "kind: Cluster\nmetadata:\n  name: basic\nspec:\n  tlsCluster:\n    enabled: true\n",
    )
}

/// The cluster's Secrets, issued by `ca`.
fn certs(w: &World, ca: &Ca) -> Result<ClusterCerts> {
    ClusterCerts::issue(ca, &w.ns.name, "basic", "pd", "tikv")
}

/// What the harness presents to PD: the client Secret's material.
fn client_tls(w: &World, certs: &ClusterCerts) -> PdTls {
    PdTls {
        ca_bundle: certs.ca_bundle.clone(),
        leaf: certs.client.clone(),
        name_for_ips: format!("pd-pd.{}.svc", w.ns.name),
    }
}

/// Secrets, then the TLS Cluster; waits until it is Ready with 3 stores Up (read over TLS).
async fn tls_cluster_ready(w: &World, certs: &ClusterCerts) -> Result<()> {
    w.ns.apply(&certs.secrets()).await?;
    w.env.set_pd_tls(Some(client_tls(w, certs)));
    w.ns.apply(&tls_cluster()).await?;
    wait_cluster_ready(w, READY).await
}

/// The Pod IPs of the PD members.
async fn pd_ips(w: &World) -> Result<BTreeMap<String, String>> {
    Ok(w.list::<Pod>(Some(PD_PODS))
        .await?
        .iter()
        .filter_map(|p| Some((p.name_any(), p.status.as_ref()?.pod_ip.clone()?)))
        .collect())
}

/// PD reports `n` members, all healthy, every one advertising `https` URLs.
async fn pd_healthy_over_tls(w: &World, n: usize) -> Result<()> {
    let addr = w.pd_addr();
    let health = w.env.pd_get(&addr, "/pd/api/v1/health").await?;
    let healthy = healthy_members(&health);
    ensure!(healthy == n, "PD health: {health}");
    let members = w.env.pd_get(&addr, "/pd/api/v1/members").await?;
    let list = members["members"].as_array().cloned().unwrap_or_default();
    ensure!(list.len() == n, "PD members: {members}");
    for m in &list {
        for key in ["client_urls", "peer_urls"] {
            let urls = m[key].as_array().cloned().unwrap_or_default();
            ensure!(
                !urls.is_empty()
                    && urls
                        .iter()
                        .all(|u| u.as_str().is_some_and(|u| u.starts_with("https://"))),
                "member {} {key}: {urls:?}",
                m["name"]
            );
        }
    }
    Ok(())
}

/// Key prefix of a store simulator's PD session count in [`processes`].
const SESSION: &str = "store session ";

/// Everything that would change if a Pod or its process restarted: Pod UIDs and container
/// restart counts (PD and TiKV Pods), each pd-server's `start_timestamp` (PD's
/// `/pd/api/v1/status` at the member's Pod IP) and each store's `start_timestamp` (a store
/// simulator registers its start time, as TiKV does); and how many PD sessions each store
/// simulator opened (one more when its connection to PD broke: its established TLS
/// connections must survive a rotation).
async fn processes(w: &World) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for p in w.list::<Pod>(Some(MANAGED)).await? {
        let restarts: i32 = p
            .status
            .as_ref()
            .and_then(|s| s.container_statuses.as_ref())
            .into_iter()
            .flatten()
            .map(|c| c.restart_count)
            .sum();
        out.insert(
            format!("pod {}", p.name_any()),
            format!("uid {} restarts {restarts}", p.uid().unwrap_or_default()),
        );
    }
    for (name, ip) in pd_ips(w).await? {
        let st = w
            .env
            .pd_get(&format!("{ip}:2379"), "/pd/api/v1/status")
            .await?;
        out.insert(
            format!("pd-server {name}"),
            format!("started {}", st["start_timestamp"]),
        );
    }
    for p in w.list::<Pod>(Some(TIKV_PODS)).await? {
        let st = w
            .env
            .store_status(&w.ns.name, &p.name_any())
            .unwrap_or_default();
        out.insert(
            format!("{SESSION}{}", p.name_any()),
            format!("sessions {}", st.sessions),
        );
    }
    let pods = w.api::<Pod>();
    for s in support::stores(&w.env, &pods, &w.pd_addr()).await? {
        if s.state != "Tombstone" {
            out.insert(format!("store {}", s.id), format!("started {}", s.start));
        }
    }
    Ok(out)
}

/// Applies `certs`' Secrets and waits until every PD member presents the new PD certificate
/// on a new connection (the agent rewrote the files, as a kubelet does, and pd-server loaded
/// them for the handshake). `client` is what the harness presents from now on.
async fn rotate(w: &World, certs: &ClusterCerts, client: &ClusterCerts) -> Result<()> {
    w.ns.apply(&certs.secrets()).await?;
    w.env.set_pd_tls(Some(client_tls(w, client)));
    let want = certs.pd.der()?;
    wait_until(
        &w.env,
        "every PD member serving the new certificate",
        Duration::from_secs(30),
        || async {
            for (name, ip) in pd_ips(w).await? {
                let served = w
                    .env
                    .pd_served_certificate(&format!("{ip}:2379"))
                    .await
                    .with_context(|| format!("new TLS connection to {name}"))?;
                if served != want {
                    bail!("{name} still serves its previous certificate");
                }
            }
            Ok(Some(()))
        },
    )
    .await
}

/// A fresh client (new TLS connection, the current client certificate) reaches PD, which
/// reports 3 healthy members and 3 Up stores.
async fn fresh_client_reaches_pd(w: &World) -> Result<()> {
    pd_healthy_over_tls(w, 3).await?;
    let stores = w.env.pd_stores(&w.pd_addr()).await?;
    let up = stores.iter().filter(|s| s.state == "Up").count();
    ensure!(up == 3, "PD's stores: {stores:?}");
    Ok(())
}

/// `GET /pd/api/v1/members` at `url` with `http`: PD's answer or why there is none.
async fn members_answer(http: reqwest::Client, url: &str) -> Result<(u16, String), String> {
    match http.get(format!("{url}/pd/api/v1/members")).send().await {
        Err(e) => Err(format!("{:#}", anyhow::Error::from(e))),
        Ok(resp) => Ok((
            resp.status().as_u16(),
            resp.text().await.unwrap_or_default(),
        )),
    }
}

/// A plaintext HTTP request to PD's client port gets no answer from PD's API (the connection
/// is closed without a reply, or a TLS server's 400).
async fn plaintext_refused(addr: &str) -> Result<String> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()?;
    match members_answer(http, &format!("http://{addr}")).await {
        Err(e) => Ok(e),
        Ok((status, body)) => {
            ensure!(
                !(200..300).contains(&status) && !body.contains("\"members\""),
                "PD answered plaintext: {status} {body}"
            );
            Ok(format!("{status} {}", body.trim()))
        }
    }
}

/// A TLS connection without a client certificate is refused (mutual TLS).
async fn no_client_cert_refused(w: &World, addr: &str, ca_bundle: &str) -> Result<String> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .tls_backend_preconfigured(pki::client_config(
            ca_bundle,
            None::<&Leaf>,
            &format!("pd-pd.{}.svc", w.ns.name),
        )?)
        .build()?;
    match members_answer(http, &format!("https://{addr}")).await {
        Err(e) => Ok(e),
        Ok((status, _)) => bail!("PD answered a TLS client without a certificate: {status}"),
    }
}

#[tokio::test]
#[ignore = "needs the e2e environment: run `cargo xtask e2e test`"]
async fn a_tls_cluster_reaches_ready_and_pd_refuses_plaintext() -> Result<()> {
    let w = World::start("tls").await?;
    let r = async {
        let ca = Ca::new("tikv-e2e-ca")?;
        let certs = certs(&w, &ca)?;
        tls_cluster_ready(&w, &certs).await?;

        // PD's own API, over TLS with the client certificate: 3 healthy members with https
        // URLs and 3 Up stores (the simulated stores registered over TLS).
        fresh_client_reaches_pd(&w).await?;
        for (name, ip) in pd_ips(&w).await? {
            let addr = format!("{ip}:2379");
            let plain = plaintext_refused(&addr).await?;
            let anonymous = no_client_cert_refused(&w, &addr, &certs.ca_bundle).await?;
            eprintln!(
                "{name}: plaintext -> {plain}; TLS without a client certificate -> {anonymous}"
            );
        }
        plaintext_refused(&w.pd_addr()).await?;

        // The operator's PD traffic: PD answers only TLS with a client certificate, so every
        // PD request the operator counts without an error went over TLS.
        let m = w.operator.metrics().await?;
        let requests: f64 = m
            .by("tikv_operator_pd_requests_total", "operation")
            .values()
            .sum();
        let errors: f64 = m
            .by("tikv_operator_pd_request_errors_total", "operation")
            .values()
            .sum();
        ensure!(
            requests - errors >= 1.0,
            "the operator made {requests} PD requests, {errors} failed"
        );
        eprintln!("operator: {requests} PD requests, {errors} failed");
        Ok(())
    }
    .await;
    r.map_err(|e| w.explain(e))?;
    w.finish().await
}

/// The part of [`processes`] that belongs to PD (`pd` true) or TiKV (without the store
/// sessions: a restart of PD ends them).
fn part(all: &BTreeMap<String, String>, pd: bool) -> BTreeMap<String, String> {
    all.iter()
        .filter(|(k, _)| !k.starts_with(SESSION))
        .filter(|(k, _)| (k.starts_with("pd-server ") || k.starts_with("pod pd-")) == pd)
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// A client with a certificate of `ca` is refused by PD (every member, new connections);
/// returns the error.
async fn refused_with(w: &World, certs: &ClusterCerts) -> Result<String> {
    w.env.set_pd_tls(Some(client_tls(w, certs)));
    let mut errors = Vec::new();
    for (name, ip) in pd_ips(w).await? {
        match w
            .env
            .pd_get(&format!("{ip}:2379"), "/pd/api/v1/members")
            .await
        {
            Ok(_) => bail!("{name} accepted the client certificate"),
            Err(e) => errors.push(format!("{name}: {e:#}")),
        }
    }
    Ok(errors.join("; "))
}

#[tokio::test]
#[ignore = "needs the e2e environment: run `cargo xtask e2e test`"]
async fn leaf_and_ca_rotation_keep_the_cluster_ready_without_restarts() -> Result<()> {
    let w = World::start("tlsrot").await?;
    let r = async {
        let old = Ca::new("tikv-e2e-ca-old")?;
        let new = Ca::new("tikv-e2e-ca-new")?;
        let first = certs(&w, &old)?;
        tls_cluster_ready(&w, &first).await?;
        let before = processes(&w).await?;
        let quorum = pd_quorum_watch(&w);
        let stores = stores_up_watch(&w, 3);

        // Leaf rotation: new certificates from the same CA, Secrets updated in place. PD
        // presents its new certificate on the next connection and accepts the new client
        // certificate; the stores keep heartbeating; nothing restarts.
        let leaves = first.reissued(&old)?;
        rotate(&w, &leaves, &leaves).await?;
        fresh_client_reaches_pd(&w).await?;
        ensure!(
            processes(&w).await? == before,
            "the leaf rotation restarted something"
        );

        // CA rotation, step 1: ca.crt = old + new everywhere, leaves unchanged. New
        // connections with the old leaves keep working.
        let overlap = leaves.with_bundle(&[&old, &new]);
        rotate(&w, &overlap, &overlap).await?;
        fresh_client_reaches_pd(&w).await?;
        ensure!(
            processes(&w).await? == before,
            "the new CA bundle restarted something"
        );
        // pd-server (its embedded etcd's TLS listener) reads `cacert-path` once, at start:
        // it re-reads its own certificate and key for every handshake, but keeps verifying
        // client and peer certificates against the CA pool it started with. A certificate of
        // the new CA is refused ("tls: failed to verify certificate: x509: certificate signed
        // by unknown authority" in pd-server's log, "bad certificate" for the client) until
        // the member restarts with the bundle. Moving the leaves to the new CA now would cut
        // PD's members off each other on their next reconnection.
        let probe = overlap.reissued(&new)?;
        let refused = refused_with(&w, &probe).await?;
        eprintln!("PD before a restart, a new-CA client certificate: refused: {refused}");
        w.env.set_pd_tls(Some(client_tls(&w, &overlap)));

        // So PD gets the bundle through a rolling restart (the operator's safe path, one
        // member at a time); TiKV (the store simulator reads its files per connection, as
        // TiKV does) does not restart.
        // PD's quorum watcher (two failed probes tolerated) is not made for a restart of the
        // leader; during the restart the disruption watcher judges PD (one member at a time).
        // Nor is the stores watcher: a new PD leader reports every store Disconnected until
        // the store's next heartbeat reaches it (seen in a run: all three at once, seconds
        // after the leader's restart). Both watch again once the restart settled.
        quorum.finish().await?;
        stores.finish().await?;
        let members: std::collections::BTreeSet<String> = pd_ips(&w).await?.into_keys().collect();
        let disruption = support::pd_disruption_watch(&w, members);
        let rev = w
            .api::<PDGroup>()
            .get("pd")
            .await?
            .status
            .and_then(|s| s.group.update_revision);
        w.api::<PDGroup>()
            .patch(
                "pd",
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Merge(serde_json::json!({"metadata": {"annotations": {
                    "core.tikv.org/restarted-at": "2026-12-07T11:00:00Z"}}})),
            )
            .await?;
        support::wait_pd_rolled_out(&w, support::OLD, rev.as_deref(), READY).await?;
        disruption.finish().await?;
        let quorum = pd_quorum_watch(&w);
        // The stores' sessions to PD broke with the restart of their PD member; they open
        // new ones within seconds. What runs once that settled is the reference from here on.
        let restarted = wait_until(
            &w.env,
            "processes and store sessions settled after PD's restart",
            Duration::from_secs(60),
            || async {
                let a = processes(&w).await?;
                tokio::time::sleep(Duration::from_secs(6)).await;
                Ok((processes(&w).await? == a).then_some(a))
            },
        )
        .await?;
        ensure!(
            part(&restarted, false) == part(&before, false),
            "TiKV restarted:\nbefore {before:#?}\nafter {restarted:#?}"
        );
        wait_until(
            &w.env,
            "3 stores Up in PD after its restart",
            Duration::from_secs(60),
            || async {
                let s = w.env.pd_stores(&w.pd_addr()).await?;
                Ok((s.iter().filter(|s| s.state == "Up").count() == 3).then_some(()))
            },
        )
        .await?;
        let stores = stores_up_watch(&w, 3);
        fresh_client_reaches_pd(&w).await?;

        // Step 2: leaves from the new CA (the bundle still holds both).
        let moved = overlap.reissued(&new)?;
        rotate(&w, &moved, &moved).await?;
        fresh_client_reaches_pd(&w).await?;

        // Step 3: ca.crt = the new CA alone.
        let done = moved.with_bundle(&[&new]);
        rotate(&w, &done, &done).await?;
        fresh_client_reaches_pd(&w).await?;

        // Watchers see a few more heartbeats on the final certificates.
        tokio::time::sleep(Duration::from_secs(12)).await;
        quorum.finish().await?;
        stores.finish().await?;
        wait_cluster_ready(&w, Duration::from_secs(30)).await?;
        let after = processes(&w).await?;
        ensure!(
            after == restarted,
            "something restarted after PD's restart:\nbefore {restarted:#?}\nafter {after:#?}"
        );
        Ok(())
    }
    .await;
    r.map_err(|e| w.explain(e))?;
    w.finish().await
}

/// Waits until `kind`/`name`'s Synced condition is False with `reason` and a message that
/// contains `names`; returns the message.
async fn wait_refused(
    w: &World,
    kind: &str,
    name: &str,
    reason: &str,
    names: &str,
) -> Result<String> {
    wait_until(
        &w.env,
        &format!("{kind} {name} Synced=False/{reason} naming {names:?}"),
        Duration::from_secs(60),
        || async {
            let conds = match kind {
                "Cluster" => w.api::<Cluster>().get(name).await?.status.map(|s| s.common),
                "PDGroup" => w.api::<PDGroup>().get(name).await?.status.map(|s| s.common),
                _ => w
                    .api::<TiKVGroup>()
                    .get(name)
                    .await?
                    .status
                    .map(|s| s.common),
            }
            .map(|c| c.conditions)
            .unwrap_or_default();
            let Some(c) = condition(&conds, "Synced") else {
                return Ok(None);
            };
            if c.status == "False" && c.reason == reason && c.message.contains(names) {
                Ok(Some(c.message.clone()))
            } else {
                bail!("Synced={} {}: {}", c.status, c.reason, c.message)
            }
        },
    )
    .await
}

#[tokio::test]
#[ignore = "needs the e2e environment: run `cargo xtask e2e test`"]
async fn a_missing_secret_and_a_wrong_san_are_refused() -> Result<()> {
    let w = World::start("tlsbad").await?;
    let r = async {
        let ca = Ca::new("tikv-e2e-ca")?;
        let certs = certs(&w, &ca)?;
        // No TiKV group Secret.
        w.ns.apply(&format!(
            "{}\n---\n{}",
            certs.pd_secret(),
            certs.client_secret()
        ))
        .await?;
        w.env.set_pd_tls(Some(client_tls(&w, &certs)));
        w.ns.apply(&tls_cluster()).await?;
        let secret = "tikv-tikv-tls";
        let msg = wait_refused(&w, "TiKVGroup", "tikv", "TLSSecretMissing", secret).await?;
        eprintln!("missing Secret: {msg}");
        // PD goes ahead meanwhile (its Secret is fine): wait for its members, then check that
        // no TiKV instance exists.
        wait_until(&w.env, "3 PD members healthy", READY, || async {
            Ok(pd_healthy_over_tls(&w, 3).await.ok())
        })
        .await?;
        no_tikv(&w).await?;
        let reasons = w.event_reasons("involvedObject.kind=TiKVGroup").await?;
        ensure!(
            reasons.contains("TLSSecretMissing"),
            "TiKVGroup Events: {reasons:?}"
        );

        // A certificate without the peer wildcard.
        let wrong = ca.issue("tikv", &pki::client_sans())?;
        w.ns.apply(&pki::secret_yaml(secret, &certs.ca_bundle, &wrong))
            .await?;
        let wildcard = format!("*.tikv-tikv-peer.{}.svc", w.ns.name);
        let msg = wait_refused(
            &w,
            "TiKVGroup",
            "tikv",
            "TLSCertificateMissingSAN",
            &wildcard,
        )
        .await?;
        eprintln!("wrong SAN: {msg}");
        no_tikv(&w).await?;

        // The right Secret: the group proceeds.
        w.ns.apply(&certs.tikv_secret()).await?;
        wait_cluster_ready(&w, READY).await?;

        // A Cluster whose client Secret is missing gets no PD member.
        let other = other_cluster();
        let pd2 = ClusterCerts::issue(&ca, &w.ns.name, "other", "pd2", "unused")?;
        w.ns.apply(&pd2.pd_secret()).await?;
        w.ns.apply(&other).await?;
        let msg = wait_refused(
            &w,
            "Cluster",
            "other",
            "TLSSecretMissing",
            "other-client-tls",
        )
        .await?;
        eprintln!("missing client Secret: {msg}");
        tokio::time::sleep(Duration::from_secs(5)).await;
        let members: Vec<String> = w
            .list::<PD>(None)
            .await?
            .iter()
            .filter(|p| p.name_any().starts_with("pd2-"))
            .map(ResourceExt::name_any)
            .collect();
        ensure!(members.is_empty(), "PD instances of pd2: {members:?}");
        Ok(())
    }
    .await;
    r.map_err(|e| w.explain(e))?;
    w.finish().await
}

/// No TiKV instance and no TiKV Pod exist (checked after a few seconds in which the operator
/// could have wrongly created one).
async fn no_tikv(w: &World) -> Result<()> {
    tokio::time::sleep(Duration::from_secs(5)).await;
    let kvs: Vec<TiKV> = w.list(None).await?;
    let pods: Vec<Pod> = w.list::<Pod>(Some(TIKV_PODS)).await?;
    ensure!(
        kvs.is_empty() && pods.is_empty(),
        "TiKV created without a usable Secret: {} instances, {} Pods",
        kvs.len(),
        pods.len()
    );
    Ok(())
}

/// A second TLS Cluster `other` with a PDGroup `pd2` (one member), whose client Secret
/// (`other-client-tls`) is never created: the Cluster and PDGroup of [`tls_cluster`], renamed.
fn other_cluster() -> String {
    let docs: Vec<&str> = BASIC_SMALL.split("\n---\n").collect();
    let yaml = tls_cluster()
        .split("\n---\n")
        .take(docs.len() - 1)
        .collect::<Vec<_>>()
        .join("\n---\n");
    yaml.replace("name: basic", "name: other")
        .replace("name: pd\n", "name: pd2\n")
        .replace("replicas: 3", "replicas: 1")
}
