//! JWT verification per request: HS256, RS256 and ES256, with and without the verified-token cache.
//! `cargo bench --bench jwt`

#![allow(clippy::unwrap_used, clippy::expect_used)] // benchmark setup

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use edgegate::auth::jwt::JwtVerifier;
use edgegate::auth::mint::{mint, MintRequest};
use edgegate::config::{JwtProviderSpec, KeyMaterial, TokenSource};
use openssl::ec::{EcGroup, EcKey};
use openssl::nid::Nid;
use openssl::pkey::PKey;
use openssl::rsa::Rsa;
use std::time::Duration;

fn verifier(algorithm: jsonwebtoken::Algorithm, keys: KeyMaterial) -> JwtVerifier {
    JwtVerifier::new(&JwtProviderSpec {
        name: "bench".into(),
        issuer: None,
        audiences: vec![],
        algorithms: vec![algorithm],
        keys,
        clock_skew: Duration::from_secs(30),
        require_claims: vec!["exp".into()],
        token_from: vec![TokenSource::Header(http::header::AUTHORIZATION)],
        forward_claims: vec![("sub".into(), http::HeaderName::from_static("x-user-id"))],
        tier_claim: "plan".into(),
        strip_token: false,
    })
    .unwrap()
}

fn token(algorithm: &str, key: &[u8]) -> String {
    mint(&MintRequest {
        algorithm: algorithm.into(),
        key: key.to_vec(),
        subject: Some("alice".into()),
        claims: vec!["plan=premium".into(), "roles=user,admin".into()],
        ttl: Duration::from_secs(3600),
        ..MintRequest::default()
    })
    .unwrap()
}

fn bench_jwt(c: &mut Criterion) {
    let secret = b"an-hmac-secret-that-is-long-enough-for-hs256".to_vec();
    let rsa = PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap();
    let ec = PKey::from_ec_key(
        EcKey::generate(&EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap()).unwrap(),
    )
    .unwrap();
    let cases = [
        (
            "HS256",
            jsonwebtoken::Algorithm::HS256,
            KeyMaterial::Secret(secret.clone()),
            secret,
        ),
        (
            "RS256",
            jsonwebtoken::Algorithm::RS256,
            KeyMaterial::PublicKeyPem(rsa.public_key_to_pem().unwrap()),
            rsa.private_key_to_pem_pkcs8().unwrap(),
        ),
        (
            "ES256",
            jsonwebtoken::Algorithm::ES256,
            KeyMaterial::PublicKeyPem(ec.public_key_to_pem().unwrap()),
            ec.private_key_to_pem_pkcs8().unwrap(),
        ),
    ];
    for (name, algorithm, keys, signing_key) in cases {
        let verifier = verifier(algorithm, keys);
        let token = token(name, &signing_key);
        assert!(verifier.verify(&token).is_ok());
        c.bench_function(&format!("jwt/{name}/uncached"), |b| {
            b.iter(|| verifier.verify_uncached(black_box(&token)).unwrap())
        });
        c.bench_function(&format!("jwt/{name}/cached"), |b| {
            b.iter(|| verifier.verify(black_box(&token)).unwrap())
        });
    }
}

criterion_group!(benches, bench_jwt);
criterion_main!(benches);
