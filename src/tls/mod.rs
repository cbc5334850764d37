//! TLS termination on a listener. The handshake runs in our listener code (not Pingora's) so that
//! connection limits apply before any crypto, the handshake is bounded by
//! `server.header_read_timeout`, and failures are counted by reason instead of logged as errors.
//!
//! One OpenSSL context per certificate; the listener's acceptor context picks one per handshake
//! from the client's SNI (a servername callback reading the current [`Contexts`]), so SIGHUP can
//! swap certificates under open connections. The acceptor context also holds the session cache,
//! which therefore survives certificate reloads.

pub mod certs;
pub mod peer;
pub mod socket;

use crate::config::{ClientAuth, ListenerTls, TlsVersion};
use crate::observability::metrics::TlsMetrics;
use arc_swap::ArcSwap;
use async_trait::async_trait;
use certs::{CertError, Certificate, NameIndex};
use openssl::error::ErrorStack;
use openssl::ssl::{
    select_next_proto, AlpnError, NameType, SslAcceptor, SslAcceptorBuilder, SslContext, SslMethod,
    SslMode, SslOptions, SslRef, SslSessionCacheMode, SslVerifyMode, SslVersion,
};
use openssl::stack::Stack;
use openssl::x509::store::X509StoreBuilder;
use openssl::x509::{X509Name, X509};
use pingora_core::listeners::TlsAccept;
use pingora_core::protocols::l4::stream::Stream as L4Stream;
use pingora_core::protocols::tls::server::handshake_with_callback;
use pingora_core::protocols::tls::TlsRef;
use pingora_core::protocols::Stream;
use std::any::Any;
use std::sync::Arc;
use std::time::Duration;

/// Sessions kept for resumption per listener (OpenSSL's default bound, made explicit); each may be
/// resumed for OpenSSL's default two hours.
const SESSION_CACHE_ENTRIES: i32 = 20_480;
/// Every context shares it, so a session survives the switch to the SNI-chosen context.
const SESSION_ID_CONTEXT: &[u8] = b"edgegate";
/// ALPN wire lists, in our order of preference.
const ALPN_H2_H1: &[u8] = b"\x02h2\x08http/1.1";
const ALPN_H1: &[u8] = b"\x08http/1.1";

/// Why a listener's TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("listener `{listener}`: {source}")]
    Certificate { listener: String, source: CertError },
    #[error("listener `{listener}`: OpenSSL refused the settings: {source}")]
    OpenSsl {
        listener: String,
        source: ErrorStack,
    },
}

/// The certificates in force: one context each, and the SNI index over them.
struct Contexts {
    contexts: Vec<SslContext>,
    names: NameIndex,
}

/// TLS for one listener.
pub struct Terminator {
    listener: String,
    spec: ListenerTls,
    acceptor: SslAcceptor,
    current: Arc<ArcSwap<Contexts>>,
    callbacks: Callbacks,
    metrics: TlsMetrics,
}

/// After the handshake: the verified client certificate, for the request headers.
struct Callbacks {
    client_certificates: bool,
}

#[async_trait]
impl TlsAccept for Callbacks {
    async fn handshake_complete_callback(
        &self,
        ssl: &TlsRef,
    ) -> Option<Arc<dyn Any + Send + Sync>> {
        if !self.client_certificates {
            return None;
        }
        let certificate = ssl.peer_certificate()?;
        Some(Arc::new(peer::ClientCertificate::of(&certificate)))
    }
}

/// The certificates of `spec`, read and checked, in order.
pub fn load_certificates(spec: &ListenerTls) -> Result<Vec<Certificate>, CertError> {
    spec.certificates.iter().map(Certificate::load).collect()
}

fn client_ca(spec: &ListenerTls) -> Result<Vec<X509>, CertError> {
    match &spec.client_ca {
        Some(path) => certs::load_ca(path),
        None => Ok(Vec::new()),
    }
}

/// A context with the listener's protocol settings and, when given, one certificate.
fn context_builder(
    spec: &ListenerTls,
    certificate: Option<&Certificate>,
    client_ca: &[X509],
) -> Result<SslAcceptorBuilder, ErrorStack> {
    // Mozilla "intermediate": TLS 1.2 and 1.3, AEAD ciphers with forward secrecy.
    let mut builder = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls_server())?;
    if spec.min_version == TlsVersion::Tls13 {
        builder.set_min_proto_version(Some(SslVersion::TLS1_3))?;
    }
    builder.set_options(SslOptions::NO_RENEGOTIATION | SslOptions::NO_TICKET);
    // An idle connection gives its 16 KiB record buffers back (as nginx does).
    builder.set_mode(SslMode::RELEASE_BUFFERS);
    builder.set_session_id_context(SESSION_ID_CONTEXT)?;
    // OpenSSL asks the context in force after the SNI switch, so every context answers ALPN.
    let offer = if spec.http2 { ALPN_H2_H1 } else { ALPN_H1 };
    builder.set_alpn_select_callback(move |_: &mut SslRef, client: &[u8]| {
        select_next_proto(offer, client).ok_or(AlpnError::NOACK)
    });
    if let Some(certificate) = certificate {
        builder.set_certificate(&certificate.leaf)?;
        for intermediate in &certificate.chain {
            builder.add_extra_chain_cert(intermediate.clone())?;
        }
        builder.set_private_key(&certificate.key)?;
        builder.check_private_key()?;
    }
    if !client_ca.is_empty() {
        let mut store = X509StoreBuilder::new()?;
        let mut names = Stack::<X509Name>::new()?;
        for ca in client_ca {
            store.add_cert(ca.clone())?;
            names.push(ca.subject_name().to_owned()?)?;
        }
        builder.set_verify_cert_store(store.build())?;
        builder.set_client_ca_list(names);
        builder.set_verify(verify_mode(spec.client_auth));
    }
    Ok(builder)
}

fn verify_mode(client_auth: ClientAuth) -> SslVerifyMode {
    match client_auth {
        ClientAuth::Off => SslVerifyMode::NONE,
        ClientAuth::Optional => SslVerifyMode::PEER,
        ClientAuth::Required => SslVerifyMode::PEER | SslVerifyMode::FAIL_IF_NO_PEER_CERT,
    }
}

fn build_contexts(
    spec: &ListenerTls,
    certificates: &[Certificate],
    client_ca: &[X509],
) -> Result<Contexts, ErrorStack> {
    let contexts = certificates
        .iter()
        .map(|certificate| {
            Ok(context_builder(spec, Some(certificate), client_ca)?
                .build()
                .into_context())
        })
        .collect::<Result<Vec<_>, ErrorStack>>()?;
    let names = NameIndex::new(certificates.iter().map(|c| c.names.as_slice()));
    Ok(Contexts { contexts, names })
}

/// Reads every certificate, key and CA file of `spec` and builds a context per certificate: what
/// both start-up and a reload do.
fn read_files(
    listener: &str,
    spec: &ListenerTls,
) -> Result<(Vec<Certificate>, Vec<X509>, Contexts), TlsError> {
    let certificate_error = |source| TlsError::Certificate {
        listener: listener.to_string(),
        source,
    };
    let certificates = load_certificates(spec).map_err(certificate_error)?;
    let client_ca = client_ca(spec).map_err(certificate_error)?;
    let contexts =
        build_contexts(spec, &certificates, &client_ca).map_err(|source| TlsError::OpenSsl {
            listener: listener.to_string(),
            source,
        })?;
    Ok((certificates, client_ca, contexts))
}

impl Terminator {
    /// Reads every file of `spec` and builds the listener's TLS; any problem is an error.
    pub fn new(listener: &str, spec: &ListenerTls) -> Result<Self, TlsError> {
        let openssl_error = |source| TlsError::OpenSsl {
            listener: listener.to_string(),
            source,
        };
        let (certificates, client_ca, contexts) = read_files(listener, spec)?;
        let current = Arc::new(ArcSwap::from_pointee(contexts));

        // The default certificate is set here too, for a handshake that never reaches the callback.
        let mut acceptor =
            context_builder(spec, certificates.first(), &client_ca).map_err(openssl_error)?;
        acceptor.set_session_cache_mode(SslSessionCacheMode::SERVER);
        acceptor.set_session_cache_size(SESSION_CACHE_ENTRIES);
        acceptor.set_num_tickets(1).map_err(openssl_error)?;
        let chooser = Arc::clone(&current);
        acceptor.set_servername_callback(move |ssl, _alert| {
            let contexts = chooser.load();
            let chosen = contexts.names.select(ssl.servername(NameType::HOST_NAME));
            if let Some(context) = contexts.contexts.get(chosen) {
                ssl.set_ssl_context(context)
                    .map_err(|_| openssl::ssl::SniError::ALERT_FATAL)?;
            }
            Ok(())
        });

        let metrics = TlsMetrics::new(listener);
        let terminator = Terminator {
            listener: listener.to_string(),
            spec: spec.clone(),
            acceptor: acceptor.build(),
            current,
            callbacks: Callbacks {
                client_certificates: spec.client_ca.is_some(),
            },
            metrics,
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
        let (certificates, _, contexts) = read_files(&self.listener, &self.spec)?;
        self.current.store(Arc::new(contexts));
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
        let handshake =
            handshake_with_callback(&self.acceptor, socket::TlsSocket::new(l4), &self.callbacks);
        // Pingora's timer wheel: a tokio timer earlier than any other wakes the runtime's driver
        // (an eventfd write) for every connection.
        match pingora_timeout::fast_timeout::fast_timeout(timeout, handshake).await {
            Ok(Ok(secured)) => {
                self.metrics.handshake(secured.ssl().session_reused());
                Some(Box::new(secured))
            }
            Ok(Err(error)) => {
                let reason = HandshakeFailure::of(&error);
                self.metrics.handshake_failed(reason);
                log::debug!(
                    "listener `{}`: TLS handshake failed: {error}",
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
    /// The bytes were not TLS (plain HTTP to a TLS port, a scanner).
    NotTls,
    /// The client went away mid-handshake.
    Closed,
    /// Anything else (a protocol error, an alert from the client).
    Other,
}

impl HandshakeFailure {
    /// Every reason, in label order.
    pub const ALL: [HandshakeFailure; 8] = [
        HandshakeFailure::Timeout,
        HandshakeFailure::ProtocolVersion,
        HandshakeFailure::NoSharedCipher,
        HandshakeFailure::ClientCertificateMissing,
        HandshakeFailure::ClientCertificateInvalid,
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
            HandshakeFailure::NotTls => "not_tls",
            HandshakeFailure::Closed => "closed",
            HandshakeFailure::Other => "other",
        }
    }

    /// The reason behind a failed handshake. Pingora keeps only OpenSSL's message (not the
    /// error itself), so the reason strings of OpenSSL's error queue are looked for in it.
    fn of(error: &pingora_error::Error) -> Self {
        let text = error.to_string();
        match OPENSSL_REASONS
            .iter()
            .find(|(reason, _)| text.contains(reason))
        {
            Some((_, failure)) => *failure,
            // An OpenSSL error we do not single out, or else the transport failed (EOF, reset).
            None if text.contains("error:") => HandshakeFailure::Other,
            None => HandshakeFailure::Closed,
        }
    }
}

/// OpenSSL 3 reason strings and what they mean for the client.
const OPENSSL_REASONS: &[(&str, HandshakeFailure)] = &[
    ("unsupported protocol", HandshakeFailure::ProtocolVersion),
    ("wrong ssl version", HandshakeFailure::ProtocolVersion),
    ("alert protocol version", HandshakeFailure::ProtocolVersion),
    ("no shared cipher", HandshakeFailure::NoSharedCipher),
    ("no suitable key share", HandshakeFailure::NoSharedCipher),
    ("no shared groups", HandshakeFailure::NoSharedCipher),
    (
        "peer did not return a certificate",
        HandshakeFailure::ClientCertificateMissing,
    ),
    (
        "certificate verify failed",
        HandshakeFailure::ClientCertificateInvalid,
    ),
    ("http request", HandshakeFailure::NotTls),
    ("https proxy request", HandshakeFailure::NotTls),
    ("wrong version number", HandshakeFailure::NotTls),
    ("packet length too long", HandshakeFailure::NotTls),
    ("unknown protocol", HandshakeFailure::NotTls),
    ("unexpected eof while reading", HandshakeFailure::Closed),
    ("Connection reset by peer", HandshakeFailure::Closed),
    ("Broken pipe", HandshakeFailure::Closed),
];

#[cfg(test)]
mod tests {
    use super::*;

    fn failure(message: &str) -> HandshakeFailure {
        let error = pingora_error::Error::explain(
            pingora_error::ErrorType::TLSHandshakeFailure,
            format!("TLS accept() failed: {message}"),
        );
        HandshakeFailure::of(&error)
    }

    #[test]
    fn openssl_messages_map_to_bounded_reasons() {
        // Messages as OpenSSL 3 words them (seen in the gateway's debug log).
        assert_eq!(
            failure("error:0A000102:SSL routines:tls_early_post_process_client_hello:unsupported protocol:ssl/statem/statem_srvr.c:1924:"),
            HandshakeFailure::ProtocolVersion
        );
        assert_eq!(
            failure("error:0A00009C:SSL routines:tls_validate_record_header:http request:ssl/record/methods/tlsany_meth.c:68:"),
            HandshakeFailure::NotTls
        );
        assert_eq!(
            failure("error:0A0000C7:SSL routines:tls_process_client_certificate:peer did not return a certificate:ssl/statem/statem_srvr.c:3510:"),
            HandshakeFailure::ClientCertificateMissing
        );
        assert_eq!(
            failure("error:0A000086:SSL routines:tls_post_process_client_certificate:certificate verify failed:ssl/statem/statem_srvr.c:3584:"),
            HandshakeFailure::ClientCertificateInvalid
        );
        assert_eq!(
            failure("error:0A0000F4:SSL routines:ossl_statem_server_read_transition:unexpected message:ssl/statem/statem_srvr.c:342:"),
            HandshakeFailure::Other
        );
        assert_eq!(
            failure("Connection reset by peer (os error 104)"),
            HandshakeFailure::Closed
        );
    }
}
