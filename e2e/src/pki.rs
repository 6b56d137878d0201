//! Certificates and keys of the environment's control plane (generated at `env up`).

use std::fs;
use std::path::Path;

use anyhow::Result;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};

/// Writes `ca.crt`, `apiserver.crt`/`apiserver.key` (serving 127.0.0.1 and localhost) and
/// `sa.key`/`sa.pub` (service-account token signing key) into `dir`.
pub fn generate(dir: &Path) -> Result<()> {
    fs::create_dir_all(dir)?;
    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "tikv-operator-e2e-ca");
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca_params, ca_key);

    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(vec![
        "127.0.0.1".to_string(),
        "localhost".to_string(),
        "kubernetes".to_string(),
        "kubernetes.default".to_string(),
        "kubernetes.default.svc".to_string(),
    ])?;
    params
        .distinguished_name
        .push(DnType::CommonName, "kube-apiserver");
    let cert = params.signed_by(&key, &issuer)?;

    fs::write(dir.join("ca.crt"), ca_cert.pem())?;
    fs::write(dir.join("apiserver.crt"), cert.pem())?;
    fs::write(dir.join("apiserver.key"), key.serialize_pem())?;
    let sa = KeyPair::generate()?;
    fs::write(dir.join("sa.key"), sa.serialize_pem())?;
    fs::write(dir.join("sa.pub"), sa.public_key_pem())?;
    Ok(())
}
