//! examples/tls/ is consistent: its cert-manager `Certificate`s write exactly the Secrets the
//! example Cluster and groups name, with the keys' usages the members need (server and client
//! auth) and the DNS names docs/tls.md lists for the namespace the example is written for, all
//! signed by the example's CA issuer.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;
use serde_json::Value;
use tikv_operator_api::{Cluster, PDGroup, TiKVGroup, names};

/// The namespace the example's DNS names are written for.
const NAMESPACE: &str = "tikv";

fn documents(file: &str) -> Vec<Value> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/tls")
        .join(file);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_norway::Deserializer::from_str(&text)
        .map(|d| Value::deserialize(d).unwrap())
        .filter(|v| !v.is_null())
        .collect()
}

fn of_kind(docs: &[Value], kind: &str) -> Vec<Value> {
    docs.iter().filter(|d| d["kind"] == kind).cloned().collect()
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s.as_str().map(str::to_owned))
        .collect()
}

/// The Secrets the example's objects read, each with the DNS names its certificate must cover.
fn required() -> BTreeMap<String, Vec<String>> {
    let docs = documents("cluster.yaml");
    let svc = |s: String| format!("{s}.{NAMESPACE}.svc");
    let mut out = BTreeMap::new();
    for c in of_kind(&docs, "Cluster") {
        let c: Cluster = serde_json::from_value(c).unwrap();
        let tls = c.spec.tls_cluster.clone().unwrap();
        assert!(tls.enabled, "the TLS example does not enable TLS");
        let name = c.metadata.name.clone().unwrap();
        let secret = tls
            .client_secret_name
            .unwrap_or_else(|| names::client_tls_secret(&name));
        out.insert(secret, Vec::new());
    }
    for g in of_kind(&docs, "PDGroup") {
        let g: PDGroup = serde_json::from_value(g).unwrap();
        let name = g.metadata.name.clone().unwrap();
        let secret = g
            .spec
            .template
            .spec
            .tls_secret_name
            .clone()
            .unwrap_or_else(|| names::pd_tls_secret(&name));
        out.insert(
            secret,
            vec![
                format!("*.{}", svc(names::pd_peer_service(&name))),
                svc(names::pd_client_service(&name)),
                svc(names::pd_peer_service(&name)),
            ],
        );
    }
    for g in of_kind(&docs, "TiKVGroup") {
        let g: TiKVGroup = serde_json::from_value(g).unwrap();
        let name = g.metadata.name.clone().unwrap();
        let secret = g
            .spec
            .template
            .spec
            .tls_secret_name
            .clone()
            .unwrap_or_else(|| names::tikv_tls_secret(&name));
        out.insert(
            secret,
            vec![format!("*.{}", svc(names::tikv_peer_service(&name)))],
        );
    }
    assert_eq!(
        out.len(),
        3,
        "expected a client, a PD and a TiKV Secret: {out:?}"
    );
    out
}

#[test]
fn the_certificates_write_the_secrets_the_example_reads_with_the_names_it_needs() {
    let docs = documents("certificates.yaml");
    for d in &docs {
        assert_eq!(d["apiVersion"], "cert-manager.io/v1", "{d}");
    }
    let issuers = of_kind(&docs, "Issuer");
    let certificates = of_kind(&docs, "Certificate");
    // The CA: a CA certificate from a self-signed issuer, and the issuer made of it.
    let self_signed: Vec<String> = issuers
        .iter()
        .filter(|i| i["spec"].get("selfSigned").is_some())
        .map(|i| i["metadata"]["name"].as_str().unwrap().to_owned())
        .collect();
    let ca_secrets: Vec<String> = certificates
        .iter()
        .filter(|c| c["spec"]["isCA"] == true)
        .inspect(|c| {
            let by = c["spec"]["issuerRef"]["name"].as_str().unwrap();
            assert!(
                self_signed.iter().any(|s| s == by),
                "the CA is issued by {by}"
            );
        })
        .map(|c| c["spec"]["secretName"].as_str().unwrap().to_owned())
        .collect();
    let ca_issuers: Vec<String> = issuers
        .iter()
        .filter(|i| {
            i["spec"]["ca"]["secretName"]
                .as_str()
                .is_some_and(|s| ca_secrets.iter().any(|c| c == s))
        })
        .map(|i| i["metadata"]["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ca_issuers.len(), 1, "one CA issuer: {ca_issuers:?}");

    let leaves: BTreeMap<String, &Value> = certificates
        .iter()
        .filter(|c| c["spec"]["isCA"] != true)
        .map(|c| (c["spec"]["secretName"].as_str().unwrap().to_owned(), c))
        .collect();
    let required = required();
    assert_eq!(
        leaves.keys().collect::<Vec<_>>(),
        required.keys().collect::<Vec<_>>(),
        "the Certificates' Secrets are not the ones the example reads"
    );
    for (secret, needed) in &required {
        let spec = &leaves[secret]["spec"];
        assert_eq!(
            spec["issuerRef"]["name"],
            ca_issuers[0].as_str(),
            "{secret}"
        );
        let usages = strings(&spec["usages"]);
        for usage in ["server auth", "client auth"] {
            assert!(usages.iter().any(|u| u == usage), "{secret}: no `{usage}`");
        }
        let dns = strings(&spec["dnsNames"]);
        for name in needed {
            assert!(
                dns.contains(name),
                "{secret}: does not cover {name} ({dns:?})"
            );
        }
    }
}
