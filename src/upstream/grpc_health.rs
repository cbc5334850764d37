//! `health_check: { type: grpc }`: the standard gRPC health protocol (`grpc.health.v1.Health/Check`
//! for the whole server, service ""), over HTTP/2 to the backend. Healthy means `grpc-status: 0`
//! and a `HealthCheckResponse` saying `SERVING`.

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use pingora_core::connectors::http::Connector;
use pingora_core::protocols::http::client::HttpSession;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_error::{Error, ErrorType, Result};
use pingora_http::RequestHeader;
use pingora_load_balancing::health_check::HealthCheck;
use std::time::Duration;

/// An empty `HealthCheckRequest` (service ""), framed: not compressed, zero length.
const CHECK_REQUEST: &[u8] = &[0, 0, 0, 0, 0];
/// `HealthCheckResponse.ServingStatus.SERVING`.
const SERVING: u64 = 1;
/// Responses larger than this are not health answers.
const MAX_RESPONSE_BYTES: usize = 4096;

/// Probes one backend.
pub struct GrpcHealthCheck {
    connector: Connector,
    peer: HttpPeer,
    authority: String,
}

impl GrpcHealthCheck {
    /// A probe of the backend behind `peer` (the pool's peer, forced to HTTP/2), with `authority`
    /// as `:authority`, bounded by `timeout`.
    pub fn new(peer: &HttpPeer, authority: String, timeout: Duration) -> Self {
        let mut peer = peer.clone();
        peer.options.set_http_version(2, 2);
        peer.options.connection_timeout = Some(timeout);
        peer.options.read_timeout = Some(timeout);
        peer.options.write_timeout = Some(timeout);
        GrpcHealthCheck {
            connector: Connector::new(None),
            peer,
            authority,
        }
    }

    fn request(&self) -> Result<RequestHeader> {
        let mut request = RequestHeader::build("POST", b"/grpc.health.v1.Health/Check", None)?;
        let scheme = if self.peer.is_tls() { "https" } else { "http" };
        let uri = http::Uri::builder()
            .scheme(scheme)
            .authority(self.authority.as_str())
            .path_and_query("/grpc.health.v1.Health/Check")
            .build()
            .map_err(|e| Error::because(ErrorType::InvalidHTTPHeader, "health check URI", e))?;
        request.set_uri(uri);
        request.insert_header(http::header::CONTENT_TYPE, "application/grpc")?;
        request.insert_header(http::header::TE, "trailers")?;
        request.insert_header(http::header::USER_AGENT, "edgegate-health-check")?;
        Ok(request)
    }
}

fn failed(reason: impl Into<String>) -> Box<Error> {
    Error::explain(ErrorType::Custom("grpc health check"), reason.into())
}

#[async_trait]
impl HealthCheck for GrpcHealthCheck {
    async fn check(&self, _target: &pingora_load_balancing::Backend) -> Result<()> {
        let (session, _) = self.connector.get_http_session(&self.peer).await?;
        let HttpSession::H2(mut session) = session else {
            return Err(failed("the backend does not speak HTTP/2"));
        };
        session.write_request_header(Box::new(self.request()?), false)?;
        session
            .write_request_body(Bytes::from_static(CHECK_REQUEST), true)
            .await?;
        session.read_response_header().await?;
        let header = session
            .response_header()
            .ok_or_else(|| failed("no response header"))?;
        if header.status != http::StatusCode::OK {
            return Err(failed(format!("HTTP status {}", header.status)));
        }
        // Trailers-only answers carry grpc-status in the header block.
        let mut grpc_status = header.headers.get("grpc-status").cloned();
        let mut body = BytesMut::new();
        while let Some(chunk) = session.read_response_body().await? {
            body.extend_from_slice(&chunk);
            if body.len() > MAX_RESPONSE_BYTES {
                return Err(failed("the answer is too large"));
            }
        }
        if let Some(trailers) = session.read_trailers().await? {
            if let Some(status) = trailers.get("grpc-status") {
                grpc_status = Some(status.clone());
            }
        }
        match grpc_status.as_ref().map(|s| s.as_bytes()) {
            Some(b"0") => {}
            Some(other) => {
                return Err(failed(format!(
                    "grpc-status {}",
                    String::from_utf8_lossy(other)
                )))
            }
            None => return Err(failed("no grpc-status")),
        }
        match serving_status(&body) {
            Some(SERVING) => Ok(()),
            Some(status) => Err(failed(format!("serving status {status} (not SERVING)"))),
            None => Err(failed("not a HealthCheckResponse")),
        }
    }

    fn health_threshold(&self, _success: bool) -> usize {
        // The checker keeps its own streaks (healthy_threshold / unhealthy_threshold).
        1
    }
}

/// The `status` field (1, varint) of one length-prefixed `HealthCheckResponse`. An absent field
/// is its default, 0 (`UNKNOWN`).
fn serving_status(framed: &[u8]) -> Option<u64> {
    let (&compressed, rest) = framed.split_first()?;
    if compressed != 0 || rest.len() < 4 {
        return None;
    }
    let (length, message) = rest.split_at(4);
    let length = u32::from_be_bytes(length.try_into().ok()?) as usize;
    let mut message = message.get(..length)?;
    let mut status = 0;
    while let Some((&key, rest)) = message.split_first() {
        message = rest;
        let (value, used) = varint(message)?;
        match (key >> 3, key & 7) {
            (1, 0) => {
                status = value;
                message = &message[used..];
            }
            // Other varint fields are skipped; anything else is not what we asked for.
            (_, 0) => message = &message[used..],
            _ => return None,
        }
    }
    Some(status)
}

fn varint(bytes: &[u8]) -> Option<(u64, usize)> {
    let mut value = 0u64;
    for (index, &byte) in bytes.iter().enumerate().take(10) {
        value |= u64::from(byte & 0x7f) << (7 * index);
        if byte & 0x80 == 0 {
            return Some((value, index + 1));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_answers_are_read_from_their_protobuf_bytes() {
        // status = SERVING (1), as grpc-go and tonic-health encode it.
        assert_eq!(serving_status(&[0, 0, 0, 0, 2, 0x08, 0x01]), Some(1));
        // NOT_SERVING (2)
        assert_eq!(serving_status(&[0, 0, 0, 0, 2, 0x08, 0x02]), Some(2));
        // The default (UNKNOWN) is not sent at all.
        assert_eq!(serving_status(&[0, 0, 0, 0, 0]), Some(0));
        assert_eq!(
            serving_status(&[1, 0, 0, 0, 2, 0x08, 0x01]),
            None,
            "compressed"
        );
        assert_eq!(serving_status(&[0, 0, 0, 0, 9, 0x08]), None, "truncated");
        assert_eq!(
            serving_status(&[0, 0, 0, 0, 2, 0x0a, 0x01]),
            None,
            "wrong wire type"
        );
    }
}
