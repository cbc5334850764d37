//! Certificates from PEM files: the chain, its key (checked to belong together), the names it
//! serves and when it expires; and the SNI index that picks one for a client's server name.

use crate::config::CertificateSpec;
use openssl::asn1::{Asn1Time, Asn1TimeRef};
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::x509::X509;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::sign::CertifiedKey;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Certificates expiring sooner than this are warned about by `check`, at start and on reload.
pub const EXPIRY_WARNING_SECONDS: i64 = 14 * 24 * 3600;

/// Why a certificate, key or CA file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("cannot read {path}: {source}", path = .path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}", path = .path.display())]
    Invalid { path: PathBuf, message: String },
}

impl CertError {
    fn invalid(path: &Path, message: impl Into<String>) -> Self {
        CertError::Invalid {
            path: path.to_path_buf(),
            message: message.into(),
        }
    }
}

/// A certificate chain with the private key of its leaf.
pub struct Certificate {
    pub leaf: X509,
    /// Intermediates sent after the leaf, in file order.
    pub chain: Vec<X509>,
    pub key: PKey<Private>,
    /// The chain and key as rustls serves them.
    pub certified: Arc<CertifiedKey>,
    /// Lowercase server names it answers for (`*.example.com` for a wildcard).
    pub names: Vec<String>,
    /// `notAfter` as Unix seconds.
    pub not_after: i64,
}

impl std::fmt::Debug for Certificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Certificate")
            .field("names", &self.names)
            .field("not_after", &self.not_after)
            .finish()
    }
}

fn read(path: &Path) -> Result<Vec<u8>, CertError> {
    std::fs::read(path).map_err(|source| CertError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Seconds since the Unix epoch now.
pub fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

fn unix_seconds(time: &Asn1TimeRef) -> Option<i64> {
    let epoch = Asn1Time::from_unix(0).ok()?;
    let diff = epoch.diff(time).ok()?;
    Some(i64::from(diff.days) * 86_400 + i64::from(diff.secs))
}

impl Certificate {
    /// Reads and checks `spec`'s files; an expired certificate is an error.
    pub fn load(spec: &CertificateSpec) -> Result<Self, CertError> {
        let certificate = Self::load_allowing_expired(spec)?;
        if certificate.not_after <= now_unix() {
            return Err(CertError::invalid(
                &spec.cert,
                format!(
                    "the certificate for {} expired at {}",
                    certificate.names.join(", "),
                    certificate.leaf.not_after()
                ),
            ));
        }
        Ok(certificate)
    }

    /// Reads and checks `spec`'s files, whatever the certificate's dates.
    pub fn load_allowing_expired(spec: &CertificateSpec) -> Result<Self, CertError> {
        let pem = read(&spec.cert)?;
        let mut certificates = X509::stack_from_pem(&pem)
            .map_err(|e| CertError::invalid(&spec.cert, format!("not a PEM certificate: {e}")))?
            .into_iter();
        let leaf = certificates
            .next()
            .ok_or_else(|| CertError::invalid(&spec.cert, "holds no PEM certificate"))?;
        let chain: Vec<X509> = certificates.collect();
        let key_pem = read(&spec.key)?;
        let key = PKey::private_key_from_pem(&key_pem)
            .map_err(|e| CertError::invalid(&spec.key, format!("not a PEM private key: {e}")))?;
        let matches = leaf
            .public_key()
            .map(|public| public.public_eq(&key))
            .unwrap_or(false);
        if !matches {
            return Err(CertError::invalid(
                &spec.key,
                format!(
                    "this key does not belong to the certificate in {}",
                    spec.cert.display()
                ),
            ));
        }
        let names = match &spec.server_names {
            Some(names) => names.clone(),
            None => own_names(&leaf),
        };
        if names.is_empty() {
            return Err(CertError::invalid(
                &spec.cert,
                "the certificate names no DNS host (no DNS subjectAltName or CN); list server_names",
            ));
        }
        let not_after = unix_seconds(leaf.not_after())
            .ok_or_else(|| CertError::invalid(&spec.cert, "unreadable notAfter date"))?;
        let certified = certified_key(spec, &leaf, &chain, &key)?;
        Ok(Certificate {
            leaf,
            chain,
            key,
            certified,
            names,
            not_after,
        })
    }

    /// The name shown in logs, metrics and `check`.
    pub fn label(&self) -> &str {
        self.names.first().map_or("", String::as_str)
    }
}

/// The chain (leaf first) and its signing key for rustls, which refuses key types it cannot sign
/// with (DSA, for one).
fn certified_key(
    spec: &CertificateSpec,
    leaf: &X509,
    chain: &[X509],
    key: &PKey<Private>,
) -> Result<Arc<CertifiedKey>, CertError> {
    let ders = std::iter::once(leaf)
        .chain(chain)
        .map(|certificate| certificate.to_der().map(CertificateDer::from))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| CertError::invalid(&spec.cert, format!("unreadable certificate: {e}")))?;
    let pkcs8 = key
        .private_key_to_pkcs8()
        .map_err(|e| CertError::invalid(&spec.key, format!("unreadable private key: {e}")))?;
    let signing = rustls::crypto::aws_lc_rs::default_provider()
        .key_provider
        .load_private_key(PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(pkcs8)))
        .map_err(|e| CertError::invalid(&spec.key, format!("unusable private key: {e}")))?;
    Ok(Arc::new(CertifiedKey::new(ders, signing)))
}

/// The DNS names in the subjectAltName extension, or the CN when there are none.
fn own_names(leaf: &X509) -> Vec<String> {
    let mut names: Vec<String> = leaf
        .subject_alt_names()
        .map(|sans| {
            sans.iter()
                .filter_map(|san| san.dnsname().and_then(server_name))
                .collect()
        })
        .unwrap_or_default();
    if names.is_empty() {
        names = leaf
            .subject_name()
            .entries_by_nid(Nid::COMMONNAME)
            .filter_map(|entry| entry.data().to_string().ok())
            .filter_map(|cn| server_name(&cn))
            .collect();
    }
    names
}

/// `text` as a lowercase server name (`*.` allowed as the whole first label), or `None`.
pub fn server_name(text: &str) -> Option<String> {
    let name = text.strip_suffix('.').unwrap_or(text).to_ascii_lowercase();
    let rest = name.strip_prefix("*.").unwrap_or(&name);
    let valid = !rest.is_empty()
        && rest.len() <= 253
        && rest.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    valid.then_some(name)
}

/// The certificates of a client CA bundle (at least one).
pub fn load_ca(path: &Path) -> Result<Vec<X509>, CertError> {
    let pem = read(path)?;
    let certificates = X509::stack_from_pem(&pem)
        .map_err(|e| CertError::invalid(path, format!("not a PEM certificate bundle: {e}")))?;
    if certificates.is_empty() {
        return Err(CertError::invalid(path, "holds no PEM certificate"));
    }
    Ok(certificates)
}

/// Server name -> index of the certificate that serves it. Exact names win over wildcards; among
/// certificates naming the same host, the first listed wins; no match -> the first certificate.
#[derive(Debug, Default)]
pub struct NameIndex {
    exact: HashMap<String, usize>,
    /// Keyed by what follows `*.`: `*.example.com` -> `example.com`.
    wildcard: HashMap<String, usize>,
}

impl NameIndex {
    /// The index over each certificate's names, in order.
    pub fn new<'a>(names: impl IntoIterator<Item = &'a [String]>) -> Self {
        let mut index = NameIndex::default();
        for (position, names) in names.into_iter().enumerate() {
            for name in names {
                let map = match name.strip_prefix("*.") {
                    Some(suffix) => index.wildcard.entry(suffix.to_string()),
                    None => index.exact.entry(name.clone()),
                };
                map.or_insert(position);
            }
        }
        index
    }

    /// The certificate for the SNI `name` (`None`: the client sent none).
    pub fn select(&self, name: Option<&str>) -> usize {
        let Some(name) = name else { return 0 };
        let name = name.strip_suffix('.').unwrap_or(name);
        let lower;
        let name = if name.bytes().any(|b| b.is_ascii_uppercase()) {
            lower = name.to_ascii_lowercase();
            lower.as_str()
        } else {
            name
        };
        if let Some(&position) = self.exact.get(name) {
            return position;
        }
        // A wildcard covers exactly one label.
        name.split_once('.')
            .and_then(|(_, parent)| self.wildcard.get(parent))
            .copied()
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn exact_names_win_over_wildcards_and_unknown_names_get_the_first() {
        let certs = [
            names(&["default.test"]),
            names(&["*.example.com"]),
            names(&["api.example.com", "example.com"]),
            names(&["api.example.com"]),
        ];
        let index = NameIndex::new(certs.iter().map(Vec::as_slice));
        assert_eq!(
            index.select(Some("api.example.com")),
            2,
            "first listed wins"
        );
        assert_eq!(
            index.select(Some("API.Example.COM.")),
            2,
            "case and root dot"
        );
        assert_eq!(index.select(Some("www.example.com")), 1);
        assert_eq!(index.select(Some("example.com")), 2);
        assert_eq!(index.select(Some("a.b.example.com")), 0, "one label only");
        assert_eq!(index.select(Some("other.test")), 0);
        assert_eq!(index.select(None), 0);
    }

    /// A self-signed certificate for `key` (`keys.test`) written as PEM files; the spec listing them.
    fn written(key: &PKey<Private>, name: &str) -> CertificateSpec {
        let certificate = crate::tls::testing::self_signed(key, &["keys.test"], 30);
        let dir = std::env::temp_dir().join(format!("edgegate-certs-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let cert = dir.join(format!("{name}.pem"));
        let key_path = dir.join(format!("{name}.key"));
        std::fs::write(&cert, certificate.to_pem().unwrap()).unwrap();
        std::fs::write(&key_path, key.private_key_to_pem_pkcs8().unwrap()).unwrap();
        CertificateSpec {
            cert,
            key: key_path,
            server_names: None,
        }
    }

    #[test]
    fn keys_rustls_can_sign_with_load_and_others_are_refused_by_file() {
        let p256 = crate::tls::testing::p256_key();
        let rsa = PKey::from_rsa(openssl::rsa::Rsa::generate(2048).unwrap()).unwrap();
        let ed25519 = PKey::generate_ed25519().unwrap();
        for (key, name) in [(&p256, "p256"), (&rsa, "rsa"), (&ed25519, "ed25519")] {
            let loaded = Certificate::load(&written(key, name)).unwrap();
            assert_eq!(loaded.names, ["keys.test"], "{name}");
        }
        let small = PKey::from_rsa(openssl::rsa::Rsa::generate(1024).unwrap()).unwrap();
        let dsa = PKey::from_dsa(openssl::dsa::Dsa::generate(2048).unwrap()).unwrap();
        for (key, name) in [(&small, "rsa1024"), (&dsa, "dsa")] {
            let spec = written(key, name);
            let error = Certificate::load(&spec).unwrap_err().to_string();
            assert!(
                error.contains("unusable private key") && error.contains(&format!("{name}.key")),
                "{name}: {error}"
            );
        }
    }

    #[test]
    fn server_names_are_lowercase_hostnames_with_an_optional_leading_wildcard() {
        assert_eq!(
            server_name("API.example.com."),
            Some("api.example.com".into())
        );
        assert_eq!(server_name("*.example.com"), Some("*.example.com".into()));
        assert_eq!(server_name("a.*.example.com"), None);
        assert_eq!(server_name("*"), None);
        assert_eq!(server_name("bad host"), None);
        assert_eq!(server_name(""), None);
        assert_eq!(server_name("a..b"), None);
    }
}
