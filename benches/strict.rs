//! The checks every request passes before routing: path normalization (an already normal path,
//! which must not allocate, and one that needs rewriting) and the framing tracker over a typical
//! request head (whole, and dribbled in pieces).
//! `cargo bench --bench strict`

#![allow(clippy::unwrap_used, clippy::expect_used)] // benchmark setup

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use edgegate::config::{EncodedSlashes, PathRules};
use edgegate::listener::framing::{BodyFraming, Tracker};
use edgegate::routing::normalize::normalize;

const RULES: PathRules = PathRules {
    merge_slashes: true,
    encoded_slashes: EncodedSlashes::Reject,
};

/// What wrk and browsers send: a request line and a handful of headers.
const HEAD: &[u8] = b"GET /api/v1/users/7/orders?limit=10 HTTP/1.1\r\nHost: api.example.com\r\n\
User-Agent: Mozilla/5.0 (X11; Linux x86_64) Gecko/20100101 Firefox/121.0\r\n\
Accept: application/json\r\nAccept-Encoding: gzip, deflate, br\r\n\
Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJl\r\n\
Connection: keep-alive\r\n\r\n";

fn bench_paths(c: &mut Criterion) {
    let mut group = c.benchmark_group("normalize");
    group.bench_function("normal", |b| {
        b.iter(|| normalize(black_box(b"/api/v1/users/7/orders"), RULES))
    });
    group.bench_function("encoded_normal", |b| {
        b.iter(|| normalize(black_box(b"/files/annual%20report%E2%82%AC.pdf"), RULES))
    });
    group.bench_function("rewritten", |b| {
        b.iter(|| normalize(black_box(b"/api//v1/./users/%37/../7/orders"), RULES))
    });
    group.finish();
}

fn bench_framing(c: &mut Criterion) {
    let mut group = c.benchmark_group("framing");
    let mut tracker = Tracker::new();
    group.bench_function("whole_head", |b| {
        b.iter(|| {
            tracker.feed(black_box(HEAD)).unwrap();
            tracker.announce(HEAD.len(), BodyFraming::None).unwrap();
        })
    });
    let small = b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n";
    let mut tracker = Tracker::new();
    group.bench_function("small_head", |b| {
        b.iter(|| {
            tracker.feed(black_box(small)).unwrap();
            tracker.announce(small.len(), BodyFraming::None).unwrap();
        })
    });
    let mut tracker = Tracker::new();
    group.bench_function("head_in_16_byte_pieces", |b| {
        b.iter(|| {
            for piece in HEAD.chunks(16) {
                tracker.feed(black_box(piece)).unwrap();
            }
            tracker.announce(HEAD.len(), BodyFraming::None).unwrap();
        })
    });
    let body = b"5;name=value\r\nhello\r\n400\r\n"
        .iter()
        .copied()
        .chain(std::iter::repeat_n(b'x', 1024))
        .chain(b"\r\n0\r\n\r\n".iter().copied())
        .collect::<Vec<u8>>();
    let post = b"POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n";
    let mut tracker = Tracker::new();
    group.bench_function("chunked_1k_body", |b| {
        b.iter(|| {
            tracker.feed(black_box(post)).unwrap();
            tracker.announce(post.len(), BodyFraming::Chunked).unwrap();
            tracker.feed(black_box(&body)).unwrap();
        })
    });
    group.finish();
}

criterion_group!(benches, bench_paths, bench_framing);
criterion_main!(benches);
