//! Distributed tracing: W3C trace context continued from the client to the origin, spans
//! exported over OTLP/HTTP and decoded by opentelemetry-proto in a test collector, head and
//! tail sampling, retries as client spans, and spans dropped and counted when no collector
//! listens.

use crate::support::otlp::{attribute, Collector};
use crate::support::{free_port, wait_until, Gateway, Origin};
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::Span;
use std::time::Duration;

const CLIENT_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_SPAN: &str = "00f067aa0ba902b7";

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn gateway(collector: &str, tracing_extra: &str, upstreams: &str, routes: &str) -> Gateway {
    Gateway::start(&format!(
        "tracing:\n  otlp_endpoint: \"http://{collector}\"\n  resource: {{ deployment.environment: test }}\n{tracing_extra}\
         upstreams:\n{upstreams}routes:\n{routes}"
    ))
}

/// A collector, an origin `app` and a gateway tracing to the collector.
fn traced(tracing_extra: &str, routes: &str) -> (Collector, Origin, Gateway) {
    let collector = Collector::start();
    let origin = Origin::start("app");
    let gw = gateway(
        &collector.addr.to_string(),
        tracing_extra,
        &one_origin(&origin),
        routes,
    );
    (collector, origin, gw)
}

fn one_origin(origin: &Origin) -> String {
    format!(
        "  app: {{ targets: [{{ address: \"{}\" }}] }}\n",
        origin.addr
    )
}

/// The origin's view of `traceparent` and `tracestate` for a request with `headers`.
fn upstream_context(
    gw: &Gateway,
    target: &str,
    headers: &[(&str, &str)],
) -> (String, Option<String>) {
    let response = gw.request("GET", target, headers, b"");
    assert_eq!(response.status, 200, "{}", response.text());
    let seen = &response.json()["headers"];
    (
        seen["traceparent"]
            .as_str()
            .expect("a traceparent upstream")
            .to_string(),
        seen["tracestate"].as_str().map(str::to_string),
    )
}

fn server_spans(spans: &[Span]) -> Vec<&Span> {
    spans
        .iter()
        .filter(|s| s.kind == SpanKind::Server as i32)
        .collect()
}

#[test]
fn a_clients_trace_is_continued_to_the_origin_and_exported() {
    let (collector, origin, gw) = traced("", "  - { name: traced, upstream: app }\n");
    let incoming = format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01");
    let (traceparent, tracestate) = upstream_context(
        &gw,
        "/orders/7?x=1",
        &[
            ("traceparent", &incoming),
            ("tracestate", "vendor=abc"),
            ("X-Request-ID", "trace-1"),
        ],
    );
    let fields: Vec<&str> = traceparent.split('-').collect();
    assert_eq!(fields.len(), 4, "{traceparent}");
    assert_eq!(
        (fields[0], fields[1], fields[3]),
        ("00", CLIENT_TRACE, "01")
    );
    assert_ne!(
        fields[2], CLIENT_SPAN,
        "the origin's parent is the gateway's span"
    );
    assert_eq!(tracestate.as_deref(), Some("vendor=abc"));

    let spans = collector.wait_spans(2);
    let server = spans
        .iter()
        .find(|s| s.kind == SpanKind::Server as i32)
        .expect("a server span");
    let client = spans
        .iter()
        .find(|s| s.kind == SpanKind::Client as i32)
        .expect("a client span");
    assert_eq!(hex(&server.trace_id), CLIENT_TRACE);
    assert_eq!(hex(&server.parent_span_id), CLIENT_SPAN);
    assert_eq!(server.trace_state, "vendor=abc");
    assert_eq!(server.name, "GET traced");
    assert_eq!(attribute(server, "http.route").as_deref(), Some("traced"));
    assert_eq!(
        attribute(server, "http.request.method").as_deref(),
        Some("GET")
    );
    assert_eq!(
        attribute(server, "http.response.status_code").as_deref(),
        Some("200")
    );
    assert_eq!(attribute(server, "url.path").as_deref(), Some("/orders/7"));
    assert_eq!(
        attribute(server, "client.address").as_deref(),
        Some("127.0.0.1")
    );
    assert_eq!(
        attribute(server, "network.protocol.version").as_deref(),
        Some("1.1")
    );
    assert_eq!(
        attribute(server, "edgegate.request_id").as_deref(),
        Some("trace-1")
    );
    assert!(server.end_time_unix_nano >= server.start_time_unix_nano);
    assert_eq!(hex(&client.trace_id), CLIENT_TRACE);
    assert_eq!(client.parent_span_id, server.span_id);
    assert_eq!(
        hex(&client.span_id),
        fields[2],
        "the span the origin was told about"
    );
    assert_eq!(
        attribute(client, "server.address"),
        Some(origin.addr.to_string())
    );
    assert_eq!(
        attribute(client, "edgegate.upstream").as_deref(),
        Some("app")
    );
    assert_eq!(
        attribute(client, "http.response.status_code").as_deref(),
        Some("200")
    );
    assert!(client.start_time_unix_nano >= server.start_time_unix_nano);
    assert!(collector
        .resource()
        .contains(&("service.name".into(), "edgegate".into())));
    assert!(collector
        .resource()
        .contains(&("deployment.environment".into(), "test".into())));
    assert_eq!(collector.paths()[0], "/v1/traces");

    let line = gw
        .access_log(1)
        .into_iter()
        .find(|line| line["request_id"] == "trace-1")
        .unwrap();
    assert_eq!(line["trace_id"], CLIENT_TRACE);
    assert_eq!(
        line["span_id"].as_str(),
        Some(hex(&server.span_id).as_str())
    );
}

#[test]
fn new_traces_start_and_invalid_context_is_replaced() {
    let (collector, _origin, gw) = traced("", "  - { name: r, upstream: app }\n");
    let (fresh, state) = upstream_context(&gw, "/", &[]);
    assert_eq!(fresh.len(), 55, "{fresh}");
    assert!(
        fresh.starts_with("00-") && fresh.ends_with("-01"),
        "{fresh}"
    );
    assert_eq!(state, None);
    for invalid in [
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        "garbage",
    ] {
        let (replaced, state) = upstream_context(
            &gw,
            "/",
            &[("traceparent", invalid), ("tracestate", "vendor=abc")],
        );
        assert_ne!(replaced, invalid);
        assert!(
            !replaced.contains("4bf92f3577b34da6a3ce929d0e0e4736"),
            "{replaced}"
        );
        assert_eq!(replaced.len(), 55);
        assert_eq!(
            state, None,
            "a tracestate without its traceparent is dropped"
        );
    }
    let spans = collector.wait_spans(8);
    assert!(server_spans(&spans)
        .iter()
        .all(|s| s.parent_span_id.is_empty()));
}

#[test]
fn head_sampling_follows_the_parent_and_the_ratio_and_tail_rules_keep_errors() {
    let (collector, origin, gw) = traced("  sample_ratio: 0\n  always_sample: { status_at_least: 500 }\n", "  - { name: half, match: { path_prefix: /half }, upstream: app, tracing: { sample_ratio: 0.5 } }\n\
         \x20 - { name: r, upstream: app }\n");
    // Ratio 0: not sampled, the origin is told so, nothing is exported.
    let (unsampled, _) = upstream_context(&gw, "/", &[]);
    assert!(unsampled.ends_with("-00"), "{unsampled}");
    // A sampled parent is followed whatever the ratio.
    let sampled_parent = format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01");
    upstream_context(&gw, "/", &[("traceparent", &sampled_parent)]);
    // A 500 is kept by the tail rule, with an error status.
    origin.set(|b| b.status = 500);
    assert_eq!(gw.get("/fails").status, 500);
    origin.set(|b| b.status = 200);
    let spans = collector.wait_spans(4);
    let servers = server_spans(&spans);
    assert_eq!(servers.len(), 2, "{servers:#?}");
    assert!(servers.iter().any(|s| hex(&s.trace_id) == CLIENT_TRACE));
    let failed = servers
        .iter()
        .find(|s| attribute(s, "http.response.status_code").as_deref() == Some("500"))
        .expect("the 500 was exported");
    assert_eq!(
        failed.status.as_ref().map(|s| s.code),
        Some(2),
        "STATUS_CODE_ERROR"
    );

    // The route's own ratio: about half of 1,000 new traces.
    for _ in 0..1000 {
        assert_eq!(gw.get("/half").status, 200);
    }
    let half = |spans: &[Span]| {
        spans
            .iter()
            .filter(|s| {
                s.kind == SpanKind::Server as i32
                    && attribute(s, "http.route").as_deref() == Some("half")
            })
            .count()
    };
    assert!(wait_until(Duration::from_secs(10), || half(
        &collector.spans()
    ) >= 350));
    std::thread::sleep(Duration::from_millis(500));
    let sampled = half(&collector.spans());
    assert!(
        (350..=650).contains(&sampled),
        "{sampled} of 1000 sampled at 0.5"
    );
}

#[test]
fn each_attempt_is_a_client_span_and_a_retry_says_so() {
    let collector = Collector::start();
    let alive = Origin::start("alive");
    let dead = Origin::start("dead").stop();
    let gw = gateway(
        &collector.addr.to_string(),
        "",
        &format!(
            "  pair:\n    selection: round_robin\n    targets: [{{ address: \"{dead}\" }}, {{ address: \"{}\" }}]\n",
            alive.addr
        ),
        "  - { name: r, upstream: pair, retries: { attempts: 1, on: [connect_failure] } }\n",
    );
    // Round robin: one of the first two requests goes to the dead backend first.
    for _ in 0..2 {
        assert_eq!(gw.get("/").status, 200);
    }
    let spans = collector.wait_spans(5);
    let retried = server_spans(&spans)
        .into_iter()
        .find(|server| {
            spans
                .iter()
                .filter(|s| s.parent_span_id == server.span_id)
                .count()
                == 2
        })
        .expect("a request with two attempts");
    let mut attempts: Vec<&Span> = spans
        .iter()
        .filter(|s| s.parent_span_id == retried.span_id)
        .collect();
    attempts.sort_by_key(|s| s.start_time_unix_nano);
    assert_eq!(
        attribute(attempts[0], "server.address"),
        Some(dead.to_string())
    );
    assert_eq!(attribute(attempts[0], "http.response.status_code"), None);
    assert_eq!(attempts[0].status.as_ref().map(|s| s.code), Some(2));
    assert_eq!(
        attribute(attempts[0], "http.request.resend_count").as_deref(),
        Some("0")
    );
    assert_eq!(
        attribute(attempts[1], "server.address"),
        Some(alive.addr.to_string())
    );
    assert_eq!(
        attribute(attempts[1], "http.request.resend_count").as_deref(),
        Some("1")
    );
    assert_eq!(
        attribute(attempts[1], "http.response.status_code").as_deref(),
        Some("200")
    );
}

#[test]
fn spans_are_dropped_and_counted_when_no_collector_listens() {
    let origin = Origin::start("app");
    let nobody = format!("127.0.0.1:{}", free_port());
    let gw = gateway(
        &nobody,
        "",
        &one_origin(&origin),
        "  - { name: r, upstream: app }\n",
    );
    for _ in 0..5 {
        assert_eq!(
            gw.get("/").status,
            200,
            "requests do not wait for the collector"
        );
    }
    let failed = "edgegate_tracing_spans_dropped_total{reason=\"export_failed\"}";
    assert!(
        wait_until(Duration::from_secs(10), || gw.metric(failed).unwrap_or(0.0)
            >= 10.0),
        "{}",
        gw.metrics()
    );
    assert_eq!(
        gw.metric("edgegate_tracing_spans_exported_total"),
        Some(0.0)
    );
}

#[test]
fn a_reload_moves_export_to_another_collector_and_changes_sampling() {
    let (first, second) = (Collector::start(), Collector::start());
    let origin = Origin::start("app");
    let gw = gateway(
        &first.addr.to_string(),
        "",
        &one_origin(&origin),
        "  - { name: r, upstream: app }\n",
    );
    assert_eq!(gw.get("/").status, 200);
    first.wait_spans(2);
    crate::reload::reload(
        &gw,
        |text| {
            text.replace(&first.addr.to_string(), &second.addr.to_string())
                .replace("  resource:", "  sample_ratio: 0\n  resource:")
        },
        "success",
        1.0,
    );
    // Ratio 0 now: a new trace is not exported, a sampled parent still is, to the new collector.
    let (unsampled, _) = upstream_context(&gw, "/", &[]);
    assert!(unsampled.ends_with("-00"), "{unsampled}");
    let parent = format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01");
    upstream_context(&gw, "/", &[("traceparent", &parent)]);
    let spans = second.wait_spans(2);
    assert!(
        spans.iter().all(|s| hex(&s.trace_id) == CLIENT_TRACE),
        "{spans:#?}"
    );
    assert_eq!(
        first.spans().len(),
        2,
        "nothing more went to the old collector"
    );
}

/// The server span's event `name`, as (key, value) attributes.
fn event(span: &Span, name: &str) -> Option<Vec<(String, String)>> {
    span.events.iter().find(|e| e.name == name).map(|e| {
        e.attributes
            .iter()
            .map(|kv| (kv.key.clone(), crate::support::otlp::string(kv)))
            .collect()
    })
}

#[test]
fn authentication_rate_limits_and_the_cache_are_on_the_server_span() {
    let collector = Collector::start();
    let origin = Origin::start("app");
    // An authenticated route's answers are stored only when the origin says they may be shared.
    origin.set(|b| b.headers = vec![("Cache-Control".into(), "public, max-age=60".into())]);
    let gw = gateway(
        &collector.addr.to_string(),
        "",
        &one_origin(&origin),
        &format!(
            "  - {{ name: r, upstream: app, auth: {{ api_key: true }}, rate_limits: [per_ip], cache: {{ ttl: 30s }} }}\n\
             auth:\n  api_keys:\n    keys: [{{ consumer: partner, sha256: {} }}]\n\
             rate_limits:\n  policies:\n    per_ip: {{ algorithm: fixed_window, key: client_ip, limit: 100, window: 1m }}\n",
            edgegate::auth::api_key::hash_key_hex("partner-key")
        ),
    );
    for _ in 0..2 {
        let response = gw.request("GET", "/item", &[("X-API-Key", "partner-key")], b"");
        assert_eq!(response.status, 200, "{}", response.text());
    }
    assert_eq!(
        gw.request("GET", "/item", &[("X-API-Key", "wrong")], b"")
            .status,
        401
    );
    let spans = collector.wait_spans(4);
    let mut servers = server_spans(&spans);
    servers.sort_by_key(|s| s.start_time_unix_nano);
    assert_eq!(servers.len(), 3, "{servers:#?}");
    let auth = event(servers[0], "authentication").expect("an authentication event");
    assert!(
        auth.contains(&("edgegate.auth.outcome".into(), "ok".into())),
        "{auth:?}"
    );
    assert!(
        auth.contains(&("edgegate.auth.method".into(), "api_key".into())),
        "{auth:?}"
    );
    assert!(
        auth.contains(&("edgegate.consumer".into(), "partner".into())),
        "{auth:?}"
    );
    let limit = event(servers[0], "rate_limit").expect("a rate_limit event");
    assert!(limit.contains(&("edgegate.rate_limit.outcome".into(), "allowed".into())));
    assert!(limit.contains(&("edgegate.rate_limit.policy".into(), "per_ip".into())));
    assert_eq!(
        attribute(servers[0], "edgegate.cache.status").as_deref(),
        Some("MISS")
    );
    assert_eq!(
        attribute(servers[1], "edgegate.cache.status").as_deref(),
        Some("HIT")
    );
    for (server, outcome) in [(servers[0], "miss"), (servers[1], "hit")] {
        let lookup = event(server, "cache_lookup").expect("a cache_lookup event");
        assert!(
            lookup.contains(&("edgegate.cache.lookup".into(), outcome.into())),
            "{lookup:?}"
        );
        assert!(lookup
            .iter()
            .any(|(key, us)| key == "edgegate.cache.lookup_us" && us.parse::<u64>().is_ok()));
    }
    let refused = event(servers[2], "authentication").unwrap();
    assert!(
        refused.contains(&("edgegate.auth.outcome".into(), "unknown_api_key".into())),
        "{refused:?}"
    );
    assert_eq!(
        event(servers[2], "rate_limit"),
        None,
        "refused before the limits"
    );
}

#[test]
fn each_aggregation_part_is_a_client_span_its_backend_is_told_about() {
    let (collector, origin, gw) = traced(
        "",
        "  - { name: dash, cache: { ttl: 10s }, aggregate: { parts: { one: { upstream: app, path: /one }, two: { upstream: app, path: /two } } } }\n",
    );
    let answer = gw.get("/dash").json();
    let spans = collector.wait_spans(3);
    let lookup = event(server_spans(&spans)[0], "cache_lookup").expect("the route caches");
    assert!(
        lookup.contains(&("edgegate.cache.lookup".into(), "miss".into())),
        "{lookup:?}"
    );
    let server = server_spans(&spans)[0].clone();
    for part in ["one", "two"] {
        let span = spans
            .iter()
            .find(|s| s.name == format!("part {part}"))
            .unwrap_or_else(|| panic!("no span for part {part}: {spans:#?}"));
        assert_eq!(span.kind, SpanKind::Client as i32);
        assert_eq!(span.parent_span_id, server.span_id);
        assert_eq!(
            attribute(span, "edgegate.part.outcome").as_deref(),
            Some("ok")
        );
        assert_eq!(
            attribute(span, "server.address"),
            Some(origin.addr.to_string())
        );
        let told = answer["data"][part]["headers"]["traceparent"]
            .as_str()
            .unwrap();
        assert_eq!(
            told.split('-').nth(2),
            Some(hex(&span.span_id).as_str()),
            "{told}"
        );
    }
}

#[test]
fn a_b3_single_header_is_continued_when_there_is_no_traceparent() {
    let (collector, _origin, gw) =
        traced("  sample_ratio: 0\n", "  - { name: r, upstream: app }\n");
    let b3 = format!("{CLIENT_TRACE}-{CLIENT_SPAN}-1");
    let (traceparent, _) = upstream_context(&gw, "/", &[("b3", &b3)]);
    assert!(
        traceparent.starts_with(&format!("00-{CLIENT_TRACE}-")),
        "{traceparent}"
    );
    assert!(
        traceparent.ends_with("-01"),
        "the B3 sampling decision is followed"
    );
    let spans = collector.wait_spans(2);
    let server = server_spans(&spans)[0];
    assert_eq!(hex(&server.parent_span_id), CLIENT_SPAN);
}

#[test]
fn a_full_queue_drops_spans_and_counts_them() {
    let collector = Collector::start_with_delay(Duration::from_millis(500));
    let origin = Origin::start("app");
    let gw = gateway(
        &collector.addr.to_string(),
        "  max_queue: 1\n",
        &one_origin(&origin),
        "  - { name: r, upstream: app }\n",
    );
    // The exporter takes a batch every 200 ms and the collector half a second to answer it:
    // requests that end meanwhile find the one-place queue full.
    let full = "edgegate_tracing_spans_dropped_total{reason=\"queue_full\"}";
    let dropped = wait_until(Duration::from_secs(10), || {
        assert_eq!(
            gw.get("/").status,
            200,
            "requests never wait for the exporter"
        );
        gw.metric(full).unwrap_or(0.0) >= 2.0
    });
    assert!(dropped, "{}", gw.metrics());
}

#[test]
fn a_jwt_from_the_verified_token_cache_says_so() {
    let dir = crate::support::temp_dir();
    let secret = crate::auth::write(
        &dir,
        "hs.secret",
        crate::header_templates::SECRET.as_bytes(),
    );
    let collector = Collector::start();
    let origin = Origin::start("app");
    let gw = Gateway::start(&format!(
        "tracing: {{ otlp_endpoint: \"http://{}\" }}\n\
         auth:\n  jwt:\n    providers:\n      main: {{ algorithms: [HS256], secret_file: {} }}\n\
         upstreams:\n{}routes:\n  - {{ name: r, upstream: app, auth: {{ jwt: main }} }}\n",
        collector.addr,
        secret.display(),
        one_origin(&origin)
    ));
    let token = crate::header_templates::token(serde_json::json!({
        "sub": "alice",
        "exp": crate::header_templates::expires()
    }));
    for _ in 0..2 {
        assert_eq!(
            gw.request("GET", "/", &[("Authorization", &token)], b"")
                .status,
            200
        );
    }
    let spans = collector.wait_spans(4);
    let mut servers = server_spans(&spans);
    servers.sort_by_key(|s| s.start_time_unix_nano);
    let cached = |span: &Span| {
        event(span, "authentication")
            .unwrap()
            .into_iter()
            .find(|(key, _)| key == "edgegate.auth.cached")
            .map(|(_, value)| value)
    };
    assert_eq!(cached(servers[0]).as_deref(), Some("false"));
    assert_eq!(cached(servers[1]).as_deref(), Some("true"));
    let method = event(servers[0], "authentication").unwrap();
    assert!(
        method.contains(&("edgegate.auth.method".into(), "jwt:main".into())),
        "{method:?}"
    );
}
