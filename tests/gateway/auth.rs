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

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
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

fn bearer(token: &str) -> String {
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

fn assert_unauthorized(response: &Response, why: &str) {
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

/// An RSA key as a JWK with `kid`, and its private PEM for signing.
fn rsa_jwk(kid: &str) -> (serde_json::Value, Vec<u8>) {
    use base64::Engine as _;
    let rsa = Rsa::generate(2048).unwrap();
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let jwk = serde_json::json!({
        "kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256",
        "n": b64.encode(rsa.n().to_vec()), "e": b64.encode(rsa.e().to_vec()),
    });
    let private = PKey::from_rsa(rsa)
        .unwrap()
        .private_key_to_pem_pkcs8()
        .unwrap();
    (jwk, private)
}

fn jwks(keys: &[&serde_json::Value]) -> String {
    serde_json::json!({ "keys": keys }).to_string()
}

fn kid_token(kid: &str, private_pem: &[u8]) -> String {
    mint(&MintRequest {
        algorithm: "RS256".into(),
        key: private_pem.to_vec(),
        subject: Some("alice".into()),
        ttl: Duration::from_secs(600),
        kid: Some(kid.into()),
        ..MintRequest::default()
    })
    .unwrap()
}

fn jwks_gateway(url: &str, refresh: &str, app: &Origin, env: &[(&str, &str)]) -> Gateway {
    Gateway::start_with_env(
        &format!(
            "auth:\n  jwt:\n    providers:\n      remote: {{ algorithms: [RS256], jwks_url: \"{url}\", jwks_refresh: {refresh} }}\n\
             upstreams:\n  app: {{ targets: [{{ address: \"{}\" }}] }}\n\
             routes:\n  - {{ name: r, upstream: app, auth: {{ jwt: remote }} }}\n",
            app.addr
        ),
        env,
    )
}

fn status_with(gw: &Gateway, token: &str) -> u16 {
    gw.request("GET", "/", &[("Authorization", &bearer(token))], b"")
        .status
}

/// A gateway whose provider fetches its keys from `keys` (refreshed hourly), which publishes key
/// `a`; key `b` is made but not published.
struct Rotation {
    _app: Origin,
    keys: Origin,
    gw: Gateway,
    key_a: serde_json::Value,
    key_b: serde_json::Value,
    private_a: Vec<u8>,
    private_b: Vec<u8>,
}

impl Rotation {
    /// The key set with both keys, as the server publishes it after a rotation.
    fn both_keys(&self) -> String {
        jwks(&[&self.key_a, &self.key_b])
    }
}

/// Starts a [`Rotation`] and waits until a token signed with key `a` passes.
fn rotation() -> Rotation {
    let app = Origin::start("app");
    let (key_a, private_a) = rsa_jwk("a");
    let (key_b, private_b) = rsa_jwk("b");
    let keys = Origin::start("jwks");
    keys.set(|b| b.body = Some(jwks(&[&key_a])));
    let gw = jwks_gateway(&format!("http://{}/jwks.json", keys.addr), "1h", &app, &[]);
    let token_a = kid_token("a", &private_a);
    assert!(crate::support::wait_until(
        Duration::from_secs(10),
        || status_with(&gw, &token_a) == 200
    ));
    Rotation {
        _app: app,
        keys,
        gw,
        key_a,
        key_b,
        private_a,
        private_b,
    }
}

#[test]
fn a_rotated_jwks_is_picked_up_on_an_unknown_kid_without_restart() {
    let r = rotation();
    let token_a = kid_token("a", &r.private_a);
    let fetches = r.keys.hits();

    r.keys.set(|b| b.body = Some(r.both_keys()));
    assert_eq!(
        status_with(&r.gw, &kid_token("b", &r.private_b)),
        200,
        "the new kid works at once"
    );
    assert_eq!(r.keys.hits(), fetches + 1, "one refetch");
    assert_eq!(
        status_with(&r.gw, &token_a),
        200,
        "the old kid keeps working while published"
    );

    let unknown = kid_token("zzz", &r.private_b);
    let response =
        r.gw.request("GET", "/", &[("Authorization", &bearer(&unknown))], b"");
    assert_unauthorized(&response, "unknown kid");
    assert_eq!(r.keys.hits(), fetches + 1, "at most one refetch per 30 s");
    r.gw.wait_metric(
        "edgegate_auth_failures_total{reason=\"unknown_kid\",route=\"r\"}",
        1.0,
    );
}

#[test]
fn a_slow_key_refetch_holds_a_request_at_most_two_seconds() {
    let r = rotation();
    // The key server now answers with the new key, but only after 6 s.
    r.keys.set(|b| {
        b.body = Some(r.both_keys());
        b.delay = Duration::from_secs(6);
    });
    let token_b = kid_token("b", &r.private_b);
    let started = std::time::Instant::now();
    let response =
        r.gw.request("GET", "/", &[("Authorization", &bearer(&token_b))], b"");
    let waited = started.elapsed();
    assert_unauthorized(&response, "answered with the keys there are");
    assert!(waited < Duration::from_millis(4500), "held {waited:?}");
    // The fetch went on without the request and brings the new key in.
    assert!(crate::support::wait_until(Duration::from_secs(15), || {
        status_with(&r.gw, &token_b) == 200
    }));
}

#[test]
fn the_gateway_starts_without_its_jwks_and_keeps_the_last_good_set() {
    let app = Origin::start("app");
    let (key_a, private_a) = rsa_jwk("a");
    let (key_b, private_b) = rsa_jwk("b");
    let port = crate::support::free_port();
    let gw = jwks_gateway(
        &format!("http://127.0.0.1:{port}/jwks.json"),
        "1s",
        &app,
        &[],
    );
    let (token_a, token_b) = (kid_token("a", &private_a), kid_token("b", &private_b));
    let early = gw.request("GET", "/", &[("Authorization", &bearer(&token_a))], b"");
    assert_eq!(early.status, 503, "keys not loaded yet: {}", early.text());
    assert_eq!(early.json()["error"], "service_unavailable");

    let keys = Origin::start_on("jwks", format!("127.0.0.1:{port}").parse().unwrap());
    keys.set(|b| b.body = Some(jwks(&[&key_a])));
    assert!(crate::support::wait_until(
        Duration::from_secs(10),
        || status_with(&gw, &token_a) == 200
    ));

    keys.set(|b| b.body = Some(jwks(&[&key_b])));
    assert!(
        crate::support::wait_until(Duration::from_secs(10), || status_with(&gw, &token_a)
            == 401),
        "a removed kid stops working after the next refresh"
    );
    assert_eq!(status_with(&gw, &token_b), 200);

    keys.set(|b| b.status = 500);
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(
        status_with(&gw, &token_b),
        200,
        "a failed refresh keeps the last good set"
    );
    assert!(gw.stderr().contains("keeping the previous keys"));
}

#[test]
fn jwks_urls_work_over_https() {
    let app = Origin::start("app");
    let (key_a, private_a) = rsa_jwk("a");
    let (cert, tls_key) = crate::tls::self_signed("localhost");
    let dir = temp_dir();
    let ca = write(&dir, "ca.pem", &cert.to_pem().unwrap());
    let keys = crate::tls::tls_origin_with("jwks", cert, tls_key);
    keys.set(|b| b.body = Some(jwks(&[&key_a])));
    let url = format!("https://localhost:{}/jwks.json", keys.addr.port());
    let gw = jwks_gateway(&url, "1h", &app, &[("SSL_CERT_FILE", ca.to_str().unwrap())]);
    let token = kid_token("a", &private_a);
    assert!(
        crate::support::wait_until(Duration::from_secs(10), || status_with(&gw, &token) == 200),
        "{}",
        gw.stderr()
    );
}
