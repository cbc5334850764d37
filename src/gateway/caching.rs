//! The cache phases of a request: may it use the cache, under which key, is the response
//! stored, may a stale copy be served, and how the answer is labelled.

use super::ctx::RequestCtx;
use super::identity::request_host;
use crate::cache::store::FreshHit;
use crate::cache::{key, policy, CacheStatus};
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use pingora_cache::{CacheKey, RespCacheable};
use pingora_error::{Error, ErrorSource, Result};
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::Session;
use std::time::SystemTime;

static X_CACHE: HeaderName = HeaderName::from_static("x-cache");
static ACCEPT_BYTE_RANGES: HeaderValue = HeaderValue::from_static("bytes");

/// Enables the cache for a request of a caching route whose method the route caches.
pub fn enable(session: &mut Session, ctx: &RequestCtx) {
    let (Some(route), Some(cache)) = (ctx.route(), ctx.snapshot.cache.as_ref()) else {
        return;
    };
    if route
        .cache
        .as_ref()
        .is_some_and(|p| p.allows(&session.req_header().method))
    {
        cache.enable(&mut session.cache);
    }
}

/// The key of the current request (only called when [`enable`] turned the cache on).
pub fn key(session: &Session, ctx: &RequestCtx) -> Result<CacheKey> {
    let Some(route) = ctx.route() else {
        return Error::e_explain(
            pingora_error::ErrorType::InternalError,
            "cache enabled without a route",
        );
    };
    let request = session.req_header();
    let vary = route.cache.as_ref().map_or(&[][..], |p| &p.vary[..]);
    Ok(key::build(
        request_host(request),
        request_target(request),
        &route.spec.name,
        vary,
        &request.headers,
    ))
}

/// A fresh stored response that may answer this request before Pingora's cache phases: a GET
/// or HEAD the route caches, with no `Range` and no condition (Pingora's range and 304 handling
/// answer those), whose entry is fresh, not a `Vary` variant, and framed by a `Content-Length`
/// number (204 and 304 excepted).
/// Everything else, misses included, takes the cache phases; the answer is the same either way.
pub fn fresh_hit(session: &Session, ctx: &RequestCtx) -> Option<FreshHit> {
    let route = ctx.route()?;
    let policy = route.cache.as_ref()?;
    let cache = ctx.snapshot.cache.as_ref()?;
    let request = session.req_header();
    if !policy.allows(&request.method)
        || is_background_refresh(session)
        || request.headers.keys().any(needs_cache_phases)
    {
        return None;
    }
    let hash = key::hash(
        request_host(request),
        request_target(request),
        &route.spec.name,
        &policy.vary,
        &request.headers,
    );
    let hit = cache.store().fresh(hash, SystemTime::now())?;
    // Without a length Pingora frames a stored body as chunked, and without a number there it
    // marks no 200 as rangeable: both left to it. So every 200 here has a length.
    let known_length = hit
        .header
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|length| length.to_str().ok())
        .is_some_and(|length| length.parse::<usize>().is_ok());
    (known_length || matches!(hit.header.status.as_u16(), 204 | 304)).then_some(hit)
}

/// Request fields a hit through Pingora's cache phases acts on.
fn needs_cache_phases(name: &HeaderName) -> bool {
    use http::header::{
        IF_MATCH, IF_MODIFIED_SINCE, IF_NONE_MATCH, IF_RANGE, IF_UNMODIFIED_SINCE, RANGE,
    };
    name == RANGE
        || name == IF_NONE_MATCH
        || name == IF_MODIFIED_SINCE
        || name == IF_MATCH
        || name == IF_UNMODIFIED_SINCE
        || name == IF_RANGE
}

/// Sends a [`fresh_hit`] with the headers a hit through the cache phases gets (`Age`,
/// `X-Cache: HIT`, the origin's `Date`, the response edits, the rate-limit headers, the request id).
pub async fn answer(session: &mut Session, ctx: &mut RequestCtx, hit: FreshHit) -> Result<()> {
    ctx.cache_looked_up = true;
    ctx.fresh_hit = true;
    let FreshHit {
        mut header,
        body,
        age,
    } = hit;
    // As Pingora sends any stored response: HTTP/1.1, and a whole 200 of known length (every
    // 200 `fresh_hit` lets through) marked as one it could serve in ranges (its range filter,
    // which runs before `response_filter`).
    header.set_version(http::Version::HTTP_11);
    if header.status == http::StatusCode::OK {
        header.insert_header(http::header::ACCEPT_RANGES, ACCEPT_BYTE_RANGES.clone())?;
    }
    let labels = Labels {
        status: CacheStatus::Hit,
        age: Some(HeaderValue::from(age)),
    };
    send_whole(session, ctx, header, body, Some(labels)).await
}

/// Sends a response whose whole body is at hand (a stored one, an aggregated one), with what
/// every response gets on its way out; compressed whole, with its own `Content-Length`, when
/// the route and the client agree on a coding.
pub async fn send_whole(
    session: &mut Session,
    ctx: &RequestCtx,
    mut header: Box<ResponseHeader>,
    mut body: bytes::Bytes,
    labels: Option<Labels>,
) -> Result<()> {
    let whole = super::forwarding::Body::Whole(body.len() as u64);
    if let Some(encoder) = super::outgoing_response(session, &mut header, ctx, labels, whole)? {
        let (coding, input) = (encoder.totals().0, body.len() as u64);
        body = encoder.whole(&body)?;
        ctx.metrics().compressed(coding, input, body.len() as u64);
        header.insert_header(http::header::CONTENT_LENGTH, body.len())?;
    }
    let header_only = session.req_header().method == Method::HEAD || body.is_empty();
    session.write_response_header(header, header_only).await?;
    if !header_only {
        session.write_response_body(Some(body), true).await?;
    }
    Ok(())
}

/// The length of the stored body a hit is about to send (`None`: not a hit of our store).
pub fn hit_body_len(session: &mut Session) -> Option<u64> {
    use pingora_cache::CachePhase;
    if !session.cache.enabled() {
        return None;
    }
    match session.cache.phase() {
        CachePhase::Hit
        | CachePhase::Stale
        | CachePhase::StaleUpdating
        | CachePhase::Revalidated
        | CachePhase::RevalidatedNoCache(_) => {
            crate::cache::store::hit_body_len(session.cache.hit_handler().as_ref())
        }
        _ => None,
    }
}

/// Whether the origin's response is stored, and its freshness. After a 304, the stored header
/// updated with the 304's decides.
pub fn decide(session: &Session, response: &ResponseHeader, ctx: &mut RequestCtx) -> RespCacheable {
    let revalidation = ctx.revalidation.take();
    let Some(policy) = ctx.route().and_then(|r| r.cache.as_ref()) else {
        return RespCacheable::Uncacheable(pingora_cache::NoCacheReason::NeverEnabled);
    };
    let credentials = ctx.auth.is_some()
        || session
            .req_header()
            .headers
            .contains_key(http::header::AUTHORIZATION);
    match revalidation {
        Some(update) => {
            let mut updated = response.clone();
            policy::update_stored_headers(&mut updated, &update);
            policy::decide(&updated, credentials, policy, SystemTime::now())
        }
        None => policy::decide(response, credentials, policy, SystemTime::now()),
    }
}

/// Keeps a 304's headers while Pingora revalidates a stored response with it.
pub fn note_revalidation(session: &Session, response: &ResponseHeader, ctx: &mut RequestCtx) {
    if response.status == http::StatusCode::NOT_MODIFIED
        && session.cache.enabled()
        && session.cache.maybe_cache_meta().is_some()
    {
        ctx.revalidation = Some(Box::new(response.headers.clone()));
    }
}

/// RFC 9111 §4.4: a non-error answer to an unsafe method (anything but GET, HEAD, OPTIONS and
/// TRACE) invalidates what is stored for its target, and for a same-origin `Location` or
/// `Content-Location`.
pub fn invalidate_after_unsafe(session: &Session, ctx: &RequestCtx, response: &ResponseHeader) {
    let request = session.req_header();
    if matches!(
        request.method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
    ) || response.status.as_u16() >= 400
        || response.status.is_informational()
    {
        return;
    }
    let Some(cache) = ctx.snapshot.cache.as_ref() else {
        return;
    };
    let host = request_host(request);
    cache
        .store()
        .purge_url(&key::url(host, request_target(request)));
    for name in [http::header::LOCATION, http::header::CONTENT_LOCATION] {
        if let Some(same_origin) = response
            .headers
            .get(&name)
            .and_then(|value| same_origin_target(value, host))
        {
            cache.store().purge_url(&key::url(host, &same_origin));
        }
    }
}

/// The path and query the request asked for, as the cache keys and purges it.
pub fn request_target(request: &RequestHeader) -> &str {
    request
        .uri
        .path_and_query()
        .map_or_else(|| request.uri.path(), |p| p.as_str())
}

/// The path and query of `value` when it names a resource of `host`: an absolute path, or an
/// absolute URL with that host.
fn same_origin_target(value: &HeaderValue, host: &str) -> Option<String> {
    let uri: http::Uri = value.to_str().ok()?.parse().ok()?;
    if let Some(authority) = uri.authority() {
        if !authority.as_str().eq_ignore_ascii_case(host) {
            return None;
        }
    } else if !uri.path().starts_with('/') {
        return None;
    }
    Some(uri.path_and_query().map_or("/", |p| p.as_str()).to_string())
}

/// Whether a stale copy may answer: always while revalidating (`error` is `None`; Pingora has
/// checked the entry's window), and after any failure not caused by the client.
pub fn serve_stale(error: Option<&Error>) -> bool {
    error.is_none_or(|e| e.esource() != &ErrorSource::Downstream)
}

/// This request is the background refresh Pingora spawned for a stale-while-revalidate hit.
pub fn is_background_refresh(session: &Session) -> bool {
    session.subrequest_ctx.is_some()
}

/// How the cache answered (`None`: the route does not cache).
pub fn status(session: &Session, ctx: &RequestCtx) -> Option<CacheStatus> {
    if ctx.fresh_hit {
        return Some(CacheStatus::Hit);
    }
    ctx.route()?.cache.as_ref()?;
    Some(CacheStatus::of(session.cache.phase(), ctx.cache_looked_up))
}

/// `X-Cache` (and `Age` for answers from the store) of a caching route's response.
pub struct Labels {
    status: CacheStatus,
    age: Option<HeaderValue>,
}

/// The labels of this response, `None` when the route does not cache.
pub fn labels(session: &Session, ctx: &RequestCtx) -> Option<Labels> {
    let status = status(session, ctx)?;
    // A stored answer's Age is the one the cache computes (RFC 9111 §5.1), whatever the origin
    // sent when it was stored.
    let age = if status.from_store() {
        session
            .cache
            .maybe_cache_meta()
            .map(|meta| HeaderValue::from(meta.age().as_secs()))
    } else {
        None
    };
    Some(Labels { status, age })
}

impl Labels {
    /// How many headers [`Labels::write`] adds at most.
    pub const MAX_HEADERS: usize = 2;

    /// Adds the labels to the response headers.
    pub fn write(self, headers: &mut HeaderMap) -> Result<()> {
        if let Some(age) = self.age {
            super::forwarding::insert(headers, &http::header::AGE, age)?;
        }
        let status = HeaderValue::from_static(self.status.header_value());
        super::forwarding::insert(headers, &X_CACHE, status)
    }
}
