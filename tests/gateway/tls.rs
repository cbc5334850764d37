//! TLS towards backends: `tls.sni` and `tls.verify`.

use crate::support::{Gateway, Origin, ReadWrite, TlsWrap};
use openssl::asn1::Asn1Time;
use openssl::hash::MessageDigest;
use openssl::pkey::{PKey, Private};
use openssl::rsa::Rsa;
use openssl::ssl::{SslAcceptor, SslMethod};
use openssl::x509::extension::SubjectAlternativeName;
use openssl::x509::{X509NameBuilder, X509};
use std::sync::Arc;

/// A self-signed certificate for `host`.
pub fn self_signed(host: &str) -> (X509, PKey<Private>) {
    let key = PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap();
    let mut name = X509NameBuilder::new().unwrap();
    name.append_entry_by_text("CN", host).unwrap();
    let name = name.build();
    let mut builder = X509::builder().unwrap();
    builder.set_version(2).unwrap();
    builder.set_subject_name(&name).unwrap();
    builder.set_issuer_name(&name).unwrap();
    builder.set_pubkey(&key).unwrap();
    builder
        .set_not_before(&Asn1Time::days_from_now(0).unwrap())
        .unwrap();
    builder
        .set_not_after(&Asn1Time::days_from_now(2).unwrap())
        .unwrap();
    let san = SubjectAlternativeName::new()
        .dns(host)
        .build(&builder.x509v3_context(None, None))
        .unwrap();
    builder.append_extension(san).unwrap();
    builder.sign(&key, MessageDigest::sha256()).unwrap();
    (builder.build(), key)
}

fn tls_origin(name: &str) -> Origin {
    let (cert, key) = self_signed("origin.test");
    tls_origin_with(name, cert, key)
}

/// An origin speaking TLS with `cert`.
pub fn tls_origin_with(name: &str, cert: X509, key: PKey<Private>) -> Origin {
    let mut acceptor = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls()).unwrap();
    acceptor.set_certificate(&cert).unwrap();
    acceptor.set_private_key(&key).unwrap();
    let acceptor = acceptor.build();
    let wrap: TlsWrap = Arc::new(move |stream| {
        acceptor
            .accept(stream)
            .ok()
            .map(|secured| Box::new(secured) as Box<dyn ReadWrite>)
    });
    Origin::start_tls(name, wrap)
}

fn gateway(origin: &Origin, verify: bool) -> Gateway {
    Gateway::start(&format!(
        "upstreams:\n  secure:\n    tls: {{ sni: origin.test, verify: {verify} }}\n    targets: [{{ address: \"{}\" }}]\n\
         routes:\n  - {{ name: all, upstream: secure }}\n",
        origin.addr
    ))
}

#[test]
fn backends_can_be_reached_over_tls() {
    let origin = tls_origin("secure");
    let gw = gateway(&origin, false);
    let response = gw.get("/over-tls");
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.json()["target"], "/over-tls");
    assert_eq!(origin.hits(), 1);
}

#[test]
fn an_untrusted_backend_certificate_is_refused_when_verifying() {
    let origin = tls_origin("untrusted");
    let gw = gateway(&origin, true);
    let response = gw.get("/");
    assert_eq!(response.status, 502, "{}", response.text());
    assert_eq!(response.json()["error"], "bad_gateway");
    assert_eq!(
        origin.hits(),
        0,
        "no request may be sent over an unverified connection"
    );
}

#[test]
fn aggregation_parts_reach_tls_backends_and_refuse_unverified_ones() {
    let origin = tls_origin("secure");
    let gw = Gateway::start(&format!(
        "upstreams:\n  secure:\n    tls: {{ sni: origin.test, verify: false }}\n    targets: [{{ address: \"{0}\" }}]\n\
         \x20 checked:\n    tls: {{ sni: origin.test, verify: true }}\n    targets: [{{ address: \"{0}\" }}]\n\
         routes:\n  - {{ name: agg, aggregate: {{ parts: {{ open: {{ upstream: secure, path: /a }}, strict: {{ upstream: checked, path: /b }} }} }} }}\n",
        origin.addr
    ));
    let answer = gw.get("/any").json();
    assert_eq!(answer["data"]["open"]["target"], "/a", "{answer}");
    assert_eq!(answer["data"]["strict"], serde_json::Value::Null);
    assert_eq!(
        answer["meta"]["failed"],
        serde_json::json!([{"part": "strict", "reason": "connect_failure"}])
    );
    assert_eq!(
        origin.hits(),
        1,
        "nothing is sent over the unverified connection"
    );
}
