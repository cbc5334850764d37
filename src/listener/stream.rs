//! The client connection as Pingora reads it, with two guards Pingora lacks: a deadline for the
//! whole request head (Pingora's read timeout restarts with every byte, so a client dribbling a
//! byte every half second holds a connection forever) and the strict framing shadow of
//! [`super::framing`]. Everything else is passed straight to the underlying stream.

use super::coalesce::{Coalescer, COALESCE};
use super::date::{date_value_at, HttpDate, Patch};
use super::framing::{BodyFraming, Tracker, Violation};
use crate::observability::metrics;
use pingora_core::protocols::tls::{SslDigest, TlsRef};
use pingora_core::protocols::{Ssl, Stream, ALPN};
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// A client connection with a request-head deadline and framing checks.
pub struct ClientStream {
    inner: Stream,
    /// Locked only by the proxy's hooks; reads reach it through `get_mut` without locking.
    tracker: parking_lot::Mutex<Tracker>,
    header_timeout: Duration,
    /// When the head being received must be complete.
    deadline: Option<Instant>,
    /// Armed only once a read of an incomplete head has to wait.
    timer: Option<Pin<Box<Sleep>>>,
    /// `Tracker::heads` when the deadline was set.
    heads: u64,
    /// The body framing violation that ended the connection, for the error answer.
    violation: Option<Violation>,
    /// HTTP/2 (ALPN or prior knowledge): no HTTP/1 guards, Pingora is told it is h2.
    http2: bool,
    /// Bytes of the HTTP/2 connection preface still due before `deadline`.
    preface_left: usize,
    /// The start of the next request, read while the connection was parked between requests.
    pending: Option<bytes::Bytes>,
    /// When the upstream exchange of the request in progress must be over (nanoseconds after
    /// `epoch`; 0: no deadline). Pingora keeps reading the client while it waits for the
    /// backend, so that read wakes at the deadline: a backend trickling its response head
    /// cannot hold the request past it (HTTP/1 only; set by the gateway).
    exchange_deadline: AtomicU64,
    /// The timer of `exchange_deadline`, with the value it was armed for.
    exchange_timer: Option<(u64, Pin<Box<Sleep>>)>,
    /// The exchange deadline passed while the request was waiting on its backend.
    exchange_expired: AtomicBool,
    epoch: Instant,
    /// The origin's `Date` for the next response head (HTTP/1; set by the gateway).
    keep_date: parking_lot::Mutex<Option<HttpDate>>,
    /// Where that Date goes in the bytes written, once the head is being written.
    date_patch: Option<Patch>,
    /// Bytes written to the client so far.
    written: u64,
    /// Short writes not sent yet.
    out: Coalescer,
}

/// What a parked connection reads of its next request at once.
const PARKED_READ: usize = 2048;

/// Moves what `held` has (bytes read ahead of the caller) into `buf`, dropping it, and its
/// allocation, once all is taken; false when nothing was held.
pub(crate) fn hand_out_held(held: &mut Option<bytes::Bytes>, buf: &mut ReadBuf<'_>) -> bool {
    let Some(bytes) = held else {
        return false;
    };
    let give = bytes.len().min(buf.remaining());
    buf.put_slice(&bytes.split_to(give));
    if bytes.is_empty() {
        *held = None;
    }
    true
}

thread_local! {
    /// Where a parked connection's first read lands (a buffer in the parked future itself would
    /// be held by every idle client).
    static PARKED_SCRATCH: std::cell::RefCell<[u8; PARKED_READ]> =
        const { std::cell::RefCell::new([0; PARKED_READ]) };
}

/// `PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n`, what every HTTP/2 client sends first (RFC 9113 §3.4).
pub const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

impl std::fmt::Debug for ClientStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientStream")
            .field("inner", &self.inner)
            .field("deadline", &self.deadline)
            .finish()
    }
}

impl ClientStream {
    /// Wraps a freshly accepted connection: its first request head is due within `header_timeout`.
    pub fn new(inner: Stream, header_timeout: Duration) -> Self {
        ClientStream {
            inner,
            tracker: parking_lot::Mutex::new(Tracker::new()),
            header_timeout,
            deadline: Some(Instant::now() + header_timeout),
            timer: None,
            heads: 0,
            violation: None,
            http2: false,
            preface_left: 0,
            pending: None,
            exchange_deadline: AtomicU64::new(0),
            exchange_timer: None,
            exchange_expired: AtomicBool::new(false),
            epoch: Instant::now(),
            keep_date: parking_lot::Mutex::new(None),
            date_patch: None,
            written: 0,
            out: Coalescer::default(),
        }
    }

    /// Writes `date` instead of Pingora's in the next response head (or, with `None`, stops a
    /// pending one). HTTP/2 heads are encoded by Pingora beyond reach: ignored there.
    pub fn keep_origin_date(&self, date: Option<HttpDate>) {
        if !self.http2 {
            *self.keep_date.lock() = date;
        }
    }

    /// A write of `buf` with the origin's Date patched into it where it falls.
    fn poll_write_patched(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        if let Some(date) = self.keep_date.get_mut().take() {
            self.date_patch = date_value_at(buf).map(|at| Patch {
                start: self.written + at as u64,
                date,
            });
        }
        let result = match self.date_patch {
            Some(patch) if patch.overlaps(self.written, buf.len()) => {
                match patch.within(self.written, buf.len()) {
                    // The whole value in this write: three slices, gathered by the coalescer
                    // when short, else one `writev` on a plain socket; no patched copy.
                    Some(at) if buf.len() < COALESCE || self.inner.is_write_vectored() => {
                        let slices = [
                            io::IoSlice::new(&buf[..at]),
                            io::IoSlice::new(&patch.date),
                            io::IoSlice::new(&buf[at + patch.date.len()..]),
                        ];
                        self.out.poll_write_vectored(&mut self.inner, cx, &slices)
                    }
                    _ => {
                        let patched = patch.apply(self.written, buf);
                        self.out.poll_write(&mut self.inner, cx, &patched)
                    }
                }
            }
            _ => self.out.poll_write(&mut self.inner, cx, buf),
        };
        if let Poll::Ready(Ok(written)) = result {
            self.written += written as u64;
            if self.date_patch.is_some_and(|p| self.written >= p.end()) {
                self.date_patch = None;
            }
        }
        result
    }

    /// Sets (or with `None` clears) when the upstream exchange of the request in progress must
    /// be over; an HTTP/2 connection carries many requests and ignores it.
    pub fn set_exchange_deadline(&self, deadline: Option<Instant>) {
        let nanos = deadline.map_or(0, |deadline| {
            let since = deadline.saturating_duration_since(self.epoch).as_nanos();
            u64::try_from(since).unwrap_or(u64::MAX).max(1)
        });
        self.exchange_deadline.store(nanos, Ordering::Relaxed);
        self.exchange_expired.store(false, Ordering::Relaxed);
    }

    /// Whether the request's exchange deadline passed while it waited on its backend.
    pub fn exchange_expired(&self) -> bool {
        self.exchange_expired.load(Ordering::Relaxed)
    }

    /// A pending read's check of the exchange deadline: an error once it has passed.
    fn poll_exchange_deadline(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        let nanos = *self.exchange_deadline.get_mut();
        if nanos == 0 || self.http2 {
            self.exchange_timer = None;
            return Poll::Pending;
        }
        let armed = match &mut self.exchange_timer {
            Some((for_nanos, timer)) if *for_nanos == nanos => timer,
            slot => {
                let deadline = self.epoch + Duration::from_nanos(nanos);
                &mut slot
                    .insert((nanos, Box::pin(tokio::time::sleep_until(deadline))))
                    .1
            }
        };
        if armed.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        self.exchange_timer = None;
        *self.exchange_deadline.get_mut() = 0;
        *self.exchange_expired.get_mut() = true;
        Poll::Ready(io::Error::new(
            io::ErrorKind::TimedOut,
            "the upstream exchange outlived its deadline",
        ))
    }

    /// Bytes of the next request were already read (pipelined behind the previous one).
    pub fn next_request_started(&mut self) -> bool {
        self.pending.is_some() || self.tracker.get_mut().head_in_progress()
    }

    /// Waits for the client's next request and keeps what arrived for the next reads (a whole
    /// ordinary head fits, so the parser's first read costs no syscall); false when the client
    /// closed or the read failed. While it waits, the connection holds no read buffer.
    pub async fn wait_for_request(&mut self) -> bool {
        std::future::poll_fn(|cx| self.poll_next_request(cx)).await
    }

    fn poll_next_request(&mut self, cx: &mut Context<'_>) -> Poll<bool> {
        PARKED_SCRATCH.with(|scratch| match scratch.try_borrow_mut() {
            Ok(mut scratch) => self.poll_parked_read(cx, &mut scratch[..]),
            // Never borrowed across a poll, so never busy; if it were, a buffer of its own.
            Err(_) => self.poll_parked_read(cx, &mut [0u8; PARKED_READ]),
        })
    }

    fn poll_parked_read(&mut self, cx: &mut Context<'_>, scratch: &mut [u8]) -> Poll<bool> {
        let mut start = ReadBuf::new(scratch);
        match Pin::new(&mut *self).poll_read(cx, &mut start) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(())) if !start.filled().is_empty() => {
                self.pending = Some(bytes::Bytes::copy_from_slice(start.filled()));
                Poll::Ready(true)
            }
            Poll::Ready(_) => Poll::Ready(false),
        }
    }

    /// Wraps an HTTP/2 connection: its connection preface is due within `preface_timeout`, and
    /// the HTTP/1 guards are off (h2 has its own framing and limits).
    pub fn http2(inner: Stream, preface_timeout: Duration) -> Self {
        let mut stream = ClientStream::new(inner, preface_timeout);
        stream.tracker.get_mut().stop();
        stream.http2 = true;
        stream.preface_left = H2_PREFACE.len();
        stream
    }

    /// The proxy parsed a head of `head_len` bytes framed as `framing` (see [`Tracker::announce`]).
    pub fn announce(&self, head_len: usize, framing: BodyFraming) -> Result<(), Violation> {
        self.tracker.lock().announce(head_len, framing)
    }

    /// The connection switched protocols: its bytes are no longer HTTP/1 messages.
    pub fn upgraded(&self) {
        self.tracker.lock().stop();
    }

    /// The body framing violation that broke the connection, if that is what happened.
    pub fn violation(&self) -> Option<Violation> {
        self.violation
    }

    /// Drops the deadline once the head it was set for has been announced.
    fn follow_heads(&mut self) {
        let heads = self.tracker.get_mut().heads();
        if heads != self.heads {
            self.heads = heads;
            self.deadline = None;
            self.timer = None;
        }
    }

    /// A read must wait. While a request head is incomplete the wait is bounded: the deadline is
    /// set at the first wait inside a head (reads that find the whole head never look at the
    /// clock), and once it passes the connection fails.
    fn poll_deadline(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.preface_left > 0 {
            return self.poll_preface_deadline(cx);
        }
        self.follow_heads();
        let tracker = self.tracker.get_mut();
        if tracker.is_off() {
            // An upgraded or HTTP/2 connection: no request heads to wait for.
            self.deadline = None;
            self.timer = None;
            return Poll::Pending;
        }
        let deadline = match self.deadline {
            Some(deadline) => deadline,
            None if tracker.head_in_progress() => {
                let deadline = Instant::now() + self.header_timeout;
                self.deadline = Some(deadline);
                deadline
            }
            None => return Poll::Pending,
        };
        if !self.expired(cx, deadline) {
            return Poll::Pending;
        }
        let started = self.tracker.get_mut().head_in_progress();
        self.tracker.get_mut().stop();
        metrics::client_timeout(metrics::ClientTimeout::Header);
        if started {
            self.answer_timeout(cx);
        }
        Poll::Ready(Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!(
                "the request head was not received within {:?} (server.header_read_timeout)",
                self.header_timeout
            ),
        )))
    }

    /// Whether `deadline` has passed (then it is cleared); else the task wakes when it does.
    fn expired(&mut self, cx: &mut Context<'_>, deadline: Instant) -> bool {
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if timer.as_mut().poll(cx).is_pending() {
            return false;
        }
        self.deadline = None;
        self.timer = None;
        true
    }

    /// An HTTP/2 client that connects and never sends its preface holds nothing for long.
    fn poll_preface_deadline(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let Some(deadline) = self.deadline else {
            return Poll::Pending;
        };
        if !self.expired(cx, deadline) {
            return Poll::Pending;
        }
        metrics::client_timeout(metrics::ClientTimeout::Header);
        Poll::Ready(Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!(
                "the HTTP/2 connection preface was not received within {:?} (server.header_read_timeout)",
                self.header_timeout
            ),
        )))
    }

    /// Best effort: a 408 the client can read before the connection closes.
    fn answer_timeout(&mut self, cx: &mut Context<'_>) {
        let id = crate::gateway::ctx::RequestId::generate();
        let body = crate::gateway::respond::error_body(
            408,
            "the request head was not received in time",
            id.as_str(),
        );
        let mut response = Vec::with_capacity(160 + body.len());
        response.extend_from_slice(b"HTTP/1.1 408 Request Timeout\r\nContent-Type: application/json\r\nConnection: close\r\nX-Request-ID: ");
        response.extend_from_slice(id.as_str().as_bytes());
        response.extend_from_slice(b"\r\nContent-Length: ");
        response.extend_from_slice(itoa::Buffer::new().format(body.len()).as_bytes());
        response.extend_from_slice(b"\r\n\r\n");
        response.extend_from_slice(body.as_bytes());
        if let Poll::Ready(Ok(_)) = self.out.poll_write(&mut self.inner, cx, &response) {
            let _ = self.out.poll_flush(&mut self.inner, cx);
        }
    }
}

impl AsyncRead for ClientStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        // Already seen by the tracker when it was read.
        if hand_out_held(&mut this.pending, buf) {
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if this.preface_left > 0 {
                    let read = buf.filled().len() - before;
                    this.preface_left = this.preface_left.saturating_sub(read);
                    if this.preface_left == 0 || read == 0 {
                        this.preface_left = 0;
                        this.deadline = None;
                        this.timer = None;
                    }
                }
                let tracker = this.tracker.get_mut();
                if tracker.is_off() {
                    return Poll::Ready(Ok(()));
                }
                // (The head deadline is looked at only when a read has to wait.)
                if let Err(violation) = tracker.feed(&buf.filled()[before..]) {
                    // The offending bytes never reach Pingora's parser.
                    buf.set_filled(before);
                    this.violation = Some(violation);
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        violation.message(),
                    )));
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending => match this.poll_exchange_deadline(cx) {
                Poll::Ready(expired) => Poll::Ready(Err(expired)),
                Poll::Pending => this.poll_deadline(cx),
            },
            failed => failed,
        }
    }
}

impl AsyncWrite for ClientStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().poll_write_patched(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.date_patch.is_some() || this.keep_date.get_mut().is_some() {
            // Rare (a head being patched): one slice at a time, through the patching write.
            let first = bufs
                .iter()
                .find(|b| !b.is_empty())
                .map_or(&[][..], |b| &b[..]);
            return this.poll_write_patched(cx, first);
        }
        let result = this.out.poll_write_vectored(&mut this.inner, cx, bufs);
        if let Poll::Ready(Ok(written)) = result {
            this.written += written as u64;
        }
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.out.poll_flush(&mut this.inner, cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.out.poll_shutdown(&mut this.inner, cx)
    }
}

impl Drop for ClientStream {
    /// Pingora drops a failed request's connection without flushing it; its socket sent what it
    /// had buffered if the socket took it at once, and so does this.
    fn drop(&mut self) {
        if !self.out.is_empty() {
            let mut cx = Context::from_waker(std::task::Waker::noop());
            let _ = self.out.poll_drain(&mut self.inner, &mut cx);
        }
    }
}

#[async_trait::async_trait]
impl pingora_core::protocols::Shutdown for ClientStream {
    /// What waits is sent first (Pingora's buffered socket flushed itself the same way).
    async fn shutdown(&mut self) {
        let (out, inner) = (&mut self.out, &mut self.inner);
        if !out.is_empty()
            && std::future::poll_fn(|cx| out.poll_drain(inner, cx))
                .await
                .is_err()
        {
            log::debug!("a response's last bytes could not be sent before the close");
        }
        self.inner.shutdown().await;
    }
}

impl Ssl for ClientStream {
    fn get_ssl(&self) -> Option<&TlsRef> {
        self.inner.get_ssl()
    }

    fn get_ssl_digest(&self) -> Option<Arc<SslDigest>> {
        self.inner.get_ssl_digest()
    }

    fn selected_alpn_proto(&self) -> Option<ALPN> {
        if self.http2 {
            // Also for h2c with prior knowledge: this is what sends Pingora down its h2 path.
            return Some(ALPN::H2);
        }
        self.inner.selected_alpn_proto()
    }
}

/// Implements the stream traits that a wrapper passes straight to its `inner` stream: the id,
/// the timing, proxy and socket digests, and peeking (`no_peek`: the wrapper's bytes are not the
/// inner stream's, so it does not peek).
macro_rules! pass_through_stream_traits {
    ($wrapper:ty) => {
        pass_through_stream_traits!($wrapper, no_peek);

        #[async_trait::async_trait]
        impl pingora_core::protocols::Peek for $wrapper {
            async fn try_peek(&mut self, buf: &mut [u8]) -> std::io::Result<bool> {
                self.inner.try_peek(buf).await
            }
        }
    };
    ($wrapper:ty, no_peek) => {
        const _: () = {
            use pingora_core::protocols::raw_connect::ProxyDigest;
            use pingora_core::protocols::{
                GetProxyDigest, GetSocketDigest, GetTimingDigest, SocketDigest, TimingDigest,
                UniqueID, UniqueIDType,
            };
            use std::sync::Arc;
            use std::time::Duration;

            impl UniqueID for $wrapper {
                fn id(&self) -> UniqueIDType {
                    self.inner.id()
                }
            }

            impl GetTimingDigest for $wrapper {
                fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
                    self.inner.get_timing_digest()
                }

                fn get_read_pending_time(&self) -> Duration {
                    self.inner.get_read_pending_time()
                }

                fn get_write_pending_time(&self) -> Duration {
                    self.inner.get_write_pending_time()
                }
            }

            impl GetProxyDigest for $wrapper {
                fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
                    self.inner.get_proxy_digest()
                }

                fn set_proxy_digest(&mut self, digest: ProxyDigest) {
                    self.inner.set_proxy_digest(digest);
                }
            }

            impl GetSocketDigest for $wrapper {
                fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
                    self.inner.get_socket_digest()
                }

                fn set_socket_digest(&mut self, digest: SocketDigest) {
                    self.inner.set_socket_digest(digest);
                }
            }
        };
    };
}
pub(crate) use pass_through_stream_traits;

pass_through_stream_traits!(ClientStream);
