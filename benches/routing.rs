//! Route matching over a 200-route table: hits early, late, by host, by regex, and a miss.
//! `cargo bench --bench routing`

#![allow(clippy::unwrap_used, clippy::expect_used)] // benchmark setup

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use edgegate::config;
use edgegate::routing::{RequestView, Router};
use http::{HeaderMap, Method};
use std::fmt::Write;
use std::path::Path;

/// 200 routes in the shapes a real gateway has: host-scoped prefixes, exact paths, regexes,
/// method and header predicates.
fn table() -> Router {
    let mut yaml = String::from(
        "listeners: [{ name: http, address: 127.0.0.1:1 }]\nupstreams: { u: { targets: [{ address: 127.0.0.1:2 }] } }\nroutes:\n",
    );
    for i in 0..200 {
        let rule = match i % 5 {
            0 => format!("{{ hosts: [svc{i}.example.com], path_prefix: /api/v1/svc{i} }}"),
            1 => format!("{{ path_prefix: /api/v2/service-{i}, methods: [GET, POST] }}"),
            2 => format!("{{ path_exact: /static/asset-{i}.js }}"),
            3 => format!("{{ path_regex: '^/users/[0-9]+/r{i}$' }}"),
            _ => format!("{{ path_prefix: /internal/{i}, headers: {{ x-team: t{i} }} }}"),
        };
        writeln!(yaml, "  - {{ name: r{i}, match: {rule}, upstream: u }}").unwrap();
    }
    let model = config::from_str(&yaml, Path::new("bench.yaml")).expect("bench table is valid");
    Router::new(&model.routes)
}

fn bench_routing(c: &mut Criterion) {
    let router = table();
    let headers = HeaderMap::new();
    let get = Method::GET;
    let view = |host: &'static str, path: &'static str| RequestView {
        method: &get,
        host,
        path,
        headers: &headers,
    };
    let cases = [
        (
            "first_route",
            view("svc0.example.com", "/api/v1/svc0/items/7"),
        ),
        (
            "middle_prefix",
            view("api.example.com", "/api/v2/service-101/orders"),
        ),
        (
            "late_exact",
            view("api.example.com", "/static/asset-197.js"),
        ),
        ("late_regex", view("api.example.com", "/users/42/r198")),
        ("miss", view("api.example.com", "/nothing/here")),
    ];
    for (name, request) in cases {
        assert_eq!(router.find(&request).is_some(), name != "miss", "{name}");
        c.bench_function(&format!("route_200/{name}"), |b| {
            b.iter(|| router.find(black_box(&request)))
        });
    }
}

criterion_group!(benches, bench_routing);
criterion_main!(benches);
