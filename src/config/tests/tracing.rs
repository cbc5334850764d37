//! `tracing` and a route's `tracing`.

use super::*;
use std::time::Duration;

#[test]
fn tracing_defaults_and_overrides() {
    let loaded = model(
        "tracing: { otlp_endpoint: \"http://127.0.0.1:4318\" }\n\
         routes:\n  - { name: r, upstream: app, tracing: { sample_ratio: 0.25 } }\n",
    );
    let spec = loaded.tracing.expect("tracing on");
    assert_eq!(spec.collector, "127.0.0.1:4318");
    assert_eq!(spec.collector_path, "/v1/traces");
    assert_eq!(spec.service_name, "edgegate");
    assert_eq!(spec.sample_ratio, 1.0);
    assert_eq!(
        (spec.always_status_at_least, spec.always_slower_than),
        (None, None)
    );
    assert_eq!(spec.max_queue, 4096);
    assert_eq!(loaded.routes[0].trace_ratio, Some(0.25));

    let full = model(
        "tracing:\n  otlp_endpoint: http://otel.test:4318/custom\n  protocol: http\n  service_name: edge-eu\n  \
         resource: { deployment.environment: prod }\n  sample_ratio: 0.05\n  \
         always_sample: { status_at_least: 500, slower_than: 1s }\n  max_queue: 100\n",
    )
    .tracing
    .unwrap();
    assert_eq!(full.collector_path, "/custom");
    assert_eq!(
        full.resource,
        [("deployment.environment".to_string(), "prod".to_string())]
    );
    assert_eq!(full.always_status_at_least, Some(500));
    assert_eq!(full.always_slower_than, Some(Duration::from_secs(1)));
    assert_eq!(model("").tracing, None);
}

#[test]
fn tracing_problems() {
    expect_problems(&[
        ("tracing: { otlp_endpoint: \"https://127.0.0.1:4318\", protocol: grpc, sample_ratio: 2 }\n", &[
            "1:12 tracing.otlp_endpoint: `https://127.0.0.1:4318` is not an OTLP/HTTP endpoint like http://127.0.0.1:4318 (plain http: a collector on the host or a sidecar)",
            "1:53 tracing.protocol: `grpc`: only `http` (OTLP/HTTP with protobuf) is supported",
            "1:69 tracing.sample_ratio: 2 is not a ratio from 0 to 1",
        ]),
        ("tracing: { otlp_endpoint: \"http://127.0.0.1:4318\", always_sample: { status_at_least: 700, slower_than: 0 }, max_queue: 0 }\n", &[
            "1:69 tracing.always_sample.status_at_least: an HTTP status, 100 to 599",
            "1:91 tracing.always_sample.slower_than: must be greater than zero",
            "1:109 tracing.max_queue: must be more than 0",
        ]),
        ("routes:\n  - { name: r, upstream: app, tracing: { sample_ratio: 0.5 } }\n", &[
            "2:31 routes[0].tracing: there is no top-level `tracing` section to export this route's spans",
        ]),
    ]);
}
