//! Per-request state, grouped by concern.

use crate::observability::metrics::RouteMetrics;
use crate::snapshot::{Route, Snapshot};
use crate::upstream::{Lease, Tried};
use http::HeaderValue;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Longest incoming `X-Request-ID` kept as is.
const MAX_REQUEST_ID: usize = 64;

/// The request id, kept as the header value it is sent as (cloning it is a reference-count bump).
#[derive(Clone)]
pub struct RequestId {
    value: HeaderValue,
    /// The client sent it, so it is already in the upstream request.
    pub from_client: bool,
}

impl RequestId {
    /// Keeps a sane incoming id: 1..=64 characters of `[A-Za-z0-9._:-]`.
    pub fn from_client(value: &HeaderValue) -> Option<Self> {
        let bytes = value.as_bytes();
        let sane = !bytes.is_empty()
            && bytes.len() <= MAX_REQUEST_ID
            && bytes
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'));
        sane.then(|| RequestId {
            value: value.clone(),
            from_client: true,
        })
    }

    /// A fresh random id: 32 lower-case hex digits.
    pub fn generate() -> Self {
        let mut text = [0u8; 32];
        for (digits, byte) in text
            .chunks_exact_mut(2)
            .zip(rand::random::<u128>().to_le_bytes())
        {
            digits.copy_from_slice(&crate::fastfmt::hex_pair(byte, crate::fastfmt::LOWER_HEX));
        }
        RequestId {
            // Owned (not copied into a Vec) so the clones for the upstream request and the
            // response share it without promoting it: one allocation. Hex digits are always a
            // valid header value.
            value: HeaderValue::from_maybe_shared(bytes::Bytes::from_owner(text))
                .unwrap_or_else(|_| HeaderValue::from_static("invalid")),
            from_client: false,
        }
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        // Checked when the id was made; `from_utf8` is the cheap way back to text.
        std::str::from_utf8(self.value.as_bytes()).unwrap_or("")
    }

    /// The id as a header value.
    pub fn header_value(&self) -> HeaderValue {
        self.value.clone()
    }
}

/// What happened on the upstream side of this request.
#[derive(Default)]
pub struct UpstreamCtx {
    pub pool: Option<usize>,
    /// The arm of the route's split the request went to (split routes).
    pub arm: Option<crate::routing::split::ArmChoice>,
    pub lease: Option<Lease>,
    pub tried: Tried,
    pub retries: u32,
    pub picked_at: Option<Instant>,
    pub status: Option<u16>,
    pub duration: Option<Duration>,
    /// An attempt was sent to a backend and its outcome is not counted yet.
    pub attempt_open: bool,
    /// The next attempt goes to the same backend on a new connection (a stale pooled
    /// connection failed).
    pub retry_same_backend: bool,
    /// The one re-send a stale pooled connection earns was used.
    pub stale_resent: bool,
    /// Why the next attempt is a retry (for its trace span).
    pub retry_reason: Option<crate::observability::metrics::RetryReason>,
    /// Whether the open attempt went over a pooled connection (known once connected).
    pub reused: Option<bool>,
    /// When the whole upstream exchange, retries included, must be over: the route's `timeout`
    /// and the client's `grpc-timeout`, counted from the first attempt (None: only per-read
    /// timeouts apply).
    pub deadline: Option<Instant>,
}

impl UpstreamCtx {
    /// Whether the exchange's deadline has passed.
    pub fn past_deadline(&self) -> bool {
        self.deadline
            .is_some_and(|deadline| Instant::now() >= deadline)
    }

    /// Whether too little of the exchange's time is left for another attempt (a read timeout
    /// set to the remaining budget may fire a hair before the deadline).
    pub fn no_time_for_another_attempt(&self) -> bool {
        self.deadline
            .is_some_and(|deadline| Instant::now() + Duration::from_millis(5) >= deadline)
    }
}

/// Everything one request carries through the phases.
pub struct RequestCtx {
    pub snapshot: Arc<Snapshot>,
    pub started: Instant,
    pub request_id: RequestId,
    pub client_ip: Option<IpAddr>,
    pub route: Option<usize>,
    /// Set when the request is refused before routing (framing, Host, method, path).
    pub bad_request: Option<super::strict::BadRequest>,
    pub header_bytes: usize,
    /// Set when the route requires authentication and it succeeded.
    pub auth: Option<crate::auth::Authenticated>,
    /// What the request's `Origin` means on a CORS route (`None`: the route has no `cors`).
    pub cors: Option<crate::cors::Verdict>,
    /// The coding settled for this request (compressing routes only).
    pub compression: Option<crate::compression::Negotiated>,
    /// Compresses the response body (set with the response header when it is compressed).
    /// Boxed: the context travels inside Pingora's request future, copied as it moves.
    pub encoder: Option<Box<crate::compression::Encoder>>,
    /// The rate-limit policy the response headers describe (limited routes).
    pub ratelimit: Option<crate::ratelimit::Report>,
    /// The policies that limited the request (for the access log).
    pub limited_by: crate::ratelimit::LimitedBy,
    /// The calendar quota the response headers describe (routes with quotas).
    pub quota: Option<Box<crate::ratelimit::quota::QuotaReport>>,
    pub body_bytes: u64,
    pub upstream: UpstreamCtx,
    /// The cache store was consulted for this request.
    pub cache_looked_up: bool,
    /// A fresh stored response answered before Pingora's cache phases ([`super::caching::fresh_hit`]).
    pub fresh_hit: bool,
    /// The origin's 304 headers while a stored response is revalidated: they update the stored
    /// ones (RFC 9111 §4.3.4).
    pub revalidation: Option<Box<http::HeaderMap>>,
    /// The request's trace (tracing on).
    pub trace: Option<Box<crate::observability::tracing::RequestTrace>>,
    /// How each part of an aggregation route's request ended (for the access log).
    pub aggregate: Option<Vec<crate::aggregate::PartRecord>>,
    /// This request is counted in `edgegate_requests_in_flight` until the context drops.
    pub in_flight: bool,
    /// Counts the client connection while a request on it lives (then kept with the connection).
    pub connection: Option<crate::observability::metrics::Connection>,
    /// The client asked to switch protocols (`Upgrade`, HTTP/1.1).
    pub upgrade_requested: bool,
    /// The backend agreed (101): the connection is a tunnel, counted until the context drops.
    pub upgraded: bool,
    /// The client's `grpc-timeout` (gRPC routes): the upstream exchange ends by then.
    pub grpc_deadline: Option<Instant>,
}

impl RequestCtx {
    /// A fresh context on the current snapshot.
    pub fn new(snapshot: Arc<Snapshot>) -> Self {
        RequestCtx {
            snapshot,
            started: Instant::now(),
            request_id: RequestId {
                value: HeaderValue::from_static(""),
                from_client: false,
            },
            client_ip: None,
            route: None,
            bad_request: None,
            header_bytes: 0,
            auth: None,
            cors: None,
            compression: None,
            encoder: None,
            ratelimit: None,
            limited_by: Default::default(),
            quota: None,
            body_bytes: 0,
            upstream: UpstreamCtx::default(),
            cache_looked_up: false,
            fresh_hit: false,
            revalidation: None,
            aggregate: None,
            trace: None,
            in_flight: false,
            connection: None,
            upgrade_requested: false,
            upgraded: false,
            grpc_deadline: None,
        }
    }

    /// The matched route, if any.
    pub fn route(&self) -> Option<&Route> {
        self.route.map(|index| &self.snapshot.routes[index])
    }

    /// The route's CORS policy with what the request's `Origin` means to it (CORS routes only).
    pub fn cors(&self) -> Option<(&crate::cors::CorsPolicy, &crate::cors::Verdict)> {
        self.route()?.spec.cors.as_ref().zip(self.cors.as_ref())
    }

    /// The split the request went through with the arm it took (split routes).
    pub fn arm(
        &self,
    ) -> Option<(
        &crate::routing::split::SplitPlan,
        crate::routing::split::ArmChoice,
    )> {
        self.route()?.split.as_ref().zip(self.upstream.arm)
    }

    /// The metrics of the arm the request took (split routes).
    pub fn arm_metrics(&self) -> Option<&crate::observability::metrics::ArmMetrics> {
        self.route()?.arm_metrics.get(self.upstream.arm?.arm)
    }

    /// The route's compression policy with what this request settled (compressing routes).
    pub fn compression(
        &self,
    ) -> Option<(
        &crate::compression::CompressionPolicy,
        crate::compression::Negotiated,
    )> {
        self.route()?
            .spec
            .compression
            .as_ref()
            .zip(self.compression)
    }

    /// The metrics of the matched route (or of unmatched requests).
    pub fn metrics(&self) -> &RouteMetrics {
        self.route()
            .map_or(&self.snapshot.unmatched, |r| &r.metrics)
    }
}

impl Drop for RequestCtx {
    fn drop(&mut self) {
        if self.in_flight {
            self.metrics().finish();
        }
        if self.upgraded {
            self.metrics().upgrade_ended();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_ids_are_kept_only_when_sane() {
        let id = |text: &[u8]| RequestId::from_client(&HeaderValue::from_bytes(text).unwrap());
        assert_eq!(id(b"abc-123_x.y:z").unwrap().as_str(), "abc-123_x.y:z");
        assert!(id(b"").is_none());
        assert!(id(b"has space").is_none());
        assert!(id(b"quote\"").is_none());
        assert!(id(&[b'a'; 65]).is_none());
        assert!(id(&[b'a'; 64]).is_some());
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
