//! The manager's own metrics (Kubernetes API requests, leadership, build info) and the tower
//! layer that counts every request the kube client sends.

use std::task::{Context, Poll};

use http::{Method, Request, Uri};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;
use tower::{Layer, Service};

/// Prefix of every metric name.
pub const PREFIX: &str = "tikv_operator";

/// Labels of `tikv_operator_kube_requests_total`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct KubeRequestLabels {
    /// `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`, `deletecollection`.
    pub verb: String,
    /// The resource (`pods`, `leases`, `tikvs`, `pods/status`, ...); `discovery` for API
    /// discovery paths, `nonresource` for other paths (`/version`, ...).
    pub resource: String,
}

/// Metrics the manager records.
#[derive(Debug, Clone)]
pub struct ManagerMetrics {
    /// Kubernetes API requests by verb and resource.
    pub kube_requests: Family<KubeRequestLabels, Counter>,
    /// 1 while this replica holds the leader Lease (or leader election is off and it runs).
    pub leader: Gauge,
}

impl ManagerMetrics {
    /// Creates and registers the metrics (the registry carries the [`PREFIX`]).
    pub fn new(registry: &mut Registry) -> Self {
        let m = Self {
            kube_requests: Family::default(),
            leader: Gauge::default(),
        };
        registry.register(
            "kube_requests",
            "Kubernetes API requests by verb and resource",
            m.kube_requests.clone(),
        );
        registry.register(
            "leader",
            "1 while this replica is the leader (holds the Lease, or leader election is off)",
            m.leader.clone(),
        );
        registry.register(
            "build",
            "Build information",
            Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]),
        );
        m
    }

    /// The layer that counts requests into [`Self::kube_requests`].
    pub fn kube_layer(&self) -> KubeRequestsLayer {
        KubeRequestsLayer {
            requests: self.kube_requests.clone(),
        }
    }
}

/// Classifies a Kubernetes API request as (verb, resource).
pub fn classify(method: &Method, uri: &Uri) -> (&'static str, String) {
    let segments: Vec<&str> = uri.path().split('/').filter(|s| !s.is_empty()).collect();
    // /api/<version>/... or /apis/<group>/<version>/...
    let rest: &[&str] = match segments.as_slice() {
        ["api", _version, rest @ ..] => rest,
        ["apis", _group, _version, rest @ ..] => rest,
        ["api" | "apis", ..] => &[],
        _ => return (verb(method, uri, true), "nonresource".to_owned()),
    };
    // namespaces/<ns>/<resource>/... is a namespaced resource; namespaces[/<name>[/<sub>]]
    // is the namespaces resource itself.
    let rest = match rest {
        ["namespaces", ns, sub @ ("status" | "finalize")] => vec!["namespaces", *ns, *sub],
        ["namespaces", _ns, resource, more @ ..] => {
            let mut v = vec![*resource];
            v.extend_from_slice(more);
            v
        }
        other => other.to_vec(),
    };
    match rest.as_slice() {
        [] => (verb(method, uri, true), "discovery".to_owned()),
        [resource] => (verb(method, uri, true), (*resource).to_owned()),
        [resource, _name] => (verb(method, uri, false), (*resource).to_owned()),
        [resource, _name, sub, ..] => (verb(method, uri, false), format!("{resource}/{sub}")),
    }
}

fn verb(method: &Method, uri: &Uri, collection: bool) -> &'static str {
    let watch = uri
        .query()
        .is_some_and(|q| q.split('&').any(|kv| kv == "watch=true" || kv == "watch=1"));
    match *method {
        Method::GET if watch => "watch",
        Method::GET if collection => "list",
        Method::GET | Method::HEAD => "get",
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE if collection => "deletecollection",
        Method::DELETE => "delete",
        _ => "other",
    }
}

/// Tower layer counting Kubernetes API requests (see [`classify`]).
#[derive(Debug, Clone)]
pub struct KubeRequestsLayer {
    requests: Family<KubeRequestLabels, Counter>,
}

impl<S> Layer<S> for KubeRequestsLayer {
    type Service = KubeRequests<S>;

    fn layer(&self, inner: S) -> Self::Service {
        KubeRequests {
            inner,
            requests: self.requests.clone(),
        }
    }
}

/// The service of [`KubeRequestsLayer`].
#[derive(Debug, Clone)]
pub struct KubeRequests<S> {
    inner: S,
    requests: Family<KubeRequestLabels, Counter>,
}

impl<S, B> Service<Request<B>> for KubeRequests<S>
where
    S: Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let (verb, resource) = classify(req.method(), req.uri());
        self.requests
            .get_or_create(&KubeRequestLabels {
                verb: verb.to_owned(),
                resource,
            })
            .inc();
        self.inner.call(req)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn c(method: Method, uri: &str) -> (String, String) {
        let (v, r) = classify(&method, &uri.parse().unwrap());
        (v.to_owned(), r)
    }

    fn vr(v: &str, r: &str) -> (String, String) {
        (v.to_owned(), r.to_owned())
    }

    #[test]
    fn classifies_requests() {
        use Method as M;
        let cases = [
            (M::GET, "/api/v1/pods", vr("list", "pods")),
            (
                M::GET,
                "/api/v1/namespaces/ns/pods?labelSelector=a%3Db",
                vr("list", "pods"),
            ),
            (
                M::GET,
                "/api/v1/namespaces/ns/pods?watch=true&resourceVersion=5",
                vr("watch", "pods"),
            ),
            (M::GET, "/api/v1/namespaces/ns/pods/p-0", vr("get", "pods")),
            (
                M::PATCH,
                "/api/v1/namespaces/ns/pods/p-0?fieldManager=x",
                vr("patch", "pods"),
            ),
            (
                M::PATCH,
                "/api/v1/namespaces/ns/pods/p-0/status",
                vr("patch", "pods/status"),
            ),
            (
                M::DELETE,
                "/api/v1/namespaces/ns/persistentvolumeclaims/d",
                vr("delete", "persistentvolumeclaims"),
            ),
            (
                M::DELETE,
                "/api/v1/namespaces/ns/configmaps",
                vr("deletecollection", "configmaps"),
            ),
            (
                M::POST,
                "/apis/events.k8s.io/v1/namespaces/ns/events",
                vr("create", "events"),
            ),
            (
                M::GET,
                "/apis/coordination.k8s.io/v1/namespaces/ns/leases/tikv-operator",
                vr("get", "leases"),
            ),
            (
                M::PUT,
                "/apis/coordination.k8s.io/v1/namespaces/ns/leases/tikv-operator",
                vr("update", "leases"),
            ),
            (
                M::GET,
                "/apis/core.tikv.org/v1alpha1/tikvs?watch=true",
                vr("watch", "tikvs"),
            ),
            (
                M::PUT,
                "/apis/core.tikv.org/v1alpha1/namespaces/ns/tikvgroups/g/scale",
                vr("update", "tikvgroups/scale"),
            ),
            (M::GET, "/api/v1/nodes/n1", vr("get", "nodes")),
            (M::GET, "/api/v1/namespaces", vr("list", "namespaces")),
            (M::GET, "/api/v1/namespaces/ns", vr("get", "namespaces")),
            (
                M::PUT,
                "/api/v1/namespaces/ns/finalize",
                vr("update", "namespaces/finalize"),
            ),
            (
                M::GET,
                "/apis/core.tikv.org/v1alpha1",
                vr("list", "discovery"),
            ),
            (M::GET, "/apis", vr("list", "discovery")),
            (M::GET, "/version", vr("list", "nonresource")),
        ];
        for (m, uri, want) in cases {
            assert_eq!(c(m.clone(), uri), want, "{m} {uri}");
        }
    }

    #[tokio::test]
    async fn the_layer_counts_requests() {
        let mut registry = Registry::with_prefix(PREFIX);
        let metrics = ManagerMetrics::new(&mut registry);
        let inner =
            tower::service_fn(|_req: Request<()>| async { Ok::<_, std::convert::Infallible>(()) });
        let mut svc = metrics.kube_layer().layer(inner);
        for uri in ["/api/v1/namespaces/a/pods/x", "/api/v1/namespaces/b/pods/y"] {
            let req = Request::get(uri).body(()).unwrap();
            std::future::poll_fn(|cx| svc.poll_ready(cx)).await.unwrap();
            svc.call(req).await.unwrap();
        }
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(
            text.contains(r#"tikv_operator_kube_requests_total{verb="get",resource="pods"} 2"#),
            "{text}"
        );
        assert!(
            text.contains(r#"tikv_operator_build_info{version=""#),
            "{text}"
        );
        assert!(text.contains("tikv_operator_leader 0"), "{text}");
    }
}
