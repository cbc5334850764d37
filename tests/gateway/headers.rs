//! Request ids, X-Forwarded-*, hop-by-hop headers, configured header edits, access log lines.

use crate::support::{Gateway, Origin};

fn gateway(origin: &Origin, route_extra: &str, server_extra: &str) -> Gateway {
    Gateway::start_with_server(
        &format!(
            "upstreams:\n  app:\n    targets: [{{ address: \"{}\" }}]\nroutes:\n  - {{ name: all, upstream: app{route_extra} }}\n",
            origin.addr
        ),
        server_extra,
    )
}

#[test]
fn request_ids_are_kept_when_sane_and_generated_otherwise() {
    let origin = Origin::start("app");
    let gw = gateway(&origin, "", "");
    let kept = gw.request("GET", "/", &[("X-Request-ID", "abc-123")], b"");
    assert_eq!(kept.header("x-request-id"), Some("abc-123"));
    assert_eq!(kept.json()["headers"]["x-request-id"], "abc-123");

    let replaced = gw.request("GET", "/", &[("X-Request-ID", "bad id with spaces")], b"");
    let generated = replaced.header("x-request-id").unwrap().to_string();
    assert_eq!(generated.len(), 32, "{generated}");
    assert_eq!(
        replaced.json()["headers"]["x-request-id"],
        generated.as_str()
    );

    let fresh = gw.get("/");
    let id = fresh.header("x-request-id").unwrap();
    assert_eq!(fresh.json()["headers"]["x-request-id"], id);
    assert_ne!(id, generated);
}

#[test]
fn forwarded_headers_are_appended_and_hop_by_hop_headers_dropped() {
    let origin = Origin::start("app");
    let gw = gateway(&origin, "", "");
    let response = gw.request(
        "GET",
        "/",
        &[
            ("Host", "shop.example.com"),
            ("X-Forwarded-For", "198.51.100.1"),
            ("Keep-Alive", "timeout=5"),
            ("Proxy-Connection", "keep-alive"),
            ("X-Secret-Hop", "1"),
            ("Connection", "X-Secret-Hop"),
        ],
        b"",
    );
    assert_eq!(response.status, 200);
    let seen = &response.json()["headers"];
    assert_eq!(seen["x-forwarded-for"], "198.51.100.1, 127.0.0.1");
    assert_eq!(seen["x-forwarded-proto"], "http");
    assert_eq!(seen["x-forwarded-host"], "shop.example.com");
    assert_eq!(seen["host"], "shop.example.com");
    for hop in ["keep-alive", "proxy-connection", "x-secret-hop"] {
        assert!(seen.get(hop).is_none(), "{hop} was forwarded: {seen}");
    }
}

#[test]
fn every_x_forwarded_for_line_is_kept_in_order() {
    let origin = Origin::start("app");
    let gw = gateway(&origin, "", "");
    let response = gw.request(
        "GET",
        "/",
        &[
            ("X-Forwarded-For", "198.51.100.1"),
            ("X-Forwarded-For", "198.51.100.2, 198.51.100.3"),
            ("X-Forwarded-For", "198.51.100.4"),
        ],
        b"",
    );
    assert_eq!(
        response.json()["headers"]["x-forwarded-for"],
        "198.51.100.1, 198.51.100.2, 198.51.100.3, 198.51.100.4, 127.0.0.1"
    );
}

#[test]
fn client_ip_comes_from_x_forwarded_for_only_for_trusted_peers() {
    let origin = Origin::start("app");
    let trusted = gateway(&origin, "", "  trusted_proxies: [127.0.0.0/8]\n");
    trusted.request(
        "GET",
        "/",
        &[("X-Forwarded-For", "203.0.113.50, 127.0.0.9")],
        b"",
    );
    let untrusted = gateway(&origin, "", "");
    untrusted.request("GET", "/", &[("X-Forwarded-For", "203.0.113.50")], b"");
    assert_eq!(trusted.access_log(1)[0]["client_ip"], "203.0.113.50");
    assert_eq!(untrusted.access_log(1)[0]["client_ip"], "127.0.0.1");
}

#[test]
fn configured_header_edits_apply_both_ways() {
    let origin = Origin::start("app");
    let gw = gateway(
        &origin,
        ", request_headers: { set: { X-Gateway: edgegate }, remove: [X-Internal-Debug] }, \
         response_headers: { set: { Strict-Transport-Security: max-age=31536000 }, remove: [Server] }",
        "",
    );
    let response = gw.request("GET", "/", &[("X-Internal-Debug", "1")], b"");
    let seen = &response.json()["headers"];
    assert_eq!(seen["x-gateway"], "edgegate");
    assert!(seen.get("x-internal-debug").is_none());
    assert_eq!(
        response.header("strict-transport-security"),
        Some("max-age=31536000")
    );
    assert_eq!(response.header("server"), None);
}

#[test]
fn every_request_gets_one_json_access_log_line() {
    let origin = Origin::start("app");
    let gw = gateway(&origin, "", "");
    let ok = gw.request(
        "GET",
        "/hello?q=1",
        &[("Host", "a.example"), ("X-Request-ID", "log-1")],
        b"",
    );
    assert_eq!(ok.status, 200);
    let lines = gw.access_log(1);
    assert_eq!(lines.len(), 1);
    let line = &lines[0];
    assert_eq!(line["request_id"], "log-1");
    assert_eq!(line["method"], "GET");
    assert_eq!(line["host"], "a.example");
    assert_eq!(line["path"], "/hello");
    assert_eq!(line["status"], 200);
    assert_eq!(line["route"], "all");
    assert_eq!(line["upstream"], "app");
    assert_eq!(line["backend"], origin.addr.to_string());
    assert_eq!(line["upstream_status"], 200);
    assert_eq!(line["client_ip"], "127.0.0.1");
    assert!(line["bytes"].as_u64().unwrap() > 0);
    assert!(line["duration_ms"].as_f64().unwrap() >= 0.0);
    assert!(line["upstream_duration_ms"].as_f64().is_some());
    assert!(line["time"].as_str().unwrap().ends_with('Z'));
}
