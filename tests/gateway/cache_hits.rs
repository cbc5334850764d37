//! A fresh hit is answered straight from the store, before Pingora's cache phases, unless the
//! request needs them (a condition, a range). Both ways must give the same response: these
//! tests send the same hit both ways and compare, and check that admission still runs first.

use crate::cache::{serve, x_cache};
use crate::support::{Gateway, Origin, Response};

const API_KEY: &str = "a-partner-key";

fn gateway(origin: &Origin) -> Gateway {
    Gateway::start(&format!(
        "auth:\n  api_keys:\n    keys:\n      - {{ consumer: partner, sha256: {} }}\n\
         rate_limits:\n  policies:\n    per_ip: {{ algorithm: fixed_window, key: client_ip, limit: 1000, window: 1m }}\n\
         upstreams:\n  app: {{ targets: [{{ address: \"{}\" }}] }}\n\
         routes:\n\
         \x20 - {{ name: private, match: {{ path_prefix: /private }}, upstream: app, auth: {{ api_key: true }}, cache: {{}} }}\n\
         \x20 - {{ name: cached, upstream: app, rate_limits: [per_ip], cache: {{ ttl: 30s }},\n\
         \x20     response_headers: {{ set: {{ X-Frame-Options: DENY }}, remove: [Server] }} }}\n",
        edgegate::auth::api_key::hash_key_hex(API_KEY),
        origin.addr
    ))
}

/// The response's headers, minus those that differ between any two responses (the request id,
/// the remaining rate-limit budget, the age), sorted.
fn comparable(response: &Response) -> Vec<(String, String)> {
    let mut headers: Vec<(String, String)> = response
        .headers
        .iter()
        .map(|(name, value)| (name.to_ascii_lowercase(), value.clone()))
        .filter(|(name, _)| {
            !matches!(
                name.as_str(),
                "x-request-id" | "x-ratelimit-remaining" | "ratelimit" | "age"
            )
        })
        .collect();
    headers.sort();
    headers
}

fn age(response: &Response) -> u64 {
    response
        .header("age")
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no numeric Age: {:?}", response.headers))
}

#[test]
fn a_fresh_hit_gets_every_header_rule_whichever_way_it_is_served() {
    let origin = Origin::start("app");
    let date =
        httpdate::fmt_http_date(std::time::SystemTime::now() - std::time::Duration::from_secs(100));
    serve(
        &origin,
        "payload",
        &[
            ("Cache-Control", "max-age=600"),
            ("CDN-Cache-Control", "max-age=900"),
            ("Date", &date),
            ("Age", "30"),
            ("ETag", "\"v1\""),
            ("Cache-Tag", "docs"),
            ("Connection", "X-Hop"),
            ("X-Hop", "1"),
            ("X-Kept", "yes"),
            ("Server", "origin-server"),
        ],
    );
    let gw = gateway(&origin);

    let miss = gw.get("/doc");
    assert_eq!((miss.status, x_cache(&miss)), (200, "MISS"));
    // Straight from the store.
    let hit = gw.get("/doc");
    // Through Pingora's phases: a condition that does not match still gets the whole response.
    let phased = gw.request("GET", "/doc", &[("If-None-Match", "\"other\"")], b"");
    for response in [&hit, &phased] {
        assert_eq!((response.status, x_cache(response)), (200, "HIT"));
        assert_eq!(response.text(), "payload");
        assert_eq!(
            response.header("date"),
            Some(date.as_str()),
            "the origin's Date"
        );
        assert_eq!(response.header("content-length"), Some("7"));
        assert_eq!(response.header("x-frame-options"), Some("DENY"));
        assert_eq!(response.header("x-kept"), Some("yes"));
        assert_eq!(response.header("x-ratelimit-limit"), Some("1000"));
        assert!(response.header("x-request-id").is_some());
        for gone in ["server", "cache-tag", "cdn-cache-control", "x-hop"] {
            assert!(
                response.header(gone).is_none(),
                "{gone}: {:?}",
                response.headers
            );
        }
        // The Date says 100 s ago, which outweighs the origin's Age of 30 (RFC 9111 §4.2.3).
        let age = age(response);
        assert!((100..160).contains(&age), "Age {age}");
    }
    assert_eq!(comparable(&hit), comparable(&phased));
    assert_ne!(hit.header("x-request-id"), phased.header("x-request-id"));

    // HEAD, straight from the store too: the same headers, no body.
    let head = gw.request("HEAD", "/doc", &[], b"");
    assert_eq!((head.status, x_cache(&head)), (200, "HIT"));
    assert!(head.body.is_empty());
    assert_eq!(comparable(&head), comparable(&hit));

    // What only the phases answer still works: a matching condition, a range.
    let not_modified = gw.request("GET", "/doc", &[("If-None-Match", "\"v1\"")], b"");
    assert_eq!((not_modified.status, x_cache(&not_modified)), (304, "HIT"));
    assert!(not_modified.body.is_empty());
    let range = gw.request("GET", "/doc", &[("Range", "bytes=0-2")], b"");
    assert_eq!((range.status, range.text().as_str()), (206, "pay"));

    assert_eq!(
        origin.hits(),
        1,
        "every answer after the miss came from the store"
    );
    gw.wait_metric(
        "edgegate_cache_lookups_total{result=\"hit\",route=\"cached\"}",
        5.0,
    );
    let log = gw.access_log(6);
    assert_eq!(log[1]["cache"], "HIT");
    assert_eq!(log[1]["status"], 200);
}

#[test]
fn a_stored_response_never_answers_a_request_admission_refuses() {
    let origin = Origin::start("app");
    serve(
        &origin,
        "secret",
        &[("Cache-Control", "public, max-age=600")],
    );
    let gw = gateway(&origin);

    let key = [("X-API-Key", API_KEY)];
    let miss = gw.request("GET", "/private/report", &key, b"");
    assert_eq!((miss.status, x_cache(&miss)), (200, "MISS"));
    let hit = gw.request("GET", "/private/report", &key, b"");
    assert_eq!(
        (hit.status, x_cache(&hit), hit.text().as_str()),
        (200, "HIT", "secret")
    );

    for refused in [
        gw.get("/private/report"),
        gw.request("GET", "/private/report", &[("X-API-Key", "wrong")], b""),
        gw.request("HEAD", "/private/report", &[], b""),
    ] {
        assert_eq!(refused.status, 401, "{:?}", refused.headers);
        assert!(refused.header("x-cache").is_none());
        assert!(!refused.text().contains("secret"));
    }
    assert_eq!(origin.hits(), 1);
}

#[test]
fn an_expired_entry_is_never_answered_from_the_store() {
    let origin = Origin::start("app");
    serve(&origin, "short", &[("Cache-Control", "max-age=2")]);
    let gw = gateway(&origin);
    assert_eq!(x_cache(&gw.get("/short")), "MISS");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut hits = 0;
    // Fresh while its age is at most max-age (RFC 9111 §4.2); then every request goes back.
    loop {
        let response = gw.get("/short");
        if x_cache(&response) == "MISS" {
            break;
        }
        assert_eq!(x_cache(&response), "HIT");
        assert!(
            age(&response) <= 2,
            "a hit past max-age: {:?}",
            response.headers
        );
        hits += 1;
        assert!(std::time::Instant::now() < deadline, "never expired");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(hits > 0, "the entry was never a hit");
    assert_eq!(origin.hits(), 2);
}
