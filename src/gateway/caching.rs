//! The cache phases of a request: may it use the cache, under which key, is the response
//! stored, may a stale copy be served, and how the answer is labelled.

use super::ctx::RequestCtx;
use super::identity::request_host;
use crate::cache::{key, policy, CacheStatus};
use http::{HeaderMap, HeaderName, HeaderValue};
use pingora_cache::{CacheKey, RespCacheable};
use pingora_error::{Error, ErrorSource, Result};
use pingora_http::ResponseHeader;
use pingora_proxy::Session;
use std::time::SystemTime;

static X_CACHE: HeaderName = HeaderName::from_static("x-cache");

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
    let target = request
        .uri
        .path_and_query()
        .map_or_else(|| request.uri.path(), |p| p.as_str());
    let vary = route.cache.as_ref().map_or(&[][..], |p| &p.vary[..]);
    Ok(key::build(
        request_host(request),
        target,
        &route.spec.name,
        vary,
        &request.headers,
    ))
}

/// Whether the origin's response is stored, and its freshness.
pub fn decide(session: &Session, response: &ResponseHeader, ctx: &RequestCtx) -> RespCacheable {
    let Some(policy) = ctx.route().and_then(|r| r.cache.as_ref()) else {
        return RespCacheable::Uncacheable(pingora_cache::NoCacheReason::NeverEnabled);
    };
    let credentials = ctx.auth.is_some()
        || session
            .req_header()
            .headers
            .contains_key(http::header::AUTHORIZATION);
    policy::decide(response, credentials, policy, SystemTime::now())
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
    ctx.route()?.cache.as_ref()?;
    Some(CacheStatus::of(session.cache.phase(), ctx.cache_looked_up))
}

/// `X-Cache` (and `Age` for answers from the store) of a caching route's response.
pub struct Labels {
    status: CacheStatus,
    age: Option<HeaderValue>,
}

/// The labels of this response, `None` when the route does not cache.
pub fn labels(session: &Session, ctx: &RequestCtx, response: &ResponseHeader) -> Option<Labels> {
    let status = status(session, ctx)?;
    let age = if status.from_store() && !response.headers.contains_key(http::header::AGE) {
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
