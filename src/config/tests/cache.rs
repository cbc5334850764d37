//! `cache` and route `cache`.

use super::*;
use crate::config::{CacheSettings, RouteCacheSpec};
use std::time::Duration;

const MIB: usize = 1 << 20;

#[test]
fn cache_defaults() {
    assert_eq!(
        model("").cache,
        None,
        "no cache section and no caching route: no cache at all"
    );
    let model = model("routes:\n  - { name: r, upstream: app, cache: {} }\n");
    assert_eq!(
        model.cache,
        Some(CacheSettings {
            max_size: 256 * MIB,
            max_object_size: 8 * MIB,
            lock_timeout: Duration::from_secs(3),
            default_ttl: Duration::ZERO,
            stale_while_revalidate: Duration::ZERO,
            stale_if_error: Duration::ZERO,
            forward_cdn_cache_control: false,
            tag_header: http::HeaderName::from_static("cache-tag"),
            forward_tag_header: false,
            purge_channel: None,
        })
    );
    assert_eq!(
        model.routes[0].cache,
        Some(RouteCacheSpec {
            ttl: Duration::ZERO,
            vary: Vec::new(),
            get: true,
            head: true,
            stale_while_revalidate: Duration::ZERO,
            stale_if_error: Duration::ZERO,
            forward_cdn_cache_control: false,
            tag_header: Some(http::HeaderName::from_static("cache-tag")),
        }),
        "conformant defaults: no heuristic freshness and no staleness the origin did not allow"
    );
}

#[test]
fn cache_values_are_read() {
    let model = model(
        "cache:\n  max_size: 4MiB\n  default_ttl: 5s\n  stale_if_error: 1m\n  forward_cdn_cache_control: true\nroutes:\n  - { name: r, upstream: app, cache: { vary: [Accept, accept, X-Tenant], methods: [get], stale_while_revalidate: 10s } }\n",
    );
    let settings = model.cache.unwrap();
    assert_eq!(
        settings.max_object_size,
        4 * MIB,
        "the object bound never exceeds the store"
    );
    let route = model.routes[0].cache.as_ref().unwrap();
    assert_eq!(
        route.ttl,
        Duration::from_secs(5),
        "a route without ttl takes default_ttl"
    );
    assert_eq!(
        route.vary,
        [
            http::header::ACCEPT,
            http::HeaderName::from_static("x-tenant")
        ]
    );
    assert_eq!((route.get, route.head), (true, false));
    assert_eq!(
        (route.stale_while_revalidate, route.stale_if_error),
        (Duration::from_secs(10), Duration::from_secs(60)),
        "a route's grant overrides the shared one; without one it inherits"
    );
    assert!(route.forward_cdn_cache_control);
    let tagged = super::model("cache:\n  tag_header: Surrogate-Key\n  forward_tag_header: true\nroutes:\n  - { name: r, upstream: app, cache: {} }\n");
    assert_eq!(
        tagged.cache.unwrap().tag_header,
        http::HeaderName::from_static("surrogate-key")
    );
    assert_eq!(
        tagged.routes[0].cache.as_ref().unwrap().tag_header,
        None,
        "forwarded: nothing to strip"
    );
}

#[test]
fn cache_problems() {
    expect_problems(&[
        ("cache:\n  max_size: 0\n", &["2:3 cache.max_size: must be greater than zero"]),
        ("cache:\n  max_size: 1MiB\n  max_object_size: 2MiB\n", &["3:3 cache.max_object_size: 2097152 bytes is larger than cache.max_size (1048576 bytes)"]),
        ("cache:\n  max_object_size: 0\n  lock_timeout: 0\n  default_ttl: forever\n", &["2:3 cache.max_object_size: must be greater than zero", "3:3 cache.lock_timeout: must be greater than zero", "4:3 cache.default_ttl: duration `forever` must start with a whole number"]),
        ("routes:\n  - { name: r, upstream: app, cache: { methods: [POST], vary: [\"bad name\"], ttl: 1 } }\n", &["2:77 routes[0].cache.ttl: duration `1` has no unit (use ms, s, m, h or d)", "2:64 routes[0].cache.vary[0]: `bad name` is not a valid HTTP header name", "2:50 routes[0].cache.methods[0]: `POST` responses cannot be cached: use GET and/or HEAD"]),
        ("routes:\n  - { name: r, upstream: app, cache: { stale_while_revalidate: soon, stale_if_error: 1x } }\n", &["2:40 routes[0].cache.stale_while_revalidate: duration `soon` must start with a whole number", "2:70 routes[0].cache.stale_if_error: duration `1x` has unknown unit `x` (use ms, s, m, h or d)"]),
        ("cache:\n  purge_channel: edgegate:purge\n", &["2:3 cache.purge_channel: needs `rate_limits.redis` (the Redis that carries purges to every instance)"]),
        ("cache:\n  purge_channel: \"a {b}\"\nrate_limits:\n  redis: { url: \"redis://127.0.0.1/\" }\n", &["2:3 cache.purge_channel: `a {b}` must be a non-empty channel name without spaces or braces (it is used as a Redis hash tag)"]),
        ("cache:\n  tag_header: \"bad name\"\n", &["2:3 cache.tag_header: `bad name` is not a valid HTTP header name"]),
        ("routes:\n  - { name: r, upstream: app, cache: { methods: [] } }\n", &["2:40 routes[0].cache.methods: needs at least one of GET, HEAD (or omit it)"]),
    ]);
}
