//! W3C Trace Context: reading a client's `traceparent`, writing ours.

use http::HeaderValue;

/// A 16-byte trace id.
pub type TraceId = [u8; 16];
/// An 8-byte span id.
pub type SpanId = [u8; 8];

/// The client's span, from a valid `traceparent`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parent {
    pub trace_id: TraceId,
    pub span_id: SpanId,
    pub sampled: bool,
}

/// Reads a `traceparent` value (`00-<32 hex>-<16 hex>-<2 hex>`). A later version is read by
/// its version-00 prefix, as the spec asks; version `ff`, upper-case hex, all-zero ids and
/// any other shape are invalid (`None`: the request starts a new trace).
pub fn parse_traceparent(value: &[u8]) -> Option<Parent> {
    if value.len() < 55 {
        return None;
    }
    let version = hex_bytes::<1>(&value[0..2])?;
    if version[0] == 0xff || (version[0] == 0 && value.len() != 55) {
        return None;
    }
    if value[2] != b'-' || value[35] != b'-' || value[52] != b'-' {
        return None;
    }
    if value.len() > 55 && value[55] != b'-' {
        return None;
    }
    let trace_id = hex_bytes::<16>(&value[3..35])?;
    let span_id = hex_bytes::<8>(&value[36..52])?;
    let flags = hex_bytes::<1>(&value[53..55])?;
    if trace_id == [0; 16] || span_id == [0; 8] {
        return None;
    }
    Some(Parent {
        trace_id,
        span_id,
        sampled: flags[0] & 1 == 1,
    })
}

/// Reads a B3 single header (`{trace}-{span}[-{sampled}[-{parent}]]`, a 64- or 128-bit trace
/// id, `1`/`d` sampled, `0` not) from services that predate W3C Trace Context. A lone
/// sampling flag (`0`, `1`, `d`) carries no ids and starts a new trace.
pub fn parse_b3(value: &[u8]) -> Option<Parent> {
    let mut fields = value.split(|&b| b == b'-');
    let trace = fields.next()?;
    let span = fields.next()?;
    let sampled = match fields.next() {
        None | Some(b"1") | Some(b"d") => true,
        Some(b"0") => false,
        Some(_) => return None,
    };
    let trace_id = match trace.len() {
        32 => hex_bytes::<16>(trace)?,
        16 => {
            let mut padded = [0u8; 16];
            padded[8..].copy_from_slice(&hex_bytes::<8>(trace)?);
            padded
        }
        _ => return None,
    };
    let span_id = hex_bytes::<8>(span)?;
    (trace_id != [0; 16] && span_id != [0; 8]).then_some(Parent {
        trace_id,
        span_id,
        sampled,
    })
}

/// Lower-case hex pairs into bytes.
fn hex_bytes<const N: usize>(text: &[u8]) -> Option<[u8; N]> {
    if text.len() != N * 2 {
        return None;
    }
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    let mut out = [0u8; N];
    for (index, pair) in text.chunks_exact(2).enumerate() {
        out[index] = digit(pair[0])? << 4 | digit(pair[1])?;
    }
    Some(out)
}

/// `00-<trace>-<span>-<flags>`.
pub fn traceparent(trace_id: &TraceId, span_id: &SpanId, sampled: bool) -> HeaderValue {
    let mut text = Vec::with_capacity(55);
    text.extend_from_slice(b"00-");
    crate::fastfmt::push_hex_bytes(&mut text, trace_id);
    text.push(b'-');
    crate::fastfmt::push_hex_bytes(&mut text, span_id);
    text.extend_from_slice(if sampled { b"-01" } else { b"-00" });
    // Hex digits and dashes are always a valid header value.
    HeaderValue::from_maybe_shared(bytes::Bytes::from(text)).unwrap_or_else(|_| {
        HeaderValue::from_static("00-00000000000000000000000000000000-0000000000000000-00")
    })
}

/// A `tracestate` kept only beside a valid `traceparent`, and only when it is a sane list:
/// at most 32 members and 512 bytes of printable ASCII.
pub fn sane_tracestate(value: &HeaderValue) -> bool {
    let bytes = value.as_bytes();
    bytes.len() <= 512
        && bytes.iter().all(|b| (0x20..0x7f).contains(b))
        && bytes.split(|&b| b == b',').count() <= 32
}

/// A random non-zero trace id.
pub fn new_trace_id() -> TraceId {
    loop {
        let id = rand::random::<u128>().to_be_bytes();
        if id != [0; 16] {
            return id;
        }
    }
}

/// A random non-zero span id.
pub fn new_span_id() -> SpanId {
    loop {
        let id = rand::random::<u64>().to_be_bytes();
        if id != [0; 8] {
            return id;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &[u8] = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn the_specs_example_is_read_and_written_back() {
        let parent = parse_traceparent(EXAMPLE).unwrap();
        assert!(parent.sampled);
        assert_eq!(
            parent.span_id,
            [0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7]
        );
        assert_eq!(
            traceparent(&parent.trace_id, &parent.span_id, true).as_bytes(),
            EXAMPLE
        );
    }

    #[test]
    fn b3_single_headers_are_read_as_parents() {
        let full =
            parse_b3(b"80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b90")
                .unwrap();
        assert!(full.sampled);
        assert_eq!(
            full.span_id,
            [0xe4, 0x57, 0xb5, 0xa2, 0xe4, 0xd8, 0x6b, 0xd1]
        );
        let short = parse_b3(b"a3ce929d0e0e4736-00f067aa0ba902b7-0").unwrap();
        assert!(!short.sampled);
        assert_eq!(&short.trace_id[..8], &[0; 8], "a 64-bit id is the low half");
        assert!(
            parse_b3(b"a3ce929d0e0e4736-00f067aa0ba902b7")
                .unwrap()
                .sampled
        );
        for bad in [
            &b"0"[..],
            b"1",
            b"d",
            b"xyz-00f067aa0ba902b7",
            b"a3ce929d0e0e4736-00f067aa0ba902b7-2",
        ] {
            assert_eq!(parse_b3(bad), None, "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn invalid_values_start_a_new_trace() {
        for bad in [
            &b"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01"[..],
            b"00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            b"ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            b"00-4bf92f3577b34da6a3ce929d0e0e473-600f067aa0ba902b7-01",
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            b"garbage",
        ] {
            assert_eq!(
                parse_traceparent(bad),
                None,
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        // A later version is read by its version-00 fields.
        let later = b"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00-more";
        assert_eq!(parse_traceparent(later).map(|p| p.sampled), Some(false));
    }
}
