//! gRPC at the gateway: the status codes its own errors become on `grpc: true` routes, and the
//! client's `grpc-timeout`.

use std::time::Duration;

/// The gRPC status code for an HTTP status the gateway produces.
pub fn code(status: u16) -> u8 {
    match status {
        400 => 3,             // INVALID_ARGUMENT
        401 => 16,            // UNAUTHENTICATED
        403 => 7,             // PERMISSION_DENIED
        404 | 405 => 12,      // UNIMPLEMENTED
        408 | 504 => 4,       // DEADLINE_EXCEEDED
        413 | 429 | 431 => 8, // RESOURCE_EXHAUSTED
        502 | 503 => 14,      // UNAVAILABLE
        _ => 13,              // INTERNAL
    }
}

/// `grpc-message` is percent-encoded: bytes outside printable ASCII, and `%` itself.
pub fn message(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if (0x20..0x7f).contains(&byte) && byte != b'%' {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// A `grpc-timeout` value: 1 to 8 digits and a unit (`H`, `M`, `S`, `m`, `u`, `n`).
pub fn timeout(value: &[u8]) -> Option<Duration> {
    let (&unit, digits) = value.split_last()?;
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let amount = digits
        .iter()
        .fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
    Some(match unit {
        b'H' => Duration::from_secs(amount * 3600),
        b'M' => Duration::from_secs(amount * 60),
        b'S' => Duration::from_secs(amount),
        b'm' => Duration::from_millis(amount),
        b'u' => Duration::from_micros(amount),
        b'n' => Duration::from_nanos(amount),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_messages_are_percent_encoded() {
        assert_eq!(message("no route matches"), "no route matches");
        assert_eq!(message("100% über\n"), "100%25 %C3%BCber%0A");
    }

    #[test]
    fn gateway_statuses_map_to_the_grpc_codes_clients_expect() {
        for (status, expected) in [
            (401, 16),
            (403, 7),
            (429, 8),
            (404, 12),
            (502, 14),
            (503, 14),
            (504, 4),
        ] {
            assert_eq!(code(status), expected, "{status}");
        }
    }

    #[test]
    fn grpc_timeouts_follow_the_wire_format() {
        assert_eq!(timeout(b"100m"), Some(Duration::from_millis(100)));
        assert_eq!(timeout(b"2S"), Some(Duration::from_secs(2)));
        assert_eq!(timeout(b"1H"), Some(Duration::from_secs(3600)));
        assert_eq!(
            timeout(b"99999999n"),
            Some(Duration::from_nanos(99_999_999))
        );
        assert_eq!(timeout(b"123456789S"), None, "at most 8 digits");
        assert_eq!(timeout(b"S"), None);
        assert_eq!(timeout(b"10x"), None);
        assert_eq!(timeout(b"-1S"), None);
    }
}
