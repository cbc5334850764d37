//! Choosing where a request goes (pool or split branch, in-flight cap, backend, peer
//! timeouts), accounting each attempt's outcome, and deciding whether a failed attempt is tried
//! again on another backend.

use super::ctx::RequestCtx;
use super::respond::Refusal;
use crate::config::{CallerKey, ForceSource, HashKey, RetryPolicy, RouteTarget};
use crate::observability::metrics::RetryReason;
use crate::upstream::outlier::Outcome;
use crate::upstream::selection::hash_bytes;
use crate::upstream::Pool;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_error::{Error, ErrorSource, ErrorType, Result, RetryType};
use pingora_http::RequestHeader;
use std::time::Instant;

/// Picks the backend for this attempt and returns its peer.
pub async fn choose_peer(request: &RequestHeader, ctx: &mut RequestCtx) -> Result<Box<HttpPeer>> {
    // An attempt still open here ended in an error no other hook reported.
    close_attempt(ctx, Attempt::Failed);
    let snapshot = std::sync::Arc::clone(&ctx.snapshot);
    let Some(route) = ctx.route.and_then(|index| snapshot.routes.get(index)) else {
        return Error::e_explain(ErrorType::HTTPStatus(404), Refusal::NoRoute.message());
    };
    let backoff = route.spec.retries.backoff;
    if ctx.upstream.tried.count() == 0 {
        ctx.upstream.deadline = exchange_deadline(route, request, ctx);
    }
    let same_backend = std::mem::take(&mut ctx.upstream.retry_same_backend);
    if ctx.upstream.tried.count() > 0 && !backoff.is_zero() && !same_backend {
        tokio::time::sleep(backoff).await;
    }
    let pool_index = match ctx.upstream.pool {
        Some(pool) => pool,
        None => {
            let pool = choose_pool(route, request, ctx);
            ctx.upstream.pool = Some(pool);
            pool
        }
    };
    let pool = &snapshot.pools[pool_index];
    if ctx.upstream.lease.is_none() {
        let Some(lease) = pool.acquire() else {
            return Error::e_explain(
                ErrorType::HTTPStatus(503),
                format!("upstream `{}` has too many requests in flight", pool.name),
            );
        };
        ctx.upstream.lease = Some(lease);
    }
    let Some(backend_index) = pick_backend(pool, request, ctx, same_backend) else {
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
    if let Some(trace) = ctx.trace.as_mut() {
        trace.open_attempt();
    }
    let mut peer = pool.backends[backend_index].peer.clone();
    if same_backend {
        // A connection group of its own: no pooled connection matches it, so the re-send opens
        // a new one instead of trying the next idle connection, which may be as stale.
        peer.group_key = fresh_connection_group();
    }
    if let Some(deadline) = ctx.upstream.deadline {
        bound_reads_by(&mut peer, deadline, route.spec.timeout.is_some());
    }
    Ok(Box::new(peer))
}

/// The route's pool, or the arm of its split this request goes to (kept in the context for
/// the arm's metrics and the access log).
fn choose_pool(
    route: &crate::snapshot::Route,
    request: &RequestHeader,
    ctx: &mut RequestCtx,
) -> usize {
    let Some(plan) = &route.split else {
        return match route.spec.target {
            RouteTarget::Upstream(pool) => pool,
            // Aggregation routes never come here: their parts choose their own pools.
            RouteTarget::Split(_) | RouteTarget::Aggregate(_) => 0,
        };
    };
    let forced = plan.force.as_ref().and_then(|source| match source {
        ForceSource::Header(name) => request.headers.get(name).map(|v| v.as_bytes()),
        ForceSource::Cookie(name) => crate::auth::cookie(request, name).map(str::as_bytes),
    });
    let octets;
    let caller: Option<&[u8]> = match &plan.sticky {
        None => None,
        Some(CallerKey::Consumer) => ctx
            .auth
            .as_ref()
            .and_then(|auth| auth.identity.consumer.as_deref())
            .map(str::as_bytes),
        Some(CallerKey::ClientIp) => {
            octets = ctx.client_ip.map(|ip| match ip {
                std::net::IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
                std::net::IpAddr::V6(v6) => v6.octets(),
            });
            octets.as_ref().map(|o| o.as_slice())
        }
        Some(CallerKey::Header(name)) => request.headers.get(name).map(|v| v.as_bytes()),
        Some(CallerKey::Cookie(name)) => crate::auth::cookie(request, name).map(str::as_bytes),
    };
    let choice = plan.choose(forced, caller);
    ctx.upstream.arm = Some(choice);
    plan.pool(choice.arm)
}

/// The backend for this attempt: the same one again after a stale pooled connection failed
/// (the backend itself is fine), else the pool's pick among those not tried yet.
fn pick_backend(
    pool: &Pool,
    request: &RequestHeader,
    ctx: &RequestCtx,
    same_backend: bool,
) -> Option<usize> {
    let previous = ctx.upstream.lease.as_ref().and_then(|l| l.backend_index());
    match previous {
        Some(index) if same_backend => Some(index),
        _ => {
            let key = if pool.needs_key() {
                hash_key(pool, request.uri.path(), &request.headers, ctx)
            } else {
                0
            };
            pool.pick(key, &ctx.upstream.tried)
        }
    }
}

/// No single wait may outlast the exchange. A spent budget still gets a moment, so the answer
/// is a timeout, not a connect error. A route's own timeout replaces the pool's per-read one;
/// `grpc-timeout` only shortens it.
pub fn bound_reads_by(peer: &mut HttpPeer, deadline: Instant, route_has_timeout: bool) {
    let left = deadline
        .saturating_duration_since(Instant::now())
        .max(std::time::Duration::from_millis(1));
    peer.options.read_timeout = Some(match (route_has_timeout, peer.options.read_timeout) {
        (false, Some(per_read)) => per_read.min(left),
        _ => left,
    });
}

/// The end of the whole upstream exchange: `routes[].timeout` from now, or the client's
/// `grpc-timeout` from the request's start on gRPC routes, whichever comes first.
fn exchange_deadline(
    route: &crate::snapshot::Route,
    request: &RequestHeader,
    ctx: &mut RequestCtx,
) -> Option<Instant> {
    let route_deadline = route.spec.timeout.map(|timeout| Instant::now() + timeout);
    if route.spec.grpc {
        ctx.grpc_deadline = request
            .headers
            .get("grpc-timeout")
            .and_then(|value| super::grpc::timeout(value.as_bytes()))
            .map(|timeout| ctx.started + timeout);
    }
    let grpc_deadline = ctx.grpc_deadline;
    match (route_deadline, grpc_deadline) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// The consistent-hash key of a request to `pool` for `path` (the forwarded path; an
/// aggregation part's own), the client's `headers` and identity.
pub fn hash_key(pool: &Pool, path: &str, headers: &http::HeaderMap, ctx: &RequestCtx) -> u64 {
    let client_ip = || match ctx.client_ip {
        Some(std::net::IpAddr::V4(ip)) => hash_bytes(&ip.octets()),
        Some(std::net::IpAddr::V6(ip)) => hash_bytes(&ip.octets()),
        None => 0,
    };
    match &pool.hash_key {
        HashKey::ClientIp => client_ip(),
        HashKey::Path => hash_bytes(path.as_bytes()),
        HashKey::Header(name) => headers.get(name).map_or(0, |v| hash_bytes(v.as_bytes())),
        HashKey::Claim(claim) => {
            let value = ctx.auth.as_ref().and_then(|a| a.identity.claims.get(claim));
            match value {
                Some(serde_json::Value::String(text)) => hash_bytes(text.as_bytes()),
                Some(other) => hash_bytes(other.to_string().as_bytes()),
                None => client_ip(),
            }
        }
    }
}

/// What the client is told when the exchange's deadline (`routes[].timeout`, `grpc-timeout`)
/// passed, wherever that is noticed.
pub const DEADLINE_PASSED: &str = Refusal::DeadlinePassed.message();

/// A connection-pool group no connection belongs to yet (group 0 is the shared one).
pub fn fresh_connection_group() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// How one attempt ended, for metrics and outlier detection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attempt {
    /// The backend answered with this status.
    Response(u16),
    /// The backend failed: connect error, timeout, reset.
    Failed,
    /// The attempt ended for reasons that say nothing about the backend (client gone, stale
    /// pooled connection).
    Abandoned,
}

/// Counts the outcome of the open attempt once.
pub fn close_attempt(ctx: &mut RequestCtx, attempt: Attempt) {
    if !std::mem::take(&mut ctx.upstream.attempt_open) {
        return;
    }
    let Some(lease) = ctx.upstream.lease.as_ref() else {
        return;
    };
    let status = match attempt {
        Attempt::Response(status) => Some(status),
        Attempt::Failed | Attempt::Abandoned => None,
    };
    if let Some(index) = lease.backend_index() {
        record_attempt(lease.pool(), index, attempt);
    }
    if let Some(trace) = ctx.trace.as_mut() {
        trace.close_attempt(&crate::observability::tracing::AttemptFacts {
            upstream: &lease.pool().name,
            backend: lease.backend().map_or("", |b| b.label.as_str()),
            status,
            resend_count: ctx.upstream.retries,
            retry_reason: ctx.upstream.retry_reason.map(|r| r.label()),
            reused: ctx.upstream.reused.take(),
        });
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
    ctx.upstream.status = status;
}

/// Counts how an attempt on backend `index` of `pool` ended: its metrics, and outlier
/// detection for answers and failures (an abandoned attempt says nothing about the backend).
pub fn record_attempt(pool: &Pool, index: usize, attempt: Attempt) {
    let Some(backend) = pool.backends.get(index) else {
        return;
    };
    match attempt {
        Attempt::Response(status) => {
            backend.metrics.observe(Some(status));
            pool.record(index, Outcome::from_status(status));
        }
        Attempt::Failed => {
            backend.metrics.observe(None);
            pool.record(index, Outcome::GatewayFailure);
        }
        Attempt::Abandoned => backend.metrics.observe(None),
    }
}

/// Why an attempt failed, as far as retrying is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// No connection: refused, connect timeout, TLS handshake failure. Nothing was sent.
    Connect,
    /// Sent, but no answer within the timeout.
    Timeout,
    /// Sent, then the connection broke before a response.
    Reset,
    /// The backend answered with this 5xx.
    Status(u16),
}

/// The retry condition of `policy` that `failure` meets, if retrying is allowed at all: within
/// `attempts`, the request body can be replayed, and either nothing was sent yet or the method
/// is idempotent (a POST that reached a backend is never sent twice).
pub fn retry_reason(
    policy: &RetryPolicy,
    failure: Failure,
    idempotent: bool,
    replayable: bool,
    retries_done: u32,
) -> Option<RetryReason> {
    let reason = match failure {
        Failure::Connect if policy.on_connect_failure => RetryReason::ConnectFailure,
        Failure::Timeout if policy.on_gateway_error => RetryReason::GatewayError,
        Failure::Reset if policy.on_reset => RetryReason::Reset,
        Failure::Status(502..=504) if policy.on_gateway_error => RetryReason::GatewayError,
        Failure::Status(500..=599) if policy.on_5xx => RetryReason::ServerError,
        _ => return None,
    };
    let sent = failure != Failure::Connect;
    (retries_done < policy.attempts && replayable && (idempotent || !sent)).then_some(reason)
}

/// Decides (and counts) a retry for `failure`.
fn decide_retry(
    request: &RequestHeader,
    ctx: &mut RequestCtx,
    failure: Failure,
    replayable: bool,
) -> bool {
    let Some(route) = ctx.route() else {
        return false;
    };
    if ctx.upstream.no_time_for_another_attempt() {
        return false;
    }
    let Some(reason) = retry_reason(
        &route.spec.retries,
        failure,
        request.method.is_idempotent(),
        replayable,
        ctx.upstream.retries,
    ) else {
        return false;
    };
    let untried = ctx
        .upstream
        .lease
        .as_ref()
        .is_some_and(|lease| lease.pool().has_untried(&ctx.upstream.tried));
    if !untried {
        return false;
    }
    route.metrics.retried(reason);
    ctx.upstream.retries += 1;
    ctx.upstream.retry_reason = Some(reason);
    true
}

/// `fail_to_connect`: the backend could not be reached.
pub fn on_connect_failure(
    request: &RequestHeader,
    ctx: &mut RequestCtx,
    replayable: bool,
    mut error: Box<Error>,
) -> Box<Error> {
    close_attempt(ctx, Attempt::Failed);
    let retry = decide_retry(request, ctx, Failure::Connect, replayable);
    error.set_retry(retry);
    error
}

/// `error_while_proxy`: the exchange failed after the connection was made (or reused).
pub fn on_proxy_error(
    request: &RequestHeader,
    ctx: &mut RequestCtx,
    replayable: bool,
    client_reused: bool,
    mut error: Box<Error>,
) -> Box<Error> {
    if matches!(error.etype(), ErrorType::HTTPStatus(_))
        && matches!(error.retry, RetryType::Decided(true))
    {
        return error; // raised by `on_response` to retry a 5xx; already decided and counted
    }
    if error.esource() != &ErrorSource::Upstream {
        close_attempt(ctx, Attempt::Abandoned);
        error.set_retry(false);
        return error;
    }
    // A pooled connection the backend had already closed: not the backend's fault, and safe to
    // send again on a fresh connection (Pingora's own rule for idempotent, replayable requests).
    // Once per request: Pingora would try every idle connection in turn, up to 16 sends.
    let stale = client_reused && matches!(error.retry, RetryType::ReusedOnly);
    if stale && !ctx.upstream.stale_resent && request.method.is_idempotent() && replayable {
        close_attempt(ctx, Attempt::Abandoned);
        ctx.upstream.retry_same_backend = true;
        ctx.upstream.stale_resent = true;
        error.set_retry(true);
        return error;
    }
    close_attempt(ctx, Attempt::Failed);
    let failure = match error.etype() {
        ErrorType::ReadTimedout | ErrorType::WriteTimedout => Failure::Timeout,
        _ => Failure::Reset,
    };
    let retry = decide_retry(request, ctx, failure, replayable);
    error.set_retry(retry);
    error
}

/// `upstream_response_filter`: counts the answer; a 5xx the route retries becomes a retryable
/// error (the response was not sent downstream yet).
pub fn on_response(
    request: &RequestHeader,
    ctx: &mut RequestCtx,
    status: u16,
    replayable: bool,
) -> Result<()> {
    if ctx.upstream.past_deadline() {
        // The answer came, but too late: the backend was too slow, as with a read timeout.
        close_attempt(ctx, Attempt::Failed);
        return Error::e_explain(ErrorType::HTTPStatus(504), DEADLINE_PASSED);
    }
    close_attempt(ctx, Attempt::Response(status));
    if status >= 500 && decide_retry(request, ctx, Failure::Status(status), replayable) {
        let mut error = Error::explain(
            ErrorType::HTTPStatus(status),
            format!("the upstream answered {status}; retrying on another backend"),
        );
        error.set_retry(true);
        return Err(error);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn policy(on: &[&str], attempts: u32) -> RetryPolicy {
        RetryPolicy {
            attempts,
            on_connect_failure: on.contains(&"connect_failure"),
            on_gateway_error: on.contains(&"gateway_error"),
            on_5xx: on.contains(&"5xx"),
            on_reset: on.contains(&"reset"),
            backoff: Duration::ZERO,
        }
    }

    #[test]
    fn each_condition_covers_its_failures() {
        let gateway = policy(&["gateway_error"], 2);
        assert_eq!(
            retry_reason(&gateway, Failure::Status(503), true, true, 0),
            Some(RetryReason::GatewayError)
        );
        assert_eq!(
            retry_reason(&gateway, Failure::Timeout, true, true, 0),
            Some(RetryReason::GatewayError)
        );
        assert_eq!(
            retry_reason(&gateway, Failure::Status(500), true, true, 0),
            None
        );
        assert_eq!(
            retry_reason(&gateway, Failure::Connect, true, true, 0),
            None
        );
        let any = policy(&["5xx", "reset"], 2);
        assert_eq!(
            retry_reason(&any, Failure::Status(500), true, true, 0),
            Some(RetryReason::ServerError)
        );
        assert_eq!(
            retry_reason(&any, Failure::Status(502), true, true, 0),
            Some(RetryReason::ServerError)
        );
        assert_eq!(
            retry_reason(&any, Failure::Reset, true, true, 0),
            Some(RetryReason::Reset)
        );
    }

    #[test]
    fn attempts_is_a_hard_cap() {
        let connect = policy(&["connect_failure"], 2);
        assert!(retry_reason(&connect, Failure::Connect, true, true, 1).is_some());
        assert!(retry_reason(&connect, Failure::Connect, true, true, 2).is_none());
        assert!(retry_reason(
            &policy(&["connect_failure"], 0),
            Failure::Connect,
            true,
            true,
            0
        )
        .is_none());
    }

    #[test]
    fn a_sent_non_idempotent_request_is_never_retried() {
        let all = policy(&["connect_failure", "gateway_error", "5xx", "reset"], 3);
        assert!(
            retry_reason(&all, Failure::Connect, false, true, 0).is_some(),
            "nothing was sent"
        );
        for sent in [Failure::Timeout, Failure::Reset, Failure::Status(503)] {
            assert!(
                retry_reason(&all, sent, false, true, 0).is_none(),
                "{sent:?}"
            );
            assert!(
                retry_reason(&all, sent, true, true, 0).is_some(),
                "{sent:?}"
            );
        }
        assert!(
            retry_reason(&all, Failure::Connect, true, false, 0).is_none(),
            "body not replayable"
        );
    }
}
