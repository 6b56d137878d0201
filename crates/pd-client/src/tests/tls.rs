//! Mutual TLS: configuration errors and a round trip (gRPC and HTTP) against
//! an in-process member that requires client certificates. Certificates are
//! generated here with rcgen.

use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use super::config;
use super::mock::{MockCluster, reply};
use crate::{PdApi, PdClient, PdError, TlsConfig};

struct Pki {
    ca_pem: String,
    server_cert_pem: String,
    server_key_pem: String,
    client_cert_pem: String,
    client_key_pem: String,
}

fn ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
}

fn leaf(
    issuer: &CertifiedIssuer<'static, KeyPair>,
    sans: &[&str],
    usage: ExtendedKeyUsagePurpose,
) -> (String, String) {
    let key = KeyPair::generate().unwrap();
    let mut params =
        CertificateParams::new(sans.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>()).unwrap();
    params.distinguished_name.push(DnType::CommonName, sans[0]);
    params.extended_key_usages = vec![usage];
    let cert = params.signed_by(&key, issuer).unwrap();
    (cert.pem(), key.serialize_pem())
}

fn pki() -> Pki {
    let ca = ca("test PD CA");
    let (server_cert_pem, server_key_pem) = leaf(
        &ca,
        &["localhost", "127.0.0.1"],
        ExtendedKeyUsagePurpose::ServerAuth,
    );
    let (client_cert_pem, client_key_pem) =
        leaf(&ca, &["tikv-operator"], ExtendedKeyUsagePurpose::ClientAuth);
    Pki {
        ca_pem: ca.pem(),
        server_cert_pem,
        server_key_pem,
        client_cert_pem,
        client_key_pem,
    }
}

/// A server config that requires a client certificate signed by the CA.
fn server_config(pki: &Pki) -> Arc<rustls::ServerConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(pki.ca_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .unwrap();
    let chain = CertificateDer::pem_slice_iter(pki.server_cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_slice(pki.server_key_pem.as_bytes()).unwrap();
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .unwrap();
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Arc::new(cfg)
}

#[test]
fn bad_pem_is_a_config_error_not_a_panic() {
    let pki = pki();
    let cases = [
        (
            "garbage CA",
            "not a pem",
            pki.client_cert_pem.as_str(),
            pki.client_key_pem.as_str(),
        ),
        (
            "empty CA",
            "",
            pki.client_cert_pem.as_str(),
            pki.client_key_pem.as_str(),
        ),
        (
            "truncated cert",
            pki.ca_pem.as_str(),
            "-----BEGIN CERTIFICATE-----\nMIIB\n",
            pki.client_key_pem.as_str(),
        ),
        (
            "no key",
            pki.ca_pem.as_str(),
            pki.client_cert_pem.as_str(),
            "",
        ),
        (
            "key in place of cert",
            pki.ca_pem.as_str(),
            pki.client_key_pem.as_str(),
            pki.client_key_pem.as_str(),
        ),
        (
            "key of another cert",
            pki.ca_pem.as_str(),
            pki.client_cert_pem.as_str(),
            pki.server_key_pem.as_str(),
        ),
    ];
    for (what, ca, cert, key) in cases {
        match TlsConfig::from_pem(ca, cert, key) {
            Err(e @ PdError::Config { .. }) => {
                assert_eq!(e.category(), "config");
                assert!(!e.is_retryable());
            }
            other => panic!("{what}: expected a config error, got {other:?}"),
        }
    }
    let err = TlsConfig::from_files("/nonexistent/ca.crt", "/x", "/y").unwrap_err();
    assert!(err.to_string().contains("/nonexistent/ca.crt"), "{err}");
    // The valid combination is accepted, and Debug does not print the key.
    let ok = TlsConfig::from_pem(
        pki.ca_pem.as_str(),
        pki.client_cert_pem.as_str(),
        pki.client_key_pem.as_str(),
    )
    .unwrap();
    assert!(!format!("{ok:?}").contains("PRIVATE KEY"));
}

#[tokio::test]
async fn mutual_tls_round_trip_grpc_and_http() {
    let pki = pki();
    let pd = MockCluster::start_with_tls(&["pd-0"], 77, Some(server_config(&pki))).await;
    assert!(pd.url(0).starts_with("https://"));
    pd.script(
        "GET /pd/api/v1/health",
        vec![reply(
            200,
            r#"[{"name":"pd-0","member_id":1,"client_urls":[],"health":true}]"#,
        )],
    );
    let tls = TlsConfig::from_pem(
        pki.ca_pem.as_str(),
        pki.client_cert_pem.as_str(),
        pki.client_key_pem.as_str(),
    )
    .unwrap();
    // Seeded with a plain http:// URL: TLS switches it to https.
    let seed = pd.url(0).replace("https://", "http://");
    let c = PdClient::connect(config(vec![seed]).with_tls(tls))
        .await
        .unwrap();
    // gRPC over TLS.
    assert_eq!(c.members().await.unwrap().cluster_id.get(), 77);
    assert!(c.is_bootstrapped().await.unwrap());
    // HTTP over TLS.
    assert!(c.health().await.unwrap()[0].healthy);
    assert_eq!(pd.requests("GET /pd/api/v1/health").len(), 1);
}

#[tokio::test]
async fn client_from_another_ca_is_refused() {
    let pki = pki();
    let pd = MockCluster::start_with_tls(&["pd-0"], 77, Some(server_config(&pki))).await;
    let other = ca("other CA");
    let (cert, key) = leaf(&other, &["intruder"], ExtendedKeyUsagePurpose::ClientAuth);
    // Trusts the right server CA but presents a certificate PD does not trust.
    let tls = TlsConfig::from_pem(pki.ca_pem.as_str(), cert.as_str(), key.as_str()).unwrap();
    let mut cfg = config(vec![pd.url(0)]).with_tls(tls);
    cfg.retry.max_attempts = 1;
    let err = PdClient::connect(cfg).await.unwrap_err();
    assert_eq!(err.category(), "unavailable", "{err:?}");
    // And a plain client cannot talk to a TLS PD either.
    let mut cfg = config(vec![pd.url(0).replace("https://", "http://")]);
    cfg.retry.max_attempts = 1;
    assert!(PdClient::connect(cfg).await.is_err());
    // Nothing reached the service.
    assert!(pd.requests("grpc").is_empty());
}
