//! One JSON line per request, written through a buffer that a background task flushes
//! every 200 ms (and at shutdown), so logging costs no syscall per request.

use crate::config::AccessLogSpec;
use async_trait::async_trait;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use std::cell::RefCell;
use std::fmt::Write as _;
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
    pub status: u16,
    pub bytes: usize,
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
    static LINE: RefCell<String> = RefCell::new(String::with_capacity(512));
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
                let _ = writer.write_all(line.as_bytes());
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

// Hand-written rather than `write!`: `core::fmt` cost ~7k instructions per line.
fn format_entry(out: &mut String, e: &Entry<'_>) {
    out.push_str("{\"time\":\"");
    write_rfc3339(out, e.time);
    out.push_str("\",\"request_id\":");
    push_json_str(out, e.request_id);
    out.push_str(",\"client_ip\":");
    match e.client_ip {
        Some(ip) => {
            out.push('"');
            push_ip(out, ip);
            out.push('"');
        }
        None => out.push_str("null"),
    }
    out.push_str(",\"method\":");
    push_json_str(out, e.method);
    out.push_str(",\"host\":");
    push_json_str(out, e.host);
    out.push_str(",\"path\":");
    push_json_str(out, e.path);
    out.push_str(",\"status\":");
    push_number(out, e.status);
    out.push_str(",\"bytes\":");
    push_number(out, e.bytes);
    out.push_str(",\"duration_ms\":");
    push_millis(out, e.duration);
    for (key, value) in [
        (",\"route\":", e.route),
        (",\"upstream\":", e.upstream),
        (",\"backend\":", e.backend),
        (",\"consumer\":", e.consumer),
        (",\"cache\":", e.cache),
    ] {
        out.push_str(key);
        match value {
            Some(text) => push_json_str(out, text),
            None => out.push_str("null"),
        }
    }
    out.push_str(",\"upstream_status\":");
    match e.upstream_status {
        Some(status) => push_number(out, status),
        None => out.push_str("null"),
    }
    out.push_str(",\"upstream_duration_ms\":");
    match e.upstream_duration {
        Some(duration) => push_millis(out, duration),
        None => out.push_str("null"),
    }
    out.push_str("}\n");
}

fn push_number(out: &mut String, n: impl itoa::Integer) {
    out.push_str(itoa::Buffer::new().format(n));
}

/// `duration` in milliseconds with three decimals (rounded to the microsecond).
fn push_millis(out: &mut String, duration: Duration) {
    let micros = (duration.as_nanos() + 500) / 1000;
    push_number(out, micros / 1000);
    out.push('.');
    push_padded(out, (micros % 1000) as u32, 3);
}

/// `n` with leading zeros to `width` digits.
fn push_padded(out: &mut String, n: u32, width: usize) {
    let mut buffer = itoa::Buffer::new();
    let digits = buffer.format(n);
    for _ in digits.len()..width {
        out.push('0');
    }
    out.push_str(digits);
}

fn push_ip(out: &mut String, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push('.');
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
pub fn push_json_str(out: &mut String, text: &str) {
    out.push('"');
    let mut clean_from = 0;
    // Every byte that needs escaping is ASCII, so the runs between them are whole characters.
    for (at, byte) in text.bytes().enumerate() {
        let escaped = match byte {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0..=0x1f => "",
            _ => continue,
        };
        out.push_str(&text[clean_from..at]);
        if escaped.is_empty() {
            out.push_str("\\u00");
            out.push(char::from(HEX[usize::from(byte >> 4)]));
            out.push(char::from(HEX[usize::from(byte & 0xf)]));
        } else {
            out.push_str(escaped);
        }
        clean_from = at + 1;
    }
    out.push_str(&text[clean_from..]);
    out.push('"');
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// `2026-11-23T16:05:11.123Z`
fn write_rfc3339(out: &mut String, time: SystemTime) {
    let since_epoch = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let seconds = since_epoch.as_secs();
    let (days, rest) = (seconds / 86_400, seconds % 86_400);
    let (year, month, day) = civil_from_days(days as i64);
    push_padded(out, year.clamp(0, 9999) as u32, 4);
    for (separator, value) in [
        ('-', month),
        ('-', day),
        ('T', (rest / 3600) as u32),
        (':', (rest % 3600 / 60) as u32),
        (':', (rest % 60) as u32),
    ] {
        out.push(separator);
        push_padded(out, value, 2);
    }
    out.push('.');
    push_padded(out, since_epoch.subsec_millis(), 3);
    out.push('Z');
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
    fn dates_are_civil() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_723), (2024, 1, 1));
        assert_eq!(civil_from_days(20_415), (2025, 11, 23));
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
    }

    #[test]
    fn lines_are_valid_json_with_escaped_strings() {
        let mut line = String::new();
        format_entry(
            &mut line,
            &Entry {
                time: UNIX_EPOCH + Duration::from_millis(1_700_000_000_123),
                request_id: "abc",
                client_ip: Some("10.0.0.1".parse().unwrap()),
                method: "GET",
                host: "h\"x",
                path: "/a\\b\n\u{1}é",
                status: 200,
                bytes: 12,
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
        assert!(line.ends_with('\n'));
        let value: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(value["time"], "2023-11-14T22:13:20.123Z");
        assert_eq!(value["host"], "h\"x");
        assert_eq!(value["path"], "/a\\b\n\u{1}é");
        assert!(line.contains(r#""path":"/a\\b\n\u0001é""#), "{line}");
        assert_eq!(value["client_ip"], "10.0.0.1");
        assert_eq!(value["status"], 200);
        assert_eq!(value["bytes"], 12);
        assert!(line.contains(r#""duration_ms":1.500,"#), "{line}");
        assert!(line.contains(r#""upstream_duration_ms":2.000}"#), "{line}");
        assert_eq!(value["upstream"], serde_json::Value::Null);
        assert_eq!(value["upstream_status"], 200);
    }

    #[test]
    fn ipv6_clients_and_long_durations() {
        let mut line = String::new();
        format_entry(
            &mut line,
            &Entry {
                time: UNIX_EPOCH,
                request_id: "",
                client_ip: Some("2001:db8::1".parse().unwrap()),
                method: "GET",
                host: "",
                path: "/",
                status: 504,
                bytes: 0,
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
        let value: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(value["time"], "1970-01-01T00:00:00.000Z");
        assert_eq!(value["client_ip"], "2001:db8::1");
        assert!(line.contains(r#""duration_ms":61234.000,"#), "{line}");
        assert_eq!(value["upstream_duration_ms"], serde_json::Value::Null);
    }
}
