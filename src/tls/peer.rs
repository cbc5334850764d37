//! What a verified client certificate says, prepared once per connection as the header values the
//! backends receive (`X-Client-Cert-*`). A client's own copies of these headers are always removed.
//!
//! Pingora carries a connection's TLS facts to the request as an `SslDigest` whose `cert_digest`
//! (the certificate's SHA-256) we set, but only its own OpenSSL handshake can attach more. So the
//! certificates of open connections are kept in a registry by that digest: the connection holds
//! its entry, the request finds it through the digest.

use http::{HeaderName, HeaderValue};
use openssl::hash::MessageDigest;
use openssl::x509::{X509NameRef, X509Ref, X509};
use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Weak};

/// The client certificate's subject, RFC 4514 (`CN=alice,O=Example`).
pub static X_CLIENT_CERT_SUBJECT: HeaderName = HeaderName::from_static("x-client-cert-subject");
/// Its subjectAltName entries: `DNS:a.example, URI:spiffe://x/y, email:a@b, IP:10.0.0.1`.
pub static X_CLIENT_CERT_SAN: HeaderName = HeaderName::from_static("x-client-cert-san");
/// SHA-256 of the DER certificate, lowercase hex.
pub static X_CLIENT_CERT_FINGERPRINT: HeaderName =
    HeaderName::from_static("x-client-cert-fingerprint");

/// What every one of them starts with.
pub const CLIENT_CERT_PREFIX: &str = "x-client-cert-";

/// Headers only the gateway may set.
pub static CLIENT_CERT_HEADERS: [&HeaderName; 3] = [
    &X_CLIENT_CERT_SUBJECT,
    &X_CLIENT_CERT_SAN,
    &X_CLIENT_CERT_FINGERPRINT,
];

/// A client certificate the handshake verified.
#[derive(Debug, Clone)]
pub struct ClientCertificate {
    pub subject: HeaderValue,
    /// `None` when the certificate has no subjectAltName.
    pub san: Option<HeaderValue>,
    pub fingerprint: HeaderValue,
    /// SHA-256 of the DER certificate.
    pub digest: [u8; 32],
}

/// The client certificates of open connections, by SHA-256 (one entry per distinct certificate).
static REGISTRY: LazyLock<parking_lot::Mutex<HashMap<[u8; 32], Weak<ClientCertificate>>>> =
    LazyLock::new(Default::default);

/// The facts of a verified DER certificate, held for as long as the returned value lives (a
/// connection's lifetime); `None` when OpenSSL cannot read it.
pub fn register(der: &[u8]) -> Option<Arc<ClientCertificate>> {
    let certificate = X509::from_der(der).ok()?;
    let digest: [u8; 32] = certificate
        .digest(MessageDigest::sha256())
        .ok()
        .and_then(|digest| <[u8; 32]>::try_from(&digest[..]).ok())?;
    let mut registry = REGISTRY.lock();
    if let Some(known) = registry.get(&digest).and_then(Weak::upgrade) {
        return Some(known);
    }
    let facts = Arc::new(ClientCertificate::of(&certificate, digest));
    registry.insert(digest, Arc::downgrade(&facts));
    Some(facts)
}

/// A connection's hold on its certificate ends; the entry goes with the last one.
pub fn release(facts: Arc<ClientCertificate>) {
    let digest = facts.digest;
    drop(facts);
    let mut registry = REGISTRY.lock();
    if registry
        .get(&digest)
        .is_some_and(|entry| entry.strong_count() == 0)
    {
        registry.remove(&digest);
    }
}

/// The certificate of an open connection, by the digest its `SslDigest` carries (empty without
/// a client certificate: `None`).
pub fn registered(digest: &[u8]) -> Option<Arc<ClientCertificate>> {
    let digest = <[u8; 32]>::try_from(digest).ok()?;
    REGISTRY.lock().get(&digest).and_then(Weak::upgrade)
}

impl ClientCertificate {
    /// The facts of `certificate`, whose SHA-256 is `digest`.
    fn of(certificate: &X509Ref, digest: [u8; 32]) -> Self {
        let subject = header_value(&rfc4514(certificate.subject_name()));
        let san = certificate.subject_alt_names().and_then(|names| {
            let entries: Vec<String> = names
                .iter()
                .filter_map(|name| {
                    if let Some(dns) = name.dnsname() {
                        Some(format!("DNS:{dns}"))
                    } else if let Some(uri) = name.uri() {
                        Some(format!("URI:{uri}"))
                    } else if let Some(email) = name.email() {
                        Some(format!("email:{email}"))
                    } else {
                        name.ipaddress()
                            .and_then(ip_text)
                            .map(|ip| format!("IP:{ip}"))
                    }
                })
                .collect();
            (!entries.is_empty()).then(|| header_value(&entries.join(", ")))
        });
        let mut fingerprint = String::new();
        crate::fastfmt::push_hex(&mut fingerprint, &digest);
        ClientCertificate {
            subject,
            san,
            fingerprint: header_value(&fingerprint),
            digest,
        }
    }
}

fn ip_text(bytes: &[u8]) -> Option<std::net::IpAddr> {
    match bytes.len() {
        4 => <[u8; 4]>::try_from(bytes).ok().map(std::net::IpAddr::from),
        16 => <[u8; 16]>::try_from(bytes).ok().map(std::net::IpAddr::from),
        _ => None,
    }
}

/// Control characters would make an invalid header value; they are escaped as `\XX` (RFC 4514).
fn header_value(text: &str) -> HeaderValue {
    let mut clean = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() {
            let mut buf = [0u8; 4];
            for byte in c.encode_utf8(&mut buf).bytes() {
                clean.push_str(&format!("\\{byte:02X}"));
            }
        } else {
            clean.push(c);
        }
    }
    HeaderValue::from_str(&clean).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// RFC 4514: the most specific attribute first, special characters escaped.
fn rfc4514(name: &X509NameRef) -> String {
    let parts: Vec<String> = name
        .entries()
        .map(|entry| {
            let key = entry.object().nid().short_name().unwrap_or("?");
            let value = entry.data().to_string().unwrap_or_default();
            format!("{key}={}", escape_value(&value))
        })
        .collect();
    parts.into_iter().rev().collect::<Vec<_>>().join(",")
}

fn escape_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let last = value.chars().count().saturating_sub(1);
    for (position, c) in value.chars().enumerate() {
        let special = matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';' | '=')
            || (position == 0 && matches!(c, ' ' | '#'))
            || (position == last && c == ' ');
        if special {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_identity_header_has_the_prefix_the_strip_looks_for() {
        for name in CLIENT_CERT_HEADERS {
            assert!(name.as_str().starts_with(CLIENT_CERT_PREFIX), "{name}");
        }
    }

    #[test]
    fn rfc4514_values_escape_their_specials() {
        assert_eq!(escape_value("Example, Inc."), "Example\\, Inc.");
        assert_eq!(escape_value(" lead#"), "\\ lead#");
        assert_eq!(escape_value("#x "), "\\#x\\ ");
        assert_eq!(escape_value("a=b+c"), "a\\=b\\+c");
    }

    #[test]
    fn control_characters_never_reach_a_header() {
        let value = header_value("CN=a\nb\u{7f}");
        assert_eq!(value.to_str().unwrap(), "CN=a\\0Ab\\7F");
    }
}
