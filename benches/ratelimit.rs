//! Rate limiting: each algorithm's decision (pure), the limiter with the local store on one
//! thread and with two threads contending, and the store's memory per key (printed once).
//! `cargo bench --bench ratelimit`

#![allow(clippy::unwrap_used, clippy::expect_used)] // benchmark setup

#[path = "support/mod.rs"]
mod support;

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use edgegate::config::{KeyPart, PolicySpec, RateLimitSpec, RedisSpec, RedisTopology, StoreSpec};
use edgegate::ratelimit::algorithm::{decide, Algorithm, Quota, State};
use edgegate::ratelimit::store::LocalStore;
use edgegate::ratelimit::{KeyInput, Limiter};
use std::time::{Duration, Instant};
use support::resident_kib;

#[path = "../tests/gateway/support/redis.rs"]
#[allow(dead_code)] // shared with the tests, which also stop and restart servers
mod redis;

/// The request every limiter check in this bench is for.
fn input<'a>(ip: std::net::IpAddr, headers: &'a http::HeaderMap) -> KeyInput<'a> {
    KeyInput {
        route: 0,
        route_name: "bench",
        client_ip: Some(ip),
        identity: None,
        headers,
    }
}

const ALGORITHMS: [(&str, Algorithm); 4] = [
    ("fixed_window", Algorithm::FixedWindow),
    ("sliding_window", Algorithm::SlidingWindow),
    ("token_bucket", Algorithm::TokenBucket),
    ("leaky_bucket", Algorithm::LeakyBucket),
];

fn limiter(algorithm: Algorithm) -> Limiter {
    Limiter::new(&RateLimitSpec {
        store: StoreSpec::Local,
        redis: None,
        max_keys: 1_000_000,
        quotas: Vec::new(),
        policies: vec![PolicySpec {
            name: "bench".into(),
            algorithm,
            key: vec![KeyPart::ClientIp],
            limit: 1_000_000_000,
            window: Duration::from_secs(60),
            burst: None,
            tiers: vec![],
            shadow: false,
            sync_interval: None,
        }],
    })
}

/// The local store never awaits: a current-thread runtime drives each check to completion.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
}

fn bench_algorithms(c: &mut Criterion) {
    let quota = Quota {
        limit: 1_000_000,
        window_ms: 60_000,
        burst: 1_000_000,
    };
    for (name, algorithm) in ALGORITHMS {
        c.bench_function(&format!("ratelimit/decide/{name}"), |b| {
            let mut state = State::default();
            let mut now = 1_000_000u64;
            b.iter(|| {
                now += 1;
                let (decision, next) = decide(algorithm, quota, state, black_box(now));
                state = next;
                decision
            })
        });
    }
}

fn bench_limiter(c: &mut Criterion) {
    let headers = http::HeaderMap::new();
    let rt = runtime();
    for (name, algorithm) in [ALGORITHMS[0], ALGORITHMS[2]] {
        let limiter = limiter(algorithm);
        let mut ip = 0u32;
        c.bench_function(&format!("ratelimit/limiter/{name}/10k_clients"), |b| {
            b.iter(|| {
                ip = (ip + 1) % 10_000;
                let input = input(std::net::IpAddr::V4(ip.into()), &headers);
                rt.block_on(limiter.check(black_box(&[0]), &input)).unwrap()
            })
        });
    }
    let limiter = limiter(Algorithm::SlidingWindow);
    c.bench_function("ratelimit/limiter/sliding_window/2_threads_one_key", |b| {
        b.iter_custom(|iterations| {
            let start = Instant::now();
            std::thread::scope(|scope| {
                for _ in 0..2 {
                    scope.spawn(|| {
                        let rt = runtime();
                        let input = input("10.0.0.1".parse().unwrap(), &headers);
                        for _ in 0..iterations {
                            black_box(rt.block_on(limiter.check(&[0], &input)).unwrap());
                        }
                    });
                }
            });
            start.elapsed() / 2
        })
    });
}

/// One decision through a real `redis-server` (started here on a free port; skipped without one).
fn bench_redis(c: &mut Criterion) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let Some(server) = redis::RedisServer::start_on(port) else {
        println!("ratelimit/limiter/redis: skipped, no redis-server");
        return;
    };
    let limiter = Limiter::new(&RateLimitSpec {
        store: StoreSpec::Redis,
        redis: Some(RedisSpec {
            topology: RedisTopology::Server {
                url: format!("redis://127.0.0.1:{port}/0"),
            },
            username: None,
            password: None,
            tls: None,
            timeout: Duration::from_secs(1),
            allow_on_error: false,
        }),
        max_keys: 1_000_000,
        quotas: Vec::new(),
        policies: limiter(Algorithm::SlidingWindow).policies,
    });
    // The connection's background task needs a runtime that keeps running between checks.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let headers = http::HeaderMap::new();
    let input = input("10.0.0.1".parse().unwrap(), &headers);
    c.bench_function("ratelimit/limiter/redis/sliding_window_round_trip", |b| {
        b.iter(|| rt.block_on(limiter.check(black_box(&[0]), &input)).unwrap())
    });
    drop(server);
}

fn memory_per_key(_: &mut Criterion) {
    const KEYS: u128 = 1_000_000;
    let before = resident_kib();
    let store = LocalStore::new(KEYS as usize * 2);
    for key in 0..KEYS {
        store.update(key.wrapping_mul(0x9e37_79b9_7f4a_7c15), 1, 60_000, |s| {
            s.value = 1
        });
    }
    let after = resident_kib();
    println!(
        "ratelimit/local_store: {} keys, {:.0} bytes per key (RSS growth)",
        store.len(),
        (after.saturating_sub(before) * 1024) as f64 / KEYS as f64
    );
}

criterion_group!(
    benches,
    bench_algorithms,
    bench_limiter,
    bench_redis,
    memory_per_key
);
criterion_main!(benches);
