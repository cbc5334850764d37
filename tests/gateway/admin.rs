//! The admin listener: /health, /ready, /status, /metrics.

use crate::support::{Gateway, Origin};

#[test]
fn status_health_and_metrics_describe_the_gateway() {
    let a = Origin::start("a");
    let gw = Gateway::start(&format!(
        "upstreams:\n  app:\n    targets: [{{ address: \"{}\", weight: 2 }}]\n    max_concurrent_requests: 10\nroutes:\n  - {{ name: all, upstream: app }}\n",
        a.addr
    ));
    assert_eq!(gw.get("/x").status, 200);

    let health = gw.admin_get("/health");
    assert_eq!(
        (health.status, health.json()["status"].as_str()),
        (200, Some("ok"))
    );
    assert_eq!(gw.admin_get("/ready").status, 200);

    let status = gw.admin_get("/status").json();
    let pool = &status["upstreams"][0];
    assert_eq!(pool["name"], "app");
    assert_eq!(pool["ready"], true);
    assert_eq!(pool["max_concurrent_requests"], 10);
    let backend = &pool["backends"][0];
    assert_eq!(backend["address"], a.addr.to_string());
    assert_eq!(backend["weight"], 2);
    assert_eq!(backend["healthy"], true);
    // The request's slot is released when its context drops, just after the response is sent.
    assert!(crate::support::wait_until(
        std::time::Duration::from_secs(5),
        || gw.admin_get("/status").json()["upstreams"][0]["backends"][0]["in_flight"] == 0
    ));
    assert_eq!(status["routes"][0], "all");
    assert_eq!(status["config"]["hash"].as_str().unwrap().len(), 16);

    let metrics = gw.wait_metric(
        "edgegate_requests_total{method=\"GET\",route=\"all\",status=\"2xx\"}",
        1.0,
    );
    for series in [
        "edgegate_request_duration_seconds_count{route=\"all\"}",
        &format!(
            "edgegate_upstream_requests_total{{backend=\"{}\",status=\"2xx\",upstream=\"app\"}}",
            a.addr
        ),
        &format!(
            "edgegate_backend_healthy{{backend=\"{}\",upstream=\"app\"}}",
            a.addr
        ),
        "edgegate_upstream_duration_seconds_count{upstream=\"app\"}",
    ] {
        assert_eq!(
            crate::support::metric_value(&metrics, series),
            Some(1.0),
            "{series} in\n{metrics}"
        );
    }
    assert!(metrics.contains("edgegate_build_info{version=\""));

    let unknown = gw.admin_get("/nope");
    assert_eq!(unknown.status, 404);
    assert_eq!(unknown.json()["error"], "not_found");
}

#[test]
fn unmatched_requests_and_odd_methods_keep_metric_labels_bounded() {
    let a = Origin::start("a");
    let gw = Gateway::start(&format!(
        "upstreams:\n  app:\n    targets: [{{ address: \"{}\" }}]\nroutes:\n  - {{ name: api, match: {{ path_prefix: /api }}, upstream: app }}\n",
        a.addr
    ));
    assert_eq!(gw.get("/elsewhere").status, 404);
    assert_eq!(gw.request("BREW", "/api/pot", &[], b"").status, 200);
    gw.wait_metric(
        "edgegate_requests_total{method=\"GET\",route=\"unmatched\",status=\"4xx\"}",
        1.0,
    );
    let metrics = gw.wait_metric(
        "edgegate_requests_total{method=\"OTHER\",route=\"api\",status=\"2xx\"}",
        1.0,
    );
    assert!(!metrics.contains("/elsewhere") && !metrics.contains("BREW"));
}
