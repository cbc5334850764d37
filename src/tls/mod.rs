//! TLS termination on a listener, on rustls. The handshake runs in our listener code (not
//! Pingora's) so that connection limits apply before any crypto, the handshake is bounded by
//! `server.header_read_timeout`, and failures are counted by reason instead of logged as errors.
//!
//! One rustls configuration per listener, swapped whole on SIGHUP: its certificate chooser picks
//! one certificate per handshake from the client's SNI, and its session cache is shared by every
//! configuration the listener ever has, so sessions survive certificate reloads. Connections
//! run on rustls's unbuffered API ([`stream::TlsStream`]): an idle client holds no TLS buffer.

pub mod certs;
pub mod peer;
pub mod stream;
#[cfg(test)]
pub(crate) mod testing;

use crate::config::{ClientAuth, ListenerTls, TlsVersion};
use crate::observability::metrics::TlsMetrics;
use arc_swap::ArcSwap;
use certs::{CertError, Certificate, NameIndex};
use pingora_core::protocols::l4::stream::Stream as L4Stream;
use pingora_core::protocols::tls::SslDigest;
use pingora_core::protocols::{Stream, ALPN};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::CertificateDer;
use rustls::server::{
    ClientHello, ResolvesServerCert, ServerConfig, ServerSessionMemoryCache,
    UnbufferedServerConnection, WebPkiClientVerifier,
};
use rustls::sign::CertifiedKey;
use rustls::{HandshakeKind, PeerIncompatible, ProtocolVersion, RootCertStore};
use std::sync::Arc;
use std::time::Duration;
use stream::{Failure, TlsStream};

/// Sessions kept for resumption per listener (OpenSSL's default bound, which nginx shares).
const SESSION_CACHE_ENTRIES: usize = 20_480;
/// TLS 1.2 on the wire (what TLS 1.3 hellos claim too).
const TLS12_WIRE: u16 = 0x0303;
/// ALPN protocols, in our order of preference.
const H2: &[u8] = b"h2";
const HTTP11: &[u8] = b"http/1.1";

/// Why a listener's TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("listener `{listener}`: {source}")]
    Certificate { listener: String, source: CertError },
    #[error("listener `{listener}`: the TLS settings were refused: {source}")]
    Settings {
        listener: String,
        source: rustls::Error,
    },
}

/// The certificates in force and the SNI index over them: rustls asks it for one per handshake.
#[derive(Debug)]
struct Chooser {
    keys: Vec<Arc<CertifiedKey>>,
    names: NameIndex,
}

impl ResolvesServerCert for Chooser {
    fn resolve(&self, client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.keys
            .get(self.names.select(client_hello.server_name()))
            .cloned()
    }
}

/// TLS for one listener.
pub struct Terminator {
    listener: String,
    spec: ListenerTls,
    config: ArcSwap<ServerConfig>,
    sessions: Arc<ServerSessionMemoryCache>,
    metrics: TlsMetrics,
}

/// The certificates of `spec`, read and checked, in order.
pub fn load_certificates(spec: &ListenerTls) -> Result<Vec<Certificate>, CertError> {
    spec.certificates.iter().map(Certificate::load).collect()
}

/// The trust anchors for client certificates (`None` without `client_ca`).
fn client_roots(spec: &ListenerTls) -> Result<Option<RootCertStore>, CertError> {
    let Some(path) = &spec.client_ca else {
        return Ok(None);
    };
    let invalid = |message: String| CertError::Invalid {
        path: path.clone(),
        message,
    };
    let mut roots = RootCertStore::empty();
    for ca in certs::load_ca(path)? {
        let der = ca
            .to_der()
            .map_err(|e| invalid(format!("unreadable certificate: {e}")))?;
        roots
            .add(CertificateDer::from(der))
            .map_err(|e| invalid(format!("not usable as a client CA: {e}")))?;
    }
    Ok(Some(roots))
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// The listener's rustls configuration over `certificates`: TLS 1.2 and 1.3 (or 1.3 only), the
/// provider's AEAD suites with forward secrecy (Mozilla "intermediate" without DHE), ALPN,
/// client certificates, the shared session cache.
fn server_config(
    spec: &ListenerTls,
    certificates: &[Certificate],
    roots: Option<RootCertStore>,
    sessions: &Arc<ServerSessionMemoryCache>,
) -> Result<ServerConfig, rustls::Error> {
    let provider = provider();
    let versions: &[&rustls::SupportedProtocolVersion] = match spec.min_version {
        TlsVersion::Tls12 => &[&rustls::version::TLS13, &rustls::version::TLS12],
        TlsVersion::Tls13 => &[&rustls::version::TLS13],
    };
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(versions)?;
    let builder = match (roots, spec.client_auth) {
        (Some(roots), ClientAuth::Optional | ClientAuth::Required) => {
            let verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&provider));
            let verifier = if spec.client_auth == ClientAuth::Optional {
                verifier.allow_unauthenticated()
            } else {
                verifier
            };
            let verifier = verifier
                .build()
                .map_err(|e| rustls::Error::General(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
        _ => builder.with_no_client_auth(),
    };
    let chooser = Chooser {
        keys: certificates
            .iter()
            .map(|c| Arc::clone(&c.certified))
            .collect(),
        names: NameIndex::new(certificates.iter().map(|c| c.names.as_slice())),
    };
    let mut config = builder.with_cert_resolver(Arc::new(chooser));
    config.alpn_protocols = if spec.http2 {
        vec![H2.to_vec(), HTTP11.to_vec()]
    } else {
        vec![HTTP11.to_vec()]
    };
    config.session_storage = Arc::clone(sessions) as _;
    // One ticket per handshake (a session-cache id): a client resumes one connection at a time.
    config.send_tls13_tickets = 1;
    config.max_early_data_size = 0;
    Ok(config)
}

/// Reads every certificate, key and CA file of `spec` and builds its configuration: what both
/// start-up and a reload do.
fn read_files(
    listener: &str,
    spec: &ListenerTls,
    sessions: &Arc<ServerSessionMemoryCache>,
) -> Result<(Vec<Certificate>, ServerConfig), TlsError> {
    let certificate_error = |source| TlsError::Certificate {
        listener: listener.to_string(),
        source,
    };
    let certificates = load_certificates(spec).map_err(certificate_error)?;
    let roots = client_roots(spec).map_err(certificate_error)?;
    let config = server_config(spec, &certificates, roots, sessions).map_err(|source| {
        TlsError::Settings {
            listener: listener.to_string(),
            source,
        }
    })?;
    Ok((certificates, config))
}

impl Terminator {
    /// Reads every file of `spec` and builds the listener's TLS; any problem is an error.
    pub fn new(listener: &str, spec: &ListenerTls) -> Result<Self, TlsError> {
        let sessions = ServerSessionMemoryCache::new(SESSION_CACHE_ENTRIES);
        let (certificates, config) = read_files(listener, spec, &sessions)?;
        let terminator = Terminator {
            listener: listener.to_string(),
            spec: spec.clone(),
            config: ArcSwap::from_pointee(config),
            sessions,
            metrics: TlsMetrics::new(listener),
        };
        terminator.publish(&certificates);
        Ok(terminator)
    }

    /// Expiry gauges and warnings for the certificates now in force.
    fn publish(&self, certificates: &[Certificate]) {
        let now = certs::now_unix();
        for (spec, certificate) in self.spec.certificates.iter().zip(certificates) {
            self.metrics
                .certificate_expiry(&spec.cert, certificate.label(), certificate.not_after);
            let left = certificate.not_after - now;
            if left < certs::EXPIRY_WARNING_SECONDS {
                log::warn!(
                    "listener `{}`: the certificate for {} ({}) expires in {} day(s)",
                    self.listener,
                    certificate.names.join(", "),
                    spec.cert.display(),
                    left / 86_400
                );
            }
        }
    }

    /// Re-reads the certificate, key and CA files. New handshakes use them; open connections keep
    /// theirs. Any broken file keeps every old certificate in force.
    pub fn reload(&self) -> Result<(), TlsError> {
        let (certificates, config) = read_files(&self.listener, &self.spec, &self.sessions)?;
        self.config.store(Arc::new(config));
        self.publish(&certificates);
        Ok(())
    }

    /// The listener this terminates TLS for.
    pub fn listener(&self) -> &str {
        &self.listener
    }

    /// The handshake on a freshly accepted connection, within `timeout`; `None` when it failed
    /// (counted by reason, logged at debug: scanners and old clients are not the operator's errors).
    pub async fn accept(&self, stream: Stream, timeout: Duration) -> Option<Stream> {
        let l4 = match stream.into_any().downcast::<L4Stream>() {
            Ok(l4) => *l4,
            Err(_) => {
                log::error!("listener `{}`: not a TCP stream, closed", self.listener);
                return None;
            }
        };
        let conn = match UnbufferedServerConnection::new(self.config.load_full()) {
            Ok(conn) => conn,
            Err(error) => {
                log::error!(
                    "listener `{}`: TLS refused to start: {error}",
                    self.listener
                );
                return None;
            }
        };
        let mut secured = TlsStream::new(l4, conn);
        // Pingora's timer wheel: a tokio timer earlier than any other wakes the runtime's driver
        // (an eventfd write) for every connection.
        match pingora_timeout::fast_timeout::fast_timeout(timeout, secured.handshake()).await {
            Ok(Ok(())) => {
                settle(&mut secured);
                let resumed = secured.connection().handshake_kind() == Some(HandshakeKind::Resumed);
                self.metrics.handshake(resumed);
                Some(Box::new(secured))
            }
            Ok(Err(failure)) => {
                let reason = HandshakeFailure::of(&failure, secured.hello_version());
                self.metrics.handshake_failed(reason);
                log::debug!(
                    "listener `{}`: TLS handshake failed: {failure:?}",
                    self.listener
                );
                None
            }
            Err(_) => {
                self.metrics.handshake_failed(HandshakeFailure::Timeout);
                None
            }
        }
    }
}

/// What the handshake settled, for Pingora (the digest, ALPN) and the gateway (the client
/// certificate).
fn settle(secured: &mut TlsStream) {
    let conn = secured.connection();
    let version = match conn.protocol_version() {
        Some(ProtocolVersion::TLSv1_3) => "TLSv1.3",
        Some(ProtocolVersion::TLSv1_2) => "TLSv1.2",
        _ => "",
    };
    let cipher = conn
        .negotiated_cipher_suite()
        .and_then(|suite| suite.suite().as_str())
        .unwrap_or("");
    let alpn = match conn.alpn_protocol() {
        Some(H2) => Some(ALPN::H2),
        Some(HTTP11) => Some(ALPN::H1),
        _ => None,
    };
    let client = conn
        .peer_certificates()
        .and_then(|chain| chain.first())
        .and_then(|leaf| peer::register(leaf));
    let cert_digest = client.as_ref().map_or_else(Vec::new, |c| c.digest.to_vec());
    let digest = SslDigest::new(cipher, version, None, None, cert_digest);
    secured.settle(digest, alpn, client);
}

/// Why a handshake failed (the `reason` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeFailure {
    /// Not finished within `server.header_read_timeout`.
    Timeout,
    /// The client offered only TLS versions we refuse (1.0, 1.1, or 1.2 under `min_version: 1.3`).
    ProtocolVersion,
    /// No cipher suite or group in common.
    NoSharedCipher,
    /// `client_auth: required` and no certificate came.
    ClientCertificateMissing,
    /// The client's certificate does not verify against `client_ca`.
    ClientCertificateInvalid,
    /// The client's ALPN list names no protocol the listener speaks (`h2` off and only `h2`
    /// offered, say).
    NoApplicationProtocol,
    /// The bytes were not TLS (plain HTTP to a TLS port, a scanner).
    NotTls,
    /// The client went away mid-handshake.
    Closed,
    /// Anything else (a protocol error, an alert from the client).
    Other,
}

impl HandshakeFailure {
    /// Every reason, in label order.
    pub const ALL: [HandshakeFailure; 9] = [
        HandshakeFailure::Timeout,
        HandshakeFailure::ProtocolVersion,
        HandshakeFailure::NoSharedCipher,
        HandshakeFailure::ClientCertificateMissing,
        HandshakeFailure::ClientCertificateInvalid,
        HandshakeFailure::NoApplicationProtocol,
        HandshakeFailure::NotTls,
        HandshakeFailure::Closed,
        HandshakeFailure::Other,
    ];

    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            HandshakeFailure::Timeout => "timeout",
            HandshakeFailure::ProtocolVersion => "protocol_version",
            HandshakeFailure::NoSharedCipher => "no_shared_cipher",
            HandshakeFailure::ClientCertificateMissing => "client_certificate_missing",
            HandshakeFailure::ClientCertificateInvalid => "client_certificate_invalid",
            HandshakeFailure::NoApplicationProtocol => "no_application_protocol",
            HandshakeFailure::NotTls => "not_tls",
            HandshakeFailure::Closed => "closed",
            HandshakeFailure::Other => "other",
        }
    }

    /// The reason behind a failed handshake whose client hello asked for `hello_version`.
    fn of(failure: &Failure, hello_version: u16) -> Self {
        match failure {
            Failure::NotTls => HandshakeFailure::NotTls,
            Failure::Io(_) => HandshakeFailure::Closed,
            // rustls stops a TLS 1.0/1.1 hello at whatever it lacks first (signature
            // algorithms, say); for the operator the reason is the version.
            Failure::Tls(_) if hello_version != 0 && hello_version < TLS12_WIRE => {
                HandshakeFailure::ProtocolVersion
            }
            Failure::Tls(error) => Self::of_tls(error),
        }
    }

    fn of_tls(error: &rustls::Error) -> Self {
        use rustls::Error;
        match error {
            Error::PeerIncompatible(incompatible) => match incompatible {
                PeerIncompatible::Tls12NotOffered
                | PeerIncompatible::Tls12NotOfferedOrEnabled
                | PeerIncompatible::SupportedVersionsExtensionRequired
                | PeerIncompatible::ServerDoesNotSupportTls12Or13 => {
                    HandshakeFailure::ProtocolVersion
                }
                PeerIncompatible::NoCipherSuitesInCommon
                | PeerIncompatible::NoKxGroupsInCommon
                | PeerIncompatible::NoSignatureSchemesInCommon
                | PeerIncompatible::NoEcPointFormatsInCommon => HandshakeFailure::NoSharedCipher,
                _ => HandshakeFailure::Other,
            },
            Error::NoCertificatesPresented => HandshakeFailure::ClientCertificateMissing,
            Error::InvalidCertificate(_) => HandshakeFailure::ClientCertificateInvalid,
            Error::NoApplicationProtocol => HandshakeFailure::NoApplicationProtocol,
            _ => HandshakeFailure::Other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::{CertificateError, Error};

    #[test]
    fn handshake_failures_map_to_bounded_reasons() {
        let tls = |error: Error| HandshakeFailure::of(&Failure::Tls(error), TLS12_WIRE);
        assert_eq!(
            tls(PeerIncompatible::Tls12NotOffered.into()),
            HandshakeFailure::ProtocolVersion
        );
        assert_eq!(
            tls(PeerIncompatible::NoCipherSuitesInCommon.into()),
            HandshakeFailure::NoSharedCipher
        );
        assert_eq!(
            tls(Error::NoCertificatesPresented),
            HandshakeFailure::ClientCertificateMissing
        );
        assert_eq!(
            tls(Error::InvalidCertificate(CertificateError::UnknownIssuer)),
            HandshakeFailure::ClientCertificateInvalid
        );
        assert_eq!(
            tls(Error::NoApplicationProtocol),
            HandshakeFailure::NoApplicationProtocol
        );
        assert_eq!(tls(Error::DecryptError), HandshakeFailure::Other);
        assert_eq!(
            HandshakeFailure::of(
                &Failure::Tls(PeerIncompatible::SignatureAlgorithmsExtensionRequired.into()),
                0x0302
            ),
            HandshakeFailure::ProtocolVersion,
            "a TLS 1.1 hello fails for its version, whatever rustls trips on first"
        );
        assert_eq!(
            HandshakeFailure::of(&Failure::Io(std::io::ErrorKind::ConnectionReset.into()), 0),
            HandshakeFailure::Closed
        );
        assert_eq!(
            HandshakeFailure::of(&Failure::NotTls, 0),
            HandshakeFailure::NotTls
        );
    }
}
