//! JWT providers with a `jwks_url`: rotation picked up on an unknown `kid`, a bounded wait for a
//! slow refetch, starting without the key set, HTTPS key servers.

use crate::auth::{assert_unauthorized, bearer, write};
use crate::support::{temp_dir, Gateway, Origin};
use edgegate::auth::mint::{mint, MintRequest};
use openssl::pkey::PKey;
use openssl::rsa::Rsa;
use std::time::Duration;

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
