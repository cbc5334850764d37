//! Client connections before HTTP: each accepted connection is counted against its listener's
//! `max_connections` and `max_connections_per_ip` (over either, it is closed at once), then
//! wrapped in a [`stream::ClientStream`] (request-head deadline, strict framing) and handed to
//! Pingora's HTTP proxy.

pub mod framing;
pub mod stream;

use crate::config::ListenerSpec;
use crate::gateway::runtime::Runtime;
use crate::gateway::Gateway;
use crate::observability::metrics::ListenerMetrics;
use arc_swap::ArcSwap;
use async_trait::async_trait;
use pingora_core::apps::ServerApp;
use pingora_core::protocols::{Stream, ALPN};
use pingora_core::server::ShutdownWatch;
use pingora_proxy::HttpProxy;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use stream::ClientStream;

/// The proxy service's application: connection limits and the guarded stream, then Pingora.
pub struct EdgeApp {
    proxy: Arc<HttpProxy<Gateway>>,
    gates: Vec<Gate>,
    runtime: Arc<ArcSwap<Runtime>>,
}

/// One listener's connection accounting.
struct Gate {
    address: SocketAddr,
    max_connections: Option<u32>,
    max_per_ip: Option<u32>,
    open: AtomicU32,
    per_ip: parking_lot::Mutex<HashMap<IpAddr, u32>>,
    metrics: ListenerMetrics,
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
    fn new(spec: &ListenerSpec) -> Self {
        Gate {
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
    /// The application for `proxy` serving `listeners` (in the order they were added).
    pub fn new(
        proxy: HttpProxy<Gateway>,
        listeners: &[ListenerSpec],
        runtime: Arc<ArcSwap<Runtime>>,
    ) -> Self {
        EdgeApp {
            proxy: Arc::new(proxy),
            gates: listeners.iter().map(Gate::new).collect(),
            runtime,
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
}

fn peer_ip(stream: &Stream) -> Option<IpAddr> {
    let peer = stream.get_socket_digest()?.peer_addr()?.as_inet()?.ip();
    Some(crate::gateway::canonical_ip(peer))
}

#[async_trait]
impl ServerApp for EdgeApp {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let _admission = match self.gate_of(&stream) {
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
        let stream: Stream = if matches!(stream.selected_alpn_proto(), Some(ALPN::H2)) {
            // HTTP/2 has its own framing and timeouts; these guards are HTTP/1's.
            stream
        } else {
            let timeout = self.runtime.load().model.server.header_read_timeout;
            Box::new(ClientStream::new(stream, timeout))
        };
        self.proxy.process_new(stream, shutdown).await
    }

    async fn cleanup(&self) {
        self.proxy.cleanup().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gate(max: Option<u32>, per_ip: Option<u32>) -> Gate {
        Gate::new(&ListenerSpec {
            name: "test".into(),
            address: "127.0.0.1:1".parse().unwrap(),
            max_connections: max,
            max_connections_per_ip: per_ip,
        })
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
