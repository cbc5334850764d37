//! Response cache: the cache key, the storability decision, a hit in the store (lookup and body
//! read), and the memory an entry really takes beside what it is charged (printed once).
//! `cargo bench --bench cache`

#![allow(clippy::unwrap_used, clippy::expect_used)] // benchmark setup

#[path = "support/mod.rs"]
mod support;

use bytes::Bytes;
use criterion::{black_box, criterion_group, criterion_main, Criterion};
use edgegate::cache::policy::{decide, RoutePolicy};
use edgegate::cache::store::MemoryStore;
use edgegate::cache::{key, policy};
use edgegate::config::RouteCacheSpec;
use http::{HeaderMap, HeaderName};
use pingora_cache::storage::Storage;
use pingora_cache::trace::Span;
use pingora_cache::{CacheMeta, RespCacheable};
use pingora_http::ResponseHeader;
use std::time::{Duration, SystemTime};
use support::resident_kib;

fn route_policy() -> RoutePolicy {
    RoutePolicy::new(&RouteCacheSpec {
        ttl: Duration::from_secs(30),
        vary: vec![HeaderName::from_static("accept")],
        get: true,
        head: true,
        stale_while_revalidate: Duration::ZERO,
        stale_if_error: Duration::ZERO,
        forward_cdn_cache_control: false,
        tag_header: None,
    })
}

/// A typical API response head: five headers.
fn response(body_len: usize) -> ResponseHeader {
    let mut response = ResponseHeader::build(200, None).unwrap();
    for (name, value) in [
        ("content-type", "application/json".to_string()),
        ("content-length", body_len.to_string()),
        ("cache-control", "public, max-age=300".to_string()),
        ("etag", "\"5f2b-1a9c\"".to_string()),
        ("date", "Mon, 23 Nov 2026 18:00:00 GMT".to_string()),
    ] {
        response.insert_header(name, value).unwrap();
    }
    response
}

fn meta(body_len: usize) -> CacheMeta {
    match decide(
        &response(body_len),
        false,
        &route_policy(),
        SystemTime::now(),
    ) {
        RespCacheable::Cacheable(meta) => meta,
        RespCacheable::Uncacheable(reason) => panic!("not storable: {reason:?}"),
    }
}

fn request_headers() -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert("accept", "application/json".parse().unwrap());
    headers.insert("user-agent", "wrk".parse().unwrap());
    headers
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
}

async fn fill(store: &'static MemoryStore, target: &str, body: &Bytes, meta: &CacheMeta) {
    let key = key::build("api.example.com", target, "api", &[], &HeaderMap::new());
    let span = Span::inactive().handle();
    let mut miss = store.get_miss_handler(&key, meta, &span).await.unwrap();
    miss.write_body(body.clone(), true).await.unwrap();
    miss.finish().await.unwrap();
}

fn bench_decisions(c: &mut Criterion) {
    let policy = route_policy();
    let headers = request_headers();
    c.bench_function("cache/key", |b| {
        b.iter(|| {
            key::build(
                black_box("api.example.com"),
                black_box("/v1/users/7?fields=name"),
                "api",
                &policy.vary,
                &headers,
            )
        })
    });
    let head = response(101);
    c.bench_function("cache/decide_storable", |b| {
        b.iter(|| decide(black_box(&head), false, &policy, SystemTime::now()))
    });
    let stored = meta(101);
    let request = pingora_http::RequestHeader::build("GET", b"/", None).unwrap();
    c.bench_function("cache/variance_without_vary", |b| {
        b.iter(|| policy::variance(black_box(&stored), &request, false))
    });
}

fn bench_hit(c: &mut Criterion) {
    let rt = runtime();
    let store: &'static MemoryStore = Box::leak(Box::new(MemoryStore::new(256 << 20, 8 << 20)));
    let body = Bytes::from(vec![b'x'; 101]);
    let stored = meta(101);
    for i in 0..10_000 {
        rt.block_on(fill(store, &format!("/v1/items/{i}"), &body, &stored));
    }
    let key = key::build(
        "api.example.com",
        "/v1/items/42",
        "api",
        &[],
        &HeaderMap::new(),
    );
    let span = Span::inactive().handle();
    c.bench_function("cache/store_hit_lookup_and_read", |b| {
        b.iter(|| {
            rt.block_on(async {
                let (meta, mut hit) = store.lookup(&key, &span).await.unwrap().unwrap();
                let body = hit.read_body().await.unwrap();
                black_box((meta, body))
            })
        })
    });
}

/// What 100,000 small entries (101-byte bodies, five headers) cost in RSS beside their charge.
fn memory_per_entry(_: &mut Criterion) {
    const ENTRIES: usize = 100_000;
    let rt = runtime();
    let store: &'static MemoryStore = Box::leak(Box::new(MemoryStore::new(1 << 30, 1 << 20)));
    let body = Bytes::from(vec![b'x'; 101]);
    let stored = meta(101);
    let before = resident_kib();
    for i in 0..ENTRIES {
        rt.block_on(fill(store, &format!("/v1/items/{i:06}"), &body, &stored));
    }
    let after = resident_kib();
    let usage = store.usage();
    println!(
        "cache/memory: {} entries, {:.0} bytes each in RSS, {:.0} bytes each charged against max_size",
        usage.entries,
        (after.saturating_sub(before) * 1024) as f64 / ENTRIES as f64,
        usage.bytes as f64 / usage.entries.max(1) as f64
    );
}

criterion_group!(benches, bench_decisions, bench_hit, memory_per_entry);
criterion_main!(benches);
