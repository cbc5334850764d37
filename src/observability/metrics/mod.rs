//! Every metric edgegate exports, defined in one place. Families are registered once in the
//! default Prometheus registry; handles are resolved when routes and pools are built, so the
//! request path never looks a label set up by name.

use prometheus::{
    register_histogram_vec, register_int_counter_vec, register_int_gauge_vec, Histogram,
    HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec,
};
use std::sync::LazyLock;

mod edge;
mod route;
mod upstream;

pub use edge::*;
pub use route::*;
pub use upstream::*;

/// Request latency buckets in seconds: 0.5 ms .. 30 s.
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

struct Families {
    requests: IntCounterVec,
    request_duration: HistogramVec,
    split_requests: IntCounterVec,
    split_duration: HistogramVec,
    aggregate_part_requests: IntCounterVec,
    aggregate_part_duration: HistogramVec,
    upstream_requests: IntCounterVec,
    upstream_duration: HistogramVec,
    backend_healthy: IntGaugeVec,
    retries: IntCounterVec,
    auth_failures: IntCounterVec,
    rate_limited: IntCounterVec,
    rate_limited_shadow: IntCounterVec,
    ratelimit_store_errors: prometheus::IntCounter,
    ratelimit_store_duration: Histogram,
    in_flight_cap_refused: IntCounterVec,
    backend_ejected: IntGaugeVec,
    ejections: IntCounterVec,
    pool_panic: IntGaugeVec,
    pool_panic_requests: IntCounterVec,
    cache_lookups: IntCounterVec,
    compressed_responses: IntCounterVec,
    compression_input: IntCounterVec,
    compression_output: IntCounterVec,
    cache_size: IntGauge,
    cache_max_size: IntGauge,
    cache_entries: IntGauge,
    cache_evictions: IntCounter,
    config_reloads: IntCounterVec,
    in_flight: IntGaugeVec,
    request_bytes: IntCounterVec,
    response_bytes: IntCounterVec,
    downstream_connections: IntGauge,
    listener_connections: IntGaugeVec,
    connections_refused: IntCounterVec,
    tls_handshakes: IntCounterVec,
    upgraded_connections: IntGaugeVec,
    upgrades: IntCounterVec,
    tls_handshake_failures: IntCounterVec,
    tls_certificate_expiry: IntGaugeVec,
    client_timeouts: IntCounterVec,
    bad_requests: IntCounterVec,
    jwt_keys_skipped: IntCounterVec,
    access_log_dropped: IntCounter,
    spans_exported: IntCounter,
    spans_dropped: IntCounterVec,
    ratelimit_store_full: IntCounter,
    fleet_purges: IntCounterVec,
    purge_channel_up: IntGauge,
    ratelimit_decisions: IntCounterVec,
    build_info: IntGaugeVec,
}

// Registration fails only if a family is registered twice, which this single LazyLock rules out.
#[allow(clippy::expect_used)]
static FAMILIES: LazyLock<Families> = LazyLock::new(|| {
    Families {
    requests: register_int_counter_vec!(
        "edgegate_requests_total",
        "Requests answered, by route, method and status class",
        &["route", "method", "status"]
    )
    .expect("register edgegate_requests_total"),
    request_duration: register_histogram_vec!(
        "edgegate_request_duration_seconds",
        "Time from request start to the last response byte, by route",
        &["route"],
        LATENCY_BUCKETS.to_vec()
    )
    .expect("register edgegate_request_duration_seconds"),
    split_requests: register_int_counter_vec!(
        "edgegate_split_requests_total",
        "Requests of split routes answered, by route, arm (its upstream) and status class",
        &["route", "arm", "status"]
    )
    .expect("register edgegate_split_requests_total"),
    split_duration: register_histogram_vec!(
        "edgegate_split_request_duration_seconds",
        "Time from request start to the last response byte on split routes, by route and arm",
        &["route", "arm"],
        LATENCY_BUCKETS.to_vec()
    )
    .expect("register edgegate_split_request_duration_seconds"),
    aggregate_part_requests: register_int_counter_vec!(
        "edgegate_aggregate_part_requests_total",
        "Parts of aggregation routes, by route, part and outcome (ok, timeout, connect_failure, reset, status, not_json, too_large, no_backend, unresolved)",
        &["route", "part", "outcome"]
    )
    .expect("register edgegate_aggregate_part_requests_total"),
    aggregate_part_duration: register_histogram_vec!(
        "edgegate_aggregate_part_duration_seconds",
        "Time from the fan-out's start until a part of an aggregation route ended, by route and part",
        &["route", "part"],
        LATENCY_BUCKETS.to_vec()
    )
    .expect("register edgegate_aggregate_part_duration_seconds"),
    upstream_requests: register_int_counter_vec!(
        "edgegate_upstream_requests_total",
        "Attempts sent to a backend, by upstream, backend and status class (error = no response)",
        &["upstream", "backend", "status"]
    )
    .expect("register edgegate_upstream_requests_total"),
    upstream_duration: register_histogram_vec!(
        "edgegate_upstream_duration_seconds",
        "Time from choosing a backend to its response header, by upstream",
        &["upstream"],
        LATENCY_BUCKETS.to_vec()
    )
    .expect("register edgegate_upstream_duration_seconds"),
    backend_healthy: register_int_gauge_vec!(
        "edgegate_backend_healthy",
        "1 when the backend passes its active health check (always 1 without a check)",
        &["upstream", "backend"]
    )
    .expect("register edgegate_backend_healthy"),
    retries: register_int_counter_vec!(
        "edgegate_retries_total",
        "Upstream attempts retried on another backend, by route and reason",
        &["route", "reason"]
    )
    .expect("register edgegate_retries_total"),
    rate_limited: register_int_counter_vec!(
        "edgegate_rate_limited_total",
        "Requests answered 429 by a rate-limit policy",
        &["route", "policy"]
    )
    .expect("register edgegate_rate_limited_total"),
    rate_limited_shadow: register_int_counter_vec!(
        "edgegate_rate_limited_shadow_total",
        "Requests a shadow-mode policy would have answered 429 (let through)",
        &["route", "policy"]
    )
    .expect("register edgegate_rate_limited_shadow_total"),
    ratelimit_store_errors: prometheus::register_int_counter!(
        "edgegate_ratelimit_store_errors_total",
        "Rate-limit decisions the shared store (Redis) failed to give (error or timeout)"
    )
    .expect("register edgegate_ratelimit_store_errors_total"),
    ratelimit_store_duration: prometheus::register_histogram!(
        "edgegate_ratelimit_store_duration_seconds",
        "Time of one rate-limit decision in the shared store (Redis round trip)",
        vec![0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1]
    )
    .expect("register edgegate_ratelimit_store_duration_seconds"),
    auth_failures: register_int_counter_vec!(
        "edgegate_auth_failures_total",
        "Requests refused by authentication (401) or authorization (403), by route and reason",
        &["route", "reason"]
    )
    .expect("register edgegate_auth_failures_total"),
    // The metric keeps the "circuit breaker" name other gateways give this cap; operators alert on it.
    in_flight_cap_refused: register_int_counter_vec!(
        "edgegate_circuit_open_total",
        "Requests refused with 503 because the pool had max_concurrent_requests in flight",
        &["upstream"]
    )
    .expect("register edgegate_circuit_open_total"),
    backend_ejected: register_int_gauge_vec!(
        "edgegate_backend_ejected",
        "1 while outlier detection has the backend ejected",
        &["upstream", "backend"]
    )
    .expect("register edgegate_backend_ejected"),
    ejections: register_int_counter_vec!(
        "edgegate_ejections_total",
        "Backends ejected by outlier detection, by reason",
        &["upstream", "backend", "reason"]
    )
    .expect("register edgegate_ejections_total"),
    pool_panic: register_int_gauge_vec!(
        "edgegate_pool_panic",
        "1 while no backend of the pool is healthy and not ejected, so ejection is ignored",
        &["upstream"]
    )
    .expect("register edgegate_pool_panic"),
    pool_panic_requests: register_int_counter_vec!(
        "edgegate_pool_panic_requests_total",
        "Requests sent to an ejected backend because the pool was in panic mode",
        &["upstream"]
    )
    .expect("register edgegate_pool_panic_requests_total"),
    compressed_responses: register_int_counter_vec!(
        "edgegate_compressed_responses_total",
        "Responses compressed on their way to the client, by route and coding",
        &["route", "coding"]
    )
    .expect("register edgegate_compressed_responses_total"),
    compression_input: register_int_counter_vec!(
        "edgegate_compression_input_bytes_total",
        "Body bytes that went into the compressor, by route and coding",
        &["route", "coding"]
    )
    .expect("register edgegate_compression_input_bytes_total"),
    compression_output: register_int_counter_vec!(
        "edgegate_compression_output_bytes_total",
        "Compressed body bytes that came out, by route and coding",
        &["route", "coding"]
    )
    .expect("register edgegate_compression_output_bytes_total"),
    cache_lookups: register_int_counter_vec!(
        "edgegate_cache_lookups_total",
        "Requests of caching routes by how the cache answered: hit, miss, stale, updating, bypass",
        &["route", "result"]
    )
    .expect("register edgegate_cache_lookups_total"),
    cache_size: prometheus::register_int_gauge!(
        "edgegate_cache_size_bytes",
        "Bytes the response cache holds (bodies, headers and per-entry overhead)"
    )
    .expect("register edgegate_cache_size_bytes"),
    cache_max_size: prometheus::register_int_gauge!(
        "edgegate_cache_max_size_bytes",
        "The response cache's bound (cache.max_size)"
    )
    .expect("register edgegate_cache_max_size_bytes"),
    cache_entries: prometheus::register_int_gauge!(
        "edgegate_cache_entries",
        "Responses the cache holds (each variant counts)"
    )
    .expect("register edgegate_cache_entries"),
    cache_evictions: prometheus::register_int_counter!(
        "edgegate_cache_evictions_total",
        "Entries evicted to stay within cache.max_size"
    )
    .expect("register edgegate_cache_evictions_total"),
    config_reloads: register_int_counter_vec!(
        "edgegate_config_reloads_total",
        "Configuration reloads (SIGHUP) by result: success, error (the running config stayed)",
        &["result"]
    )
    .expect("register edgegate_config_reloads_total"),
    in_flight: register_int_gauge_vec!(
        "edgegate_requests_in_flight",
        "Requests being handled now, by route",
        &["route"]
    )
    .expect("register edgegate_requests_in_flight"),
    request_bytes: register_int_counter_vec!(
        "edgegate_request_bytes_total",
        "Bytes received from clients (request head and body), by route",
        &["route"]
    )
    .expect("register edgegate_request_bytes_total"),
    response_bytes: register_int_counter_vec!(
        "edgegate_response_bytes_total",
        "Response body bytes sent to clients, by route",
        &["route"]
    )
    .expect("register edgegate_response_bytes_total"),
    downstream_connections: prometheus::register_int_gauge!(
        "edgegate_downstream_connections",
        "Client connections open now that have carried a request (HTTP/2: streams)"
    )
    .expect("register edgegate_downstream_connections"),
    listener_connections: register_int_gauge_vec!(
        "edgegate_listener_connections",
        "Client connections open now, by listener",
        &["listener"]
    )
    .expect("register edgegate_listener_connections"),
    connections_refused: register_int_counter_vec!(
        "edgegate_connections_refused_total",
        "Client connections closed at once by a listener's limit, by listener and reason",
        &["listener", "reason"]
    )
    .expect("register edgegate_connections_refused_total"),
    upgraded_connections: register_int_gauge_vec!(
        "edgegate_upgraded_connections",
        "Client connections switched to another protocol (WebSocket) open now, by route",
        &["route"]
    )
    .expect("register edgegate_upgraded_connections"),
    upgrades: register_int_counter_vec!(
        "edgegate_upgrades_total",
        "Client connections switched to another protocol (WebSocket), by route",
        &["route"]
    )
    .expect("register edgegate_upgrades_total"),
    tls_handshakes: register_int_counter_vec!(
        "edgegate_tls_handshakes_total",
        "TLS handshakes completed, by listener and whether a session was resumed",
        &["listener", "resumed"]
    )
    .expect("register edgegate_tls_handshakes_total"),
    tls_handshake_failures: register_int_counter_vec!(
        "edgegate_tls_handshake_failures_total",
        "TLS handshakes that failed, by listener and reason",
        &["listener", "reason"]
    )
    .expect("register edgegate_tls_handshake_failures_total"),
    tls_certificate_expiry: register_int_gauge_vec!(
        "edgegate_tls_certificate_expiry_seconds",
        "When a served certificate expires (notAfter, Unix seconds), by listener, file and name",
        &["listener", "cert", "name"]
    )
    .expect("register edgegate_tls_certificate_expiry_seconds"),
    client_timeouts: register_int_counter_vec!(
        "edgegate_client_timeouts_total",
        "Clients cut by server.header_read_timeout (header) or body_read_timeout (body)",
        &["phase"]
    )
    .expect("register edgegate_client_timeouts_total"),
    bad_requests: register_int_counter_vec!(
        "edgegate_bad_requests_total",
        "Requests refused before routing, by reason: framing, request_line, host, method, path",
        &["reason"]
    )
    .expect("register edgegate_bad_requests_total"),
    jwt_keys_skipped: register_int_counter_vec!(
        "edgegate_jwt_keys_skipped_total",
        "Keys of a JWT provider's key source skipped as unusable, by provider",
        &["provider"]
    )
    .expect("register edgegate_jwt_keys_skipped_total"),
    spans_exported: prometheus::register_int_counter!(
        "edgegate_tracing_spans_exported_total",
        "Spans the collector accepted"
    )
    .expect("register edgegate_tracing_spans_exported_total"),
    spans_dropped: register_int_counter_vec!(
        "edgegate_tracing_spans_dropped_total",
        "Spans not exported, by reason (queue_full: the export queue was full; export_failed: the collector failed or refused)",
        &["reason"]
    )
    .expect("register edgegate_tracing_spans_dropped_total"),
    access_log_dropped: prometheus::register_int_counter!(
        "edgegate_access_log_dropped_total",
        "Access-log lines dropped because the destination could not keep up or failed"
    )
    .expect("register edgegate_access_log_dropped_total"),
    ratelimit_store_full: prometheus::register_int_counter!(
        "edgegate_ratelimit_store_full_total",
        "Rate-limit decisions for a new key not tracked because the local store was full of keys in use"
    )
    .expect("register edgegate_ratelimit_store_full_total"),
    ratelimit_decisions: register_int_counter_vec!(
        "edgegate_ratelimit_decisions_total",
        "Rate-limit decisions per policy, by outcome (admitted, limited, shadow_limited: a shadow policy over its limit, store_error: no decision from the shared store)",
        &["policy", "outcome"]
    )
    .expect("register edgegate_ratelimit_decisions_total"),
    fleet_purges: register_int_counter_vec!(
        "edgegate_cache_fleet_purges_total",
        "Purges through cache.purge_channel, by event (published: sent to the fleet; queued: kept until Redis answers; applied: another instance's purge done here; flushed: the whole cache emptied because purges may have been missed)",
        &["event"]
    )
    .expect("register edgegate_cache_fleet_purges_total"),
    purge_channel_up: prometheus::register_int_gauge!(
        "edgegate_cache_purge_channel_up",
        "1 while this instance is subscribed to cache.purge_channel and caught up, else 0"
    )
    .expect("register edgegate_cache_purge_channel_up"),
    build_info: register_int_gauge_vec!(
        "edgegate_build_info",
        "Always 1; labels name the build",
        &["version"]
    )
    .expect("register edgegate_build_info"),
}
});

/// Registers every family and sets the build info gauge.
pub fn init() {
    FAMILIES
        .build_info
        .with_label_values(&[env!("CARGO_PKG_VERSION")])
        .set(1);
    for result in ["success", "error"] {
        FAMILIES.config_reloads.with_label_values(&[result]);
    }
    for phase in ClientTimeout::ALL {
        FAMILIES.client_timeouts.with_label_values(&[phase.label()]);
    }
    for reason in crate::gateway::strict::BadRequest::REASONS {
        FAMILIES.bad_requests.with_label_values(&[reason]);
    }
    for reason in SpanDrop::ALL {
        FAMILIES.spans_dropped.with_label_values(&[reason.label()]);
    }
    for event in FleetPurge::ALL {
        FAMILIES.fleet_purges.with_label_values(&[event.label()]);
    }
}

/// What happened to a purge carried by `cache.purge_channel`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FleetPurge {
    Published,
    Queued,
    Applied,
    Flushed,
}

impl FleetPurge {
    const ALL: [FleetPurge; 4] = [
        FleetPurge::Published,
        FleetPurge::Queued,
        FleetPurge::Applied,
        FleetPurge::Flushed,
    ];

    fn label(self) -> &'static str {
        match self {
            FleetPurge::Published => "published",
            FleetPurge::Queued => "queued",
            FleetPurge::Applied => "applied",
            FleetPurge::Flushed => "flushed",
        }
    }
}

/// Counts one fleet purge event.
pub fn fleet_purge(event: FleetPurge) {
    FAMILIES
        .fleet_purges
        .with_label_values(&[event.label()])
        .inc();
}

/// Whether this instance follows the purge channel now.
pub fn purge_channel_up(up: bool) {
    FAMILIES.purge_channel_up.set(i64::from(up));
}

/// Why spans were not exported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpanDrop {
    QueueFull,
    ExportFailed,
}

impl SpanDrop {
    const ALL: [SpanDrop; 2] = [SpanDrop::QueueFull, SpanDrop::ExportFailed];

    fn label(self) -> &'static str {
        match self {
            SpanDrop::QueueFull => "queue_full",
            SpanDrop::ExportFailed => "export_failed",
        }
    }
}

/// Counts spans the collector accepted.
pub fn spans_exported(spans: u64) {
    FAMILIES.spans_exported.inc_by(spans);
}

/// Counts spans that were not exported.
pub fn spans_dropped(reason: SpanDrop, spans: u64) {
    FAMILIES
        .spans_dropped
        .with_label_values(&[reason.label()])
        .inc_by(spans);
}

/// Counts a rate-limit decision the full local store could not track.
pub fn ratelimit_store_full() {
    FAMILIES.ratelimit_store_full.inc();
}

/// Counts access-log lines that were not written.
pub fn access_log_dropped(lines: u64) {
    FAMILIES.access_log_dropped.inc_by(lines);
}

/// Counts keys of `provider`'s key set that were skipped as unusable.
pub fn jwt_keys_skipped(provider: &str, count: usize) {
    FAMILIES
        .jwt_keys_skipped
        .with_label_values(&[provider])
        .inc_by(count as u64);
}

/// Counts one configuration reload.
pub fn config_reload(success: bool) {
    let result = if success { "success" } else { "error" };
    FAMILIES.config_reloads.with_label_values(&[result]).inc();
}

/// A policy's decision counters, resolved when the limiter is built.
pub struct RateLimitDecisions {
    pub admitted: IntCounter,
    pub limited: IntCounter,
    pub shadow_limited: IntCounter,
    pub store_error: IntCounter,
}

impl RateLimitDecisions {
    /// The counters of policy `policy` (every outcome shown from the start).
    pub fn new(policy: &str) -> Self {
        let outcome = |label: &str| {
            FAMILIES
                .ratelimit_decisions
                .with_label_values(&[policy, label])
        };
        RateLimitDecisions {
            admitted: outcome("admitted"),
            limited: outcome("limited"),
            shadow_limited: outcome("shadow_limited"),
            store_error: outcome("store_error"),
        }
    }
}

/// Handles for the shared rate-limit store.
pub struct RateLimitStoreMetrics {
    pub errors: IntCounter,
    pub duration: Histogram,
}

impl RateLimitStoreMetrics {
    /// The store's handles.
    pub fn new() -> Self {
        RateLimitStoreMetrics {
            errors: FAMILIES.ratelimit_store_errors.clone(),
            duration: FAMILIES.ratelimit_store_duration.clone(),
        }
    }
}

impl Default for RateLimitStoreMetrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Handles for the response cache.
pub struct CacheMetrics {
    size: IntGauge,
    max_size: IntGauge,
    entries: IntGauge,
    pub evictions: IntCounter,
}

impl CacheMetrics {
    /// The cache's handles.
    pub fn new() -> Self {
        CacheMetrics {
            size: FAMILIES.cache_size.clone(),
            max_size: FAMILIES.cache_max_size.clone(),
            entries: FAMILIES.cache_entries.clone(),
            evictions: FAMILIES.cache_evictions.clone(),
        }
    }

    /// Publishes the current occupancy.
    pub fn publish(&self, bytes: usize, entries: usize, max_size: usize) {
        let gauge = |value: usize| i64::try_from(value).unwrap_or(i64::MAX);
        self.size.set(gauge(bytes));
        self.entries.set(gauge(entries));
        self.max_size.set(gauge(max_size));
    }
}

impl Default for CacheMetrics {
    fn default() -> Self {
        Self::new()
    }
}

/// The Prometheus text exposition of every registered metric.
pub fn render() -> Vec<u8> {
    use prometheus::Encoder;
    let mut buffer = Vec::with_capacity(16 << 10);
    let encoder = prometheus::TextEncoder::new();
    if let Err(error) = encoder.encode(&prometheus::gather(), &mut buffer) {
        log::error!("cannot encode metrics: {error}");
    }
    buffer
}
