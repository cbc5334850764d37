//! Writing text into byte buffers without `fmt`: numbers, addresses, hex, JSON string literals
//! and RFC 3339 timestamps. The request path (access log, rate-limit headers, forwarding headers,
//! request ids) formats with these; each equals what `format!` or serde_json would write.

use std::cell::Cell;
use std::io::Write;
use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Hex digits, lower case (ids, digests, JSON escapes).
pub const LOWER_HEX: &[u8; 16] = b"0123456789abcdef";
/// Hex digits, upper case (percent-encoding, RFC 3986 §6.2.2.1).
pub const UPPER_HEX: &[u8; 16] = b"0123456789ABCDEF";

/// The two hex digits of `byte`.
pub fn hex_pair(byte: u8, digits: &[u8; 16]) -> [u8; 2] {
    [
        digits[usize::from(byte >> 4)],
        digits[usize::from(byte & 0xf)],
    ]
}

/// Appends `bytes` as lower-case hex (digests in keys, headers and the CLI).
pub fn push_hex(out: &mut String, bytes: &[u8]) {
    out.reserve(bytes.len() * 2);
    for &byte in bytes {
        for digit in hex_pair(byte, LOWER_HEX) {
            out.push(char::from(digit));
        }
    }
}

/// Appends `bytes` as lower-case hex to a byte buffer (trace and span ids).
pub fn push_hex_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    out.reserve(bytes.len() * 2);
    for &byte in bytes {
        out.extend_from_slice(&hex_pair(byte, LOWER_HEX));
    }
}

/// `n` in decimal.
pub fn push_number(out: &mut Vec<u8>, n: impl itoa::Integer) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

/// `duration` in milliseconds with three decimals (rounded to the microsecond).
pub fn push_millis(out: &mut Vec<u8>, duration: Duration) {
    // u64 arithmetic: `as_nanos` is a u128, and dividing one is a library call.
    let micros = duration
        .as_secs()
        .saturating_mul(1_000_000)
        .saturating_add(u64::from((duration.subsec_nanos() + 500) / 1000));
    push_number(out, micros / 1000);
    out.push(b'.');
    push_three_digits(out, (micros % 1000) as u32);
}

/// `n` (below 1000) as exactly three digits.
pub fn push_three_digits(out: &mut Vec<u8>, n: u32) {
    let digit = |d: u32| b'0' + (d % 10) as u8;
    out.extend_from_slice(&[digit(n / 100), digit(n / 10), digit(n)]);
}

/// `n` with leading zeros to `width` digits.
pub fn push_padded(out: &mut Vec<u8>, n: u32, width: usize) {
    let mut buffer = itoa::Buffer::new();
    let digits = buffer.format(n);
    for _ in digits.len()..width {
        out.push(b'0');
    }
    out.extend_from_slice(digits.as_bytes());
}

/// An address as `Display` writes it (dotted quad, or RFC 5952 IPv6).
pub fn push_ip(out: &mut Vec<u8>, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                push_number(out, octet);
            }
        }
        IpAddr::V6(v6) => {
            let _ = write!(out, "{v6}");
        }
    }
}

/// Appends `text` as a JSON string literal.
pub fn push_json_str(out: &mut Vec<u8>, text: &str) {
    out.reserve(text.len() + 2);
    out.push(b'"');
    if !needs_escape(text.as_bytes()) {
        out.extend_from_slice(text.as_bytes());
        out.push(b'"');
        return;
    }
    let bytes = text.as_bytes();
    let mut clean_from = 0;
    for (at, &byte) in bytes.iter().enumerate() {
        let escaped: &[u8] = match byte {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0..=0x1f => b"",
            _ => continue,
        };
        out.extend_from_slice(&bytes[clean_from..at]);
        if escaped.is_empty() {
            out.extend_from_slice(b"\\u00");
            out.extend_from_slice(&hex_pair(byte, LOWER_HEX));
        } else {
            out.extend_from_slice(escaped);
        }
        clean_from = at + 1;
    }
    out.extend_from_slice(&bytes[clean_from..]);
    out.push(b'"');
}

/// Whether `bytes` holds a control character, `"` or `\\`: eight bytes per step, since nearly
/// every logged string needs no escaping at all.
fn needs_escape(bytes: &[u8]) -> bool {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
    // Exact for "any byte below n" when n <= 0x80 (a borrow only ever follows a true hit).
    let any_below = |word: u64, n: u8| word.wrapping_sub(ONES * u64::from(n)) & !word & HIGHS != 0;
    let any_equal = |word: u64, byte: u8| any_below(word ^ (ONES * u64::from(byte)), 1);
    let flagged = |chunk: &[u8]| {
        // A short tail is padded with spaces, which need no escaping.
        let mut word = [b' '; 8];
        word[..chunk.len()].copy_from_slice(chunk);
        let word = u64::from_ne_bytes(word);
        any_below(word, 0x20) || any_equal(word, b'"') || any_equal(word, b'\\')
    };
    bytes.chunks(8).any(flagged)
}

thread_local! {
    /// The last second formatted on this thread and its `2026-11-23T16:05:11.` prefix: a busy
    /// gateway logs many lines per second, and the calendar arithmetic is the costly part.
    static SECOND: Cell<(u64, [u8; 20])> = const { Cell::new((u64::MAX, [0; 20])) };
}

/// `2026-11-23T16:05:11.123Z`
pub fn write_rfc3339(out: &mut Vec<u8>, time: SystemTime) {
    let since_epoch = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let seconds = since_epoch.as_secs();
    let (cached, mut prefix) = SECOND.get();
    if cached != seconds {
        let mut text = Vec::with_capacity(20);
        let (days, rest) = (seconds / 86_400, seconds % 86_400);
        let (year, month, day) = civil_from_days(days as i64);
        push_padded(&mut text, year.clamp(0, 9999) as u32, 4);
        for (separator, value) in [
            (b'-', month),
            (b'-', day),
            (b'T', (rest / 3600) as u32),
            (b':', (rest % 3600 / 60) as u32),
            (b':', (rest % 60) as u32),
        ] {
            text.push(separator);
            push_padded(&mut text, value, 2);
        }
        text.push(b'.');
        // Always 20 bytes (the year is clamped to four digits).
        if let Some(head) = text.get(..20) {
            prefix.copy_from_slice(head);
            SECOND.set((seconds, prefix));
        }
    }
    out.extend_from_slice(&prefix);
    push_three_digits(out, since_epoch.subsec_millis());
    out.push(b'Z');
}

/// Days since 1970-01-01 -> (year, month, day), Howard Hinnant's algorithm.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_word_at_a_time_scan_agrees_with_the_byte_test() {
        let escaped = |byte: u8| byte < 0x20 || byte == b'"' || byte == b'\\';
        for filler in [b'a', b' ', b'~', 0x7f, 0x80, 0xff] {
            for len in 0..=19 {
                assert!(!needs_escape(&vec![filler; len]));
                for at in 0..len {
                    for byte in 0..=255u8 {
                        let mut text = vec![filler; len];
                        text[at] = byte;
                        assert_eq!(needs_escape(&text), escaped(byte), "{text:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn timestamps_follow_the_clock_across_seconds() {
        let text = |millis: u64| {
            let mut out = Vec::new();
            write_rfc3339(&mut out, UNIX_EPOCH + Duration::from_millis(millis));
            String::from_utf8(out).unwrap()
        };
        assert_eq!(text(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
        assert_eq!(text(1_700_000_000_999), "2023-11-14T22:13:20.999Z");
        assert_eq!(text(1_700_000_001_004), "2023-11-14T22:13:21.004Z");
        assert_eq!(text(1_700_000_000_050), "2023-11-14T22:13:20.050Z");
        assert_eq!(text(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(text(951_782_400_000), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn dates_are_civil() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_723), (2024, 1, 1));
        assert_eq!(civil_from_days(20_415), (2025, 11, 23));
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
    }

    #[test]
    fn hex_is_lower_case_two_digits_per_byte() {
        let mut out = String::from("key:");
        push_hex(&mut out, &[0x00, 0x0f, 0xa0, 0xff]);
        assert_eq!(out, "key:000fa0ff");
        assert_eq!(hex_pair(0xab, UPPER_HEX), *b"AB");
    }

    mod fuzz {
        use super::*;
        use proptest::prelude::*;

        fn text(bytes: Vec<u8>) -> String {
            String::from_utf8(bytes).unwrap()
        }

        proptest! {
            #[test]
            fn fuzz_numbers_are_what_format_writes(n in any::<u64>(), small in any::<u16>(), width in 0usize..8) {
                let mut out = Vec::new();
                push_number(&mut out, n);
                prop_assert_eq!(text(out), format!("{n}"));
                let mut out = Vec::new();
                push_padded(&mut out, u32::from(small), width);
                prop_assert_eq!(text(out), format!("{small:0width$}"));
                let mut out = Vec::new();
                push_three_digits(&mut out, u32::from(small % 1000));
                prop_assert_eq!(text(out), format!("{:03}", small % 1000));
            }

            #[test]
            fn fuzz_millis_are_microsecond_rounded(nanos in 0u64..=(u64::MAX / 2)) {
                let mut out = Vec::new();
                push_millis(&mut out, Duration::from_nanos(nanos));
                let micros = (u128::from(nanos) + 500) / 1000;
                prop_assert_eq!(text(out), format!("{}.{:03}", micros / 1000, micros % 1000));
            }

            #[test]
            fn fuzz_addresses_are_what_display_writes(ip in any::<IpAddr>()) {
                let mut out = Vec::new();
                push_ip(&mut out, ip);
                prop_assert_eq!(text(out), ip.to_string());
            }

            #[test]
            fn fuzz_hex_is_what_format_writes(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
                let mut out = String::new();
                push_hex(&mut out, &bytes);
                let expected: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
                prop_assert_eq!(out, expected);
            }

            #[test]
            fn fuzz_json_strings_are_what_serde_json_writes(value in any::<String>()) {
                let mut out = Vec::new();
                push_json_str(&mut out, &value);
                let ours = text(out);
                prop_assert_eq!(serde_json::from_str::<String>(&ours).unwrap(), value.clone());
                prop_assert_eq!(ours, serde_json::to_string(&value).unwrap());
            }

            #[test]
            fn fuzz_timestamps_are_rfc3339_utc(millis in 0u64..253_402_300_799_999) {
                let mut out = Vec::new();
                let time = UNIX_EPOCH + Duration::from_millis(millis);
                write_rfc3339(&mut out, time);
                let ours = text(out);
                let seconds = millis / 1000;
                let expected = format!(
                    "{}.{:03}Z",
                    counted_rfc3339(seconds),
                    millis % 1000
                );
                prop_assert_eq!(ours, expected);
            }
        }

        /// `YYYY-MM-DDTHH:MM:SS` by counting days forward month by month: slow and plain,
        /// unlike the closed-form conversion under test.
        fn counted_rfc3339(seconds: u64) -> String {
            let (mut days, rest) = (seconds / 86_400, seconds % 86_400);
            let mut year = 1970;
            loop {
                let length = if is_leap(year) { 366 } else { 365 };
                if days < length {
                    break;
                }
                days -= length;
                year += 1;
            }
            let mut month = 1;
            loop {
                let length = match month {
                    2 if is_leap(year) => 29,
                    2 => 28,
                    4 | 6 | 9 | 11 => 30,
                    _ => 31,
                };
                if days < length {
                    break;
                }
                days -= length;
                month += 1;
            }
            format!(
                "{year:04}-{month:02}-{:02}T{:02}:{:02}:{:02}",
                days + 1,
                rest / 3600,
                rest % 3600 / 60,
                rest % 60
            )
        }

        fn is_leap(year: u64) -> bool {
            year.is_multiple_of(4) && (!year.is_multiple_of(100) || year.is_multiple_of(400))
        }
    }
}
