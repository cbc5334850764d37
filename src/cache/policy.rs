//! What may be stored and for how long: RFC 9111 freshness with the route's defaults, and the
//! response's `Vary`. Pure functions of headers and the clock, so they are unit-tested here.

use crate::config::{CacheSettings, RouteCacheSpec};
use http::{header, Method, StatusCode};
use pingora_cache::cache_control::{CacheControl, Cacheable, InterpretCacheControl};
use pingora_cache::filters::calculate_expires_header_time;
use pingora_cache::key::HashBinary;
use pingora_cache::{CacheMeta, NoCacheReason, RespCacheable};
use pingora_http::{RequestHeader, ResponseHeader};
use std::time::{Duration, SystemTime};

/// Why a response is not stored (beyond what Pingora's reasons say), as `NoCacheReason::Custom`.
pub const CREDENTIALS: &str = "credentials";
const STATUS: &str = "status";
const SET_COOKIE: &str = "set-cookie";
const VARY_STAR: &str = "vary-star";
const NO_FRESHNESS: &str = "no-freshness";

/// A route's caching rules, compiled once with the shared defaults folded in.
#[derive(Debug, Clone)]
pub struct RoutePolicy {
    /// Freshness when the origin gives none; zero: such responses are not stored.
    pub ttl: Duration,
    pub stale_while_revalidate: u32,
    pub stale_if_error: u32,
    /// Request headers (lower-case names) whose values are part of the key.
    pub vary: Vec<http::HeaderName>,
    get: bool,
    head: bool,
}

fn whole_seconds(duration: Duration) -> u32 {
    u32::try_from(duration.as_secs()).unwrap_or(u32::MAX)
}

impl RoutePolicy {
    /// The route's rules over the shared settings.
    pub fn new(route: &RouteCacheSpec, shared: &CacheSettings) -> Self {
        RoutePolicy {
            ttl: route.ttl,
            stale_while_revalidate: whole_seconds(shared.stale_while_revalidate),
            stale_if_error: whole_seconds(shared.stale_if_error),
            vary: route.vary.clone(),
            get: route.get,
            head: route.head,
        }
    }

    /// Whether a request with `method` may be answered from (and fill) the cache.
    pub fn allows(&self, method: &Method) -> bool {
        (self.get && method == Method::GET) || (self.head && method == Method::HEAD)
    }
}

/// Status codes stored by default (RFC 9111's heuristically cacheable set, minus the rare ones).
fn storable_status(status: StatusCode) -> bool {
    matches!(status.as_u16(), 200 | 203 | 204 | 301 | 404)
}

/// Why `response` may not be stored at all, whatever its freshness.
fn not_storable(
    response: &ResponseHeader,
    control: Option<&CacheControl>,
    credentials: bool,
) -> Option<NoCacheReason> {
    if !storable_status(response.status) {
        return Some(NoCacheReason::Custom(STATUS));
    }
    let headers = &response.headers;
    if headers.contains_key(header::SET_COOKIE) {
        return Some(NoCacheReason::Custom(SET_COOKIE));
    }
    let vary_star = headers.get_all(header::VARY).iter().any(|v| {
        v.as_bytes()
            .split(|b| *b == b',')
            .any(|f| f.trim_ascii() == b"*")
    });
    if vary_star {
        return Some(NoCacheReason::Custom(VARY_STAR));
    }
    if control.is_some_and(|c| c.is_cacheable() == Cacheable::No) {
        return Some(NoCacheReason::OriginNotCache);
    }
    if credentials && !control.is_some_and(|c| c.public() || c.has_key("s-maxage")) {
        return Some(NoCacheReason::Custom(CREDENTIALS));
    }
    None
}

/// Seconds a stale copy may serve while it revalidates, and when the origin fails: the
/// response's own directives, else the route's; none under `no-cache` ("revalidate before
/// every use").
fn stale_windows(control: Option<&CacheControl>, policy: &RoutePolicy) -> (u32, u32) {
    let no_stale = control.is_some_and(|c| c.no_cache());
    let window = |directive: Option<Duration>, default: u32| {
        if no_stale {
            0
        } else {
            directive.map_or(default, whole_seconds)
        }
    };
    (
        window(
            control.and_then(|c| c.serve_stale_while_revalidate_duration()),
            policy.stale_while_revalidate,
        ),
        window(
            control.and_then(|c| c.serve_stale_if_error_duration()),
            policy.stale_if_error,
        ),
    )
}

/// Decides whether `response` is stored and builds its metadata. `credentials`: the request
/// carried `Authorization` or passed the route's authentication, so only an explicitly shared
/// response (`public` or `s-maxage`) may be stored.
pub fn decide(
    response: &ResponseHeader,
    credentials: bool,
    policy: &RoutePolicy,
    now: SystemTime,
) -> RespCacheable {
    let control = CacheControl::from_resp_headers(response);
    if let Some(reason) = not_storable(response, control.as_ref(), credentials) {
        return RespCacheable::Uncacheable(reason);
    }
    let Some(fresh_until) = fresh_until(control.as_ref(), response, policy.ttl, now) else {
        return RespCacheable::Uncacheable(NoCacheReason::Custom(NO_FRESHNESS));
    };
    let (stale_while_revalidate, stale_if_error) = stale_windows(control.as_ref(), policy);
    let mut stored = response.clone();
    if let Some(control) = &control {
        control.strip_private_headers(&mut stored);
    }
    RespCacheable::Cacheable(CacheMeta::new(
        fresh_until,
        now,
        stale_while_revalidate,
        stale_if_error,
        stored,
    ))
}

/// `s-maxage`, `max-age` (`no-cache`: zero) less the origin's `Age`, else `Expires`, else the
/// route's ttl. `None`: no freshness information and a zero ttl.
fn fresh_until(
    control: Option<&CacheControl>,
    response: &ResponseHeader,
    default_ttl: Duration,
    now: SystemTime,
) -> Option<SystemTime> {
    if let Some(lifetime) = control.and_then(|c| c.fresh_duration()) {
        let age = response
            .headers
            .get(header::AGE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map_or(Duration::ZERO, Duration::from_secs);
        return Some(expiry(now, lifetime.saturating_sub(age)));
    }
    if let Some(expires) = calculate_expires_header_time(response) {
        return Some(expires);
    }
    (!default_ttl.is_zero()).then(|| expiry(now, default_ttl))
}

/// A zero lifetime is stale at once (stored, but revalidated before every use).
fn expiry(now: SystemTime, lifetime: Duration) -> SystemTime {
    if lifetime.is_zero() {
        now.checked_sub(Duration::from_secs(1)).unwrap_or(now)
    } else {
        now.checked_add(lifetime).unwrap_or(now)
    }
}

/// The variant of `request` under the stored response's `Vary` (`None`: it does not vary).
pub fn variance(meta: &CacheMeta, request: &RequestHeader) -> Option<HashBinary> {
    let vary = meta.headers().get_all(header::VARY);
    let mut names: Vec<String> = Vec::new();
    for value in vary.iter() {
        let Ok(text) = value.to_str() else { continue };
        for name in text.split(',') {
            let name = name.trim().to_ascii_lowercase();
            if !name.is_empty() && !names.contains(&name) {
                names.push(name);
            }
        }
    }
    if names.is_empty() {
        return None;
    }
    let mut builder = pingora_cache::VarianceBuilder::new();
    for name in names {
        let mut value = Vec::new();
        for (index, part) in request.headers.get_all(name.as_str()).iter().enumerate() {
            if index > 0 {
                value.extend_from_slice(b", ");
            }
            value.extend_from_slice(part.as_bytes());
        }
        builder.add_owned_name_value(name, value);
    }
    builder.finalize()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(ttl: u64) -> RoutePolicy {
        RoutePolicy {
            ttl: Duration::from_secs(ttl),
            stale_while_revalidate: 10,
            stale_if_error: 60,
            vary: Vec::new(),
            get: true,
            head: true,
        }
    }

    fn response(status: u16, headers: &[(&str, &str)]) -> ResponseHeader {
        let mut response = ResponseHeader::build(status, None).unwrap();
        for (name, value) in headers {
            response.append_header(name.to_string(), *value).unwrap();
        }
        response
    }

    fn stored(status: u16, headers: &[(&str, &str)], credentials: bool) -> Option<CacheMeta> {
        match decide(
            &response(status, headers),
            credentials,
            &policy(30),
            SystemTime::now(),
        ) {
            RespCacheable::Cacheable(meta) => Some(meta),
            RespCacheable::Uncacheable(_) => None,
        }
    }

    fn ttl_of(meta: &CacheMeta) -> u64 {
        meta.fresh_sec()
    }

    #[test]
    fn origin_freshness_wins_over_the_route_ttl() {
        assert_eq!(ttl_of(&stored(200, &[], false).unwrap()), 30);
        let meta = stored(200, &[("cache-control", "max-age=100")], false).unwrap();
        assert_eq!(ttl_of(&meta), 100);
        let meta = stored(
            200,
            &[("cache-control", "max-age=100, s-maxage=200")],
            false,
        )
        .unwrap();
        assert_eq!(ttl_of(&meta), 200, "s-maxage is for shared caches");
        let meta = stored(
            200,
            &[("cache-control", "max-age=100"), ("age", "40")],
            false,
        )
        .unwrap();
        assert_eq!(ttl_of(&meta), 60, "the origin's Age is subtracted");
        let in_an_hour = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(3600));
        let meta = stored(200, &[("expires", &in_an_hour)], false).unwrap();
        assert!((3590..=3600).contains(&ttl_of(&meta)));
    }

    #[test]
    fn no_store_private_cookies_and_vary_star_are_never_stored() {
        assert!(stored(200, &[("cache-control", "no-store")], false).is_none());
        assert!(stored(200, &[("cache-control", "private, max-age=60")], false).is_none());
        assert!(stored(200, &[("set-cookie", "a=b")], false).is_none());
        assert!(stored(200, &[("vary", "Accept, *")], false).is_none());
        assert!(stored(500, &[("cache-control", "max-age=60")], false).is_none());
        assert!(stored(302, &[], false).is_none());
        for status in [200, 203, 204, 301, 404] {
            assert!(stored(status, &[], false).is_some(), "{status}");
        }
    }

    #[test]
    fn no_cache_is_stored_stale_so_it_is_revalidated_every_time() {
        let meta = stored(200, &[("cache-control", "no-cache")], false).unwrap();
        assert!(!meta.is_fresh(SystemTime::now()));
        assert_eq!(meta.stale_while_revalidate_sec(), 0, "never served stale");
        assert_eq!(meta.stale_if_error_sec(), 0);
        let meta = stored(200, &[("cache-control", "max-age=0")], false).unwrap();
        assert!(!meta.is_fresh(SystemTime::now()));
    }

    #[test]
    fn credentialed_requests_need_an_explicitly_shared_response() {
        assert!(stored(200, &[], true).is_none());
        assert!(stored(200, &[("cache-control", "max-age=60")], true).is_none());
        assert!(stored(200, &[("cache-control", "public, max-age=60")], true).is_some());
        assert!(stored(200, &[("cache-control", "s-maxage=60")], true).is_some());
    }

    #[test]
    fn a_zero_route_ttl_stores_only_what_the_origin_dates() {
        let decide_zero = |headers: &[(&str, &str)]| {
            decide(
                &response(200, headers),
                false,
                &policy(0),
                SystemTime::now(),
            )
            .is_cacheable()
        };
        assert!(!decide_zero(&[]));
        assert!(decide_zero(&[("cache-control", "max-age=5")]));
    }

    #[test]
    fn stale_windows_come_from_the_response_or_the_defaults() {
        let meta = stored(200, &[], false).unwrap();
        assert_eq!(meta.stale_while_revalidate_sec(), 10);
        assert_eq!(meta.stale_if_error_sec(), 60);
        let meta = stored(
            200,
            &[(
                "cache-control",
                "max-age=1, stale-while-revalidate=7, stale-if-error=9",
            )],
            false,
        )
        .unwrap();
        assert_eq!(meta.stale_while_revalidate_sec(), 7);
        assert_eq!(meta.stale_if_error_sec(), 9);
        let meta = stored(
            200,
            &[("cache-control", "max-age=1, must-revalidate")],
            false,
        )
        .unwrap();
        assert_eq!(meta.stale_while_revalidate_sec(), 0);
    }

    #[test]
    fn variants_follow_the_response_vary() {
        let meta = stored(200, &[("vary", "Accept-Encoding")], false).unwrap();
        let request = |encoding: Option<&str>| {
            let mut request = RequestHeader::build("GET", b"/", None).unwrap();
            if let Some(encoding) = encoding {
                request.insert_header("accept-encoding", encoding).unwrap();
            }
            request
        };
        let gzip = variance(&meta, &request(Some("gzip")));
        assert!(gzip.is_some());
        assert_eq!(gzip, variance(&meta, &request(Some("gzip"))));
        assert_ne!(gzip, variance(&meta, &request(Some("br"))));
        assert_ne!(gzip, variance(&meta, &request(None)));
        let plain = stored(200, &[], false).unwrap();
        assert_eq!(variance(&plain, &request(Some("gzip"))), None);
    }
}
