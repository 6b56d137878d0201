//! An operator scoped to many namespaces (`--namespace` once per namespace), as platform teams
//! run it.
//!
//! This test sits alone in its own test binary on purpose. It creates and then deletes 201
//! namespaces, and kube-controller-manager's namespace controller works through deletions
//! in order: with 201 queued, a namespace deleted by a test running at the same time waited
//! behind them for over two minutes on a loaded CI machine, and that test failed its
//! clean-up. Test binaries run one after another, so alone here nothing runs beside it, and
//! it waits until its namespaces are gone before it ends, so the tests after it start with
//! an empty queue.
//!
//! Run with `cargo xtask e2e test many_namespaces` (ignored in a plain `cargo test`).

use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use kube::Api;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use tikv_operator_e2e::harness::{Env, wait_until};
use tikv_operator_e2e::operator::{OperatorOptions, OperatorProcess, fail_with_logs};

/// How many namespaces the many-namespaces test populates.
const MANY_NAMESPACES: usize = 200;

/// A platform team scopes the operator to many namespaces (`--namespace` once per namespace):
/// with 200 populated namespaces the operator is ready within seconds, reconciles Clusters in
/// the first and the last of them, and leaves a Cluster in a namespace it was not given alone.
/// Found by the fleet benchmark: with one set of watches per namespace, 50 namespaces never
/// became ready.
#[tokio::test]
#[ignore = "needs the e2e environment: run `cargo xtask e2e test`"]
async fn an_operator_given_200_namespaces_is_ready_within_seconds() -> Result<()> {
    use futures::{StreamExt, TryStreamExt};
    use k8s_openapi::api::core::v1::Namespace;
    let env = Env::get().await?;
    let tag = format!(
        "{:x}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .subsec_nanos()
            ^ std::process::id()
    );
    let names: Vec<String> = (0..=MANY_NAMESPACES)
        .map(|i| format!("e2e-many-{tag}-{i}"))
        .collect();
    // The last one is not given to the operator.
    let (watched, outside) = names.split_at(MANY_NAMESPACES);
    let outside = &outside[0];
    let namespaces: Api<Namespace> = Api::all(env.client.clone());
    let populate = |ns: String| {
        let env = env.clone();
        let namespaces = namespaces.clone();
        async move {
            let obj: Namespace = serde_json::from_value(serde_json::json!({
                "apiVersion": "v1", "kind": "Namespace",
                "metadata": {"name": ns, "labels": {"e2e.tikv.org/test": "many"}},
            }))?;
            namespaces.create(&PostParams::default(), &obj).await?;
            env.apply(
                Some(&ns),
                "apiVersion: core.tikv.org/v1alpha1\nkind: Cluster\nmetadata:\n  name: c\nspec: {}\n\
                 ---\napiVersion: core.tikv.org/v1alpha1\nkind: TiKVGroup\nmetadata:\n  name: kv\n\
                 spec:\n  cluster:\n    name: c\n  replicas: 0\n  template:\n    spec:\n      \
                 version: v8.5.5\n      volumes:\n        - name: data\n          mounts:\n            \
                 - type: data\n          storage: 1Gi\n",
            )
            .await?;
            anyhow::Ok(())
        }
    };
    let result = async {
        futures::stream::iter(names.iter().cloned().map(populate))
            .buffer_unordered(16)
            .try_collect::<Vec<()>>()
            .await
            .context("populating the namespaces")?;
        let mut opts = OperatorOptions::for_namespace(&watched[0]);
        opts.name = format!("many-{tag}");
        opts.namespaces = watched.to_vec();
        let started = Instant::now();
        let mut op = OperatorProcess::start(&env.layout, &opts)?;
        let checked = async {
            op.wait_ready(&env, Duration::from_secs(60)).await?;
            let ready_after = started.elapsed();
            println!("ready {ready_after:?} after start with {MANY_NAMESPACES} --namespace flags");
            ensure!(
                ready_after <= Duration::from_secs(15),
                "ready only {ready_after:?} after start"
            );
            // Reconciled in the first and the last namespace: the Cluster has its finalizer.
            for ns in [&watched[0], &watched[MANY_NAMESPACES - 1]] {
                let clusters = env.tikv_api(ns, "Cluster");
                wait_until(
                    &env,
                    &format!("{ns}: Cluster finalized"),
                    Duration::from_secs(60),
                    || {
                        let clusters = clusters.clone();
                        async move {
                            let c = clusters.get("c").await?;
                            Ok(c.metadata.finalizers.filter(|f| !f.is_empty()).map(|_| ()))
                        }
                    },
                )
                .await?;
            }
            let c = env.tikv_api(outside, "Cluster").get("c").await?;
            ensure!(
                c.metadata.finalizers.is_none_or(|f| f.is_empty())
                    && c.data.get("status").is_none(),
                "the operator touched a Cluster in {outside}, which it was not given"
            );
            anyhow::Ok(())
        }
        .await;
        op.stop(Duration::from_secs(10));
        checked.map_err(|e| fail_with_logs(e, &[&op]))
    }
    .await;
    // Teardown with the operator stopped: these objects never had PD members or Pods, so
    // their finalizers are dropped by hand and the namespaces go with them.
    futures::stream::iter(names.iter().cloned())
        .for_each_concurrent(16, |ns| {
            let env = env.clone();
            let namespaces = namespaces.clone();
            async move {
                let unfinalize =
                    Patch::Merge(serde_json::json!({"metadata": {"finalizers": null}}));
                for (kind, name) in [("TiKVGroup", "kv"), ("Cluster", "c")] {
                    let _ = env
                        .tikv_api(&ns, kind)
                        .patch(name, &PatchParams::default(), &unfinalize)
                        .await;
                }
                let _ = namespaces.delete(&ns, &DeleteParams::background()).await;
            }
        })
        .await;
    let teardown = Instant::now();
    let gone = wait_until(
        &env,
        "the test's namespaces deleted",
        NAMESPACES_GONE_WITHIN,
        || {
            let namespaces = namespaces.clone();
            let prefix = format!("e2e-many-{tag}-");
            async move {
                let left = namespaces
                    .list(&ListParams::default().labels("e2e.tikv.org/test=many"))
                    .await?
                    .items
                    .into_iter()
                    .filter(|n| {
                        n.metadata
                            .name
                            .as_deref()
                            .is_some_and(|n| n.starts_with(&prefix))
                    })
                    .count();
                Ok((left == 0).then_some(()))
            }
        },
    )
    .await;
    println!(
        "{} namespaces deleted in {:?}",
        names.len(),
        teardown.elapsed()
    );
    result.and(gone)
}

/// How long the namespace controller may take to delete the test's namespaces (about 40 s
/// on an idle 2-core machine; several times that under load).
const NAMESPACES_GONE_WITHIN: Duration = Duration::from_secs(300);
