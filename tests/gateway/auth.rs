//! Authentication and authorization: JWT providers (every key source and algorithm family),
//! every rejection reason, claim forwarding without spoofing, API keys, roles and scopes.

use crate::support::{temp_dir, Gateway, Origin, Response};
use edgegate::auth::mint::{mint, MintRequest};
use openssl::ec::{EcGroup, EcKey};
use openssl::nid::Nid;
use openssl::pkey::PKey;
use openssl::rsa::Rsa;
use std::path::{Path, PathBuf};
use std::time::Duration;

const SECRET: &str = "an-hmac-secret-that-is-long-enough-for-hs256";

/// A private key (PKCS#8 PEM, for signing) and its public key (PEM, for the gateway).
struct KeyPair {
    private_pem: Vec<u8>,
    public_pem: Vec<u8>,
}

fn rsa_pair() -> KeyPair {
    let key = PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap();
    KeyPair {
        private_pem: key.private_key_to_pem_pkcs8().unwrap(),
        public_pem: key.public_key_to_pem().unwrap(),
    }
}

fn ec_pair() -> KeyPair {
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
    let key = PKey::from_ec_key(EcKey::generate(&group).unwrap()).unwrap();
    KeyPair {
        private_pem: key.private_key_to_pem_pkcs8().unwrap(),
        public_pem: key.public_key_to_pem().unwrap(),
    }
}

fn ed_pair() -> KeyPair {
    let key = PKey::generate_ed25519().unwrap();
    KeyPair {
        private_pem: key.private_key_to_pem_pkcs8().unwrap(),
        public_pem: key.public_key_to_pem().unwrap(),
    }
}

pub(crate) fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

fn token(algorithm: &str, key: &[u8], claims: &[&str]) -> String {
    mint(&MintRequest {
        algorithm: algorithm.into(),
        key: key.to_vec(),
        subject: Some("alice".into()),
        issuer: Some("https://auth.test/".into()),
        audience: Some("api".into()),
        claims: claims.iter().map(|c| c.to_string()).collect(),
        ttl: Duration::from_secs(3600),
        kid: None,
    })
    .unwrap()
}

fn hs(claims: &[&str]) -> String {
    token("HS256", SECRET.as_bytes(), claims)
}

pub(crate) fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// An unsigned token with arbitrary header and claims (for the attacks).
fn forge(header: &str, claims: &str, signature: &str) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    format!("{}.{}.{signature}", b64.encode(header), b64.encode(claims))
}

struct Setup {
    gw: Gateway,
    origin: Origin,
    rsa: KeyPair,
}

fn setup() -> Setup {
    let origin = Origin::start("app");
    let dir = temp_dir();
    let secret = write(&dir, "hs.secret", format!("{SECRET}\n").as_bytes());
    let rsa = rsa_pair();
    let rsa_public = write(&dir, "rsa.pub.pem", &rsa.public_pem);
    let gw = Gateway::start(&format!(
        "auth:\n  jwt:\n    providers:\n\
         \x20     main:\n        issuer: https://auth.test/\n        audiences: [api]\n        algorithms: [HS256]\n\
         \x20       secret_file: {secret}\n        clock_skew: 5s\n\
         \x20       token_from: [header:Authorization, cookie:access_token, query:access_token]\n\
         \x20       forward_claims: {{ sub: X-User-ID, plan: X-User-Tier, roles: X-User-Roles }}\n\
         \x20       strip_token: true\n\
         \x20     rsa:\n        algorithms: [RS256]\n        public_key_file: {rsa_public}\n\
         \x20 api_keys:\n    keys:\n      - {{ consumer: partner-a, sha256: {key_hash}, tier: premium }}\n\
         upstreams:\n  app: {{ targets: [{{ address: \"{origin}\" }}] }}\n\
         routes:\n\
         \x20 - {{ name: admin, match: {{ path_prefix: /admin }}, upstream: app, auth: {{ jwt: main, require_roles: [admin], require_scopes: [read:users] }} }}\n\
         \x20 - {{ name: rsa, match: {{ path_prefix: /rsa }}, upstream: app, auth: {{ jwt: rsa }} }}\n\
         \x20 - {{ name: keys, match: {{ path_prefix: /keys }}, upstream: app, auth: {{ api_key: true }} }}\n\
         \x20 - {{ name: either, match: {{ path_prefix: /either }}, upstream: app, auth: {{ any_of: [jwt:main, api_key] }} }}\n\
         \x20 - {{ name: private, match: {{ path_prefix: /private }}, upstream: app, auth: {{ jwt: main }} }}\n\
         \x20 - {{ name: public, upstream: app }}\n",
        secret = secret.display(),
        rsa_public = rsa_public.display(),
        key_hash = edgegate::auth::api_key::hash_key_hex("partner-a-key"),
        origin = origin.addr,
    ));
    Setup { gw, origin, rsa }
}

pub(crate) fn assert_unauthorized(response: &Response, why: &str) {
    assert_eq!(response.status, 401, "{why}: {}", response.text());
    let body = response.json();
    assert_eq!(body["error"], "unauthorized", "{why}");
    let challenge = response.header("www-authenticate").unwrap_or_default();
    assert!(
        challenge.starts_with("Bearer error=\"invalid_token\", error_description=\""),
        "{why}: {challenge}"
    );
}

#[test]
fn a_valid_token_passes_and_its_claims_are_forwarded_without_spoofing() {
    let s = setup();
    let token = hs(&["plan=premium", "roles=admin,user"]);
    let response = s.gw.request(
        "GET",
        "/private/x",
        &[
            ("Authorization", &bearer(&token)),
            ("X-User-ID", "mallory"),
            ("X-User-Tier", "free"),
        ],
        b"",
    );
    assert_eq!(response.status, 200, "{}", response.text());
    let seen = &response.json()["headers"];
    assert_eq!(
        seen["x-user-id"], "alice",
        "the client's X-User-ID was replaced"
    );
    assert_eq!(seen["x-user-tier"], "premium");
    assert_eq!(seen["x-user-roles"], "admin,user");
    assert!(
        seen.get("authorization").is_none(),
        "strip_token removes the token"
    );

    let public = s.gw.request("GET", "/", &[("X-User-ID", "mallory")], b"");
    assert!(
        public.json()["headers"].get("x-user-id").is_none(),
        "identity headers are stripped on public routes too"
    );
    let lines = s.gw.access_log(2);
    assert!(lines.iter().any(|l| l["consumer"] == "alice"), "{lines:?}");
}

#[test]
fn every_kind_of_bad_token_is_refused_before_the_backend() {
    let s = setup();
    let now = edgegate::auth::jwt::unix_now();
    let valid = hs(&[]);
    let (head, rest) = valid.split_once('.').unwrap();
    let (payload, signature) = rest.split_once('.').unwrap();
    let mut tampered_payload = payload.to_string();
    let last = tampered_payload.pop().unwrap();
    tampered_payload.push(if last == 'A' { 'B' } else { 'A' });
    let cases: Vec<(&str, String)> = vec![
        (
            "alg none",
            forge(
                r#"{"alg":"none","typ":"JWT"}"#,
                &format!(r#"{{"sub":"alice","exp":{}}}"#, now + 600),
                "",
            ),
        ),
        (
            "tampered payload",
            format!("{head}.{tampered_payload}.{signature}"),
        ),
        ("truncated", format!("{head}.{payload}")),
        (
            "cut signature",
            format!("{head}.{payload}.{}", &signature[..signature.len() / 2]),
        ),
        ("garbage base64", "!!!.###.$$$".to_string()),
        (
            "wrong issuer",
            token("HS256", SECRET.as_bytes(), &["iss=https://evil.test/"]),
        ),
        (
            "wrong audience",
            token("HS256", SECRET.as_bytes(), &["aud=other"]),
        ),
        (
            "expired beyond skew",
            token("HS256", SECRET.as_bytes(), &[&format!("exp={}", now - 60)]),
        ),
        (
            "not yet valid",
            token("HS256", SECRET.as_bytes(), &[&format!("nbf={}", now + 600)]),
        ),
        (
            "oversized",
            token(
                "HS256",
                SECRET.as_bytes(),
                &[&format!("pad={}", "x".repeat(17 << 10))],
            ),
        ),
        (
            "wrong secret",
            token("HS256", b"another-secret-that-is-long-enough-too!!", &[]),
        ),
    ];
    for (why, token) in &cases {
        let response =
            s.gw.request("GET", "/private", &[("Authorization", &bearer(token))], b"");
        assert_unauthorized(&response, why);
        assert!(
            !response.text().contains(token.as_str()),
            "{why}: the token is never echoed"
        );
    }
    let missing_exp = forge(r#"{"alg":"HS256","typ":"JWT"}"#, r#"{"sub":"alice"}"#, "x");
    assert_unauthorized(
        &s.gw.request(
            "GET",
            "/private",
            &[("Authorization", &bearer(&missing_exp))],
            b"",
        ),
        "no exp",
    );
    assert_unauthorized(&s.gw.get("/private"), "missing");
    assert_eq!(
        s.origin.hits(),
        0,
        "no rejected request reached the backend"
    );
    let metrics = s.gw.wait_metric(
        "edgegate_auth_failures_total{reason=\"missing\",route=\"private\"}",
        1.0,
    );
    for reason in [
        "expired",
        "wrong_issuer",
        "wrong_audience",
        "not_yet_valid",
        "bad_signature",
        "malformed",
    ] {
        let series =
            format!("edgegate_auth_failures_total{{reason=\"{reason}\",route=\"private\"}}");
        assert!(
            crate::support::metric_value(&metrics, &series).is_some(),
            "{series}"
        );
    }
}

#[test]
fn an_hmac_token_made_with_the_public_key_never_passes_an_rsa_provider() {
    let s = setup();
    let genuine = token("RS256", &s.rsa.private_pem, &[]);
    assert_eq!(
        s.gw.request("GET", "/rsa", &[("Authorization", &bearer(&genuine))], b"")
            .status,
        200
    );
    let confused = token("HS256", &s.rsa.public_pem, &[]);
    assert_unauthorized(
        &s.gw
            .request("GET", "/rsa", &[("Authorization", &bearer(&confused))], b""),
        "HS256 signed with the RSA public key",
    );
    let other_key = token("RS256", &rsa_pair().private_pem, &[]);
    assert_unauthorized(
        &s.gw.request(
            "GET",
            "/rsa",
            &[("Authorization", &bearer(&other_key))],
            b"",
        ),
        "signed by another key",
    );
}

#[test]
fn roles_and_scopes_are_enforced_with_403() {
    let s = setup();
    let cases = [
        (vec!["roles=admin", "scope=read:users write:users"], 200),
        (vec!["roles=admin,ops", "scp=read:users,other"], 200),
        (vec!["roles=user", "scope=read:users"], 403),
        (vec!["roles=admin", "scope=write:users"], 403),
        (vec![], 403),
    ];
    for (claims, expected) in cases {
        let response = s.gw.request(
            "GET",
            "/admin",
            &[("Authorization", &bearer(&hs(&claims)))],
            b"",
        );
        assert_eq!(response.status, expected, "{claims:?}: {}", response.text());
        if expected == 403 {
            assert_eq!(response.json()["error"], "forbidden");
        }
    }
}

#[test]
fn api_keys_identify_consumers() {
    let s = setup();
    let good =
        s.gw.request("GET", "/keys", &[("X-API-Key", "partner-a-key")], b"");
    assert_eq!(good.status, 200);
    assert_unauthorized(
        &s.gw
            .request("GET", "/keys", &[("X-API-Key", "partner-a-kez")], b""),
        "bad key",
    );
    assert_unauthorized(&s.gw.get("/keys"), "missing key");
    assert_eq!(
        s.gw.request("GET", "/either", &[("X-API-Key", "partner-a-key")], b"")
            .status,
        200
    );
    assert_eq!(
        s.gw.request(
            "GET",
            "/either",
            &[("Authorization", &bearer(&hs(&[])))],
            b""
        )
        .status,
        200
    );
    let lines = s.gw.access_log(4);
    assert!(
        lines.iter().any(|l| l["consumer"] == "partner-a"),
        "{lines:?}"
    );
    s.gw.wait_metric(
        "edgegate_auth_failures_total{reason=\"unknown_api_key\",route=\"keys\"}",
        1.0,
    );
}

#[test]
fn tokens_are_found_in_cookies_and_queries_and_stripped() {
    let s = setup();
    let token = hs(&[]);
    let by_cookie = s.gw.request(
        "GET",
        "/private",
        &[("Cookie", &format!("theme=dark; access_token={token}"))],
        b"",
    );
    assert_eq!(by_cookie.status, 200);
    assert_eq!(by_cookie.json()["headers"]["cookie"], "theme=dark");
    let by_query = s.gw.get(&format!("/private/p?page=2&access_token={token}"));
    assert_eq!(by_query.status, 200);
    assert_eq!(by_query.json()["target"], "/private/p?page=2");
}

#[test]
fn every_algorithm_family_verifies_and_the_cli_mints_tokens() {
    let origin = Origin::start("app");
    let dir = temp_dir();
    let (rsa, ec, ed) = (rsa_pair(), ec_pair(), ed_pair());
    let paths = [
        write(&dir, "rsa.pub", &rsa.public_pem),
        write(&dir, "ec.pub", &ec.public_pem),
        write(&dir, "ed.pub", &ed.public_pem),
    ];
    std::env::set_var("EDGEGATE_TEST_HS512_SECRET", SECRET);
    let provider = |name: &str, algs: &str, source: &str| {
        format!("      {name}:\n        algorithms: [{algs}]\n        {source}\n")
    };
    let gw = Gateway::start(&format!(
        "auth:\n  jwt:\n    providers:\n{}{}{}{}\
         upstreams:\n  app: {{ targets: [{{ address: \"{}\" }}] }}\n\
         routes:\n\
         \x20 - {{ name: rsa, match: {{ path_prefix: /rsa }}, upstream: app, auth: {{ jwt: rsa }} }}\n\
         \x20 - {{ name: ec, match: {{ path_prefix: /ec }}, upstream: app, auth: {{ jwt: ec }} }}\n\
         \x20 - {{ name: ed, match: {{ path_prefix: /ed }}, upstream: app, auth: {{ jwt: ed }} }}\n\
         \x20 - {{ name: hs, match: {{ path_prefix: /hs }}, upstream: app, auth: {{ jwt: hs }} }}\n",
        provider("rsa", "RS256, RS384, RS512, PS256, PS384, PS512", &format!("public_key_file: {}", paths[0].display())),
        provider("ec", "ES256", &format!("public_key_file: {}", paths[1].display())),
        provider("ed", "EdDSA", &format!("public_key_file: {}", paths[2].display())),
        provider("hs", "HS384, HS512", "secret_env: EDGEGATE_TEST_HS512_SECRET"),
        origin.addr
    ));
    let check = |path: &str, token: String| {
        let response = gw.request("GET", path, &[("Authorization", &bearer(&token))], b"");
        assert_eq!(response.status, 200, "{path}: {}", response.text());
    };
    for alg in ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512"] {
        check("/rsa", token(alg, &rsa.private_pem, &[]));
    }
    check("/ec", token("ES256", &ec.private_pem, &[]));
    check("/ed", token("EdDSA", &ed.private_pem, &[]));
    check("/hs", token("HS512", SECRET.as_bytes(), &[]));
    assert_eq!(
        gw.request("GET", "/hs", &[("Authorization", &bearer(&hs(&[])))], b"")
            .status,
        401,
        "HS256 is not in this provider's list"
    );

    let key_file = write(&dir, "ec.key", &ec.private_pem);
    let output = std::process::Command::new(crate::support::binary())
        .args([
            "token",
            "--alg",
            "ES256",
            "--sub",
            "cli",
            "--ttl",
            "10m",
            "--key-file",
        ])
        .arg(&key_file)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    check(
        "/ec",
        String::from_utf8(output.stdout).unwrap().trim().to_string(),
    );
}

#[test]
fn auth_configuration_mistakes_are_reported() {
    let dir = temp_dir();
    let rsa = write(&dir, "rsa.pub", &rsa_pair().public_pem);
    let short = write(&dir, "short.secret", b"tooshort");
    let yaml = format!(
        "listeners: [{{ name: http, address: 127.0.0.1:1 }}]\n\
         auth:\n  jwt:\n    providers:\n\
         \x20     confused: {{ algorithms: [RS256, HS256], public_key_file: {} }}\n\
         \x20     nothing: {{ algorithms: [none], secret_file: {} }}\n\
         upstreams: {{ u: {{ targets: [{{ address: 127.0.0.1:2 }}] }} }}\n\
         routes:\n  - {{ name: r, upstream: u, auth: {{ jwt: missing }} }}\n",
        rsa.display(),
        short.display()
    );
    let path = write(&dir, "edgegate.yaml", yaml.as_bytes());
    let (ok, _, stderr) = crate::support::check(&path);
    assert!(!ok);
    for expected in [
        "auth.jwt.providers.confused.algorithms[1]: HS256 cannot be verified with any of this provider's keys (they verify [RS256])",
        "auth.jwt.providers.nothing.algorithms[0]: `none` is never accepted",
        "auth.jwt.providers.nothing: the HMAC secret is 8 bytes; use at least 32",
        "routes[0].auth.jwt: no JWT provider named `missing`",
    ] {
        assert!(stderr.contains(expected), "missing {expected:?} in:\n{stderr}");
    }
}
