//! `upstreams`: targets, selection, health checks, outlier detection.

use super::*;
use crate::config::{HashKey, HealthCheckSpec, OutlierSpec, Probe, Selection, TargetSpec};
use std::net::SocketAddr;
use std::time::Duration;

const POOL: &str = "upstreams:\n  app:\n    targets: [{ address: 127.0.0.1:19000 }]\n";

#[test]
fn upstream_defaults() {
    let model = model("");
    let app = &model.upstreams[0];
    assert_eq!(app.name, "app");
    assert_eq!(
        app.targets,
        [TargetSpec {
            address: SocketAddr::from(([127, 0, 0, 1], 19000)),
            weight: 1,
        }]
    );
    assert_eq!(app.selection, Selection::WeightedRoundRobin);
    assert_eq!(app.hash_key, HashKey::ClientIp);
    assert_eq!((app.tls.is_none(), app.http2), (true, false));
    assert_eq!(
        [
            app.connect_timeout,
            app.read_timeout,
            app.write_timeout,
            app.idle_timeout
        ],
        [1, 30, 30, 60].map(Duration::from_secs)
    );
    assert_eq!(app.health_check, None);
    assert_eq!(app.outlier_detection, None);
    assert_eq!(app.max_concurrent_requests, None);
}

#[test]
fn health_and_outlier_defaults() {
    let model = model(&format!(
        "{POOL}    health_check: {{}}\n    outlier_detection: {{}}\n"
    ));
    let app = &model.upstreams[0];
    assert_eq!(
        app.health_check,
        Some(HealthCheckSpec {
            probe: Probe::Http {
                path: "/".into(),
                host: None,
                expected_statuses: vec![200],
            },
            interval: Duration::from_secs(5),
            timeout: Duration::from_secs(1),
            healthy_threshold: 2,
            unhealthy_threshold: 3,
        })
    );
    assert_eq!(
        app.outlier_detection,
        Some(OutlierSpec {
            consecutive_5xx: 5,
            consecutive_gateway_failures: 3,
            base_ejection_time: Duration::from_secs(30),
            max_ejection_time: Duration::from_secs(300),
            max_ejection_percent: 50,
        })
    );
}

#[test]
fn selection_and_hash_keys_are_read() {
    let pool = |extra: &str| model(&format!("{POOL}{extra}")).upstreams.remove(0);
    assert_eq!(
        pool("    selection: least_requests\n").selection,
        Selection::LeastRequests
    );
    let hashed = |key: &str| {
        pool(&format!(
            "    selection: consistent_hash\n    hash_key: \"{key}\"\n"
        ))
        .hash_key
    };
    assert_eq!(hashed("path"), HashKey::Path);
    assert_eq!(
        hashed("header:X-User"),
        HashKey::Header(http::HeaderName::from_static("x-user"))
    );
    assert_eq!(hashed("claim:sub"), HashKey::Claim("sub".into()));
    let tls = pool("    tls: { sni: api.test, verify: false }\n")
        .tls
        .unwrap();
    assert_eq!((tls.sni.as_str(), tls.verify), ("api.test", false));
}

#[test]
fn upstream_problems() {
    expect_problems(&[
        ("upstreams:\n  app/1:\n    targets: [{ address: 127.0.0.1:19000 }]\n", &["2:3 upstreams.app/1: upstream names may use only letters, digits, `-`, `_` and `.`", "9:5 routes[0].upstream: no upstream named `app` (defined: app/1)"]),
        ("upstreams:\n  app:\n    targets: []\n", &["3:5 upstreams.app.targets: a pool needs at least one target"]),
        ("upstreams:\n  app:\n    targets: [{ address: 127.0.0.1:1, weight: 20000 }]\n", &["3:39 upstreams.app.targets[0].weight: must be at most 10000"]),
        ("upstreams:\n  app:\n    targets: [{ address: 127.0.0.1:1 }, { address: 127.0.0.1:1 }]\n", &["3:43 upstreams.app.targets[1].address: 127.0.0.1:1 is listed twice"]),
        ("upstreams:\n  app:\n    targets: [{ address: 127.0.0.1:1, weight: 0 }, { address: 127.0.0.1:2, weight: 0 }]\n", &["3:5 upstreams.app.targets: every target has weight 0: the pool could never serve"]),
        ("upstreams:\n  app:\n    targets: [{ address: nowhere }]\n", &["3:17 upstreams.app.targets[0].address: `nowhere` is not an address like 127.0.0.1:8080 or a resolvable host:port"]),
        ("upstreams:\n  app:\n    targets: [{ address: 127.0.0.1:1 }]\n    selection: fastest\n", &["4:5 upstreams.app.selection: `fastest` is not one of: round_robin, weighted_round_robin, random, consistent_hash, least_requests"]),
        ("upstreams:\n  app:\n    targets: [{ address: 127.0.0.1:1 }]\n    hash_key: path\n", &["4:5 upstreams.app.hash_key: only applies to `selection: consistent_hash`"]),
        ("upstreams:\n  app:\n    targets: [{ address: 127.0.0.1:1 }]\n    selection: consistent_hash\n    hash_key: cookie:x\n", &["5:5 upstreams.app.hash_key: `cookie:x` is not one of: client_ip, path, header:NAME, claim:NAME"]),
        ("upstreams:\n  app:\n    targets: [{ address: 127.0.0.1:1 }]\n    selection: consistent_hash\n    hash_key: \"header:bad name\"\n", &["5:5 upstreams.app.hash_key: `bad name` is not a valid HTTP header name"]),
        ("upstreams:\n  app:\n    targets: [{ address: 127.0.0.1:1 }]\n    max_concurrent_requests: 0\n", &["4:5 upstreams.app.max_concurrent_requests: must be at least 1"]),
        ("upstreams:\n  app:\n    targets: [{ address: 127.0.0.1:1 }]\n    connect_timeout: 0\n    read_timeout: 1y\n", &["4:5 upstreams.app.connect_timeout: must be greater than zero", "5:5 upstreams.app.read_timeout: duration `1y` has unknown unit `y` (use ms, s, m, h or d)"]),
    ]);
}

#[test]
fn health_check_problems() {
    expect_problems(&[
        ("upstreams:\n  app:\n    targets: [{ address: 127.0.0.1:1 }]\n    health_check: { type: grpc }\n", &["4:21 upstreams.app.health_check.type: `grpc` checks speak HTTP/2: the upstream needs `http2: true`"]),
        ("upstreams:\n  app:\n    targets: [{ address: 127.0.0.1:1 }]\n    http2: true\n    health_check: { type: grpc, path: /x, expected_statuses: [200] }\n", &["5:33 upstreams.app.health_check.path: does not apply to `type: grpc` (grpc.health.v1.Health/Check, SERVING)", "5:43 upstreams.app.health_check.expected_statuses: does not apply to `type: grpc` (grpc.health.v1.Health/Check, SERVING)"]),
        ("upstreams:\n  app:\n    targets: [{ address: 127.0.0.1:1 }]\n    health_check: { type: tcp, path: /x, host: a, expected_statuses: [200] }\n", &["4:32 upstreams.app.health_check.path: only applies to `type: http`", "4:42 upstreams.app.health_check.host: only applies to `type: http`", "4:51 upstreams.app.health_check.expected_statuses: only applies to `type: http`"]),
        ("upstreams:\n  app:\n    targets: [{ address: 127.0.0.1:1 }]\n    health_check: { type: icmp }\n", &["4:21 upstreams.app.health_check.type: `icmp` is not one of: http, tcp, grpc"]),
        ("upstreams:\n  app:\n    targets: [{ address: 127.0.0.1:1 }]\n    health_check: { path: healthz, expected_statuses: [] }\n", &["4:21 upstreams.app.health_check.path: `healthz` is not a path starting with /", "4:36 upstreams.app.health_check.expected_statuses: must list HTTP status codes (100-599)"]),
        ("upstreams:\n  app:\n    targets: [{ address: 127.0.0.1:1 }]\n    health_check: { expected_statuses: [200, 700], host: \"a\\u0001b\" }\n", &["4:21 upstreams.app.health_check.expected_statuses: must list HTTP status codes (100-599)", "4:52 upstreams.app.health_check.host: `a\u{1}b` is not a valid HTTP header value"]),
        ("upstreams:\n  app:\n    targets: [{ address: 127.0.0.1:1 }]\n    health_check: { interval: 1s, timeout: 2s }\n", &["4:35 upstreams.app.health_check.timeout: must not be longer than the interval"]),
        ("upstreams:\n  app:\n    targets: [{ address: 127.0.0.1:1 }]\n    health_check: { interval: 0, healthy_threshold: 0, unhealthy_threshold: 101 }\n", &["4:21 upstreams.app.health_check.interval: must be greater than zero", "4:34 upstreams.app.health_check.healthy_threshold: must be between 1 and 100", "4:56 upstreams.app.health_check.unhealthy_threshold: must be between 1 and 100"]),
    ]);
}

#[test]
fn outlier_detection_problems() {
    expect_problems(&[
        ("upstreams:\n  app:\n    targets: [{ address: 127.0.0.1:1 }]\n    outlier_detection: { consecutive_5xx: 0, consecutive_gateway_failures: 0 }\n", &["4:5 upstreams.app.outlier_detection: both consecutive_5xx and consecutive_gateway_failures are 0: nothing could eject"]),
        ("upstreams:\n  app:\n    targets: [{ address: 127.0.0.1:1 }]\n    outlier_detection: { base_ejection_time: 1m, max_ejection_time: 30s }\n", &["4:50 upstreams.app.outlier_detection.max_ejection_time: must not be shorter than base_ejection_time"]),
        ("upstreams:\n  app:\n    targets: [{ address: 127.0.0.1:1 }]\n    outlier_detection: { max_ejection_percent: 150, base_ejection_time: 0 }\n", &["4:53 upstreams.app.outlier_detection.base_ejection_time: must be greater than zero", "4:26 upstreams.app.outlier_detection.max_ejection_percent: must be between 0 and 100"]),
    ]);
}
