//! Header templates: `{request_id}`, `{client_ip}`, `{route}`, `{upstream}`, `{consumer}` and
//! `{claim.NAME}` in `request_headers`/`response_headers` values, with tokens signed by OpenSSL.

use crate::auth::write;
use crate::cache::{serve, x_cache};
use crate::support::{check, temp_dir, Gateway, Origin};
use base64::Engine as _;
use openssl::hash::MessageDigest;
use openssl::pkey::PKey;
use openssl::sign::Signer;
use serde_json::{json, Value};

pub const SECRET: &str = "a-template-test-secret-long-enough-for-hs256";

/// An HS256 token over `claims`, signed with OpenSSL's HMAC.
pub fn token(claims: Value) -> String {
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let header = json!({"alg": "HS256", "typ": "JWT"});
    let message = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let key = PKey::hmac(SECRET.as_bytes()).unwrap();
    let mut signer = Signer::new(MessageDigest::sha256(), &key).unwrap();
    let signature = signer.sign_oneshot_to_vec(message.as_bytes()).unwrap();
    format!("Bearer {message}.{}", b64(&signature))
}

pub fn expires() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600
}

const REQUEST_TEMPLATES: &str = "request_headers: { set: { \
     X-User: \"{claim.sub}\", X-Org: \"{claim.org.id}\", X-Who: \"{consumer}@{client_ip}\", \
     X-Trace: \"{request_id}/{route}/{upstream}\", X-Static: \"{{literal}}\" } }";
const RESPONSE_TEMPLATES: &str =
    "response_headers: { set: { X-Served-By: \"{upstream}\", X-Echo-ID: \"id={request_id}\" } }";

#[test]
fn templates_are_filled_from_the_request_the_token_and_the_chosen_pool() {
    let v1 = Origin::start("v1");
    let v2 = Origin::start("v2");
    let dir = temp_dir();
    let secret = write(&dir, "hs.secret", SECRET.as_bytes());
    let gw = Gateway::start(&format!(
        "auth:\n  jwt:\n    providers:\n      main: {{ algorithms: [HS256], secret_file: {secret} }}\n\
         \x20 api_keys:\n    keys:\n      - {{ consumer: partner-a, sha256: {key_hash} }}\n\
         upstreams:\n  v1: {{ targets: [{{ address: \"{v1}\" }}] }}\n  v2: {{ targets: [{{ address: \"{v2}\" }}] }}\n\
         routes:\n\
         \x20 - {{ name: jwt, match: {{ path_prefix: /jwt }}, upstream: v1, auth: {{ jwt: main }}, {REQUEST_TEMPLATES}, {RESPONSE_TEMPLATES} }}\n\
         \x20 - {{ name: keys, match: {{ path_prefix: /keys }}, upstream: v1, auth: {{ api_key: true }}, {REQUEST_TEMPLATES} }}\n\
         \x20 - {{ name: split, match: {{ path_prefix: /split }}, split: [{{ upstream: v1, weight: 1 }}, {{ upstream: v2, weight: 1 }}], {RESPONSE_TEMPLATES} }}\n\
         \x20 - {{ name: open, upstream: v2, {REQUEST_TEMPLATES}, {RESPONSE_TEMPLATES} }}\n",
        secret = secret.display(),
        key_hash = edgegate::auth::api_key::hash_key_hex("partner-a-key"),
        v1 = v1.addr,
        v2 = v2.addr,
    ));

    let bearer = token(json!({"sub": "alice", "org": {"id": "acme-7"}, "exp": expires()}));
    let response = gw.request(
        "GET",
        "/jwt/x",
        &[("Authorization", &bearer), ("X-Request-ID", "tpl-1")],
        b"",
    );
    assert_eq!(response.status, 200, "{}", response.text());
    let seen = &response.json()["headers"];
    assert_eq!(seen["x-user"], "alice");
    assert_eq!(seen["x-org"], "acme-7");
    assert_eq!(seen["x-who"], "alice@127.0.0.1");
    assert_eq!(seen["x-trace"], "tpl-1/jwt/v1");
    assert_eq!(seen["x-static"], "{literal}");
    assert_eq!(response.header("x-served-by"), Some("v1"));
    assert_eq!(response.header("x-echo-id"), Some("id=tpl-1"));

    // A generated request id is the one the response carries.
    let response = gw.request("GET", "/jwt/y", &[("Authorization", &bearer)], b"");
    let id = response.header("x-request-id").unwrap().to_string();
    assert_eq!(
        response.json()["headers"]["x-trace"],
        format!("{id}/jwt/v1")
    );

    // An API key's consumer; it has no claims, so a claim header is not sent, whatever the
    // client put there.
    let response = gw.request(
        "GET",
        "/keys/x",
        &[
            ("X-API-Key", "partner-a-key"),
            ("X-User", "mallory"),
            ("X-Org", "evil"),
        ],
        b"",
    );
    assert_eq!(response.status, 200, "{}", response.text());
    let seen = &response.json()["headers"];
    assert_eq!(seen["x-who"], "partner-a@127.0.0.1");
    assert!(seen.get("x-user").is_none(), "{seen}");
    assert!(seen.get("x-org").is_none(), "{seen}");

    // No authentication at all: the identity headers the client forged are dropped.
    let response = gw.request(
        "GET",
        "/",
        &[
            ("X-User", "mallory"),
            ("X-Who", "admin@10.0.0.1"),
            ("X-Request-ID", "tpl-2"),
        ],
        b"",
    );
    let seen = &response.json()["headers"];
    assert!(seen.get("x-user").is_none(), "{seen}");
    assert!(seen.get("x-who").is_none(), "{seen}");
    assert_eq!(seen["x-trace"], "tpl-2/open/v2");
    assert_eq!(response.header("x-served-by"), Some("v2"));

    // A split names the pool that answered.
    let mut answered = std::collections::BTreeSet::new();
    for _ in 0..6 {
        let response = gw.get("/split");
        let origin = response.json()["origin"].as_str().unwrap().to_string();
        assert_eq!(response.header("x-served-by"), Some(origin.as_str()));
        answered.insert(origin);
    }
    assert_eq!(answered.len(), 2, "{answered:?}");
}

#[test]
fn response_templates_apply_to_cache_hits() {
    let origin = Origin::start("app");
    serve(&origin, "cached body", &[("Cache-Control", "max-age=60")]);
    let gw = Gateway::start(&format!(
        "upstreams:\n  app: {{ targets: [{{ address: \"{}\" }}] }}\n\
         routes:\n  - {{ name: cached, upstream: app, cache: {{ ttl: 30s }}, {RESPONSE_TEMPLATES} }}\n",
        origin.addr
    ));
    let miss = gw.request("GET", "/c", &[("X-Request-ID", "first")], b"");
    assert_eq!(x_cache(&miss), "MISS");
    assert_eq!(miss.header("x-echo-id"), Some("id=first"));
    for id in ["second", "third"] {
        let hit = gw.request("GET", "/c", &[("X-Request-ID", id)], b"");
        assert_eq!(x_cache(&hit), "HIT");
        // Filled for each answer, not stored with the first one.
        assert_eq!(hit.header("x-echo-id"), Some(format!("id={id}").as_str()));
        assert_eq!(hit.header("x-served-by"), Some("app"));
    }
    assert_eq!(origin.hits(), 1);
}

#[test]
fn an_unknown_variable_is_refused_with_its_place() {
    let path = temp_dir().join("edgegate.yaml");
    std::fs::write(
        &path,
        "listeners:\n  - { name: http, address: 127.0.0.1:8080 }\n\
         upstreams:\n  app: { targets: [{ address: 127.0.0.1:9001 }] }\n\
         routes:\n  - name: all\n    upstream: app\n    request_headers:\n      set:\n\
         \x20       X-Fine: \"{request_id}\"\n        X-User: \"{user}\"\n\
         \x20   response_headers: { set: { X-Open: \"{claim.sub\" } }\n",
    )
    .unwrap();
    let (ok, _, stderr) = check(&path);
    let stderr = stderr.replace(&path.display().to_string(), "FILE");
    assert!(!ok, "{stderr}");
    assert!(
        stderr.contains(
            "FILE:11:9: routes[0].request_headers.set.X-User: `{user}` is not a template variable; \
             use one of {request_id}, {client_ip}, {route}, {upstream}, {consumer}, {claim.NAME}"
        ),
        "{stderr}"
    );
    assert!(
        stderr.contains("FILE:12:32: routes[0].response_headers.set.X-Open: `{` opens a variable that is never closed"),
        "{stderr}"
    );
    assert!(!stderr.contains("X-Fine"), "{stderr}");
}
