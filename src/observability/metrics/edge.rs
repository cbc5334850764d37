//! The client side: connections, TLS handshakes and certificates, slow clients, requests refused before routing.

use super::FAMILIES;
use prometheus::{IntCounter, IntGauge};
use std::sync::LazyLock;

/// Where a slow client was cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientTimeout {
    Header,
    Body,
}

impl ClientTimeout {
    pub(super) const ALL: [ClientTimeout; 2] = [ClientTimeout::Header, ClientTimeout::Body];

    pub(super) fn label(self) -> &'static str {
        match self {
            ClientTimeout::Header => "header",
            ClientTimeout::Body => "body",
        }
    }
}

/// Counts a client cut for slowness.
pub fn client_timeout(phase: ClientTimeout) {
    static COUNTERS: LazyLock<[IntCounter; 2]> = LazyLock::new(|| {
        ClientTimeout::ALL.map(|phase| FAMILIES.client_timeouts.with_label_values(&[phase.label()]))
    });
    COUNTERS[phase as usize].inc();
}

/// Counts a request refused before routing (`reason` indexes `BadRequest::REASONS`).
pub fn bad_request(reason: usize) {
    static COUNTERS: LazyLock<[IntCounter; 5]> = LazyLock::new(|| {
        crate::gateway::strict::BadRequest::REASONS
            .map(|reason| FAMILIES.bad_requests.with_label_values(&[reason]))
    });
    if let Some(counter) = COUNTERS.get(reason) {
        counter.inc();
    }
}

/// Handles for one listener's connections.
pub struct ListenerMetrics {
    pub open: IntGauge,
    refused: [IntCounter; 2],
}

impl ListenerMetrics {
    /// Handles for the listener `name`.
    pub fn new(name: &str) -> Self {
        ListenerMetrics {
            open: FAMILIES.listener_connections.with_label_values(&[name]),
            refused: ["max_connections", "max_connections_per_ip"].map(|reason| {
                FAMILIES
                    .connections_refused
                    .with_label_values(&[name, reason])
            }),
        }
    }

    /// Counts a connection closed at once.
    pub fn refused(&self, refusal: crate::listener::Refusal) {
        let index = match refusal {
            crate::listener::Refusal::MaxConnections => 0,
            crate::listener::Refusal::MaxConnectionsPerIp => 1,
        };
        self.refused[index].inc();
    }
}

/// One TLS listener's handshake counters and certificate gauges.
pub struct TlsMetrics {
    listener: String,
    /// Full, resumed.
    handshakes: [IntCounter; 2],
    failures: [IntCounter; crate::tls::HandshakeFailure::ALL.len()],
}

impl TlsMetrics {
    /// Handles for the listener `name`.
    pub fn new(name: &str) -> Self {
        TlsMetrics {
            listener: name.to_string(),
            handshakes: ["false", "true"]
                .map(|resumed| FAMILIES.tls_handshakes.with_label_values(&[name, resumed])),
            failures: crate::tls::HandshakeFailure::ALL.map(|reason| {
                FAMILIES
                    .tls_handshake_failures
                    .with_label_values(&[name, reason.label()])
            }),
        }
    }

    /// Counts a completed handshake.
    pub fn handshake(&self, resumed: bool) {
        self.handshakes[usize::from(resumed)].inc();
    }

    /// Counts a failed handshake.
    pub fn handshake_failed(&self, reason: crate::tls::HandshakeFailure) {
        if let Some(index) = crate::tls::HandshakeFailure::ALL
            .iter()
            .position(|r| *r == reason)
        {
            self.failures[index].inc();
        }
    }

    /// Publishes when the certificate in `file` (serving `name`) expires.
    pub fn certificate_expiry(&self, file: &std::path::Path, name: &str, not_after: i64) {
        let file = file.display().to_string();
        FAMILIES
            .tls_certificate_expiry
            .with_label_values(&[self.listener.as_str(), file.as_str(), name])
            .set(not_after);
    }
}

/// One open client connection in `edgegate_downstream_connections` until dropped.
/// Zero-sized, so keeping it with a keep-alive connection costs no allocation.
pub struct Connection(());

impl Connection {
    /// Counts a connection.
    pub fn open() -> Self {
        FAMILIES.downstream_connections.inc();
        Connection(())
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        FAMILIES.downstream_connections.dec();
    }
}
