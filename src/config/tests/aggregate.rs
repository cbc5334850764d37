//! `routes[].aggregate` and `match.path_template`.

use super::*;
use crate::config::{PathMatch, RouteTarget};
use std::time::Duration;

const UPSTREAMS: &str = "upstreams:\n  app: { targets: [{ address: 127.0.0.1:9001 }] }\n  users: { targets: [{ address: 127.0.0.1:9002 }] }\n";

#[test]
fn parts_keep_their_order_and_defaults() {
    let model = model(&format!(
        "{UPSTREAMS}routes:\n\
         \x20 - name: dash\n\
         \x20   match: {{ path_template: \"/users/{{id}}/dashboard\" }}\n\
         \x20   timeout: 3s\n\
         \x20   aggregate:\n\
         \x20     parts:\n\
         \x20       zeta: {{ upstream: users, path: \"/users/{{path.id}}\" }}\n\
         \x20       alpha: {{ upstream: app, path: \"/a?q={{query.q}}\", method: POST, required: true, timeout: 500ms, headers: {{ X-Tenant: \"{{claim.tenant}}\" }} }}\n"
    ));
    let route = &model.routes[0];
    assert!(
        matches!(&route.matcher.path, PathMatch::Template(t) if t.as_str() == "/users/{id}/dashboard")
    );
    let RouteTarget::Aggregate(aggregate) = &route.target else {
        panic!("not an aggregation route: {:?}", route.target);
    };
    assert_eq!(
        aggregate.timeout,
        Duration::from_secs(3),
        "the route's timeout"
    );
    assert_eq!(aggregate.max_part_size, 1 << 20);
    let names: Vec<&str> = aggregate.parts.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["zeta", "alpha"], "configuration order");
    let (zeta, alpha) = (&aggregate.parts[0], &aggregate.parts[1]);
    assert_eq!(
        (
            zeta.upstream,
            zeta.method.as_str(),
            zeta.required,
            zeta.timeout
        ),
        (1, "GET", false, None)
    );
    assert_eq!(
        (
            alpha.upstream,
            alpha.method.as_str(),
            alpha.required,
            alpha.timeout
        ),
        (0, "POST", true, Some(Duration::from_millis(500)))
    );
    assert_eq!(alpha.headers[0].0.as_str(), "x-tenant");
}

#[test]
fn the_aggregate_timeout_wins_and_a_default_bounds_the_rest() {
    let model = model(&format!(
        "{UPSTREAMS}routes:\n\
         \x20 - {{ name: a, timeout: 3s, aggregate: {{ timeout: 750ms, max_part_size: 64KiB, parts: {{ p: {{ upstream: app, path: / }} }} }} }}\n\
         \x20 - {{ name: b, aggregate: {{ parts: {{ p: {{ upstream: app, path: / }} }} }} }}\n"
    ));
    let timeouts: Vec<(Duration, usize)> = model
        .routes
        .iter()
        .map(|route| match &route.target {
            RouteTarget::Aggregate(a) => (a.timeout, a.max_part_size),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        timeouts,
        [
            (Duration::from_millis(750), 64 << 10),
            (Duration::from_secs(10), 1 << 20)
        ]
    );
}

#[test]
fn aggregation_problems() {
    let case = |routes: &str| format!("{UPSTREAMS}routes:\n{routes}");
    let cases: &[(String, &[&str])] = &[
        (
            case("  - { name: r, upstream: app, aggregate: { parts: { p: { upstream: app, path: / } } } }\n"),
            &["5:31 routes[0].aggregate: an aggregation route has no `upstream` or `split`: each part names its own"],
        ),
        (
            case("  - { name: r, aggregate: { parts: {} } }\n"),
            &["5:29 routes[0].aggregate.parts: needs at least one part"],
        ),
        (
            case("  - { name: r, aggregate: { parts: { p: { upstream: orders, path: / } } } }\n"),
            &["5:43 routes[0].aggregate.parts.p.upstream: no upstream named `orders` (defined: app, users)"],
        ),
        (
            case("  - { name: r, aggregate: { parts: { p: { upstream: app, path: \"/u/{path.id}\" } } } }\n"),
            &["5:58 routes[0].aggregate.parts.p.path: `{path.id}` names no segment of the route's match.path_template"],
        ),
        (
            case("  - { name: r, aggregate: { parts: { p: { upstream: app, path: \"/u v/{claim.sub}\" } } } }\n"),
            &["5:58 routes[0].aggregate.parts.p.path: `/u v/{claim.sub}` is not a valid request path (spaces and other characters outside a URI must be percent-encoded)"],
        ),
        (
            case("  - { name: r, aggregate: { parts: { p: { upstream: app, path: \"/u/{claim.sub\" } } } }\n"),
            &["5:58 routes[0].aggregate.parts.p.path: `{` opens a variable that is never closed with `}` (write {{ for a literal `{`)"],
        ),
        (
            case("  - { name: r, aggregate: { parts: { p: { upstream: app, path: \"/u/{user}\" } } } }\n"),
            &["5:58 routes[0].aggregate.parts.p.path: `{user}` is not a part variable; use one of {claim.NAME}, {query.NAME}, {path.NAME}, {header.NAME}, {consumer}, {request_id} (write {{ for a literal `{`)"],
        ),
        (
            case("  - { name: r, aggregate: { parts: { p: { upstream: app, path: u, method: get, timeout: 0 } } } }\n"),
            &["5:58 routes[0].aggregate.parts.p.path: `u` must start with /", "5:67 routes[0].aggregate.parts.p.method: `get` is not an upper-case HTTP method", "5:80 routes[0].aggregate.parts.p.timeout: must be greater than zero"],
        ),
        (
            case("  - { name: r, strip_prefix: /api, grpc: true, aggregate: { parts: { p: { upstream: app, path: /, headers: { Connection: x } } } } }\n"),
            &["5:16 routes[0].strip_prefix: an aggregation route forwards no path; each part gives its own", "5:36 routes[0].grpc: an aggregation route answers JSON, not gRPC", "5:110 routes[0].aggregate.parts.p.headers.Connection: `Connection` is managed by the proxy and cannot be set"],
        ),
        (
            case("  - { name: r, match: { path_template: \"/u/{a}/{a}\" }, upstream: app }\n"),
            &["5:25 routes[0].match.path_template: `/u/{a}/{a}`: `{a}` names two segments"],
        ),
        (
            case("  - { name: r, match: { path_template: \"/u/{id}\", path_prefix: /u }, upstream: app }\n"),
            &["5:16 routes[0].match: use only one of path_prefix, path_exact, path_regex, path_template"],
        ),
    ];
    let wrong: Vec<String> = cases
        .iter()
        .filter(|(text, expected)| problems(text) != *expected)
        .map(|(text, _)| format!("{text}{:#?}", problems(text)))
        .collect();
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}
