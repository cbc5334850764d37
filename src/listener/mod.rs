//! Client connections before HTTP: each accepted connection is counted against its listener's
//! `max_connections` and `max_connections_per_ip` (over either, it is closed at once), goes
//! through the TLS handshake on a TLS listener, is told apart as HTTP/1 or HTTP/2 (ALPN, or the
//! h2c preface on a plain listener with `h2c`), is wrapped in a [`stream::ClientStream`]
//! (request-head deadline, strict HTTP/1 framing) and handed to Pingora's HTTP proxy.

pub mod coalesce;
pub mod date;
pub mod framing;
pub mod stream;

use crate::config::ListenerSpec;
use crate::gateway::Gateway;
use crate::observability::metrics::{self, ListenerMetrics};
use crate::snapshot::Snapshot;
use crate::tls::Terminator;
use arc_swap::ArcSwap;
use async_trait::async_trait;
use pingora_core::apps::{HttpServerApp, ServerApp};
use pingora_core::protocols::http::ServerSession;
use pingora_core::protocols::l4::stream::Stream as L4Stream;
use pingora_core::protocols::{Stream, ALPN};
use pingora_core::server::ShutdownWatch;
use pingora_proxy::HttpProxy;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;
use stream::{ClientStream, H2_PREFACE};
use tokio::io::AsyncReadExt;

/// The proxy service's application: connection limits and the guarded stream, then Pingora.
pub struct EdgeApp {
    proxy: Arc<HttpProxy<Gateway>>,
    gates: Vec<Gate>,
    snapshot: Arc<ArcSwap<Snapshot>>,
}

/// One listener's connection accounting.
struct Gate {
    address: SocketAddr,
    max_connections: Option<u32>,
    max_per_ip: Option<u32>,
    open: AtomicU32,
    per_ip: parking_lot::Mutex<HashMap<IpAddr, u32>>,
    metrics: ListenerMetrics,
    tls: Option<Arc<Terminator>>,
    h2c: bool,
}

/// Why a connection was closed at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    MaxConnections,
    MaxConnectionsPerIp,
}

/// A connection counted against its gate until dropped.
struct Admission<'a> {
    gate: &'a Gate,
    ip: Option<IpAddr>,
}

impl Gate {
    fn new(spec: &ListenerSpec, tls: Option<Arc<Terminator>>) -> Self {
        Gate {
            tls,
            h2c: spec.h2c,
            address: spec.address,
            max_connections: spec.max_connections,
            max_per_ip: spec.max_connections_per_ip,
            open: AtomicU32::new(0),
            per_ip: parking_lot::Mutex::new(HashMap::new()),
            metrics: ListenerMetrics::new(&spec.name),
        }
    }

    fn serves(&self, local: SocketAddr) -> bool {
        self.address.port() == local.port()
            && (self.address.ip().is_unspecified() || self.address.ip() == local.ip())
    }

    /// Counts a new connection from `peer`, or says why it may not stay.
    fn admit(&self, peer: Option<IpAddr>) -> Result<Admission<'_>, Refusal> {
        let open = self.open.fetch_add(1, Ordering::AcqRel) + 1;
        if self.max_connections.is_some_and(|max| open > max) {
            self.open.fetch_sub(1, Ordering::AcqRel);
            return Err(Refusal::MaxConnections);
        }
        let ip = match (self.max_per_ip, peer) {
            (Some(max), Some(ip)) => {
                let mut counts = self.per_ip.lock();
                let count = counts.entry(ip).or_insert(0);
                if *count >= max {
                    drop(counts);
                    self.open.fetch_sub(1, Ordering::AcqRel);
                    return Err(Refusal::MaxConnectionsPerIp);
                }
                *count += 1;
                Some(ip)
            }
            _ => None,
        };
        self.metrics.open.inc();
        Ok(Admission { gate: self, ip })
    }
}

impl Drop for Admission<'_> {
    fn drop(&mut self) {
        if let Some(ip) = self.ip {
            let mut counts = self.gate.per_ip.lock();
            if let Some(count) = counts.get_mut(&ip) {
                *count -= 1;
                if *count == 0 {
                    counts.remove(&ip);
                }
            }
        }
        self.gate.open.fetch_sub(1, Ordering::AcqRel);
        self.gate.metrics.open.dec();
    }
}

impl EdgeApp {
    /// The application for `proxy` serving `listeners` (in the order they were added), with the
    /// TLS terminators of those that have TLS (matched by listener name).
    pub fn new(
        proxy: HttpProxy<Gateway>,
        listeners: &[ListenerSpec],
        terminators: &[Arc<Terminator>],
        snapshot: Arc<ArcSwap<Snapshot>>,
    ) -> Self {
        let gates = listeners
            .iter()
            .map(|spec| {
                let tls = terminators
                    .iter()
                    .find(|t| t.listener() == spec.name)
                    .cloned();
                Gate::new(spec, tls)
            })
            .collect();
        EdgeApp {
            proxy: Arc::new(proxy),
            gates,
            snapshot,
        }
    }

    /// The gate of the listener `stream` was accepted on.
    fn gate_of(&self, stream: &Stream) -> Option<&Gate> {
        if let [only] = self.gates.as_slice() {
            return Some(only);
        }
        let local = stream
            .get_socket_digest()?
            .local_addr()?
            .as_inet()
            .copied()?;
        self.gates.iter().find(|gate| gate.serves(local))
    }

    /// Pingora's HTTP/1 keep-alive loop (as `ServerApp::process_new` runs it), except that between
    /// requests the connection waits here until its next request starts. Pingora would park it
    /// inside its per-request proxy future, in `read_request`: about 13 KiB (that future and a
    /// request-head buffer) held by every idle keep-alive client.
    async fn serve_http1(
        &self,
        stream: Box<ClientStream>,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let mut session = ServerSession::new_http1(stream);
        // The proxy's early_request_filter sets the configured keep-alive on every request.
        session.set_keepalive(if *shutdown.borrow() { None } else { Some(60) });
        let limit = self
            .proxy
            .server_options()
            .and_then(|options| options.keepalive_request_limit);
        session.set_keepalive_reuses_remaining(limit);
        let mut reused = self.proxy.process_new_http(session, shutdown).await;
        while let Some((stream, settings)) = reused.map(|r| r.consume()) {
            let stream = self.park(stream, shutdown).await?;
            let mut session = ServerSession::new_http1(stream);
            if let Some(settings) = settings {
                settings.apply_to_session(&mut session);
            }
            reused = self.proxy.process_new_http(session, shutdown).await;
        }
        None
    }

    /// Holds an idle keep-alive connection until its next request starts; `None` closes it (the
    /// client left, the keep-alive timeout passed, or the server is shutting down).
    async fn park(&self, stream: Stream, shutdown: &ShutdownWatch) -> Option<Stream> {
        let mut client = match stream.into_any().downcast::<ClientStream>() {
            Ok(client) => client,
            Err(_) => {
                log::error!("a reused connection is not a client stream; closed");
                return None;
            }
        };
        if client.next_request_started() {
            return Some(client);
        }
        let idle = Duration::from_secs(self.snapshot.load().keepalive_secs?);
        let mut shutdown = shutdown.clone();
        if *shutdown.borrow() {
            return None;
        }
        tokio::select! {
            started = tokio::time::timeout(idle, client.wait_for_request()) => {
                matches!(started, Ok(true)).then_some(client as Stream)
            }
            _ = shutdown.changed() => None,
        }
    }
}

fn peer_ip(stream: &Stream) -> Option<IpAddr> {
    let peer = stream.get_socket_digest()?.peer_addr()?.as_inet()?.ip();
    Some(crate::gateway::canonical_ip(peer))
}

/// Reads until the bytes either are the HTTP/2 preface or cannot be (an HTTP/1 request line
/// differs at its first byte), then puts them back. `None`: nothing conclusive within `timeout`.
async fn sniff_h2c(stream: Stream, timeout: Duration) -> Option<(Stream, bool)> {
    let mut l4 = *stream.into_any().downcast::<L4Stream>().ok()?;
    let mut seen = [0u8; H2_PREFACE.len()];
    let mut len = 0;
    let read = tokio::time::timeout(timeout, async {
        while len < seen.len() {
            let n = l4.read(&mut seen[len..]).await?;
            if n == 0 {
                break;
            }
            len += n;
            if seen[..len] != H2_PREFACE[..len] {
                break;
            }
        }
        Ok::<(), std::io::Error>(())
    })
    .await;
    match read {
        Ok(Ok(())) => {
            l4.rewind(&seen[..len]);
            Some((Box::new(l4), seen == *H2_PREFACE))
        }
        Ok(Err(_)) => None,
        Err(_) => {
            metrics::client_timeout(metrics::ClientTimeout::Header);
            None
        }
    }
}

#[async_trait]
impl ServerApp for EdgeApp {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let gate = self.gate_of(&stream);
        let _admission = match gate {
            Some(gate) => {
                // The peer's address is looked up only when it is counted.
                let peer = gate.max_per_ip.and_then(|_| peer_ip(&stream));
                match gate.admit(peer) {
                    Ok(admission) => Some(admission),
                    Err(refusal) => {
                        gate.metrics.refused(refusal);
                        log::debug!("connection refused: {refusal:?}");
                        return None;
                    }
                }
            }
            None => None,
        };
        let timeout = self.snapshot.load().model.server.header_read_timeout;
        // The handshake and the h2c sniff are boxed: this future lives as long as the connection,
        // and inlined they would keep their (large) state in it, about 3.5 KiB per idle client.
        let mut stream = match gate.and_then(|g| g.tls.as_ref()) {
            Some(terminator) => Box::pin(terminator.accept(stream, timeout)).await?,
            None => stream,
        };
        let http2 = if matches!(stream.selected_alpn_proto(), Some(ALPN::H2)) {
            true
        } else if gate.is_some_and(|g| g.h2c) {
            let (sniffed, prior_knowledge) = Box::pin(sniff_h2c(stream, timeout)).await?;
            stream = sniffed;
            prior_knowledge
        } else {
            false
        };
        if http2 {
            let stream: Stream = Box::new(ClientStream::http2(stream, timeout));
            return self.proxy.process_new(stream, shutdown).await;
        }
        self.serve_http1(Box::new(ClientStream::new(stream, timeout)), shutdown)
            .await
    }

    async fn cleanup(&self) {
        self.proxy.cleanup().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gate(max: Option<u32>, per_ip: Option<u32>) -> Gate {
        Gate::new(
            &ListenerSpec {
                name: "test".into(),
                address: "127.0.0.1:1".parse().unwrap(),
                tls: None,
                h2c: false,
                max_connections: max,
                max_connections_per_ip: per_ip,
            },
            None,
        )
    }

    #[test]
    fn connections_over_the_listener_limit_are_refused_and_slots_come_back() {
        let gate = gate(Some(2), None);
        let a = gate.admit(None).unwrap();
        let _b = gate.admit(None).unwrap();
        assert_eq!(gate.admit(None).err(), Some(Refusal::MaxConnections));
        drop(a);
        assert!(gate.admit(None).is_ok());
    }

    #[test]
    fn one_address_cannot_take_more_than_its_share() {
        let gate = gate(Some(10), Some(2));
        let one: IpAddr = "10.0.0.1".parse().unwrap();
        let two: IpAddr = "10.0.0.2".parse().unwrap();
        let first = gate.admit(Some(one)).unwrap();
        let _second = gate.admit(Some(one)).unwrap();
        assert_eq!(
            gate.admit(Some(one)).err(),
            Some(Refusal::MaxConnectionsPerIp)
        );
        let _other = gate.admit(Some(two)).expect("others are not affected");
        drop(first);
        let _again = gate.admit(Some(one)).unwrap();
        assert_eq!(gate.open.load(Ordering::Relaxed), 3);
        assert_eq!(gate.per_ip.lock().get(&one), Some(&2));
    }

    #[test]
    fn a_listener_on_every_address_serves_any_local_address() {
        let mut any = gate(None, None);
        any.address = "0.0.0.0:8080".parse().unwrap();
        assert!(any.serves("10.1.2.3:8080".parse().unwrap()));
        assert!(!any.serves("10.1.2.3:8081".parse().unwrap()));
        let one = gate(None, None);
        assert!(one.serves("127.0.0.1:1".parse().unwrap()));
        assert!(!one.serves("127.0.0.2:1".parse().unwrap()));
    }
}
