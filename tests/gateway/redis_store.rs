//! The shared Redis store: a real `redis-server` child process, two gateways sharing one limit,
//! Redis killed and restarted mid-test.

use crate::support::redis::RedisServer;
use crate::support::{free_port, wait_until, Gateway, Origin};
use std::time::Duration;

/// A `redis-server` on `port` (or a free one); the tests need it installed.
fn redis_on(port: u16) -> RedisServer {
    RedisServer::start_on(port)
        .expect("redis-server must be installed (scripts/install-deps.sh test)")
}

fn gateway(origin: &Origin, redis_port: u16, on_error: &str, limit: u32) -> Gateway {
    Gateway::start(&format!(
        "rate_limits:\n  store: redis\n  redis: {{ url: \"redis://127.0.0.1:{redis_port}/0\", timeout: 200ms, on_error: {on_error} }}\n\
         \x20 policies:\n    shared: {{ algorithm: sliding_window, key: global, limit: {limit}, window: 1m }}\n\
         upstreams:\n  app: {{ targets: [{{ address: \"{}\" }}] }}\n\
         routes:\n  - {{ name: api, upstream: app, rate_limits: [shared] }}\n",
        origin.addr
    ))
}

#[test]
fn two_gateways_share_one_limit_through_redis() {
    let redis = redis_on(free_port());
    let origin = Origin::start("app");
    let (a, b) = (
        gateway(&origin, redis.port, "allow", 4),
        gateway(&origin, redis.port, "allow", 4),
    );
    let statuses: Vec<u16> = (0..8)
        .map(|i| {
            if i % 2 == 0 {
                a.get("/").status
            } else {
                b.get("/").status
            }
        })
        .collect();
    assert_eq!(
        statuses.iter().filter(|&&s| s == 200).count(),
        4,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|&&s| s == 429).count(),
        4,
        "{statuses:?}"
    );
    let limited = b.get("/");
    assert_eq!(limited.status, 429);
    assert_eq!(limited.header("x-ratelimit-remaining"), Some("0"));
    assert!(limited.header("retry-after").is_some());
    assert_eq!(origin.hits(), 4);
}

#[test]
fn while_redis_is_down_on_error_decides_and_limiting_resumes_when_it_returns() {
    let redis = redis_on(free_port());
    let origin = Origin::start("app");
    let allow = gateway(&origin, redis.port, "allow", 2);
    let deny = gateway(&origin, redis.port, "deny", 1000);
    assert_eq!(allow.get("/").status, 200);
    assert_eq!(deny.get("/").status, 200);

    let port = redis.stop();
    for _ in 0..3 {
        assert_eq!(
            allow.get("/").status,
            200,
            "on_error: allow lets requests through"
        );
        let denied = deny.get("/");
        assert_eq!(denied.status, 503, "on_error: deny refuses");
        assert_eq!(denied.json()["error"], "service_unavailable");
    }
    assert!(
        allow.stderr().contains("Redis unavailable"),
        "{}",
        allow.stderr()
    );
    assert!(
        allow
            .metric("edgegate_ratelimit_store_errors_total")
            .unwrap_or(0.0)
            >= 3.0
    );
    let store_errors =
        "edgegate_ratelimit_decisions_total{outcome=\"store_error\",policy=\"shared\"}";
    assert!(
        deny.metric(store_errors).unwrap_or(0.0) >= 3.0,
        "{}",
        deny.metrics()
    );

    let _redis = redis_on(port);
    assert!(
        wait_until(Duration::from_secs(10), || deny.get("/").status == 200),
        "the deny gateway recovers when Redis returns"
    );
    // A fresh Redis has no state: the allow gateway limits again after 2.
    assert!(
        wait_until(Duration::from_secs(10), || allow.get("/").status == 429),
        "limiting resumes"
    );
    assert!(
        allow.stderr().contains("Redis answers again"),
        "{}",
        allow.stderr()
    );
}
