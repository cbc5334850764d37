//! A test certificate authority made with the openssl crate: P-256 keys, certificates for any
//! names, expired or mismatched ones for the failure cases.

use openssl::asn1::{Asn1Integer, Asn1Time};
use openssl::bn::BigNum;
use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::x509::extension::{BasicConstraints, SubjectAlternativeName};
use openssl::x509::{X509NameBuilder, X509};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

fn ec_key() -> PKey<Private> {
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
    PKey::from_ec_key(EcKey::generate(&group).unwrap()).unwrap()
}

static SERIAL: AtomicU32 = AtomicU32::new(1);

/// A test certificate authority.
pub struct Ca {
    pub cert: X509,
    key: PKey<Private>,
}

/// A certificate issued by a [`Ca`].
pub struct Issued {
    pub cert: X509,
    pub key: PKey<Private>,
}

impl Ca {
    pub fn new(name: &str) -> Ca {
        let key = ec_key();
        let mut subject = X509NameBuilder::new().unwrap();
        subject.append_entry_by_text("CN", name).unwrap();
        let subject = subject.build();
        let mut builder = X509::builder().unwrap();
        builder.set_version(2).unwrap();
        builder.set_serial_number(&serial()).unwrap();
        builder.set_subject_name(&subject).unwrap();
        builder.set_issuer_name(&subject).unwrap();
        builder.set_pubkey(&key).unwrap();
        builder
            .set_not_before(&Asn1Time::days_from_now(0).unwrap())
            .unwrap();
        builder
            .set_not_after(&Asn1Time::days_from_now(365).unwrap())
            .unwrap();
        builder
            .append_extension(BasicConstraints::new().critical().ca().build().unwrap())
            .unwrap();
        builder.sign(&key, MessageDigest::sha256()).unwrap();
        Ca {
            cert: builder.build(),
            key,
        }
    }

    /// A leaf for `subject` (`CN=...,O=...` entries) with these SANs, valid `days` from now
    /// (negative: already expired).
    pub fn issue(&self, subject: &[(&str, &str)], dns: &[&str], uri: &[&str], days: i64) -> Issued {
        let key = ec_key();
        let mut name = X509NameBuilder::new().unwrap();
        for (field, value) in subject {
            name.append_entry_by_text(field, value).unwrap();
        }
        let name = name.build();
        let mut builder = X509::builder().unwrap();
        builder.set_version(2).unwrap();
        builder.set_serial_number(&serial()).unwrap();
        builder.set_subject_name(&name).unwrap();
        builder.set_issuer_name(self.cert.subject_name()).unwrap();
        builder.set_pubkey(&key).unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let start = if days < 0 {
            now + days * 86_400 - 86_400
        } else {
            now - 60
        };
        builder
            .set_not_before(&Asn1Time::from_unix(start).unwrap())
            .unwrap();
        builder
            .set_not_after(&Asn1Time::from_unix(now + days * 86_400).unwrap())
            .unwrap();
        if !dns.is_empty() || !uri.is_empty() {
            let mut san = SubjectAlternativeName::new();
            for d in dns {
                if d.parse::<std::net::IpAddr>().is_ok() {
                    san.ip(d);
                } else {
                    san.dns(d);
                }
            }
            for u in uri {
                san.uri(u);
            }
            let san = san
                .build(&builder.x509v3_context(Some(&self.cert), None))
                .unwrap();
            builder.append_extension(san).unwrap();
        }
        builder.sign(&self.key, MessageDigest::sha256()).unwrap();
        Issued {
            cert: builder.build(),
            key,
        }
    }

    pub fn server(&self, dns: &[&str]) -> Issued {
        self.issue(&[("CN", dns[0])], dns, &[], 90)
    }

    pub fn write(&self, dir: &Path, name: &str) -> PathBuf {
        let path = dir.join(format!("{name}.pem"));
        std::fs::write(&path, self.cert.to_pem().unwrap()).unwrap();
        path
    }
}

fn serial() -> Asn1Integer {
    BigNum::from_u32(SERIAL.fetch_add(1, Ordering::Relaxed) + 1000)
        .unwrap()
        .to_asn1_integer()
        .unwrap()
}

impl Issued {
    /// Writes `name.pem` and `name.key`; returns the YAML flow mapping naming them.
    pub fn write(&self, dir: &Path, name: &str) -> String {
        let cert = dir.join(format!("{name}.pem"));
        let key = dir.join(format!("{name}.key"));
        std::fs::write(&cert, self.cert.to_pem().unwrap()).unwrap();
        std::fs::write(&key, self.key.private_key_to_pem_pkcs8().unwrap()).unwrap();
        format!(
            "{{ cert: \"{}\", key: \"{}\" }}",
            cert.display(),
            key.display()
        )
    }
}
