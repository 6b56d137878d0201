//! Test certificates (rcgen) and client Secrets made of them.
#![allow(clippy::unwrap_used)]

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

use crate::pd_registry::{CA_KEY, CERT_KEY, KEY_KEY};

/// The default client Secret name of the Cluster `basic`.
pub(crate) const SECRET: &str = "basic-client-tls";

/// A self-signed CA.
pub(crate) fn ca() -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(DnType::CommonName, "test CA");
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
}

/// The Secret `basic-client-tls` in `ns` with a fresh leaf signed by `ca`.
pub(crate) fn client_secret(ca: &CertifiedIssuer<'static, KeyPair>, rv: &str) -> Secret {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec!["tikv-operator".to_owned()]).unwrap();
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ClientAuth,
        ExtendedKeyUsagePurpose::ServerAuth,
    ];
    let cert = params.signed_by(&key, ca).unwrap();
    secret(
        rv,
        &[
            (CA_KEY, ca.pem()),
            (CERT_KEY, cert.pem()),
            (KEY_KEY, key.serialize_pem()),
        ],
    )
}

/// The Secret `basic-client-tls` in `ns` with `data`.
pub(crate) fn secret(rv: &str, data: &[(&str, String)]) -> Secret {
    let mut s = Secret::default();
    s.metadata.name = Some(SECRET.into());
    s.metadata.namespace = Some("ns".into());
    s.metadata.resource_version = Some(rv.into());
    s.data = Some(
        data.iter()
            .map(|(k, v)| ((*k).to_owned(), ByteString(v.as_bytes().to_vec())))
            .collect(),
    );
    s
}
