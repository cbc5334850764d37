//! Aggregation routes after admission: each part's request is rendered from the caller's, the
//! parts run concurrently through the same pools as proxied traffic (selection, health,
//! ejection, in-flight caps, retries, pooled connections, upstream TLS/h2), and one JSON answer
//! goes back. A cached route answers a stored copy first; a complete answer is stored.

use super::ctx::RequestCtx;
use super::dispatch::{self, Attempt, Failure};
use super::respond::Rejection;
use crate::aggregate::answer::{self, Data, Piece};
use crate::aggregate::template::{query_value, Encoding, PartValues};
use crate::aggregate::{Outcome, PartRecord};
use crate::config::PartSpec;
use crate::observability::tracing::context::SpanId;
use crate::upstream::{Pool, Tried};
use bytes::{Bytes, BytesMut};
use futures_util::stream::{FuturesUnordered, StreamExt};
use http::{HeaderMap, HeaderName, HeaderValue};
use pingora_core::connectors::http::Connector;
use pingora_core::protocols::http::client::HttpSession;
use pingora_core::upstreams::peer::{HttpPeer, Peer};
use pingora_error::{ErrorType, Result, RetryType};
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::Session;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// No backend tried yet (see `Exchange::run`).
const NO_BACKEND: usize = usize::MAX;

static APPLICATION_JSON: HeaderValue = HeaderValue::from_static("application/json");

/// Answers an aggregation request that passed admission: from the cache, or by fanning out.
/// `Err` only when the client could not be written to.
pub async fn answer(
    session: &mut Session,
    ctx: &mut RequestCtx,
    connector: &Connector,
) -> Result<()> {
    let snapshot = Arc::clone(&ctx.snapshot);
    let Some(route) = ctx.route.and_then(|index| snapshot.routes.get(index)) else {
        return Ok(());
    };
    let Some(plan) = route.aggregate.as_ref() else {
        return Ok(());
    };
    let started = Instant::now();
    let request = session.req_header();
    let rendered = render_parts(&plan.spec.parts, request, ctx, route);
    let cache_key = cache_key(session, ctx, &rendered);
    if let Some((key, _)) = &cache_key {
        if let Some(trace) = ctx.trace.as_mut() {
            trace.cache_lookup_starts();
        }
        let hit = snapshot
            .cache
            .as_ref()
            .and_then(|cache| cache.store().fresh(*key, std::time::SystemTime::now()));
        if let Some(trace) = ctx.trace.as_mut() {
            trace.cache_lookup_ends(if hit.is_some() { "hit" } else { "miss" });
        }
        if let Some(hit) = hit {
            return super::caching::answer(session, ctx, hit).await;
        }
    }
    let base = base_request(session, ctx)?;
    let deadline = started + plan.spec.timeout;
    let outcome = {
        let exchange = Exchange {
            ctx,
            route,
            connector,
            client_headers: &session.req_header().headers,
            base: &base,
            max_part_size: plan.spec.max_part_size,
        };
        exchange.run(&plan.spec.parts, rendered, deadline).await
    };
    let results = match outcome {
        Ok(results) => results,
        Err((part, result)) => {
            record_parts(ctx, plan, &[(part, result.clone())], started);
            let rejection = Rejection::new(
                result.outcome.error_status(),
                format!(
                    "the required part `{}` failed: {}",
                    plan.spec.parts[part].name,
                    result.outcome.reason().unwrap_or_default()
                ),
            );
            return super::reject(session, ctx, rejection).await;
        }
    };
    record_parts(ctx, plan, &results, started);
    let pieces: Vec<Piece<'_>> = results
        .iter()
        .map(|(index, result)| Piece {
            name: &plan.spec.parts[*index].name,
            data: &result.data,
            reason: result.outcome.reason(),
        })
        .collect();
    let complete = pieces.iter().all(|piece| piece.reason.is_none());
    let body = Bytes::from(answer::assemble(&pieces, started.elapsed()));
    let mut header = ResponseHeader::build(200, Some(3))?;
    header.insert_header(http::header::CONTENT_TYPE, APPLICATION_JSON.clone())?;
    header.insert_header(http::header::CONTENT_LENGTH, body.len())?;
    if let Some((key, url)) = cache_key {
        ctx.cache_looked_up = true;
        // A partial answer is not kept: the next caller may get every part.
        if complete {
            store(ctx, key, url, &header, body.clone());
        }
    }
    let labels = super::caching::labels(session, ctx);
    super::caching::send_whole(session, ctx, Box::new(header), body, labels).await
}

/// Each part's request target (`Err`: the variable that has no value for this caller).
type Rendered = Vec<std::result::Result<Target, String>>;

/// A part's rendered path and headers.
struct Target {
    path: Vec<u8>,
    headers: Vec<(HeaderName, HeaderValue)>,
    /// The part's own span as the backend's parent (a recording trace).
    traceparent: Option<HeaderValue>,
}

/// The caller's request as part templates read it.
struct Caller<'a> {
    ctx: &'a RequestCtx,
    request: &'a RequestHeader,
    route: &'a crate::snapshot::Route,
}

impl PartValues for Caller<'_> {
    fn claims(&self) -> Option<&serde_json::Map<String, serde_json::Value>> {
        Some(&self.ctx.auth.as_ref()?.identity.claims)
    }

    fn consumer(&self) -> Option<&str> {
        self.ctx.auth.as_ref()?.identity.consumer.as_deref()
    }

    fn request_id(&self) -> &str {
        self.ctx.request_id.as_str()
    }

    fn query(&self, name: &str) -> Option<&str> {
        query_value(self.request.uri.query()?, name)
    }

    fn path_segment(&self, name: &str) -> Option<&str> {
        match &self.route.spec.matcher.path {
            crate::config::PathMatch::Template(template) => {
                template.capture(self.request.uri.path(), name)
            }
            _ => None,
        }
    }

    fn header(&self, name: &HeaderName) -> Option<&[u8]> {
        self.request.headers.get(name).map(HeaderValue::as_bytes)
    }
}

fn render_parts(
    parts: &[PartSpec],
    request: &RequestHeader,
    ctx: &RequestCtx,
    route: &crate::snapshot::Route,
) -> Rendered {
    let caller = Caller {
        ctx,
        request,
        route,
    };
    parts
        .iter()
        .map(|part| {
            let mut path = Vec::with_capacity(64);
            part.path
                .render(&caller, Encoding::Uri, &mut path)
                .map_err(|variable| variable.describe())?;
            let mut headers = Vec::with_capacity(part.headers.len());
            for (name, template) in &part.headers {
                let mut value = Vec::new();
                template
                    .render(&caller, Encoding::Raw, &mut value)
                    .map_err(|variable| variable.describe())?;
                let value = HeaderValue::from_maybe_shared(Bytes::from(value))
                    .map_err(|_| format!("header.{name}"))?;
                headers.push((name.clone(), value));
            }
            Ok(Target {
                path,
                headers,
                traceparent: None,
            })
        })
        .collect()
}

/// The store's key for this answer when the route caches the method: the route's key (host,
/// path, query, `vary` headers) and what every part asks for, so callers whose parts ask
/// different things (another `{claim.sub}`) never share an answer. With it, the purge URL.
fn cache_key(session: &Session, ctx: &RequestCtx, rendered: &Rendered) -> Option<(u128, String)> {
    let route = ctx.route()?;
    let policy = route.cache.as_ref()?;
    ctx.snapshot.cache.as_ref()?;
    let request = session.req_header();
    if !policy.allows(&request.method) {
        return None;
    }
    let mut parts = Vec::with_capacity(128);
    for target in rendered {
        parts.push(0);
        if let Ok(target) = target {
            parts.extend_from_slice(&target.path);
            for (name, value) in &target.headers {
                parts.push(1);
                parts.extend_from_slice(name.as_str().as_bytes());
                parts.push(1);
                parts.extend_from_slice(value.as_bytes());
            }
        }
    }
    if let Some(auth) = &ctx.auth {
        for (name, value) in &auth.identity.forwarded {
            parts.push(2);
            parts.extend_from_slice(name.as_str().as_bytes());
            parts.push(1);
            parts.extend_from_slice(value.as_bytes());
        }
    }
    let host = super::identity::request_host(request);
    let target = super::caching::request_target(request);
    let key = crate::cache::key::hash_with(
        host,
        target,
        &route.spec.name,
        &policy.vary,
        &request.headers,
        &parts,
    );
    Some((key, crate::cache::key::url(host, target)))
}

/// Stores a complete answer for the route's `ttl` (zero: not stored).
fn store(ctx: &RequestCtx, key: u128, url: String, header: &ResponseHeader, body: Bytes) {
    let (Some(route), Some(cache)) = (ctx.route(), ctx.snapshot.cache.as_ref()) else {
        return;
    };
    let Some(policy) = route.spec.cache.as_ref() else {
        return;
    };
    if policy.ttl.is_zero() {
        return;
    }
    if let Err(error) = cache
        .store()
        .insert(key, &url, header.clone(), body, policy.ttl)
    {
        log::debug!(
            "route `{}`: the aggregated answer is not cached: {error}",
            route.spec.name
        );
    }
}

/// The headers every part carries, prepared once: the request id, `X-Forwarded-*`, the
/// forwarded identity and client certificate, the route's `request_headers`.
fn base_request(session: &Session, ctx: &RequestCtx) -> Result<RequestHeader> {
    let client = session.req_header();
    let mut base = RequestHeader::build("GET", b"/", Some(16))?;
    for name in [
        &http::header::HOST,
        &super::forwarding::X_FORWARDED_FOR,
        &super::forwarding::X_FORWARDED_PROTO,
        &super::forwarding::X_FORWARDED_HOST,
    ] {
        for value in client.headers.get_all(name) {
            base.append_header(name.clone(), value.clone())?;
        }
    }
    if ctx.request_id.from_client {
        base.insert_header(
            super::identity::X_REQUEST_ID.clone(),
            ctx.request_id.header_value(),
        )?;
    }
    super::forwarding::prepare_upstream_request(&mut base, ctx, super::transport(session))?;
    // Each part is addressed to its backend.
    base.remove_header(&http::header::HOST);
    Ok(base)
}

/// How one part ended, and what it adds to the answer.
#[derive(Clone)]
struct PartResult {
    outcome: Outcome,
    status: Option<u16>,
    data: Data,
    ended: Instant,
    /// The last backend tried.
    backend: Option<usize>,
    /// The part's client span (a recording trace).
    span: Option<SpanId>,
}

impl PartResult {
    fn failed(outcome: Outcome, status: Option<u16>) -> Self {
        PartResult {
            outcome,
            status,
            data: Data::Null,
            ended: Instant::now(),
            backend: None,
            span: None,
        }
    }
}

/// Counts each part and keeps them for the access log.
fn record_parts(
    ctx: &mut RequestCtx,
    plan: &crate::aggregate::Plan,
    results: &[(usize, PartResult)],
    started: Instant,
) {
    let records = results
        .iter()
        .filter_map(|(index, result)| {
            let planned = plan.parts.get(*index)?;
            let duration = result.ended.saturating_duration_since(started);
            planned
                .metrics
                .observe(&result.outcome, duration.as_secs_f64());
            Some(PartRecord {
                name: Arc::clone(&planned.name),
                outcome: result.outcome.clone(),
                status: result.status,
                duration,
            })
        })
        .collect();
    ctx.aggregate = Some(records);
    let now = SystemTime::now();
    let fan_out_started = now.checked_sub(started.elapsed()).unwrap_or(now);
    let snapshot = Arc::clone(&ctx.snapshot);
    let Some(trace) = ctx.trace.as_mut() else {
        return;
    };
    for (index, result) in results {
        let (Some(span), Some(spec)) = (result.span, plan.spec.parts.get(*index)) else {
            continue;
        };
        let pool = snapshot.pools.get(spec.upstream);
        trace.part_span(
            span,
            fan_out_started,
            &crate::observability::tracing::PartFacts {
                part: &spec.name,
                upstream: pool.map_or("", |p| p.name.as_str()),
                backend: result
                    .backend
                    .and_then(|b| pool?.backends.get(b))
                    .map(|b| b.label.as_str()),
                status: result.status,
                outcome: Outcome::LABELS[result.outcome.index()],
            },
        );
    }
}

/// What the parts of one request share.
struct Exchange<'a> {
    ctx: &'a RequestCtx,
    route: &'a crate::snapshot::Route,
    connector: &'a Connector,
    client_headers: &'a HeaderMap,
    base: &'a RequestHeader,
    max_part_size: usize,
}

impl Exchange<'_> {
    /// Runs every part to its end or its deadline; a failed required part ends the whole
    /// exchange at once (the others are dropped, which closes their connections).
    async fn run(
        &self,
        parts: &[PartSpec],
        rendered: Rendered,
        deadline: Instant,
    ) -> std::result::Result<Vec<(usize, PartResult)>, (usize, PartResult)> {
        let mut results: Vec<Option<PartResult>> = vec![None; parts.len()];
        // The last backend each part tried (`NO_BACKEND`: none yet); atomics, as the request's
        // future must be `Send`.
        let backends: Vec<AtomicUsize> =
            parts.iter().map(|_| AtomicUsize::new(NO_BACKEND)).collect();
        // Each part of a recording trace is a client span; its request names it as the parent.
        let trace = self.ctx.trace.as_deref().filter(|trace| trace.recording());
        let spans: Vec<Option<SpanId>> = parts
            .iter()
            .map(|_| trace.map(|_| crate::observability::tracing::context::new_span_id()))
            .collect();
        // Declared after what its futures borrow, so it is dropped first.
        let mut running = FuturesUnordered::new();
        for (index, (part, target)) in parts.iter().zip(rendered).enumerate() {
            let part_deadline = part
                .timeout
                .map_or(deadline, |timeout| deadline.min(Instant::now() + timeout));
            let backend = &backends[index];
            let traceparent = trace
                .zip(spans[index])
                .map(|(t, span)| t.traceparent_for(&span));
            running.push(async move {
                let result = match target {
                    Err(variable) => PartResult::failed(Outcome::Unresolved(variable), None),
                    Ok(mut target) => {
                        target.traceparent = traceparent;
                        self.fetch(part, target, part_deadline, backend).await
                    }
                };
                (index, result)
            });
        }
        while let Some((index, mut result)) = running.next().await {
            result.backend =
                Some(backends[index].load(Ordering::Relaxed)).filter(|&b| b != NO_BACKEND);
            result.span = spans[index];
            if parts[index].required && result.outcome != Outcome::Ok {
                return Err((index, result));
            }
            results[index] = Some(result);
        }
        Ok(results
            .into_iter()
            .enumerate()
            .filter_map(|(index, result)| Some((index, result?)))
            .collect())
    }

    /// One part, bounded by `deadline`: attempts on the pool's backends as the route's
    /// `retries` allow.
    async fn fetch(
        &self,
        part: &PartSpec,
        target: Target,
        deadline: Instant,
        backend: &AtomicUsize,
    ) -> PartResult {
        let Some(pool) = self.ctx.snapshot.pools.get(part.upstream) else {
            return PartResult::failed(Outcome::NoBackend, None);
        };
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, self.attempts(pool, part, target, deadline, backend)).await
        {
            Ok(result) => result,
            Err(_) => PartResult::failed(Outcome::Timeout, None),
        }
    }

    async fn attempts(
        &self,
        pool: &Arc<Pool>,
        part: &PartSpec,
        target: Target,
        deadline: Instant,
        tried_backend: &AtomicUsize,
    ) -> PartResult {
        let Some(mut lease) = pool.acquire() else {
            return PartResult::failed(Outcome::NoBackend, None);
        };
        let key = if pool.needs_key() {
            // As for proxied requests, the path without the query.
            let path = target.path.split(|&b| b == b'?').next().unwrap_or_default();
            let path = String::from_utf8_lossy(path);
            dispatch::hash_key(pool, &path, self.client_headers, self.ctx)
        } else {
            0
        };
        let policy = &self.route.spec.retries;
        let idempotent = part.method.is_idempotent();
        let mut tried = Tried::default();
        let mut retries = 0;
        let mut stale_resent = false;
        let mut same_backend: Option<usize> = None;
        let mut last = PartResult::failed(Outcome::NoBackend, None);
        loop {
            let index = match same_backend.take() {
                Some(index) => index,
                None => {
                    if retries > 0 && !policy.backoff.is_zero() {
                        tokio::time::sleep(policy.backoff).await;
                    }
                    match pool.pick(key, &tried) {
                        Some(index) => index,
                        None => return last,
                    }
                }
            };
            tried.insert(index);
            tried_backend.store(index, Ordering::Relaxed);
            lease.assign(index);
            let Some(backend) = pool.backends.get(index) else {
                return last;
            };
            let mut peer = backend.peer.clone();
            if stale_resent {
                peer.group_key = dispatch::fresh_connection_group();
            }
            dispatch::bound_reads_by(&mut peer, deadline, true);
            let request = match self.request(part, &target, &backend.host) {
                Ok(request) => request,
                Err(_) => return PartResult::failed(Outcome::Unresolved("path".into()), None),
            };
            let mut guard = AttemptGuard {
                pool,
                index,
                open: true,
            };
            let exchanged = exchange(self.connector, &peer, request, self.max_part_size).await;
            let failure = match exchanged {
                Ok((status, body)) => {
                    guard.close(Attempt::Response(status));
                    let (outcome, data) = answer::classify(status, body);
                    last = PartResult {
                        outcome,
                        status: Some(status),
                        data,
                        ended: Instant::now(),
                        backend: None,
                        span: None,
                    };
                    if status < 500 {
                        return last;
                    }
                    Failure::Status(status)
                }
                Err(PartError::TooLarge(status)) => {
                    guard.close(Attempt::Response(status));
                    return PartResult::failed(Outcome::TooLarge, Some(status));
                }
                Err(PartError::Stale) if !stale_resent && idempotent => {
                    // A pooled connection the backend had closed: the backend is fine.
                    guard.close(Attempt::Abandoned);
                    stale_resent = true;
                    same_backend = Some(index);
                    continue;
                }
                Err(error) => {
                    guard.close(Attempt::Failed);
                    let (outcome, failure) = match error {
                        PartError::Connect => (Outcome::ConnectFailure, Failure::Connect),
                        PartError::Timeout => (Outcome::Timeout, Failure::Timeout),
                        _ => (Outcome::Reset, Failure::Reset),
                    };
                    last = PartResult::failed(outcome, None);
                    failure
                }
            };
            let Some(reason) = dispatch::retry_reason(policy, failure, idempotent, true, retries)
            else {
                return last;
            };
            if !pool.has_untried(&tried) || Instant::now() + Duration::from_millis(5) >= deadline {
                return last;
            }
            self.route.metrics.retried(reason);
            retries += 1;
        }
    }

    /// The part's request to one backend: the shared headers, its method, path and headers,
    /// and the backend as `Host` unless the part sets one.
    fn request(
        &self,
        part: &PartSpec,
        target: &Target,
        host: &HeaderValue,
    ) -> Result<RequestHeader> {
        let mut request = self.base.clone();
        request.set_method(part.method.clone());
        let uri = http::Uri::try_from(target.path.as_slice()).map_err(|e| {
            pingora_error::Error::because(ErrorType::InvalidHTTPHeader, "part path", e)
        })?;
        request.set_uri(uri);
        request.insert_header(http::header::HOST, host.clone())?;
        for (name, value) in &target.headers {
            request.insert_header(name.clone(), value.clone())?;
        }
        if let Some(traceparent) = &target.traceparent {
            request.insert_header(
                crate::observability::tracing::TRACEPARENT.clone(),
                traceparent.clone(),
            )?;
        }
        Ok(request)
    }
}

/// Counts an attempt that ends without being closed (its part timed out) as a failure of the
/// backend, as a read timeout of proxied traffic is.
struct AttemptGuard<'a> {
    pool: &'a Pool,
    index: usize,
    open: bool,
}

impl AttemptGuard<'_> {
    fn close(&mut self, attempt: Attempt) {
        if std::mem::take(&mut self.open) {
            dispatch::record_attempt(self.pool, self.index, attempt);
        }
    }
}

impl Drop for AttemptGuard<'_> {
    fn drop(&mut self) {
        self.close(Attempt::Failed);
    }
}

/// Why one exchange with a backend failed.
enum PartError {
    Connect,
    /// A reused pooled connection failed before any answer.
    Stale,
    Timeout,
    Reset,
    /// The answer (with this status) is larger than `max_part_size`.
    TooLarge(u16),
}

/// One request and its whole answer over a pooled connection (given back when the answer
/// ended cleanly).
async fn exchange(
    connector: &Connector,
    peer: &HttpPeer,
    mut request: RequestHeader,
    max_size: usize,
) -> std::result::Result<(u16, Bytes), PartError> {
    let (mut session, reused) = connector
        .get_http_session(peer)
        .await
        .map_err(|_| PartError::Connect)?;
    let failed = |error: Box<pingora_error::Error>, answered: bool| {
        if reused && !answered && matches!(error.retry, RetryType::ReusedOnly) {
            return PartError::Stale;
        }
        match error.etype() {
            ErrorType::ReadTimedout | ErrorType::WriteTimedout => PartError::Timeout,
            _ => PartError::Reset,
        }
    };
    session.set_read_timeout(peer.options.read_timeout);
    session.set_write_timeout(peer.options.write_timeout);
    if let HttpSession::H2(_) = session {
        // HTTP/2 carries the authority and scheme as pseudo-headers.
        if let Some(uri) = absolute_uri(&request, peer) {
            request.set_uri(uri);
        }
    }
    let sent = async {
        session.write_request_header(Box::new(request)).await?;
        session.finish_request_body().await?;
        session.read_response_header().await
    };
    if let Err(error) = sent.await {
        return Err(failed(error, false));
    }
    let Some(status) = session.response_header().map(|h| h.status.as_u16()) else {
        return Err(PartError::Reset);
    };
    let announced = session
        .response_header()
        .and_then(|h| h.headers.get(http::header::CONTENT_LENGTH))
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if announced.is_some_and(|length| length > max_size) {
        return Err(PartError::TooLarge(status));
    }
    let mut body = BytesMut::with_capacity(announced.unwrap_or(0).min(max_size));
    loop {
        match session.read_response_body().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > max_size {
                    return Err(PartError::TooLarge(status));
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => break,
            Err(error) => return Err(failed(error, true)),
        }
    }
    if session.response_done() {
        connector
            .release_http_session(session, peer, peer.idle_timeout())
            .await;
    }
    Ok((status, body.freeze()))
}

/// `scheme://host/path` for an HTTP/2 request.
fn absolute_uri(request: &RequestHeader, peer: &HttpPeer) -> Option<http::Uri> {
    let host = request.headers.get(http::header::HOST)?.to_str().ok()?;
    let scheme = if peer.is_tls() { "https" } else { "http" };
    http::Uri::builder()
        .scheme(scheme)
        .authority(host)
        .path_and_query(request.uri.path_and_query()?.as_str())
        .build()
        .ok()
}
