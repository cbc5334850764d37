//! The cache phases of a request: may it use the cache, under which key, is the response
//! stored, may a stale copy be served, and how the answer is labelled.

use super::ctx::RequestCtx;
use super::forwarding::request_host;
use crate::cache::{key, policy, CacheStatus};
use http::HeaderValue;
use pingora_cache::{CacheKey, RespCacheable};
use pingora_error::{Error, ErrorSource, Result};
use pingora_http::ResponseHeader;
use pingora_proxy::Session;
use std::time::SystemTime;

const X_CACHE: &str = "X-Cache";

/// Enables the cache for a request of a caching route whose method the route caches.
pub fn enable(session: &mut Session, ctx: &RequestCtx) {
    let (Some(route), Some(cache)) = (ctx.route(), ctx.runtime.cache.as_ref()) else {
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

/// `X-Cache` on every response of a caching route, and `Age` on answers from the store.
pub fn label(session: &Session, ctx: &RequestCtx, response: &mut ResponseHeader) -> Result<()> {
    let Some(status) = status(session, ctx) else {
        return Ok(());
    };
    if status.from_store() && !response.headers.contains_key(http::header::AGE) {
        if let Some(meta) = session.cache.maybe_cache_meta() {
            let age = HeaderValue::from(meta.age().as_secs());
            response.insert_header(http::header::AGE, age)?;
        }
    }
    response.insert_header(X_CACHE, HeaderValue::from_static(status.header_value()))
}
