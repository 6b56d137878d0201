//! Certificates and keys of the environment's control plane (generated at `env up`), and of
//! the TLS clusters tests create ([`Ca`], [`secret_yaml`]).

use std::fs;
use std::path::Path;
use std::sync::Arc;

use anyhow::Result;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
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

/// A certificate authority for a test cluster's TLS Secrets.
pub struct Ca {
    cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca").finish_non_exhaustive()
    }
}

/// A leaf certificate and its key (PEM).
#[derive(Clone)]
pub struct Leaf {
    /// `tls.crt`.
    pub cert_pem: String,
    /// `tls.key`.
    pub key_pem: String,
}

impl Leaf {
    /// The certificate in DER (as a TLS peer presents it).
    pub fn der(&self) -> Result<Vec<u8>> {
        use rustls::pki_types::CertificateDer;
        use rustls::pki_types::pem::PemObject;
        Ok(CertificateDer::from_pem_slice(self.cert_pem.as_bytes())?.to_vec())
    }
}

impl std::fmt::Debug for Leaf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Leaf")
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

/// Names every certificate of the environment carries besides its own: in the environment
/// every pod process dials from the loopback address 127.0.0.1 (all pod IPs are 127.1.x.y on
/// the host's `lo`, whose route picks 127.0.0.1 as the source), and PD's embedded etcd checks
/// a peer's client certificate against the connection's source address (its IP SANs, else
/// whether one of its DNS names resolves to it). In a real cluster the member's own names
/// resolve to its source address; here only a loopback name or address does.
pub const LOOPBACK_SANS: [&str; 2] = ["127.0.0.1", "localhost"];

impl Ca {
    /// A new self-signed CA named `name`.
    pub fn new(name: &str) -> Result<Self> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key)?;
        Ok(Self {
            cert_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        })
    }

    /// The CA certificate (PEM).
    pub fn pem(&self) -> &str {
        &self.cert_pem
    }

    /// A leaf for server and client authentication (members dial each other) with exactly the
    /// subject alternative names `sans` (DNS names, wildcards or IP addresses).
    pub fn issue(&self, common_name: &str, sans: &[String]) -> Result<Leaf> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(sans.to_vec())?;
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::DigitalSignature,
            rcgen::KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            rcgen::ExtendedKeyUsagePurpose::ServerAuth,
            rcgen::ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

/// The names a PD group's certificate must cover (tikv-operator's TLS contract): every
/// member (`*.<group>-pd-peer.<ns>.svc`), the client Service and the peer Service (join URL),
/// plus [`LOOPBACK_SANS`].
pub fn pd_sans(namespace: &str, group: &str) -> Vec<String> {
    with_loopback([
        format!("*.{group}-pd-peer.{namespace}.svc"),
        format!("{group}-pd.{namespace}.svc"),
        format!("{group}-pd-peer.{namespace}.svc"),
    ])
}

/// The names a TiKV group's certificate must cover: every store
/// (`*.<group>-tikv-peer.<ns>.svc`), plus [`LOOPBACK_SANS`].
pub fn tikv_sans(namespace: &str, group: &str) -> Vec<String> {
    with_loopback([format!("*.{group}-tikv-peer.{namespace}.svc")])
}

/// The names of a client certificate (the operator's, a test's): [`LOOPBACK_SANS`] only.
pub fn client_sans() -> Vec<String> {
    with_loopback([])
}

fn with_loopback<const N: usize>(names: [String; N]) -> Vec<String> {
    names
        .into_iter()
        .chain(LOOPBACK_SANS.iter().map(|s| (*s).to_owned()))
        .collect()
}

/// A Secret of tikv-operator's TLS shape (`ca.crt`, `tls.crt`, `tls.key`, type
/// `kubernetes.io/tls`, as cert-manager writes it); `ca_bundle` may hold several CA
/// certificates. As JSON (which is YAML) for `Env::apply`/`TestNamespace::apply`.
pub fn secret_yaml(name: &str, ca_bundle: &str, leaf: &Leaf) -> String {
    let data = [
        ("ca.crt", ca_bundle),
        ("tls.crt", leaf.cert_pem.as_str()),
        ("tls.key", leaf.key_pem.as_str()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), ByteString(v.as_bytes().to_vec())))
    .collect();
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            ..ObjectMeta::default()
        },
        type_: Some("kubernetes.io/tls".to_owned()),
        data: Some(data),
        ..Secret::default()
    };
    let mut v = serde_json::to_value(secret).unwrap_or_default();
    v["apiVersion"] = "v1".into();
    v["kind"] = "Secret".into();
    v.to_string()
}

/// The TLS material of one Cluster: the PD group Secret, the TiKV group Secret and the client
/// Secret (default names of tikv-operator's contract), with one CA bundle. Fields are public:
/// a test swaps a leaf (a certificate without the right name) or the bundle (a CA rotation).
#[derive(Debug, Clone)]
pub struct ClusterCerts {
    /// The namespace the Secrets and the Cluster live in.
    pub namespace: String,
    /// The Cluster (names the client Secret).
    pub cluster: String,
    /// The PDGroup.
    pub pd_group: String,
    /// The TiKVGroup.
    pub tikv_group: String,
    /// `ca.crt` of all three Secrets.
    pub ca_bundle: String,
    /// The PD group's certificate ([`pd_sans`]).
    pub pd: Leaf,
    /// The TiKV group's certificate ([`tikv_sans`]).
    pub tikv: Leaf,
    /// The client certificate (the operator's; the tests use it too).
    pub client: Leaf,
}

impl ClusterCerts {
    /// Leaves for every Secret of the Cluster, issued by `ca`; the bundle is `ca` alone.
    pub fn issue(
        ca: &Ca,
        namespace: &str,
        cluster: &str,
        pd_group: &str,
        tikv_group: &str,
    ) -> Result<Self> {
        Ok(Self {
            namespace: namespace.to_owned(),
            cluster: cluster.to_owned(),
            pd_group: pd_group.to_owned(),
            tikv_group: tikv_group.to_owned(),
            ca_bundle: ca.pem().to_owned(),
            pd: ca.issue(&format!("{pd_group}-pd"), &pd_sans(namespace, pd_group))?,
            tikv: ca.issue(
                &format!("{tikv_group}-tikv"),
                &tikv_sans(namespace, tikv_group),
            )?,
            client: ca.issue(&format!("{cluster}-client"), &client_sans())?,
        })
    }

    /// The same Secrets with leaves newly issued by `ca` (a leaf rotation, or the step of a CA
    /// rotation that moves the leaves to the new CA); the bundle stays.
    pub fn reissued(&self, ca: &Ca) -> Result<Self> {
        Ok(Self {
            ca_bundle: self.ca_bundle.clone(),
            ..Self::issue(
                ca,
                &self.namespace,
                &self.cluster,
                &self.pd_group,
                &self.tikv_group,
            )?
        })
    }

    /// The same leaves with `ca.crt` = the certificates of `cas` (e.g. old + new during a CA
    /// rotation).
    pub fn with_bundle(&self, cas: &[&Ca]) -> Self {
        Self {
            ca_bundle: cas.iter().map(|c| c.pem()).collect(),
            ..self.clone()
        }
    }

    /// The PD group Secret (`<group>-pd-tls`).
    pub fn pd_secret(&self) -> String {
        secret_yaml(
            &tikv_operator_api::names::pd_tls_secret(&self.pd_group),
            &self.ca_bundle,
            &self.pd,
        )
    }

    /// The TiKV group Secret (`<group>-tikv-tls`).
    pub fn tikv_secret(&self) -> String {
        secret_yaml(
            &tikv_operator_api::names::tikv_tls_secret(&self.tikv_group),
            &self.ca_bundle,
            &self.tikv,
        )
    }

    /// The client Secret (`<cluster>-client-tls`).
    pub fn client_secret(&self) -> String {
        secret_yaml(
            &tikv_operator_api::names::client_tls_secret(&self.cluster),
            &self.ca_bundle,
            &self.client,
        )
    }

    /// All three Secrets as one multi-document YAML.
    pub fn secrets(&self) -> String {
        [self.pd_secret(), self.tikv_secret(), self.client_secret()].join("\n---\n")
    }
}

/// A rustls client configuration for mutual TLS: trusts the CA certificates of `ca_bundle`,
/// presents `leaf` (`None`: no client certificate, which a mutual-TLS server must refuse). A server reached by IP address is checked against `name_for_ips`
/// instead (chain and all, only the name differs): no certificate names a Pod IP, and the
/// tests reach PD members by their Pod IPs.
pub fn client_config(
    ca_bundle: &str,
    leaf: Option<&Leaf>,
    name_for_ips: &str,
) -> Result<rustls::ClientConfig> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_bundle.as_bytes()) {
        roots.add(cert?)?;
    }
    let inner = rustls::client::WebPkiServerVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()?;
    let verifier = NameForIps {
        inner,
        name: ServerName::try_from(name_for_ips.to_owned())?,
    };
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier));
    let Some(leaf) = leaf else {
        return Ok(builder.with_no_client_auth());
    };
    let chain = CertificateDer::pem_slice_iter(leaf.cert_pem.as_bytes())
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let key = PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes())?;
    Ok(builder.with_client_auth_cert(chain, key)?)
}

/// WebPKI verification, with `name` checked for servers reached by IP address.
#[derive(Debug)]
struct NameForIps {
    inner: Arc<rustls::client::WebPkiServerVerifier>,
    name: rustls::pki_types::ServerName<'static>,
}

impl rustls::client::danger::ServerCertVerifier for NameForIps {
    fn verify_server_cert(
        &self,
        end_entity: &rustls::pki_types::CertificateDer<'_>,
        intermediates: &[rustls::pki_types::CertificateDer<'_>],
        server_name: &rustls::pki_types::ServerName<'_>,
        ocsp_response: &[u8],
        now: rustls::pki_types::UnixTime,
    ) -> std::result::Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        let name = match server_name {
            rustls::pki_types::ServerName::IpAddress(_) => &self.name,
            other => other,
        };
        self.inner
            .verify_server_cert(end_entity, intermediates, name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> std::result::Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> std::result::Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_names_follow_the_contract() {
        assert_eq!(
            pd_sans("ns1", "basic"),
            [
                "*.basic-pd-peer.ns1.svc",
                "basic-pd.ns1.svc",
                "basic-pd-peer.ns1.svc",
                "127.0.0.1",
                "localhost"
            ]
        );
        assert_eq!(
            tikv_sans("ns1", "kv"),
            ["*.kv-tikv-peer.ns1.svc", "127.0.0.1", "localhost"]
        );
    }

    #[test]
    fn a_secret_carries_the_bundle_and_the_leaf() -> Result<()> {
        let (old, new) = (Ca::new("old")?, Ca::new("new")?);
        let leaf = new.issue("pd", &pd_sans("ns1", "pd"))?;
        let bundle = format!("{}{}", old.pem(), new.pem());
        let yaml = secret_yaml("pd-pd-tls", &bundle, &leaf);
        let secret: Secret = serde_norway::from_str(&yaml)?;
        let data = secret.data.unwrap_or_default();
        let text = |k: &str| String::from_utf8(data[k].0.clone()).unwrap_or_default();
        assert_eq!(text("ca.crt"), bundle);
        assert_eq!(text("ca.crt").matches("BEGIN CERTIFICATE").count(), 2);
        assert_eq!(text("tls.key"), leaf.key_pem);
        assert_eq!(text("tls.crt"), leaf.cert_pem);
        Ok(())
    }

    #[test]
    fn cluster_certs_name_their_secrets_and_follow_a_ca_rotation() -> Result<()> {
        let (old, new) = (Ca::new("old")?, Ca::new("new")?);
        let certs = ClusterCerts::issue(&old, "ns1", "basic", "pd", "tikv")?;
        let names: Vec<String> = crate::yaml::documents(&certs.secrets())?
            .iter()
            .map(|d| {
                d["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned()
            })
            .collect();
        assert_eq!(names, ["pd-pd-tls", "tikv-tikv-tls", "basic-client-tls"]);
        let overlap = certs.with_bundle(&[&old, &new]);
        assert_eq!(overlap.ca_bundle, format!("{}{}", old.pem(), new.pem()));
        assert_eq!(overlap.pd.cert_pem, certs.pd.cert_pem);
        let moved = overlap.reissued(&new)?;
        assert_eq!(moved.ca_bundle, overlap.ca_bundle);
        assert_ne!(moved.pd.cert_pem, certs.pd.cert_pem);
        // A client with the new CA alone accepts the new leaves only; chains are checked.
        client_config(new.pem(), Some(&moved.client), "pd-pd.ns1.svc")?;
        Ok(())
    }
}
