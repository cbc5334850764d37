//! Per-request state, grouped by concern.

use super::runtime::{Route, Runtime};
use crate::upstream::{Lease, Tried};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Longest incoming `X-Request-ID` kept as is.
const MAX_REQUEST_ID: usize = 64;

/// A request id stored inline (no allocation per request).
#[derive(Clone)]
pub struct RequestId {
    bytes: [u8; MAX_REQUEST_ID],
    len: u8,
}

impl RequestId {
    /// Keeps a sane incoming id: 1..=64 characters of `[A-Za-z0-9._:-]`.
    pub fn from_client(value: &[u8]) -> Option<Self> {
        let sane = !value.is_empty()
            && value.len() <= MAX_REQUEST_ID
            && value
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'));
        sane.then(|| {
            let mut bytes = [0u8; MAX_REQUEST_ID];
            bytes[..value.len()].copy_from_slice(value);
            RequestId {
                bytes,
                len: value.len() as u8,
            }
        })
    }

    /// A fresh random id: 32 lower-case hex digits.
    pub fn generate() -> Self {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut value = rand::random::<u128>();
        let mut bytes = [0u8; MAX_REQUEST_ID];
        for slot in bytes[..32].iter_mut() {
            *slot = HEX[(value & 0xf) as usize];
            value >>= 4;
        }
        RequestId { bytes, len: 32 }
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        // Only ASCII is ever stored, so this never fails.
        std::str::from_utf8(&self.bytes[..usize::from(self.len)]).unwrap_or("")
    }
}

/// What happened on the upstream side of this request.
#[derive(Default)]
pub struct UpstreamCtx {
    pub pool: Option<usize>,
    pub lease: Option<Lease>,
    pub tried: Tried,
    pub retries: u32,
    pub picked_at: Option<Instant>,
    pub status: Option<u16>,
    pub duration: Option<Duration>,
    /// An attempt was sent to a backend and its outcome is not counted yet.
    pub attempt_open: bool,
}

/// Everything one request carries through the phases.
pub struct RequestCtx {
    pub runtime: Arc<Runtime>,
    pub started: Instant,
    pub request_id: RequestId,
    pub client_ip: Option<IpAddr>,
    pub route: Option<usize>,
    pub header_bytes: usize,
    pub body_bytes: u64,
    pub upstream: UpstreamCtx,
}

impl RequestCtx {
    /// A fresh context on the current snapshot.
    pub fn new(runtime: Arc<Runtime>) -> Self {
        RequestCtx {
            runtime,
            started: Instant::now(),
            request_id: RequestId {
                bytes: [0; MAX_REQUEST_ID],
                len: 0,
            },
            client_ip: None,
            route: None,
            header_bytes: 0,
            body_bytes: 0,
            upstream: UpstreamCtx::default(),
        }
    }

    /// The matched route, if any.
    pub fn route(&self) -> Option<&Route> {
        self.route.map(|index| &self.runtime.routes[index])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_ids_are_kept_only_when_sane() {
        assert_eq!(
            RequestId::from_client(b"abc-123_x.y:z").unwrap().as_str(),
            "abc-123_x.y:z"
        );
        assert!(RequestId::from_client(b"").is_none());
        assert!(RequestId::from_client(b"has space").is_none());
        assert!(RequestId::from_client(b"quote\"").is_none());
        assert!(RequestId::from_client(&[b'a'; 65]).is_none());
    }

    #[test]
    fn generated_ids_are_unique_hex() {
        let a = RequestId::generate();
        let b = RequestId::generate();
        assert_eq!(a.as_str().len(), 32);
        assert!(a.as_str().bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a.as_str(), b.as_str());
    }
}
