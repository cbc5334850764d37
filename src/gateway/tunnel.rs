//! HTTP/1.1 upgrades (WebSocket) after the route's checks passed: the gateway sends the upgrade
//! request to a backend itself and, on `101 Switching Protocols`, copies bytes both ways until
//! either side closes or the tunnel idles out.
//!
//! Pingora 0.9's own upgrade path tears the tunnel down right after the 101 when the backend's
//! answer is read before the request's (empty) body end (cloudflare/pingora#946): a fast backend
//! loses about one WebSocket in three. This module does not go through that path.

use super::ctx::RequestCtx;
use super::{dispatch, forwarding};
use bytes::{Bytes, BytesMut};
use pingora_core::connectors::TransportConnector;
use pingora_core::protocols::Stream;
use pingora_error::{Error, ErrorType, OrErr, Result};
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::Session;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Largest response head a backend may send.
const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Largest body of a refusal (non-101) that is passed on; larger ones are cut to nothing.
const MAX_REFUSAL_BODY: usize = 64 * 1024;
/// Bytes read from the backend at a time.
const READ_CHUNK: usize = 16 * 1024;
/// Headers one response head may have.
const MAX_HEADERS: usize = 128;

/// Proxies the upgrade request of `session`; the response (101 and the tunnel, or the backend's
/// refusal) is written to the client here. An error before anything was written becomes the
/// gateway's error answer.
pub async fn proxy(
    session: &mut Session,
    ctx: &mut RequestCtx,
    connector: &TransportConnector,
) -> Result<()> {
    let mut request = session.req_header().clone();
    let peer = dispatch::choose_peer(&request, ctx).await?;
    let mut upstream = match connector.new_stream(&*peer).await {
        Ok(stream) => stream,
        Err(error) => {
            return Err(dispatch::on_connect_failure(
                session.req_header(),
                ctx,
                false,
                error,
            ))
        }
    };
    forwarding::prepare_upstream_request(&mut request, ctx, super::transport(session))?;
    let write_timeout = peer.options.write_timeout;
    let read_timeout = peer.options.read_timeout;
    let exchange = async {
        within(write_timeout, upstream.write_all(&serialize(&request))).await?;
        within(write_timeout, upstream.flush()).await?;
        within(read_timeout, read_head(&mut upstream)).await
    };
    let (mut response, early) = match exchange.await {
        Ok(answer) => answer,
        Err(error) => {
            return Err(dispatch::on_proxy_error(
                session.req_header(),
                ctx,
                false,
                false,
                error,
            ))
        }
    };
    let status = response.status.as_u16();
    dispatch::on_response(session.req_header(), ctx, status, false)?;
    forwarding::prepare_response(&mut response, ctx, None, forwarding::Body::Untouched)?;
    if status != 101 {
        return refuse(session, upstream, response, early).await;
    }
    open(session, ctx);
    session
        .write_response_header(Box::new(response), false)
        .await?;
    if !early.is_empty() {
        session.write_response_body(Some(early), false).await?;
    }
    relay(session, ctx, upstream).await
}

/// Runs the deadline `limit` (none: unbounded) over an I/O step.
async fn within<T>(
    limit: Option<Duration>,
    step: impl std::future::Future<Output = std::io::Result<T>>,
) -> Result<T> {
    let result = match limit {
        Some(limit) => tokio::time::timeout(limit, step)
            .await
            .map_err(|_| Error::explain(ErrorType::ReadTimedout, "upgrade: no answer in time"))?,
        None => step.await,
    };
    result.or_err(ErrorType::ReadError, "upgrade: talking to the backend")
}

/// The request head as HTTP/1.1 bytes.
fn serialize(request: &RequestHeader) -> Vec<u8> {
    let target = request.uri.path_and_query().map_or("/", |pq| pq.as_str());
    let mut head = Vec::with_capacity(256);
    head.extend_from_slice(request.method.as_str().as_bytes());
    head.push(b' ');
    head.extend_from_slice(target.as_bytes());
    head.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in &request.headers {
        head.extend_from_slice(name.as_str().as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(b"\r\n");
    head
}

/// Reads the backend's response head; returns it and the bytes that came after it.
async fn read_head(upstream: &mut Stream) -> std::io::Result<(ResponseHeader, Bytes)> {
    let mut buffer = BytesMut::with_capacity(4096);
    loop {
        if upstream.read_buf(&mut buffer).await? == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the backend closed before answering the upgrade",
            ));
        }
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut parsed = httparse::Response::new(&mut headers);
        let invalid = |e: &dyn std::fmt::Display| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("bad response: {e}"),
            )
        };
        match parsed.parse(&buffer).map_err(|e| invalid(&e))? {
            httparse::Status::Complete(length) => {
                let status = parsed.code.unwrap_or(502);
                let mut response = ResponseHeader::build(status, Some(parsed.headers.len()))
                    .map_err(|e| invalid(&e))?;
                for header in parsed.headers.iter() {
                    response
                        .append_header(header.name.to_string(), header.value)
                        .map_err(|e| invalid(&e))?;
                }
                let rest = buffer.split_off(length).freeze();
                return Ok((response, rest));
            }
            httparse::Status::Partial if buffer.len() >= MAX_HEAD_BYTES => {
                return Err(invalid(&"response head too large"));
            }
            httparse::Status::Partial => {}
        }
    }
}

/// The backend did not switch protocols: its answer is passed on (a body only when it has a
/// Content-Length of at most 64 KiB) and the connection closes.
async fn refuse(
    session: &mut Session,
    mut upstream: Stream,
    mut response: ResponseHeader,
    early: Bytes,
) -> Result<()> {
    let length = response
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|length| *length <= MAX_REFUSAL_BODY);
    let mut body = BytesMut::from(&early[..]);
    if let Some(length) = length {
        while body.len() < length {
            let read = within(Some(Duration::from_secs(5)), upstream.read_buf(&mut body)).await;
            if !matches!(read, Ok(1..)) {
                break;
            }
        }
    }
    let body = match length {
        Some(length) if body.len() >= length => body.split_to(length).freeze(),
        _ => Bytes::new(),
    };
    response.remove_header(&http::header::TRANSFER_ENCODING);
    response.insert_header(http::header::CONTENT_LENGTH, body.len())?;
    response.insert_header(http::header::CONNECTION, "close")?;
    session.set_keepalive(None);
    session
        .write_response_header(Box::new(response), false)
        .await?;
    session.write_response_body(Some(body), true).await
}

/// The connection is now a tunnel: its bytes are not HTTP/1 (the strict shadow stops), it idles
/// out after the route's `websocket.idle_timeout`, and it is counted until the request ends.
fn open(session: &mut Session, ctx: &mut RequestCtx) {
    if let Some(client) = super::strict::client_stream(session) {
        client.upgraded();
    }
    let idle = idle_timeout(ctx);
    session.set_read_timeout(Some(idle));
    session.set_write_timeout(Some(idle));
    session.set_keepalive(None);
    ctx.upgraded = true;
    ctx.metrics().upgrade_started();
}

fn idle_timeout(ctx: &RequestCtx) -> Duration {
    ctx.route()
        .map_or(crate::config::DEFAULT_WEBSOCKET_IDLE_TIMEOUT, |r| {
            r.spec.websocket_idle_timeout
        })
}

/// Copies bytes both ways until a side closes or nothing moves for the idle timeout.
async fn relay(session: &mut Session, ctx: &mut RequestCtx, mut upstream: Stream) -> Result<()> {
    let idle = idle_timeout(ctx);
    let mut buffer = vec![0u8; READ_CHUNK];
    loop {
        let step = tokio::time::timeout(idle, async {
            tokio::select! {
                from_client = session.read_request_body() => Direction::FromClient(from_client),
                from_backend = upstream.read(&mut buffer) => Direction::FromBackend(from_backend),
            }
        })
        .await;
        match step {
            Err(_) => {
                log::debug!("upgraded connection idle for {idle:?}: closed");
                break;
            }
            Ok(Direction::FromClient(Ok(Some(bytes)))) => {
                ctx.body_bytes += bytes.len() as u64;
                if within(Some(idle), upstream.write_all(&bytes))
                    .await
                    .is_err()
                {
                    break;
                }
            }
            Ok(Direction::FromClient(_)) => break,
            Ok(Direction::FromBackend(Ok(read @ 1..))) => {
                let bytes = Bytes::copy_from_slice(&buffer[..read]);
                if session
                    .write_response_body(Some(bytes), false)
                    .await
                    .is_err()
                {
                    break;
                }
            }
            Ok(Direction::FromBackend(_)) => break,
        }
    }
    pingora_core::protocols::Shutdown::shutdown(upstream.as_mut()).await;
    let _ = session.write_response_body(None, true).await;
    Ok(())
}

enum Direction {
    FromClient(Result<Option<Bytes>>),
    FromBackend(std::io::Result<usize>),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upgrade_requests_are_written_as_http11_heads() {
        let mut request = RequestHeader::build("GET", b"/chat?room=1", None).unwrap();
        request.insert_header("host", "example.test").unwrap();
        request.insert_header("upgrade", "websocket").unwrap();
        let head = String::from_utf8(serialize(&request)).unwrap();
        assert_eq!(
            head,
            "GET /chat?room=1 HTTP/1.1\r\nhost: example.test\r\nupgrade: websocket\r\n\r\n"
        );
    }
}
