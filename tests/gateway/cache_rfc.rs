//! The cache against RFC 9111: staleness only with permission, the age a response arrives with,
//! 304s that update what is stored, invalidation after unsafe methods, hop-by-hop fields, and
//! which statuses are stored. Each origin sets the headers in question.

use crate::cache::{gateway, get_with, serve, x_cache};
use crate::support::{Gateway, Origin};
use std::time::Duration;

fn age(response: &crate::support::Response) -> u64 {
    response
        .header("age")
        .and_then(|age| age.parse().ok())
        .unwrap_or_else(|| panic!("no Age: {:?}", response.headers))
}

fn http_date(offset_secs: i64) -> String {
    let now = std::time::SystemTime::now();
    let at = if offset_secs >= 0 {
        now + Duration::from_secs(offset_secs as u64)
    } else {
        now - Duration::from_secs(offset_secs.unsigned_abs())
    };
    httpdate::fmt_http_date(at)
}

#[test]
fn a_stale_response_is_served_only_when_the_origin_or_the_operator_allows_it() {
    let origin = Origin::start("app");
    serve(&origin, "v1", &[("Cache-Control", "max-age=1")]);
    let strict = gateway(&origin, "", "");
    assert_eq!(x_cache(&strict.get("/a")), "MISS");
    std::thread::sleep(Duration::from_millis(1500));
    serve(&origin, "v2", &[("Cache-Control", "max-age=1")]);
    let expired = strict.get("/a");
    assert_eq!(
        (x_cache(&expired), expired.text().as_str()),
        ("MISS", "v2"),
        "by default a stale copy is refetched, never served"
    );
    assert_eq!(origin.hits(), 2);

    // `max-age=0` with a validator: revalidated on every use, never UPDATING.
    serve(
        &origin,
        "same",
        &[("Cache-Control", "max-age=0"), ("ETag", "\"e\"")],
    );
    assert_eq!(x_cache(&strict.get("/zero")), "MISS");
    let revalidated = strict.get("/zero");
    assert_eq!((x_cache(&revalidated), origin.hits()), ("HIT", 4));

    // The operator grants staleness for one route: served at once while it refreshes.
    let granted = gateway(&origin, "", "stale_while_revalidate: 30s");
    serve(&origin, "g1", &[("Cache-Control", "max-age=1")]);
    assert_eq!(granted.get("/g").text(), "g1");
    std::thread::sleep(Duration::from_millis(1500));
    let stale = granted.get("/g");
    assert_eq!((x_cache(&stale), stale.text().as_str()), ("UPDATING", "g1"));
}

#[test]
fn the_age_a_response_arrives_with_counts_and_a_hit_reports_it() {
    let origin = Origin::start("app");
    let gw = gateway(&origin, "", "");
    serve(
        &origin,
        "aged",
        &[("Cache-Control", "max-age=100"), ("Age", "30")],
    );
    let miss = gw.get("/aged");
    assert_eq!(
        (x_cache(&miss), age(&miss)),
        ("MISS", 30),
        "a miss forwards the origin's Age"
    );
    std::thread::sleep(Duration::from_millis(1100));
    let hit = gw.get("/aged");
    assert_eq!(x_cache(&hit), "HIT");
    assert!(
        (31..=33).contains(&age(&hit)),
        "30 before us + our time: {}",
        age(&hit)
    );

    // Older than its lifetime on arrival ("7200, 0" counts as 7200): stored stale, so refetched.
    serve(
        &origin,
        "old",
        &[("Cache-Control", "max-age=100"), ("Age", "7200, 0")],
    );
    gw.get("/old");
    assert_eq!(x_cache(&gw.get("/old")), "MISS");

    // Date 400 s ahead and Expires 300 s ahead: already expired by the origin's clock.
    let (date, expires) = (http_date(400), http_date(300));
    serve(&origin, "skewed", &[("Date", &date), ("Expires", &expires)]);
    gw.get("/skewed");
    assert_eq!(x_cache(&gw.get("/skewed")), "MISS");

    // Date 100 s behind and Expires 200 s after now: fresh, 100 s old.
    let (date, expires) = (http_date(-100), http_date(200));
    serve(&origin, "dated", &[("Date", &date), ("Expires", &expires)]);
    gw.get("/dated");
    let hit = gw.get("/dated");
    assert_eq!(x_cache(&hit), "HIT");
    assert!((100..=102).contains(&age(&hit)), "{}", age(&hit));
}

#[test]
fn a_304_updates_the_stored_headers() {
    let origin = Origin::start("app");
    serve(
        &origin,
        "body",
        &[
            ("Cache-Control", "max-age=1"),
            ("ETag", "\"v1\""),
            ("X-Version", "1"),
        ],
    );
    let gw = gateway(&origin, "", "");
    assert_eq!(gw.get("/r").header("x-version"), Some("1"));
    std::thread::sleep(Duration::from_millis(1500));
    // The origin answers the revalidation with 304 and new header values.
    serve(
        &origin,
        "unused",
        &[
            ("Cache-Control", "max-age=60"),
            ("ETag", "\"v1\""),
            ("X-Version", "2"),
        ],
    );
    let revalidated = gw.get("/r");
    assert_eq!(
        (x_cache(&revalidated), revalidated.text().as_str()),
        ("HIT", "body")
    );
    assert_eq!(revalidated.header("x-version"), Some("2"));
    let later = gw.get("/r");
    assert_eq!(
        (
            x_cache(&later),
            later.header("x-version"),
            later.header("cache-control")
        ),
        ("HIT", Some("2"), Some("max-age=60"))
    );
    assert_eq!(origin.hits(), 2, "fresh again for the 304's max-age");
}

#[test]
fn unsafe_methods_invalidate_their_target_and_same_origin_locations() {
    let origin = Origin::start("app");
    serve(&origin, "item", &[("Cache-Control", "max-age=60")]);
    let gw = gateway(&origin, "", "");
    let cached = |target: &str| {
        gw.get(target);
        assert_eq!(x_cache(&gw.get(target)), "HIT", "{target} is cached");
    };
    cached("/item");
    assert_eq!(gw.request("POST", "/item", &[], b"x").status, 200);
    assert_eq!(
        x_cache(&gw.get("/item")),
        "MISS",
        "a POST's success invalidates"
    );

    cached("/item");
    origin.set(|b| b.status = 500);
    assert_eq!(gw.request("DELETE", "/item", &[], b"").status, 500);
    origin.set(|b| b.status = 200);
    assert_eq!(x_cache(&gw.get("/item")), "HIT", "an error changes nothing");

    cached("/other");
    cached("/third");
    // The test client's requests carry `Host: test.local`.
    serve(
        &origin,
        "created",
        &[
            ("Location", "/other"),
            ("Content-Location", "http://test.local/third"),
        ],
    );
    assert_eq!(gw.request("PUT", "/new", &[], b"x").status, 200);
    serve(&origin, "item", &[("Cache-Control", "max-age=60")]);
    assert_eq!(
        x_cache(&gw.get("/other")),
        "MISS",
        "Location is invalidated"
    );
    assert_eq!(x_cache(&gw.get("/third")), "MISS", "so is Content-Location");

    cached("/elsewhere");
    serve(
        &origin,
        "moved",
        &[("Location", "http://other.example/elsewhere")],
    );
    gw.request("PATCH", "/x", &[], b"x");
    serve(&origin, "item", &[("Cache-Control", "max-age=60")]);
    assert_eq!(
        x_cache(&gw.get("/elsewhere")),
        "HIT",
        "another origin's URL is not ours to invalidate"
    );
}

#[test]
fn hop_by_hop_response_fields_are_neither_forwarded_nor_stored() {
    let origin = Origin::start("app");
    serve(
        &origin,
        "hop",
        &[
            ("Cache-Control", "max-age=60"),
            ("Connection", "X-Hop-Secret"),
            ("X-Hop-Secret", "for the next hop only"),
            ("X-End-To-End", "kept"),
        ],
    );
    let gw = gateway(&origin, "", "");
    for expected in ["MISS", "HIT"] {
        let response = gw.get("/hop");
        assert_eq!(x_cache(&response), expected);
        assert_eq!(response.header("x-hop-secret"), None, "{expected}");
        assert_eq!(response.header("x-end-to-end"), Some("kept"), "{expected}");
    }
}

#[test]
fn statuses_are_stored_as_rfc_9110_allows() {
    let origin = Origin::start("app");
    let gw = gateway(&origin, "", "ttl: 30s");
    let stored_twice = |gw: &Gateway, target: &str| {
        let first = gw.get(target);
        let second = gw.get(target);
        (first.status, x_cache(&second).to_string())
    };
    // Explicit freshness: any final status.
    serve(&origin, "down", &[("Cache-Control", "max-age=60")]);
    origin.set(|b| b.status = 503);
    assert_eq!(stored_twice(&gw, "/503"), (503, "HIT".to_string()));
    // Heuristic freshness (the route's ttl): the heuristically cacheable ones.
    serve(&origin, "gone", &[]);
    origin.set(|b| b.status = 410);
    assert_eq!(stored_twice(&gw, "/410"), (410, "HIT".to_string()));
    origin.set(|b| b.status = 302);
    let (status, second) = stored_twice(&gw, "/302");
    assert_eq!(status, 302);
    assert_ne!(second, "HIT", "a 302 needs explicit freshness");
    assert_eq!(get_with(&gw, "/302", &[]).status, 302);
}

#[test]
fn the_origins_date_reaches_the_client_on_misses_and_hits() {
    let origin = Origin::start("app");
    let date = http_date(-100);
    serve(
        &origin,
        "dated",
        &[("Cache-Control", "max-age=600"), ("Date", &date)],
    );
    let gw = gateway(&origin, "", "");
    for expected in ["MISS", "HIT"] {
        let response = gw.get("/dated");
        assert_eq!(x_cache(&response), expected);
        assert_eq!(response.header("date"), Some(date.as_str()), "{expected}");
    }
    // An origin's obsolete date form arrives as IMF-fixdate.
    serve(
        &origin,
        "old",
        &[("Date", "Sunday, 06-Nov-94 08:49:37 GMT")],
    );
    assert_eq!(
        gw.get("/obsolete").header("date"),
        Some("Sun, 06 Nov 1994 08:49:37 GMT")
    );
    // Without one, and on the gateway's own answers, the Date is the gateway's.
    serve(&origin, "undated", &[]);
    let ours = gw.get("/undated");
    let now = std::time::SystemTime::now();
    for response in [ours, gw.request("TRACE", "/", &[], b"")] {
        let stamped = httpdate::parse_http_date(response.header("date").unwrap()).unwrap();
        let skew = now.duration_since(stamped).unwrap_or_else(|e| e.duration());
        assert!(
            skew < Duration::from_secs(5),
            "{:?}",
            response.header("date")
        );
    }
}

#[test]
fn cdn_cache_control_and_edgegate_cache_control_govern_this_cache_only() {
    let origin = Origin::start("app");
    serve(
        &origin,
        "targeted",
        &[
            ("Cache-Control", "no-store"),
            ("CDN-Cache-Control", "max-age=60"),
        ],
    );
    let gw = gateway(&origin, "", "");
    for expected in ["MISS", "HIT"] {
        let response = gw.get("/cdn");
        assert_eq!(
            x_cache(&response),
            expected,
            "CDN-Cache-Control overrides no-store here"
        );
        assert_eq!(
            response.header("cache-control"),
            Some("no-store"),
            "clients keep theirs"
        );
        assert_eq!(
            response.header("cdn-cache-control"),
            None,
            "consumed by this cache"
        );
    }
    serve(
        &origin,
        "ours",
        &[
            ("Edgegate-Cache-Control", "no-store"),
            ("CDN-Cache-Control", "max-age=60"),
        ],
    );
    gw.get("/ours");
    let second = gw.get("/ours");
    assert_ne!(
        x_cache(&second),
        "HIT",
        "Edgegate-Cache-Control comes first"
    );
    assert_eq!(second.header("edgegate-cache-control"), None);

    let forwarding = gateway(&origin, "forward_cdn_cache_control: true", "");
    let forwarded = forwarding.get("/ours");
    assert_eq!(forwarded.header("cdn-cache-control"), Some("max-age=60"));
    assert_eq!(forwarded.header("edgegate-cache-control"), Some("no-store"));
}

#[test]
fn tag_purges_remove_or_mark_stale_every_entry_carrying_a_tag() {
    let origin = Origin::start("app");
    let gw = gateway(&origin, "", "");
    let tagged = |tags: &str| {
        serve(
            &origin,
            "tagged",
            &[
                ("Cache-Control", "max-age=600, stale-if-error=600"),
                ("ETag", "\"t\""),
                ("Cache-Tag", tags),
            ],
        );
    };
    let cached = |target: &str| {
        gw.get(target);
        let hit = gw.get(target);
        assert_eq!(x_cache(&hit), "HIT", "{target}");
        assert_eq!(hit.header("cache-tag"), None, "the tag header stays here");
    };
    tagged("product-1, catalog");
    cached("/p1");
    tagged("product-2 catalog"); // spaces separate too (Surrogate-Key style)
    cached("/p2");
    tagged("other");
    cached("/other");

    let purged = crate::cache::purge(&gw, r#"{"tags": ["product-1"]}"#);
    assert_eq!(
        (purged.status, purged.json()["purged"].as_u64()),
        (200, Some(1))
    );
    assert_eq!(x_cache(&gw.get("/p1")), "MISS");
    assert_eq!(x_cache(&gw.get("/p2")), "HIT");

    // Soft: stale at once, so revalidated (a 304 keeps the body), not refetched.
    // (/p1 was refetched while the origin tagged "other": only /p2 carries "catalog" now.)
    // The origin's 304s carry the tags again, as they update the stored header.
    tagged("product-2 catalog");
    let soft = crate::cache::purge(&gw, r#"{"tags": ["catalog"], "soft": true}"#);
    assert_eq!(soft.json()["purged"].as_u64(), Some(1));
    let hits_before = origin.hits();
    let revalidated = gw.get("/p2");
    assert_eq!(
        (x_cache(&revalidated), origin.hits()),
        ("HIT", hits_before + 1)
    );
    // A soft-purged entry still answers when the origin fails (its stale-if-error allows it).
    crate::cache::purge(&gw, r#"{"tags": ["catalog"], "soft": true}"#);
    origin.set(|b| {
        b.status = 503;
        b.headers.retain(|(name, _)| name != "ETag"); // no 304 from the test origin then
    });
    let stale = gw.get("/p2");
    assert_eq!((stale.status, x_cache(&stale)), (200, "STALE"));
    origin.set(|b| b.status = 200);
    assert_eq!(
        x_cache(&gw.get("/other")),
        "HIT",
        "untagged entries untouched"
    );

    let bad = crate::cache::purge(&gw, r#"{"tags": []}"#);
    assert_eq!(bad.status, 400);
}
