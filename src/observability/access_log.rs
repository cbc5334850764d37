//! One JSON line per request. Workers format the line and append it to a shared in-memory
//! batch; a dedicated thread writes batches out, so a slow disk or a stdout pipe nobody reads
//! never stalls a worker. The batch is bounded: when it is full, lines are dropped and counted
//! (`edgegate_access_log_dropped_total`), never waited for.

use crate::config::AccessLogSpec;
use parking_lot::{Condvar, Mutex};
use std::cell::{Cell, RefCell};
use std::io::Write;
use std::net::IpAddr;
use std::sync::{Arc, Once};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How long a line may wait in the batch before it is written.
const FLUSH_EVERY: Duration = Duration::from_millis(200);
/// A batch this large wakes the writer at once.
const WAKE_AT: usize = 64 << 10;
/// Lines waiting to be written are capped at this many bytes (about 10,000 lines); beyond it they
/// are dropped. Together with the batch being written, the log holds at most twice this.
pub const MAX_PENDING_BYTES: usize = 4 << 20;
/// How long a shutdown waits for the writer to write out what is pending.
const DRAIN_LIMIT: Duration = Duration::from_secs(2);

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

/// The access-log destination (or nothing, when `format: off`).
pub struct AccessLog {
    shared: Option<Arc<Shared>>,
    /// The file lines go to, reopened on SIGUSR1 (None: stdout or off).
    path: Option<std::path::PathBuf>,
}

/// What workers and the writer thread share.
struct Shared {
    /// The writer thread starts with the first line, not at open: daemon mode forks after the
    /// configuration is built, and a thread started before the fork would not exist after it.
    start: Once,
    destination: Mutex<Option<Box<dyn Write + Send>>>,
    pending: Mutex<Pending>,
    /// Wakes the writer: a full batch, a reopen, a flush request or the end.
    wake: Condvar,
    /// Wakes whoever waits for a flush to be done.
    written: Condvar,
}

#[derive(Default)]
struct Pending {
    lines: Vec<u8>,
    /// A freshly opened file to switch to once the lines before the switch are written.
    reopened: Option<std::fs::File>,
    /// Flushes asked for, and the last one the writer has done.
    flushes_wanted: u64,
    flushes_done: u64,
    /// The log is gone: write what is left, then stop.
    closing: bool,
}

thread_local! {
    static LINE: RefCell<Vec<u8>> = RefCell::new(Vec::with_capacity(512));
}

impl AccessLog {
    /// Opens the destination named by `spec` (files are appended to) and starts its writer.
    pub fn open(spec: &AccessLogSpec) -> std::io::Result<Self> {
        let (writer, path): (Box<dyn Write + Send>, _) = match spec {
            AccessLogSpec::Off => {
                return Ok(AccessLog {
                    shared: None,
                    path: None,
                })
            }
            AccessLogSpec::Stdout => (Box::new(std::io::stdout()), None),
            AccessLogSpec::File(path) => (Box::new(open_append(path)?), Some(path.clone())),
        };
        let shared = Arc::new(Shared {
            start: Once::new(),
            destination: Mutex::new(Some(writer)),
            pending: Mutex::new(Pending {
                lines: Vec::with_capacity(WAKE_AT * 2),
                ..Pending::default()
            }),
            wake: Condvar::new(),
            written: Condvar::new(),
        });
        Ok(AccessLog {
            shared: Some(shared),
            path,
        })
    }

    /// Reopens the file by name (logrotate moved the old one away): lines logged before this
    /// call still go to the old file.
    pub fn reopen(&self) -> std::io::Result<()> {
        let (Some(shared), Some(path)) = (&self.shared, &self.path) else {
            return Ok(());
        };
        let file = open_append(path)?;
        start_writer(shared);
        shared.pending.lock().reopened = Some(file);
        shared.wake.notify_one();
        Ok(())
    }

    /// Whether lines are written at all.
    pub fn enabled(&self) -> bool {
        self.shared.is_some()
    }

    /// Queues one line for `entry`; drops it (and counts it) when the queue is full.
    pub fn write(&self, entry: &Entry<'_>) {
        let Some(shared) = &self.shared else { return };
        start_writer(shared);
        LINE.with(|line| {
            let mut line = line.borrow_mut();
            line.clear();
            format_entry(&mut line, entry);
            let mut pending = shared.pending.lock();
            let before = pending.lines.len();
            if before + line.len() > MAX_PENDING_BYTES {
                drop(pending);
                crate::observability::metrics::access_log_dropped(1);
                return;
            }
            pending.lines.extend_from_slice(&line);
            let wake = before < WAKE_AT && pending.lines.len() >= WAKE_AT;
            drop(pending);
            if wake {
                shared.wake.notify_one();
            }
        });
    }

    /// Has the writer write out every line queued so far, waiting up to `limit` for it.
    /// Returns whether it finished in time.
    pub fn flush(&self, limit: Duration) -> bool {
        let Some(shared) = &self.shared else {
            return true;
        };
        start_writer(shared);
        let deadline = Instant::now() + limit;
        let mut pending = shared.pending.lock();
        pending.flushes_wanted += 1;
        let wanted = pending.flushes_wanted;
        shared.wake.notify_one();
        while pending.flushes_done < wanted {
            if shared
                .written
                .wait_until(&mut pending, deadline)
                .timed_out()
            {
                return pending.flushes_done >= wanted;
            }
        }
        true
    }
}

impl Drop for AccessLog {
    fn drop(&mut self) {
        // Not joined: a writer stuck on a full pipe must not hold up whoever dropped the log.
        if let Some(shared) = &self.shared {
            shared.pending.lock().closing = true;
            shared.wake.notify_one();
        }
    }
}

fn start_writer(shared: &Arc<Shared>) {
    shared.start.call_once(|| {
        let Some(destination) = shared.destination.lock().take() else {
            return;
        };
        let for_writer = Arc::clone(shared);
        let spawned = std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || write_batches(&for_writer, destination));
        if let Err(error) = spawned {
            log::error!("cannot start the access-log writer ({error}): lines are dropped");
        }
    });
}

/// The writer thread: takes the pending batch (at least every `FLUSH_EVERY`) and writes it.
fn write_batches(shared: &Shared, mut writer: Box<dyn Write + Send>) {
    let mut batch = Vec::with_capacity(WAKE_AT * 2);
    let mut failing = false;
    loop {
        let (reopened, flush, closing) = {
            let mut pending = shared.pending.lock();
            let nothing_urgent = |p: &Pending| {
                p.lines.len() < WAKE_AT
                    && p.reopened.is_none()
                    && p.flushes_wanted == p.flushes_done
                    && !p.closing
            };
            if nothing_urgent(&pending) {
                shared.wake.wait_for(&mut pending, FLUSH_EVERY);
            }
            std::mem::swap(&mut pending.lines, &mut batch);
            (
                pending.reopened.take(),
                pending.flushes_wanted,
                pending.closing,
            )
        };
        if !batch.is_empty() {
            match writer.write_all(&batch).and_then(|()| writer.flush()) {
                Ok(()) if failing => {
                    failing = false;
                    log::info!("the access log is written again");
                }
                Ok(()) => {}
                Err(error) => {
                    let lost = memchr::memchr_iter(b'\n', &batch).count();
                    crate::observability::metrics::access_log_dropped(lost as u64);
                    if !failing {
                        failing = true;
                        log::error!("cannot write the access log ({error}): lines are dropped");
                    }
                }
            }
            batch.clear();
            // A burst may have grown the batch; do not keep its memory for good.
            batch.shrink_to(WAKE_AT * 2);
        }
        if let Some(file) = reopened {
            writer = Box::new(file);
        }
        let done = {
            let mut pending = shared.pending.lock();
            pending.flushes_done = pending.flushes_done.max(flush);
            closing && pending.lines.is_empty()
        };
        shared.written.notify_all();
        if done {
            return;
        }
    }
}

fn open_append(path: &std::path::Path) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
}

/// Writes out what `log` holds before the process exits, waiting at most a bounded time so a
/// stuck destination cannot hold the exit.
pub fn drain(log: &AccessLog) {
    if !log.flush(DRAIN_LIMIT) {
        log::warn!("the access log could not be written out within {DRAIN_LIMIT:?}");
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

    mod fuzz {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn fuzz_access_log_lines_are_json_that_round_trips(
                texts in prop::array::uniform4(any::<String>()),
                optional in prop::array::uniform5(prop::option::of(any::<String>())),
                tls in prop::option::of(any::<String>()),
                ip in prop::option::of(any::<IpAddr>()),
                millis in any::<u64>(),
                status in any::<u16>(),
                bytes in any::<usize>(),
                request_bytes in any::<u64>(),
                duration in any::<u64>(),
            ) {
                let [request_id, method, host, path] = &texts;
                let [route, upstream, backend, consumer, cache] = &optional;
                let mut line = Vec::new();
                format_entry(&mut line, &Entry {
                    time: UNIX_EPOCH + Duration::from_millis(millis % 10_000_000_000_000),
                    request_id,
                    client_ip: ip,
                    method,
                    host,
                    path,
                    protocol: "HTTP/1.1",
                    tls: tls.as_deref(),
                    status,
                    bytes,
                    request_bytes,
                    duration: Duration::from_nanos(duration),
                    route: route.as_deref(),
                    upstream: upstream.as_deref(),
                    backend: backend.as_deref(),
                    upstream_status: Some(status),
                    upstream_duration: None,
                    consumer: consumer.as_deref(),
                    cache: cache.as_deref(),
                });
                prop_assert_eq!(line.last(), Some(&b'\n'));
                prop_assert_eq!(line.iter().filter(|&&b| b == b'\n').count(), 1, "one line");
                let value: serde_json::Value = serde_json::from_slice(&line).unwrap();
                prop_assert_eq!(&value["request_id"], request_id.as_str());
                prop_assert_eq!(&value["method"], method.as_str());
                prop_assert_eq!(&value["host"], host.as_str());
                prop_assert_eq!(&value["path"], path.as_str());
                prop_assert_eq!(value["status"].as_u64(), Some(u64::from(status)));
                prop_assert_eq!(value["bytes"].as_u64(), Some(bytes as u64));
                prop_assert_eq!(value["request_bytes"].as_u64(), Some(request_bytes));
                prop_assert_eq!(value["client_ip"].as_str().map(str::to_string), ip.map(|ip| ip.to_string()));
                prop_assert_eq!(value["tls"].as_str(), tls.as_deref());
                for (key, text) in ["route", "upstream", "backend", "consumer", "cache"].iter().zip(&optional) {
                    prop_assert_eq!(value[*key].as_str(), text.as_deref());
                }
            }
        }
    }
}
