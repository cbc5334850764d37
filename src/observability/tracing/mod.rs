//! Distributed tracing: W3C trace context continued through the gateway and OpenTelemetry
//! spans (one server span per request, one client span per upstream attempt) exported over
//! OTLP/HTTP by a thread of its own. A request records its spans only when they may be
//! exported (sampled up front, or a tail rule is configured); the decision to export is taken
//! when the request ends, so a 5xx or a slow request can be kept whatever the head decision.

pub mod context;
mod export;
mod otlp;

use crate::config::TracingSpec;
use context::{Parent, SpanId, TraceId};
use http::{HeaderMap, HeaderName, HeaderValue};
use std::time::{Duration, SystemTime};

/// `traceparent`.
pub static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
/// `tracestate`.
pub static TRACESTATE: HeaderName = HeaderName::from_static("tracestate");
/// B3 single header, read when there is no valid `traceparent`.
pub static B3: HeaderName = HeaderName::from_static("b3");

/// OTLP's span kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u64)]
pub enum SpanKind {
    Server = 2,
    Client = 3,
}

/// An attribute value.
#[derive(Debug, Clone, PartialEq)]
pub enum AttrValue {
    Str(String),
    Int(i64),
    Bool(bool),
}

/// Something that happened during a span.
#[derive(Debug, Clone)]
pub struct Event {
    pub name: &'static str,
    pub time: SystemTime,
    pub attributes: Vec<(&'static str, AttrValue)>,
}

/// One finished span.
#[derive(Debug, Clone)]
pub struct SpanRecord {
    pub span_id: SpanId,
    pub parent: Option<SpanId>,
    pub trace_state: Option<String>,
    pub name: String,
    pub kind: SpanKind,
    pub start: SystemTime,
    pub end: SystemTime,
    pub attributes: Vec<(&'static str, AttrValue)>,
    pub events: Vec<Event>,
    pub error: bool,
}

/// A finished request's spans.
#[derive(Debug)]
pub struct TraceRecord {
    pub trace_id: TraceId,
    pub server: SpanRecord,
    pub attempts: Vec<SpanRecord>,
}

/// The tracing of one configuration: the sampling rules and the exporter thread.
pub struct Tracer {
    spec: TracingSpec,
    exporter: export::Exporter,
}

/// What the server span says about the request, known when it ends.
pub struct ServerFacts<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub route: Option<&'a str>,
    pub status: Option<u16>,
    pub client_ip: Option<std::net::IpAddr>,
    pub protocol: &'static str,
    pub request_id: &'a str,
    pub duration: Duration,
    /// The `X-Cache` value on caching routes.
    pub cache: Option<&'a str>,
}

/// One upstream attempt's facts, when it ends.
pub struct AttemptFacts<'a> {
    pub upstream: &'a str,
    pub backend: &'a str,
    pub status: Option<u16>,
    /// 0 for the first attempt, then 1, 2, … for the retries.
    pub resend_count: u32,
    /// Why this attempt is a retry (the condition of `retries.on` the previous one met).
    pub retry_reason: Option<&'static str>,
    /// The attempt went over a pooled connection (None: no connection was made).
    pub reused: Option<bool>,
}

/// A request's trace while it runs.
pub struct RequestTrace {
    pub trace_id: TraceId,
    pub span_id: SpanId,
    parent: Option<SpanId>,
    tracestate: Option<HeaderValue>,
    /// The client sent a `tracestate` (which goes unless the trace is continued).
    pub client_tracestate: bool,
    /// The head decision (the parent's flag, else the ratio).
    pub sampled: bool,
    /// Spans are kept: sampled, or a tail rule may still keep them.
    recording: bool,
    method: http::Method,
    start: SystemTime,
    attempts: Vec<SpanRecord>,
    events: Vec<Event>,
    open_attempt: Option<(SpanId, SystemTime)>,
    cache_lookup_started: Option<std::time::Instant>,
}

impl Tracer {
    /// Starts the exporter thread of `spec`.
    pub fn new(spec: &TracingSpec) -> std::io::Result<Self> {
        Ok(Tracer {
            spec: spec.clone(),
            exporter: export::Exporter::start(spec)?,
        })
    }

    /// The settings it runs with.
    pub fn spec(&self) -> &TracingSpec {
        &self.spec
    }

    /// The trace of a request with these headers on a route whose ratio is `route_ratio`: a
    /// valid `traceparent` (else a B3 single header) is continued (a sampled parent is always followed, an unsampled one
    /// never by the head decision); otherwise a new trace is sampled at the ratio.
    pub fn start(
        &self,
        method: &http::Method,
        headers: &HeaderMap,
        route_ratio: Option<f64>,
    ) -> Box<RequestTrace> {
        // One pass over the fields finds both (cheaper than two lookups by name).
        let (mut traceparent, mut tracestate, mut b3) = (None, None, None);
        for (name, value) in headers {
            if name == TRACEPARENT {
                traceparent.get_or_insert(value);
            } else if name == TRACESTATE {
                tracestate.get_or_insert(value);
            } else if name == B3 {
                b3.get_or_insert(value);
            }
        }
        let w3c: Option<Parent> =
            traceparent.and_then(|value| context::parse_traceparent(value.as_bytes()));
        let parent = w3c.or_else(|| b3.and_then(|value| context::parse_b3(value.as_bytes())));
        let (trace_id, parent_span, sampled) = match parent {
            Some(parent) => (parent.trace_id, Some(parent.span_id), parent.sampled),
            None => {
                let ratio = route_ratio.unwrap_or(self.spec.sample_ratio);
                let sampled = ratio >= 1.0 || (ratio > 0.0 && rand::random::<f64>() < ratio);
                (context::new_trace_id(), None, sampled)
            }
        };
        let client_tracestate = tracestate.is_some();
        // `tracestate` belongs to a W3C parent only.
        let tracestate = w3c
            .and(tracestate)
            .filter(|value| context::sane_tracestate(value))
            .cloned();
        let tail =
            self.spec.always_status_at_least.is_some() || self.spec.always_slower_than.is_some();
        let recording = sampled || tail;
        Box::new(RequestTrace {
            trace_id,
            span_id: context::new_span_id(),
            parent: parent_span,
            tracestate,
            client_tracestate,
            sampled,
            recording,
            method: method.clone(),
            // Only a trace that may be exported needs its times.
            start: if recording {
                SystemTime::now()
            } else {
                SystemTime::UNIX_EPOCH
            },
            attempts: Vec::new(),
            events: Vec::new(),
            open_attempt: None,
            cache_lookup_started: None,
        })
    }

    /// Ends the request's trace: exported when sampled or when a tail rule keeps it.
    pub fn finish(&self, trace: RequestTrace, facts: &ServerFacts<'_>) {
        if !trace.recording {
            return;
        }
        let kept = trace.sampled
            || self
                .spec
                .always_status_at_least
                .is_some_and(|least| facts.status.is_some_and(|s| s >= least))
            || self
                .spec
                .always_slower_than
                .is_some_and(|limit| facts.duration > limit);
        if !kept {
            return;
        }
        let RequestTrace {
            trace_id,
            span_id,
            parent,
            tracestate,
            start,
            attempts,
            events,
            ..
        } = trace;
        let mut attributes = vec![
            ("http.request.method", AttrValue::Str(facts.method.into())),
            ("url.path", AttrValue::Str(facts.path.into())),
            (
                "network.protocol.version",
                AttrValue::Str(facts.protocol.trim_start_matches("HTTP/").into()),
            ),
            (
                "edgegate.request_id",
                AttrValue::Str(facts.request_id.into()),
            ),
        ];
        if let Some(route) = facts.route {
            attributes.push(("http.route", AttrValue::Str(route.into())));
        }
        status_attribute(&mut attributes, facts.status);
        if let Some(ip) = facts.client_ip {
            attributes.push(("client.address", AttrValue::Str(ip.to_string())));
        }
        if let Some(cache) = facts.cache {
            attributes.push(("edgegate.cache.status", AttrValue::Str(cache.into())));
        }
        let name = match facts.route {
            Some(route) => format!("{} {route}", facts.method),
            None => facts.method.to_string(),
        };
        let server = SpanRecord {
            span_id,
            parent,
            trace_state: tracestate.and_then(|v| v.to_str().ok().map(str::to_string)),
            name,
            kind: SpanKind::Server,
            start,
            end: start.checked_add(facts.duration).unwrap_or(start),
            attributes,
            events,
            error: facts.status.is_none_or(|s| s >= 500),
        };
        self.exporter.submit(Box::new(TraceRecord {
            trace_id,
            server,
            attempts,
        }));
    }
}

impl RequestTrace {
    /// A new client span for the attempt about to be sent.
    pub fn open_attempt(&mut self) {
        // An attempt that is never exported tells the backend the server span instead.
        if self.recording {
            self.open_attempt = Some((context::new_span_id(), SystemTime::now()));
        }
    }

    /// `traceparent` for the upstream request: the open attempt's span (else the server span)
    /// as the parent, with the head decision as the flag.
    pub fn traceparent(&self) -> HeaderValue {
        let span = self.open_attempt.map_or(self.span_id, |(span, _)| span);
        context::traceparent(&self.trace_id, &span, self.sampled)
    }

    /// The client's `tracestate`, passed on beside a continued trace.
    pub fn tracestate(&self) -> Option<&HeaderValue> {
        self.tracestate.as_ref()
    }

    /// Ends the open attempt's client span.
    pub fn close_attempt(&mut self, facts: &AttemptFacts<'_>) {
        let Some((span_id, start)) = self.open_attempt.take() else {
            return;
        };
        if !self.recording {
            return;
        }
        let mut attributes = vec![
            (
                "http.request.method",
                AttrValue::Str(self.method.as_str().into()),
            ),
            ("server.address", AttrValue::Str(facts.backend.into())),
            ("edgegate.upstream", AttrValue::Str(facts.upstream.into())),
            (
                "http.request.resend_count",
                AttrValue::Int(i64::from(facts.resend_count)),
            ),
        ];
        status_attribute(&mut attributes, facts.status);
        if let Some(reason) = facts.retry_reason {
            attributes.push(("edgegate.retry.reason", AttrValue::Str(reason.into())));
        }
        if let Some(reused) = facts.reused {
            attributes.push(("edgegate.connection.reused", AttrValue::Bool(reused)));
        }
        let name = self.method.as_str().to_string();
        let error = facts.status.is_none_or(|s| s >= 500);
        self.client_span(span_id, name, start, attributes, error);
    }

    /// Adds a finished client span, the server span's child.
    fn client_span(
        &mut self,
        span_id: SpanId,
        name: String,
        start: SystemTime,
        attributes: Vec<(&'static str, AttrValue)>,
        error: bool,
    ) {
        self.attempts.push(SpanRecord {
            span_id,
            parent: Some(self.span_id),
            trace_state: None,
            name,
            kind: SpanKind::Client,
            start,
            end: SystemTime::now().max(start),
            attributes,
            events: Vec::new(),
            error,
        });
    }

    /// The cache lookup starts now (a recording trace only).
    pub fn cache_lookup_starts(&mut self) {
        if self.recording {
            self.cache_lookup_started = Some(std::time::Instant::now());
        }
    }

    /// The `cache_lookup` event: how the lookup begun by [`RequestTrace::cache_lookup_starts`]
    /// ended (`hit`, `stale`, `miss`) and how long it took.
    pub fn cache_lookup_ends(&mut self, outcome: &'static str) {
        let Some(started) = self.cache_lookup_started.take() else {
            return;
        };
        let took = i64::try_from(started.elapsed().as_micros()).unwrap_or(i64::MAX);
        self.event("cache_lookup", || {
            vec![
                ("edgegate.cache.lookup", AttrValue::Str(outcome.into())),
                ("edgegate.cache.lookup_us", AttrValue::Int(took)),
            ]
        });
    }

    /// Whether this request's spans may be exported (else nothing is worth recording).
    pub fn recording(&self) -> bool {
        self.recording
    }

    /// Records an event on the server span; `attributes` runs only when the trace records.
    pub fn event(
        &mut self,
        name: &'static str,
        attributes: impl FnOnce() -> Vec<(&'static str, AttrValue)>,
    ) {
        if self.recording {
            self.events.push(Event {
                name,
                time: SystemTime::now(),
                attributes: attributes(),
            });
        }
    }

    /// A client span for an aggregation part that already ended (`span_id` is the one its
    /// request carried).
    pub fn part_span(&mut self, span_id: SpanId, start: SystemTime, facts: &PartFacts<'_>) {
        if !self.recording {
            return;
        }
        let mut attributes = vec![
            ("edgegate.part", AttrValue::Str(facts.part.into())),
            ("edgegate.upstream", AttrValue::Str(facts.upstream.into())),
            (
                "edgegate.part.outcome",
                AttrValue::Str(facts.outcome.into()),
            ),
        ];
        if let Some(backend) = facts.backend {
            attributes.push(("server.address", AttrValue::Str(backend.into())));
        }
        status_attribute(&mut attributes, facts.status);
        let name = format!("part {}", facts.part);
        let error = facts.outcome != "ok";
        self.client_span(span_id, name, start, attributes, error);
    }

    /// `traceparent` naming `span` as the parent (an aggregation part's request).
    pub fn traceparent_for(&self, span: &SpanId) -> HeaderValue {
        context::traceparent(&self.trace_id, span, self.sampled)
    }
}

/// `http.response.status_code` when there is one.
fn status_attribute(attributes: &mut Vec<(&'static str, AttrValue)>, status: Option<u16>) {
    if let Some(status) = status {
        attributes.push((
            "http.response.status_code",
            AttrValue::Int(i64::from(status)),
        ));
    }
}

/// An aggregation part, when it ended.
pub struct PartFacts<'a> {
    pub part: &'a str,
    pub upstream: &'a str,
    pub backend: Option<&'a str>,
    pub status: Option<u16>,
    pub outcome: &'static str,
}
