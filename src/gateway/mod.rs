//! The Pingora `ProxyHttp` implementation. Each phase is a few lines calling the module that
//! owns the concern; read top to bottom, this is the request flow of DESIGN.md.

mod admission;
mod aggregation;
mod caching;
pub mod ctx;
mod dispatch;
mod forwarding;
pub mod grpc;
mod headers;
mod identity;
mod report;
pub mod respond;
pub mod strict;
mod tunnel;

pub use identity::canonical as canonical_ip;

use crate::observability::metrics::Connection;
use crate::snapshot::Snapshot;
use admission::Admission;
use arc_swap::ArcSwap;
use async_trait::async_trait;
use bytes::Bytes;
use ctx::RequestCtx;
use pingora_cache::key::HashBinary;
use pingora_cache::{CacheKey, CacheMeta, ForcedFreshness, HitHandler, RespCacheable};
use pingora_core::modules::http::HttpModules;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_error::{Error, ErrorType, Result};
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::{FailToProxy, ProxyHttp, Session};
use respond::Rejection;
use std::sync::Arc;

/// The gateway: reads the current [`Snapshot`] for every request.
pub struct Gateway {
    snapshot: Arc<ArcSwap<Snapshot>>,
    /// Connections to backends for upgraded (WebSocket) requests, which the gateway proxies itself.
    tunnels: pingora_core::connectors::TransportConnector,
    /// Pooled connections for the parts of aggregation routes, which the gateway sends itself.
    parts: pingora_core::connectors::http::Connector,
}

impl Gateway {
    /// A gateway serving whatever `snapshot` holds.
    pub fn new(snapshot: Arc<ArcSwap<Snapshot>>) -> Self {
        Gateway {
            snapshot,
            tunnels: pingora_core::connectors::TransportConnector::new(None),
            parts: pingora_core::connectors::http::Connector::new(None),
        }
    }
}

fn peer_ip(session: &Session) -> Option<std::net::IpAddr> {
    session
        .client_addr()
        .and_then(|a| a.as_inet())
        .map(|a| a.ip())
}

#[async_trait]
impl ProxyHttp for Gateway {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx::new(self.snapshot.load_full())
    }

    /// None: edgegate does not compress, and Pingora's default (a disabled compression module)
    /// still costs ~1k instructions per request.
    fn init_downstream_modules(&self, _modules: &mut HttpModules) {}

    /// Identity, strictness and routing: request id, keepalive and body timeout, client IP,
    /// header size, framing/Host/method/path checks (the path normalized), route match.
    async fn early_request_filter(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        keepalive(session, ctx);
        session.set_read_timeout(Some(ctx.snapshot.body_read_timeout));
        // Pipelined requests are answered one after the other, in order (RFC 9112 §9.3.2).
        session.set_pipelining_enabled(true);
        let peer = peer_ip(session);
        ctx.upgrade_requested = session.is_upgrade_req();
        let request = session.req_header();
        ctx.request_id = identity::request_id(request);
        ctx.client_ip = identity::client_ip(peer, request, &ctx.snapshot.trusted_proxies);
        let (header_bytes, verdict) = strict::inspect(session, ctx.snapshot.paths);
        ctx.header_bytes = header_bytes;
        match verdict {
            Ok(()) => ctx.route = find_route(session.req_header(), &ctx.snapshot),
            Err(bad) => {
                if !bad.keeps_connection() {
                    session.set_keepalive(None);
                }
                ctx.bad_request = Some(bad);
            }
        }
        if let Some(tracer) = &ctx.snapshot.tracer {
            let ratio = ctx.route().and_then(|route| route.spec.trace_ratio);
            let request = session.req_header();
            ctx.trace = Some(tracer.start(&request.method, &request.headers, ratio));
        }
        ctx.metrics().start();
        ctx.in_flight = true;
        if ctx.connection.is_none() {
            ctx.connection = Some(Connection::open());
        }
        Ok(())
    }

    /// A keep-alive connection's next request: it carries the connection's count on.
    fn on_connection_reuse(
        &self,
        _session: &mut Session,
        ctx: &mut RequestCtx,
        previous: Box<dyn std::any::Any + Send + Sync>,
    ) {
        if let Ok(connection) = previous.downcast::<Connection>() {
            ctx.connection = Some(*connection);
        }
    }

    /// The connection stays open for another request: it stays counted (a zero-sized token).
    fn persist_connection_context(
        &self,
        _session: &Session,
        _ctx: &RequestCtx,
    ) -> Option<Box<dyn std::any::Any + Send + Sync>> {
        Some(Box::new(Connection::open()))
    }

    /// Admission: a refused request is answered here and never reaches a backend.
    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        match admission::admit(session, ctx).await {
            Admission::Proxy if ctx.route().is_some_and(|r| r.aggregate.is_some()) => {
                Box::pin(aggregation::answer(session, ctx, &self.parts)).await?;
                Ok(true)
            }
            Admission::Proxy => match traced_fresh_hit(session, ctx) {
                Some(hit) => {
                    Box::pin(caching::answer(session, ctx, hit)).await?;
                    Ok(true)
                }
                None => Ok(false),
            },
            Admission::Preflight => {
                Box::pin(respond::preflight(session, ctx)).await?;
                Ok(true)
            }
            Admission::Upgrade => {
                Box::pin(tunnel::proxy(session, ctx, &self.tunnels)).await?;
                Ok(true)
            }
            Admission::Refuse(rejection) => {
                Box::pin(reject(session, ctx, rejection)).await?;
                Ok(true)
            }
        }
    }

    /// Caching routes turn Pingora's cache on for the methods they cache.
    fn request_cache_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<()> {
        caching::enable(session, ctx);
        Ok(())
    }

    /// Host + path + query, the route and its `vary` headers.
    fn cache_key_callback(&self, session: &Session, ctx: &mut RequestCtx) -> Result<CacheKey> {
        if let Some(trace) = ctx.trace.as_mut() {
            trace.cache_lookup_starts();
        }
        caching::key(session, ctx)
    }

    /// Nothing stored (yet): this request fetches, others with the same key wait for it.
    fn cache_miss(&self, session: &mut Session, ctx: &mut RequestCtx) {
        ctx.cache_looked_up = true;
        if let Some(trace) = ctx.trace.as_mut() {
            trace.cache_lookup_ends("miss");
        }
        session.cache.cache_miss();
    }

    /// An entry was found (fresh or stale); Pingora decides what to do with it.
    async fn cache_hit_filter(
        &self,
        _session: &mut Session,
        _meta: &CacheMeta,
        _hit_handler: &mut HitHandler,
        is_fresh: bool,
        ctx: &mut RequestCtx,
    ) -> Result<Option<ForcedFreshness>> {
        ctx.cache_looked_up = true;
        if let Some(trace) = ctx.trace.as_mut() {
            trace.cache_lookup_ends(if is_fresh { "hit" } else { "stale" });
        }
        Ok(None)
    }

    /// HTTP freshness with the route's defaults decides whether the response is stored.
    fn response_cache_filter(
        &self,
        session: &Session,
        response: &ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<RespCacheable> {
        Ok(caching::decide(session, response, ctx))
    }

    /// The stored response's `Vary` picks the variant.
    fn cache_vary_filter(
        &self,
        meta: &CacheMeta,
        ctx: &mut RequestCtx,
        request: &RequestHeader,
    ) -> Option<HashBinary> {
        // A compressing route sends the origin no `Accept-Encoding`: its answer cannot vary
        // with it, whatever its `Vary` says.
        crate::cache::policy::variance(meta, request, ctx.compression.is_some())
    }

    /// Stale copies answer while revalidating, and when the origin fails.
    fn should_serve_stale(
        &self,
        _session: &mut Session,
        _ctx: &mut RequestCtx,
        error: Option<&Error>,
    ) -> bool {
        caching::serve_stale(error)
    }

    /// Enforces `max_body_size` on bodies without (or lying about) Content-Length.
    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        _end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        ctx.body_bytes += body.as_ref().map_or(0, |b| b.len() as u64);
        match ctx.route() {
            // After a 101 these are the tunnel's bytes, not a request body.
            Some(route) if ctx.body_bytes > route.spec.max_body_size && !ctx.upgraded => {
                Error::e_explain(
                    ErrorType::HTTPStatus(413),
                    "the request body is larger than allowed",
                )
            }
            _ => Ok(()),
        }
    }

    /// An exchange past its deadline (`routes[].timeout`, `grpc-timeout`) ends, even while the
    /// backend is still sending: the client connection closes mid-body.
    fn upstream_response_body_filter(
        &self,
        _session: &mut Session,
        _body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<Option<std::time::Duration>> {
        if !end_of_stream && ctx.upstream.past_deadline() {
            return Error::e_explain(ErrorType::HTTPStatus(504), dispatch::DEADLINE_PASSED);
        }
        Ok(None)
    }

    /// Pool (or split branch), in-flight cap, then a healthy backend not yet tried.
    async fn upstream_peer(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        let peer = dispatch::choose_peer(session.req_header(), ctx).await?;
        if let (Some(deadline), Some(client)) =
            (ctx.upstream.deadline, strict::client_stream(session))
        {
            client.set_exchange_deadline(Some(tokio::time::Instant::from_std(deadline)));
        }
        Ok(peer)
    }

    /// A traced attempt notes whether its connection came from the pool.
    async fn connected_to_upstream(
        &self,
        _session: &mut Session,
        reused: bool,
        _peer: &HttpPeer,
        #[cfg(unix)] _fd: std::os::unix::io::RawFd,
        #[cfg(windows)] _sock: std::os::windows::io::RawSocket,
        _digest: Option<&pingora_core::protocols::Digest>,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if ctx.trace.is_some() {
            ctx.upstream.reused = Some(reused);
        }
        Ok(())
    }

    /// Retry a failed connection on another backend when the route allows it.
    fn fail_to_connect(
        &self,
        session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut RequestCtx,
        error: Box<Error>,
    ) -> Box<Error> {
        let replayable = !session.as_ref().retry_buffer_truncated();
        dispatch::on_connect_failure(session.req_header(), ctx, replayable, error)
    }

    /// A failure after connecting: outlier accounting, then the route's retry policy.
    fn error_while_proxy(
        &self,
        _peer: &HttpPeer,
        session: &mut Session,
        error: Box<Error>,
        ctx: &mut RequestCtx,
        client_reused: bool,
    ) -> Box<Error> {
        let replayable = !session.as_ref().retry_buffer_truncated();
        dispatch::on_proxy_error(session.req_header(), ctx, replayable, client_reused, error)
    }

    /// Prefix stripping, X-Forwarded-*, request id, configured request header edits.
    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        forwarding::prepare_upstream_request(upstream_request, ctx, transport(session))
    }

    /// The backend answered: a 304 revalidating a stored response is noted, the attempt is
    /// counted (and a 5xx retried when the route says so).
    async fn upstream_response_filter(
        &self,
        session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let replayable = !session.as_ref().retry_buffer_truncated();
        let status = upstream_response.status.as_u16();
        caching::note_revalidation(session, upstream_response, ctx);
        dispatch::on_response(session.req_header(), ctx, status, replayable)
    }

    /// After an unsafe method the stored target is invalidated; then hop-by-hop fields go, and
    /// configured response header edits, the request id, `X-Cache` and `Age` come.
    async fn response_filter(
        &self,
        session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        caching::invalidate_after_unsafe(session, ctx, upstream_response);
        let cache_labels = caching::labels(session, ctx);
        // A background refresh is read by nobody: its answer is stored, never compressed.
        let body = if ctx.compression.is_none() || caching::is_background_refresh(session) {
            forwarding::Body::Untouched
        } else {
            forwarding::Body::Streamed(caching::hit_body_len(session))
        };
        ctx.encoder =
            outgoing_response(session, upstream_response, ctx, cache_labels, body)?.map(Box::new);
        Ok(())
    }

    /// A compressed response's body goes through its encoder.
    fn response_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<bytes::Bytes>,
        end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<Option<std::time::Duration>> {
        if let Some(encoder) = ctx.encoder.as_mut() {
            encoder.filter(body, end_of_stream)?;
        }
        Ok(None)
    }

    /// Any failure becomes the JSON error of DESIGN.md (502/503/504/...).
    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        error: &Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
        let client = strict::client_stream(session);
        if let Some(client) = client {
            // The answer is ours, with our Date.
            client.keep_origin_date(None);
        }
        let violation = client.and_then(|c| c.violation());
        let classified = match violation {
            Some(violation) => Some(strict::BadRequest::Framing(violation).rejection()),
            // The client read woke at the exchange deadline while the backend was still busy.
            None if client.is_some_and(|c| c.exchange_expired()) => {
                dispatch::close_attempt(ctx, dispatch::Attempt::Failed);
                Some(respond::Refusal::DeadlinePassed.into())
            }
            None => respond::classify(error),
        };
        let Some(mut rejection) = classified else {
            return FailToProxy {
                error_code: 0,
                can_reuse_downstream: false,
            };
        };
        // A tunnel that idled out is not a slow client.
        if rejection.status == 408 && !ctx.upgraded {
            crate::observability::metrics::client_timeout(
                crate::observability::metrics::ClientTimeout::Body,
            );
        }
        if session.response_written().is_none() {
            // The connection is not reused after a failure; say so instead of advertising keep-alive.
            session.set_keepalive(None);
            decorate(&mut rejection, ctx);
            if let Err(write_error) = respond::send(
                session,
                ctx.request_id.as_str(),
                &rejection,
                error_form(session, ctx),
            )
            .await
            {
                log::debug!("cannot send the error response: {write_error}");
            }
        }
        FailToProxy {
            error_code: rejection.status,
            can_reuse_downstream: false,
        }
    }

    /// Metrics and the access-log line.
    async fn logging(&self, session: &mut Session, error: Option<&Error>, ctx: &mut RequestCtx) {
        report::finish(session, ctx, error);
    }
}

/// [`caching::fresh_hit`], timed as the trace's cache lookup when it is a hit.
fn traced_fresh_hit(
    session: &Session,
    ctx: &mut RequestCtx,
) -> Option<crate::cache::store::FreshHit> {
    let Some(trace) = ctx.trace.as_mut().filter(|trace| trace.recording()) else {
        return caching::fresh_hit(session, ctx);
    };
    trace.cache_lookup_starts();
    let hit = caching::fresh_hit(session, ctx);
    if let Some(trace) = ctx.trace.as_mut() {
        if hit.is_some() {
            trace.cache_lookup_ends("hit");
        }
    }
    hit
}

/// Answers a refused request with the JSON error (and the rate-limit headers of a limited route).
async fn reject(session: &mut Session, ctx: &RequestCtx, mut rejection: Rejection) -> Result<()> {
    decorate(&mut rejection, ctx);
    let form = error_form(session, ctx);
    respond::send(session, ctx.request_id.as_str(), &rejection, form).await
}

/// The route's headers on the gateway's own error answers: the rate-limit headers of a limited
/// route, and the CORS fields (so a browser lets the page read why it was refused).
fn decorate(rejection: &mut Rejection, ctx: &RequestCtx) {
    if let Some(report) = &ctx.ratelimit {
        rejection.headers = crate::ratelimit::headers(&ctx.snapshot.limiter, report);
    }
    if let (Some(report), Some(quotas)) = (&ctx.quota, &ctx.snapshot.limiter.quotas) {
        rejection.headers.extend(quotas.headers(report));
    }
    if let Some((policy, verdict)) = ctx.cors() {
        rejection.headers.extend(policy.error_headers(verdict));
    }
}

fn error_form(session: &Session, ctx: &RequestCtx) -> respond::ErrorForm {
    respond::error_form(ctx.route().map(|r| r.spec.grpc), session.req_header())
}

/// What every response from a backend or the store gets on its way out: the origin's `Date`
/// kept, hop-by-hop fields out, the response edits, `X-Cache`/`Age`, the request id, and no
/// keep-alive while the process drains.
fn outgoing_response(
    session: &mut Session,
    response: &mut ResponseHeader,
    ctx: &RequestCtx,
    cache_labels: Option<caching::Labels>,
    body: forwarding::Body,
) -> Result<Option<crate::compression::Encoder>> {
    if crate::lifecycle::draining() {
        keepalive(session, ctx);
    }
    forwarding::keep_origin_date(session, response);
    forwarding::prepare_response(response, ctx, cache_labels, body)
}

/// Downstream keep-alive: the configured timeout, or none while the process drains so clients
/// move to the instance that replaces it. A connection Pingora already decided to close (the
/// client asked, HTTP/1.0, or both `Transfer-Encoding` and `Content-Length`: RFC 9112 §6.1)
/// stays closing.
fn keepalive(session: &mut Session, ctx: &RequestCtx) {
    if session.get_keepalive().is_none() {
        return;
    }
    let timeout = if crate::lifecycle::draining() {
        None
    } else {
        ctx.snapshot.keepalive_secs
    };
    session.set_keepalive(timeout);
}

/// The route of a request. A CORS preflight is routed as the request it announces (its
/// `Access-Control-Request-Method`), so a route that matches only `GET` or `PUT` still answers the
/// browser's `OPTIONS` before them; when that route has no `cors`, the `OPTIONS` is routed as
/// itself.
fn find_route(request: &RequestHeader, snapshot: &crate::snapshot::Snapshot) -> Option<usize> {
    if crate::cors::is_preflight(&request.method, &request.headers) {
        let announced = request
            .headers
            .get(http::header::ACCESS_CONTROL_REQUEST_METHOD)
            .and_then(|method| http::Method::from_bytes(method.as_bytes()).ok());
        if let Some(method) = announced {
            let view = crate::routing::RequestView {
                method: &method,
                ..routing_view(request)
            };
            let route = snapshot.router.find(&view);
            if route.is_some_and(|index| snapshot.routes[index].spec.cors.is_some()) {
                return route;
            }
        }
    }
    snapshot.router.find(&routing_view(request))
}

fn routing_view(request: &RequestHeader) -> crate::routing::RequestView<'_> {
    crate::routing::RequestView {
        method: &request.method,
        host: identity::request_host(request),
        path: request.uri.path(),
        headers: &request.headers,
    }
}

/// How the client reached the gateway: its address and TLS.
fn transport(session: &Session) -> identity::Transport<'_> {
    identity::Transport {
        peer: peer_ip(session),
        tls: session.digest().and_then(|d| d.ssl_digest.as_deref()),
    }
}
