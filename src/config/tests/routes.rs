//! `routes`: matching, targets, retries, header edits, IP lists.

use super::*;
use crate::config::{
    CallerKey, ForceSource, HeaderOps, HostPattern, PathMatch, RetryPolicy, RouteTarget, SplitSpec,
    SplitTarget,
};
use std::time::Duration;

/// A route document: `fields` are indented under a route named `r` on upstream `app`.
fn route(fields: &str) -> String {
    format!("routes:\n  - name: r\n    upstream: app\n{fields}")
}

#[test]
fn route_defaults() {
    let model = model("");
    let route = &model.routes[0];
    assert_eq!(route.name, "r");
    assert!(matches!(route.matcher.path, PathMatch::Any));
    assert!(
        route.matcher.hosts.is_empty()
            && route.matcher.methods.is_empty()
            && route.matcher.headers.is_empty()
    );
    assert_eq!(route.target, RouteTarget::Upstream(0));
    assert_eq!(route.timeout, None);
    assert_eq!(
        route.retries,
        RetryPolicy {
            attempts: 1,
            on_connect_failure: true,
            on_gateway_error: false,
            on_5xx: false,
            on_reset: false,
            backoff: Duration::ZERO,
        }
    );
    assert_eq!(route.max_body_size, 10 << 20);
    assert_eq!(route.request_headers, HeaderOps::default());
    assert_eq!(route.response_headers, HeaderOps::default());
    assert!(route.ip_allow.is_empty() && route.ip_deny.is_empty());
    assert_eq!(
        (route.auth.is_none(), route.cache.is_none(), route.grpc),
        (true, true, false)
    );
    assert!(route.rate_limits.is_empty());
    assert_eq!(
        route.websocket_idle_timeout,
        crate::config::DEFAULT_WEBSOCKET_IDLE_TIMEOUT
    );
}

#[test]
fn route_values_are_read() {
    let model = model(&format!(
        "upstreams:\n  app: {{ targets: [{{ address: 127.0.0.1:1 }}] }}\n  canary: {{ targets: [{{ address: 127.0.0.1:2 }}] }}\n{}",
        "routes:\n  - name: r\n    match: { hosts: [API.Example.com, \"*.example.org\"], path_prefix: /api/, methods: [GET], headers: { x-env: blue } }\n    split: [{ upstream: app, weight: 9 }, { upstream: canary, weight: 1 }]\n    timeout: 2s\n    retries: { attempts: 3, on: [5xx, reset], backoff: 10ms }\n    request_headers: { set: { x-a: b }, remove: [x-c] }\n    ip_deny: [192.0.2.0/24]\n"
    ));
    let route = &model.routes[0];
    assert_eq!(
        route.matcher.hosts,
        [
            HostPattern::Exact("api.example.com".into()),
            HostPattern::Suffix(".example.org".into())
        ]
    );
    assert!(matches!(&route.matcher.path, PathMatch::Prefix(prefix) if prefix == "/api"));
    assert_eq!(route.matcher.methods, [http::Method::GET]);
    assert_eq!(
        route.target,
        RouteTarget::Split(SplitSpec {
            arms: vec![
                SplitTarget {
                    upstream: 0,
                    weight: 9
                },
                SplitTarget {
                    upstream: 1,
                    weight: 1
                }
            ],
            sticky: None,
            force: None,
        })
    );
    assert_eq!(route.timeout, Some(Duration::from_secs(2)));
    assert_eq!(
        (
            route.retries.attempts,
            route.retries.on_connect_failure,
            route.retries.on_5xx,
            route.retries.on_reset
        ),
        (3, false, true, true)
    );
    assert_eq!(route.retries.backoff, Duration::from_millis(10));
    assert_eq!(route.request_headers.set.len(), 1);
    assert_eq!(
        route.request_headers.remove,
        [http::HeaderName::from_static("x-c")]
    );
    assert_eq!(route.ip_deny.len(), 1);
}

#[test]
fn route_problems() {
    expect_problems(&[
        ("routes: []\n", &["1:1 routes: at least one route is needed"]),
        ("routes:\n  - { name: \"my route\", upstream: app }\n", &["2:7 routes[0].name: route names must be non-empty and use only letters, digits, `-`, `_` and `.`"]),
        ("routes:\n  - { name: r, upstream: app }\n  - { name: r, upstream: app }\n", &["3:7 routes[1].name: route name `r` is used twice"]),
        ("routes:\n  - { name: r, upstream: api }\n", &["2:16 routes[0].upstream: no upstream named `api` (defined: app)"]),
        ("routes:\n  - { name: r, upstream: app, split: [{ upstream: app, weight: 1 }] }\n", &["2:31 routes[0].split: give either `upstream` or `split`, not both"]),
        ("routes:\n  - { name: r }\n", &["2:7 routes[0]: needs `upstream`, `split` or `aggregate`"]),
        ("routes:\n  - { name: r, split: [{ upstream: app, weight: 0 }, { upstream: nope, weight: 1 }] }\n", &["2:56 routes[0].split[1].upstream: no upstream named `nope` (defined: app)", "2:16 routes[0].split: the weights must add up to more than 0"]),
        ("routes:\n  - { name: r, upstream: app, strip_prefix: api }\n  - { name: s, upstream: app, strip_prefix: /api/ }\n", &["2:31 routes[0].strip_prefix: `api` must start with / and not end with / (like /api/v1)", "3:31 routes[1].strip_prefix: `/api/` must start with / and not end with / (like /api/v1)"]),
        ("routes:\n  - { name: r, upstream: app, timeout: 0 }\n  - { name: s, upstream: app, timeout: soon }\n", &["2:31 routes[0].timeout: must be greater than zero", "3:31 routes[1].timeout: duration `soon` must start with a whole number"]),
        ("routes:\n  - { name: r, upstream: app, max_body_size: 10 MB }\n", &[]),
        ("routes:\n  - { name: r, upstream: app, ip_allow: [10.0.0.0/8, 300.1.1.1], ip_deny: [x] }\n", &["2:54 routes[0].ip_allow[1]: `300.1.1.1` is not a CIDR (like 10.0.0.0/8) or an IP address", "2:76 routes[0].ip_deny[0]: `x` is not a CIDR (like 10.0.0.0/8) or an IP address"]),
        ("routes:\n  - { name: r, upstream: app, websocket: { idle_timeout: 0 } }\n", &["2:44 routes[0].websocket.idle_timeout: must be greater than zero"]),
        ("routes:\n  - { name: r, upstream: app, aggregate: {} }\n", &["2:42 routes[0].aggregate: missing field `parts`"]),
        ("routes:\n  - { name: r, upstream: app, cors: { allow_origins: [\"*\", \"https://a.test\", \"*.b.test\"], allow_headers: [\"*\"], expose_headers: [X-Id], max_age: 10m } }\n", &[]),
        ("routes:\n  - { name: r, upstream: app, cors: { allow_credentials: true, allow_origins: [\"*\", app.test, \"https://a.test/\"], allow_methods: [GET, \"B@D\"], allow_headers: [\"*\"], expose_headers: [\"bad header\"], max_age: 2d } }\n", &["2:80 routes[0].cors.allow_origins[0]: `*` cannot be combined with `allow_credentials: true` (browsers refuse it); list the origins, or `*.domain` patterns", "2:85 routes[0].cors.allow_origins[1]: `app.test`: an origin is scheme://host[:port] (https://app.example.com), `*.domain` or `*`", "2:95 routes[0].cors.allow_origins[2]: `https://a.test/`: not an origin (no path, no trailing slash: https://app.example.com)", "2:136 routes[0].cors.allow_methods[1]: `B@D` is not an HTTP method", "2:160 routes[0].cors.allow_headers[0]: `*` means any only without `allow_credentials: true`; list the names", "2:183 routes[0].cors.expose_headers[0]: `bad header` is not a valid HTTP header name", "2:198 routes[0].cors.max_age: at most 24h (browsers cap it lower anyway)"]),
        ("routes:\n  - { name: r, upstream: app, cors: { allow_methods: [\"*\", GET] } }\n", &["2:31 routes[0].cors.allow_origins: list at least one origin (`*` for any)", "2:55 routes[0].cors.allow_methods[0]: `*` already means any: list it alone"]),
    ]);
}

#[test]
fn sticky_splits_with_a_forcing_header_or_cookie() {
    let model = model(
        "upstreams:\n  v1: { targets: [{ address: 127.0.0.1:9001 }] }\n  v2: { targets: [{ address: 127.0.0.1:9002 }] }\n\
         routes:\n\
         \x20 - { name: a, split: { sticky: consumer, force: { header: X-Canary }, arms: [{ upstream: v1, weight: 90 }, { upstream: v2, weight: 10 }] } }\n\
         \x20 - { name: b, split: { sticky: \"cookie:session\", force: { cookie: canary }, arms: [{ upstream: v2, weight: 1 }] } }\n\
         \x20 - { name: c, split: { sticky: \"header:X-Device\", arms: [{ upstream: v1, weight: 1 }] } }\n\
         \x20 - { name: d, split: { sticky: client_ip, arms: [{ upstream: v1, weight: 1 }] } }\n",
    );
    let split = |index: usize| match &model.routes[index].target {
        RouteTarget::Split(split) => split.clone(),
        other => panic!("{other:?}"),
    };
    assert_eq!(
        split(0),
        SplitSpec {
            arms: vec![
                SplitTarget {
                    upstream: 0,
                    weight: 90
                },
                SplitTarget {
                    upstream: 1,
                    weight: 10
                }
            ],
            sticky: Some(CallerKey::Consumer),
            force: Some(ForceSource::Header(http::HeaderName::from_static(
                "x-canary"
            ))),
        }
    );
    assert_eq!(split(1).sticky, Some(CallerKey::Cookie("session".into())));
    assert_eq!(split(1).force, Some(ForceSource::Cookie("canary".into())));
    assert_eq!(
        split(2).sticky,
        Some(CallerKey::Header(http::HeaderName::from_static("x-device")))
    );
    assert_eq!(split(3).sticky, Some(CallerKey::ClientIp));
}

#[test]
fn split_problems() {
    expect_problems(&[
        ("routes:\n  - { name: r, split: { sticky: user, arms: [{ upstream: app, weight: 1 }] } }\n", &["2:25 routes[0].split.sticky: `user` is not one of: consumer, client_ip, cookie:NAME, header:NAME"]),
        ("routes:\n  - { name: r, split: { force: { header: a, cookie: b }, arms: [{ upstream: app, weight: 1 }] } }\n", &["2:25 routes[0].split.force: needs exactly one of `header: NAME` or `cookie: NAME`"]),
        ("routes:\n  - { name: r, split: { force: { header: \"a b\" }, arms: [{ upstream: app, weight: 0 }, { upstream: app, weight: 1 }] } }\n", &["2:90 routes[0].split.arms[1].upstream: `app` is already an arm of this split", "2:51 routes[0].split.arms: the weights must add up to more than 0", "2:34 routes[0].split.force.header: `a b` is not a valid HTTP header name"]),
        ("routes:\n  - { name: r, split: { sticky: consumer } }\n", &["2:23 routes[0].split: missing field `arms`"]),
        ("routes:\n  - { name: r, split: { arms: [{ upstream: app, weight: 1 }], stick: consumer } }\n", &["2:63 routes[0].split: unknown field `stick`, expected one of `sticky`, `force`, `arms`"]),
        ("routes:\n  - { name: r, split: nope }\n", &["2:23 routes[0].split: invalid type: string \"nope\", expected a list of arms or a mapping with `arms`"]),
    ]);
}

#[test]
fn compression_defaults_and_problems() {
    use crate::compression::{Coding, MediaPattern};
    let defaults = model(&route("    compression: {}\n"));
    let policy = defaults.routes[0].compression.clone().unwrap();
    assert_eq!(
        policy.codings,
        [(Coding::Zstd, 3), (Coding::Brotli, 4), (Coding::Gzip, 6)]
    );
    assert_eq!(policy.min_size, 1024);
    assert!(policy
        .content_types
        .contains(&MediaPattern::AnySubtype("text".into())));
    let chosen = model(&route(
        "    compression: { algorithms: [gzip, br], level: { gzip: 1, br: 11 }, min_size: 10KiB, content_types: [text/html, \"application/*+json\"] }\n",
    ));
    let policy = chosen.routes[0].compression.clone().unwrap();
    assert_eq!(policy.codings, [(Coding::Gzip, 1), (Coding::Brotli, 11)]);
    assert_eq!(policy.min_size, 10 * 1024);
    assert_eq!(
        policy.content_types,
        [
            MediaPattern::Exact("text/html".into()),
            MediaPattern::Suffix {
                kind: "application".into(),
                suffix: "+json".into()
            }
        ]
    );
    expect_problems(&[
        (&route("    compression: { algorithms: [gzip, deflate, gzip] }\n"), &["4:39 routes[0].compression.algorithms[1]: `deflate` is not one of: zstd, br, gzip", "4:48 routes[0].compression.algorithms[2]: `gzip` is listed twice"]),
        (&route("    compression: { algorithms: [] }\n"), &["4:20 routes[0].compression.algorithms: list at least one of zstd, br, gzip (or leave `compression` out)"]),
        (&route("    compression: { algorithms: [gzip], level: { gzip: 10, br: 4, lz4: 1 } }\n"), &["4:59 routes[0].compression.level.br: `br` is not among the route's algorithms, so its level would do nothing", "4:49 routes[0].compression.level.gzip: gzip levels run from 1 to 9", "4:66 routes[0].compression.level.lz4: `lz4` is not one of: zstd, br, gzip"]),
        (&route("    compression: { content_types: [json, \"text/*\"], min_size: lots }\n"), &["4:53 routes[0].compression.min_size: size `lots` must start with a whole number", "4:36 routes[0].compression.content_types[0]: `json` is not a media type (type/subtype, type/* or type/*+suffix)"]),
    ]);
}

#[test]
fn retry_and_header_problems() {
    expect_problems(&[
        (&route("    retries: { attempts: 9, on: [timeout], backoff: 1 }\n"), &["4:16 routes[0].retries.attempts: must be at most 5", "4:44 routes[0].retries.backoff: duration `1` has no unit (use ms, s, m, h or d)", "4:34 routes[0].retries.on[0]: `timeout` is not one of: connect_failure, gateway_error, 5xx, reset"]),
        (&route("    request_headers: { set: { Connection: close, \"bad name\": x, x-ok: \"a\\nb\" } }\n"), &["4:31 routes[0].request_headers.set.Connection: `Connection` is managed by the proxy and cannot be set", "4:50 routes[0].request_headers.set.bad name: `bad name` is not a valid HTTP header name", "4:65 routes[0].request_headers.set.x-ok: `a\nb` is not a valid HTTP header value"]),
        (&route("    response_headers: { remove: [content-length, \"\"] }\n"), &["4:34 routes[0].response_headers.remove[0]: `content-length` is managed by the proxy and cannot be removed", "4:50 routes[0].response_headers.remove[1]: `` is not a valid HTTP header name"]),
    ]);
}

#[test]
fn match_problems() {
    expect_problems(&[
        (&route("    match: { hosts: [a_b.example.com, \"*.*.example.com\", \"example.com:80\"] }\n"), &["4:22 routes[0].match.hosts[0]: `a_b.example.com` is not a host name or `*.suffix` (no port, no other wildcards)", "4:39 routes[0].match.hosts[1]: `*.*.example.com` is not a host name or `*.suffix` (no port, no other wildcards)", "4:58 routes[0].match.hosts[2]: `example.com:80` is not a host name or `*.suffix` (no port, no other wildcards)"]),
        (&route("    match: { path_prefix: api }\n"), &["4:14 routes[0].match.path_prefix: `api` must start with /"]),
        (&route("    match: { path_exact: api }\n"), &["4:14 routes[0].match.path_exact: `api` must start with /"]),
        (&route("    match: { path_regex: \"^/(a\" }\n"), &["4:14 routes[0].match.path_regex: invalid regex: regex parse error:\n    ^/(a\n      ^\nerror: unclosed group"]),
        (&route("    match: { path_prefix: /a, path_exact: /b }\n"), &["4:5 routes[0].match: use only one of path_prefix, path_exact, path_regex, path_template"]),
        (&route("    match: { methods: [get, POST] }\n"), &["4:24 routes[0].match.methods[0]: `get` is not an upper-case HTTP method like GET"]),
        (&route("    match: { headers: { \"bad name\": x } }\n"), &["4:25 routes[0].match.headers.bad name: `bad name` is not a valid HTTP header name"]),
    ]);
}
