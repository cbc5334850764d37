//! Rate limiting (local store): per-IP windows with headers, tiers from a JWT claim and from an
//! API key, composite keys, shadow mode.

use crate::support::{temp_dir, Gateway, Origin, Response};
use edgegate::auth::mint::{mint, MintRequest};
use std::time::Duration;

const SECRET: &str = "an-hmac-secret-that-is-long-enough-for-hs256";

fn gateway(origin: &Origin, policies: &str, routes: &str) -> Gateway {
    let dir = temp_dir();
    let secret = dir.join("secret");
    std::fs::write(&secret, SECRET).unwrap();
    Gateway::start(&format!(
        "auth:\n  jwt:\n    providers:\n      main: {{ algorithms: [HS256], secret_file: {} }}\n\
         \x20 api_keys:\n    keys:\n      - {{ consumer: partner, sha256: {}, tier: premium }}\n\
         rate_limits:\n  policies:\n{policies}\
         upstreams:\n  app: {{ targets: [{{ address: \"{}\" }}] }}\nroutes:\n{routes}",
        secret.display(),
        edgegate::auth::api_key::hash_key_hex("partner-key"),
        origin.addr
    ))
}

fn token(claims: &[&str], subject: &str) -> String {
    mint(&MintRequest {
        algorithm: "HS256".into(),
        key: SECRET.as_bytes().to_vec(),
        subject: Some(subject.into()),
        claims: claims.iter().map(|c| c.to_string()).collect(),
        ttl: Duration::from_secs(600),
        ..MintRequest::default()
    })
    .unwrap()
}

fn header_u64(response: &Response, name: &str) -> u64 {
    response
        .header(name)
        .unwrap_or_else(|| panic!("no {name}: {:?}", response.headers))
        .parse()
        .unwrap()
}

#[test]
fn a_per_ip_window_admits_the_limit_then_answers_429_with_headers() {
    let origin = Origin::start("app");
    let gw = gateway(
        &origin,
        "    per_ip: { algorithm: fixed_window, key: client_ip, limit: 3, window: 1m }\n",
        "  - { name: api, upstream: app, rate_limits: [per_ip] }\n",
    );
    for expected_remaining in [2, 1, 0] {
        let ok = gw.get("/");
        assert_eq!(ok.status, 200);
        assert_eq!(header_u64(&ok, "x-ratelimit-limit"), 3);
        assert_eq!(header_u64(&ok, "x-ratelimit-remaining"), expected_remaining);
        assert!(header_u64(&ok, "x-ratelimit-reset") <= 60);
        assert_eq!(ok.header("ratelimit-policy"), Some("\"per_ip\";q=3;w=60"));
        assert!(ok
            .header("ratelimit")
            .unwrap()
            .starts_with(&format!("\"per_ip\";r={expected_remaining};t=")));
    }
    let limited = gw.get("/");
    assert_eq!(limited.status, 429);
    let body = limited.json();
    assert_eq!(body["error"], "rate_limited");
    assert_eq!(body["request_id"].as_str(), limited.header("x-request-id"));
    let retry_after = header_u64(&limited, "retry-after");
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    assert_eq!(header_u64(&limited, "x-ratelimit-remaining"), 0);
    assert_eq!(origin.hits(), 3, "the 429 never reached the backend");
    gw.wait_metric(
        "edgegate_rate_limited_total{policy=\"per_ip\",route=\"api\"}",
        1.0,
    );
}

#[test]
fn a_limited_client_passes_again_after_the_window() {
    let origin = Origin::start("app");
    let gw = gateway(
        &origin,
        "    fast: { algorithm: fixed_window, key: client_ip, limit: 2, window: 1s }\n",
        "  - { name: api, upstream: app, rate_limits: [fast] }\n",
    );
    let limited = (0..20)
        .map(|_| gw.get("/"))
        .find(|r| r.status == 429)
        .expect("never limited");
    let wait = header_u64(&limited, "retry-after");
    std::thread::sleep(Duration::from_millis(wait * 1000 + 100));
    assert_eq!(gw.get("/").status, 200);
}

#[test]
fn tiers_come_from_the_jwt_claim_or_the_api_key() {
    let origin = Origin::start("app");
    let gw = gateway(
        &origin,
        "    per_consumer: { algorithm: sliding_window, key: consumer, limit: 1, window: 1m, tiers: { premium: 3 } }\n",
        "  - { name: api, upstream: app, auth: { any_of: [jwt:main, api_key] }, rate_limits: [per_consumer] }\n",
    );
    let count = |headers: &[(&str, &str)]| {
        (0..5)
            .filter(|_| gw.request("GET", "/", headers, b"").status == 200)
            .count()
    };
    let premium = format!("Bearer {}", token(&["plan=premium"], "alice"));
    assert_eq!(count(&[("Authorization", &premium)]), 3, "premium JWT");
    let basic = format!("Bearer {}", token(&[], "bob"));
    assert_eq!(
        count(&[("Authorization", &basic)]),
        1,
        "no tier: the policy limit"
    );
    assert_eq!(count(&[("X-API-Key", "partner-key")]), 3, "premium API key");
    let unknown_tier = format!("Bearer {}", token(&["plan=platinum"], "carol"));
    assert_eq!(
        count(&[("Authorization", &unknown_tier)]),
        1,
        "unknown tier: the policy limit"
    );
}

#[test]
fn composite_keys_are_isolated_and_shadow_policies_never_reject() {
    let origin = Origin::start("app");
    let gw = gateway(
        &origin,
        "    per_tenant: { algorithm: token_bucket, key: [client_ip, header:X-Tenant], limit: 1, window: 1m, burst: 2 }\n\
         \x20   watch: { algorithm: leaky_bucket, key: global, limit: 1, window: 1m, shadow: true }\n",
        "  - { name: tenants, match: { path_prefix: /t }, upstream: app, rate_limits: [per_tenant] }\n\
         \x20 - { name: watched, upstream: app, rate_limits: [watch] }\n",
    );
    let tenant = |name: &str| gw.request("GET", "/t", &[("X-Tenant", name)], b"").status;
    assert_eq!(
        [tenant("a"), tenant("a"), tenant("a")],
        [200, 200, 429],
        "a burst of 2"
    );
    assert_eq!(
        [tenant("b"), tenant("b")],
        [200, 200],
        "tenant b has its own bucket"
    );

    for _ in 0..5 {
        let response = gw.get("/");
        assert_eq!(response.status, 200, "shadow mode never rejects");
        assert!(response.header("x-ratelimit-remaining").is_some());
    }
    gw.wait_metric(
        "edgegate_rate_limited_shadow_total{policy=\"watch\",route=\"watched\"}",
        4.0,
    );
}

#[test]
fn rate_limit_configuration_mistakes_are_reported() {
    let dir = temp_dir();
    let path = dir.join("edgegate.yaml");
    std::fs::write(
        &path,
        "listeners: [{ name: http, address: 127.0.0.1:1 }]\n\
         rate_limits:\n  store: redis\n  policies:\n\
         \x20   bad: { algorithm: gcra, key: [client_ip, cookie:x], limit: 0, window: 1h, burst: 3 }\n\
         upstreams: { u: { targets: [{ address: 127.0.0.1:2 }] } }\n\
         routes:\n  - { name: r, upstream: u, rate_limits: [missing] }\n",
    )
    .unwrap();
    let (ok, _, stderr) = crate::support::check(&path);
    assert!(!ok);
    for expected in [
        "rate_limits: `store: redis` needs `redis: { url: redis://HOST:PORT/DB }`",
        "rate_limits.policies.bad.algorithm: `gcra` is not one of",
        "rate_limits.policies.bad.key: `cookie:x` is not one of",
        "rate_limits.policies.bad.limit: must be at least 1",
        "routes[0].rate_limits[0]: no policy named `missing`",
    ] {
        assert!(
            stderr.contains(expected),
            "missing {expected:?} in:\n{stderr}"
        );
    }
}

#[test]
fn decisions_are_counted_logged_and_the_top_offenders_shown() {
    let origin = Origin::start("app");
    let gw = gateway(
        &origin,
        "    one: { algorithm: fixed_window, key: client_ip, limit: 2, window: 1m }\n\
         \x20   watch: { algorithm: fixed_window, key: client_ip, limit: 1, window: 1m, shadow: true }\n\
         \x20   per_tenant: { algorithm: fixed_window, key: \"header:x-tenant\", limit: 1, window: 1m }\n\
         \x20   per_token: { algorithm: fixed_window, key: \"header:x-api-token\", limit: 1, window: 1m }\n",
        "  - { name: limited, match: { path_prefix: /limited }, upstream: app, rate_limits: [watch, one] }\n\
         \x20 - { name: tenants, match: { path_prefix: /tenants }, upstream: app, rate_limits: [per_tenant] }\n\
         \x20 - { name: tokens, upstream: app, rate_limits: [per_token] }\n",
    );
    let statuses: Vec<u16> = (0..3).map(|_| gw.get("/limited").status).collect();
    assert_eq!(statuses, [200, 200, 429]);
    let decisions = |policy: &str, outcome: &str| {
        gw.metric(&format!(
            "edgegate_ratelimit_decisions_total{{outcome=\"{outcome}\",policy=\"{policy}\"}}"
        ))
    };
    assert_eq!(decisions("watch", "admitted"), Some(1.0));
    assert_eq!(decisions("watch", "shadow_limited"), Some(2.0));
    assert_eq!(decisions("one", "admitted"), Some(2.0));
    assert_eq!(decisions("one", "limited"), Some(1.0));
    assert_eq!(decisions("one", "store_error"), Some(0.0));

    let lines = gw.access_log(3);
    let fields = |line: &serde_json::Value| {
        (
            line["limited_by"].as_str().map(str::to_string),
            line["shadow_limited_by"].as_str().map(str::to_string),
        )
    };
    assert_eq!(fields(&lines[0]), (None, None));
    assert_eq!(fields(&lines[1]), (None, Some("watch".into())));
    assert_eq!(
        fields(&lines[2]),
        (Some("one".into()), Some("watch".into()))
    );

    // One loud tenant among thirty quiet ones; each tenant is allowed one request a minute.
    for round in 0..20 {
        gw.request("GET", "/tenants", &[("x-tenant", "loud")], b"");
        if round < 15 {
            for quiet in 0..2 {
                let tenant = format!("quiet-{round}-{quiet}");
                gw.request("GET", "/tenants", &[("x-tenant", &tenant)], b"");
            }
        }
    }
    for _ in 0..3 {
        gw.request("GET", "/", &[("x-api-token", "hunter2")], b"");
    }
    let status = gw.admin_get("/status").json();
    assert_eq!(status["rate_limits"]["store"], "local");
    let policy = |name: &str| {
        status["rate_limits"]["policies"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("{name} in {status}"))
    };
    let tenants = policy("per_tenant");
    let top = tenants["top_offenders"].as_array().unwrap();
    assert_eq!(
        top.len(),
        1,
        "only the loud tenant was ever limited: {top:?}"
    );
    assert_eq!(top[0]["key"], "route=tenants header:x-tenant=loud");
    assert_eq!(top[0]["limited"], 19);
    assert_eq!(top[0]["error"], 0);
    let one = policy("one");
    assert_eq!(
        one["top_offenders"][0]["key"],
        "route=limited client_ip=127.0.0.1"
    );
    assert_eq!(one["shadow"], false);
    assert_eq!(policy("watch")["shadow"], true);
    // A header that carries a credential is shown by a fingerprint, never as is.
    let token_key = policy("per_token")["top_offenders"][0]["key"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(!token_key.contains("hunter2"), "{token_key}");
    let fingerprint = {
        use sha2::Digest;
        let digest = sha2::Sha256::digest(b"hunter2");
        digest[..6]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    };
    assert_eq!(
        token_key,
        format!("route=tokens header:x-api-token=sha256:{fingerprint}")
    );
}
