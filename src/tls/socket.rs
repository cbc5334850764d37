//! The client's socket under OpenSSL. OpenSSL reads a record's 5-byte header, then its body;
//! unbuffered, that is two `recv`s per record, and a buffer in the stream (Pingora's) costs its
//! full size for as long as the connection lives, idle or not. Here a short read takes a gulp of
//! up to [`GULP`] bytes into a per-thread scratch buffer, hands OpenSSL what it asked for, and
//! keeps only the rest, in an allocation that is freed as soon as OpenSSL has taken it. An idle
//! TLS client therefore holds no read buffer at all.

use crate::listener::stream::{hand_out_held, pass_through_stream_traits};
use pingora_core::protocols::l4::stream::Stream as L4Stream;
use pingora_core::protocols::{Shutdown, Ssl};
use std::cell::RefCell;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The most one short read takes from the socket (what a TLS 1.3 resumption's whole client
/// flight, or a request of a few headers, fits in).
pub const GULP: usize = 4096;

thread_local! {
    /// Where a gulp lands first; the part OpenSSL did not ask for is copied out of it.
    static SCRATCH: RefCell<[u8; GULP]> = const { RefCell::new([0; GULP]) };
}

/// A TCP client connection that OpenSSL reads through.
#[derive(Debug)]
pub struct TlsSocket {
    inner: L4Stream,
    /// Bytes read from the socket that OpenSSL has not taken yet (never empty when present).
    unread: Option<bytes::Bytes>,
}

impl TlsSocket {
    /// Wraps an accepted connection whose Pingora stream is unbuffered on the read side.
    pub fn new(inner: L4Stream) -> Self {
        TlsSocket {
            inner,
            unread: None,
        }
    }
}

impl AsyncRead for TlsSocket {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if hand_out_held(&mut this.unread, buf) {
            return Poll::Ready(Ok(()));
        }
        if buf.remaining() >= GULP {
            return Pin::new(&mut this.inner).poll_read(cx, buf);
        }
        SCRATCH.with(|scratch| {
            // Never borrowed across a poll, so never busy; if it were, read straight through.
            let Ok(mut scratch) = scratch.try_borrow_mut() else {
                return Pin::new(&mut this.inner).poll_read(cx, buf);
            };
            let mut gulp = ReadBuf::new(&mut scratch[..]);
            ready!(Pin::new(&mut this.inner).poll_read(cx, &mut gulp))?;
            let got = gulp.filled();
            let give = got.len().min(buf.remaining());
            buf.put_slice(&got[..give]);
            if give < got.len() {
                this.unread = Some(bytes::Bytes::copy_from_slice(&got[give..]));
            }
            Poll::Ready(Ok(()))
        })
    }
}

impl AsyncWrite for TlsSocket {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

impl Ssl for TlsSocket {}

#[async_trait::async_trait]
impl Shutdown for TlsSocket {
    async fn shutdown(&mut self) {
        self.inner.shutdown().await;
    }
}

pass_through_stream_traits!(TlsSocket);

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A socket pair: the peer's end and ours, not wrapped yet.
    async fn pair() -> (tokio::net::TcpStream, tokio::net::TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let peer = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (ours, _) = listener.accept().await.unwrap();
        (peer, ours)
    }

    /// Waits (with a deadline) until `n` bytes are readable on `ours`.
    async fn until_readable(ours: &tokio::net::TcpStream, n: usize) {
        let mut probe = vec![0u8; n];
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        while ours.peek(&mut probe).await.unwrap() < n {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{n} bytes never arrived"
            );
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn short_reads_are_served_from_one_gulp_and_keep_nothing_once_taken() {
        let (mut peer, ours) = pair().await;
        let sent: Vec<u8> = (0..3000u32).map(|i| (i % 251) as u8).collect();
        peer.write_all(&sent).await.unwrap();
        // The whole write is readable, so the first gulp takes all of it.
        until_readable(&ours, sent.len()).await;
        let mut socket = TlsSocket::new(L4Stream::from(ours));
        let mut header = [0u8; 5];
        socket.read_exact(&mut header).await.unwrap();
        assert_eq!(header[..], sent[..5]);
        assert_eq!(socket.unread.as_ref().map(|u| u.len()), Some(2995));
        let mut rest = vec![0u8; 2995];
        socket.read_exact(&mut rest).await.unwrap();
        assert_eq!(rest[..], sent[5..]);
        assert!(socket.unread.is_none(), "drained bytes are freed");
    }

    #[tokio::test]
    async fn large_reads_go_straight_to_the_caller() {
        let (mut peer, ours) = pair().await;
        let mut socket = TlsSocket::new(L4Stream::from(ours));
        peer.write_all(&[7u8; 100]).await.unwrap();
        let mut big = vec![0u8; GULP];
        let read = socket.read(&mut big).await.unwrap();
        assert!(read > 0 && big[..read].iter().all(|&b| b == 7));
        assert!(socket.unread.is_none());
    }

    #[tokio::test]
    async fn the_peer_closing_reads_as_the_end() {
        let (peer, ours) = pair().await;
        let mut socket = TlsSocket::new(L4Stream::from(ours));
        drop(peer);
        let mut small = [0u8; 5];
        assert_eq!(socket.read(&mut small).await.unwrap(), 0);
    }
}
