//! Calendar quotas (`rate_limits.quotas`) on a real `redis-server`: shared by routes and
//! instances, tiers, headers, the admin lookup, and the period ending at midnight in the
//! quota's time zone. The gateways run under libfaketime (the `faketime` package), started a few
//! seconds before midnight in Paris: their wall clock is injected, their monotonic clock is real.

use crate::support::redis::RedisServer;
use crate::support::{free_port, wait_until, Gateway, Origin};
use std::time::Duration;

const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

fn redis_on(port: u16) -> RedisServer {
    RedisServer::start_on(port)
        .expect("redis-server must be installed (scripts/install-deps.sh test)")
}

/// A gateway whose wall clock starts at `fake_start` (UTC, `YYYY-MM-DD hh:mm:ss`).
fn member(origin: &Origin, redis_port: u16, fake_start: &str) -> Gateway {
    assert!(
        std::path::Path::new(LIBFAKETIME).exists(),
        "libfaketime must be installed (scripts/install-deps.sh test installs `faketime`)"
    );
    let fake = format!("@{fake_start}");
    Gateway::start_with_env(
        &format!(
            "auth:\n  api_keys:\n    keys:\n\
             \x20     - {{ consumer: partner, sha256: {partner} }}\n\
             \x20     - {{ consumer: big, sha256: {big}, tier: premium }}\n\
             rate_limits:\n  redis: {{ url: \"redis://127.0.0.1:{redis_port}/0\", timeout: 300ms, on_error: deny }}\n\
             \x20 quotas:\n\
             \x20   daily: {{ per: day, limit: 3, key: consumer, time_zone: Europe/Paris, tiers: {{ premium: 5 }} }}\n\
             \x20   monthly: {{ per: month, limit: 100, key: consumer }}\n\
             upstreams:\n  app: {{ targets: [{{ address: \"{}\" }}] }}\n\
             routes:\n\
             \x20 - {{ name: a, match: {{ path_prefix: /a }}, upstream: app, auth: {{ api_key: true }}, rate_limits: [daily, monthly] }}\n\
             \x20 - {{ name: b, match: {{ path_prefix: /b }}, upstream: app, auth: {{ api_key: true }}, rate_limits: [daily] }}\n",
            origin.addr,
            partner = edgegate::auth::api_key::hash_key_hex("partner-key"),
            big = edgegate::auth::api_key::hash_key_hex("big-key"),
        ),
        &[
            ("LD_PRELOAD", LIBFAKETIME),
            ("FAKETIME", &fake),
            ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
            ("TZ", "UTC"),
        ],
    )
}

#[test]
fn a_daily_quota_is_shared_by_routes_and_instances_and_ends_at_midnight_in_its_time_zone() {
    let redis = redis_on(free_port());
    let origin = Origin::start("app");
    // 22:59:52 UTC is 23:59:52 in Paris (UTC+1 in winter): 8 s before the quota's day ends.
    let a = member(&origin, redis.port, "2026-12-31 22:59:52");
    let b = member(&origin, redis.port, "2026-12-31 22:59:52");
    let partner = [("X-API-Key", "partner-key")];
    let get = |gw: &Gateway, path: &str| gw.request("GET", path, &partner, b"");

    let first = get(&a, "/a");
    assert_eq!(first.status, 200);
    assert_eq!(first.header("x-quota-limit"), Some("3"));
    assert_eq!(first.header("x-quota-remaining"), Some("2"));
    let reset: u64 = first.header("x-quota-reset").unwrap().parse().unwrap();
    assert!(
        (1..=9).contains(&reset),
        "seconds to midnight in Paris: {reset}"
    );
    assert_eq!(
        get(&b, "/b").header("x-quota-remaining"),
        Some("1"),
        "another instance, another route"
    );
    assert_eq!(get(&a, "/b").header("x-quota-remaining"), Some("0"));
    let refused = get(&b, "/a");
    assert_eq!(refused.status, 429);
    assert_eq!(refused.json()["error"], "rate_limited");
    assert_eq!(refused.header("x-quota-remaining"), Some("0"));
    let retry: u64 = refused.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=9).contains(&retry), "{retry}");

    // A premium consumer has the tier's limit; the refused request counted nowhere.
    let big = [("X-API-Key", "big-key")];
    assert_eq!(
        a.request("GET", "/b", &big, b"").header("x-quota-limit"),
        Some("5")
    );
    let monthly = a
        .admin_get("/ratelimit/quota?name=monthly&key=partner")
        .json();
    assert_eq!(monthly["period"], "2026-12", "{monthly}");
    assert_eq!(
        monthly["used"], 1,
        "only the admitted /a request: {monthly}"
    );
    assert_eq!(monthly["resets_at"], "2027-01-01T00:00:00Z");

    let daily = b
        .admin_get("/ratelimit/quota?name=daily&key=partner")
        .json();
    assert_eq!(daily["period"], "2026-12-31", "{daily}");
    assert_eq!(
        (daily["used"].clone(), daily["remaining"].clone()),
        (3.into(), 0.into())
    );
    assert_eq!(daily["resets_at"], "2026-12-31T23:00:00Z");
    assert_eq!(a.admin_get("/ratelimit/quota?name=nope&key=x").status, 404);
    assert_eq!(a.admin_get("/ratelimit/quota?name=daily").status, 400);

    // Midnight in Paris: a new day, a new quota (the UTC month has not ended yet).
    assert!(
        wait_until(Duration::from_secs(20), || get(&b, "/b").status == 200),
        "the quota comes back at midnight in Paris"
    );
    let daily = a
        .admin_get("/ratelimit/quota?name=daily&key=partner")
        .json();
    assert_eq!(daily["period"], "2027-01-01", "{daily}");
    assert_eq!(daily["used"], 1);
    let lines = b.access_log(2);
    assert!(
        lines
            .iter()
            .any(|l| l["status"] == 429 && l["limited_by"] == "daily"),
        "{lines:?}"
    );
}

#[test]
fn quotas_follow_on_error_while_redis_is_down() {
    let redis = redis_on(free_port());
    let origin = Origin::start("app");
    let gw = member(&origin, redis.port, "2026-06-15 12:00:00");
    let partner = [("X-API-Key", "partner-key")];
    assert_eq!(gw.request("GET", "/b", &partner, b"").status, 200);
    let port = redis.stop();
    let denied = gw.request("GET", "/b", &partner, b"");
    assert_eq!(denied.status, 503, "on_error: deny");
    assert_eq!(denied.json()["error"], "service_unavailable");
    let _redis = redis_on(port);
    assert!(wait_until(Duration::from_secs(10), || {
        gw.request("GET", "/b", &partner, b"").status == 200
    }));
}
