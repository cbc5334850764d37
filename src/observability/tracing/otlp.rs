//! The OTLP/HTTP request body: `ExportTraceServiceRequest` in protobuf, written by hand (a few
//! message types of opentelemetry-proto; the tests decode it with that crate).

use super::{AttrValue, SpanRecord, TraceRecord};
use std::time::{SystemTime, UNIX_EPOCH};

/// Wire types.
const VARINT: u32 = 0;
const FIXED64: u32 = 1;
const LEN: u32 = 2;

/// The body POSTed to `/v1/traces` for `traces`.
pub fn export_request(
    service_name: &str,
    resource: &[(String, String)],
    traces: &[Box<TraceRecord>],
) -> Vec<u8> {
    let mut out = Vec::with_capacity(256 + traces.len() * 512);
    // ExportTraceServiceRequest.resource_spans = 1
    message(&mut out, 1, |resource_spans| {
        // ResourceSpans.resource = 1
        message(resource_spans, 1, |res| {
            attribute(res, 1, "service.name", &AttrValue::Str(service_name.into()));
            for (key, value) in resource {
                attribute(res, 1, key, &AttrValue::Str(value.clone()));
            }
        });
        // ResourceSpans.scope_spans = 2
        message(resource_spans, 2, |scope_spans| {
            // ScopeSpans.scope = 1: InstrumentationScope { name = 1, version = 2 }
            message(scope_spans, 1, |scope| {
                string(scope, 1, "edgegate");
                string(scope, 2, env!("CARGO_PKG_VERSION"));
            });
            for trace in traces {
                span(scope_spans, &trace.trace_id, &trace.server);
                for attempt in &trace.attempts {
                    span(scope_spans, &trace.trace_id, attempt);
                }
            }
        });
    });
    out
}

/// ScopeSpans.spans = 2
fn span(out: &mut Vec<u8>, trace_id: &[u8; 16], record: &SpanRecord) {
    message(out, 2, |span| {
        bytes(span, 1, trace_id);
        bytes(span, 2, &record.span_id);
        if let Some(state) = &record.trace_state {
            string(span, 3, state);
        }
        if let Some(parent) = &record.parent {
            bytes(span, 4, parent);
        }
        string(span, 5, &record.name);
        varint_field(span, 6, record.kind as u64);
        fixed64(span, 7, nanos(record.start));
        fixed64(span, 8, nanos(record.end));
        for (key, value) in &record.attributes {
            attribute(span, 9, key, value);
        }
        // Span.events = 11: Event { time_unix_nano = 1, name = 2, attributes = 3 }
        for event in &record.events {
            message(span, 11, |encoded| {
                fixed64(encoded, 1, nanos(event.time));
                string(encoded, 2, event.name);
                for (key, value) in &event.attributes {
                    attribute(encoded, 3, key, value);
                }
            });
        }
        if record.error {
            // Span.status = 15: Status { code = 3: STATUS_CODE_ERROR (2) }
            message(span, 15, |status| varint_field(status, 3, 2));
        }
    });
}

fn nanos(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// A `KeyValue { key = 1, value = 2: AnyValue }` as field `field`.
fn attribute(out: &mut Vec<u8>, field: u32, key: &str, value: &AttrValue) {
    message(out, field, |kv| {
        string(kv, 1, key);
        message(kv, 2, |any| match value {
            AttrValue::Str(text) => string(any, 1, text),
            // AnyValue.int_value = 3 (int64: two's complement as a varint)
            AttrValue::Int(n) => varint_field(any, 3, *n as u64),
            // AnyValue.bool_value = 2
            AttrValue::Bool(b) => varint_field(any, 2, u64::from(*b)),
        });
    });
}

fn tag(out: &mut Vec<u8>, field: u32, wire: u32) {
    varint(out, u64::from(field << 3 | wire));
}

fn varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn varint_field(out: &mut Vec<u8>, field: u32, value: u64) {
    tag(out, field, VARINT);
    varint(out, value);
}

fn fixed64(out: &mut Vec<u8>, field: u32, value: u64) {
    tag(out, field, FIXED64);
    out.extend_from_slice(&value.to_le_bytes());
}

fn bytes(out: &mut Vec<u8>, field: u32, value: &[u8]) {
    tag(out, field, LEN);
    varint(out, value.len() as u64);
    out.extend_from_slice(value);
}

fn string(out: &mut Vec<u8>, field: u32, value: &str) {
    bytes(out, field, value.as_bytes());
}

/// A nested message as field `field`, written by `write`.
fn message(out: &mut Vec<u8>, field: u32, write: impl FnOnce(&mut Vec<u8>)) {
    let mut inner = Vec::new();
    write(&mut inner);
    bytes(out, field, &inner);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_are_little_endian_base_128() {
        let mut out = Vec::new();
        varint(&mut out, 300);
        assert_eq!(out, [0xac, 0x02]);
        out.clear();
        varint(&mut out, (-1i64) as u64);
        assert_eq!(out.len(), 10);
    }
}
