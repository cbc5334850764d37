//! Issue 22's pure per-request work: rendering a part's path (three variables, percent-encoded),
//! judging a part's JSON answer, and writing the merged answer of three parts.
//! `cargo bench --bench aggregate`

#![allow(clippy::unwrap_used, clippy::expect_used)] // benchmark setup

use bytes::Bytes;
use criterion::{black_box, criterion_group, criterion_main, Criterion};
use edgegate::aggregate::answer::{assemble, classify, Data, Piece};
use edgegate::aggregate::template::{query_value, Encoding, PartTemplate, PartValues};
use http::HeaderName;
use serde_json::{Map, Value};
use std::time::Duration;

struct Caller {
    claims: Map<String, Value>,
}

impl PartValues for Caller {
    fn claims(&self) -> Option<&Map<String, Value>> {
        Some(&self.claims)
    }
    fn consumer(&self) -> Option<&str> {
        None
    }
    fn request_id(&self) -> &str {
        "0123456789abcdef0123456789abcdef"
    }
    fn query(&self, name: &str) -> Option<&str> {
        query_value("limit=5&cursor=abc%3D%3D", name)
    }
    fn path_segment(&self, _name: &str) -> Option<&str> {
        Some("7")
    }
    fn header(&self, _name: &HeaderName) -> Option<&[u8]> {
        None
    }
}

/// A ~100-byte JSON answer, as the proxybench origins send.
const PART_BODY: &[u8] =
    br#"{"ok":true,"origin":1,"service":"proxybench-origin","payload":"abcdefghijklmnopqrstuvwxyz0123456789"}"#;

fn bench_aggregate(c: &mut Criterion) {
    let caller = Caller {
        claims: serde_json::json!({"sub": "user-12345", "exp": 1})
            .as_object()
            .cloned()
            .unwrap(),
    };
    let template = PartTemplate::parse(
        "/users/{claim.sub}/orders?limit={query.limit}&cursor={query.cursor}",
        ["id"].into_iter(),
    )
    .unwrap();
    c.bench_function("aggregate/render a part path, 3 variables", |b| {
        b.iter(|| {
            let mut out = Vec::with_capacity(64);
            template
                .render(black_box(&caller), Encoding::Uri, &mut out)
                .unwrap();
            out
        })
    });
    let body = Bytes::from_static(PART_BODY);
    c.bench_function("aggregate/judge a 100-byte JSON answer", |b| {
        b.iter(|| classify(200, black_box(body.clone())))
    });
    let data = Data::Json(body.clone());
    c.bench_function("aggregate/merge three parts", |b| {
        b.iter(|| {
            let pieces = [
                Piece {
                    name: "profile",
                    data: &data,
                    reason: None,
                },
                Piece {
                    name: "orders",
                    data: &data,
                    reason: None,
                },
                Piece {
                    name: "notes",
                    data: &data,
                    reason: None,
                },
            ];
            assemble(black_box(&pieces), Duration::from_millis(3))
        })
    });
}

criterion_group!(benches, bench_aggregate);
criterion_main!(benches);
