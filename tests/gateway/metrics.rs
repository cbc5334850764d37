//! Every metric docs/operations.md documents is exported, with the documented labels, after traffic that
//! exercises each feature; connections and in-flight requests are counted and released.

use crate::support::{free_port, metric_value, wait_until, Gateway, Origin};
use std::io::{BufReader, Write};
use std::net::TcpStream;
use std::time::Duration;

/// (name, labels) of every row of the metrics table in docs/operations.md.
fn documented_metrics() -> Vec<(String, Vec<String>)> {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/operations.md"))
            .unwrap();
    let section = readme
        .split("## Metrics")
        .nth(1)
        .and_then(|rest| rest.split("\n## ").next())
        .expect("a Metrics section");
    let backticked = |cell: &str| -> Vec<String> {
        cell.split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_string)
            .collect()
    };
    section
        .lines()
        .filter(|line| line.starts_with("| `edgegate_"))
        .map(|line| {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            // Label values in parentheses are examples, not label names.
            let labels: String = cells[3]
                .split('(')
                .enumerate()
                .map(|(i, part)| {
                    if i == 0 {
                        part
                    } else {
                        part.split(')').nth(1).unwrap_or("")
                    }
                })
                .collect();
            (backticked(cells[1])[0].clone(), backticked(&labels))
        })
        .collect()
}

#[test]
fn every_documented_metric_is_exported_with_its_labels() {
    let origin = Origin::start("app");
    origin.set(|b| b.headers = vec![("Cache-Control".into(), "max-age=60".into())]);
    let refused = format!("127.0.0.1:{}", free_port());
    let secret = crate::support::temp_dir().join("jwt.secret");
    std::fs::write(&secret, "a-shared-secret-of-at-least-32-bytes!").unwrap();
    let dir = crate::support::temp_dir();
    let ca = crate::support::ca::Ca::new("Metrics CA");
    let certificate = ca.server(&["metrics.test"]).write(&dir, "metrics");
    let tls_address = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let gw = Gateway::start_with_second_listener(&format!(
        "auth:\n  api_keys:\n    keys: [{{ consumer: partner, sha256: {key} }}]\n\
         \x20 jwt: {{ providers: {{ main: {{ algorithms: [HS256], secret_file: {secret} }} }} }}\n\
         rate_limits:\n  policies:\n\
         \x20   one: {{ algorithm: fixed_window, key: client_ip, limit: 2, window: 1m }}\n\
         \x20   watch: {{ algorithm: fixed_window, key: client_ip, limit: 1, window: 1m, shadow: true }}\n\
         upstreams:\n  app:\n    selection: round_robin\n\
         \x20   targets: [{{ address: \"{}\" }}, {{ address: \"{refused}\" }}]\n\
         \x20   max_concurrent_requests: 100\n\
         \x20   outlier_detection: {{ consecutive_gateway_failures: 50 }}\n\
         routes:\n\
         \x20 - {{ name: keyed, match: {{ path_prefix: /keyed }}, upstream: app, auth: {{ api_key: true }} }}\n\
         \x20 - {{ name: limited, match: {{ path_prefix: /limited }}, upstream: app, rate_limits: [watch, one] }}\n\
         \x20 - {{ name: cached, match: {{ path_prefix: /cached }}, upstream: app, cache: {{ ttl: 30s }} }}\n\
         \x20 - {{ name: canary, match: {{ path_prefix: /canary }}, split: [{{ upstream: app, weight: 1 }}] }}\n\
         \x20 - {{ name: zipped, match: {{ path_prefix: /zipped }}, upstream: app, compression: {{ min_size: 1B }} }}\n\
         \x20 - {{ name: fanout, match: {{ path_prefix: /fanout }}, aggregate: {{ parts: {{ one: {{ upstream: app, path: /one }} }} }} }}\n\
         \x20 - {{ name: all, upstream: app, retries: {{ attempts: 1, on: [connect_failure] }} }}\n",
        origin.addr,
        key = edgegate::auth::api_key::hash_key_hex("partner-key"),
        secret = secret.display(),
    ), tls_address, &format!("tls: {{ certificates: [{certificate}] }}"));
    for _ in 0..4 {
        assert_eq!(gw.get("/").status, 200, "retried past the refusing backend");
    }
    assert_eq!(gw.get("/keyed").status, 401);
    assert_eq!(gw.get("/limited").status, 200);
    assert_eq!(
        gw.get("/limited").status,
        200,
        "over the shadow policy, let through"
    );
    assert_eq!(gw.get("/limited").status, 429);
    assert_eq!(gw.get("/cached").status, 200);
    assert_eq!(gw.get("/cached").status, 200);
    assert_eq!(gw.get("/canary").status, 200);
    assert_eq!(gw.get("/fanout").status, 200);
    let zipped = gw.request("GET", "/zipped", &[("Accept-Encoding", "gzip")], b"");
    assert_eq!(zipped.header("content-encoding"), Some("gzip"));
    gw.wait_metric(
        "edgegate_requests_total{method=\"GET\",route=\"cached\",status=\"2xx\"}",
        2.0,
    );

    let text = gw.metrics();
    let documented = documented_metrics();
    assert!(documented.len() >= 25, "{documented:?}");
    for (name, labels) in &documented {
        let series: Vec<&str> = text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter(|l| {
                l.strip_prefix(name.as_str())
                    .is_some_and(|rest| rest.starts_with(['{', ' ', '_']))
            })
            .collect();
        assert!(!series.is_empty(), "{name} is not exported");
        for label in labels {
            assert!(
                series.iter().any(|s| s.contains(&format!("{label}=\""))),
                "{name} has no `{label}` label: {series:?}"
            );
        }
        assert!(
            text.contains(&format!("# HELP {name} ")),
            "{name} has no HELP text"
        );
    }
    // And nothing exported is left undocumented.
    for line in text.lines().filter(|l| l.starts_with("# TYPE edgegate_")) {
        let name = line.split_whitespace().nth(2).unwrap();
        assert!(
            documented.iter().any(|(d, _)| d == name),
            "{name} is exported but not in the docs/operations.md table"
        );
    }
    assert!(metric_value(&text, "edgegate_request_bytes_total{route=\"all\"}").unwrap() > 0.0);
    assert!(metric_value(&text, "edgegate_response_bytes_total{route=\"all\"}").unwrap() > 0.0);
}

#[test]
fn open_connections_and_requests_in_flight_are_counted_and_released() {
    let origin = Origin::start("app");
    origin.set(|b| b.delay = Duration::from_millis(600));
    let gw = Gateway::start(&format!(
        "upstreams:\n  app: {{ targets: [{{ address: \"{}\" }}] }}\nroutes:\n  - {{ name: all, upstream: app }}\n",
        origin.addr
    ));
    gw.wait_metric("edgegate_downstream_connections", 0.0);
    // Three keep-alive connections, each with one request answered: they stay counted.
    let mut connections: Vec<BufReader<TcpStream>> = (0..3)
        .map(|_| {
            let mut stream = TcpStream::connect(gw.proxy).unwrap();
            stream
                .write_all(b"GET / HTTP/1.1\r\nHost: test.local\r\n\r\n")
                .unwrap();
            BufReader::new(stream)
        })
        .collect();
    let proxy = gw.proxy;
    let slow = std::thread::spawn(move || crate::support::get(proxy, "/slow").status);
    assert!(wait_until(Duration::from_secs(5), || {
        gw.metric("edgegate_requests_in_flight{route=\"all\"}") == Some(4.0)
    }));
    for connection in &mut connections {
        assert_eq!(
            crate::support::read_response(connection, false)
                .unwrap()
                .status,
            200
        );
    }
    assert_eq!(slow.join().unwrap(), 200);
    gw.wait_metric("edgegate_requests_in_flight{route=\"all\"}", 0.0);
    gw.wait_metric("edgegate_downstream_connections", 3.0);
    drop(connections);
    gw.wait_metric("edgegate_downstream_connections", 0.0);
}

#[test]
fn the_grafana_dashboard_queries_only_documented_metrics() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/conf/grafana-dashboard.json");
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let documented: Vec<String> = documented_metrics().into_iter().map(|(n, _)| n).collect();
    let variables: Vec<&str> = dashboard["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v["name"].as_str())
        .collect();
    assert!(variables.contains(&"route") && variables.contains(&"upstream"));
    let mut used = std::collections::BTreeSet::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().unwrap();
            for (start, _) in expr.match_indices("edgegate_") {
                let name: String = expr[start..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                let name = name.trim_end_matches("_bucket").to_string();
                assert!(
                    documented.contains(&name),
                    "{name} in {expr:?} is not documented"
                );
                used.insert(name);
            }
        }
    }
    for golden in [
        "edgegate_requests_total",
        "edgegate_request_duration_seconds",
        "edgegate_requests_in_flight",
        "edgegate_upstream_requests_total",
        "edgegate_upstream_duration_seconds",
        "edgegate_ejections_total",
        "edgegate_rate_limited_total",
        "edgegate_cache_lookups_total",
    ] {
        assert!(
            used.contains(golden),
            "the dashboard does not chart {golden}"
        );
    }
}
