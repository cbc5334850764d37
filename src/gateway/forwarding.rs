//! The headers sent upstream and back: X-Forwarded-*, the request id, prefix stripping,
//! configured header edits. Who the client is comes from [`super::identity`].

use super::ctx::RequestCtx;
use super::headers;
use super::identity::{Transport, X_REQUEST_ID};
use crate::config::HeaderOps;
use crate::routing::has_segment_prefix;
use crate::tls::peer::{
    ClientCertificate, CLIENT_CERT_HEADERS, CLIENT_CERT_PREFIX, X_CLIENT_CERT_FINGERPRINT,
    X_CLIENT_CERT_SAN, X_CLIENT_CERT_SUBJECT,
};
use http::header::HeaderMap;
use http::request::Parts as RequestParts;
use http::{HeaderName, HeaderValue};
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::Session;
use std::net::IpAddr;

pub(super) static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub(super) static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub(super) static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static HTTP: HeaderValue = HeaderValue::from_static("http");
static HTTPS: HeaderValue = HeaderValue::from_static("https");
static GRPC_TIMEOUT: HeaderName = HeaderName::from_static("grpc-timeout");
static CHUNKED: HeaderValue = HeaderValue::from_static("chunked");

/// The time until `deadline` as a `grpc-timeout` value (milliseconds, at least 1).
fn grpc_timeout_left(deadline: std::time::Instant) -> HeaderValue {
    let left = deadline.saturating_duration_since(std::time::Instant::now());
    let millis = left.as_millis().clamp(1, 99_999_999);
    let mut text = Vec::with_capacity(9);
    crate::fastfmt::push_number(&mut text, millis);
    text.push(b'm');
    HeaderValue::from_maybe_shared(bytes::Bytes::from(text))
        .unwrap_or_else(|_| HeaderValue::from_static("1m"))
}

/// Rewrites the upstream request: prefix, forwarding headers, request id, configured edits.
pub fn prepare_upstream_request(
    upstream: &mut RequestHeader,
    ctx: &RequestCtx,
    transport: Transport<'_>,
) -> pingora_error::Result<()> {
    let Some(route) = ctx.route() else {
        return Ok(());
    };
    let client_certificate = transport
        .tls
        .and_then(|tls| crate::tls::peer::registered(&tls.cert_digest));
    let client_certificate = client_certificate.as_deref();
    let forwarded_identity = ctx.auth.as_ref().map_or(0, |a| a.identity.forwarded.len());
    let additional = 4
        + forwarded_identity
        + route.spec.request_headers.set.len()
        + if client_certificate.is_some() { 3 } else { 0 };
    headers::edit_request(upstream, additional, |parts| {
        verified_identity_headers(&mut parts.headers, ctx, client_certificate)?;
        if let Some(auth) = &ctx.auth {
            for (name, value) in &auth.identity.forwarded {
                insert(&mut parts.headers, name, value.clone())?;
            }
            let provider = auth.provider.and_then(|i| ctx.snapshot.auth.provider(i));
            if let (Some(provider), Some(source)) = (provider, &auth.source) {
                if provider.spec.strip_token {
                    crate::auth::strip_token(parts, source)?;
                }
            }
        }
        if let Some(prefix) = &route.spec.strip_prefix {
            strip_prefix(parts, prefix)?;
        }
        forwarding_headers(&mut parts.headers, ctx, transport)?;
        if ctx.compression.is_some_and(|c| c.accept_encoding_sent) {
            // The gateway compresses: the origin's answer stays one plain representation,
            // which the cache stores once for every client.
            parts.headers.remove(http::header::ACCEPT_ENCODING);
        }
        if let Some(deadline) = ctx.grpc_deadline {
            // The backend gets what is left of the client's budget, not the whole of it.
            insert(
                &mut parts.headers,
                &GRPC_TIMEOUT,
                grpc_timeout_left(deadline),
            )?;
        }
        if let Some(trace) = &ctx.trace {
            trace_context(&mut parts.headers, trace)?;
        }
        apply_ops(&mut parts.headers, &route.spec.request_headers, ctx)
    })
}

/// Our span as the backend's parent; the client's `tracestate` only beside a continued trace
/// (an invalid `traceparent` is replaced, never passed on).
fn trace_context(
    headers: &mut HeaderMap,
    trace: &crate::observability::tracing::RequestTrace,
) -> pingora_error::Result<()> {
    use crate::observability::tracing::{TRACEPARENT, TRACESTATE};
    insert(headers, &TRACEPARENT, trace.traceparent())?;
    match trace.tracestate() {
        Some(state) => insert(headers, &TRACESTATE, state.clone()),
        None => {
            if trace.client_tracestate {
                headers.remove(&TRACESTATE);
            }
            Ok(())
        }
    }
}

/// Identity headers come only from the gateway: a client's copies are removed, then the
/// verified client certificate's are set.
fn verified_identity_headers(
    headers: &mut HeaderMap,
    ctx: &RequestCtx,
    client_certificate: Option<&ClientCertificate>,
) -> pingora_error::Result<()> {
    for name in ctx.snapshot.auth.spoofable_headers() {
        headers.remove(name);
    }
    // One scan of the names is cheaper than hashing three of them on every request.
    if headers
        .keys()
        .any(|name| name.as_str().starts_with(CLIENT_CERT_PREFIX))
    {
        for name in CLIENT_CERT_HEADERS {
            headers.remove(name);
        }
    }
    if let Some(certificate) = client_certificate {
        insert(headers, &X_CLIENT_CERT_SUBJECT, certificate.subject.clone())?;
        if let Some(san) = &certificate.san {
            insert(headers, &X_CLIENT_CERT_SAN, san.clone())?;
        }
        insert(
            headers,
            &X_CLIENT_CERT_FINGERPRINT,
            certificate.fingerprint.clone(),
        )?;
    }
    Ok(())
}

/// X-Forwarded-For/-Proto/-Host and a generated request id. A trusted proxy's
/// `X-Forwarded-Proto`/`-Host` are kept.
fn forwarding_headers(
    headers: &mut HeaderMap,
    ctx: &RequestCtx,
    transport: Transport<'_>,
) -> pingora_error::Result<()> {
    let peer = transport.peer;
    let peer_trusted = peer.is_some_and(|ip| {
        ctx.snapshot
            .trusted_proxies
            .iter()
            .any(|net| net.contains(&ip))
    });
    if let Some(peer) = peer {
        let forwarded = forwarded_for(headers.get_all(&X_FORWARDED_FOR), peer)?;
        insert(headers, &X_FORWARDED_FOR, forwarded)?;
    }
    if !peer_trusted || !headers.contains_key(&X_FORWARDED_PROTO) {
        let proto = if transport.tls.is_some() {
            &HTTPS
        } else {
            &HTTP
        };
        insert(headers, &X_FORWARDED_PROTO, proto.clone())?;
    }
    if let Some(host) = headers.get(http::header::HOST) {
        if !peer_trusted || !headers.contains_key(&X_FORWARDED_HOST) {
            let host = host.clone();
            insert(headers, &X_FORWARDED_HOST, host)?;
        }
    } else if let Some(backend) = ctx.upstream.lease.as_ref().and_then(|l| l.backend()) {
        // Only HTTP/1.0 may come without a Host; the backend is spoken to in HTTP/1.1, which
        // needs one (RFC 9112 §3.2), so it gets its own address, as the health check sends.
        insert(headers, &http::header::HOST, backend.host.clone())?;
    }
    if !ctx.request_id.from_client {
        insert(headers, &X_REQUEST_ID, ctx.request_id.header_value())?;
    }
    Ok(())
}

/// Replaces every value of `name` (a map past http's 32k-entry bound is an error, not a panic).
pub fn insert(
    headers: &mut HeaderMap,
    name: &HeaderName,
    value: HeaderValue,
) -> pingora_error::Result<()> {
    headers.try_insert(name.clone(), value).map_err(|e| {
        pingora_error::Error::because(
            pingora_error::ErrorType::InvalidHTTPHeader,
            "too many headers",
            e,
        )
    })?;
    Ok(())
}

/// Every hop the client's `X-Forwarded-For` lines list, in order, then `peer`: one line,
/// formatted without `fmt` machinery into one allocation.
fn forwarded_for(
    existing: http::header::GetAll<'_, HeaderValue>,
    peer: IpAddr,
) -> pingora_error::Result<HeaderValue> {
    let hops = || {
        existing
            .iter()
            .map(HeaderValue::as_bytes)
            .filter(|e| !e.iter().all(u8::is_ascii_whitespace))
    };
    let mut value = Vec::with_capacity(hops().map(|e| e.len() + 2).sum::<usize>() + 39);
    for hop in hops() {
        value.extend_from_slice(hop);
        value.extend_from_slice(b", ");
    }
    crate::fastfmt::push_ip(&mut value, peer);
    HeaderValue::from_maybe_shared(bytes::Bytes::from(value)).map_err(|e| {
        pingora_error::Error::because(
            pingora_error::ErrorType::InvalidHTTPHeader,
            "bad X-Forwarded-For",
            e,
        )
    })
}

fn apply_ops(
    headers: &mut HeaderMap,
    ops: &HeaderOps,
    ctx: &RequestCtx,
) -> pingora_error::Result<()> {
    for name in &ops.remove {
        headers.remove(name);
    }
    for (name, template) in &ops.set {
        match template.render(ctx) {
            Some(value) => insert(headers, name, value)?,
            // The client's copy must not stand in for the value the gateway would have set.
            None => {
                headers.remove(name);
            }
        }
    }
    Ok(())
}

/// The request's values for header templates.
impl crate::templates::Values for RequestCtx {
    fn request_id(&self) -> &str {
        self.request_id.as_str()
    }

    fn client_ip(&self) -> Option<IpAddr> {
        self.client_ip
    }

    /// The pool the request went to; on a cache hit, the route's only pool (a split route's
    /// hit went to none).
    fn upstream(&self) -> Option<&str> {
        let pool =
            self.upstream
                .pool
                .or_else(|| match self.route()?.spec.target {
                    crate::config::RouteTarget::Upstream(pool) => Some(pool),
                    crate::config::RouteTarget::Split(_)
                    | crate::config::RouteTarget::Aggregate(_) => None,
                })?;
        self.snapshot.pools.get(pool).map(|p| p.name.as_str())
    }

    fn consumer(&self) -> Option<&str> {
        self.auth.as_ref()?.identity.consumer.as_deref()
    }

    fn claims(&self) -> Option<&serde_json::Map<String, serde_json::Value>> {
        Some(&self.auth.as_ref()?.identity.claims)
    }
}

/// `/api/v1/users/7?x=1` with prefix `/api/v1` -> `/users/7?x=1`.
fn strip_prefix(request: &mut RequestParts, prefix: &str) -> pingora_error::Result<()> {
    let path = request.uri.path();
    if !has_segment_prefix(path, prefix) {
        return Ok(());
    }
    let rest = &path[prefix.len()..];
    let mut target = String::with_capacity(path.len() + 16);
    target.push_str(if rest.is_empty() { "/" } else { rest });
    if let Some(query) = request.uri.query() {
        target.push('?');
        target.push_str(query);
    }
    let uri = http::Uri::try_from(target).map_err(|e| {
        pingora_error::Error::because(
            pingora_error::ErrorType::InternalError,
            "strip_prefix produced a bad URI",
            e,
        )
    })?;
    request.uri = uri;
    Ok(())
}

/// The origin's `Date` stays on the response (RFC 9110 §6.6.1; downstream caches compute ages
/// from it): Pingora writes its own, so the client stream puts the origin's back (HTTP/1).
pub fn keep_origin_date(session: &Session, response: &ResponseHeader) {
    let Some(date) = response.headers.get(http::header::DATE) else {
        return;
    };
    if let (Some(client), Some(date)) = (
        super::strict::client_stream(session),
        crate::listener::date::imf_fixdate(date.as_bytes()),
    ) {
        client.keep_origin_date(Some(date));
    }
}

/// Removes the fields meant for this cache alone: the targeted cache-control fields it consumed
/// and the purge-tag header. One pass over the names finds whether there are any (there rarely
/// are), cheaper than a hashed lookup for each.
fn strip_cache_fields(headers: &mut HeaderMap, targeted: bool, tag_header: Option<&HeaderName>) {
    use crate::cache::policy::TARGETED_FIELDS;
    let ours = |name: &HeaderName| {
        (targeted && TARGETED_FIELDS.contains(name)) || tag_header == Some(name)
    };
    if !headers.keys().any(ours) {
        return;
    }
    if targeted {
        for name in &TARGETED_FIELDS {
            headers.remove(name);
        }
    }
    if let Some(name) = tag_header {
        headers.remove(name);
    }
}

/// How the body of a response being prepared will be sent, for compression.
#[derive(Debug, Clone, Copy)]
pub enum Body {
    /// Streamed: a compressed body is sent chunked (HTTP/1.1). Its length when known.
    Streamed(Option<u64>),
    /// At hand in one piece: a compressed body gets its own `Content-Length` afterwards.
    Whole(u64),
    /// Not compressed whatever the route says (a background refresh nobody reads).
    Untouched,
}

/// Response edits: configured header changes, rate-limit headers, cache labels, request id,
/// and on compressing routes the coding (returning the body's encoder when it is compressed).
pub fn prepare_response(
    response: &mut ResponseHeader,
    ctx: &RequestCtx,
    cache_labels: Option<super::caching::Labels>,
    body: Body,
) -> pingora_error::Result<Option<crate::compression::Encoder>> {
    let route = ctx.route();
    let ops = route.map(|r| &r.spec.response_headers);
    let cors = ctx.cors();
    let additional = 1
        + ops.map_or(0, |o| o.set.len())
        + cache_labels
            .as_ref()
            .map_or(0, |_| super::caching::Labels::MAX_HEADERS)
        + ctx
            .ratelimit
            .as_ref()
            .map_or(0, |_| crate::ratelimit::MAX_HEADERS)
        + cors.map_or(0, |_| crate::cors::MAX_RESPONSE_HEADERS)
        + ctx.compression.and_then(|c| c.coding).map_or(0, |_| 3);
    let status = response.status;
    // Hop-by-hop fields (RFC 9110 §7.6.1) stop here; a 101's `Upgrade` is what switches the
    // protocol.
    let hop_by_hop = response.status != http::StatusCode::SWITCHING_PROTOCOLS;
    // A caching route is the CDN that `CDN-Cache-Control` targets: it consumed the field.
    let cache_policy = route.and_then(|r| r.cache.as_ref());
    let consumed_targeted = cache_policy.is_some_and(|policy| !policy.forward_cdn_cache_control);
    let tag_header = cache_policy.and_then(|policy| policy.strip_tag_header.as_ref());
    headers::edit_response(response, additional, |headers| {
        if hop_by_hop {
            crate::cache::policy::strip_connection_options(headers);
        }
        if consumed_targeted || tag_header.is_some() {
            strip_cache_fields(headers, consumed_targeted, tag_header);
        }
        if let Some(ops) = ops {
            apply_ops(headers, ops, ctx)?;
        }
        if let Some(report) = &ctx.ratelimit {
            crate::ratelimit::write_headers(&ctx.snapshot.limiter, report, headers);
        }
        if let (Some(report), Some(quotas)) = (&ctx.quota, &ctx.snapshot.limiter.quotas) {
            quotas.write_headers(report, headers);
        }
        if let Some(labels) = cache_labels {
            labels.write(headers)?;
        }
        let compression = ctx.compression();
        // One pass over the fields serves both policies.
        let fields = (cors.is_some() || compression.is_some())
            .then(|| crate::compression::ResponseFields::of(headers));
        if let (Some((policy, verdict)), Some(fields)) = (cors, &fields) {
            policy.write_response_headers_seen(
                verdict,
                headers,
                fields.access_control,
                fields.vary,
            );
        }
        insert(headers, &X_REQUEST_ID, ctx.request_id.header_value())?;
        let (Some((policy, negotiated)), Some(fields)) = (compression, fields) else {
            return Ok(None);
        };
        let length = match body {
            Body::Untouched => return Ok(None),
            Body::Streamed(length) => length,
            Body::Whole(length) => Some(length),
        };
        let encoder =
            crate::compression::prepare(policy, negotiated, status, headers, &fields, length);
        if encoder.is_some() && matches!(body, Body::Streamed(_)) {
            headers.insert(http::header::TRANSFER_ENCODING, CHUNKED.clone());
        }
        Ok(encoder)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(uri: &str) -> RequestParts {
        RequestHeader::build("GET", uri.as_bytes(), None)
            .unwrap()
            .as_owned_parts()
    }

    #[test]
    fn forwarded_for_keeps_every_line_and_appends_the_peer() {
        let v4: IpAddr = "10.20.3.4".parse().unwrap();
        let mut headers = HeaderMap::new();
        assert_eq!(
            forwarded_for(headers.get_all(&X_FORWARDED_FOR), v4).unwrap(),
            "10.20.3.4"
        );
        headers.append(&X_FORWARDED_FOR, HeaderValue::from_static("1.1.1.1"));
        headers.append(&X_FORWARDED_FOR, HeaderValue::from_static("  "));
        headers.append(
            &X_FORWARDED_FOR,
            HeaderValue::from_static("2.2.2.2, 3.3.3.3"),
        );
        assert_eq!(
            forwarded_for(headers.get_all(&X_FORWARDED_FOR), v4).unwrap(),
            "1.1.1.1, 2.2.2.2, 3.3.3.3, 10.20.3.4"
        );
    }

    #[test]
    fn strip_prefix_keeps_the_query() {
        let mut req = parts("/api/v1/users/7?x=1&y=2");
        strip_prefix(&mut req, "/api/v1").unwrap();
        assert_eq!(req.uri.to_string(), "/users/7?x=1&y=2");
        let mut req = parts("/api/v1");
        strip_prefix(&mut req, "/api/v1").unwrap();
        assert_eq!(req.uri.to_string(), "/");
        let mut req = parts("/api/v10/x");
        strip_prefix(&mut req, "/api/v1").unwrap();
        assert_eq!(
            req.uri.to_string(),
            "/api/v10/x",
            "only on a segment boundary"
        );
    }
}
