//! Admission, `request_filter`'s ordered short-circuit checks: malformed request -> header size
//! -> route -> IP lists -> CORS (unknown origin refused, preflight answered) -> body size ->
//! authentication -> roles and scopes; then (async, as it may
//! ask Redis) rate limits. [`admit`] gives one answer; only the phase code writes the response.

use super::ctx::RequestCtx;
use super::respond::{Refusal, Rejection};
use ipnet::IpNet;
use pingora_http::RequestHeader;
use pingora_proxy::Session;
use std::net::IpAddr;
use std::sync::Arc;

/// What to do with a request.
pub enum Admission {
    /// Forward it upstream.
    Proxy,
    /// Hand the connection to the WebSocket tunnel.
    Upgrade,
    /// A CORS preflight: answered here, never forwarded (browsers send it without credentials).
    Preflight,
    /// Answer it here with this error.
    Refuse(Rejection),
}

/// What the request's `Origin` means to the route's CORS policy and which coding its
/// `Accept-Encoding` settles, from one pass over the request's fields (routes without
/// either skip it).
fn browser_policies(request: &RequestHeader, ctx: &mut RequestCtx) {
    let Some(route) = ctx.route() else { return };
    let (cors, compression) = (route.spec.cors.as_ref(), route.spec.compression.as_ref());
    if cors.is_none() && compression.is_none() {
        return;
    }
    let (mut origin, mut accept_encoding, mut range) = (None, false, false);
    for (name, value) in &request.headers {
        if name == http::header::ORIGIN {
            origin.get_or_insert(value);
        } else if name == http::header::ACCEPT_ENCODING {
            accept_encoding = true;
        } else if name == http::header::RANGE {
            range = true;
        }
    }
    let verdict = cors.map(|cors| cors.verdict_for(origin));
    let negotiated = compression.map(|policy| policy.settle(request, accept_encoding, range));
    ctx.cors = verdict;
    ctx.compression = negotiated;
}

/// Every check in order, the first failure wins; records the identity and the rate-limit report
/// in `ctx` for the phases after.
pub async fn admit(session: &Session, ctx: &mut RequestCtx) -> Admission {
    browser_policies(session.req_header(), ctx);
    let mut verdict = check(session.req_header(), ctx);
    if let Verdict::AuthFailed(crate::auth::Failure::UnknownKid) = verdict {
        // Rare and large: boxed so the common path's future stays small.
        verdict = Box::pin(recheck_after_key_refetch(session.req_header(), ctx))
            .await
            .unwrap_or(verdict);
    }
    let auth = match verdict {
        Verdict::Continue(auth) => auth,
        Verdict::Reject(rejection) => return Admission::Refuse(rejection),
        Verdict::Preflight => return Admission::Preflight,
        Verdict::AuthFailed(failure) => {
            if let Some(route) = ctx.route() {
                route.metrics.auth_failed(failure.reason_index());
            }
            trace_authentication(
                ctx,
                None,
                crate::auth::Failure::REASONS[failure.reason_index()],
            );
            return Admission::Refuse(auth_rejection(failure));
        }
    };
    if auth.is_some() {
        trace_authentication(ctx, auth.as_ref(), "ok");
    }
    let identity = auth.as_ref().map(|a| Arc::clone(&a.identity));
    ctx.auth = auth;
    if super::caching::is_background_refresh(session) {
        // The client request that triggered it was already counted against the limits.
        return Admission::Proxy;
    }
    let (limits, shadow_limited) = rate_limit(session.req_header(), ctx, identity.as_deref()).await;
    trace_rate_limit(ctx, &limits);
    ctx.limited_by = crate::ratelimit::LimitedBy {
        enforced: match &limits {
            Limits::Refuse(report) => u16::try_from(report.policy).ok(),
            _ => None,
        },
        shadow: shadow_limited.and_then(|index| u16::try_from(index).ok()),
        quota: None,
    };
    match limits {
        Limits::Admit(report) => {
            ctx.ratelimit = report;
            let (quota, refusal) =
                take_quotas(session.req_header(), ctx, identity.as_deref()).await;
            if let Some(report) = quota.as_ref().filter(|r| !r.allowed) {
                ctx.limited_by.quota = u16::try_from(report.quota).ok();
            }
            ctx.quota = quota;
            if let Some(refusal) = refusal {
                return Admission::Refuse(refusal.into());
            }
            // An aggregation route answers JSON itself: an upgrade header there means nothing.
            if ctx.upgrade_requested && ctx.route().is_some_and(|r| r.aggregate.is_none()) {
                Admission::Upgrade
            } else {
                Admission::Proxy
            }
        }
        Limits::Refuse(report) => {
            ctx.ratelimit = Some(report);
            Admission::Refuse(Refusal::RateLimited.into())
        }
        Limits::StoreUnavailable => Admission::Refuse(Refusal::RateLimitStoreUnavailable.into()),
    }
}

/// The `authentication` event of the request's trace: the method (the JWT provider, or
/// `api_key`), the outcome (`ok` or the failure reason) and the consumer.
fn trace_authentication(
    ctx: &mut RequestCtx,
    auth: Option<&crate::auth::Authenticated>,
    outcome: &'static str,
) {
    use crate::observability::tracing::AttrValue;
    if ctx.trace.is_none() {
        return;
    }
    let snapshot = Arc::clone(&ctx.snapshot);
    let Some(trace) = ctx.trace.as_mut() else {
        return;
    };
    trace.event("authentication", || {
        let mut attributes = vec![("edgegate.auth.outcome", AttrValue::Str(outcome.into()))];
        if let Some(auth) = auth {
            let method = match auth.provider.and_then(|i| snapshot.auth.provider(i)) {
                Some(provider) => format!("jwt:{}", provider.spec.name),
                None => "api_key".to_string(),
            };
            attributes.push(("edgegate.auth.method", AttrValue::Str(method)));
            if auth.provider.is_some() {
                attributes.push(("edgegate.auth.cached", AttrValue::Bool(auth.from_cache)));
            }
            if let Some(consumer) = &auth.identity.consumer {
                attributes.push(("edgegate.consumer", AttrValue::Str(consumer.clone())));
            }
        }
        attributes
    });
}

/// The `rate_limit` event of the request's trace (routes with policies).
fn trace_rate_limit(ctx: &mut RequestCtx, limits: &Limits) {
    use crate::observability::tracing::AttrValue;
    if ctx.trace.is_none() || ctx.route().is_none_or(|r| r.spec.rate_limits.is_empty()) {
        return;
    }
    let snapshot = Arc::clone(&ctx.snapshot);
    let Some(trace) = ctx.trace.as_mut() else {
        return;
    };
    trace.event("rate_limit", || {
        let (outcome, report) = match limits {
            Limits::Admit(report) => ("allowed", report.as_ref()),
            Limits::Refuse(report) => ("limited", Some(report)),
            Limits::StoreUnavailable => ("store_unavailable", None),
        };
        let mut attributes = vec![(
            "edgegate.rate_limit.outcome",
            AttrValue::Str(outcome.into()),
        )];
        if let Some(policy) = report.and_then(|r| snapshot.limiter.policies.get(r.policy)) {
            attributes.push((
                "edgegate.rate_limit.policy",
                AttrValue::Str(policy.name.clone()),
            ));
        }
        attributes
    });
}

/// The outcome of the synchronous checks.
enum Verdict {
    /// Proceed; with the identity when the route requires authentication.
    Continue(Option<crate::auth::Authenticated>),
    Reject(Rejection),
    /// A CORS preflight, to be answered before authentication.
    Preflight,
    /// Authentication or authorization failed (the caller may refetch keys and check again).
    AuthFailed(crate::auth::Failure),
}

/// Runs the synchronous checks in order; the first failure wins.
fn check(request: &RequestHeader, ctx: &RequestCtx) -> Verdict {
    if let Some(bad) = ctx.bad_request {
        return Verdict::Reject(bad.rejection());
    }
    if ctx.header_bytes > ctx.snapshot.max_request_header_size {
        return Verdict::Reject(Refusal::HeaderTooLarge.into());
    }
    let Some(route) = ctx.route() else {
        return Verdict::Reject(Refusal::NoRoute.into());
    };
    let spec = &route.spec;
    if !ip_permitted(ctx.client_ip, &spec.ip_allow, &spec.ip_deny) {
        return Verdict::Reject(Refusal::AddressForbidden.into());
    }
    if let Some((cors, verdict)) = ctx.cors() {
        if cors.reject_unknown_origins && *verdict == crate::cors::Verdict::Unknown {
            return Verdict::Reject(Refusal::OriginForbidden.into());
        }
        if crate::cors::is_preflight(&request.method, &request.headers) {
            return Verdict::Preflight;
        }
    }
    if content_length(request).is_some_and(|length| length > spec.max_body_size) {
        return Verdict::Reject(Refusal::BodyTooLarge.into());
    }
    let auth = match &spec.auth {
        None => None,
        Some(route_auth) => match ctx.snapshot.auth.check(route_auth, request) {
            Ok(authenticated) => Some(authenticated),
            Err(failure) => return Verdict::AuthFailed(failure),
        },
    };
    Verdict::Continue(auth)
}

/// After an unknown `kid`: refetches the route's key sets once (rate-limited) and checks again;
/// `None` when nothing was refetched.
async fn recheck_after_key_refetch(request: &RequestHeader, ctx: &RequestCtx) -> Option<Verdict> {
    let route_auth = ctx.route().and_then(|r| r.spec.auth.as_ref())?;
    let auth = Arc::clone(&ctx.snapshot.auth);
    auth.refetch_for_unknown_kid(route_auth)
        .await
        .then(|| check(request, ctx))
}

/// What the route's rate limits say.
enum Limits {
    /// Admitted, with the policy the headers describe.
    Admit(Option<crate::ratelimit::Report>),
    Refuse(crate::ratelimit::Report),
    /// The shared store is unreachable and `on_error: deny`.
    StoreUnavailable,
}

/// Applies the route's rate-limit policies (after authentication: keys and tiers need the
/// identity); also the first shadow policy over its limit.
async fn rate_limit(
    request: &RequestHeader,
    ctx: &RequestCtx,
    identity: Option<&crate::auth::Identity>,
) -> (Limits, Option<usize>) {
    let Some(route) = ctx.route() else {
        return (Limits::Admit(None), None);
    };
    let spec = &route.spec;
    if spec.rate_limits.is_empty() {
        return (Limits::Admit(None), None);
    }
    let limiter = &ctx.snapshot.limiter;
    let input = key_input(request, ctx, route, identity);
    let checked = if limiter.is_shared() {
        // Boxed: the Redis round trip's future would otherwise enlarge every request's.
        Box::pin(limiter.check(&spec.rate_limits, &input)).await
    } else {
        // The local store never waits: no await point, nothing kept in the request's future.
        ready_now(limiter.check(&spec.rate_limits, &input))
            .unwrap_or(Err(crate::ratelimit::redis::StoreUnavailable))
    };
    let Ok(outcome) = checked else {
        return (Limits::StoreUnavailable, None);
    };
    if let Some(slot) = outcome.limited_slot {
        if let Some(policy) = spec
            .rate_limits
            .get(slot)
            .and_then(|&i| limiter.policies.get(i))
        {
            route
                .metrics
                .rate_limited(slot, &policy.name, outcome.allowed);
        }
    }
    let limits = match outcome.report {
        Some(report) if !outcome.allowed => Limits::Refuse(report),
        report => Limits::Admit(report),
    };
    (limits, outcome.shadow_limited)
}

/// What rate-limit and quota keys are made of for this request.
fn key_input<'a>(
    request: &'a RequestHeader,
    ctx: &'a RequestCtx,
    route: &'a crate::snapshot::Route,
    identity: Option<&'a crate::auth::Identity>,
) -> crate::ratelimit::KeyInput<'a> {
    crate::ratelimit::KeyInput {
        route: ctx.route.unwrap_or(0),
        route_name: &route.spec.name,
        client_ip: ctx.client_ip,
        identity,
        headers: &request.headers,
    }
}

/// Counts the request against the route's calendar quotas: the report its response describes,
/// and the refusal when one is used up (or its store is unreachable with `on_error: deny`).
async fn take_quotas(
    request: &RequestHeader,
    ctx: &RequestCtx,
    identity: Option<&crate::auth::Identity>,
) -> (
    Option<Box<crate::ratelimit::quota::QuotaReport>>,
    Option<Refusal>,
) {
    let (Some(route), Some(quotas)) = (ctx.route(), ctx.snapshot.limiter.quotas.as_ref()) else {
        return (None, None);
    };
    if route.spec.quotas.is_empty() {
        return (None, None);
    }
    let input = key_input(request, ctx, route, identity);
    match Box::pin(quotas.take(&route.spec.quotas, &input)).await {
        Ok(Some(report)) => {
            let refusal = (!report.allowed).then_some(Refusal::QuotaUsedUp);
            (Some(Box::new(report)), refusal)
        }
        Ok(None) => (None, None),
        Err(_) if ctx.snapshot.limiter.quota_allow_on_error => (None, None),
        Err(_) => (None, Some(Refusal::RateLimitStoreUnavailable)),
    }
}

/// Polls a future that never waits once; `None` if it would have.
fn ready_now<F: std::future::Future>(future: F) -> Option<F::Output> {
    let future = std::pin::pin!(future);
    let mut context = std::task::Context::from_waker(std::task::Waker::noop());
    match future.poll(&mut context) {
        std::task::Poll::Ready(output) => Some(output),
        std::task::Poll::Pending => None,
    }
}

/// The answer to a final authentication failure (401 carries the `WWW-Authenticate` challenge).
fn auth_rejection(failure: crate::auth::Failure) -> Rejection {
    let mut rejection = Rejection::new(failure.status(), failure.description());
    if failure.status() == 401 {
        rejection.challenge = Some(failure.description());
    }
    rejection
}

/// Deny list first, then the allow list (empty = everyone).
pub fn ip_permitted(client: Option<IpAddr>, allow: &[IpNet], deny: &[IpNet]) -> bool {
    if allow.is_empty() && deny.is_empty() {
        return true;
    }
    let Some(ip) = client.map(super::identity::canonical) else {
        return allow.is_empty();
    };
    if deny.iter().any(|net| net.contains(&ip)) {
        return false;
    }
    allow.is_empty() || allow.iter().any(|net| net.contains(&ip))
}

fn content_length(request: &RequestHeader) -> Option<u64> {
    request
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|n| n.parse().unwrap()).collect()
    }

    #[test]
    fn deny_wins_over_allow() {
        let allow = nets(&["10.0.0.0/8"]);
        let deny = nets(&["10.1.0.0/16"]);
        let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
        assert!(ip_permitted(ip("10.2.3.4"), &allow, &deny));
        assert!(!ip_permitted(ip("10.1.3.4"), &allow, &deny));
        assert!(!ip_permitted(ip("192.168.1.1"), &allow, &deny));
        assert!(ip_permitted(ip("192.168.1.1"), &[], &deny));
        assert!(
            !ip_permitted(ip("::ffff:10.1.0.1"), &allow, &deny),
            "mapped v4 is v4"
        );
        assert!(!ip_permitted(None, &allow, &[]));
    }
}
