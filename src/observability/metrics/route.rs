//! Per-route handles: requests by method and status class, durations, retries, refusals.

use super::FAMILIES;
use http::Method;
use prometheus::{Histogram, IntCounter, IntGauge};
use std::sync::OnceLock;

/// Status classes used as the `status` label.
pub(super) const STATUS_CLASSES: [&str; 6] = ["1xx", "2xx", "3xx", "4xx", "5xx", "error"];
/// Index into STATUS_CLASSES; `None` (no response) is "error".
pub(super) fn status_class(status: Option<u16>) -> usize {
    match status {
        Some(code @ 100..=599) => usize::from(code / 100) - 1,
        _ => 5,
    }
}

/// Known methods get their own label; anything else is "OTHER" so clients cannot grow the series count.
const METHODS: [&str; 10] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE", "OTHER",
];
fn method_index(method: &Method) -> usize {
    METHODS[..9]
        .iter()
        .position(|m| *m == method.as_str())
        .unwrap_or(9)
}

/// Why an attempt was retried on another backend (the `reason` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryReason {
    ConnectFailure,
    GatewayError,
    ServerError,
    Reset,
}

impl RetryReason {
    const ALL: [RetryReason; 4] = [
        RetryReason::ConnectFailure,
        RetryReason::GatewayError,
        RetryReason::ServerError,
        RetryReason::Reset,
    ];

    /// The metric label, as written in `retries.on`.
    pub fn label(self) -> &'static str {
        match self {
            RetryReason::ConnectFailure => "connect_failure",
            RetryReason::GatewayError => "gateway_error",
            RetryReason::ServerError => "5xx",
            RetryReason::Reset => "reset",
        }
    }
}

/// Counters for one route, created on first use of each (method, status class) pair.
pub struct RouteMetrics {
    route: String,
    requests: [[OnceLock<IntCounter>; 6]; 10],
    pub duration: Histogram,
    retries: [OnceLock<IntCounter>; 4],
    auth_failures: [OnceLock<IntCounter>; 11],
    /// Per policy slot of the route: [enforced, shadow].
    rate_limited: Vec<[OnceLock<IntCounter>; 2]>,
    cache_lookups: [OnceLock<IntCounter>; 5],
    /// Per coding (`Coding::ALL` order): responses, bytes in, bytes out.
    compressed: [OnceLock<[IntCounter; 3]>; 3],
    in_flight: IntGauge,
    request_bytes: IntCounter,
    response_bytes: IntCounter,
    /// Open upgraded connections, and all of them so far.
    upgraded: (IntGauge, IntCounter),
}

impl RouteMetrics {
    /// Handles for `route` ("unmatched" for requests that matched no route).
    pub fn new(route: &str, policies: usize) -> Self {
        RouteMetrics {
            route: route.to_string(),
            requests: Default::default(),
            duration: FAMILIES.request_duration.with_label_values(&[route]),
            retries: Default::default(),
            auth_failures: Default::default(),
            rate_limited: (0..policies).map(|_| Default::default()).collect(),
            cache_lookups: Default::default(),
            compressed: Default::default(),
            in_flight: FAMILIES.in_flight.with_label_values(&[route]),
            request_bytes: FAMILIES.request_bytes.with_label_values(&[route]),
            response_bytes: FAMILIES.response_bytes.with_label_values(&[route]),
            upgraded: (
                FAMILIES.upgraded_connections.with_label_values(&[route]),
                FAMILIES.upgrades.with_label_values(&[route]),
            ),
        }
    }

    /// A connection of this route switched protocols (until [`Self::upgrade_ended`]).
    pub fn upgrade_started(&self) {
        let (open, total) = &self.upgraded;
        open.inc();
        total.inc();
    }

    /// An upgraded connection counted by [`Self::upgrade_started`] closed.
    pub fn upgrade_ended(&self) {
        self.upgraded.0.dec();
    }

    /// Counts a request in flight (until [`Self::finish`]).
    pub fn start(&self) {
        self.in_flight.inc();
    }

    /// A request counted by [`Self::start`] is over.
    pub fn finish(&self) {
        self.in_flight.dec();
    }

    /// Counts the bytes one request moved.
    pub fn transferred(&self, received: u64, sent: u64) {
        self.request_bytes.inc_by(received);
        self.response_bytes.inc_by(sent);
    }

    /// Counts how the cache answered one request (`result` indexes `CacheStatus::ALL`).
    pub fn cache_lookup(&self, result: usize, label: &str) {
        if let Some(counter) = self.cache_lookups.get(result) {
            counter
                .get_or_init(|| {
                    FAMILIES
                        .cache_lookups
                        .with_label_values(&[&self.route, label])
                })
                .inc();
        }
    }

    /// Counts one compressed response: `input` body bytes became `output`.
    pub fn compressed(&self, coding: crate::compression::Coding, input: u64, output: u64) {
        let index = coding as usize;
        let Some(slot) = self.compressed.get(index) else {
            return;
        };
        let [responses, bytes_in, bytes_out] = slot.get_or_init(|| {
            let labels = [self.route.as_str(), coding.token()];
            [
                FAMILIES.compressed_responses.with_label_values(&labels),
                FAMILIES.compression_input.with_label_values(&labels),
                FAMILIES.compression_output.with_label_values(&labels),
            ]
        });
        responses.inc();
        bytes_in.inc_by(input);
        bytes_out.inc_by(output);
    }

    /// Counts one answered request.
    pub fn observe(&self, method: &Method, status: Option<u16>, seconds: f64) {
        let (m, s) = (method_index(method), status_class(status));
        self.requests[m][s]
            .get_or_init(|| {
                FAMILIES
                    .requests
                    .with_label_values(&[&self.route, METHODS[m], STATUS_CLASSES[s]])
            })
            .inc();
        self.duration.observe(seconds);
    }

    /// Counts one authentication or authorization failure (`reason` indexes `Failure::REASONS`).
    pub fn auth_failed(&self, reason: usize) {
        let reasons = crate::auth::Failure::REASONS;
        let reason = reason.min(reasons.len() - 1);
        self.auth_failures[reason]
            .get_or_init(|| {
                FAMILIES
                    .auth_failures
                    .with_label_values(&[&self.route, reasons[reason]])
            })
            .inc();
    }

    /// Counts one request limited by the route's policy in `slot` (`shadow`: let through).
    pub fn rate_limited(&self, slot: usize, policy: &str, shadow: bool) {
        let Some(counters) = self.rate_limited.get(slot) else {
            return;
        };
        let family = if shadow {
            &FAMILIES.rate_limited_shadow
        } else {
            &FAMILIES.rate_limited
        };
        counters[usize::from(shadow)]
            .get_or_init(|| family.with_label_values(&[&self.route, policy]))
            .inc();
    }

    /// Counts one retry.
    pub fn retried(&self, reason: RetryReason) {
        let index = RetryReason::ALL
            .iter()
            .position(|r| *r == reason)
            .unwrap_or(0);
        self.retries[index]
            .get_or_init(|| {
                FAMILIES
                    .retries
                    .with_label_values(&[&self.route, reason.label()])
            })
            .inc();
    }
}

/// Handles for one arm of a split route, created on first use of each status class.
pub struct ArmMetrics {
    route: String,
    arm: String,
    requests: [OnceLock<IntCounter>; 6],
    duration: Histogram,
}

impl ArmMetrics {
    /// Handles for the arm whose upstream is `arm` on `route`.
    pub fn new(route: &str, arm: &str) -> Self {
        ArmMetrics {
            route: route.to_string(),
            arm: arm.to_string(),
            requests: Default::default(),
            duration: FAMILIES.split_duration.with_label_values(&[route, arm]),
        }
    }

    /// Counts one answered request of this arm.
    pub fn observe(&self, status: Option<u16>, seconds: f64) {
        let class = status_class(status);
        self.requests[class]
            .get_or_init(|| {
                FAMILIES.split_requests.with_label_values(&[
                    &self.route,
                    &self.arm,
                    STATUS_CLASSES[class],
                ])
            })
            .inc();
        self.duration.observe(seconds);
    }
}

/// Handles for one part of an aggregation route, created on first use of each outcome.
pub struct PartMetrics {
    route: String,
    part: String,
    outcomes: [OnceLock<IntCounter>; crate::aggregate::Outcome::LABELS.len()],
    duration: Histogram,
}

impl PartMetrics {
    /// Handles for part `part` of `route`.
    pub fn new(route: &str, part: &str) -> Self {
        PartMetrics {
            route: route.to_string(),
            part: part.to_string(),
            outcomes: Default::default(),
            duration: FAMILIES
                .aggregate_part_duration
                .with_label_values(&[route, part]),
        }
    }

    /// Counts one ended part.
    pub fn observe(&self, outcome: &crate::aggregate::Outcome, seconds: f64) {
        let index = outcome.index();
        self.outcomes[index]
            .get_or_init(|| {
                FAMILIES.aggregate_part_requests.with_label_values(&[
                    &self.route,
                    &self.part,
                    crate::aggregate::Outcome::LABELS[index],
                ])
            })
            .inc();
        self.duration.observe(seconds);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Method;

    #[test]
    fn status_classes_and_methods_are_bounded() {
        assert_eq!(STATUS_CLASSES[status_class(Some(204))], "2xx");
        assert_eq!(STATUS_CLASSES[status_class(Some(503))], "5xx");
        assert_eq!(STATUS_CLASSES[status_class(None)], "error");
        assert_eq!(STATUS_CLASSES[status_class(Some(42))], "error");
        assert_eq!(METHODS[method_index(&Method::GET)], "GET");
        assert_eq!(
            METHODS[method_index(&Method::from_bytes(b"BREW").unwrap())],
            "OTHER"
        );
    }
}
