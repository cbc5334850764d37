//! What may be stored and for how long: RFC 9111 freshness with the route's defaults, and the
//! response's `Vary`. Pure functions of headers and the clock, so they are unit-tested here.

use crate::config::RouteCacheSpec;
use http::{header, Method, StatusCode};
use pingora_cache::cache_control::{CacheControl, Cacheable, InterpretCacheControl};
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
    /// Heuristic freshness when the origin gives none; zero: such responses are not stored.
    pub ttl: Duration,
    /// Seconds of staleness the operator grants on top of what the origin allows.
    pub stale_while_revalidate: u32,
    pub stale_if_error: u32,
    /// Request headers (lower-case names) whose values are part of the key.
    pub vary: Vec<http::HeaderName>,
    /// `CDN-Cache-Control` and `Edgegate-Cache-Control` reach clients.
    pub forward_cdn_cache_control: bool,
    /// The purge-tag header to remove before clients (`None`: forwarded).
    pub strip_tag_header: Option<http::HeaderName>,
    get: bool,
    head: bool,
}

fn whole_seconds(duration: Duration) -> u32 {
    u32::try_from(duration.as_secs()).unwrap_or(u32::MAX)
}

impl RoutePolicy {
    /// The route's rules (the shared settings are folded into them at load).
    pub fn new(route: &RouteCacheSpec) -> Self {
        RoutePolicy {
            ttl: route.ttl,
            stale_while_revalidate: whole_seconds(route.stale_while_revalidate),
            stale_if_error: whole_seconds(route.stale_if_error),
            vary: route.vary.clone(),
            forward_cdn_cache_control: route.forward_cdn_cache_control,
            strip_tag_header: route.tag_header.clone(),
            get: route.get,
            head: route.head,
        }
    }

    /// Whether a request with `method` may be answered from (and fill) the cache.
    pub fn allows(&self, method: &Method) -> bool {
        (self.get && method == Method::GET) || (self.head && method == Method::HEAD)
    }
}

/// Final statuses a response may be stored with: any, given explicit freshness, but a partial
/// 206 (ranges are served from the whole object) and a 304 (no body of its own).
fn storable_status(status: StatusCode) -> bool {
    !status.is_informational() && !matches!(status.as_u16(), 206 | 304)
}

/// Statuses that may be stored with heuristic freshness (RFC 9110 §15.1, "heuristically
/// cacheable"), 206 aside.
fn heuristically_cacheable(status: StatusCode) -> bool {
    matches!(
        status.as_u16(),
        200 | 203 | 204 | 300 | 301 | 308 | 404 | 405 | 410 | 414 | 501
    )
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
    // RFC 9111 §3.5: a shared cache stores an answer to an authorized request only when the
    // origin says it may be shared.
    if credentials
        && !control.is_some_and(|c| c.public() || c.must_revalidate() || c.has_key("s-maxage"))
    {
        return Some(NoCacheReason::Custom(CREDENTIALS));
    }
    None
}

/// Seconds a stale copy may serve while it revalidates, and when the origin fails (RFC 9111
/// §4.2.4): what the origin allows (RFC 5861 directives), or more when the operator granted it,
/// except where the origin forbids stale answers (`must-revalidate`, `proxy-revalidate`,
/// `s-maxage`); `no-cache` ("revalidate before every use") rules out revalidating in the
/// background.
fn stale_windows(control: Option<&CacheControl>, policy: &RoutePolicy) -> (u32, u32) {
    let Some(control) = control else {
        return (policy.stale_while_revalidate, policy.stale_if_error);
    };
    let forbidden = control.no_cache()
        || control.must_revalidate()
        || control.proxy_revalidate()
        || control.has_key("s-maxage");
    let window = |origin: Option<Duration>, grant: u32| {
        let origin = origin.map_or(0, whole_seconds);
        if forbidden {
            origin
        } else {
            origin.max(grant)
        }
    };
    let while_revalidating = if control.no_cache() {
        0
    } else {
        window(
            control.serve_stale_while_revalidate_duration(),
            policy.stale_while_revalidate,
        )
    };
    let if_error = window(
        control.serve_stale_if_error_duration(),
        policy.stale_if_error,
    );
    (while_revalidating, if_error)
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
    // RFC 9213 §2.2: a valid targeted field replaces Cache-Control and Expires for this cache.
    let targeted = targeted_control(response);
    let use_expires = targeted.is_none();
    let control = targeted.or_else(|| CacheControl::from_resp_headers(response));
    if let Some(reason) = not_storable(response, control.as_ref(), credentials) {
        return RespCacheable::Uncacheable(reason);
    }
    let Some(freshness) = freshness(control.as_ref(), response, policy.ttl, use_expires, now)
    else {
        return RespCacheable::Uncacheable(NoCacheReason::Custom(NO_FRESHNESS));
    };
    let (stale_while_revalidate, stale_if_error) = stale_windows(control.as_ref(), policy);
    let mut stored = response.clone();
    strip_stored_hop_by_hop(&mut stored);
    if let Some(control) = &control {
        control.strip_private_headers(&mut stored);
    }
    RespCacheable::Cacheable(CacheMeta::new(
        freshness.fresh_until,
        freshness.created,
        stale_while_revalidate,
        stale_if_error,
        stored,
    ))
}

/// The targeted cache-control fields this cache obeys (RFC 9213), most specific first.
pub const TARGETED_FIELDS: [header::HeaderName; 2] = [
    header::HeaderName::from_static("edgegate-cache-control"),
    header::HeaderName::from_static("cdn-cache-control"),
];

/// The first targeted field with a valid value, read as cache directives.
fn targeted_control(response: &ResponseHeader) -> Option<CacheControl> {
    TARGETED_FIELDS.iter().find_map(|name| {
        let value = response.headers.get(name)?;
        let valid = value.to_str().is_ok_and(is_dictionary);
        valid
            .then(|| CacheControl::from_headers_named(name.as_str(), &response.headers))
            .flatten()
    })
}

/// A Structured Field Dictionary of cache directives (RFC 8941 §3.2, as RFC 9213 §2.1 asks):
/// comma-separated `key` or `key=value` members, keys lower-case tokens.
fn is_dictionary(text: &str) -> bool {
    let text = text.trim();
    !text.is_empty()
        && text.split(',').all(|member| {
            let member = member.trim();
            let key = member.split_once('=').map_or(member, |(key, _)| key);
            !key.is_empty()
                && key.starts_with(|c: char| c.is_ascii_lowercase() || c == '*')
                && key
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_-.*".contains(&b))
        })
}

/// When a stored response was made and until when it is fresh, by RFC 9111 §4.2.
struct Freshness {
    /// Now less the response's age when it arrived, so that the stored age (and the `Age` of a
    /// hit) includes the time it spent in caches before ours.
    created: SystemTime,
    fresh_until: SystemTime,
}

/// The response's freshness: explicit (`s-maxage`, `max-age`, `no-cache` as zero, else
/// `Expires` - `Date`), else the route's heuristic ttl for heuristically cacheable statuses.
/// `None`: nothing says it may be reused.
fn freshness(
    control: Option<&CacheControl>,
    response: &ResponseHeader,
    heuristic_ttl: Duration,
    use_expires: bool,
    now: SystemTime,
) -> Option<Freshness> {
    let headers = &response.headers;
    let date = headers.get(header::DATE).and_then(http_date);
    let expires = headers.get(header::EXPIRES).filter(|_| use_expires);
    let lifetime = match control.and_then(|c| c.fresh_duration()) {
        Some(lifetime) => lifetime,
        None => match expires {
            // An invalid Expires ("0") means already expired (RFC 9111 §5.3).
            Some(expires) => http_date(expires).map_or(Duration::ZERO, |expires| {
                expires
                    .duration_since(date.unwrap_or(now))
                    .unwrap_or_default()
            }),
            None if !heuristic_ttl.is_zero() && heuristically_cacheable(response.status) => {
                heuristic_ttl
            }
            None => return None,
        },
    };
    // §4.2.3: the age it arrived with is the larger of what the origin's clock implies
    // (apparent age) and what the caches before us counted (`Age`).
    let apparent_age = date.map_or(Duration::ZERO, |date| {
        now.duration_since(date).unwrap_or_default()
    });
    let initial_age = apparent_age.max(age_value(response).unwrap_or_default());
    let created = now.checked_sub(initial_age).unwrap_or(now);
    let fresh_until = match created.checked_add(lifetime) {
        Some(until) if until > now => until,
        // Stale at once: stored, but revalidated before every use.
        _ => now.checked_sub(Duration::from_secs(1)).unwrap_or(now),
    };
    Some(Freshness {
        created,
        fresh_until,
    })
}

/// The `Age` field: its first member when a list was sent (RFC 9111 §5.1).
pub fn age_value(response: &ResponseHeader) -> Option<Duration> {
    let value = response.headers.get(header::AGE)?.to_str().ok()?;
    let first = value.split(',').next()?.trim();
    first.parse::<u64>().ok().map(Duration::from_secs)
}

fn http_date(value: &http::HeaderValue) -> Option<SystemTime> {
    httpdate::parse_http_date(value.to_str().ok()?.trim()).ok()
}

/// Header fields a 304 never replaces in the stored response: its framing, and `Vary`, which
/// chose the stored variant (Pingora keeps the variance across a 304).
const KEPT_ON_UPDATE: [header::HeaderName; 3] = [
    header::CONTENT_LENGTH,
    header::TRANSFER_ENCODING,
    header::VARY,
];

/// RFC 9111 §3.2: every field of the 304 replaces the stored field of that name, but the
/// framing and the hop-by-hop fields.
pub fn update_stored_headers(stored: &mut ResponseHeader, update: &http::HeaderMap) {
    let mut update = update.clone();
    strip_hop_by_hop(&mut update);
    for name in update.keys() {
        if KEPT_ON_UPDATE.contains(name) {
            continue;
        }
        let _ = stored.remove_header(name);
        for value in update.get_all(name) {
            if stored.append_header(name.clone(), value.clone()).is_err() {
                break;
            }
        }
    }
}

/// Header fields that concern one connection only (RFC 9110 §7.6.1): `Connection` and the
/// fields it names. Removed from responses before they are stored (RFC 9111 §3.1).
pub fn strip_hop_by_hop(headers: &mut http::HeaderMap) {
    strip_connection_options(headers);
    headers.remove(header::CONNECTION);
}

static KEEP_ALIVE: header::HeaderName = header::HeaderName::from_static("keep-alive");

/// Removes the fields `Connection` names, keeping `Connection` itself (for a response on its
/// way to the client, where Pingora writes its own `Connection`, or drops it on HTTP/2).
/// The usual `Connection: keep-alive` costs one lookup and no allocation.
pub fn strip_connection_options(headers: &mut http::HeaderMap) {
    let mut lines = headers.get_all(header::CONNECTION).iter();
    let Some(first) = lines.next() else {
        return;
    };
    if lines.next().is_none() {
        let value = first.as_bytes();
        if value.eq_ignore_ascii_case(b"keep-alive") {
            headers.remove(&KEEP_ALIVE);
            return;
        }
        if value.eq_ignore_ascii_case(b"close") {
            return;
        }
    }
    for name in connection_options(headers) {
        if name.eq_ignore_ascii_case("keep-alive") {
            headers.remove(&KEEP_ALIVE);
        } else {
            headers.remove(name.as_str());
        }
    }
}

/// The field names `Connection` lists, but `close` (an option, not a field).
fn connection_options(headers: &http::HeaderMap) -> Vec<String> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .filter(|token| !token.is_empty() && !token.eq_ignore_ascii_case("close"))
        .map(str::to_string)
        .collect()
}

/// [`strip_hop_by_hop`] on a response header (its name map kept in step).
fn strip_stored_hop_by_hop(stored: &mut ResponseHeader) {
    for name in connection_options(&stored.headers) {
        let _ = stored.remove_header(name.as_str());
    }
    let _ = stored.remove_header(&header::CONNECTION);
}

/// The variant of `request` under the stored response's `Vary` (`None`: it does not vary);
/// `Accept-Encoding` counts only when the origin saw it.
pub fn variance(
    meta: &CacheMeta,
    request: &RequestHeader,
    origin_without_accept_encoding: bool,
) -> Option<HashBinary> {
    let vary = meta.headers().get_all(header::VARY);
    let mut names: Vec<String> = Vec::new();
    for value in vary.iter() {
        let Ok(text) = value.to_str() else { continue };
        for name in text.split(',') {
            let name = name.trim().to_ascii_lowercase();
            let ignored = origin_without_accept_encoding && name == "accept-encoding";
            if !name.is_empty() && !ignored && !names.contains(&name) {
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
        granted(ttl, 0, 0)
    }

    /// A route policy whose operator grants `swr` and `sie` seconds of staleness.
    fn granted(ttl: u64, swr: u32, sie: u32) -> RoutePolicy {
        RoutePolicy {
            ttl: Duration::from_secs(ttl),
            stale_while_revalidate: swr,
            stale_if_error: sie,
            vary: Vec::new(),
            forward_cdn_cache_control: false,
            strip_tag_header: None,
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

    fn stored_with(
        status: u16,
        headers: &[(&str, &str)],
        credentials: bool,
        policy: &RoutePolicy,
    ) -> Option<CacheMeta> {
        match decide(
            &response(status, headers),
            credentials,
            policy,
            SystemTime::now(),
        ) {
            RespCacheable::Cacheable(meta) => Some(meta),
            RespCacheable::Uncacheable(_) => None,
        }
    }

    fn stored(status: u16, headers: &[(&str, &str)], credentials: bool) -> Option<CacheMeta> {
        stored_with(status, headers, credentials, &policy(30))
    }

    fn ttl_of(meta: &CacheMeta) -> u64 {
        meta.fresh_sec()
    }

    /// Seconds of freshness left now (negative: stale).
    fn left(meta: &CacheMeta) -> i64 {
        match meta.fresh_until().duration_since(SystemTime::now()) {
            Ok(left) => left.as_secs_f64().round() as i64,
            Err(behind) => -(behind.duration().as_secs_f64().round() as i64),
        }
    }

    fn date(offset_secs: i64) -> String {
        let now = SystemTime::now();
        let at = if offset_secs >= 0 {
            now + Duration::from_secs(offset_secs as u64)
        } else {
            now - Duration::from_secs(offset_secs.unsigned_abs())
        };
        httpdate::fmt_http_date(at)
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
        let in_an_hour = date(3600);
        let meta = stored(200, &[("expires", &in_an_hour)], false).unwrap();
        assert!((3590..=3600).contains(&left(&meta)));
    }

    #[test]
    fn the_age_a_response_arrives_with_counts_rfc_9111_4_2_3() {
        let meta = stored(
            200,
            &[("cache-control", "max-age=100"), ("age", "40")],
            false,
        )
        .unwrap();
        assert_eq!(ttl_of(&meta), 100);
        assert_eq!(
            left(&meta),
            60,
            "40 of its 100 seconds were spent before us"
        );
        assert_eq!(
            meta.age().as_secs(),
            40,
            "a hit's Age continues from the origin's"
        );
        let meta = stored(
            200,
            &[("cache-control", "max-age=100"), ("age", "7200, 0")],
            false,
        )
        .unwrap();
        assert_eq!(
            meta.age().as_secs(),
            7200,
            "a list counts by its first member"
        );
        assert!(!meta.is_fresh(SystemTime::now()));
        // A Date in the past is an apparent age even without Age.
        let meta = stored(
            200,
            &[("cache-control", "max-age=100"), ("date", &date(-30))],
            false,
        )
        .unwrap();
        // HTTP dates count whole seconds: one either way.
        assert!(
            (30..=31).contains(&meta.age().as_secs()),
            "{:?}",
            meta.age()
        );
        assert!((69..=70).contains(&left(&meta)), "{}", left(&meta));
    }

    #[test]
    fn expires_counts_from_the_response_date_not_our_clock() {
        // Date 400 s ahead of us, Expires 300 s ahead: the origin gave it -100 s of life.
        let meta = stored(200, &[("date", &date(400)), ("expires", &date(300))], false).unwrap();
        assert!(
            !meta.is_fresh(SystemTime::now()),
            "expired by the origin's own clock"
        );
        // Date 100 s behind, Expires 300 s after it: 200 s left.
        let meta = stored(
            200,
            &[("date", &date(-100)), ("expires", &date(200))],
            false,
        )
        .unwrap();
        assert!(
            (100..=101).contains(&meta.age().as_secs()),
            "{:?}",
            meta.age()
        );
        assert!((199..=200).contains(&left(&meta)), "{}", left(&meta));
        let meta = stored(200, &[("expires", "0")], false).unwrap();
        assert!(
            !meta.is_fresh(SystemTime::now()),
            "an invalid Expires is in the past"
        );
    }

    #[test]
    fn statuses_follow_rfc_9110_15_1() {
        for status in [200, 203, 204, 300, 301, 308, 404, 405, 410, 414, 501] {
            assert!(
                stored(status, &[], false).is_some(),
                "{status}: heuristically cacheable"
            );
        }
        for status in [201, 302, 307, 400, 403, 500, 503] {
            assert!(
                stored(status, &[], false).is_none(),
                "{status}: not without explicit freshness"
            );
            let explicit = stored(status, &[("cache-control", "max-age=60")], false);
            assert!(
                explicit.is_some(),
                "{status}: stored with explicit freshness"
            );
        }
        assert!(stored(206, &[("cache-control", "max-age=60")], false).is_none());
        assert!(stored(304, &[("cache-control", "max-age=60")], false).is_none());
    }

    #[test]
    fn no_store_private_cookies_and_vary_star_are_never_stored() {
        assert!(stored(200, &[("cache-control", "no-store")], false).is_none());
        assert!(stored(200, &[("cache-control", "private, max-age=60")], false).is_none());
        assert!(stored(200, &[("set-cookie", "a=b")], false).is_none());
        assert!(stored(200, &[("vary", "Accept, *")], false).is_none());
    }

    #[test]
    fn no_cache_is_stored_stale_so_it_is_revalidated_every_time() {
        let generous = granted(30, 100, 100);
        let meta = stored_with(200, &[("cache-control", "no-cache")], false, &generous).unwrap();
        assert!(!meta.is_fresh(SystemTime::now()));
        assert_eq!(meta.stale_while_revalidate_sec(), 0, "never served stale");
        assert_eq!(meta.stale_if_error_sec(), 0);
        let meta = stored(200, &[("cache-control", "max-age=0")], false).unwrap();
        assert!(!meta.is_fresh(SystemTime::now()));
        assert_eq!(
            meta.stale_while_revalidate_sec(),
            0,
            "no staleness nobody allowed"
        );
    }

    #[test]
    fn credentialed_requests_need_an_explicitly_shared_response() {
        assert!(stored(200, &[], true).is_none());
        assert!(stored(200, &[("cache-control", "max-age=60")], true).is_none());
        assert!(stored(200, &[("cache-control", "public, max-age=60")], true).is_some());
        assert!(stored(200, &[("cache-control", "s-maxage=60")], true).is_some());
        assert!(stored(
            200,
            &[("cache-control", "max-age=60, must-revalidate")],
            true
        )
        .is_some());
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
    fn staleness_is_what_the_origin_allows_or_the_operator_grants() {
        let meta = stored(200, &[("cache-control", "max-age=1")], false).unwrap();
        assert_eq!(
            (meta.stale_while_revalidate_sec(), meta.stale_if_error_sec()),
            (0, 0),
            "nothing by default"
        );
        let origin = [(
            "cache-control",
            "max-age=1, stale-while-revalidate=7, stale-if-error=9",
        )];
        let meta = stored(200, &origin, false).unwrap();
        assert_eq!(
            (meta.stale_while_revalidate_sec(), meta.stale_if_error_sec()),
            (7, 9)
        );
        let grant = granted(30, 10, 5);
        let meta = stored_with(200, &origin, false, &grant).unwrap();
        assert_eq!(
            (meta.stale_while_revalidate_sec(), meta.stale_if_error_sec()),
            (10, 9),
            "the larger of the two"
        );
        for forbidding in ["must-revalidate", "proxy-revalidate", "s-maxage=1"] {
            let control = format!("max-age=1, {forbidding}");
            let meta = stored_with(200, &[("cache-control", &control)], false, &grant).unwrap();
            assert_eq!(
                (meta.stale_while_revalidate_sec(), meta.stale_if_error_sec()),
                (0, 0),
                "{forbidding} forbids stale answers"
            );
        }
    }

    #[test]
    fn targeted_fields_replace_cache_control_and_expires_rfc_9213() {
        let meta = stored(
            200,
            &[
                ("cache-control", "no-store"),
                ("cdn-cache-control", "max-age=600"),
            ],
            false,
        )
        .unwrap();
        assert_eq!(
            ttl_of(&meta),
            600,
            "CDN-Cache-Control decides for this cache"
        );
        let edgegate_first = [
            ("edgegate-cache-control", "no-store"),
            ("cdn-cache-control", "max-age=600"),
        ];
        assert!(stored(200, &edgegate_first, false).is_none());
        let meta = stored(
            200,
            &[
                ("cdn-cache-control", "s-maxage=5"),
                ("expires", &date(3600)),
            ],
            false,
        )
        .unwrap();
        assert_eq!(ttl_of(&meta), 5, "Expires is ignored too");
        let invalid = [
            ("cdn-cache-control", "Max-Age=600"),
            ("cache-control", "max-age=7"),
        ];
        assert_eq!(
            ttl_of(&stored(200, &invalid, false).unwrap()),
            7,
            "an invalid one is skipped"
        );
        assert!(is_dictionary("max-age=60, stale-if-error=5, public"));
        assert!(!is_dictionary(""));
        assert!(!is_dictionary("max-age=60,,"));
    }

    #[test]
    fn a_304_replaces_every_stored_field_but_the_framing() {
        let mut stored = response(
            200,
            &[
                ("content-length", "5"),
                ("etag", "\"v1\""),
                ("x-version", "1"),
                ("x-kept", "yes"),
                ("vary", "accept"),
            ],
        );
        let mut update = http::HeaderMap::new();
        for (name, value) in [
            ("x-version", "2"),
            ("cache-control", "max-age=60"),
            ("content-length", "0"),
            ("vary", "*"),
            ("x-new", "a"),
        ] {
            update.append(
                http::HeaderName::from_static(name),
                http::HeaderValue::from_static(value),
            );
        }
        update.append("x-new", http::HeaderValue::from_static("b"));
        update_stored_headers(&mut stored, &update);
        let field = |name: &str| -> Vec<&str> {
            stored
                .headers
                .get_all(name)
                .iter()
                .map(|v| v.to_str().unwrap())
                .collect()
        };
        assert_eq!(field("x-version"), ["2"]);
        assert_eq!(field("cache-control"), ["max-age=60"]);
        assert_eq!(field("x-new"), ["a", "b"]);
        assert_eq!(field("x-kept"), ["yes"]);
        assert_eq!(
            field("content-length"),
            ["5"],
            "framing is the stored body's"
        );
        assert_eq!(
            field("vary"),
            ["accept"],
            "the variant stays the one stored"
        );
    }

    #[test]
    fn connection_and_the_fields_it_names_are_removed() {
        let mut answer = response(
            200,
            &[
                ("connection", "keep-alive, X-Hop"),
                ("connection", "close"),
                ("keep-alive", "timeout=5"),
                ("x-hop", "1"),
                ("x-end", "2"),
            ],
        );
        let mut headers = answer.headers.clone();
        strip_hop_by_hop(&mut headers);
        let names: Vec<&str> = headers.keys().map(|n| n.as_str()).collect();
        assert_eq!(names, ["x-end"]);
        strip_stored_hop_by_hop(&mut answer);
        assert_eq!(answer.headers, headers, "the same for a stored response");
        let mut one_line = response(200, &[("connection", "keep-alive"), ("keep-alive", "5")])
            .headers
            .clone();
        strip_hop_by_hop(&mut one_line);
        assert!(one_line.is_empty());
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
        let gzip = variance(&meta, &request(Some("gzip")), false);
        assert!(gzip.is_some());
        assert_eq!(gzip, variance(&meta, &request(Some("gzip")), false));
        assert_ne!(gzip, variance(&meta, &request(Some("br")), false));
        assert_ne!(gzip, variance(&meta, &request(None), false));
        let plain = stored(200, &[], false).unwrap();
        assert_eq!(variance(&plain, &request(Some("gzip")), false), None);
        // An origin that never saw the client's Accept-Encoding gave every client one answer.
        assert_eq!(variance(&meta, &request(Some("gzip")), true), None);
        let both = stored(200, &[("vary", "Accept-Encoding, Accept")], false).unwrap();
        assert_eq!(
            variance(&both, &request(Some("gzip")), true),
            variance(&both, &request(Some("br")), true)
        );
    }
}
