//! Issue 21's per-request work: `Accept-Encoding` negotiation, the one pass over a response's
//! fields, compressing a 100 KiB JSON body per coding (throughput), header templates (a ready
//! value and a filled one), and a sticky canary placement.
//! `cargo bench --bench edge_policy`

#![allow(clippy::unwrap_used, clippy::expect_used)] // benchmark setup

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use edgegate::compression::{
    prepare, Coding, CompressionPolicy, MediaPattern, Negotiated, ResponseFields,
    DEFAULT_CONTENT_TYPES,
};
use edgegate::config::{CallerKey, SplitSpec, SplitTarget};
use edgegate::routing::split::SplitPlan;
use edgegate::templates::{HeaderTemplate, Values};
use http::{HeaderMap, HeaderValue, StatusCode};
use serde_json::{Map, Value};
use std::net::IpAddr;

fn policy() -> CompressionPolicy {
    CompressionPolicy {
        codings: Coding::ALL
            .iter()
            .map(|(coding, _)| (*coding, coding.default_level()))
            .collect(),
        min_size: 1024,
        content_types: DEFAULT_CONTENT_TYPES
            .iter()
            .filter_map(|text| MediaPattern::parse(text))
            .collect(),
    }
}

/// A backend's typical response head.
fn response_head() -> HeaderMap {
    let mut headers = HeaderMap::new();
    for (name, value) in [
        ("content-type", "application/json; charset=utf-8"),
        ("content-length", "102400"),
        ("etag", "\"v1\""),
        ("cache-control", "public, max-age=60"),
        ("date", "Wed, 02 Dec 2026 22:00:00 GMT"),
        ("server", "backend"),
        ("x-request-id", "0123456789abcdef0123456789abcdef"),
    ] {
        headers.insert(
            http::HeaderName::from_static(name),
            HeaderValue::from_static(value),
        );
    }
    headers
}

/// About 100 KiB of API-like JSON.
fn document() -> Vec<u8> {
    let mut records = Vec::new();
    let mut i = 0;
    while records.iter().map(String::len).sum::<usize>() < 100 * 1024 {
        records.push(format!(
            "{{\"id\":{i},\"sku\":\"SKU-{:05}\",\"name\":\"Product {i}\",\"price\":{}.5,\"tags\":[\"red\",\"large\"]}}",
            (i * 7919) % 100_000,
            i % 1000
        ));
        i += 1;
    }
    format!("[{}]", records.join(",")).into_bytes()
}

fn bench_compression(c: &mut Criterion) {
    let policy = policy();
    let mut group = c.benchmark_group("compression");
    let mut request = HeaderMap::new();
    request.insert(
        http::header::ACCEPT_ENCODING,
        HeaderValue::from_static("gzip, deflate, br, zstd"),
    );
    group.bench_function("negotiate_browser", |b| {
        b.iter(|| policy.negotiate(black_box(&request)))
    });
    let head = response_head();
    group.bench_function("response_fields", |b| {
        b.iter(|| ResponseFields::of(black_box(&head)))
    });
    let body = document();
    group.throughput(Throughput::Bytes(body.len() as u64));
    for (coding, _) in Coding::ALL {
        let level = coding.default_level();
        group.bench_function(format!("100KiB_json_{}_{level}", coding.token()), |b| {
            b.iter(|| {
                let mut headers = response_head();
                let fields = ResponseFields::of(&headers);
                let negotiated = Negotiated {
                    coding: Some((coding, level)),
                    accept_encoding_sent: true,
                };
                let encoder = prepare(
                    &policy,
                    negotiated,
                    StatusCode::OK,
                    &mut headers,
                    &fields,
                    Some(body.len() as u64),
                )
                .unwrap();
                encoder.whole(black_box(&body)).unwrap()
            })
        });
    }
    group.finish();
}

struct Request {
    claims: Map<String, Value>,
}

impl Values for Request {
    fn request_id(&self) -> &str {
        "0123456789abcdef0123456789abcdef"
    }
    fn client_ip(&self) -> Option<IpAddr> {
        Some(IpAddr::from([203, 0, 113, 7]))
    }
    fn upstream(&self) -> Option<&str> {
        Some("users-v2")
    }
    fn consumer(&self) -> Option<&str> {
        Some("alice")
    }
    fn claims(&self) -> Option<&Map<String, Value>> {
        Some(&self.claims)
    }
}

fn bench_templates(c: &mut Criterion) {
    let request = Request {
        claims: serde_json::json!({"sub": "alice", "org": {"id": "acme-7"}})
            .as_object()
            .cloned()
            .unwrap(),
    };
    let ready = HeaderTemplate::parse("edgegate {route}", "users").unwrap();
    let filled = HeaderTemplate::parse("{request_id}@{client_ip}/{claim.org.id}", "users").unwrap();
    let mut group = c.benchmark_group("templates");
    group.bench_function("ready_value", |b| {
        b.iter(|| black_box(&ready).render(&request))
    });
    group.bench_function("three_variables", |b| {
        b.iter(|| black_box(&filled).render(&request))
    });
    group.finish();
}

fn bench_split(c: &mut Criterion) {
    let spec = SplitSpec {
        arms: (0..3)
            .map(|upstream| SplitTarget {
                upstream,
                weight: [80, 15, 5][upstream],
            })
            .collect(),
        sticky: Some(CallerKey::Consumer),
        force: None,
    };
    let names = ["users-v1", "users-v2", "users-v3"];
    let plan = SplitPlan::new(&spec, |pool| names[pool]);
    let mut group = c.benchmark_group("split");
    group.bench_function("sticky_three_arms", |b| {
        b.iter(|| plan.choose(None, Some(black_box(b"consumer-4711"))))
    });
    group.bench_function("weighted", |b| b.iter(|| plan.choose(None, None)));
    group.finish();
}

criterion_group!(benches, bench_compression, bench_templates, bench_split);
criterion_main!(benches);
