//! `KubeClientWriter` against an in-process HTTP server that records requests
//! and answers like the API server would.
#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::http::{Method, StatusCode, Uri};
use axum::response::IntoResponse;
use serde_json::{Value, json};
use tikv_operator_core::{KubeClientWriter, KubeWriter, ObjectKey};

#[derive(Debug, Clone)]
struct Seen {
    method: Method,
    uri: String,
    content_type: String,
    body: Value,
}

type Log = Arc<Mutex<Vec<Seen>>>;

async fn serve(log: Log) -> String {
    let app = Router::new().fallback(
        move |method: Method, uri: Uri, headers: axum::http::HeaderMap, body: Bytes| {
            let log = log.clone();
            async move {
                let content_type = headers
                    .get("content-type")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned();
                let body_json: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                log.lock().unwrap().push(Seen {
                    method: method.clone(),
                    uri: uri.to_string(),
                    content_type,
                    body: body_json,
                });
                let path = uri.path().to_owned();
                if path.ends_with("/gone") {
                    let status = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                        "reason": "NotFound", "code": 404, "message": "not found"});
                    return (StatusCode::NOT_FOUND, [("content-type", "application/json")], status.to_string()).into_response();
                }
                let obj = json!({"apiVersion": "v1", "kind": "ConfigMap",
                                 "metadata": {"name": "c", "namespace": "ns", "resourceVersion": "42",
                                              "finalizers": ["a", "core.tikv.org/finalizer"]}});
                (StatusCode::OK, [("content-type", "application/json")], obj.to_string()).into_response()
            }
        },
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

async fn writer(log: Log) -> KubeClientWriter {
    let url: http::Uri = serve(log).await.parse().unwrap();
    let client = kube::Client::try_from(kube::Config::new(url)).unwrap();
    KubeClientWriter::new(
        client,
        kube::runtime::events::Reporter {
            controller: "tikv-operator".into(),
            instance: None,
        },
    )
}

fn key(name: &str) -> ObjectKey {
    ObjectKey::new::<k8s_openapi::api::core::v1::ConfigMap>(Some("ns"), name)
}

#[tokio::test]
async fn apply_is_a_forced_server_side_apply_with_our_field_manager() {
    let log = Log::default();
    let w = writer(log.clone()).await;
    let body = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}});
    w.apply(&key("c"), &body).await.unwrap();
    let seen = log.lock().unwrap()[0].clone();
    assert_eq!(seen.method, Method::PATCH);
    assert!(
        seen.uri.starts_with("/api/v1/namespaces/ns/configmaps/c?"),
        "{}",
        seen.uri
    );
    assert!(
        seen.uri.contains("fieldManager=tikv-operator"),
        "{}",
        seen.uri
    );
    assert!(seen.uri.contains("force=true"), "{}", seen.uri);
    assert_eq!(seen.content_type, "application/apply-patch+yaml");
    assert_eq!(seen.body, body);
}

#[tokio::test]
async fn status_goes_to_the_status_subresource_and_missing_objects_delete_cleanly() {
    let log = Log::default();
    let w = writer(log.clone()).await;
    w.patch_status(&key("c"), &json!({"replicas": 3}))
        .await
        .unwrap();
    w.delete(&key("gone")).await.unwrap();
    w.remove_finalizer(&key("gone"), "x").await.unwrap();
    let seen = log.lock().unwrap().clone();
    assert!(
        seen[0]
            .uri
            .starts_with("/api/v1/namespaces/ns/configmaps/c/status?")
    );
    assert_eq!(seen[0].body["status"]["replicas"], 3);
    assert_eq!(seen[0].body["kind"], "ConfigMap");
    assert_eq!(seen[1].method, Method::DELETE);
    assert_eq!(seen[1].body["propagationPolicy"], "Background");
    // A finalizer edit on a missing object reads it and stops.
    assert_eq!(seen.len(), 3);
    assert_eq!(seen[2].method, Method::GET);
}

#[tokio::test]
async fn finalizer_removal_keeps_other_finalizers_and_guards_with_resource_version() {
    let log = Log::default();
    let w = writer(log.clone()).await;
    w.remove_finalizer(&key("c"), "core.tikv.org/finalizer")
        .await
        .unwrap();
    // Already present: adding it again writes nothing.
    w.add_finalizer(&key("c"), "a").await.unwrap();
    let seen = log.lock().unwrap().clone();
    assert_eq!(seen.len(), 3, "{seen:?}");
    assert_eq!(seen[1].method, Method::PATCH);
    assert_eq!(seen[1].content_type, "application/merge-patch+json");
    assert_eq!(
        seen[1].body,
        json!({"metadata": {"finalizers": ["a"], "resourceVersion": "42"}})
    );
    assert_eq!(seen[2].method, Method::GET);
}
