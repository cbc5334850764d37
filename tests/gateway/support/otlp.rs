//! A test OTLP/HTTP collector: accepts `POST /v1/traces` with a protobuf body, decodes it with
//! the opentelemetry-proto crate and keeps every span with its resource's attributes.

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, KeyValue};
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

/// What the collector received.
#[derive(Default)]
struct Received {
    spans: Vec<Span>,
    resources: Vec<Vec<KeyValue>>,
    paths: Vec<String>,
}

/// A collector on a free loopback port; it lives until the test process exits.
pub struct Collector {
    pub addr: SocketAddr,
    received: Arc<Mutex<Received>>,
}

impl Collector {
    pub fn start() -> Collector {
        Self::start_with_delay(Duration::ZERO)
    }

    /// A collector that takes `delay` before answering each export.
    pub fn start_with_delay(delay: Duration) -> Collector {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let received = Arc::new(Mutex::new(Received::default()));
        let shared = Arc::clone(&received);
        thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let shared = Arc::clone(&shared);
                thread::spawn(move || {
                    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
                    let mut reader = BufReader::new(stream);
                    while let Some((path, body)) = read_post(&mut reader) {
                        let request = ExportTraceServiceRequest::decode(body.as_slice())
                            .expect("the body is an ExportTraceServiceRequest");
                        let mut received = shared.lock().unwrap();
                        received.paths.push(path);
                        for resource_spans in request.resource_spans {
                            received.resources.push(
                                resource_spans
                                    .resource
                                    .map(|r| r.attributes)
                                    .unwrap_or_default(),
                            );
                            for scope in resource_spans.scope_spans {
                                received.spans.extend(scope.spans);
                            }
                        }
                        drop(received);
                        thread::sleep(delay);
                        let answer = b"HTTP/1.1 200 OK\r\nContent-Type: application/x-protobuf\r\nContent-Length: 0\r\n\r\n";
                        if reader.get_mut().write_all(answer).is_err() {
                            return;
                        }
                    }
                });
            }
        });
        Collector { addr, received }
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<Span> {
        self.received.lock().unwrap().spans.clone()
    }

    /// The spans once at least `count` arrived (within 10 s).
    pub fn wait_spans(&self, count: usize) -> Vec<Span> {
        let arrived = super::wait_until(Duration::from_secs(10), || self.spans().len() >= count);
        let spans = self.spans();
        assert!(
            arrived,
            "{} of {count} spans arrived: {spans:#?}",
            spans.len()
        );
        spans
    }

    /// The resource attributes of the first export, as (key, string value).
    pub fn resource(&self) -> Vec<(String, String)> {
        let received = self.received.lock().unwrap();
        received
            .resources
            .first()
            .map(|attributes| {
                attributes
                    .iter()
                    .map(|kv| (kv.key.clone(), string(kv)))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The request paths exports were POSTed to.
    pub fn paths(&self) -> Vec<String> {
        self.received.lock().unwrap().paths.clone()
    }
}

/// An attribute's value as text (strings as they are, integers in decimal).
pub fn string(kv: &KeyValue) -> String {
    match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(text)) => text.clone(),
        Some(any_value::Value::IntValue(n)) => n.to_string(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        other => format!("{other:?}"),
    }
}

/// The attribute `key` of `span`.
pub fn attribute(span: &Span, key: &str) -> Option<String> {
    span.attributes.iter().find(|kv| kv.key == key).map(string)
}

fn read_post(reader: &mut BufReader<std::net::TcpStream>) -> Option<(String, Vec<u8>)> {
    let mut line = String::new();
    if reader.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let path = line.split_whitespace().nth(1)?.to_string();
    let mut length = 0;
    loop {
        let mut header = String::new();
        reader.read_line(&mut header).ok()?;
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().ok()?;
            }
        }
    }
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body).ok()?;
    Some((path, body))
}
