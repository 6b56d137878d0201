//! Mutual TLS material (PEM CA + client certificate + key) for both gRPC and HTTP.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::error::{PdError, Result};

/// PEM-encoded TLS material for talking to a PD that requires mutual TLS.
///
/// Construction validates the PEM, so a bad file is reported as
/// [`PdError::Config`] up front, never as a panic or a connection failure.
#[derive(Clone)]
pub struct TlsConfig {
    ca_pem: Vec<u8>,
    cert_pem: Vec<u8>,
    key_pem: Vec<u8>,
}

impl fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsConfig")
            .field("ca_pem_bytes", &self.ca_pem.len())
            .field("cert_pem_bytes", &self.cert_pem.len())
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

fn config_err(message: String, source: impl std::error::Error + Send + Sync + 'static) -> PdError {
    PdError::Config {
        message,
        source: Some(Box::new(source)),
    }
}

fn parse_certs(pem: &[u8], what: &str) -> Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| config_err(format!("{what}: invalid PEM"), e))?;
    if certs.is_empty() {
        return Err(PdError::config(format!(
            "{what}: no CERTIFICATE block found in PEM"
        )));
    }
    Ok(certs)
}

fn parse_key(pem: &[u8]) -> Result<PrivateKeyDer<'static>> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| {
        config_err(
            "client key: no valid PRIVATE KEY block in PEM".to_owned(),
            e,
        )
    })
}

impl TlsConfig {
    /// TLS material from PEM bytes: the CA bundle that signed PD's certificate,
    /// and the client certificate (chain) and private key this client presents.
    pub fn from_pem(
        ca_pem: impl Into<Vec<u8>>,
        cert_pem: impl Into<Vec<u8>>,
        key_pem: impl Into<Vec<u8>>,
    ) -> Result<Self> {
        let config = Self {
            ca_pem: ca_pem.into(),
            cert_pem: cert_pem.into(),
            key_pem: key_pem.into(),
        };
        // Validates everything, including that the key fits the certificate.
        config.rustls_client_config()?;
        Ok(config)
    }

    /// TLS material from PEM files (e.g. a mounted Secret with `ca.crt`,
    /// `tls.crt`, `tls.key`).
    pub fn from_files(
        ca_path: impl AsRef<Path>,
        cert_path: impl AsRef<Path>,
        key_path: impl AsRef<Path>,
    ) -> Result<Self> {
        let read = |p: &Path| {
            std::fs::read(p).map_err(|e| config_err(format!("cannot read {}", p.display()), e))
        };
        Self::from_pem(
            read(ca_path.as_ref())?,
            read(cert_path.as_ref())?,
            read(key_path.as_ref())?,
        )
    }

    /// A rustls client configuration (ring provider) with our CA as the only
    /// trust anchor and our certificate as client identity.
    pub(crate) fn rustls_client_config(&self) -> Result<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in parse_certs(&self.ca_pem, "CA certificate")? {
            roots.add(cert).map_err(|e| {
                config_err("CA certificate: not a usable certificate".to_owned(), e)
            })?;
        }
        let chain = parse_certs(&self.cert_pem, "client certificate")?;
        let key = parse_key(&self.key_pem)?;
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| config_err("TLS protocol versions".to_owned(), e))?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .map_err(|e| {
            config_err(
                "client certificate and key are unusable (does the key match the certificate?)"
                    .to_owned(),
                e,
            )
        })
    }

    /// The same material for tonic's TLS connector.
    pub(crate) fn tonic_config(&self) -> tonic::transport::ClientTlsConfig {
        tonic::transport::ClientTlsConfig::new()
            .ca_certificate(tonic::transport::Certificate::from_pem(&self.ca_pem))
            .identity(tonic::transport::Identity::from_pem(
                &self.cert_pem,
                &self.key_pem,
            ))
    }
}
