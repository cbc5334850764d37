//! Route matching, strip_prefix, 404s, and the route-level checks (IP lists, body size).

use crate::support::{Gateway, Origin};

fn gateway(origin: &Origin, routes: &str) -> Gateway {
    Gateway::start(&format!(
        "upstreams:\n  app:\n    targets: [{{ address: \"{}\" }}]\nroutes:\n{routes}",
        origin.addr
    ))
}

#[test]
fn prefixes_match_on_segment_boundaries_and_misses_get_a_json_404() {
    let origin = Origin::start("app");
    let gw = gateway(
        &origin,
        "  - { name: users, match: { path_prefix: /api/users }, upstream: app }\n",
    );
    assert_eq!(gw.get("/api/users").status, 200);
    assert_eq!(gw.get("/api/users/7").status, 200);
    let miss = gw.get("/api/usersX");
    assert_eq!(miss.status, 404);
    assert_eq!(miss.header("content-type"), Some("application/json"));
    assert_eq!(
        miss.header("content-length"),
        Some(miss.body.len().to_string().as_str())
    );
    let body = miss.json();
    assert_eq!(body["error"], "not_found");
    assert_eq!(body["request_id"].as_str(), miss.header("x-request-id"));
    assert_eq!(origin.hits(), 2, "the 404 never reached the origin");
}

#[test]
fn strip_prefix_rewrites_the_path_and_keeps_the_query() {
    let origin = Origin::start("app");
    let gw = gateway(
        &origin,
        "  - { name: v1, match: { path_prefix: /api/v1 }, strip_prefix: /api/v1, upstream: app }\n",
    );
    let response = gw.get("/api/v1/users/7?expand=orders&x=1");
    assert_eq!(response.status, 200);
    assert_eq!(response.json()["target"], "/users/7?expand=orders&x=1");
    assert_eq!(gw.get("/api/v1").json()["target"], "/");
}

#[test]
fn hosts_methods_and_headers_select_routes_in_order() {
    let a = Origin::start("a");
    let b = Origin::start("b");
    let c = Origin::start("c");
    let gw = Gateway::start(&format!(
        "upstreams:\n  a: {{ targets: [{{ address: \"{}\" }}] }}\n  b: {{ targets: [{{ address: \"{}\" }}] }}\n  c: {{ targets: [{{ address: \"{}\" }}] }}\n\
         routes:\n\
         \x20 - {{ name: flagged, match: {{ headers: {{ x-flag: beta }} }}, upstream: c }}\n\
         \x20 - {{ name: api, match: {{ hosts: ['*.example.com'], methods: [POST] }}, upstream: a }}\n\
         \x20 - {{ name: exact, match: {{ hosts: [www.example.org], path_exact: /home }}, upstream: b }}\n\
         \x20 - {{ name: regex, match: {{ path_regex: '^/items/[0-9]+$' }}, upstream: b }}\n",
        a.addr, b.addr, c.addr
    ));
    let origin_of = |r: crate::support::Response| r.header("x-origin").map(str::to_string);
    assert_eq!(
        origin_of(gw.request("POST", "/x", &[("Host", "API.example.com:8080")], b"")),
        Some("a".into())
    );
    assert_eq!(
        gw.request("GET", "/x", &[("Host", "api.example.com")], b"")
            .status,
        404
    );
    assert_eq!(
        origin_of(gw.request("GET", "/home", &[("Host", "www.example.org")], b"")),
        Some("b".into())
    );
    assert_eq!(
        gw.request("GET", "/home/x", &[("Host", "www.example.org")], b"")
            .status,
        404
    );
    assert_eq!(origin_of(gw.get("/items/42")), Some("b".into()));
    assert_eq!(gw.get("/items/x").status, 404);
    assert_eq!(
        origin_of(gw.request(
            "POST",
            "/x",
            &[("Host", "api.example.com"), ("X-Flag", "beta")],
            b""
        )),
        Some("c".into()),
        "first match wins"
    );
}

#[test]
fn ip_deny_and_allow_answer_403_before_the_backend() {
    let origin = Origin::start("app");
    let gw = gateway(
        &origin,
        "  - { name: denied, match: { path_prefix: /denied }, ip_deny: [127.0.0.0/8], upstream: app }\n  \
         - { name: allowed, match: { path_prefix: /allowed }, ip_allow: [127.0.0.1], upstream: app }\n  \
         - { name: others, match: { path_prefix: /others }, ip_allow: [10.0.0.0/8], upstream: app }\n",
    );
    let denied = gw.get("/denied");
    assert_eq!(denied.status, 403);
    assert_eq!(denied.json()["error"], "forbidden");
    assert_eq!(gw.get("/allowed").status, 200);
    assert_eq!(gw.get("/others").status, 403);
    assert_eq!(origin.hits(), 1);
}

#[test]
fn bodies_over_max_body_size_get_413() {
    let origin = Origin::start("app");
    let gw = gateway(
        &origin,
        "  - { name: up, match: { path_prefix: / }, max_body_size: 1KiB, upstream: app }\n",
    );
    let ok = gw.request("POST", "/upload", &[], &[b'x'; 1024]);
    assert_eq!(ok.status, 200);
    assert_eq!(ok.json()["body_bytes"], 1024);
    let too_big = gw.request("POST", "/upload", &[], &[b'x'; 1025]);
    assert_eq!(too_big.status, 413);
    assert_eq!(too_big.json()["error"], "payload_too_large");
    assert_eq!(origin.hits(), 1);
}

#[test]
fn oversized_request_headers_get_431() {
    let origin = Origin::start("app");
    let gw = Gateway::start_with_server(
        &format!(
            "upstreams:\n  app:\n    targets: [{{ address: \"{}\" }}]\nroutes:\n  - {{ name: all, upstream: app }}\n",
            origin.addr
        ),
        "  max_request_header_size: 2KiB\n",
    );
    let big = "v".repeat(3000);
    let response = gw.request("GET", "/", &[("X-Big", &big)], b"");
    assert_eq!(response.status, 431);
    assert_eq!(response.json()["error"], "request_header_fields_too_large");
    assert_eq!(gw.request("GET", "/", &[("X-Small", "v")], b"").status, 200);
}
