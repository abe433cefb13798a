//! A client connection that counts its bytes and itself in the gateway's metrics.

use crate::metrics::Metrics;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Wraps an accepted stream; counted in `active_connections` until dropped.
#[derive(Debug)]
pub struct CountingIo<S> {
    stream: S,
    metrics: Arc<Metrics>,
}

impl<S> CountingIo<S> {
    pub fn new(stream: S, metrics: Arc<Metrics>) -> Self {
        metrics.active_connections.inc();
        CountingIo { stream, metrics }
    }
}

impl<S> Drop for CountingIo<S> {
    fn drop(&mut self) {
        self.metrics.active_connections.dec();
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for CountingIo<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.stream).poll_read(cx, buf);
        let read = buf.filled().len() - before;
        if read > 0 {
            this.metrics.bytes_received.inc_by(read as u64);
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for CountingIo<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.stream).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = &polled {
            this.metrics.bytes_sent.inc_by(*n as u64);
        }
        polled
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.stream).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = &polled {
            this.metrics.bytes_sent.inc_by(*n as u64);
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

/// A transport that can end a connection with a reset.
pub trait Reset {
    /// Makes the next close a reset; nothing where the transport has none.
    fn reset(&self) {}
}

/// A TCP connection can end with a reset, which tells a client that a body it read until
/// the close was cut short.
impl Reset for tokio::net::TcpStream {
    fn reset(&self) {
        if let Err(e) = self.set_zero_linger() {
            tracing::debug!("could not set the connection to reset on close: {e}");
        }
    }
}

impl Reset for tokio::net::UnixStream {}

impl<S: AsyncRead + AsyncWrite + Unpin + Send + Reset> crate::protocol::http1::Io
    for CountingIo<S>
{
    fn abort(&self) {
        self.stream.reset();
    }
}
