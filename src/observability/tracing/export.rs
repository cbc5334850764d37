//! The exporter: finished traces wait in a bounded queue (a full queue drops and counts, never
//! blocks a worker), and a thread of its own POSTs them in batches to the collector over a
//! keep-alive HTTP/1.1 connection. The thread ends when the configuration it belongs to is
//! replaced and its last requests are done (the queue's senders are gone).

use super::TraceRecord;
use crate::config::TracingSpec;
use crate::observability::metrics;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::time::{Duration, Instant};

/// Traces in one export request at most.
const MAX_BATCH: usize = 512;
/// How long the first trace of a batch waits for company.
const BATCH_WINDOW: Duration = Duration::from_millis(200);
/// Connect, read and write bound of one export.
const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// A failing collector is reported at most this often.
const REPORT_EVERY: Duration = Duration::from_secs(60);

/// The sending side, held by the [`super::Tracer`].
pub struct Exporter {
    queue: SyncSender<Box<TraceRecord>>,
}

impl Exporter {
    /// Starts the thread exporting to `spec`'s collector.
    pub fn start(spec: &TracingSpec) -> std::io::Result<Self> {
        let (queue, receiver) = sync_channel(spec.max_queue);
        let mut worker = Worker {
            spec: spec.clone(),
            connection: None,
            last_report: None,
        };
        std::thread::Builder::new()
            .name("trace-export".into())
            .spawn(move || worker.run(&receiver))?;
        Ok(Exporter { queue })
    }

    /// Queues a finished trace; a full queue drops it (counted).
    pub fn submit(&self, trace: Box<TraceRecord>) {
        let spans = 1 + trace.attempts.len() as u64;
        match self.queue.try_send(trace) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                metrics::spans_dropped(metrics::SpanDrop::QueueFull, spans)
            }
            Err(TrySendError::Disconnected(_)) => {
                metrics::spans_dropped(metrics::SpanDrop::ExportFailed, spans)
            }
        }
    }
}

struct Worker {
    spec: TracingSpec,
    connection: Option<BufReader<TcpStream>>,
    last_report: Option<Instant>,
}

impl Worker {
    fn run(&mut self, receiver: &Receiver<Box<TraceRecord>>) {
        while let Ok(first) = receiver.recv() {
            let mut batch = vec![first];
            let deadline = Instant::now() + BATCH_WINDOW;
            while batch.len() < MAX_BATCH {
                let left = deadline.saturating_duration_since(Instant::now());
                match receiver.recv_timeout(left) {
                    Ok(trace) => batch.push(trace),
                    Err(RecvTimeoutError::Timeout) => break,
                    Err(RecvTimeoutError::Disconnected) => break,
                }
            }
            let spans: u64 = batch.iter().map(|t| 1 + t.attempts.len() as u64).sum();
            let body =
                super::otlp::export_request(&self.spec.service_name, &self.spec.resource, &batch);
            match self.post(&body) {
                Ok(()) => metrics::spans_exported(spans),
                Err(reason) => {
                    metrics::spans_dropped(metrics::SpanDrop::ExportFailed, spans);
                    self.report(&reason);
                }
            }
        }
    }

    /// One POST; a kept connection that fails is replaced once.
    fn post(&mut self, body: &[u8]) -> Result<(), String> {
        if self.connection.is_some() {
            match self.post_on_connection(body) {
                Ok(()) => return Ok(()),
                Err(_) => self.connection = None,
            }
        }
        self.connection = Some(self.connect()?);
        let result = self.post_on_connection(body);
        if result.is_err() {
            self.connection = None;
        }
        result
    }

    fn connect(&self) -> Result<BufReader<TcpStream>, String> {
        let address = self
            .spec
            .collector
            .to_socket_addrs()
            .map_err(|e| format!("cannot resolve {}: {e}", self.spec.collector))?
            .next()
            .ok_or_else(|| format!("{} resolves to no address", self.spec.collector))?;
        let stream = TcpStream::connect_timeout(&address, IO_TIMEOUT)
            .map_err(|e| format!("cannot connect to {}: {e}", self.spec.collector))?;
        let _ = stream.set_read_timeout(Some(IO_TIMEOUT));
        let _ = stream.set_write_timeout(Some(IO_TIMEOUT));
        let _ = stream.set_nodelay(true);
        Ok(BufReader::new(stream))
    }

    fn post_on_connection(&mut self, body: &[u8]) -> Result<(), String> {
        let Some(connection) = self.connection.as_mut() else {
            return Err("no connection".into());
        };
        let head = format!(
            "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/x-protobuf\r\nContent-Length: {}\r\nUser-Agent: edgegate/{}\r\n\r\n",
            self.spec.collector_path,
            self.spec.collector,
            body.len(),
            env!("CARGO_PKG_VERSION"),
        );
        let stream = connection.get_mut();
        stream
            .write_all(head.as_bytes())
            .and_then(|()| stream.write_all(body))
            .map_err(|e| format!("sending to {}: {e}", self.spec.collector))?;
        let (status, close) = read_response(connection)
            .map_err(|e| format!("reading {}'s answer: {e}", self.spec.collector))?;
        if close {
            self.connection = None;
        }
        if (200..300).contains(&status) {
            Ok(())
        } else {
            Err(format!("{} answered {status}", self.spec.collector))
        }
    }

    fn report(&mut self, reason: &str) {
        if self
            .last_report
            .is_some_and(|at| at.elapsed() < REPORT_EVERY)
        {
            return;
        }
        self.last_report = Some(Instant::now());
        log::warn!("tracing: spans could not be exported ({reason}); they are dropped and counted in edgegate_tracing_spans_dropped_total");
    }
}

/// Reads one response; returns its status and whether the collector closes the connection.
fn read_response(reader: &mut BufReader<TcpStream>) -> std::io::Result<(u16, bool)> {
    let invalid =
        |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string());
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        return Err(invalid("the connection closed"));
    }
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| invalid("not an HTTP status line"))?;
    let (mut length, mut close, mut chunked) = (0usize, false, false);
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            return Err(invalid("the head ended early"));
        }
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            let value = value.trim();
            if name.eq_ignore_ascii_case("content-length") {
                length = value.parse().map_err(|_| invalid("bad Content-Length"))?;
            } else if name.eq_ignore_ascii_case("connection") {
                close = value.eq_ignore_ascii_case("close");
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                chunked = true;
            }
        }
    }
    if chunked {
        // Collectors answer with a length; a chunked answer is read to its end by closing.
        return Ok((status, true));
    }
    let mut rest = reader.take(length as u64);
    std::io::copy(&mut rest, &mut std::io::sink())?;
    Ok((status, close))
}
