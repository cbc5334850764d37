//! Aggregation routes: one request fans out to several backends, one JSON object comes back
//! (`{"data": {part: ...}, "meta": {"failed": [...], "duration_ms": ...}}`). This module holds
//! what is pure: the part templates, how a part's answer is judged, and the merged body. The
//! exchange itself (pools, retries, the connection pool) is the gateway's `aggregation` module.

pub mod answer;
pub mod template;

use std::sync::Arc;
use std::time::Duration;

/// How one part ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A 2xx whose body is JSON (or empty).
    Ok,
    /// Not back within its timeout or the route's.
    Timeout,
    /// No connection to any backend tried.
    ConnectFailure,
    /// The connection broke after the request was sent.
    Reset,
    /// The backend answered with a status outside 2xx.
    Status(u16),
    /// A 2xx whose body is not JSON (text is passed on as a string).
    NotJson,
    /// The body is larger than `max_part_size`.
    TooLarge,
    /// No healthy backend, or the pool's in-flight cap is reached.
    NoBackend,
    /// The caller's request has no value for this template variable.
    Unresolved(String),
}

impl Outcome {
    /// The `outcome` label values, in [`Outcome::index`] order.
    pub const LABELS: [&'static str; 9] = [
        "ok",
        "timeout",
        "connect_failure",
        "reset",
        "status",
        "not_json",
        "too_large",
        "no_backend",
        "unresolved",
    ];

    /// Position of this outcome's label in [`Outcome::LABELS`].
    pub fn index(&self) -> usize {
        match self {
            Outcome::Ok => 0,
            Outcome::Timeout => 1,
            Outcome::ConnectFailure => 2,
            Outcome::Reset => 3,
            Outcome::Status(_) => 4,
            Outcome::NotJson => 5,
            Outcome::TooLarge => 6,
            Outcome::NoBackend => 7,
            Outcome::Unresolved(_) => 8,
        }
    }

    /// The `reason` under `meta.failed` (`None`: the part did not fail).
    pub fn reason(&self) -> Option<String> {
        match self {
            Outcome::Ok => None,
            Outcome::Status(status) => Some(format!("status {status}")),
            Outcome::Unresolved(variable) => Some(format!("unresolved {{{variable}}}")),
            other => Some(Self::LABELS[other.index()].to_string()),
        }
    }

    /// The status of the gateway's error when a required part ends this way.
    pub fn error_status(&self) -> u16 {
        match self {
            Outcome::Timeout => 504,
            _ => 502,
        }
    }
}

/// An aggregation route as the request path uses it: the spec and each part's metrics.
pub struct Plan {
    pub spec: crate::config::AggregateSpec,
    pub parts: Box<[PlannedPart]>,
}

/// One part's name (shared with the access log) and metric handles.
pub struct PlannedPart {
    pub name: Arc<str>,
    pub metrics: crate::observability::metrics::PartMetrics,
}

impl Plan {
    /// The plan of `spec` on route `route`.
    pub fn new(route: &str, spec: &crate::config::AggregateSpec) -> Self {
        let parts = spec
            .parts
            .iter()
            .map(|part| PlannedPart {
                name: part.name.as_str().into(),
                metrics: crate::observability::metrics::PartMetrics::new(route, &part.name),
            })
            .collect();
        Plan {
            spec: spec.clone(),
            parts,
        }
    }
}

/// One part of one request, for the access log.
#[derive(Debug, Clone)]
pub struct PartRecord {
    pub name: Arc<str>,
    pub outcome: Outcome,
    /// The last status a backend answered with.
    pub status: Option<u16>,
    pub duration: Duration,
}
