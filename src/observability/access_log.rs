//! One JSON line per request, written through a buffer that a background task flushes
//! every 200 ms (and at shutdown), so logging costs no syscall per request.

use crate::config::AccessLogSpec;
use async_trait::async_trait;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use std::cell::{Cell, RefCell};
use std::io::{BufWriter, Write};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const FLUSH_EVERY: Duration = Duration::from_millis(200);
const BUFFER_BYTES: usize = 64 << 10;

/// What one access-log line says.
#[derive(Debug)]
pub struct Entry<'a> {
    pub time: SystemTime,
    pub request_id: &'a str,
    pub client_ip: Option<IpAddr>,
    pub method: &'a str,
    pub host: &'a str,
    pub path: &'a str,
    /// `HTTP/1.1`, `HTTP/2`...
    pub protocol: &'static str,
    /// The TLS version (`TLSv1.3`), `None` over plain TCP.
    pub tls: Option<&'a str>,
    pub status: u16,
    /// Response body bytes sent to the client (after a 101: the tunnel's bytes to the client).
    pub bytes: usize,
    /// Request head and body bytes received (after a 101: the tunnel's bytes from the client).
    pub request_bytes: u64,
    pub duration: Duration,
    pub route: Option<&'a str>,
    pub upstream: Option<&'a str>,
    pub backend: Option<&'a str>,
    pub upstream_status: Option<u16>,
    pub upstream_duration: Option<Duration>,
    pub consumer: Option<&'a str>,
    /// How the cache answered (`X-Cache`), on caching routes; `REFRESH` for a background
    /// revalidation.
    pub cache: Option<&'a str>,
}

type Sink = Mutex<BufWriter<Box<dyn Write + Send>>>;

/// The access-log destination (or nothing, when `format: off`).
pub struct AccessLog {
    sink: Option<Sink>,
    /// The file lines go to, reopened on SIGUSR1 (None: stdout or off).
    path: Option<std::path::PathBuf>,
}

thread_local! {
    static LINE: RefCell<Vec<u8>> = RefCell::new(Vec::with_capacity(512));
}

impl AccessLog {
    /// Opens the destination named by `spec` (files are appended to).
    pub fn open(spec: &AccessLogSpec) -> std::io::Result<Self> {
        let (writer, path): (Box<dyn Write + Send>, _) = match spec {
            AccessLogSpec::Off => {
                return Ok(AccessLog {
                    sink: None,
                    path: None,
                })
            }
            AccessLogSpec::Stdout => (Box::new(std::io::stdout()), None),
            AccessLogSpec::File(path) => (Box::new(open_append(path)?), Some(path.clone())),
        };
        Ok(AccessLog {
            sink: Some(Mutex::new(BufWriter::with_capacity(BUFFER_BYTES, writer))),
            path,
        })
    }

    /// Flushes, then reopens the file by name (logrotate moved the old one away).
    pub fn reopen(&self) -> std::io::Result<()> {
        let (Some(sink), Some(path)) = (&self.sink, &self.path) else {
            return Ok(());
        };
        let file = open_append(path)?;
        if let Ok(mut writer) = sink.lock() {
            writer.flush()?;
            *writer = BufWriter::with_capacity(BUFFER_BYTES, Box::new(file));
        }
        Ok(())
    }

    /// Whether lines are written at all.
    pub fn enabled(&self) -> bool {
        self.sink.is_some()
    }

    /// Appends one line for `entry`.
    pub fn write(&self, entry: &Entry<'_>) {
        let Some(sink) = &self.sink else { return };
        LINE.with(|line| {
            let mut line = line.borrow_mut();
            line.clear();
            format_entry(&mut line, entry);
            if let Ok(mut writer) = sink.lock() {
                // A full disk must not take requests down; the error shows on the next flush.
                let _ = writer.write_all(&line);
            }
        });
    }

    /// Writes out buffered lines.
    pub fn flush(&self) {
        if let Some(sink) = &self.sink {
            if let Ok(mut writer) = sink.lock() {
                if let Err(error) = writer.flush() {
                    log::error!("cannot write the access log: {error}");
                }
            }
        }
    }
}

fn open_append(path: &std::path::Path) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
}

/// Background service that periodically runs its flush function (the current log's `flush`).
pub struct Flusher(pub Box<dyn Fn() + Send + Sync>);

#[async_trait]
impl BackgroundService for Flusher {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut ticker = tokio::time::interval(FLUSH_EVERY);
        loop {
            tokio::select! {
                _ = ticker.tick() => (self.0)(),
                _ = shutdown.changed() => break,
            }
        }
        (self.0)();
    }
}

// Hand-written rather than `write!`: `core::fmt` cost ~7k instructions per line. Bytes rather
// than a `String`: every piece is ASCII or already UTF-8, and pushing a byte skips char encoding.
fn format_entry(out: &mut Vec<u8>, e: &Entry<'_>) {
    let texts = [e.request_id, e.method, e.host, e.path];
    let optional = [e.route, e.upstream, e.backend, e.consumer, e.cache];
    // One reservation for the whole line: the fixed part is under 320 bytes.
    out.reserve(
        320 + texts.iter().map(|t| t.len()).sum::<usize>()
            + optional.iter().flatten().map(|t| t.len()).sum::<usize>(),
    );
    out.extend_from_slice(b"{\"time\":\"");
    write_rfc3339(out, e.time);
    out.extend_from_slice(b"\",\"request_id\":");
    push_json_str(out, e.request_id);
    out.extend_from_slice(b",\"client_ip\":");
    match e.client_ip {
        Some(ip) => {
            out.push(b'"');
            push_ip(out, ip);
            out.push(b'"');
        }
        None => out.extend_from_slice(b"null"),
    }
    let request: [(&[u8], &str); 3] = [
        (b",\"method\":", e.method),
        (b",\"host\":", e.host),
        (b",\"path\":", e.path),
    ];
    for (key, text) in request {
        out.extend_from_slice(key);
        push_json_str(out, text);
    }
    out.extend_from_slice(b",\"protocol\":\"");
    out.extend_from_slice(e.protocol.as_bytes());
    out.extend_from_slice(b"\",\"tls\":");
    match e.tls {
        Some(version) => push_json_str(out, version),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"status\":");
    push_number(out, e.status);
    out.extend_from_slice(b",\"bytes\":");
    push_number(out, e.bytes);
    out.extend_from_slice(b",\"request_bytes\":");
    push_number(out, e.request_bytes);
    out.extend_from_slice(b",\"duration_ms\":");
    push_millis(out, e.duration);
    let keys: [&[u8]; 5] = [
        b",\"route\":",
        b",\"upstream\":",
        b",\"backend\":",
        b",\"consumer\":",
        b",\"cache\":",
    ];
    for (key, value) in keys.into_iter().zip(optional) {
        out.extend_from_slice(key);
        match value {
            Some(text) => push_json_str(out, text),
            None => out.extend_from_slice(b"null"),
        }
    }
    out.extend_from_slice(b",\"upstream_status\":");
    match e.upstream_status {
        Some(status) => push_number(out, status),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"upstream_duration_ms\":");
    match e.upstream_duration {
        Some(duration) => push_millis(out, duration),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b"}\n");
}

fn push_number(out: &mut Vec<u8>, n: impl itoa::Integer) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

/// `duration` in milliseconds with three decimals (rounded to the microsecond).
fn push_millis(out: &mut Vec<u8>, duration: Duration) {
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
fn push_three_digits(out: &mut Vec<u8>, n: u32) {
    let digit = |d: u32| b'0' + (d % 10) as u8;
    out.extend_from_slice(&[digit(n / 100), digit(n / 10), digit(n)]);
}

/// `n` with leading zeros to `width` digits.
fn push_padded(out: &mut Vec<u8>, n: u32, width: usize) {
    let mut buffer = itoa::Buffer::new();
    let digits = buffer.format(n);
    for _ in digits.len()..width {
        out.push(b'0');
    }
    out.extend_from_slice(digits.as_bytes());
}

fn push_ip(out: &mut Vec<u8>, ip: IpAddr) {
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
            out.push(HEX[usize::from(byte >> 4)]);
            out.push(HEX[usize::from(byte & 0xf)]);
        } else {
            out.extend_from_slice(escaped);
        }
        clean_from = at + 1;
    }
    out.extend_from_slice(&bytes[clean_from..]);
    out.push(b'"');
}

const HEX: &[u8; 16] = b"0123456789abcdef";

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
fn write_rfc3339(out: &mut Vec<u8>, time: SystemTime) {
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
    fn lines_are_valid_json_with_escaped_strings() {
        let mut bytes = Vec::new();
        format_entry(
            &mut bytes,
            &Entry {
                time: UNIX_EPOCH + Duration::from_millis(1_700_000_000_123),
                request_id: "abc",
                client_ip: Some("10.0.0.1".parse().unwrap()),
                method: "GET",
                host: "h\"x",
                path: "/a\\b\n\u{1}é",
                protocol: "HTTP/2",
                tls: Some("TLSv1.3"),
                status: 200,
                bytes: 12,
                request_bytes: 345,
                duration: Duration::from_micros(1500),
                route: Some("r"),
                upstream: None,
                backend: None,
                upstream_status: Some(200),
                upstream_duration: Some(Duration::from_nanos(2_000_499)),
                consumer: Some("alice"),
                cache: None,
            },
        );
        let line = String::from_utf8(bytes).unwrap();
        assert!(line.ends_with('\n'));
        let value: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(value["time"], "2023-11-14T22:13:20.123Z");
        assert_eq!(value["host"], "h\"x");
        assert_eq!(value["path"], "/a\\b\n\u{1}é");
        assert!(line.contains(r#""path":"/a\\b\n\u0001é""#), "{line}");
        assert_eq!(value["client_ip"], "10.0.0.1");
        assert_eq!(value["status"], 200);
        assert_eq!(value["bytes"], 12);
        assert_eq!(value["request_bytes"], 345);
        assert!(line.contains(r#""duration_ms":1.500,"#), "{line}");
        assert!(line.contains(r#""upstream_duration_ms":2.000}"#), "{line}");
        assert_eq!(value["upstream"], serde_json::Value::Null);
        assert_eq!(value["upstream_status"], 200);
        assert_eq!(value["protocol"], "HTTP/2");
        assert_eq!(value["tls"], "TLSv1.3");
    }

    #[test]
    fn ipv6_clients_and_long_durations() {
        let mut bytes = Vec::new();
        format_entry(
            &mut bytes,
            &Entry {
                time: UNIX_EPOCH,
                request_id: "",
                client_ip: Some("2001:db8::1".parse().unwrap()),
                method: "GET",
                host: "",
                path: "/",
                protocol: "HTTP/1.1",
                tls: None,
                status: 504,
                bytes: 0,
                request_bytes: 0,
                duration: Duration::from_millis(61_234),
                route: None,
                upstream: None,
                backend: None,
                upstream_status: None,
                upstream_duration: None,
                consumer: None,
                cache: None,
            },
        );
        let line = String::from_utf8(bytes).unwrap();
        let value: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(value["time"], "1970-01-01T00:00:00.000Z");
        assert_eq!(value["client_ip"], "2001:db8::1");
        assert!(line.contains(r#""duration_ms":61234.000,"#), "{line}");
        assert_eq!(value["upstream_duration_ms"], serde_json::Value::Null);
    }
}
