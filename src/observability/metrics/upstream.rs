//! Per-pool and per-backend handles: attempts, health, ejections, the in-flight cap, panic mode.

use super::route::{status_class, STATUS_CLASSES};
use super::FAMILIES;
use crate::upstream::outlier::Reason;
use prometheus::{Histogram, IntCounter, IntGauge};

/// Ejection handles of a backend whose pool has outlier detection.
struct EjectionMetrics {
    ejected: IntGauge,
    ejections: [IntCounter; 3],
}

/// Handles for one backend.
pub struct BackendMetrics {
    pub healthy: IntGauge,
    responses: [IntCounter; 6],
    ejection: Option<EjectionMetrics>,
}

impl BackendMetrics {
    /// Handles for `backend` of `upstream`; the health gauge starts at 1. Ejection series exist
    /// only when the pool has outlier detection.
    pub fn new(upstream: &str, backend: &str, outlier_detection: bool) -> Self {
        let healthy = FAMILIES
            .backend_healthy
            .with_label_values(&[upstream, backend]);
        healthy.set(1);
        let ejection = outlier_detection.then(|| {
            let ejected = FAMILIES
                .backend_ejected
                .with_label_values(&[upstream, backend]);
            ejected.set(0);
            EjectionMetrics {
                ejected,
                ejections: Reason::ALL.map(|reason| {
                    FAMILIES
                        .ejections
                        .with_label_values(&[upstream, backend, reason.label()])
                }),
            }
        });
        BackendMetrics {
            ejection,
            healthy,
            responses: STATUS_CLASSES.map(|class| {
                FAMILIES
                    .upstream_requests
                    .with_label_values(&[upstream, backend, class])
            }),
        }
    }

    /// Counts one attempt's outcome (`None` = no response: connect error, timeout, reset).
    pub fn observe(&self, status: Option<u16>) {
        self.responses[status_class(status)].inc();
    }

    /// Counts an ejection for `reason`.
    pub fn ejected(&self, reason: Reason) {
        if let Some(metrics) = &self.ejection {
            metrics.ejected.set(1);
            let index = Reason::ALL.iter().position(|r| *r == reason).unwrap_or(0);
            metrics.ejections[index].inc();
        }
    }

    /// The backend's ejection ended.
    pub fn returned(&self) {
        if let Some(metrics) = &self.ejection {
            metrics.ejected.set(0);
        }
    }
}

/// Handles for one pool.
pub struct PoolMetrics {
    pub in_flight_cap_refused: IntCounter,
    pub upstream_duration: Histogram,
    pub panic: IntGauge,
    pub panic_requests: IntCounter,
}

impl PoolMetrics {
    /// Handles for `upstream`.
    pub fn new(upstream: &str) -> Self {
        PoolMetrics {
            in_flight_cap_refused: FAMILIES
                .in_flight_cap_refused
                .with_label_values(&[upstream]),
            upstream_duration: FAMILIES.upstream_duration.with_label_values(&[upstream]),
            panic: FAMILIES.pool_panic.with_label_values(&[upstream]),
            panic_requests: FAMILIES.pool_panic_requests.with_label_values(&[upstream]),
        }
    }
}
