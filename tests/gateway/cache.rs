//! Response caching: hits and misses, freshness, what is never stored, variants, coalescing,
//! stale serving, the size bound, oversized objects, purging.

use crate::support::{request, wait_until, Gateway, Origin, Response};
use std::time::{Duration, Instant};

/// A gateway whose one route `cached` caches with `route_cache`; `cache` is the shared section.
pub(crate) fn gateway(origin: &Origin, cache: &str, route_cache: &str) -> Gateway {
    Gateway::start(&format!(
        "cache: {{ {cache} }}\n\
         upstreams:\n  app: {{ targets: [{{ address: \"{}\" }}] }}\n\
         routes:\n  - {{ name: cached, upstream: app, cache: {{ {route_cache} }} }}\n",
        origin.addr
    ))
}

pub(crate) fn serve(origin: &Origin, body: &str, headers: &[(&str, &str)]) {
    let body = body.to_string();
    let headers: Vec<(String, String)> = headers
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect();
    origin.set(move |b| {
        b.body = Some(body);
        b.headers = headers;
    });
}

pub(crate) fn x_cache(response: &Response) -> &str {
    response.header("x-cache").unwrap_or("none")
}

pub(crate) fn get_with(gw: &Gateway, target: &str, headers: &[(&str, &str)]) -> Response {
    gw.request("GET", target, headers, b"")
}

pub(crate) fn purge(gw: &Gateway, body: &str) -> Response {
    request(
        gw.admin,
        "POST",
        "/cache/purge",
        &[("content-type", "application/json")],
        body.as_bytes(),
    )
}

fn lookups(gw: &Gateway, result: &str, count: f64) {
    gw.wait_metric(
        &format!("edgegate_cache_lookups_total{{result=\"{result}\",route=\"cached\"}}"),
        count,
    );
}

#[test]
fn a_miss_is_stored_and_then_served_from_cache_with_age_also_for_head() {
    let origin = Origin::start("app");
    serve(&origin, "v1", &[("Cache-Control", "max-age=60")]);
    let gw = gateway(&origin, "", "ttl: 30s");

    let miss = gw.get("/doc?x=1");
    assert_eq!((miss.status, x_cache(&miss)), (200, "MISS"));
    assert_eq!(miss.text(), "v1");
    assert!(miss.header("age").is_none());
    assert!(miss.header("x-request-id").is_some());

    let hit = gw.get("/doc?x=1");
    assert_eq!((hit.status, x_cache(&hit)), (200, "HIT"));
    assert_eq!(hit.text(), "v1");
    assert_eq!(hit.header("cache-control"), Some("max-age=60"));
    assert!(hit.header("age").is_some_and(|a| a.parse::<u64>().is_ok()));
    assert!(hit.header("x-request-id").is_some());
    assert_ne!(miss.header("x-request-id"), hit.header("x-request-id"));

    let range = get_with(&gw, "/doc?x=1", &[("Range", "bytes=1-1")]);
    assert_eq!((range.status, range.text().as_str()), (206, "1"));
    assert_eq!(range.header("content-range"), Some("bytes 1-1/2"));

    let head = gw.request("HEAD", "/doc?x=1", &[], b"");
    assert_eq!((head.status, x_cache(&head)), (200, "HIT"));
    assert!(head.body.is_empty());
    assert_eq!(head.header("content-length"), Some("2"));

    let other_query = gw.get("/doc?x=2");
    assert_eq!(x_cache(&other_query), "MISS");
    assert_eq!(origin.hits(), 2, "one fetch per URL");

    // A HEAD miss fetches the whole object with GET, so a later GET is a hit.
    let head_first = gw.request("HEAD", "/head-first", &[], b"");
    assert_eq!(x_cache(&head_first), "MISS");
    let after_head = gw.get("/head-first");
    assert_eq!(
        (x_cache(&after_head), after_head.text().as_str()),
        ("HIT", "v1")
    );
    assert_eq!(origin.hits(), 3);

    lookups(&gw, "hit", 4.0);
    lookups(&gw, "miss", 3.0);
    let status = gw.admin_get("/status").json();
    assert_eq!(status["cache"]["entries"], 3);
    let log = gw.access_log(7);
    // Lines are written as requests end: a miss may finish storing after the next request.
    let hit_line = log
        .iter()
        .find(|line| line["request_id"].as_str() == hit.header("x-request-id"))
        .expect("the hit's line");
    assert_eq!(hit_line["cache"], "HIT");
}

#[test]
fn entries_expire_after_their_ttl() {
    let origin = Origin::start("app");
    serve(&origin, "fresh", &[]);
    let gw = gateway(
        &origin,
        "stale_while_revalidate: 0, stale_if_error: 0",
        "ttl: 1s",
    );
    assert_eq!(x_cache(&gw.get("/t")), "MISS");
    assert_eq!(x_cache(&gw.get("/t")), "HIT");
    std::thread::sleep(Duration::from_millis(2100));
    let expired = gw.get("/t");
    assert_eq!(
        (x_cache(&expired), expired.text().as_str()),
        ("MISS", "fresh")
    );
    assert_eq!(origin.hits(), 2);
    assert_eq!(x_cache(&gw.get("/t")), "HIT");
}

#[test]
fn no_store_private_and_set_cookie_responses_are_never_stored() {
    for headers in [
        [("Cache-Control", "no-store, max-age=60")],
        [("Cache-Control", "private, max-age=60")],
        [("Set-Cookie", "session=abc")],
    ] {
        let origin = Origin::start("app");
        serve(&origin, "personal", &headers);
        let gw = gateway(&origin, "", "ttl: 60s");
        for _ in 0..3 {
            let response = gw.get("/me");
            assert_eq!(response.status, 200);
            assert_ne!(x_cache(&response), "HIT", "{headers:?}");
        }
        assert_eq!(origin.hits(), 3, "{headers:?}");
        assert_eq!(gw.admin_get("/status").json()["cache"]["entries"], 0);
    }
}

#[test]
fn authorized_requests_are_stored_only_when_the_response_is_public() {
    let origin = Origin::start("app");
    serve(&origin, "for-alice", &[("Cache-Control", "max-age=60")]);
    let gw = gateway(&origin, "", "");
    let auth = [("Authorization", "Bearer alice")];
    assert_eq!(get_with(&gw, "/private", &auth).status, 200);
    let anonymous = gw.get("/private");
    assert_ne!(x_cache(&anonymous), "HIT", "not shared without public");
    assert_eq!(origin.hits(), 2);

    serve(
        &origin,
        "shared",
        &[("Cache-Control", "public, max-age=60")],
    );
    assert_eq!(x_cache(&get_with(&gw, "/public", &auth)), "MISS");
    let anonymous = gw.get("/public");
    assert_eq!(
        (x_cache(&anonymous), anonymous.text().as_str()),
        ("HIT", "shared")
    );
    assert_eq!(origin.hits(), 3);
}

#[test]
fn response_vary_and_route_vary_keep_variants_apart() {
    let origin = Origin::start("app");
    // The JSON echo shows which request headers the origin saw.
    origin.set(|b| b.headers = vec![("Vary".into(), "Accept-Encoding".into())]);
    let gw = gateway(&origin, "", "vary: [X-Tenant], ttl: 30s");
    let fetch = |encoding: &str, tenant: &str| {
        let response = get_with(
            &gw,
            "/v",
            &[("Accept-Encoding", encoding), ("X-Tenant", tenant)],
        );
        let seen = response.json()["headers"].clone();
        assert_eq!(seen["accept-encoding"], encoding);
        assert_eq!(seen["x-tenant"], tenant);
        x_cache(&response).to_string()
    };
    assert_eq!(fetch("gzip", "a"), "MISS");
    assert_eq!(fetch("br", "a"), "MISS");
    assert_eq!(fetch("gzip", "b"), "MISS");
    assert_eq!(fetch("gzip", "a"), "HIT");
    assert_eq!(fetch("br", "a"), "HIT");
    assert_eq!(fetch("gzip", "b"), "HIT");
    assert_eq!(origin.hits(), 3);

    origin.set(|b| b.headers = vec![("Vary".into(), "*".into())]);
    for _ in 0..2 {
        assert_ne!(x_cache(&get_with(&gw, "/star", &[])), "HIT");
    }
    assert_eq!(origin.hits(), 5, "Vary: * is never stored");
}

#[test]
fn parallel_misses_on_a_cold_key_make_one_origin_request() {
    let origin = Origin::start("app");
    serve(&origin, "slow", &[("Cache-Control", "max-age=60")]);
    origin.set(|b| b.delay = Duration::from_millis(500));
    let gw = gateway(&origin, "lock_timeout: 5s", "");
    let responses: Vec<Response> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..20).map(|_| scope.spawn(|| gw.get("/cold"))).collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for response in &responses {
        assert_eq!((response.status, response.text().as_str()), (200, "slow"));
    }
    assert_eq!(origin.hits(), 1, "coalesced into one fetch");
    let misses = responses.iter().filter(|r| x_cache(r) == "MISS").count();
    assert_eq!(misses, 1, "the waiters are answered from the store");
    assert_eq!(responses.iter().filter(|r| x_cache(r) == "HIT").count(), 19);
}

#[test]
fn stale_while_revalidate_answers_at_once_and_refreshes_once_in_the_background() {
    let origin = Origin::start("app");
    serve(
        &origin,
        "v1",
        &[("Cache-Control", "max-age=1, stale-while-revalidate=30")],
    );
    let gw = gateway(&origin, "", "");
    assert_eq!(gw.get("/swr").text(), "v1");
    std::thread::sleep(Duration::from_millis(1500));
    serve(
        &origin,
        "v2",
        &[("Cache-Control", "max-age=60, stale-while-revalidate=30")],
    );
    origin.set(|b| b.delay = Duration::from_secs(3));

    let started = Instant::now();
    let stale = gw.get("/swr");
    assert!(
        started.elapsed() < Duration::from_millis(2000),
        "the stale copy does not wait for the origin ({:?})",
        started.elapsed()
    );
    assert_eq!((x_cache(&stale), stale.text().as_str()), ("UPDATING", "v1"));
    // More requests during the refresh are served stale too, without more refreshes.
    for _ in 0..3 {
        assert_eq!(gw.get("/swr").text(), "v1");
    }
    assert!(wait_until(Duration::from_secs(5), || {
        x_cache(&gw.get("/swr")) == "HIT"
    }));
    let fresh = gw.get("/swr");
    assert_eq!((x_cache(&fresh), fresh.text().as_str()), ("HIT", "v2"));
    assert_eq!(origin.hits(), 2, "exactly one background refresh");
    assert!(
        wait_until(Duration::from_secs(5), || gw
            .access_log(2)
            .iter()
            .any(|l| l["cache"] == "REFRESH" && l["upstream_status"] == 200)),
        "the refresh is logged"
    );
}

#[test]
fn stale_if_error_serves_the_stale_copy_when_the_origin_fails() {
    let origin = Origin::start("app");
    // `Connection: close` keeps no pooled connection open, so a stopped origin is unreachable.
    serve(
        &origin,
        "last-good",
        &[
            ("Cache-Control", "max-age=1, stale-if-error=60"),
            ("Connection", "close"),
        ],
    );
    let gw = gateway(&origin, "stale_while_revalidate: 0", "");
    assert_eq!(gw.get("/sie").text(), "last-good");
    std::thread::sleep(Duration::from_millis(1500));

    origin.set(|b| b.status = 500);
    let on_500 = gw.get("/sie");
    assert_eq!(
        (on_500.status, x_cache(&on_500), on_500.text().as_str()),
        (200, "STALE", "last-good")
    );
    assert!(on_500.header("age").is_some());

    origin.stop();
    let on_refused = gw.get("/sie");
    assert_eq!(
        (
            on_refused.status,
            x_cache(&on_refused),
            on_refused.text().as_str()
        ),
        (200, "STALE", "last-good")
    );
    // Without a stored copy the failure is the usual JSON error.
    let cold = gw.get("/never-fetched");
    assert_eq!(cold.status, 502, "{}\n{}", cold.text(), gw.stderr());
    assert_eq!(cold.json()["error"], "bad_gateway");
}

#[test]
fn the_store_never_exceeds_max_size_and_evicts_least_recently_used() {
    let origin = Origin::start("app");
    serve(
        &origin,
        &"x".repeat(8 * 1024),
        &[("Cache-Control", "max-age=60")],
    );
    let gw = gateway(&origin, "max_size: 64KiB, max_object_size: 16KiB", "");
    for i in 0..30 {
        let response = gw.get(&format!("/obj/{i:02}"));
        assert_eq!((response.status, response.body.len()), (200, 8 * 1024));
        let size = gw.metric("edgegate_cache_size_bytes").unwrap();
        assert!(size <= 65536.0, "{size} bytes held after {i} fills");
    }
    let entries = gw.metric("edgegate_cache_entries").unwrap();
    assert!(
        (4.0..=7.0).contains(&entries),
        "{entries} entries of ~8 KiB in 64 KiB"
    );
    let evictions = gw.metric("edgegate_cache_evictions_total").unwrap();
    assert_eq!(evictions, 30.0 - entries);
    assert_eq!(gw.metric("edgegate_cache_max_size_bytes"), Some(65536.0));
    assert_eq!(x_cache(&gw.get("/obj/29")), "HIT", "the newest stays");
    assert_eq!(x_cache(&gw.get("/obj/00")), "MISS", "the oldest went first");
}

#[test]
fn objects_over_max_object_size_stream_through_uncached() {
    let origin = Origin::start("app");
    let big: String = (0..40 * 1024)
        .map(|i| (b'a' + (i % 26) as u8) as char)
        .collect();
    serve(&origin, &big, &[("Cache-Control", "max-age=60")]);
    let gw = gateway(&origin, "max_size: 1MiB, max_object_size: 16KiB", "");
    for _ in 0..2 {
        let response = gw.get("/big");
        assert_eq!(response.status, 200);
        assert_eq!(response.text(), big, "delivered intact");
        assert_ne!(x_cache(&response), "HIT");
    }
    assert_eq!(origin.hits(), 2);
    assert_eq!(gw.metric("edgegate_cache_entries"), Some(0.0));
}

#[test]
fn purge_by_url_removes_every_variant_and_by_prefix_a_subtree() {
    let origin = Origin::start("app");
    serve(
        &origin,
        "stored",
        &[("Cache-Control", "max-age=60"), ("Vary", "Accept")],
    );
    let gw = gateway(&origin, "", "");
    for (target, accept) in [
        ("/p/a?q=1", "x"),
        ("/p/a?q=1", "y"),
        ("/p/b", "x"),
        ("/q", "x"),
    ] {
        assert_eq!(
            x_cache(&get_with(&gw, target, &[("Accept", accept)])),
            "MISS"
        );
    }
    assert_eq!(gw.admin_get("/status").json()["cache"]["entries"], 4);

    let purged = purge(&gw, r#"{"url": "http://test.local/p/a?q=1"}"#);
    assert_eq!(
        (purged.status, purged.json()["purged"].clone()),
        (200, 2.into())
    );
    assert_eq!(
        x_cache(&get_with(&gw, "/p/a?q=1", &[("Accept", "y")])),
        "MISS"
    );

    let purged = purge(&gw, r#"{"prefix": "http://test.local/p/"}"#);
    assert_eq!(purged.json()["purged"], 2, "/p/a?q=1 (refetched) and /p/b");
    assert_eq!(x_cache(&get_with(&gw, "/p/b", &[("Accept", "x")])), "MISS");
    assert_eq!(x_cache(&get_with(&gw, "/q", &[("Accept", "x")])), "HIT");

    assert_eq!(purge(&gw, r#"{"url": 1}"#).status, 400);
    assert_eq!(purge(&gw, r#"{"url": "/x", "prefix": "/y"}"#).status, 400);
    assert_eq!(gw.admin_get("/cache/purge").status, 405);
}

#[test]
fn routes_without_cache_and_uncached_methods_are_untouched() {
    let origin = Origin::start("app");
    serve(&origin, "plain", &[("Cache-Control", "max-age=60")]);
    let gw = Gateway::start(&format!(
        "upstreams:\n  app: {{ targets: [{{ address: \"{}\" }}] }}\n\
         routes:\n  - {{ name: only-get, match: {{ path_prefix: /g }}, upstream: app, cache: {{ methods: [GET] }} }}\n\
         \x20 - {{ name: plain, upstream: app }}\n",
        origin.addr
    ));
    for _ in 0..2 {
        assert!(gw.get("/plain").header("x-cache").is_none());
    }
    assert_eq!(origin.hits(), 2);
    assert_eq!(x_cache(&gw.request("HEAD", "/g", &[], b"")), "BYPASS");
    assert_eq!(x_cache(&gw.request("POST", "/g", &[], b"")), "BYPASS");
    assert_eq!(x_cache(&gw.get("/g")), "MISS");
    assert_eq!(x_cache(&gw.get("/g")), "HIT");
    // The shared section's defaults apply when only routes configure caching.
    assert_eq!(
        gw.admin_get("/status").json()["cache"]["max_size"],
        256 * 1024 * 1024
    );
}

#[test]
fn no_cache_responses_are_revalidated_and_a_304_serves_the_stored_body() {
    let origin = Origin::start("app");
    serve(
        &origin,
        "validated",
        &[("Cache-Control", "no-cache"), ("ETag", "\"v1\"")],
    );
    let gw = gateway(&origin, "", "");
    assert_eq!(x_cache(&gw.get("/etag")), "MISS");
    for served in 2..=3 {
        let revalidated = gw.get("/etag");
        assert_eq!(
            (
                revalidated.status,
                x_cache(&revalidated),
                revalidated.text().as_str()
            ),
            (200, "HIT", "validated")
        );
        assert_eq!(origin.hits(), served, "asked the origin every time");
    }
    // A changed object replaces the stored one.
    serve(
        &origin,
        "changed",
        &[("Cache-Control", "no-cache"), ("ETag", "\"v2\"")],
    );
    let replaced = gw.get("/etag");
    assert_eq!(
        (x_cache(&replaced), replaced.text().as_str()),
        ("MISS", "changed")
    );
}
