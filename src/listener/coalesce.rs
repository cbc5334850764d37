//! Small writes to a client gathered into one send, as a `BufWriter` gathers them (a response head
//! and a short body leave in one segment, and under TLS in one record), except that the buffer
//! exists only while bytes wait in it: an idle connection holds none. Pingora's own socket write
//! buffer would be allocated for every connection for its whole life.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use tokio::io::AsyncWrite;

/// Writes shorter than this are gathered; a gathered run is sent once it would pass it (one
/// Ethernet segment's payload, Pingora's default write buffer).
pub const COALESCE: usize = 1460;

/// The bytes written but not sent yet.
#[derive(Debug, Default)]
pub struct Coalescer {
    pending: Vec<u8>,
}

impl Coalescer {
    /// Whether no bytes wait (so a direct write to the stream keeps the order).
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// Sends what waits, then frees its buffer.
    pub fn poll_drain<W: AsyncWrite + Unpin + ?Sized>(
        &mut self,
        inner: &mut W,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<()>> {
        while !self.pending.is_empty() {
            let sent = ready!(Pin::new(&mut *inner).poll_write(cx, &self.pending))?;
            if sent == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.pending.drain(..sent);
        }
        self.pending = Vec::new();
        Poll::Ready(Ok(()))
    }

    /// Gathers `buf` when it is short, else sends what waits and then `buf` itself.
    pub fn poll_write<W: AsyncWrite + Unpin + ?Sized>(
        &mut self,
        inner: &mut W,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.pending.len() + buf.len() > COALESCE {
            ready!(self.poll_drain(inner, cx))?;
        }
        if buf.len() >= COALESCE {
            return Pin::new(inner).poll_write(cx, buf);
        }
        self.gather([buf]);
        Poll::Ready(Ok(buf.len()))
    }

    /// [`Self::poll_write`] for several slices.
    pub fn poll_write_vectored<W: AsyncWrite + Unpin + ?Sized>(
        &mut self,
        inner: &mut W,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let total = bufs.iter().map(|b| b.len()).sum::<usize>();
        if self.pending.len() + total > COALESCE {
            ready!(self.poll_drain(inner, cx))?;
        }
        if total >= COALESCE {
            return Pin::new(inner).poll_write_vectored(cx, bufs);
        }
        self.gather(bufs.iter().map(|b| &**b));
        Poll::Ready(Ok(total))
    }

    /// Sends what waits, then flushes the stream.
    pub fn poll_flush<W: AsyncWrite + Unpin + ?Sized>(
        &mut self,
        inner: &mut W,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<()>> {
        ready!(self.poll_drain(inner, cx))?;
        Pin::new(inner).poll_flush(cx)
    }

    /// Sends what waits, then shuts the stream's write side.
    pub fn poll_shutdown<W: AsyncWrite + Unpin + ?Sized>(
        &mut self,
        inner: &mut W,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<()>> {
        ready!(self.poll_drain(inner, cx))?;
        Pin::new(inner).poll_shutdown(cx)
    }

    fn gather<'a>(&mut self, parts: impl IntoIterator<Item = &'a [u8]>) {
        if self.pending.capacity() == 0 {
            self.pending.reserve_exact(COALESCE);
        }
        for part in parts {
            self.pending.extend_from_slice(part);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::poll_fn;

    /// A stream that records each write as one send, taking at most `limit` bytes of it.
    #[derive(Default)]
    struct Sends {
        sends: Vec<Vec<u8>>,
        limit: Option<usize>,
        flushes: usize,
    }

    impl AsyncWrite for Sends {
        fn poll_write(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            let this = self.get_mut();
            let take = this.limit.map_or(buf.len(), |l| l.min(buf.len()));
            this.sends.push(buf[..take].to_vec());
            Poll::Ready(Ok(take))
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            self.get_mut().flushes += 1;
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    async fn write(c: &mut Coalescer, s: &mut Sends, buf: &[u8]) -> usize {
        poll_fn(|cx| c.poll_write(s, cx, buf)).await.unwrap()
    }

    async fn flush(c: &mut Coalescer, s: &mut Sends) {
        poll_fn(|cx| c.poll_flush(s, cx)).await.unwrap()
    }

    #[tokio::test]
    async fn a_head_and_a_short_body_leave_in_one_send_and_the_buffer_goes() {
        let (mut c, mut s) = (Coalescer::default(), Sends::default());
        assert_eq!(write(&mut c, &mut s, b"HTTP/1.1 200 OK\r\n\r\n").await, 19);
        assert_eq!(write(&mut c, &mut s, b"hello").await, 5);
        assert!(s.sends.is_empty(), "nothing is sent before the flush");
        flush(&mut c, &mut s).await;
        assert_eq!(s.sends, vec![b"HTTP/1.1 200 OK\r\n\r\nhello".to_vec()]);
        assert_eq!(s.flushes, 1);
        assert_eq!(
            c.pending.capacity(),
            0,
            "an idle connection holds no buffer"
        );
    }

    #[tokio::test]
    async fn a_large_write_follows_what_waits_and_is_not_copied() {
        let (mut c, mut s) = (Coalescer::default(), Sends::default());
        write(&mut c, &mut s, b"head").await;
        let body = vec![b'x'; COALESCE];
        assert_eq!(write(&mut c, &mut s, &body).await, COALESCE);
        assert_eq!(s.sends, vec![b"head".to_vec(), body]);
        assert!(c.is_empty());
    }

    #[tokio::test]
    async fn short_writes_past_the_limit_send_the_gathered_run_first() {
        let (mut c, mut s) = (Coalescer::default(), Sends::default());
        let chunk = vec![b'a'; 1000];
        write(&mut c, &mut s, &chunk).await;
        write(&mut c, &mut s, &chunk).await;
        assert_eq!(s.sends, vec![chunk.clone()]);
        flush(&mut c, &mut s).await;
        assert_eq!(s.sends, vec![chunk.clone(), chunk]);
    }

    #[tokio::test]
    async fn partial_sends_keep_the_order_of_the_bytes() {
        let (mut c, mut s) = (Coalescer::default(), Sends::default());
        s.limit = Some(3);
        write(&mut c, &mut s, b"abcdefgh").await;
        flush(&mut c, &mut s).await;
        assert_eq!(s.sends.concat(), b"abcdefgh");
        assert_eq!(s.sends.len(), 3);
    }

    #[tokio::test]
    async fn vectored_writes_are_gathered_whole() {
        let (mut c, mut s) = (Coalescer::default(), Sends::default());
        let slices = [io::IoSlice::new(b"Date: "), io::IoSlice::new(b"now\r\n")];
        let wrote = poll_fn(|cx| c.poll_write_vectored(&mut s, cx, &slices))
            .await
            .unwrap();
        assert_eq!(wrote, 11);
        flush(&mut c, &mut s).await;
        assert_eq!(s.sends, vec![b"Date: now\r\n".to_vec()]);
    }
}
