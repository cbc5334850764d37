//! Metrics and access logs: the only place telemetry is defined.

pub mod access_log;
pub mod metrics;
pub mod tracing;
