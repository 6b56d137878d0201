//! Certificates for reconciler tests of TLS Clusters, generated with rcgen:
//! a CA, member and client certificates signed by it, and the Secrets
//! holding them.

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

use super::FakeKube;
use crate::tls::{CA_KEY, CERT_KEY, KEY_KEY};

/// A test CA.
#[derive(Debug)]
pub struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A certificate and its key, in PEM.
#[derive(Debug, Clone)]
pub struct TestCert {
    /// The certificate.
    pub cert: String,
    /// Its private key.
    pub key: String,
}

impl TestCa {
    /// A new self-signed CA named `name`.
    ///
    /// # Panics
    /// When rcgen cannot generate it (a test setup failure).
    #[allow(clippy::unwrap_used, clippy::missing_panics_doc)]
    pub fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        Self { issuer }
    }

    /// The CA certificate in PEM (what `ca.crt` holds).
    pub fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// A certificate for `dns_names`, for server and client authentication
    /// (what a member presents), valid from 1970 to 4096.
    ///
    /// # Panics
    /// When rcgen cannot generate it (a test setup failure).
    #[allow(clippy::unwrap_used, clippy::missing_panics_doc)]
    pub fn member(&self, dns_names: &[&str]) -> TestCert {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(
            dns_names
                .iter()
                .map(|s| (*s).to_owned())
                .collect::<Vec<_>>(),
        )
        .unwrap();
        params.distinguished_name.push(DnType::CommonName, "member");
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        // Valid at the fake clock's default time (the epoch) too.
        params.not_before = rcgen::date_time_ymd(1970, 1, 1);
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        TestCert {
            cert: cert.pem(),
            key: key.serialize_pem(),
        }
    }

    /// A client certificate (what the operator presents to PD).
    pub fn client(&self) -> TestCert {
        self.member(&["tikv-operator"])
    }
}

impl FakeKube {
    /// Stores the TLS Secret `name` in `namespace`: `ca` as `ca.crt`, `cert`
    /// as `tls.crt` and `tls.key` (test setup; no call recorded).
    pub fn insert_tls_secret(&self, namespace: &str, name: &str, ca: &str, cert: &TestCert) {
        self.insert_secret(
            namespace,
            name,
            &[
                (CA_KEY, ca.as_bytes()),
                (CERT_KEY, cert.cert.as_bytes()),
                (KEY_KEY, cert.key.as_bytes()),
            ],
        );
    }
}
