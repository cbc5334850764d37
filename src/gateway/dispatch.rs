//! Choosing where a request goes: pool (or split branch), circuit breaker, backend, peer
//! timeouts, and whether a failed connection is retried on another backend.

use super::ctx::RequestCtx;
use crate::config::HashKey;
use crate::upstream::selection::hash_bytes;
use crate::upstream::Pool;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_error::{Error, ErrorType, Result};
use pingora_http::RequestHeader;
use std::time::Instant;

/// Picks the backend for this attempt and returns its peer.
pub async fn choose_peer(request: &RequestHeader, ctx: &mut RequestCtx) -> Result<Box<HttpPeer>> {
    // Pingora retries a failed reused connection without `fail_to_connect`: count that attempt too.
    close_attempt(ctx, None);
    let runtime = std::sync::Arc::clone(&ctx.runtime);
    let Some(route) = ctx.route.and_then(|index| runtime.routes.get(index)) else {
        return Error::e_explain(ErrorType::HTTPStatus(404), "no route matches this request");
    };
    let backoff = route.spec.retries.backoff;
    let read_timeout = route.spec.timeout;
    if ctx.upstream.tried.count() > 0 && !backoff.is_zero() {
        tokio::time::sleep(backoff).await;
    }
    let pool_index = match ctx.upstream.pool {
        Some(index) => index,
        None => {
            let index = route.choose_pool();
            ctx.upstream.pool = Some(index);
            index
        }
    };
    let pool = &runtime.pools[pool_index];
    if ctx.upstream.lease.is_none() {
        match pool.acquire() {
            Some(lease) => ctx.upstream.lease = Some(lease),
            None => {
                return Error::e_explain(
                    ErrorType::HTTPStatus(503),
                    format!("upstream `{}` has too many requests in flight", pool.name),
                )
            }
        }
    }
    let key = if pool.needs_key() {
        hash_key(pool, request, ctx)
    } else {
        0
    };
    let Some(backend_index) = pool.pick(key, &ctx.upstream.tried) else {
        return Error::e_explain(
            ErrorType::HTTPStatus(503),
            format!("no healthy backend in upstream `{}`", pool.name),
        );
    };
    ctx.upstream.tried.insert(backend_index);
    if let Some(lease) = ctx.upstream.lease.as_mut() {
        lease.assign(backend_index);
    }
    ctx.upstream.picked_at = Some(Instant::now());
    ctx.upstream.attempt_open = true;
    let mut peer = pool.backends[backend_index].peer.clone();
    if let Some(timeout) = read_timeout {
        peer.options.read_timeout = Some(timeout);
    }
    Ok(Box::new(peer))
}

fn hash_key(pool: &Pool, request: &RequestHeader, ctx: &RequestCtx) -> u64 {
    match &pool.hash_key {
        HashKey::ClientIp => match ctx.client_ip {
            Some(std::net::IpAddr::V4(ip)) => hash_bytes(&ip.octets()),
            Some(std::net::IpAddr::V6(ip)) => hash_bytes(&ip.octets()),
            None => 0,
        },
        HashKey::Path => hash_bytes(request.uri.path().as_bytes()),
        HashKey::Header(name) => request
            .headers
            .get(name)
            .map_or(0, |v| hash_bytes(v.as_bytes())),
    }
}

/// Decides whether a failed connection is tried again on another backend.
pub fn on_connect_failure(
    request: &RequestHeader,
    ctx: &mut RequestCtx,
    mut error: Box<Error>,
) -> Box<Error> {
    close_attempt(ctx, None);
    let retry = ctx.route().is_some_and(|route| {
        let policy = &route.spec.retries;
        policy.on_connect_failure
            && ctx.upstream.retries < policy.attempts
            && request.method.is_idempotent()
            && ctx
                .upstream
                .lease
                .as_ref()
                .is_some_and(|lease| lease.pool().has_untried(&ctx.upstream.tried))
    });
    if retry {
        ctx.upstream.retries += 1;
        if let Some(route) = ctx.route() {
            route.metrics.retried_after_connect_failure();
        }
    }
    error.set_retry(retry);
    error
}

/// Counts the outcome of the open attempt (`None` = no response) once.
pub fn close_attempt(ctx: &mut RequestCtx, status: Option<u16>) {
    if !std::mem::take(&mut ctx.upstream.attempt_open) {
        return;
    }
    if let Some(lease) = ctx.upstream.lease.as_ref() {
        if let Some(backend) = lease.backend() {
            backend.metrics.observe(status);
        }
        if let (Some(_), Some(started)) = (status, ctx.upstream.picked_at) {
            let elapsed = started.elapsed();
            lease
                .pool()
                .metrics
                .upstream_duration
                .observe(elapsed.as_secs_f64());
            ctx.upstream.duration = Some(elapsed);
        }
    }
    ctx.upstream.status = status;
}
