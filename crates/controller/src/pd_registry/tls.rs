//! The client TLS of a TLS Cluster: its target (https URL and client
//! Secret), the material read from the Secret, and why it can be refused.

use pd_client::TlsConfig;

use crate::secrets::{SecretRead, SecretSource};

/// `url` with the scheme of a PD that does (`https`) or does not (`http`)
/// speak TLS; a URL without a scheme gets one.
pub fn with_scheme(url: &str, tls: bool) -> String {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .unwrap_or(url);
    format!("{}://{rest}", if tls { "https" } else { "http" })
}

/// The keys of a TLS Secret (what cert-manager writes).
pub const CA_KEY: &str = "ca.crt";
/// The certificate (chain) key of a TLS Secret.
pub const CERT_KEY: &str = "tls.crt";
/// The private key key of a TLS Secret.
pub const KEY_KEY: &str = "tls.key";

/// How the operator reaches the PD of one Cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PdTarget {
    /// The URL.
    pub endpoint: String,
    /// The client Secret (`ca.crt`, `tls.crt`, `tls.key`) when the Cluster
    /// speaks TLS; `None` for plaintext.
    pub client_secret: Option<String>,
}

impl PdTarget {
    /// The target of a Cluster: with `spec.tlsCluster.enabled`, its client
    /// Secret and `endpoint` switched to `https://`; otherwise `endpoint` as
    /// it is, in plaintext.
    pub fn of_cluster(cluster: Option<&tikv_operator_api::Cluster>, endpoint: &str) -> Self {
        let client_secret = cluster.and_then(|c| {
            let tls = c.spec.tls_cluster.as_ref().filter(|t| t.enabled)?;
            Some(tls.client_secret_name.clone().unwrap_or_else(|| {
                tikv_operator_api::names::client_tls_secret(
                    c.metadata.name.as_deref().unwrap_or_default(),
                )
            }))
        });
        Self {
            endpoint: if client_secret.is_some() {
                with_scheme(endpoint, true)
            } else {
                endpoint.to_owned()
            },
            client_secret,
        }
    }
}

/// The client TLS material of a Cluster, read from its client Secret.
#[derive(Clone, PartialEq, Eq)]
pub struct TlsMaterial {
    /// `ca.crt`: the CA bundle PD's certificate must chain to (may hold
    /// several CAs while a CA is rotated).
    pub ca: Vec<u8>,
    /// `tls.crt`: the certificate the operator presents.
    pub cert: Vec<u8>,
    /// `tls.key`: its private key.
    pub key: Vec<u8>,
}

impl std::fmt::Debug for TlsMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsMaterial")
            .field("ca_bytes", &self.ca.len())
            .field("cert_bytes", &self.cert.len())
            .field("key", &"<redacted>")
            .finish()
    }
}

/// What a client factory gets for a TLS Cluster: the material (for
/// comparison) and the validated client configuration.
#[derive(Debug, Clone)]
pub struct ClientTls {
    /// The Secret it was read from.
    pub secret: String,
    /// Its bytes.
    pub material: TlsMaterial,
    /// The parsed, validated configuration.
    pub config: TlsConfig,
}

/// Why the operator has no PD client for a Cluster.
#[derive(Debug, thiserror::Error)]
pub enum PdAccessError {
    /// The Cluster speaks TLS and its client Secret does not exist.
    #[error(
        "the PD client TLS Secret {namespace}/{secret} does not exist (the Cluster has tlsCluster.enabled; the operator never falls back to plaintext)"
    )]
    SecretMissing {
        /// Namespace.
        namespace: String,
        /// The client Secret.
        secret: String,
    },
    /// The client Secret lacks one of `ca.crt`, `tls.crt`, `tls.key`.
    #[error("the PD client TLS Secret {namespace}/{secret} has no key {key}")]
    SecretKeyMissing {
        /// Namespace.
        namespace: String,
        /// The client Secret.
        secret: String,
        /// The missing key.
        key: &'static str,
    },
    /// The client Secret's PEM does not make a usable client configuration.
    #[error("the PD client TLS Secret {namespace}/{secret} is invalid: {source}")]
    SecretInvalid {
        /// Namespace.
        namespace: String,
        /// The client Secret.
        secret: String,
        /// What the TLS configuration refused.
        #[source]
        source: pd_client::PdError,
    },
    /// The client Secret's watch has not listed yet.
    #[error("the PD client TLS Secret {namespace}/{secret} is not read yet{}", why.as_deref().map(|w| format!(" ({w})")).unwrap_or_default())]
    SecretNotRead {
        /// Namespace.
        namespace: String,
        /// The client Secret.
        secret: String,
        /// The last watch error, if any.
        why: Option<String>,
    },
    /// The client could not be built.
    #[error("cannot create a PD client for {endpoint}: {source}")]
    Client {
        /// The URL.
        endpoint: String,
        /// The client error.
        #[source]
        source: pd_client::PdError,
    },
}

impl PdAccessError {
    /// Whether the Cluster's client Secret is to blame (the user must fix
    /// it), as opposed to a client that could not be built.
    pub fn is_secret(&self) -> bool {
        !matches!(self, Self::Client { .. })
    }
}

/// The client TLS material of a Cluster as its Secret holds it now, not
/// parsed yet (reading it is cheap; parsing is done only when it changed).
pub fn read_material(
    source: &dyn SecretSource,
    namespace: &str,
    cluster: &str,
    secret: &str,
) -> Result<TlsMaterial, PdAccessError> {
    let s = match source.read(namespace, secret, cluster) {
        SecretRead::Present(s) => s,
        SecretRead::Absent => {
            return Err(PdAccessError::SecretMissing {
                namespace: namespace.to_owned(),
                secret: secret.to_owned(),
            });
        }
        SecretRead::NotRead(why) => {
            return Err(PdAccessError::SecretNotRead {
                namespace: namespace.to_owned(),
                secret: secret.to_owned(),
                why,
            });
        }
    };
    let key = |key: &'static str| {
        s.data
            .as_ref()
            .and_then(|d| d.get(key))
            .map(|b| b.0.clone())
            .filter(|b| !b.is_empty())
            .ok_or_else(|| PdAccessError::SecretKeyMissing {
                namespace: namespace.to_owned(),
                secret: secret.to_owned(),
                key,
            })
    };
    Ok(TlsMaterial {
        ca: key(CA_KEY)?,
        cert: key(CERT_KEY)?,
        key: key(KEY_KEY)?,
    })
}

impl ClientTls {
    /// Parses and checks `material`, read from `namespace`/`secret`.
    pub fn parse(
        namespace: &str,
        secret: &str,
        material: TlsMaterial,
    ) -> Result<Self, PdAccessError> {
        let config = TlsConfig::from_pem(
            material.ca.clone(),
            material.cert.clone(),
            material.key.clone(),
        )
        .map_err(|source| PdAccessError::SecretInvalid {
            namespace: namespace.to_owned(),
            secret: secret.to_owned(),
            source,
        })?;
        Ok(Self {
            secret: secret.to_owned(),
            material,
            config,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::metrics::Metrics;
    use crate::pd_registry::{PdFactory, PdRegistry};
    use crate::secrets::FakeSecrets;
    use pd_client::FakePd;
    use pd_client::{PdApi, StoreId};
    use std::collections::BTreeSet;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;
    use tikv_operator_core::pd_state::RefreshPolicy;

    use crate::test_pki::{SECRET, ca, client_secret, secret};

    fn tls_target() -> PdTarget {
        PdTarget {
            endpoint: "https://pd-pd.ns.svc:2379".into(),
            client_secret: Some(SECRET.into()),
        }
    }

    /// A factory handing out `clients` in turn, recording what it was given.
    #[allow(clippy::type_complexity)]
    fn factory(
        clients: Vec<FakePd>,
    ) -> (PdFactory, Arc<Mutex<Vec<(String, Option<TlsMaterial>)>>>) {
        let made = Arc::new(Mutex::new(Vec::new()));
        let seen = made.clone();
        let f: PdFactory = Arc::new(move |e: &str, tls: Option<&ClientTls>| {
            let mut m = seen.lock().unwrap();
            let pd = clients[m.len().min(clients.len() - 1)].clone();
            m.push((e.to_owned(), tls.map(|t| t.material.clone())));
            Ok(Arc::new(pd) as Arc<dyn PdApi>)
        });
        (f, made)
    }

    fn registry(factory: PdFactory, secrets: Arc<FakeSecrets>) -> PdRegistry {
        PdRegistry::new(
            factory,
            secrets,
            RefreshPolicy {
                fast: Duration::from_secs(600),
                slow: Duration::from_secs(600),
            },
            Arc::new(Metrics::unregistered()),
            Arc::new(|_: &str, _: &str, _: &BTreeSet<String>, _: &BTreeSet<StoreId>| {}),
        )
    }

    fn cluster(tls: Option<serde_json::Value>) -> tikv_operator_api::Cluster {
        let mut spec = serde_json::json!({});
        if let Some(t) = tls {
            spec["tlsCluster"] = t;
        }
        serde_json::from_value(serde_json::json!({
            "apiVersion": "core.tikv.org/v1alpha1", "kind": "Cluster",
            "metadata": {"name": "basic", "namespace": "ns"},
            "spec": spec,
        }))
        .unwrap()
    }

    #[test]
    fn a_tls_cluster_targets_https_with_its_client_secret() {
        let url = "http://pd-pd.ns.svc:2379";
        let t = PdTarget::of_cluster(
            Some(&cluster(Some(serde_json::json!({"enabled": true})))),
            url,
        );
        assert_eq!(t.endpoint, "https://pd-pd.ns.svc:2379");
        let t = PdTarget::of_cluster(
            Some(&cluster(Some(serde_json::json!({"enabled": true})))),
            "pd.example.com:2379",
        );
        assert_eq!(t.endpoint, "https://pd.example.com:2379");
        assert_eq!(t.client_secret.as_deref(), Some("basic-client-tls"));
        let t = PdTarget::of_cluster(
            Some(&cluster(Some(
                serde_json::json!({"enabled": true, "clientSecretName": "ops-client"}),
            ))),
            url,
        );
        assert_eq!(t.client_secret.as_deref(), Some("ops-client"));
        for plain in [
            cluster(None),
            cluster(Some(
                serde_json::json!({"enabled": false, "clientSecretName": "x"}),
            )),
        ] {
            let t = PdTarget::of_cluster(Some(&plain), url);
            assert_eq!(t.endpoint, url);
            assert_eq!(t.client_secret, None);
        }
    }

    #[tokio::test]
    async fn a_tls_cluster_without_a_usable_client_secret_gets_no_client() {
        let (f, made) = factory(vec![FakePd::with_cluster(1, 0)]);
        let secrets = Arc::new(FakeSecrets::default());
        let reg = registry(f, secrets.clone());

        let e = reg.ensure("ns", "basic", &tls_target()).unwrap_err();
        assert!(matches!(e, PdAccessError::SecretMissing { .. }), "{e:?}");
        assert!(e.is_secret());
        assert_eq!(
            e.to_string(),
            "the PD client TLS Secret ns/basic-client-tls does not exist (the Cluster has \
             tlsCluster.enabled; the operator never falls back to plaintext)"
        );

        secrets.set("ns", SECRET, SecretRead::NotRead(Some("forbidden".into())));
        let e = reg.ensure("ns", "basic", &tls_target()).unwrap_err();
        assert!(
            e.to_string().ends_with("is not read yet (forbidden)"),
            "{e}"
        );

        let ca = ca();
        let mut s = client_secret(&ca, "1");
        s.data.as_mut().unwrap().remove(KEY_KEY);
        secrets.set("ns", SECRET, SecretRead::Present(Arc::new(s)));
        let e = reg.ensure("ns", "basic", &tls_target()).unwrap_err();
        assert!(
            matches!(e, PdAccessError::SecretKeyMissing { key: KEY_KEY, .. }),
            "{e:?}"
        );

        let s = secret(
            "2",
            &[
                (CA_KEY, "not PEM".into()),
                (CERT_KEY, "not PEM".into()),
                (KEY_KEY, "not PEM".into()),
            ],
        );
        secrets.set("ns", SECRET, SecretRead::Present(Arc::new(s)));
        let e = reg.ensure("ns", "basic", &tls_target()).unwrap_err();
        assert!(matches!(e, PdAccessError::SecretInvalid { .. }), "{e:?}");

        // A key that is not the certificate's.
        let mut s = client_secret(&ca, "3");
        let other = client_secret(&ca, "3");
        s.data.as_mut().unwrap().insert(
            KEY_KEY.into(),
            other.data.as_ref().unwrap()[KEY_KEY].clone(),
        );
        secrets.set("ns", SECRET, SecretRead::Present(Arc::new(s)));
        let e = reg.ensure("ns", "basic", &tls_target()).unwrap_err();
        assert!(matches!(e, PdAccessError::SecretInvalid { .. }), "{e:?}");

        assert!(
            made.lock().unwrap().is_empty(),
            "a client was built: {:?}",
            made.lock().unwrap()
        );
        assert!(reg.get("ns", "basic").is_none());

        // Fixed: a TLS client. Then the Secret goes away: the client goes too.
        secrets.set(
            "ns",
            SECRET,
            SecretRead::Present(Arc::new(client_secret(&ca, "4"))),
        );
        let e = reg.ensure("ns", "basic", &tls_target()).unwrap();
        assert!(e.is_tls());
        assert_eq!(made.lock().unwrap().len(), 1);
        assert_eq!(made.lock().unwrap()[0].0, "https://pd-pd.ns.svc:2379");
        assert!(made.lock().unwrap()[0].1.is_some());
        secrets.set("ns", SECRET, SecretRead::Absent);
        assert!(reg.ensure("ns", "basic", &tls_target()).is_err());
        assert!(
            reg.get("ns", "basic").is_none(),
            "kept a client without its Secret"
        );
        assert_eq!(
            made.lock().unwrap().len(),
            1,
            "built a client without its Secret"
        );
    }

    #[tokio::test]
    async fn a_changed_client_secret_replaces_the_client_under_the_same_entry() {
        // The first client sees 3 members, the second 1: requests show
        // which client serves them.
        let (f, made) = factory(vec![FakePd::with_cluster(3, 0), FakePd::with_cluster(1, 0)]);
        let secrets = Arc::new(FakeSecrets::default());
        let reg = registry(f, secrets.clone());
        let ca = ca();
        let first = client_secret(&ca, "1");
        secrets.set("ns", SECRET, SecretRead::Present(Arc::new(first.clone())));
        let a = reg.ensure("ns", "basic", &tls_target()).unwrap();
        assert_eq!(a.api.members().await.unwrap().members.len(), 3);

        // Unchanged content (even read again): the same client.
        let again = reg.ensure("ns", "basic", &tls_target()).unwrap();
        assert!(Arc::ptr_eq(&a, &again));
        assert_eq!(made.lock().unwrap().len(), 1);

        // Renewed in place (a new leaf): a new client from the new content,
        // under the same entry (the PD state cache stays).
        let renewed = client_secret(&ca, "2");
        secrets.set("ns", SECRET, SecretRead::Present(Arc::new(renewed.clone())));
        let b = reg.ensure("ns", "basic", &tls_target()).unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(made.lock().unwrap().len(), 2);
        let used = made.lock().unwrap()[1].1.clone().unwrap();
        assert_eq!(used.cert, renewed.data.as_ref().unwrap()[CERT_KEY].0);
        assert_ne!(used.cert, first.data.as_ref().unwrap()[CERT_KEY].0);
        assert_eq!(
            a.api.members().await.unwrap().members.len(),
            1,
            "still the old client"
        );
        // The state cache reads through the new client too.
        a.cache.refresh().await;
        assert_eq!(a.snapshot().members.as_ref().unwrap().members.len(), 1);
        assert_eq!(
            secrets.users("ns", SECRET),
            BTreeSet::from(["basic".to_owned()])
        );
        // Renewed into something unusable (a key that is not the
        // certificate's): no client, rather than the old one.
        let mut broken = client_secret(&ca, "3");
        broken.data.as_mut().unwrap().insert(
            KEY_KEY.into(),
            first.data.as_ref().unwrap()[KEY_KEY].clone(),
        );
        secrets.set("ns", SECRET, SecretRead::Present(Arc::new(broken)));
        let e = reg.ensure("ns", "basic", &tls_target()).unwrap_err();
        assert!(matches!(e, PdAccessError::SecretInvalid { .. }), "{e:?}");
        assert!(reg.get("ns", "basic").is_none(), "kept the old client");
        assert_eq!(made.lock().unwrap().len(), 2);
        reg.remove("ns", "basic");
        assert!(
            secrets.users("ns", SECRET).is_empty(),
            "the Secret is still held"
        );
    }

    #[tokio::test]
    async fn a_plaintext_cluster_reads_no_secret() {
        let (f, made) = factory(vec![FakePd::with_cluster(1, 0)]);
        let secrets = Arc::new(FakeSecrets::default());
        let reg = registry(f, secrets.clone());
        let target = PdTarget::of_cluster(Some(&cluster(None)), "http://pd-pd.ns.svc:2379");
        let e = reg.ensure("ns", "basic", &target).unwrap();
        assert!(!e.is_tls());
        assert_eq!(
            *made.lock().unwrap(),
            vec![("http://pd-pd.ns.svc:2379".to_owned(), None)]
        );
        assert!(secrets.users("ns", SECRET).is_empty());
        assert!(secrets.users("ns", "basic-client-tls").is_empty());
    }
}
