//! Passive outlier ejection, probation, the ejection cap, panic mode, retries on answers.

use crate::support::{wait_until, Gateway, Origin};
use std::time::Duration;

fn pool(origins: &[&Origin], outlier: &str, route_extra: &str) -> Gateway {
    let targets: String = origins
        .iter()
        .map(|o| format!("      - {{ address: \"{}\" }}\n", o.addr))
        .collect();
    Gateway::start(&format!(
        "upstreams:\n  app:\n    selection: round_robin\n    read_timeout: 300ms\n    targets:\n{targets}    outlier_detection: {outlier}\n\
         routes:\n  - {{ name: all, upstream: app{route_extra} }}\n"
    ))
}

fn backend_status(gw: &Gateway, origin: &Origin) -> serde_json::Value {
    let status = gw.admin_get("/status").json();
    status["upstreams"][0]["backends"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["address"] == origin.addr.to_string())
        .cloned()
        .unwrap()
}

fn ejected_series(origin: &Origin) -> String {
    format!(
        "edgegate_backend_ejected{{backend=\"{}\",upstream=\"app\"}}",
        origin.addr
    )
}

#[test]
fn a_failing_backend_is_ejected_returns_on_probation_and_is_ejected_longer_the_second_time() {
    let good = Origin::start("good");
    let bad = Origin::start("bad");
    bad.set(|b| b.status = 500);
    let gw = pool(
        &[&good, &bad],
        "{ consecutive_5xx: 3, base_ejection_time: 600ms, max_ejection_time: 10s, max_ejection_percent: 50 }",
        ", retries: { attempts: 0 }",
    );
    for _ in 0..6 {
        gw.get("/");
    }
    assert_eq!(bad.hits(), 3, "ejected after the third 500 in a row");
    let first = backend_status(&gw, &bad)["outlier"].clone();
    assert_eq!(first["ejected"], true, "{first}");
    assert_eq!(first["times_ejected"], 1);
    assert!(first["ejected_for_ms"].as_u64().unwrap() <= 600, "{first}");
    assert_eq!(gw.metric(&ejected_series(&bad)), Some(1.0));

    for _ in 0..10 {
        assert_eq!(
            gw.get("/").header("x-origin"),
            Some("good"),
            "no traffic to an ejected backend"
        );
    }
    assert!(
        wait_until(Duration::from_secs(5), || gw.metric(&ejected_series(&bad))
            == Some(0.0)),
        "never returned"
    );
    assert_eq!(backend_status(&gw, &bad)["outlier"]["probation"], true);

    // On probation one more 500 ejects it again, for twice the base time.
    assert!(wait_until(Duration::from_secs(5), || {
        gw.get("/");
        backend_status(&gw, &bad)["outlier"]["ejected"] == true
    }));
    let second = backend_status(&gw, &bad)["outlier"].clone();
    assert_eq!(second["times_ejected"], 2, "{second}");
    assert!(
        second["ejected_for_ms"].as_u64().unwrap() > 600,
        "the second ejection is longer: {second}"
    );
    assert_eq!(
        gw.metric(&format!(
            "edgegate_ejections_total{{backend=\"{}\",reason=\"probation\",upstream=\"app\"}}",
            bad.addr
        )),
        Some(1.0)
    );
    let log = gw.stderr();
    assert!(
        log.contains("ejected for") && log.contains("back on probation"),
        "{log}"
    );
}

#[test]
fn a_backend_that_recovers_passes_probation() {
    let good = Origin::start("good");
    let flaky = Origin::start("flaky");
    flaky.set(|b| b.status = 500);
    let gw = pool(
        &[&good, &flaky],
        "{ consecutive_5xx: 2, base_ejection_time: 300ms }",
        ", retries: { attempts: 0 }",
    );
    for _ in 0..4 {
        gw.get("/");
    }
    assert_eq!(backend_status(&gw, &flaky)["outlier"]["ejected"], true);
    flaky.set(|b| b.status = 200);
    assert!(wait_until(Duration::from_secs(5), || gw
        .metric(&ejected_series(&flaky))
        == Some(0.0)));
    for _ in 0..20 {
        assert_eq!(gw.get("/").status, 200);
    }
    let state = backend_status(&gw, &flaky)["outlier"].clone();
    assert_eq!(state["probation"], false, "{state}");
    assert_eq!(state["times_ejected"], 0, "fresh again: {state}");
    assert!(gw.stderr().contains("passed probation"));
}

#[test]
fn max_ejection_percent_caps_how_much_of_the_pool_is_ejected() {
    let origins: Vec<Origin> = (0..4).map(|i| Origin::start(&format!("o{i}"))).collect();
    for failing in &origins[1..] {
        failing.set(|b| b.status = 500);
    }
    let refs: Vec<&Origin> = origins.iter().collect();
    let gw = pool(
        &refs,
        "{ consecutive_5xx: 2, base_ejection_time: 30s, max_ejection_percent: 50 }",
        ", retries: { attempts: 0 }",
    );
    for _ in 0..60 {
        gw.get("/");
    }
    let ejected = origins
        .iter()
        .filter(|o| backend_status(&gw, o)["outlier"]["ejected"] == true)
        .count();
    assert_eq!(ejected, 2, "50% of 4 backends");
    let still_failing_in_rotation = origins[1..]
        .iter()
        .filter(|o| backend_status(&gw, o)["outlier"]["ejected"] == false)
        .count();
    assert_eq!(still_failing_in_rotation, 1);
}

#[test]
fn panic_mode_serves_instead_of_refusing_when_everything_is_ejected() {
    let a = Origin::start("a");
    let b = Origin::start("b");
    let down = Origin::start("down");
    for failing in [&a, &b] {
        failing.set(|behavior| behavior.status = 500);
    }
    down.set(|behavior| behavior.health_status = 503);
    let targets = format!(
        "      - {{ address: \"{}\" }}\n      - {{ address: \"{}\" }}\n      - {{ address: \"{}\" }}\n",
        a.addr, b.addr, down.addr
    );
    let gw = Gateway::start(&format!(
        "upstreams:\n  app:\n    selection: round_robin\n    targets:\n{targets}\
         \x20   health_check: {{ path: /health, interval: 250ms, timeout: 250ms }}\n\
         \x20   outlier_detection: {{ consecutive_5xx: 2, base_ejection_time: 30s, max_ejection_percent: 100 }}\n\
         routes:\n  - {{ name: all, upstream: app, retries: {{ attempts: 0 }} }}\n"
    ));
    for _ in 0..3 {
        gw.get("/");
    }
    assert_eq!(
        gw.admin_get("/status").json()["upstreams"][0]["panic"],
        false,
        "one of the two failing backends is still in rotation"
    );
    let statuses: Vec<u16> = (0..10).map(|_| gw.get("/").status).collect();
    assert!(
        statuses.iter().all(|&s| s == 500),
        "panic mode passes the backends' answers through instead of a blanket 503: {statuses:?}"
    );
    assert_eq!(
        down.hits(),
        0,
        "a backend failing its active check stays out even in panic mode"
    );
    assert_eq!(
        gw.admin_get("/status").json()["upstreams"][0]["panic"],
        true
    );
    assert_eq!(
        gw.metric("edgegate_pool_panic{upstream=\"app\"}"),
        Some(1.0)
    );
    let panic_served = gw
        .metric("edgegate_pool_panic_requests_total{upstream=\"app\"}")
        .unwrap();
    assert!(
        panic_served >= 9.0,
        "the first of the 10 ejected the last backend; then panic: {panic_served}"
    );
    assert!(gw.stderr().contains("panic mode"));
}

#[test]
fn retries_on_5xx_hide_a_failing_backend_from_clients() {
    let good = Origin::start("good");
    let bad = Origin::start("bad");
    bad.set(|b| b.status = 500);
    let gw = pool(
        &[&good, &bad],
        "{ consecutive_5xx: 100 }",
        ", retries: { attempts: 1, on: [5xx] }",
    );
    for _ in 0..10 {
        assert_eq!(gw.get("/").status, 200);
    }
    assert!(
        bad.hits() >= 5,
        "the failing backend kept getting first attempts"
    );
    assert_eq!(
        gw.metric("edgegate_retries_total{reason=\"5xx\",route=\"all\"}"),
        Some(bad.hits() as f64),
        "every 500 was retried"
    );
}

#[test]
fn timeouts_are_gateway_failures_that_eject_and_can_be_retried() {
    let good = Origin::start("good");
    let slow = Origin::start("slow");
    slow.set(|b| b.delay = Duration::from_millis(1500));
    let gw = pool(
        &[&good, &slow],
        "{ consecutive_gateway_failures: 2, base_ejection_time: 30s }",
        ", retries: { attempts: 1, on: [gateway_error] }",
    );
    for _ in 0..6 {
        assert_eq!(
            gw.get("/").status,
            200,
            "the timeout is retried on the other backend"
        );
    }
    assert_eq!(slow.hits(), 2, "ejected after two timeouts");
    assert_eq!(
        gw.metric(&format!(
            "edgegate_ejections_total{{backend=\"{}\",reason=\"consecutive_gateway_failures\",upstream=\"app\"}}",
            slow.addr
        )),
        Some(1.0)
    );
    assert_eq!(
        gw.metric("edgegate_retries_total{reason=\"gateway_error\",route=\"all\"}"),
        Some(2.0)
    );
}
