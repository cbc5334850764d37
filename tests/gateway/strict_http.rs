//! Requests that used to walk around the gateway's checks: paths spelled to route one way and
//! resolve another, request lines and chunk framing Pingora repairs or tolerates, missing Host,
//! TRACE, both framing headers, pipelining. Each attack is sent as raw bytes.

use crate::support::{raw_exchange, Gateway, Origin, Response};
use std::time::Duration;

const QUIET: Duration = Duration::from_millis(1500);

/// `admin` is guarded by an allow list the test client is not on; everything else is public.
fn guarded(origin: &Origin, server_extra: &str) -> Gateway {
    Gateway::start_with_server(
        &format!(
            "upstreams:\n  app: {{ targets: [{{ address: \"{}\" }}] }}\n\
             routes:\n\
             \x20 - {{ name: admin, match: {{ path_prefix: /admin }}, upstream: app, ip_allow: [10.0.0.0/8] }}\n\
             \x20 - {{ name: public, upstream: app }}\n",
            origin.addr
        ),
        server_extra,
    )
}

fn target_seen(response: &Response) -> String {
    response.json()["target"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn assert_bad_request(response: &Response, status: u16, why: &str) {
    assert_eq!(response.status, status, "{why}: {}", response.text());
    let code = if status == 405 {
        "method_not_allowed"
    } else {
        "bad_request"
    };
    assert_eq!(response.json()["error"], code, "{why}");
    assert_eq!(
        response.header("content-type"),
        Some("application/json"),
        "{why}"
    );
}

#[test]
fn every_spelling_of_a_guarded_path_is_routed_to_its_guard() {
    let origin = Origin::start("app");
    let gw = guarded(&origin, "");
    for target in [
        "/admin",
        "/public/../admin",
        "//admin",
        "///admin/users",
        "/%61dmin",
        "/%61%64%6D%69%6E/",
        "/public/%2e%2e/admin",
        "/public/%2E%2E/admin/x",
        "/./admin",
        "/public/./../admin",
        "/x/y/../../admin?next=/public",
    ] {
        let response = gw.get(target);
        assert_eq!(
            response.status, 403,
            "{target} must meet the admin route's allow list"
        );
    }
    assert_eq!(
        origin.hits(),
        0,
        "no spelling of /admin reached the backend"
    );

    let response = gw.get("/public/%2e%2e/x/./y//z?q=/../admin");
    assert_eq!(response.status, 200);
    assert_eq!(
        target_seen(&response),
        "/x/y/z?q=/../admin",
        "the backend gets the normalized path and the query untouched"
    );
    assert_eq!(target_seen(&gw.get("/caf%c3%a9/%7e")), "/caf%C3%A9/~");
}

#[test]
fn encoded_slashes_nul_and_climbing_above_the_root_are_refused() {
    let origin = Origin::start("app");
    let gw = guarded(&origin, "");
    for (target, why) in [
        ("/public%2F..%2Fadmin", "encoded slash"),
        ("/a%2fb", "encoded slash, lower case"),
        ("/public%5C..%5Cadmin", "encoded backslash"),
        ("/a%00b", "encoded NUL"),
        ("/a%0d%0aX-Injected:%201", "encoded CRLF"),
        ("/..", "above the root"),
        ("/a/../../admin", "above the root"),
        ("/public/..;/admin", "dot segment with parameters"),
        ("/a%zz", "malformed escape"),
    ] {
        assert_bad_request(&gw.get(target), 400, why);
    }
    assert_eq!(origin.hits(), 0);
    assert_eq!(
        gw.metric("edgegate_bad_requests_total{reason=\"path\"}"),
        Some(9.0)
    );
}

#[test]
fn kept_encoded_slashes_stay_inside_their_segment_and_slashes_can_stay_unmerged() {
    let origin = Origin::start("app");
    let gw = guarded(
        &origin,
        "  path_encoded_slashes: keep\n  merge_slashes: false\n",
    );
    let response = gw.get("/public%2F..%2Fadmin");
    assert_eq!(response.status, 200, "one segment, not the admin route");
    assert_eq!(target_seen(&response), "/public%2F..%2Fadmin");
    assert_eq!(target_seen(&gw.get("/a%5cb")), "/a%5Cb");
    assert_eq!(
        target_seen(&gw.get("//x//y")),
        "//x//y",
        "merge_slashes: false forwards empty segments"
    );
    assert_eq!(
        gw.get("/a/../admin").status,
        403,
        "dot segments still resolve"
    );
    assert_bad_request(&gw.get("/a%00"), 400, "NUL is never kept");
}

#[test]
fn the_normalized_path_is_the_one_stripped_cached_and_logged() {
    let origin = Origin::start("app");
    origin.set(|b| {
        b.headers = vec![("Cache-Control".into(), "max-age=60".into())];
    });
    let gw = Gateway::start(&format!(
        "upstreams:\n  app: {{ targets: [{{ address: \"{}\" }}] }}\n\
         routes:\n  - {{ name: api, match: {{ path_prefix: /api }}, upstream: app, strip_prefix: /api, cache: {{ ttl: 60s }} }}\n",
        origin.addr
    ));
    let first = gw.get("/x/../api//v1/./items/?q=/./a");
    assert_eq!(first.status, 200);
    assert_eq!(target_seen(&first), "/v1/items/?q=/./a");
    assert_eq!(first.header("x-cache"), Some("MISS"));
    let second = gw.get("/api/v1/items/?q=/./a");
    assert_eq!(
        second.header("x-cache"),
        Some("HIT"),
        "both spellings share one cache entry"
    );
    assert_eq!(origin.hits(), 1);
    let log = gw.access_log(2);
    assert_eq!(log[0]["path"], "/api/v1/items/");
    assert_eq!(log[1]["path"], "/api/v1/items/");
}

#[test]
fn request_lines_pingora_would_repair_are_refused_and_the_connection_closed() {
    let origin = Origin::start("app");
    let gw = guarded(&origin, "");
    for (raw, why) in [
        (
            &b"GET /a b HTTP/1.1\r\nHost: x\r\n\r\n"[..],
            "space in the target",
        ),
        (
            b"GET /a\x01b HTTP/1.1\r\nHost: x\r\n\r\n",
            "control byte in the target",
        ),
        (
            b"GET /a\x7fb HTTP/1.1\r\nHost: x\r\n\r\n",
            "DEL in the target",
        ),
    ] {
        let exchange = raw_exchange(gw.proxy, raw, QUIET);
        assert_eq!(exchange.responses.len(), 1, "{why}: {exchange:?}");
        assert_bad_request(&exchange.responses[0], 400, why);
        assert!(exchange.closed, "{why}: the connection must close");
    }
    // What Pingora's parser cannot repair it refuses itself, with an empty 400.
    let raw = b"GET /admin HTTP/1.1 x HTTP/1.1\r\nHost: x\r\n\r\n";
    let exchange = raw_exchange(gw.proxy, raw, QUIET);
    assert_eq!(exchange.responses[0].status, 400, "two versions");
    assert!(exchange.closed);
    assert_eq!(origin.hits(), 0);
    assert_eq!(
        gw.metric("edgegate_bad_requests_total{reason=\"request_line\"}"),
        Some(3.0)
    );
}

#[test]
fn a_bare_lf_inside_a_chunk_extension_is_refused_and_nothing_reaches_the_backend() {
    let origin = Origin::start("app");
    let gw = guarded(&origin, "");
    let head = "POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n";
    for (body, why) in [
        (
            "5;ext\nfoo\r\nhello\r\n0\r\n\r\n",
            "bare LF in a chunk extension",
        ),
        ("5\nhello\r\n0\r\n\r\n", "bare LF after the chunk size"),
        (
            "5;a=\"b\nc\"\r\nhello\r\n0\r\n\r\n",
            "bare LF in a quoted extension",
        ),
        (
            "5\r\nhelloX\r\n0\r\n\r\n",
            "chunk data longer than its size",
        ),
        (
            "5\r\nhello\r\n0\r\nTrailer: x\n\r\n",
            "bare LF ending a trailer",
        ),
    ] {
        let exchange = raw_exchange(gw.proxy, format!("{head}{body}").as_bytes(), QUIET);
        assert_eq!(exchange.responses.len(), 1, "{why}: {exchange:?}");
        assert_bad_request(&exchange.responses[0], 400, why);
        assert!(exchange.closed, "{why}: the connection must close");
    }
    assert_eq!(origin.hits(), 0, "no malformed body was delivered whole");

    let fine = format!("{head}5;name=value;q=\"quoted\"\r\nhello\r\n0\r\n\r\n");
    let exchange = raw_exchange(gw.proxy, fine.as_bytes(), QUIET);
    assert_eq!(
        exchange.responses[0].status, 200,
        "well-formed extensions pass"
    );
    assert_eq!(origin.hits(), 1);
}

#[test]
fn http11_needs_a_host_and_trace_stops_at_the_gateway() {
    let origin = Origin::start("app");
    let gw = guarded(&origin, "");
    let exchange = raw_exchange(gw.proxy, b"GET /public HTTP/1.1\r\n\r\n", QUIET);
    assert_bad_request(&exchange.responses[0], 400, "no Host");
    assert!(exchange.closed);
    let exchange = raw_exchange(gw.proxy, b"GET /public HTTP/1.0\r\n\r\n", QUIET);
    assert_eq!(exchange.responses[0].status, 200, "HTTP/1.0 may omit Host");
    // The backend is spoken to in HTTP/1.1, which needs a Host: the backend's own address.
    let seen = exchange.responses[0].json();
    assert_eq!(
        seen["headers"]["host"],
        origin.addr.to_string(),
        "the HTTP/1.1 request to the backend carries a Host: {seen}"
    );
    assert!(
        seen["headers"].get("x-forwarded-host").is_none(),
        "no client Host to forward: {seen}"
    );
    let exchange = raw_exchange(gw.proxy, b"TRACE / HTTP/1.1\r\nHost: x\r\n\r\n", QUIET);
    assert_bad_request(&exchange.responses[0], 405, "TRACE");
    assert_eq!(origin.hits(), 1, "only the HTTP/1.0 request was proxied");
}

#[test]
fn a_request_with_both_transfer_encoding_and_content_length_closes_its_connection() {
    let origin = Origin::start("app");
    let gw = guarded(&origin, "");
    let raw =
        b"POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n\
                5\r\nhello\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n";
    let exchange = raw_exchange(gw.proxy, raw, QUIET);
    assert_eq!(exchange.responses.len(), 1, "{exchange:?}");
    let response = &exchange.responses[0];
    assert_eq!(response.status, 200);
    assert_eq!(response.header("connection"), Some("close"));
    assert!(
        exchange.closed,
        "RFC 9112 section 6.1: close after answering"
    );
    assert_eq!(origin.hits(), 1, "the request after it was never read");
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let origin = Origin::start("app");
    let gw = guarded(&origin, "");
    let raw = b"GET /1 HTTP/1.1\r\nHost: x\r\n\r\n\
                POST /2 HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello\
                POST /3 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n\
                GET /4 HTTP/1.1\r\nHost: x\r\n\r\n";
    let exchange = raw_exchange(gw.proxy, raw, QUIET);
    let targets: Vec<String> = exchange.responses.iter().map(target_seen).collect();
    assert_eq!(targets, ["/1", "/2", "/3", "/4"], "{exchange:?}");
    assert!(exchange.responses.iter().all(|r| r.status == 200));
    assert_eq!(exchange.responses[1].json()["body_bytes"], 5);

    let raw = b"GET /1 HTTP/1.1\r\nHost: x\r\n\r\nGET /2 x HTTP/1.1\r\nHost: x\r\n\r\nGET /3 HTTP/1.1\r\nHost: x\r\n\r\n";
    let exchange = raw_exchange(gw.proxy, raw, QUIET);
    let statuses: Vec<u16> = exchange.responses.iter().map(|r| r.status).collect();
    assert_eq!(
        statuses,
        [200, 400],
        "a broken pipelined request ends the connection"
    );
    assert!(exchange.closed);
    assert_eq!(origin.hits(), 5);
}
