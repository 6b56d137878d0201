//! Watch scopes: which namespaces one set of watches covers, and how the
//! operator chooses its scopes from `--namespace`.
//!
//! - No `--namespace`: one scope, every namespace.
//! - One `--namespace`: one scope, watched in that namespace (the API server
//!   filters).
//! - Several: one scope that watches every namespace and keeps only the
//!   listed ones, so the number of watches does not grow with the number of
//!   namespaces (with one scope per namespace, 200 namespaces held 2,000
//!   watches and took 21 s to start; the fleet benchmark's 50 never started).
//!   This needs the right to list and watch the operator's kinds in every
//!   namespace, which the operator checks at start with
//!   SelfSubjectAccessReviews. Where RBAC grants only Roles in the listed
//!   namespaces, it falls back to one scope per namespace and says so.

use std::collections::BTreeSet;
use std::sync::Arc;

use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
};
use kube::api::{Api, PostParams};
use tracing::{info, warn};

/// The namespaces one set of watches covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchScope {
    /// Every namespace.
    All,
    /// One namespace, watched there.
    Namespace(String),
    /// Every namespace watched, only these kept.
    Filtered(Arc<BTreeSet<String>>),
}

impl WatchScope {
    /// The namespace the watches are opened in (`None`: every namespace).
    pub fn api_namespace(&self) -> Option<&str> {
        match self {
            Self::Namespace(ns) => Some(ns),
            Self::All | Self::Filtered(_) => None,
        }
    }

    /// Whether an object in `namespace` belongs to this scope.
    pub fn keeps(&self, namespace: Option<&str>) -> bool {
        match self {
            Self::All => true,
            Self::Namespace(ns) => namespace == Some(ns.as_str()),
            Self::Filtered(set) => namespace.is_some_and(|ns| set.contains(ns)),
        }
    }

    /// A short name for logs.
    pub fn describe(&self) -> String {
        match self {
            Self::All => "<all>".to_owned(),
            Self::Namespace(ns) => ns.clone(),
            Self::Filtered(set) => format!("<{} namespaces>", set.len()),
        }
    }
}

/// What the operator watches, per API group: (group, resource).
const WATCHED: [(&str, &str); 10] = [
    ("core.tikv.org", "clusters"),
    ("core.tikv.org", "pdgroups"),
    ("core.tikv.org", "pds"),
    ("core.tikv.org", "tikvgroups"),
    ("core.tikv.org", "tikvs"),
    ("", "pods"),
    ("", "configmaps"),
    ("", "persistentvolumeclaims"),
    ("", "services"),
    ("apps", "controllerrevisions"),
];

/// The scopes for `namespaces` (see the module docs). `everywhere` says
/// whether the operator may list and watch its kinds in every namespace; it
/// is asked only when several namespaces are listed.
pub async fn choose<F, Fut>(namespaces: &[String], everywhere: F) -> Vec<WatchScope>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    match namespaces {
        [] => vec![WatchScope::All],
        [one] => vec![WatchScope::Namespace(one.clone())],
        many => match everywhere().await {
            Ok(()) => {
                info!(
                    namespaces = many.len(),
                    "one set of watches over every namespace, keeping the {} listed",
                    many.len()
                );
                vec![WatchScope::Filtered(Arc::new(
                    many.iter().cloned().collect(),
                ))]
            }
            Err(why) => {
                warn!(
                    namespaces = many.len(),
                    why,
                    "one set of watches per namespace: {} x 10 watches, slower to start with \
                     many namespaces (grant list and watch of the operator's kinds in every \
                     namespace to use one set)",
                    many.len()
                );
                many.iter().cloned().map(WatchScope::Namespace).collect()
            }
        },
    }
}

/// Whether the client may list and watch every watched kind in every
/// namespace (SelfSubjectAccessReviews); `Err` says what is missing.
pub async fn may_watch_everywhere(client: &kube::Client) -> Result<(), String> {
    let api: Api<SelfSubjectAccessReview> = Api::all(client.clone());
    let mut missing = Vec::new();
    for (group, resource) in WATCHED {
        for verb in ["list", "watch"] {
            let review = SelfSubjectAccessReview {
                spec: SelfSubjectAccessReviewSpec {
                    resource_attributes: Some(ResourceAttributes {
                        group: Some(group.to_owned()),
                        resource: Some(resource.to_owned()),
                        verb: Some(verb.to_owned()),
                        ..ResourceAttributes::default()
                    }),
                    ..SelfSubjectAccessReviewSpec::default()
                },
                ..SelfSubjectAccessReview::default()
            };
            let allowed = api
                .create(&PostParams::default(), &review)
                .await
                .map_err(|e| format!("cannot ask the API server ({e})"))?
                .status
                .is_some_and(|s| s.allowed);
            if !allowed {
                missing.push(format!("{verb} {resource}"));
            }
        }
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "not allowed in every namespace: {}",
            missing.join(", ")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn never() -> Result<(), String> {
        panic!("not asked for fewer than two namespaces")
    }

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    #[tokio::test]
    async fn several_namespaces_share_one_filtered_scope_when_rbac_allows() {
        assert_eq!(choose(&[], never).await, [WatchScope::All]);
        assert_eq!(
            choose(&names(&["a"]), never).await,
            [WatchScope::Namespace("a".into())]
        );
        let shared = choose(&names(&["a", "b", "c"]), || async { Ok(()) }).await;
        assert_eq!(shared.len(), 1);
        assert_eq!(shared[0].api_namespace(), None);
        assert!(shared[0].keeps(Some("b")));
        assert!(!shared[0].keeps(Some("d")));
        assert!(!shared[0].keeps(None));
        let own = choose(&names(&["a", "b"]), || async { Err("no".to_owned()) }).await;
        assert_eq!(
            own,
            [
                WatchScope::Namespace("a".into()),
                WatchScope::Namespace("b".into())
            ]
        );
        assert!(own[0].keeps(Some("a")) && !own[0].keeps(Some("b")));
        assert!(WatchScope::All.keeps(Some("x")));
    }
}
