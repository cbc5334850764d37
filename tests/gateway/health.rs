//! Active health checks: unhealthy backends get no traffic and come back when healthy.

use crate::support::{wait_until, Gateway, Origin};
use std::time::Duration;

fn checked_pool(a: &Origin, b: &Origin, check: &str) -> Gateway {
    Gateway::start(&format!(
        "upstreams:\n  app:\n    selection: round_robin\n    targets:\n      - {{ address: \"{}\" }}\n      - {{ address: \"{}\" }}\n    health_check: {check}\nroutes:\n  - {{ name: all, upstream: app }}\n",
        a.addr, b.addr
    ))
}

const HTTP_CHECK: &str =
    "{ type: http, path: /health, interval: 250ms, timeout: 250ms, healthy_threshold: 2, unhealthy_threshold: 2 }";

#[test]
fn an_unhealthy_backend_is_removed_and_readded() {
    let a = Origin::start("a");
    let b = Origin::start("b");
    let gw = checked_pool(&a, &b, HTTP_CHECK);
    assert!(
        b.health_hits() >= 1,
        "the first pass ran before traffic was taken"
    );
    let series = format!(
        "edgegate_backend_healthy{{backend=\"{}\",upstream=\"app\"}}",
        b.addr
    );
    assert_eq!(gw.metric(&series), Some(1.0));

    b.set(|behavior| behavior.health_status = 503);
    assert!(
        wait_until(Duration::from_secs(5), || gw.metric(&series) == Some(0.0)),
        "b never marked unhealthy"
    );
    let before = b.hits();
    for _ in 0..20 {
        assert_eq!(gw.get("/").header("x-origin"), Some("a"));
    }
    assert_eq!(b.hits(), before, "an unhealthy backend got traffic");
    let ready = gw.admin_get("/ready");
    assert_eq!(
        ready.status, 200,
        "one healthy backend keeps the pool ready"
    );

    b.set(|behavior| behavior.health_status = 200);
    assert!(
        wait_until(Duration::from_secs(5), || gw.metric(&series) == Some(1.0)),
        "b never came back"
    );
    let back = (0..20)
        .filter(|_| gw.get("/").header("x-origin") == Some("b"))
        .count();
    assert!(back >= 8, "b should take its share again, got {back}/20");
    assert!(gw.stderr().contains("is unhealthy") && gw.stderr().contains("is healthy"));
}

#[test]
fn expected_statuses_define_healthy() {
    let a = Origin::start("a");
    let b = Origin::start("b");
    b.set(|behavior| behavior.health_status = 204);
    let gw = checked_pool(
        &a,
        &b,
        "{ type: http, path: /health, expected_statuses: [200], interval: 250ms, timeout: 250ms }",
    );
    // The first pass decides at once: b answers 204, which is not expected.
    for _ in 0..10 {
        assert_eq!(gw.get("/").header("x-origin"), Some("a"));
    }
    drop(gw);
    let gw = checked_pool(
        &a,
        &b,
        "{ type: http, path: /health, expected_statuses: [200, 204], interval: 250ms, timeout: 250ms }",
    );
    let to_b = (0..10)
        .filter(|_| gw.get("/").header("x-origin") == Some("b"))
        .count();
    assert_eq!(to_b, 5);
}

#[test]
fn tcp_checks_follow_whether_the_port_accepts() {
    let a = Origin::start("a");
    let b = Origin::start("b");
    let gw = checked_pool(
        &a,
        &b,
        "{ type: tcp, interval: 250ms, timeout: 250ms, healthy_threshold: 1, unhealthy_threshold: 1 }",
    );
    let b_addr = b.stop();
    let series = format!("edgegate_backend_healthy{{backend=\"{b_addr}\",upstream=\"app\"}}");
    assert!(wait_until(Duration::from_secs(5), || gw.metric(&series) == Some(0.0)));
    let b = Origin::start_on("b", b_addr);
    assert!(wait_until(Duration::from_secs(5), || gw.metric(&series) == Some(1.0)));
    assert!(wait_until(Duration::from_secs(5), || gw
        .get("/")
        .header("x-origin")
        == Some("b")));
    drop(b);
}

#[test]
fn a_pool_with_no_healthy_backend_answers_503_and_is_not_ready() {
    let a = Origin::start("a");
    let b = Origin::start("b");
    a.set(|behavior| behavior.health_status = 500);
    b.set(|behavior| behavior.health_status = 500);
    let gw = checked_pool(&a, &b, HTTP_CHECK);
    let response = gw.get("/");
    assert_eq!(response.status, 503);
    let body = response.json();
    assert_eq!(body["error"], "service_unavailable");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("no healthy backend"),
        "{body}"
    );
    assert_eq!(body["request_id"].as_str(), response.header("x-request-id"));
    assert_eq!(a.hits() + b.hits(), 0);
    let ready = gw.admin_get("/ready");
    assert_eq!(ready.status, 503);
    assert_eq!(ready.json()["upstreams_without_healthy_backend"][0], "app");
}
