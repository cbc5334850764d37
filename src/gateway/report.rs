//! The `logging` phase: one metrics update and one access-log line per request.

use super::ctx::RequestCtx;
use super::dispatch::{close_attempt, Attempt};
use super::identity::request_host;
use crate::observability::access_log::Entry;
use pingora_proxy::Session;
use std::time::SystemTime;

/// Records the finished request.
pub fn finish(session: &Session, ctx: &mut RequestCtx, error: Option<&pingora_error::Error>) {
    if ctx.upstream.deadline.is_some() {
        if let Some(client) = super::strict::client_stream(session) {
            client.set_exchange_deadline(None);
        }
    }
    let upstream_failed =
        error.is_some_and(|e| e.esource() == &pingora_error::ErrorSource::Upstream);
    close_attempt(
        ctx,
        if upstream_failed {
            Attempt::Failed
        } else {
            Attempt::Abandoned
        },
    );
    let request = session.req_header();
    let status = session.response_written().map(|r| r.status.as_u16());
    let elapsed = ctx.started.elapsed();
    let metrics = ctx.metrics();
    let background = super::caching::is_background_refresh(session);
    let cache = super::caching::status(session, ctx);
    // A background refresh is the gateway's own request: it is logged, not counted as traffic.
    if !background {
        metrics.observe(&request.method, status, elapsed.as_secs_f64());
        if let Some(arm) = ctx.arm_metrics() {
            arm.observe(status, elapsed.as_secs_f64());
        }
        if let Some(encoder) = &ctx.encoder {
            let (coding, input, output) = encoder.totals();
            metrics.compressed(coding, input, output);
        }
        metrics.transferred(
            ctx.header_bytes as u64 + ctx.body_bytes,
            session.body_bytes_sent() as u64,
        );
        if let Some(cache) = cache {
            metrics.cache_lookup(cache.index(), cache.label());
        }
    }

    let trace = ctx.trace.take();
    if ctx.snapshot.access_log.enabled() {
        log_line(
            session,
            ctx,
            status,
            elapsed,
            if background {
                Some("REFRESH")
            } else {
                cache.map(|c| c.header_value())
            },
            trace.as_deref(),
        );
    }
    if let (Some(trace), Some(tracer)) = (trace, ctx.snapshot.tracer.as_ref()) {
        tracer.finish(
            *trace,
            &crate::observability::tracing::ServerFacts {
                method: request.method.as_str(),
                path: request.uri.path(),
                route: ctx.route().map(|r| r.spec.name.as_str()),
                status,
                client_ip: ctx.client_ip,
                protocol: protocol_name(request.version),
                request_id: ctx.request_id.as_str(),
                duration: elapsed,
                cache: cache.map(|c| c.header_value()),
            },
        );
    }
}

/// The request's access-log line (`cache` is its X-Cache label, `REFRESH` for a background refresh).
fn log_line(
    session: &Session,
    ctx: &RequestCtx,
    status: Option<u16>,
    elapsed: std::time::Duration,
    cache: Option<&'static str>,
    trace: Option<&crate::observability::tracing::RequestTrace>,
) {
    let request = session.req_header();
    let lease = ctx.upstream.lease.as_ref();
    ctx.snapshot.access_log.write(&Entry {
        time: SystemTime::now(),
        request_id: ctx.request_id.as_str(),
        client_ip: ctx.client_ip,
        method: request.method.as_str(),
        host: request_host(request),
        path: request.uri.path(),
        protocol: protocol_name(request.version),
        tls: session
            .digest()
            .and_then(|d| d.ssl_digest.as_deref())
            .map(|tls| tls.version.as_ref()),
        status: status.unwrap_or(0),
        bytes: session.body_bytes_sent(),
        request_bytes: ctx.header_bytes as u64 + ctx.body_bytes,
        duration: elapsed,
        route: ctx.route().map(|r| r.spec.name.as_str()),
        upstream: lease.map(|l| l.pool().name.as_str()),
        arm: ctx.arm().map(|(plan, choice)| plan.arm_name(choice.arm)),
        arm_by: ctx.upstream.arm.map(|choice| choice.by.label()),
        backend: lease.and_then(|l| l.backend()).map(|b| b.label.as_str()),
        upstream_status: ctx.upstream.status,
        upstream_duration: ctx.upstream.duration,
        consumer: ctx
            .auth
            .as_ref()
            .and_then(|a| a.identity.consumer.as_deref()),
        cache,
        limited_by: limited_by(ctx),
        shadow_limited_by: ctx
            .limited_by
            .shadow
            .and_then(|i| ctx.snapshot.limiter.policies.get(usize::from(i)))
            .map(|p| p.name.as_str()),
        parts: ctx.aggregate.as_deref().unwrap_or(&[]),
        trace: trace.map(|t| (&t.trace_id, &t.span_id)),
    });
}

/// The policy or calendar quota that refused the request.
fn limited_by(ctx: &RequestCtx) -> Option<&str> {
    let limiter = &ctx.snapshot.limiter;
    let by = ctx.limited_by;
    by.enforced
        .and_then(|i| limiter.policies.get(usize::from(i)))
        .map(|p| p.name.as_str())
        .or_else(|| {
            let quotas = limiter.quotas.as_ref()?;
            quotas.spec(usize::from(by.quota?)).map(|q| q.name.as_str())
        })
}

fn protocol_name(version: http::Version) -> &'static str {
    match version {
        http::Version::HTTP_09 => "HTTP/0.9",
        http::Version::HTTP_10 => "HTTP/1.0",
        http::Version::HTTP_2 => "HTTP/2",
        http::Version::HTTP_3 => "HTTP/3",
        _ => "HTTP/1.1",
    }
}
