//! One JSON line per request. Workers format the line and append it to a shared in-memory
//! batch; a dedicated thread writes batches out, so a slow disk or a stdout pipe nobody reads
//! never stalls a worker. The batch is bounded: when it is full, lines are dropped and counted
//! (`edgegate_access_log_dropped_total`), never waited for.

use crate::config::AccessLogSpec;
use crate::fastfmt::{push_ip, push_json_str, push_millis, push_number, write_rfc3339};
use parking_lot::{Condvar, Mutex};
use std::cell::RefCell;
use std::io::Write;
use std::net::IpAddr;
use std::sync::{Arc, Once};
use std::time::{Duration, Instant, SystemTime};

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
    /// The split arm (its upstream) the request went to, on split routes.
    pub arm: Option<&'a str>,
    /// How the arm was chosen: `forced`, `sticky` or `weighted`.
    pub arm_by: Option<&'a str>,
    pub backend: Option<&'a str>,
    pub upstream_status: Option<u16>,
    pub upstream_duration: Option<Duration>,
    pub consumer: Option<&'a str>,
    /// How the cache answered (`X-Cache`), on caching routes; `REFRESH` for a background
    /// revalidation.
    pub cache: Option<&'a str>,
    /// The rate-limit policy that refused the request.
    pub limited_by: Option<&'a str>,
    /// The first shadow policy over its limit (the request went through).
    pub shadow_limited_by: Option<&'a str>,
    /// How each part of an aggregation route ended (empty elsewhere, and then not written).
    pub parts: &'a [crate::aggregate::PartRecord],
    /// The trace and the server span of the request (tracing on).
    pub trace: Option<(&'a [u8; 16], &'a [u8; 8])>,
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

/// Two optional string fields; when both are null, `both_null` (one piece of text rather than
/// four).
fn push_pair(out: &mut Vec<u8>, both_null: &[u8], fields: [(&[u8], Option<&str>); 2]) {
    if fields.iter().all(|(_, value)| value.is_none()) {
        out.extend_from_slice(both_null);
        return;
    }
    for (key, value) in fields {
        out.extend_from_slice(key);
        match value {
            Some(text) => push_json_str(out, text),
            None => out.extend_from_slice(b"null"),
        }
    }
}

// Hand-written rather than `write!`: `core::fmt` cost ~7k instructions per line. Bytes rather
// than a `String`: every piece is ASCII or already UTF-8, and pushing a byte skips char encoding.
fn format_entry(out: &mut Vec<u8>, e: &Entry<'_>) {
    let texts = [e.request_id, e.method, e.host, e.path];
    let optional = [e.route, e.upstream, e.backend, e.consumer, e.cache];
    // One reservation for the whole line: the fixed part is under 420 bytes.
    out.reserve(
        420 + texts.iter().map(|t| t.len()).sum::<usize>()
            + optional.iter().flatten().map(|t| t.len()).sum::<usize>()
            + e.arm.map_or(0, str::len)
            + e.limited_by.map_or(0, str::len)
            + e.shadow_limited_by.map_or(0, str::len),
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
    // Most routes split nothing.
    push_pair(
        out,
        b",\"arm\":null,\"arm_by\":null",
        [(b",\"arm\":", e.arm), (b",\"arm_by\":", e.arm_by)],
    );
    // Most requests are limited by nothing.
    push_pair(
        out,
        b",\"limited_by\":null,\"shadow_limited_by\":null",
        [
            (b",\"limited_by\":", e.limited_by),
            (b",\"shadow_limited_by\":", e.shadow_limited_by),
        ],
    );
    out.extend_from_slice(b",\"upstream_status\":");
    push_status(out, e.upstream_status);
    out.extend_from_slice(b",\"upstream_duration_ms\":");
    match e.upstream_duration {
        Some(duration) => push_millis(out, duration),
        None => out.extend_from_slice(b"null"),
    }
    match e.trace {
        // Tracing off: one piece of text.
        None => out.extend_from_slice(b",\"trace_id\":null,\"span_id\":null"),
        Some((trace_id, span_id)) => {
            out.extend_from_slice(b",\"trace_id\":\"");
            crate::fastfmt::push_hex_bytes(out, trace_id);
            out.extend_from_slice(b"\",\"span_id\":\"");
            crate::fastfmt::push_hex_bytes(out, span_id);
            out.push(b'"');
        }
    }
    if !e.parts.is_empty() {
        out.extend_from_slice(b",\"parts\":[");
        for (index, part) in e.parts.iter().enumerate() {
            if index > 0 {
                out.push(b',');
            }
            out.extend_from_slice(b"{\"part\":");
            push_json_str(out, &part.name);
            out.extend_from_slice(b",\"outcome\":\"");
            out.extend_from_slice(
                crate::aggregate::Outcome::LABELS[part.outcome.index()].as_bytes(),
            );
            out.extend_from_slice(b"\",\"status\":");
            push_status(out, part.status);
            out.extend_from_slice(b",\"duration_ms\":");
            push_millis(out, part.duration);
            out.push(b'}');
        }
        out.push(b']');
    }
    out.extend_from_slice(b"}\n");
}

/// A status, or `null` when there is none.
fn push_status(out: &mut Vec<u8>, status: Option<u16>) {
    match status {
        Some(status) => push_number(out, status),
        None => out.extend_from_slice(b"null"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

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
                arm: None,
                arm_by: None,
                backend: None,
                upstream_status: Some(200),
                upstream_duration: Some(Duration::from_nanos(2_000_499)),
                consumer: Some("alice"),
                cache: None,
                limited_by: Some("per_user"),
                shadow_limited_by: None,
                parts: &[],
                trace: None,
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
        assert!(line.contains(r#""upstream_duration_ms":2.000,"#), "{line}");
        assert_eq!(value["trace_id"], serde_json::Value::Null);
        assert_eq!(value["upstream"], serde_json::Value::Null);
        assert_eq!(value["upstream_status"], 200);
        assert_eq!(value["protocol"], "HTTP/2");
        assert_eq!(value["tls"], "TLSv1.3");
        assert_eq!(value["limited_by"], "per_user");
        assert_eq!(value["shadow_limited_by"], serde_json::Value::Null);
    }

    /// A line with every optional field empty.
    fn minimal() -> Entry<'static> {
        Entry {
            time: UNIX_EPOCH,
            request_id: "",
            client_ip: None,
            method: "GET",
            host: "",
            path: "/",
            protocol: "HTTP/1.1",
            tls: None,
            status: 200,
            bytes: 0,
            request_bytes: 0,
            duration: Duration::ZERO,
            route: None,
            upstream: None,
            arm: None,
            arm_by: None,
            backend: None,
            upstream_status: None,
            upstream_duration: None,
            consumer: None,
            cache: None,
            limited_by: None,
            shadow_limited_by: None,
            parts: &[],
            trace: None,
        }
    }

    #[test]
    fn aggregation_parts_are_listed_with_their_outcomes() {
        use crate::aggregate::{Outcome, PartRecord};
        let parts = [
            PartRecord {
                name: "profile".into(),
                outcome: Outcome::Ok,
                status: Some(200),
                duration: Duration::from_micros(2500),
            },
            PartRecord {
                name: "orders".into(),
                outcome: Outcome::Timeout,
                status: None,
                duration: Duration::from_millis(300),
            },
        ];
        let mut bytes = Vec::new();
        format_entry(
            &mut bytes,
            &Entry {
                route: Some("dashboard"),
                parts: &parts,
                trace: Some((&[0xab; 16], &[0x01; 8])),
                ..minimal()
            },
        );
        let value: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(value["trace_id"], "ab".repeat(16));
        assert_eq!(value["span_id"], "01".repeat(8));
        assert_eq!(
            value["parts"],
            serde_json::json!([
                {"part": "profile", "outcome": "ok", "status": 200, "duration_ms": 2.5},
                {"part": "orders", "outcome": "timeout", "status": null, "duration_ms": 300.0}
            ])
        );
    }

    #[test]
    fn ipv6_clients_and_long_durations() {
        let mut bytes = Vec::new();
        format_entry(
            &mut bytes,
            &Entry {
                client_ip: Some("2001:db8::1".parse().unwrap()),
                status: 504,
                duration: Duration::from_millis(61_234),
                ..minimal()
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
                arm in prop::option::of(any::<String>()),
                arm_by in prop::option::of(any::<String>()),
                limited in prop::array::uniform2(prop::option::of(any::<String>())),
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
                    arm: arm.as_deref(),
                    arm_by: arm_by.as_deref(),
                    backend: backend.as_deref(),
                    upstream_status: Some(status),
                    upstream_duration: None,
                    consumer: consumer.as_deref(),
                    cache: cache.as_deref(),
                    limited_by: limited[0].as_deref(),
                    shadow_limited_by: limited[1].as_deref(),
                    parts: &[],
                    trace: None,
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
                prop_assert_eq!(value["arm"].as_str(), arm.as_deref());
                prop_assert_eq!(value["arm_by"].as_str(), arm_by.as_deref());
                prop_assert_eq!(value["limited_by"].as_str(), limited[0].as_deref());
                prop_assert_eq!(value["shadow_limited_by"].as_str(), limited[1].as_deref());
            }
        }
    }
}
