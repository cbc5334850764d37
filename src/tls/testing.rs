//! Self-signed certificates for the crate's unit tests, made with the openssl crate.

use openssl::asn1::Asn1Time;
use openssl::bn::BigNum;
use openssl::hash::MessageDigest;
use openssl::pkey::{Id, PKey, Private};
use openssl::x509::extension::SubjectAlternativeName;
use openssl::x509::{X509NameBuilder, X509};

/// A fresh P-256 key.
pub(crate) fn p256_key() -> PKey<Private> {
    let group = openssl::ec::EcGroup::from_curve_name(openssl::nid::Nid::X9_62_PRIME256V1);
    PKey::from_ec_key(openssl::ec::EcKey::generate(&group.unwrap()).unwrap()).unwrap()
}

/// A certificate for `names` (the first is also its CN) signed by its own `key`, valid from now
/// for `days`.
pub(crate) fn self_signed(key: &PKey<Private>, names: &[&str], days: u32) -> X509 {
    let mut name = X509NameBuilder::new().unwrap();
    name.append_entry_by_text("CN", names[0]).unwrap();
    let name = name.build();
    let mut builder = X509::builder().unwrap();
    builder.set_version(2).unwrap();
    let serial = BigNum::from_u32(1).unwrap().to_asn1_integer().unwrap();
    builder.set_serial_number(&serial).unwrap();
    builder.set_subject_name(&name).unwrap();
    builder.set_issuer_name(&name).unwrap();
    builder.set_pubkey(key).unwrap();
    builder
        .set_not_before(&Asn1Time::days_from_now(0).unwrap())
        .unwrap();
    builder
        .set_not_after(&Asn1Time::days_from_now(days).unwrap())
        .unwrap();
    let mut san = SubjectAlternativeName::new();
    for name in names {
        san.dns(name);
    }
    let san = san.build(&builder.x509v3_context(None, None)).unwrap();
    builder.append_extension(san).unwrap();
    // Ed25519 signs the message itself, without a digest.
    let digest = if key.id() == Id::ED25519 {
        MessageDigest::null()
    } else {
        MessageDigest::sha256()
    };
    builder.sign(key, digest).unwrap();
    builder.build()
}
