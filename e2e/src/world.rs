//! One test's world: the environment, a fresh namespace and an operator watching only it,
//! with typed access to the namespace and failure messages that carry the operator's log.

use std::time::Duration;

use anyhow::Result;
use kube::api::{DeleteParams, ListParams};
use kube::{Api, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tikv_operator_api::Cluster;

use crate::harness::{Env, TestNamespace, wait_until};
use crate::operator::{OperatorOptions, OperatorProcess};

/// The label selector of every object the operator manages.
pub const MANAGED: &str = "app.kubernetes.io/managed-by=tikv-operator";

/// A namespace with its own operator.
#[derive(Debug)]
pub struct World {
    /// The environment.
    pub env: Env,
    /// The test's namespace (deleted when dropped).
    pub ns: TestNamespace,
    /// The operator watching `ns`.
    pub operator: OperatorProcess,
}

impl World {
    /// Creates a namespace `e2e-<prefix>-...` and starts an operator for it.
    pub async fn start(prefix: &str) -> Result<Self> {
        Self::start_with(prefix, &[]).await
    }

    /// [`Self::start`], with `args` added to the operator's command line.
    pub async fn start_with(prefix: &str, args: &[&str]) -> Result<Self> {
        let env = Env::get().await?;
        let ns = env.namespace(prefix).await?;
        let mut opts = OperatorOptions::for_namespace(&ns.name);
        opts.extra_args.extend(args.iter().map(|a| (*a).to_owned()));
        let operator = OperatorProcess::start(&env.layout, &opts)?;
        Ok(Self { env, ns, operator })
    }

    /// Kills the operator (as a crash would) and starts a new one for the same namespace.
    pub fn restart_operator(&mut self) -> Result<()> {
        self.operator.kill();
        self.operator = OperatorProcess::start(
            &self.env.layout,
            &OperatorOptions::for_namespace(&self.ns.name),
        )?;
        Ok(())
    }

    /// A typed API for the namespace.
    pub fn api<K>(&self) -> Api<K>
    where
        K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>,
    {
        Api::namespaced(self.env.client.clone(), &self.ns.name)
    }

    /// Lists objects of the namespace, optionally by label selector.
    pub async fn list<K>(&self, selector: Option<&str>) -> Result<Vec<K>>
    where
        K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + DeserializeOwned
            + std::fmt::Debug,
    {
        let lp = selector.map_or_else(ListParams::default, |s| ListParams::default().labels(s));
        Ok(self.api::<K>().list(&lp).await?.items)
    }

    /// Waits until the Pod `name` of the namespace reports `Ready` as `ready` (e.g. the Pod of a
    /// process killed with `Env::kill_pod_process` turning NotReady).
    pub async fn wait_pod_ready(&self, name: &str, ready: bool, timeout: Duration) -> Result<()> {
        let pods = self.api::<k8s_openapi::api::core::v1::Pod>();
        wait_until(
            &self.env,
            &format!("Pod {name} Ready={ready}"),
            timeout,
            || async {
                let p = pods.get(name).await?;
                let is_ready = p
                    .status
                    .and_then(|s| s.conditions)
                    .unwrap_or_default()
                    .iter()
                    .any(|c| c.type_ == "Ready" && c.status == "True");
                Ok((is_ready == ready).then_some(()))
            },
        )
        .await
    }

    /// The reasons of the namespace's Events whose fields match `fields` (a field selector such
    /// as `involvedObject.kind=PDGroup`).
    pub async fn event_reasons(&self, fields: &str) -> Result<std::collections::BTreeSet<String>> {
        let lp = ListParams::default().fields(fields);
        Ok(self
            .api::<k8s_openapi::api::core::v1::Event>()
            .list(&lp)
            .await?
            .items
            .into_iter()
            .filter_map(|e| e.reason)
            .collect())
    }

    /// The address of the PD client Service of PDGroup `pd` (resolves through the
    /// environment's hosts file).
    pub fn pd_addr(&self) -> String {
        format!("pd-pd.{}.svc:2379", self.ns.name)
    }

    /// Deletes every Cluster of the namespace and waits (up to 3 minutes) until they are
    /// gone, while the operator still runs: without it, finalizers would keep the objects
    /// (and the namespace) forever. Call it at the end of a passing test.
    pub async fn finish(self) -> Result<()> {
        let clusters = self.api::<Cluster>();
        for c in clusters.list(&ListParams::default()).await?.items {
            clusters
                .delete(&c.name_any(), &DeleteParams::default())
                .await?;
        }
        let result = wait_until(
            &self.env,
            "every Cluster of the test deleted",
            Duration::from_secs(180),
            || {
                let clusters = clusters.clone();
                async move {
                    Ok(clusters
                        .list(&ListParams::default())
                        .await?
                        .items
                        .is_empty()
                        .then_some(()))
                }
            },
        )
        .await;
        result.map_err(|e| self.explain(e))
    }

    /// `e` with the tail of the operator's log attached.
    pub fn explain(&self, e: anyhow::Error) -> anyhow::Error {
        anyhow::anyhow!(
            "{e:#}\n--- operator log ({}):\n{}",
            self.operator.log.display(),
            self.operator.log_tail(80)
        )
    }
}
