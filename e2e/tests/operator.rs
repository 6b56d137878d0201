//! The `tikv-operator` binary against the e2e environment: its HTTP endpoint, leader election
//! between two processes over a real Lease (crash and graceful hand-over), and the RBAC of
//! `manifests/operator/namespaced/` used through a real ServiceAccount token.
//!
//! Every operator here watches only its test namespace and keeps its Lease there.
//! Run with `cargo xtask e2e test operator` (the tests are ignored in a plain `cargo test`).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Pod, Secret, ServiceAccount};
use kube::Api;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use tikv_operator_e2e::config;
use tikv_operator_e2e::harness::{Env, TestNamespace, wait_until};
use tikv_operator_e2e::operator::{OperatorOptions, OperatorProcess, fail_with_logs, http_get};

/// Short leader election timings so that a takeover happens in seconds.
const LEASE: Duration = Duration::from_secs(6);
const RENEW: Duration = Duration::from_secs(4);
const RETRY: Duration = Duration::from_secs(1);

/// The value of an unlabelled sample (`name value`) in a metrics text.
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .filter_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .find_map(|v| v.trim().parse().ok())
}

/// An operator with leader election on, its Lease (default name) in `ns`.
fn elector(ns: &TestNamespace, identity: &str, extra: &[&str]) -> OperatorOptions {
    let mut opts = OperatorOptions::for_namespace(&ns.name);
    opts.name = format!("{}-{identity}", ns.name);
    opts.leader_elect = true;
    opts.extra_args = [
        "--leader-elect-namespace",
        ns.name.as_str(),
        "--leader-elect-identity",
        identity,
        "--leader-elect-lease-duration",
        &format!("{}s", LEASE.as_secs()),
        "--leader-elect-renew-deadline",
        &format!("{}s", RENEW.as_secs()),
        "--leader-elect-retry-period",
        &format!("{}s", RETRY.as_secs()),
    ]
    .iter()
    .chain(extra)
    .map(|s| (*s).to_owned())
    .collect();
    opts
}

async fn holder(env: &Env, ns: &str) -> Result<Option<String>> {
    let leases: Api<Lease> = Api::namespaced(env.client.clone(), ns);
    Ok(leases
        .get_opt("tikv-operator")
        .await?
        .and_then(|l| l.spec)
        .and_then(|s| s.holder_identity)
        .filter(|h| !h.is_empty()))
}

async fn wait_for_holder(env: &Env, ns: &str, want: &[&str], timeout: Duration) -> Result<String> {
    wait_until(
        env,
        &format!("Lease held by one of {want:?}"),
        timeout,
        || async move {
            Ok(holder(env, ns)
                .await?
                .filter(|h| want.contains(&h.as_str())))
        },
    )
    .await
}

/// `tikv_operator_leader` of a running operator.
async fn leader_gauge(op: &OperatorProcess) -> Result<f64> {
    let (code, text) = op.get("/metrics").await?;
    ensure!(code == 200, "/metrics answered {code}");
    sample(&text, "tikv_operator_leader").context("no tikv_operator_leader sample")
}

#[tokio::test]
#[ignore = "needs the e2e environment: run `cargo xtask e2e test`"]
async fn operator_serves_health_and_metrics() -> Result<()> {
    let env = Env::get().await?;
    let ns = env.namespace("op-http").await?;
    let mut op = OperatorProcess::start(&env.layout, &elector(&ns, "solo", &[]))?;
    let result = async {
        let (code, body) = wait_until(&env, "/healthz answers", Duration::from_secs(30), || {
            let addr = op.http.clone();
            async move { Ok(http_get(&addr, "/healthz").await.ok()) }
        })
        .await?;
        ensure!(code == 200 && body == "ok\n", "/healthz: {code} {body:?}");
        wait_for_holder(&env, &ns.name, &["solo"], Duration::from_secs(20)).await?;
        let text = wait_until(&env, "leader gauge 1", Duration::from_secs(10), || {
            let addr = op.http.clone();
            async move {
                let (_, text) = http_get(&addr, "/metrics").await?;
                Ok((sample(&text, "tikv_operator_leader") == Some(1.0)).then_some(text))
            }
        })
        .await?;
        for want in [
            r#"tikv_operator_kube_requests_total{verb="get",resource="leases"}"#,
            r#"tikv_operator_kube_requests_total{verb="create",resource="leases"}"#,
            "tikv_operator_build_info{version=",
        ] {
            ensure!(text.contains(want), "/metrics lacks {want}:\n{text}");
        }
        // The Lease is renewed every retry period: the update counter grows.
        let updates = |t: &str| {
            t.lines()
                .find(|l| {
                    l.starts_with(
                        r#"tikv_operator_kube_requests_total{verb="update",resource="leases"}"#,
                    )
                })
                .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        let before = updates(&text);
        tokio::time::sleep(RETRY * 3).await;
        let (_, later) = op.get("/metrics").await?;
        ensure!(
            updates(&later) >= before + 2.0,
            "Lease renewals not counted: {before} then {}",
            updates(&later)
        );
        // /readyz answers; until the controllers report synced caches it is 503 and says why.
        let (code, body) = op.get("/readyz").await?;
        ensure!(
            (code == 200 && body == "ok\n")
                || (code == 503 && body.contains("watch caches not synced")),
            "/readyz: {code} {body:?}"
        );
        ensure!(op.running(), "the operator exited");
        Ok(())
    }
    .await;
    op.stop(Duration::from_secs(10));
    result.map_err(|e| fail_with_logs(e, &[&op]))?;
    ns.cleanup().await
}

/// Needs the controllers (crates/controller): `/readyz` turns 200 once every watch cache has
/// listed.
#[tokio::test]
#[ignore = "needs the e2e environment: run `cargo xtask e2e test`"]
async fn operator_becomes_ready_once_caches_sync() -> Result<()> {
    let env = Env::get().await?;
    let ns = env.namespace("op-ready").await?;
    let mut op = OperatorProcess::start(&env.layout, &elector(&ns, "ready", &[]))?;
    let result = op.wait_ready(&env, Duration::from_secs(60)).await;
    op.stop(Duration::from_secs(10));
    result.map_err(|e| fail_with_logs(e, &[&op]))?;
    ns.cleanup().await
}

#[tokio::test]
#[ignore = "needs the e2e environment: run `cargo xtask e2e test`"]
async fn operator_standby_takes_over_when_the_leader_is_killed() -> Result<()> {
    let env = Env::get().await?;
    let ns = env.namespace("op-le").await?;
    let mut a = OperatorProcess::start(&env.layout, &elector(&ns, "op-a", &[]))?;
    let mut b = OperatorProcess::start(&env.layout, &elector(&ns, "op-b", &[]))?;
    let result = async {
        let first =
            wait_for_holder(&env, &ns.name, &["op-a", "op-b"], Duration::from_secs(30)).await?;
        // Exactly one leader, as the Lease and both processes see it, for a while.
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            let (ga, gb) = (leader_gauge(&a).await?, leader_gauge(&b).await?);
            let now = holder(&env, &ns.name).await?;
            ensure!(
                now.as_deref() == Some(first.as_str()),
                "holder changed to {now:?}"
            );
            ensure!(ga + gb <= 1.0, "both report leadership: a={ga} b={gb}");
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let (leader, standby, standby_id) = if first == "op-a" {
            (&mut a, &b, "op-b")
        } else {
            (&mut b, &a, "op-a")
        };
        ensure!(
            leader_gauge(leader).await? == 1.0,
            "the holder does not report leadership"
        );
        ensure!(
            leader_gauge(standby).await? == 0.0,
            "the standby reports leadership"
        );
        let (code, body) = standby.get("/readyz").await?;
        ensure!(
            code == 503 && body.contains("not the leader"),
            "standby /readyz: {code} {body:?}"
        );

        leader.kill();
        let killed = Instant::now();
        let limit = LEASE + 2 * RETRY + Duration::from_secs(5);
        wait_for_holder(
            &env,
            &ns.name,
            &[standby_id],
            limit + Duration::from_secs(5),
        )
        .await?;
        let took = killed.elapsed();
        ensure!(
            took <= limit,
            "the standby took over after {took:?}, more than lease duration {LEASE:?} + margin"
        );
        ensure!(
            took >= LEASE - RETRY * 2,
            "took over after {took:?}: before the Lease could expire"
        );
        wait_until(
            &env,
            "new leader reports leadership",
            Duration::from_secs(5),
            || async move { Ok((leader_gauge(standby).await? == 1.0).then_some(())) },
        )
        .await?;
        let lease = Api::<Lease>::namespaced(env.client.clone(), &ns.name)
            .get("tikv-operator")
            .await?;
        let transitions = lease.spec.and_then(|s| s.lease_transitions);
        ensure!(transitions == Some(1), "leaseTransitions {transitions:?}");
        Ok(())
    }
    .await;
    a.stop(Duration::from_secs(10));
    b.stop(Duration::from_secs(10));
    result.map_err(|e| fail_with_logs(e, &[&a, &b]))?;
    ns.cleanup().await
}

#[tokio::test]
#[ignore = "needs the e2e environment: run `cargo xtask e2e test`"]
async fn operator_sigterm_releases_the_lease_to_the_standby() -> Result<()> {
    let env = Env::get().await?;
    let ns = env.namespace("op-release").await?;
    // A long Lease: only an explicit release lets the standby in quickly.
    let long = [
        "--leader-elect-lease-duration",
        "60s",
        "--leader-elect-renew-deadline",
        "40s",
    ];
    let mut a = OperatorProcess::start(&env.layout, &elector(&ns, "op-a", &long))?;
    let mut b = None;
    let result = async {
        wait_for_holder(&env, &ns.name, &["op-a"], Duration::from_secs(30)).await?;
        let standby = b.insert(OperatorProcess::start(
            &env.layout,
            &elector(&ns, "op-b", &long),
        )?);
        wait_until(&env, "standby up", Duration::from_secs(30), || {
            let addr = standby.http.clone();
            async move { Ok(http_get(&addr, "/healthz").await.ok()) }
        })
        .await?;
        ensure!(
            leader_gauge(standby).await? == 0.0,
            "the standby reports leadership"
        );
        let stopped = Instant::now();
        a.stop(Duration::from_secs(30));
        wait_for_holder(&env, &ns.name, &["op-b"], Duration::from_secs(20)).await?;
        let took = stopped.elapsed();
        ensure!(
            took < Duration::from_secs(15),
            "hand-over took {took:?}: the Lease was not released"
        );
        let log = std::fs::read_to_string(&a.log)?;
        ensure!(
            log.contains("released the leader Lease"),
            "no release in the log:\n{log}"
        );
        // The clean path (exit status 0) logs this last; errors log "tikv-operator failed".
        ensure!(
            log.contains("tikv-operator stopped") && !log.contains("tikv-operator failed"),
            "not a clean shutdown:\n{log}"
        );
        Ok(())
    }
    .await;
    a.stop(Duration::from_secs(10));
    let mut ops = vec![&a];
    if let Some(b) = &mut b {
        b.stop(Duration::from_secs(10));
    }
    if let Some(b) = &b {
        ops.push(b);
    }
    result.map_err(|e| fail_with_logs(e, &ops))?;
    ns.cleanup().await
}

/// Applies the namespaced variant's ServiceAccount and RBAC into `ns` (cluster-scoped objects
/// get a per-test name) and returns a kubeconfig that authenticates as that ServiceAccount.
async fn service_account_kubeconfig(env: &Env, ns: &TestNamespace) -> Result<PathBuf> {
    let dir = config::repo_root().join("manifests/operator");
    let mut yaml = String::new();
    for file in [
        "base/serviceaccount.yaml",
        "base/leader-election-role.yaml",
        "namespaced/role.yaml",
        "namespaced/nodes-clusterrole.yaml",
    ] {
        let text = std::fs::read_to_string(dir.join(file))
            .with_context(|| format!("reading manifests/operator/{file}"))?;
        for mut doc in tikv_operator_e2e::yaml::documents(&text)? {
            let kind = doc["kind"].as_str().unwrap_or_default().to_owned();
            match kind.as_str() {
                "ClusterRoleBinding" => {
                    doc["metadata"]["name"] = format!("tikv-operator-nodes-{}", ns.name).into();
                    doc["roleRef"]["name"] = format!("tikv-operator-nodes-{}", ns.name).into();
                    doc["subjects"][0]["namespace"] = ns.name.clone().into();
                }
                "ClusterRole" => {
                    doc["metadata"]["name"] = format!("tikv-operator-nodes-{}", ns.name).into();
                }
                "RoleBinding" => {
                    doc["subjects"][0]["namespace"] = ns.name.clone().into();
                }
                _ => {}
            }
            yaml.push_str(&serde_norway::to_string(&doc)?);
            yaml.push_str("\n---\n");
        }
    }
    ns.apply(&yaml).await?;
    let sas: Api<ServiceAccount> = Api::namespaced(env.client.clone(), &ns.name);
    let tr = sas
        .create_token_request(
            "tikv-operator",
            &PostParams::default(),
            &TokenRequest {
                spec: TokenRequestSpec {
                    expiration_seconds: Some(3600),
                    ..TokenRequestSpec::default()
                },
                ..TokenRequest::default()
            },
        )
        .await
        .context("TokenRequest for the tikv-operator ServiceAccount")?;
    let token = tr.status.context("TokenRequest without status")?.token;
    let kubeconfig = env.layout.root.join(format!("kubeconfig-{}", ns.name));
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1
kind: Config
clusters:
- name: e2e
  cluster:
    server: https://127.0.0.1:{port}
    certificate-authority: {ca}
users:
- name: tikv-operator
  user:
    token: {token}
contexts:
- name: e2e
  context:
    cluster: e2e
    user: tikv-operator
    namespace: {ns}
current-context: e2e
",
            port = config::APISERVER_PORT,
            ca = env.layout.pki().join("ca.crt").display(),
            ns = ns.name,
        ),
    )?;
    Ok(kubeconfig)
}

fn forbidden_lines(log: &str) -> Vec<&str> {
    log.lines()
        .filter(|l| {
            let l = l.to_ascii_lowercase();
            l.contains("forbidden") || l.contains(" 403") || l.contains("code: 403")
        })
        .collect()
}

async fn remove_cluster_role(env: &Env, ns: &str) {
    use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
    let name = format!("tikv-operator-nodes-{ns}");
    let _ = Api::<ClusterRoleBinding>::all(env.client.clone())
        .delete(&name, &DeleteParams::default())
        .await;
    let _ = Api::<ClusterRole>::all(env.client.clone())
        .delete(&name, &DeleteParams::default())
        .await;
}

/// The namespaced RBAC lets the operator take and keep its Lease (no controllers needed).
#[tokio::test]
#[ignore = "needs the e2e environment: run `cargo xtask e2e test`"]
async fn operator_namespaced_rbac_holds_the_lease() -> Result<()> {
    let env = Env::get().await?;
    let ns = env.namespace("op-rbac").await?;
    let kubeconfig = service_account_kubeconfig(&env, &ns).await?;
    // The token really is restricted: it may read Secrets (a TLS Cluster's client Secret,
    // watched by name) but never write one.
    let sa_client = {
        let kc = kube::config::Kubeconfig::read_from(&kubeconfig)?;
        let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?;
        kube::Client::try_from(cfg)?
    };
    let secrets: Api<Secret> = Api::namespaced(sa_client.clone(), &ns.name);
    secrets
        .list(&ListParams::default())
        .await
        .context("listing Secrets with the operator's token")?;
    let secret: Secret = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "written-by-the-operator"},
        "stringData": {"k": "v"},
    }))?;
    match secrets.create(&PostParams::default(), &secret).await {
        Err(kube::Error::Api(e)) if e.code == 403 => {}
        other => bail!("creating a Secret with the operator's token: {other:?}"),
    }
    // One that exists (created with the admin client): neither patched nor deleted.
    Api::<Secret>::namespaced(env.client.clone(), &ns.name)
        .create(&PostParams::default(), &secret)
        .await?;
    let patch = serde_json::json!({"stringData": {"k": "w"}});
    match secrets
        .patch(
            "written-by-the-operator",
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
    {
        Err(kube::Error::Api(e)) if e.code == 403 => {}
        other => bail!("patching a Secret with the operator's token: {other:?}"),
    }
    match secrets
        .delete("written-by-the-operator", &DeleteParams::default())
        .await
    {
        Err(kube::Error::Api(e)) if e.code == 403 => {}
        other => bail!("deleting a Secret with the operator's token: {other:?}"),
    }
    let mut op = OperatorProcess::start(
        &env.layout,
        &elector(
            &ns,
            "rbac",
            &["--kubeconfig", &kubeconfig.display().to_string()],
        ),
    )?;
    let result = async {
        wait_for_holder(&env, &ns.name, &["rbac"], Duration::from_secs(30)).await?;
        // Several renewals.
        tokio::time::sleep(RETRY * 4).await;
        ensure!(op.running(), "the operator exited");
        ensure!(
            holder(&env, &ns.name).await?.as_deref() == Some("rbac"),
            "lost the Lease"
        );
        let log = std::fs::read_to_string(&op.log)?;
        let denied = forbidden_lines(&log);
        ensure!(denied.is_empty(), "requests denied:\n{}", denied.join("\n"));
        Ok(())
    }
    .await;
    op.stop(Duration::from_secs(10));
    remove_cluster_role(&env, &ns.name).await;
    result.map_err(|e| fail_with_logs(e, &[&op]))?;
    ns.cleanup().await
}

/// The namespaced RBAC is enough for the controllers: with the ServiceAccount's token the
/// operator syncs its caches, creates the PD instance and its Pod for a one-member PDGroup, and
/// nothing it does is denied. Needs the controllers (crates/controller).
#[tokio::test]
#[ignore = "needs the e2e environment: run `cargo xtask e2e test`"]
async fn operator_namespaced_rbac_is_sufficient_for_the_controllers() -> Result<()> {
    let env = Env::get().await?;
    let ns = env.namespace("op-rbac-ctl").await?;
    let kubeconfig = service_account_kubeconfig(&env, &ns).await?;
    let mut op = OperatorProcess::start(
        &env.layout,
        &elector(
            &ns,
            "rbac",
            &["--kubeconfig", &kubeconfig.display().to_string()],
        ),
    )?;
    let result = async {
        op.wait_ready(&env, Duration::from_secs(60)).await?;
        ns.apply(
            r#"
apiVersion: core.tikv.org/v1alpha1
kind: Cluster
metadata:
  name: rbac
spec: {}
---
apiVersion: core.tikv.org/v1alpha1
kind: PDGroup
metadata:
  name: pd
spec:
  cluster:
    name: rbac
  replicas: 1
  template:
    spec:
      version: v8.5.5
      volumes:
        - name: data
          mounts:
            - type: data
          storage: 1Gi
"#,
        )
        .await?;
        let pds = env.tikv_api(&ns.name, "PD");
        let pods: Api<Pod> = Api::namespaced(env.client.clone(), &ns.name);
        wait_until(
            &env,
            "a PD instance and its Pod",
            Duration::from_secs(90),
            || {
                let (pds, pods) = (pds.clone(), pods.clone());
                async move {
                    let n_pd = pds.list(&ListParams::default()).await?.items.len();
                    let n_pod = pods.list(&ListParams::default()).await?.items.len();
                    Ok((n_pd == 1 && n_pod == 1).then_some(()))
                }
            },
        )
        .await?;
        // Let a few more reconciles (status, events) happen.
        tokio::time::sleep(Duration::from_secs(10)).await;
        // The controllers record into the registry the manager serves.
        let (_, metrics) = op.get("/metrics").await?;
        for want in [
            r#"tikv_operator_reconciles_total{controller="pdgroup"}"#,
            r#"tikv_operator_kube_requests_total{verb="patch",resource="pds"}"#,
        ] {
            ensure!(metrics.contains(want), "/metrics lacks {want}:\n{metrics}");
        }
        let log = std::fs::read_to_string(&op.log)?;
        let denied = forbidden_lines(&log);
        ensure!(denied.is_empty(), "requests denied:\n{}", denied.join("\n"));
        // Delete while the operator runs, so that its finalizers go away with the objects.
        for (kind, name) in [("PDGroup", "pd"), ("Cluster", "rbac")] {
            let api = env.tikv_api(&ns.name, kind);
            let _ = api.delete(name, &DeleteParams::default()).await;
        }
        wait_until(&env, "Cluster deleted", Duration::from_secs(90), || {
            let api = env.tikv_api(&ns.name, "Cluster");
            async move { Ok(api.get_opt("rbac").await?.is_none().then_some(())) }
        })
        .await?;
        let log = std::fs::read_to_string(&op.log)?;
        let denied = forbidden_lines(&log);
        ensure!(denied.is_empty(), "requests denied:\n{}", denied.join("\n"));
        Ok(())
    }
    .await;
    op.stop(Duration::from_secs(10));
    remove_cluster_role(&env, &ns.name).await;
    result.map_err(|e| fail_with_logs(e, &[&op]))?;
    ns.cleanup().await
}

/// Polls until the process has exited.
async fn wait_exit(env: &Env, op: &mut OperatorProcess, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    while op.running() {
        if Instant::now() > deadline {
            bail!("still running after {timeout:?}\n{}", env.logs_report());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}

/// A leader that finds its Lease taken (another holder wrote it) stops at once: it exits with
/// an error instead of acting on.
#[tokio::test]
#[ignore = "needs the e2e environment: run `cargo xtask e2e test`"]
async fn operator_leader_exits_when_its_lease_is_taken() -> Result<()> {
    let env = Env::get().await?;
    let ns = env.namespace("op-taken").await?;
    let mut op = OperatorProcess::start(&env.layout, &elector(&ns, "victim", &[]))?;
    let result = async {
        wait_for_holder(&env, &ns.name, &["victim"], Duration::from_secs(30)).await?;
        let leases: Api<Lease> = Api::namespaced(env.client.clone(), &ns.name);
        // Guarded by the resourceVersion just read; a renewal in between means try again.
        let mut attempts = 0;
        loop {
            let mut lease = leases.get("tikv-operator").await?;
            if let Some(spec) = lease.spec.as_mut() {
                spec.holder_identity = Some("intruder".into());
            }
            match leases
                .replace("tikv-operator", &PostParams::default(), &lease)
                .await
            {
                Ok(_) => break,
                Err(kube::Error::Api(e)) if e.code == 409 && attempts < 5 => attempts += 1,
                Err(e) => return Err(e).context("overwriting the Lease holder"),
            }
        }
        let taken = Instant::now();
        wait_exit(&env, &mut op, Duration::from_secs(10)).await?;
        let took = taken.elapsed();
        ensure!(
            took <= RETRY * 3 + Duration::from_secs(2),
            "the old leader ran on for {took:?}"
        );
        let log = std::fs::read_to_string(&op.log)?;
        ensure!(
            log.contains("lost leadership (the Lease is held by intruder)"),
            "no lost-leadership error in the log:\n{log}"
        );
        ensure!(
            holder(&env, &ns.name).await?.as_deref() == Some("intruder"),
            "the old leader wrote the Lease after losing it"
        );
        Ok(())
    }
    .await;
    op.stop(Duration::from_secs(5));
    result.map_err(|e| fail_with_logs(e, &[&op]))?;
    ns.cleanup().await
}

/// A leader that cannot renew (its Lease permissions are revoked) gives up after the renew
/// deadline, before the Lease expires for others.
#[tokio::test]
#[ignore = "needs the e2e environment: run `cargo xtask e2e test`"]
async fn operator_leader_exits_when_it_cannot_renew() -> Result<()> {
    use k8s_openapi::api::rbac::v1::RoleBinding;
    let env = Env::get().await?;
    let ns = env.namespace("op-renew").await?;
    let kubeconfig = service_account_kubeconfig(&env, &ns).await?;
    let mut op = OperatorProcess::start(
        &env.layout,
        &elector(
            &ns,
            "cut-off",
            &["--kubeconfig", &kubeconfig.display().to_string()],
        ),
    )?;
    let result = async {
        wait_for_holder(&env, &ns.name, &["cut-off"], Duration::from_secs(30)).await?;
        Api::<RoleBinding>::namespaced(env.client.clone(), &ns.name)
            .delete("tikv-operator-leader-election", &DeleteParams::default())
            .await?;
        let revoked = Instant::now();
        wait_exit(&env, &mut op, LEASE + Duration::from_secs(5)).await?;
        let exited = k8s_openapi::jiff::Timestamp::now();
        ensure!(
            revoked.elapsed() >= RENEW - RETRY,
            "gave up {:?} after the revocation, before the renew deadline {RENEW:?}",
            revoked.elapsed()
        );
        // What matters: it stopped one renew deadline after its last successful renewal (the
        // renewTime it wrote; same machine, same clock), before the Lease could expire for a
        // standby. Measured from the Lease, not from the revocation, so the authorizer's
        // propagation delay does not matter.
        let renewed = Api::<Lease>::namespaced(env.client.clone(), &ns.name)
            .get("tikv-operator")
            .await?
            .spec
            .and_then(|s| s.renew_time)
            .context("Lease without renewTime")?
            .0;
        let since = Duration::try_from(exited.duration_since(renewed))?;
        ensure!(
            since >= RENEW - Duration::from_millis(500)
                && since < LEASE - Duration::from_millis(500),
            "exited {since:?} after its last renewal; expected the renew deadline {RENEW:?}, \
             well before the lease duration {LEASE:?}"
        );
        let log = std::fs::read_to_string(&op.log)?;
        ensure!(
            log.contains("lost leadership (could not renew the Lease"),
            "no lost-leadership error in the log:\n{log}"
        );
        Ok(())
    }
    .await;
    op.stop(Duration::from_secs(5));
    remove_cluster_role(&env, &ns.name).await;
    result.map_err(|e| fail_with_logs(e, &[&op]))?;
    ns.cleanup().await
}

/// After the leader is killed, the standby takes over and reconciles a change made right after
/// the kill within the lease duration (plus margin). Needs the controllers (crates/controller).
#[tokio::test]
#[ignore = "needs the e2e environment: run `cargo xtask e2e test`"]
async fn operator_standby_reconciles_a_change_after_takeover() -> Result<()> {
    let env = Env::get().await?;
    let ns = env.namespace("op-takeover").await?;
    let mut a = OperatorProcess::start(&env.layout, &elector(&ns, "op-a", &[]))?;
    let mut b = OperatorProcess::start(&env.layout, &elector(&ns, "op-b", &[]))?;
    let result = async {
        let first =
            wait_for_holder(&env, &ns.name, &["op-a", "op-b"], Duration::from_secs(30)).await?;
        let standby = if first == "op-a" {
            a.kill();
            "op-b"
        } else {
            b.kill();
            "op-a"
        };
        let killed = Instant::now();
        ns.apply(
            r#"
apiVersion: core.tikv.org/v1alpha1
kind: Cluster
metadata:
  name: takeover
spec: {}
---
apiVersion: core.tikv.org/v1alpha1
kind: PDGroup
metadata:
  name: pd
spec:
  cluster:
    name: takeover
  replicas: 1
  template:
    spec:
      version: v8.5.5
      volumes:
        - name: data
          mounts:
            - type: data
          storage: 1Gi
"#,
        )
        .await?;
        let pds = env.tikv_api(&ns.name, "PD");
        let limit = LEASE + 2 * RETRY + Duration::from_secs(5);
        wait_until(
            &env,
            "a PD instance created by the new leader",
            limit,
            || {
                let pds = pds.clone();
                async move {
                    let items = pds.list(&ListParams::default()).await?.items;
                    Ok((!items.is_empty()).then_some(()))
                }
            },
        )
        .await?;
        let took = killed.elapsed();
        ensure!(
            holder(&env, &ns.name).await?.as_deref() == Some(standby),
            "the Lease is not held by the standby"
        );
        ensure!(took <= limit, "reconciled after {took:?}");
        // Delete while the new leader runs, so that finalizers go with the objects.
        env.tikv_api(&ns.name, "PDGroup")
            .delete("pd", &DeleteParams::default())
            .await?;
        let clusters = env.tikv_api(&ns.name, "Cluster");
        clusters
            .delete("takeover", &DeleteParams::default())
            .await?;
        wait_until(&env, "Cluster deleted", Duration::from_secs(90), || {
            let clusters = clusters.clone();
            async move { Ok(clusters.get_opt("takeover").await?.is_none().then_some(())) }
        })
        .await
    }
    .await;
    a.stop(Duration::from_secs(10));
    b.stop(Duration::from_secs(10));
    result.map_err(|e| fail_with_logs(e, &[&a, &b]))?;
    ns.cleanup().await
}
