//! A client's TLS connection on rustls's unbuffered API. The buffered `ServerConnection` keeps a
//! 4 KiB read buffer for the life of the connection; here every buffer is ours and exists only
//! while it holds bytes: records are read into a per-thread scratch buffer and processed there,
//! only an incomplete record's bytes are kept, decrypted bytes the reader has not taken yet are
//! kept, and encrypted bytes wait only until the socket takes them. An idle client holds none.

use super::peer::ClientCertificate;
use crate::listener::stream::pass_through_stream_traits;
use pingora_core::protocols::l4::stream::Stream as L4Stream;
use pingora_core::protocols::tls::SslDigest;
use pingora_core::protocols::{Shutdown, Ssl, ALPN};
use rustls::server::{ServerConnectionData, UnbufferedServerConnection};
use rustls::unbuffered::{ConnectionState, EncodeError, EncryptError, WriteTraffic};
use std::cell::RefCell;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The most one socket read takes: a whole TLS record with its header and the largest overhead.
const READ: usize = 16 * 1024 + 2048 + 5;

/// Plaintext taken per write: four full records.
const WRITE: usize = 4 * 16 * 1024;

/// Per record, what encryption adds at most (header, explicit nonce, tag, content type, padding).
const RECORD_OVERHEAD: usize = 64;

/// The first byte of a TLS handshake record.
const HANDSHAKE_RECORD: u8 = 0x16;

thread_local! {
    /// Where socket reads land; what a read leaves unprocessed is copied out of it.
    static SCRATCH: RefCell<Vec<u8>> = RefCell::new(vec![0; READ]);
}

/// Where processing the received records stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// More bytes from the client are needed.
    NeedInput,
    /// The client sent close_notify: no more application data comes.
    PeerClosed,
}

/// What a failed handshake or record says.
#[derive(Debug)]
pub enum Failure {
    /// rustls refused what the client sent.
    Tls(rustls::Error),
    /// The socket failed or the client went away.
    Io(io::Error),
    /// The first bytes were not a TLS handshake record.
    NotTls,
}

impl From<Failure> for io::Error {
    fn from(failure: Failure) -> Self {
        match failure {
            Failure::Io(error) => error,
            Failure::Tls(error) => io::Error::new(io::ErrorKind::InvalidData, error),
            Failure::NotTls => io::Error::new(io::ErrorKind::InvalidData, "not TLS"),
        }
    }
}

/// A TLS connection from a client, server side.
pub struct TlsStream {
    inner: L4Stream,
    conn: UnbufferedServerConnection,
    /// The start of a record not complete yet (empty, and unallocated, otherwise).
    incoming: Vec<u8>,
    /// Decrypted bytes the reader has not taken yet, from `taken` on.
    plain: Vec<u8>,
    taken: usize,
    /// Encrypted bytes the socket has not taken yet, from `sent` on.
    outgoing: Vec<u8>,
    sent: usize,
    /// No more application data comes (close_notify or end of stream).
    read_closed: bool,
    /// close_notify has been queued.
    write_closed: bool,
    /// What waits in `outgoing` (TLS 1.3 session tickets) goes out with the first response
    /// instead of in a send of its own.
    hold_for_write: bool,
    /// The `legacy_version` of the client's hello (0 until it came): 0x0303 from any TLS 1.2 or
    /// 1.3 client, lower from a client that speaks nothing newer than TLS 1.1.
    hello_version: u16,
    digest: Option<Arc<SslDigest>>,
    alpn: Option<ALPN>,
    /// The verified client certificate, registered for the requests on this connection.
    client: Option<Arc<ClientCertificate>>,
}

impl std::fmt::Debug for TlsStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsStream")
            .field("inner", &self.inner)
            .field("alpn", &self.alpn)
            .finish()
    }
}

impl TlsStream {
    /// A connection whose handshake has not started.
    pub fn new(inner: L4Stream, conn: UnbufferedServerConnection) -> Self {
        TlsStream {
            inner,
            conn,
            incoming: Vec::new(),
            plain: Vec::new(),
            taken: 0,
            outgoing: Vec::new(),
            sent: 0,
            read_closed: false,
            write_closed: false,
            hold_for_write: false,
            hello_version: 0,
            digest: None,
            alpn: None,
            client: None,
        }
    }

    /// The version the client's hello asked for (0 before it came).
    pub fn hello_version(&self) -> u16 {
        self.hello_version
    }

    /// The rustls connection (for what the handshake settled).
    pub fn connection(&self) -> &UnbufferedServerConnection {
        &self.conn
    }

    /// Records what the handshake settled, for Pingora and the gateway.
    pub fn settle(
        &mut self,
        digest: SslDigest,
        alpn: Option<ALPN>,
        client: Option<Arc<ClientCertificate>>,
    ) {
        self.digest = Some(Arc::new(digest));
        self.alpn = alpn;
        self.client = client;
    }

    /// Runs the handshake to its end. TLS 1.3 session tickets are not sent yet: they leave with
    /// the first response.
    pub async fn handshake(&mut self) -> Result<(), Failure> {
        std::future::poll_fn(|cx| self.poll_handshake(cx)).await
    }

    fn poll_handshake(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Failure>> {
        loop {
            let stop = match self.process(None) {
                Ok(stop) => stop,
                Err(error) => {
                    self.send_alert(cx);
                    return Poll::Ready(Err(Failure::Tls(error)));
                }
            };
            if !self.conn.is_handshaking()
                && self.conn.protocol_version() == Some(rustls::ProtocolVersion::TLSv1_3)
            {
                // The client has everything it needs; the tickets wait for the response.
                self.hold_for_write = !self.outgoing.is_empty();
                return Poll::Ready(Ok(()));
            }
            // The server's flight goes out before waiting for the client's answer (TLS 1.2's
            // last flight is the server's).
            if let Poll::Ready(Err(error)) = self.poll_send(cx) {
                return Poll::Ready(Err(Failure::Io(error)));
            }
            if !self.conn.is_handshaking() {
                return Poll::Ready(Ok(()));
            }
            if stop == Stop::PeerClosed {
                return Poll::Ready(Err(Failure::Io(io::ErrorKind::UnexpectedEof.into())));
            }
            let first = self.conn.protocol_version().is_none() && self.incoming.is_empty();
            match ready!(self.poll_receive(cx, None, first)) {
                Ok(true) => {}
                Ok(false) => {
                    return Poll::Ready(Err(Failure::Io(io::ErrorKind::UnexpectedEof.into())))
                }
                Err(failure) => {
                    if matches!(failure, Failure::Tls(_)) {
                        self.send_alert(cx);
                    }
                    return Poll::Ready(Err(failure));
                }
            }
        }
    }

    /// The alert rustls queued for a failure, if the socket takes it at once.
    fn send_alert(&mut self, cx: &mut Context<'_>) {
        let _ = self.process(None);
        let _ = self.poll_send(cx);
    }

    /// Processes `records` (from the start): handshake messages are answered into `outgoing`,
    /// application data goes to `out` and then `plain`. Returns how many bytes of `records` were
    /// used and where processing stopped.
    fn process_records(
        &mut self,
        records: &mut [u8],
        mut out: Option<&mut ReadBuf<'_>>,
    ) -> (usize, Result<Stop, rustls::Error>) {
        let mut used = 0;
        loop {
            let status = self.conn.process_tls_records(&mut records[used..]);
            let discard = status.discard;
            let state = match status.state {
                Ok(state) => state,
                Err(error) => return (used + discard, Err(error)),
            };
            // Records may ask for more bytes to be discarded than the status says.
            let mut discard = discard;
            let stop = match state {
                ConnectionState::ReadTraffic(mut traffic) => {
                    while let Some(record) = traffic.next_record() {
                        let mut payload = match record {
                            Ok(record) => {
                                discard += record.discard;
                                record.payload
                            }
                            Err(error) => return (used + discard, Err(error)),
                        };
                        if let Some(out) = out.as_deref_mut() {
                            let give = payload.len().min(out.remaining());
                            out.put_slice(&payload[..give]);
                            payload = &payload[give..];
                        }
                        if !payload.is_empty() {
                            if self.taken == self.plain.len() {
                                self.plain.clear();
                                self.taken = 0;
                            }
                            self.plain.extend_from_slice(payload);
                        }
                    }
                    None
                }
                ConnectionState::EncodeTlsData(mut encode) => {
                    // Only a second `encode` of the same message fails otherwise: never here.
                    let _ = append(
                        &mut self.outgoing,
                        1024,
                        |buf| encode.encode(buf),
                        |error| match error {
                            EncodeError::InsufficientSize(short) => Some(short.required_size),
                            _ => None,
                        },
                    );
                    None
                }
                // What was encoded is in `outgoing`, which is sent in order before anything later.
                ConnectionState::TransmitTlsData(transmit) => {
                    transmit.done();
                    None
                }
                ConnectionState::BlockedHandshake | ConnectionState::WriteTraffic(_) => {
                    Some(Stop::NeedInput)
                }
                ConnectionState::PeerClosed | ConnectionState::Closed => Some(Stop::PeerClosed),
                // Early data is never accepted (`max_early_data_size` is 0): nothing else comes.
                _ => Some(Stop::NeedInput),
            };
            used += discard;
            if let Some(stop) = stop {
                return (used, Ok(stop));
            }
        }
    }

    /// Processes what `incoming` holds: see [`Self::process_records`]. What stays unprocessed is
    /// kept in `incoming`.
    fn process(&mut self, out: Option<&mut ReadBuf<'_>>) -> Result<Stop, rustls::Error> {
        let mut records = std::mem::take(&mut self.incoming);
        let (used, result) = self.process_records(&mut records, out);
        records.drain(..used.min(records.len()));
        if records.is_empty() {
            // The allocation goes too: an idle connection holds no read buffer.
            records = Vec::new();
        }
        self.incoming = records;
        result
    }

    /// Reads from the socket and processes what came (application data into `out`, then
    /// `plain`). `Ok(false)` at the end of the stream. `first`: the first bytes of the
    /// connection, which must start a handshake record.
    fn poll_receive(
        &mut self,
        cx: &mut Context<'_>,
        out: Option<&mut ReadBuf<'_>>,
        first: bool,
    ) -> Poll<Result<bool, Failure>> {
        SCRATCH.with(|scratch| {
            let Ok(mut scratch) = scratch.try_borrow_mut() else {
                // Never borrowed across a poll, so never busy.
                return Poll::Ready(Err(Failure::Io(io::Error::other("TLS scratch busy"))));
            };
            let mut read = ReadBuf::new(&mut scratch[..]);
            ready!(Pin::new(&mut self.inner).poll_read(cx, &mut read)).map_err(Failure::Io)?;
            let got = read.filled().len();
            if got == 0 {
                return Poll::Ready(Ok(false));
            }
            if first && scratch[0] != HANDSHAKE_RECORD {
                return Poll::Ready(Err(Failure::NotTls));
            }
            if self.hello_version == 0 && self.conn.protocol_version().is_none() {
                self.note_hello_version(&scratch[..got]);
            }
            let result = if self.incoming.is_empty() {
                // Processed where it landed; only an incomplete record is copied out.
                let (used, result) = self.process_records(&mut scratch[..got], out);
                if used < got {
                    self.incoming.extend_from_slice(&scratch[used..got]);
                }
                result
            } else {
                self.incoming.extend_from_slice(&scratch[..got]);
                self.process(out)
            };
            match result {
                Ok(Stop::PeerClosed) => self.read_closed = true,
                Ok(Stop::NeedInput) => {}
                Err(error) => return Poll::Ready(Err(Failure::Tls(error))),
            }
            Poll::Ready(Ok(true))
        })
    }

    /// Reads the hello's legacy_version once its bytes are in: a record header (5 bytes), the
    /// handshake type and length (4), then the version. `fresh` was just read, after `incoming`.
    fn note_hello_version(&mut self, fresh: &[u8]) {
        let byte = |at: usize| {
            self.incoming
                .get(at)
                .or_else(|| fresh.get(at - self.incoming.len()))
                .copied()
        };
        if let (Some(major), Some(minor)) = (byte(9), byte(10)) {
            self.hello_version = u16::from_be_bytes([major, minor]);
        }
    }

    /// Sends what waits in `outgoing`; `Ready(Ok)` once all of it is sent.
    fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.sent < self.outgoing.len() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.outgoing[self.sent..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.sent += n;
        }
        if !self.outgoing.is_empty() {
            self.outgoing = Vec::new();
            self.sent = 0;
        }
        Poll::Ready(Ok(()))
    }

    /// Hands out decrypted bytes already held; false when none are.
    fn hand_out_plain(&mut self, buf: &mut ReadBuf<'_>) -> bool {
        if self.taken >= self.plain.len() {
            return false;
        }
        let give = (self.plain.len() - self.taken).min(buf.remaining());
        buf.put_slice(&self.plain[self.taken..self.taken + give]);
        self.taken += give;
        if self.taken == self.plain.len() {
            self.plain = Vec::new();
            self.taken = 0;
        }
        true
    }

    /// Encrypts `data` into `outgoing`; how much of it was taken.
    fn encrypt(&mut self, data: &[u8]) -> io::Result<usize> {
        let data = &data[..data.len().min(WRITE)];
        let records_needed = data.len() / (16 * 1024) + 1;
        let guess = data.len() + records_needed * RECORD_OVERHEAD;
        self.with_write_traffic(|traffic, outgoing| {
            append(outgoing, guess, |buf| traffic.encrypt(data, buf), required)
                .map(|()| data.len())
                .map_err(|error| io::Error::other(format!("TLS encryption failed: {error}")))
        })
    }

    /// Queues close_notify once.
    fn close_notify(&mut self) {
        if self.write_closed {
            return;
        }
        self.write_closed = true;
        // Best effort: a connection that cannot send it any more just closes.
        let _ = self.with_write_traffic(|traffic, outgoing| {
            append(
                outgoing,
                RECORD_OVERHEAD,
                |buf| traffic.queue_close_notify(buf),
                required,
            )
            .map_err(|error| io::Error::other(error.to_string()))
        });
    }

    /// Runs `write` with the connection's application-data writer and `outgoing`.
    fn with_write_traffic<T>(
        &mut self,
        write: impl FnOnce(&mut WriteTraffic<'_, ServerConnectionData>, &mut Vec<u8>) -> io::Result<T>,
    ) -> io::Result<T> {
        let mut records = std::mem::take(&mut self.incoming);
        let status = self.conn.process_tls_records(&mut records);
        // Everything complete in `records` was processed when it was read, so nothing is used.
        debug_assert_eq!(status.discard, 0);
        let result = match status.state {
            Ok(ConnectionState::WriteTraffic(mut traffic)) => {
                write(&mut traffic, &mut self.outgoing)
            }
            Ok(other) => Err(io::Error::other(format!(
                "TLS connection not writable: {other:?}"
            ))),
            Err(error) => Err(io::Error::new(io::ErrorKind::InvalidData, error)),
        };
        self.incoming = records;
        result
    }
}

/// How large a buffer an encryption that failed for want of room asks for.
fn required(error: &EncryptError) -> Option<usize> {
    match error {
        EncryptError::InsufficientSize(short) => Some(short.required_size),
        _ => None,
    }
}

/// Appends to `out` what `write` puts into a buffer: first one of `guess` bytes, then, when
/// `needs` reads the size it asked for from its error, one of that size. On error nothing is
/// appended.
fn append<E>(
    out: &mut Vec<u8>,
    guess: usize,
    mut write: impl FnMut(&mut [u8]) -> Result<usize, E>,
    needs: impl Fn(&E) -> Option<usize>,
) -> Result<(), E> {
    let start = out.len();
    out.resize(start + guess, 0);
    let mut result = write(&mut out[start..]);
    if let Some(size) = result.as_ref().err().and_then(&needs) {
        out.resize(start + size, 0);
        result = write(&mut out[start..]);
    }
    match result {
        Ok(written) => {
            out.truncate(start + written);
            Ok(())
        }
        Err(error) => {
            out.truncate(start);
            Err(error)
        }
    }
}

impl AsyncRead for TlsStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.hand_out_plain(buf) {
                return Poll::Ready(Ok(()));
            }
            if this.read_closed || buf.remaining() == 0 {
                return Poll::Ready(Ok(()));
            }
            // Answers to the client's messages (a key update) go out as the socket takes them.
            if !this.hold_for_write {
                if let Poll::Ready(Err(error)) = this.poll_send(cx) {
                    return Poll::Ready(Err(error));
                }
            }
            let before = buf.filled().len();
            match ready!(this.poll_receive(cx, Some(buf), false)) {
                Ok(true) => {}
                Ok(false) => {
                    this.read_closed = true;
                    if !this.incoming.is_empty() {
                        return Poll::Ready(Err(io::ErrorKind::UnexpectedEof.into()));
                    }
                }
                Err(failure) => return Poll::Ready(Err(failure.into())),
            }
            if buf.filled().len() > before {
                return Poll::Ready(Ok(()));
            }
        }
    }
}

impl AsyncWrite for TlsStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        // At most one write's worth waits: the socket takes it before more is encrypted.
        if this.outgoing.len() - this.sent >= WRITE {
            ready!(this.poll_send(cx))?;
        }
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let taken = this.encrypt(buf)?;
        this.hold_for_write = false;
        // Sent now if the socket takes it; otherwise by the next write or flush.
        if let Poll::Ready(Err(error)) = this.poll_send(cx) {
            return Poll::Ready(Err(error));
        }
        Poll::Ready(Ok(taken))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_send(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.close_notify();
        ready!(this.poll_send(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

impl Drop for TlsStream {
    fn drop(&mut self) {
        // What waits is sent if the socket takes it at once (as Pingora's own socket does).
        if self.sent < self.outgoing.len() {
            let mut cx = Context::from_waker(std::task::Waker::noop());
            let _ = self.poll_send(&mut cx);
        }
        if let Some(client) = self.client.take() {
            super::peer::release(client);
        }
    }
}

impl Ssl for TlsStream {
    fn get_ssl_digest(&self) -> Option<Arc<SslDigest>> {
        self.digest.clone()
    }

    fn selected_alpn_proto(&self) -> Option<ALPN> {
        self.alpn.clone()
    }
}

#[async_trait::async_trait]
impl Shutdown for TlsStream {
    async fn shutdown(&mut self) {
        self.close_notify();
        if std::future::poll_fn(|cx| self.poll_send(cx)).await.is_err() {
            log::debug!("close_notify could not be sent");
        }
        self.inner.shutdown().await;
    }
}

pass_through_stream_traits!(TlsStream, no_peek);

#[async_trait::async_trait]
impl pingora_core::protocols::Peek for TlsStream {}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
    use rustls::{ClientConfig, RootCertStore, ServerConfig};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A self-signed P-256 certificate for `localhost`, made with OpenSSL: (certificate, key).
    fn certificate() -> (CertificateDer<'static>, PrivateKeyDer<'static>) {
        let key = crate::tls::testing::p256_key();
        let certificate = crate::tls::testing::self_signed(&key, &["localhost"], 2);
        (
            CertificateDer::from(certificate.to_der().unwrap()),
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
                key.private_key_to_pkcs8().unwrap(),
            )),
        )
    }

    /// Our side of `tcp`, serving `cert` over `versions`, before its handshake.
    fn server(
        tcp: tokio::net::TcpStream,
        versions: &[&'static rustls::SupportedProtocolVersion],
        cert: CertificateDer<'static>,
        key: PrivateKeyDer<'static>,
    ) -> TlsStream {
        let config = ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_protocol_versions(versions)
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .unwrap();
        let conn = UnbufferedServerConnection::new(Arc::new(config)).unwrap();
        TlsStream::new(L4Stream::from(tcp), conn)
    }

    /// Our server and a tokio-rustls client over loopback, both through the handshake.
    async fn pair(
        version: &'static rustls::SupportedProtocolVersion,
    ) -> (
        TlsStream,
        tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
    ) {
        pair_through(version, false).await
    }

    /// Copies everything the client sends to `server`, one byte per write (`trickle`), and the
    /// server's answers back at once.
    async fn relay(client: tokio::net::TcpStream, server: tokio::net::TcpStream) {
        server.set_nodelay(true).unwrap();
        let (mut client_read, mut client_write) = client.into_split();
        let (mut server_read, mut server_write) = server.into_split();
        tokio::spawn(async move {
            let _ = tokio::io::copy(&mut server_read, &mut client_write).await;
        });
        let mut byte = [0u8; 1];
        while client_read.read_exact(&mut byte).await.is_ok() {
            if server_write.write_all(&byte).await.is_err() {
                break;
            }
            tokio::task::yield_now().await;
        }
    }

    /// [`pair`], the client's bytes reaching us one by one when `trickle`.
    async fn pair_through(
        version: &'static rustls::SupportedProtocolVersion,
        trickle: bool,
    ) -> (
        TlsStream,
        tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
    ) {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let (cert, key) = certificate();
        let mut roots = RootCertStore::empty();
        roots.add(cert.clone()).unwrap();
        let client = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[version])
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut address = listener.local_addr().unwrap();
        if trickle {
            let relay_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let server = address;
            address = relay_listener.local_addr().unwrap();
            tokio::spawn(async move {
                let (client, _) = relay_listener.accept().await.unwrap();
                let server = tokio::net::TcpStream::connect(server).await.unwrap();
                relay(client, server).await;
            });
        }
        let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
        let client = tokio::spawn(async move {
            let tcp = tokio::net::TcpStream::connect(address).await.unwrap();
            let name = ServerName::try_from("localhost").unwrap();
            connector.connect(name, tcp).await.unwrap()
        });
        let (tcp, _) = listener.accept().await.unwrap();
        let mut ours = server(tcp, &[version], cert, key);
        ours.handshake().await.unwrap();
        (ours, client.await.unwrap())
    }

    /// Large transfers both ways (records split across reads, writes larger than a record), then
    /// nothing held while idle, then close_notify reads as the end.
    async fn round_trip(version: &'static rustls::SupportedProtocolVersion) {
        let (mut ours, mut client) = pair(version).await;
        let upload: Vec<u8> = (0..1_000_003u32).map(|i| (i % 251) as u8).collect();
        let sent = upload.clone();
        let writer = tokio::spawn(async move {
            client.write_all(&sent).await.unwrap();
            client.flush().await.unwrap();
            client
        });
        let mut received = vec![0u8; upload.len()];
        ours.read_exact(&mut received).await.unwrap();
        assert!(received == upload, "the upload arrives intact");
        let mut client = writer.await.unwrap();

        let download: Vec<u8> = (0..700_001u32).map(|i| (i % 241) as u8).collect();
        let reader = tokio::spawn(async move {
            let mut got = vec![0u8; 700_001];
            client.read_exact(&mut got).await.unwrap();
            (client, got)
        });
        ours.write_all(&download).await.unwrap();
        ours.flush().await.unwrap();
        let (mut client, got) = reader.await.unwrap();
        assert!(got == download, "the download arrives intact");

        assert_eq!(ours.incoming.capacity(), 0, "no partial record held");
        assert_eq!(ours.plain.capacity(), 0, "no plaintext held");
        assert_eq!(ours.outgoing.capacity(), 0, "nothing waits to be sent");

        client.shutdown().await.unwrap();
        let mut rest = [0u8; 16];
        assert_eq!(
            ours.read(&mut rest).await.unwrap(),
            0,
            "close_notify ends the stream"
        );
    }

    #[tokio::test]
    async fn tls13_carries_large_transfers_and_holds_nothing_when_idle() {
        round_trip(&rustls::version::TLS13).await;
    }

    #[tokio::test]
    async fn tls12_carries_large_transfers_and_holds_nothing_when_idle() {
        round_trip(&rustls::version::TLS12).await;
    }

    #[tokio::test]
    async fn records_arriving_a_byte_at_a_time_are_put_together() {
        for version in [&rustls::version::TLS13, &rustls::version::TLS12] {
            let (mut ours, mut client) = pair_through(version, true).await;
            // Two records' worth, so one record ends and the next starts within a read.
            let message: Vec<u8> = (0..20_000u32).map(|i| (i % 253) as u8).collect();
            client.write_all(&message).await.unwrap();
            client.flush().await.unwrap();
            let mut received = vec![0u8; message.len()];
            ours.read_exact(&mut received).await.unwrap();
            assert!(
                received == message,
                "{version:?}: the message arrives intact"
            );
            ours.write_all(b"done").await.unwrap();
            ours.flush().await.unwrap();
            let mut answer = [0u8; 4];
            client.read_exact(&mut answer).await.unwrap();
            assert_eq!(&answer, b"done");
            assert_eq!(ours.incoming.capacity(), 0, "no partial record held");
        }
    }

    #[tokio::test]
    async fn the_hello_version_is_read_across_reads() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let _peer = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (tcp, _) = listener.accept().await.unwrap();
        let (cert, key) = certificate();
        let mut ours = server(tcp, rustls::DEFAULT_VERSIONS, cert, key);
        // A TLS 1.1 hello: record header, handshake header, then 0x0302.
        ours.incoming = vec![0x16, 0x03, 0x01, 0x00, 0x40, 0x01, 0x00, 0x00, 0x3c, 0x03];
        ours.note_hello_version(&[0x02, 0xaa]);
        assert_eq!(ours.hello_version(), 0x0302);
    }

    #[tokio::test]
    async fn bytes_that_are_not_tls_are_refused_at_once() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let mut peer = tokio::net::TcpStream::connect(address).await.unwrap();
        peer.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
            .await
            .unwrap();
        let (tcp, _) = listener.accept().await.unwrap();
        let (cert, key) = certificate();
        let mut ours = server(tcp, rustls::DEFAULT_VERSIONS, cert, key);
        assert!(matches!(ours.handshake().await, Err(Failure::NotTls)));
    }
}
