//! TLS Secrets: what the Secret of a group's members, and the client Secret
//! the operator reaches PD with, must hold before anything uses them.
//!
//! Every such Secret has the keys [`CA_KEY`], [`CERT_KEY`] and [`KEY_KEY`]
//! (PEM; what cert-manager writes). [`check`] is pure: a Secret (or its
//! absence), what its certificate is for, and the time in; `Ok` or a
//! [`SecretError`] naming the Secret, the key and what to fix out. Each error
//! maps to one of three condition reasons ([`SecretError::reason`]).
//!
//! Secrets are not in the operator's watch caches: the groups and the Cluster
//! read the few they use by name at each reconcile and, while one is
//! refused, look again after [`RECHECK`].

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::jiff::Timestamp;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};

/// Key of the CA bundle: the CA certificates the peer's certificate must
/// chain to (several while a CA is rotated: an overlap bundle).
pub const CA_KEY: &str = "ca.crt";
/// Key of the certificate (the leaf first, then any intermediates).
pub const CERT_KEY: &str = "tls.crt";
/// Key of the certificate's private key.
pub const KEY_KEY: &str = "tls.key";

/// Condition reason: the Secret does not exist, or lacks one of its keys.
pub const SECRET_MISSING: &str = "TLSSecretMissing";
/// Condition reason: the Secret's PEM does not parse, its key does not match
/// its certificate, the certificate is not signed by a CA of `ca.crt`, is
/// outside its validity period, or does not allow the authentication it is
/// used for.
pub const SECRET_INVALID: &str = "TLSSecretInvalid";
/// Condition reason: a member's certificate does not cover a name the
/// member is reached at.
pub const CERTIFICATE_MISSING_SAN: &str = "TLSCertificateMissingSAN";

/// How long a group or Cluster whose Secret is refused waits before reading
/// it again. Secrets are polled, not watched (the operator caches no
/// Secret), so this bounds how long a fixed Secret goes unnoticed.
pub const RECHECK: Duration = Duration::from_secs(10);

/// What a Secret's certificate is used for.
#[derive(Debug, Clone, Copy)]
pub enum Usage<'a> {
    /// A member's certificate: it serves (to clients and to the other
    /// members) and dials the other members, so it must allow both server
    /// and client authentication and cover every name in `names` (DNS names
    /// the member is reached at; wildcards in the certificate match as in
    /// TLS).
    Member {
        /// Names the certificate must cover.
        names: &'a [String],
    },
    /// The operator's client certificate: client authentication only, no
    /// name to cover.
    Client,
}

/// Why a TLS Secret is refused. The messages name the Secret (as given to
/// [`check`], e.g. `ns/basic-pd-tls`), the key and what to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    /// The Secret does not exist.
    #[error(
        "Secret {secret} does not exist; create it with the keys {CA_KEY}, {CERT_KEY} and \
         {KEY_KEY} (for example with a cert-manager Certificate)"
    )]
    NotFound {
        /// The Secret.
        secret: String,
    },
    /// A key is absent or empty.
    #[error(
        "Secret {secret} has no key {key} (or it is empty); it needs {CA_KEY}, {CERT_KEY} and \
         {KEY_KEY}"
    )]
    KeyMissing {
        /// The Secret.
        secret: String,
        /// The key.
        key: &'static str,
    },
    /// A key does not hold what it should in PEM.
    #[error("Secret {secret}: {key} is not valid: {detail}")]
    Pem {
        /// The Secret.
        secret: String,
        /// The key.
        key: &'static str,
        /// What is wrong.
        detail: String,
    },
    /// The private key is not the certificate's.
    #[error(
        "Secret {secret}: the private key in {KEY_KEY} does not belong to the certificate in \
         {CERT_KEY}"
    )]
    KeyMismatch {
        /// The Secret.
        secret: String,
    },
    /// The certificate does not chain to a CA of the bundle.
    #[error(
        "Secret {secret}: the certificate in {CERT_KEY} is not signed by a CA in {CA_KEY} \
         ({detail})"
    )]
    Untrusted {
        /// The Secret.
        secret: String,
        /// What certificate validation said.
        detail: String,
    },
    /// The certificate (or one of its chain) expired.
    #[error("Secret {secret}: the certificate in {CERT_KEY} expired at {not_after}; renew it")]
    Expired {
        /// The Secret.
        secret: String,
        /// Its end of validity.
        not_after: String,
    },
    /// The certificate is not valid yet.
    #[error("Secret {secret}: the certificate in {CERT_KEY} is not valid before {not_before}")]
    NotYetValid {
        /// The Secret.
        secret: String,
        /// Its start of validity.
        not_before: String,
    },
    /// The certificate's extended key usage excludes what it is used for.
    #[error(
        "Secret {secret}: the certificate in {CERT_KEY} does not allow {usage} authentication \
         (extended key usage); {why}"
    )]
    Usage {
        /// The Secret.
        secret: String,
        /// `server` or `client`.
        usage: &'static str,
        /// Why it needs it.
        why: &'static str,
    },
    /// The certificate does not cover a required name.
    #[error(
        "Secret {secret}: the certificate in {CERT_KEY} does not cover {name} (no DNS name of \
         its subject alternative names matches it)"
    )]
    MissingSan {
        /// The Secret.
        secret: String,
        /// The name it does not cover.
        name: String,
    },
}

impl SecretError {
    /// The condition reason: [`SECRET_MISSING`], [`SECRET_INVALID`] or
    /// [`CERTIFICATE_MISSING_SAN`].
    pub fn reason(&self) -> &'static str {
        match self {
            Self::NotFound { .. } | Self::KeyMissing { .. } => SECRET_MISSING,
            Self::MissingSan { .. } => CERTIFICATE_MISSING_SAN,
            Self::Pem { .. }
            | Self::KeyMismatch { .. }
            | Self::Untrusted { .. }
            | Self::Expired { .. }
            | Self::NotYetValid { .. }
            | Self::Usage { .. } => SECRET_INVALID,
        }
    }
}

/// The non-empty value of `key` in `data`.
fn value<'a>(
    secret: &str,
    data: &'a BTreeMap<String, ByteString>,
    key: &'static str,
) -> Result<&'a [u8], SecretError> {
    data.get(key)
        .map(|v| v.0.as_slice())
        .filter(|v| !v.trim_ascii().is_empty())
        .ok_or_else(|| SecretError::KeyMissing {
            secret: secret.to_owned(),
            key,
        })
}

fn pem_error(secret: &str, key: &'static str, detail: impl ToString) -> SecretError {
    SecretError::Pem {
        secret: secret.to_owned(),
        key,
        detail: detail.to_string(),
    }
}

/// Every certificate of a PEM bundle; at least one.
fn certificates(
    secret: &str,
    key: &'static str,
    pem: &[u8],
) -> Result<Vec<CertificateDer<'static>>, SecretError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(secret, key, format!("PEM does not parse: {e}")))?;
    if certs.is_empty() {
        return Err(pem_error(secret, key, "no CERTIFICATE block in its PEM"));
    }
    Ok(certs)
}

fn timestamp(t: UnixTime) -> String {
    i64::try_from(t.as_secs())
        .ok()
        .and_then(|s| Timestamp::from_second(s).ok())
        .map_or_else(
            || format!("{}s after the epoch", t.as_secs()),
            |t| t.to_string(),
        )
}

/// What certificate validation said, as a [`SecretError`].
fn validation_error(
    secret: &str,
    usage: &'static str,
    why: &'static str,
    e: webpki::Error,
) -> SecretError {
    let secret = secret.to_owned();
    match e {
        webpki::Error::CertExpired { not_after, .. } => SecretError::Expired {
            secret,
            not_after: timestamp(not_after),
        },
        webpki::Error::CertNotValidYet { not_before, .. } => SecretError::NotYetValid {
            secret,
            not_before: timestamp(not_before),
        },
        webpki::Error::RequiredEkuNotFoundContext(_) => SecretError::Usage { secret, usage, why },
        other => SecretError::Untrusted {
            secret,
            detail: format!("{other:?}"),
        },
    }
}

/// Checks the TLS Secret `name` (for messages, e.g. `ns/basic-pd-tls`;
/// `secret` is `None` when it does not exist) for `usage` at `now`: the
/// keys are present and not empty, their PEM parses, the private key is the
/// certificate's, the certificate chains to a CA of `ca.crt` (any of them:
/// an overlap bundle during a CA rotation passes), is within its validity
/// period, allows the authentication it is used for and, for a member,
/// covers every required name. The first problem found is returned.
pub fn check(
    name: &str,
    secret: Option<&Secret>,
    usage: Usage<'_>,
    now: Timestamp,
) -> Result<(), SecretError> {
    let secret = secret.ok_or_else(|| SecretError::NotFound {
        secret: name.to_owned(),
    })?;
    let empty = BTreeMap::new();
    let data = secret.data.as_ref().unwrap_or(&empty);
    let ca_pem = value(name, data, CA_KEY)?;
    let cert_pem = value(name, data, CERT_KEY)?;
    let key_pem = value(name, data, KEY_KEY)?;

    let cas = certificates(name, CA_KEY, ca_pem)?;
    let chain = certificates(name, CERT_KEY, cert_pem)?;
    let key = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|e| pem_error(name, KEY_KEY, format!("no private key in its PEM: {e}")))?;

    let provider = rustls::crypto::ring::default_provider();
    match rustls::sign::CertifiedKey::from_der(chain.clone(), key, &provider) {
        Ok(_) => {}
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
            return Err(SecretError::KeyMismatch {
                secret: name.to_owned(),
            });
        }
        Err(rustls::Error::InvalidCertificate(e)) => {
            return Err(pem_error(name, CERT_KEY, format!("{e:?}")));
        }
        Err(e) => return Err(pem_error(name, KEY_KEY, e)),
    }

    let anchors = cas
        .iter()
        .map(|c| webpki::anchor_from_trusted_cert(c))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(name, CA_KEY, format!("not a CA certificate: {e:?}")))?;
    let (leaf, intermediates) = chain.split_first().ok_or_else(|| {
        // `certificates` returns at least one.
        pem_error(name, CERT_KEY, "no CERTIFICATE block in its PEM")
    })?;
    let ee = webpki::EndEntityCert::try_from(leaf)
        .map_err(|e| pem_error(name, CERT_KEY, format!("not an X.509 certificate: {e:?}")))?;
    let time = UnixTime::since_unix_epoch(Duration::from_secs(
        u64::try_from(now.as_second()).unwrap_or(0),
    ));
    let algorithms = provider.signature_verification_algorithms.all;
    let verify = |eku: webpki::KeyUsage, usage: &'static str, why: &'static str| {
        ee.verify_for_usage(algorithms, &anchors, intermediates, time, eku, None, None)
            .map(|_| ())
            .map_err(|e| validation_error(name, usage, why, e))
    };
    match usage {
        Usage::Member { names } => {
            let why = "a member serves clients and the other members and dials the other \
                       members, so its certificate needs both server and client auth";
            verify(webpki::KeyUsage::server_auth(), "server", why)?;
            verify(webpki::KeyUsage::client_auth(), "client", why)?;
            for required in names {
                let covered = ServerName::try_from(required.as_str())
                    .ok()
                    .is_some_and(|n| ee.verify_is_valid_for_subject_name(&n).is_ok());
                if !covered {
                    return Err(SecretError::MissingSan {
                        secret: name.to_owned(),
                        name: required.clone(),
                    });
                }
            }
        }
        Usage::Client => verify(
            webpki::KeyUsage::client_auth(),
            "client",
            "the operator presents it to PD as a client",
        )?,
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose,
        IsCa, KeyPair, KeyUsagePurpose,
    };

    fn ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
    }

    /// A leaf for `sans` signed by `issuer`: (certificate PEM, key PEM).
    fn leaf_with(
        issuer: &CertifiedIssuer<'static, KeyPair>,
        sans: &[&str],
        usages: Vec<ExtendedKeyUsagePurpose>,
        validity: Option<(i32, i32)>,
    ) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(sans.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>())
                .unwrap();
        params.distinguished_name.push(DnType::CommonName, "member");
        params.extended_key_usages = usages;
        if let Some((from, to)) = validity {
            params.not_before = rcgen::date_time_ymd(from, 1, 1);
            params.not_after = rcgen::date_time_ymd(to, 1, 1);
        }
        let cert = params.signed_by(&key, issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    fn leaf(issuer: &CertifiedIssuer<'static, KeyPair>, sans: &[&str]) -> (String, String) {
        leaf_with(
            issuer,
            sans,
            vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
            None,
        )
    }

    fn secret(ca: &str, cert: &str, key: &str) -> Secret {
        let mut data = BTreeMap::new();
        for (k, v) in [(CA_KEY, ca), (CERT_KEY, cert), (KEY_KEY, key)] {
            data.insert(k.to_owned(), ByteString(v.as_bytes().to_vec()));
        }
        Secret {
            data: Some(data),
            ..Secret::default()
        }
    }

    fn now() -> Timestamp {
        "2026-12-07T10:00:00Z".parse().unwrap()
    }

    const PEER: &str = "*.basic-pd-peer.ns1.svc";

    fn member_names() -> Vec<String> {
        vec![
            "basic-pd-abc.basic-pd-peer.ns1.svc".to_owned(),
            "basic-pd.ns1.svc".to_owned(),
            "basic-pd-peer.ns1.svc".to_owned(),
        ]
    }

    fn member(s: &Secret) -> Result<(), SecretError> {
        check(
            "ns1/basic-pd-tls",
            Some(s),
            Usage::Member {
                names: &member_names(),
            },
            now(),
        )
    }

    fn reason(r: Result<(), SecretError>) -> &'static str {
        r.unwrap_err().reason()
    }

    #[test]
    fn a_good_member_secret_passes() {
        let ca = ca("ca");
        let (cert, key) = leaf(&ca, &[PEER, "basic-pd.ns1.svc", "basic-pd-peer.ns1.svc"]);
        member(&secret(&ca.pem(), &cert, &key)).unwrap();
        // A certificate without extended key usage allows every usage.
        let (cert, key) = leaf_with(
            &ca,
            &[PEER, "basic-pd.ns1.svc", "basic-pd-peer.ns1.svc"],
            vec![],
            None,
        );
        member(&secret(&ca.pem(), &cert, &key)).unwrap();
    }

    #[test]
    fn a_name_the_certificate_does_not_cover_is_named() {
        let ca = ca("ca");
        // The wildcard covers the member, not the Services.
        let (cert, key) = leaf(&ca, &[PEER]);
        let err = member(&secret(&ca.pem(), &cert, &key)).unwrap_err();
        assert_eq!(err.reason(), CERTIFICATE_MISSING_SAN);
        assert_eq!(
            err,
            SecretError::MissingSan {
                secret: "ns1/basic-pd-tls".into(),
                name: "basic-pd.ns1.svc".into()
            }
        );
        assert!(err.to_string().contains("basic-pd.ns1.svc"), "{err}");
        // A wildcard covers one label only, as in TLS.
        let (cert, key) = leaf(
            &ca,
            &["*.ns1.svc", "basic-pd.ns1.svc", "basic-pd-peer.ns1.svc"],
        );
        let err = member(&secret(&ca.pem(), &cert, &key)).unwrap_err();
        assert_eq!(
            err,
            SecretError::MissingSan {
                secret: "ns1/basic-pd-tls".into(),
                name: "basic-pd-abc.basic-pd-peer.ns1.svc".into()
            }
        );
    }

    #[test]
    fn a_missing_secret_or_key_is_missing() {
        let err = check("ns1/x", None, Usage::Client, now()).unwrap_err();
        assert_eq!(err.reason(), SECRET_MISSING);
        assert!(err.to_string().contains("ns1/x does not exist"), "{err}");
        let ca = ca("ca");
        let (cert, key) = leaf(&ca, &[PEER]);
        for missing in [CA_KEY, CERT_KEY, KEY_KEY] {
            let mut s = secret(&ca.pem(), &cert, &key);
            s.data.as_mut().unwrap().remove(missing);
            let err = member(&s).unwrap_err();
            assert_eq!(err.reason(), SECRET_MISSING, "{missing}");
            assert!(
                err.to_string().contains(&format!("no key {missing}")),
                "{err}"
            );
            // Empty counts as missing.
            let mut s = secret(&ca.pem(), &cert, &key);
            s.data
                .as_mut()
                .unwrap()
                .insert(missing.to_owned(), ByteString(b"\n".to_vec()));
            assert_eq!(reason(member(&s)), SECRET_MISSING, "{missing}");
        }
        assert_eq!(reason(member(&Secret::default())), SECRET_MISSING);
    }

    #[test]
    fn garbage_pem_is_invalid_and_names_the_key() {
        let ca = ca("ca");
        let (cert, key) = leaf(&ca, &[PEER]);
        for (bad, k) in [
            (secret("not pem", &cert, &key), CA_KEY),
            (secret(&ca.pem(), "not pem", &key), CERT_KEY),
            (secret(&ca.pem(), &cert, "not pem"), KEY_KEY),
            (secret(&ca.pem(), &key, &key), CERT_KEY),
        ] {
            let err = member(&bad).unwrap_err();
            assert_eq!(err.reason(), SECRET_INVALID, "{k}: {err}");
            assert!(
                matches!(&err, SecretError::Pem { key, .. } if *key == k),
                "{k}: {err}"
            );
        }
    }

    #[test]
    fn a_certificate_of_a_foreign_ca_is_invalid() {
        let ours = ca("ours");
        let theirs = ca("theirs");
        let (cert, key) = leaf(
            &theirs,
            &[PEER, "basic-pd.ns1.svc", "basic-pd-peer.ns1.svc"],
        );
        let err = member(&secret(&ours.pem(), &cert, &key)).unwrap_err();
        assert_eq!(err.reason(), SECRET_INVALID);
        assert!(matches!(err, SecretError::Untrusted { .. }), "{err}");
        assert!(err.to_string().contains("not signed by a CA in ca.crt"));
    }

    #[test]
    fn a_key_of_another_certificate_is_invalid() {
        let ca = ca("ca");
        let (cert, _) = leaf(&ca, &[PEER]);
        let (_, other_key) = leaf(&ca, &[PEER]);
        let err = member(&secret(&ca.pem(), &cert, &other_key)).unwrap_err();
        assert_eq!(err.reason(), SECRET_INVALID);
        assert_eq!(
            err,
            SecretError::KeyMismatch {
                secret: "ns1/basic-pd-tls".into()
            }
        );
    }

    #[test]
    fn an_expired_or_future_certificate_is_invalid() {
        let ca = ca("ca");
        let sans = [PEER, "basic-pd.ns1.svc", "basic-pd-peer.ns1.svc"];
        let all = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let (cert, key) = leaf_with(&ca, &sans, all.clone(), Some((2020, 2021)));
        let err = member(&secret(&ca.pem(), &cert, &key)).unwrap_err();
        assert_eq!(err.reason(), SECRET_INVALID);
        assert!(matches!(err, SecretError::Expired { .. }), "{err}");
        assert!(err.to_string().contains("expired at 2021-01-01"), "{err}");
        let (cert, key) = leaf_with(&ca, &sans, all, Some((2030, 2031)));
        let err = member(&secret(&ca.pem(), &cert, &key)).unwrap_err();
        assert!(matches!(err, SecretError::NotYetValid { .. }), "{err}");
    }

    #[test]
    fn a_member_certificate_needs_server_and_client_auth() {
        let ca = ca("ca");
        let sans = [PEER, "basic-pd.ns1.svc", "basic-pd-peer.ns1.svc"];
        for (only, missing) in [
            (ExtendedKeyUsagePurpose::ServerAuth, "client"),
            (ExtendedKeyUsagePurpose::ClientAuth, "server"),
        ] {
            let (cert, key) = leaf_with(&ca, &sans, vec![only], None);
            let err = member(&secret(&ca.pem(), &cert, &key)).unwrap_err();
            assert_eq!(err.reason(), SECRET_INVALID);
            assert!(
                matches!(&err, SecretError::Usage { usage, .. } if *usage == missing),
                "{err}"
            );
        }
        // The operator's client certificate needs client auth only.
        let (cert, key) = leaf_with(
            &ca,
            &["tikv-operator"],
            vec![ExtendedKeyUsagePurpose::ClientAuth],
            None,
        );
        check(
            "ns1/c",
            Some(&secret(&ca.pem(), &cert, &key)),
            Usage::Client,
            now(),
        )
        .unwrap();
        let (cert, key) = leaf_with(
            &ca,
            &["tikv-operator"],
            vec![ExtendedKeyUsagePurpose::ServerAuth],
            None,
        );
        let err = check(
            "ns1/c",
            Some(&secret(&ca.pem(), &cert, &key)),
            Usage::Client,
            now(),
        )
        .unwrap_err();
        assert_eq!(err.reason(), SECRET_INVALID);
    }

    #[test]
    fn an_overlap_bundle_accepts_leaves_of_either_ca() {
        let old = ca("old");
        let new = ca("new");
        let bundle = format!("{}{}", old.pem(), new.pem());
        let sans = [PEER, "basic-pd.ns1.svc", "basic-pd-peer.ns1.svc"];
        for issuer in [&old, &new] {
            let (cert, key) = leaf(issuer, &sans);
            member(&secret(&bundle, &cert, &key)).unwrap();
        }
        // Without the new CA, its leaves are refused.
        let (cert, key) = leaf(&new, &sans);
        assert_eq!(
            reason(member(&secret(&old.pem(), &cert, &key))),
            SECRET_INVALID
        );
    }

    #[test]
    fn a_client_certificate_needs_no_name() {
        let ca = ca("ca");
        let (cert, key) = leaf(&ca, &["tikv-operator"]);
        check(
            "ns1/c",
            Some(&secret(&ca.pem(), &cert, &key)),
            Usage::Client,
            now(),
        )
        .unwrap();
        let other = super::tests::ca("other");
        let err = check(
            "ns1/c",
            Some(&secret(&other.pem(), &cert, &key)),
            Usage::Client,
            now(),
        )
        .unwrap_err();
        assert_eq!(err.reason(), SECRET_INVALID);
    }
}
