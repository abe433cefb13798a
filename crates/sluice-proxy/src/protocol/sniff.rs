//! Tells HTTP/2 with prior knowledge from HTTP/1.1 by the connection's first bytes, and
//! replays those bytes to whichever server takes the connection.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

/// The client preface every HTTP/2 connection starts with (RFC 9113, 3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// The protocol a connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Http1,
    Http2,
}

/// Reads until the first bytes decide the protocol. `None` when the client closed first.
pub async fn sniff<S: AsyncRead + Unpin>(
    mut stream: S,
) -> io::Result<Option<(Protocol, Prefixed<S>)>> {
    let mut buf = Vec::with_capacity(4096);
    loop {
        if stream.read_buf(&mut buf).await? == 0 {
            return Ok(None);
        }
        let seen = buf.len().min(H2_PREFACE.len());
        let protocol = if buf[..seen] != H2_PREFACE[..seen] {
            Protocol::Http1
        } else if seen == H2_PREFACE.len() {
            Protocol::Http2
        } else {
            continue;
        };
        return Ok(Some((
            protocol,
            Prefixed {
                prefix: buf,
                read: 0,
                inner: stream,
            },
        )));
    }
}

/// A stream whose first bytes were already read: they are returned again first.
#[derive(Debug)]
pub struct Prefixed<S> {
    prefix: Vec<u8>,
    read: usize,
    inner: S,
}

impl<S> Prefixed<S> {
    /// `inner`, with `prefix` read from it already.
    pub fn new(prefix: Vec<u8>, inner: S) -> Self {
        Prefixed {
            prefix,
            read: 0,
            inner,
        }
    }

    /// The stream under the replayed bytes.
    pub fn inner(&self) -> &S {
        &self.inner
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.read < this.prefix.len() {
            let rest = &this.prefix[this.read..];
            let n = rest.len().min(buf.remaining());
            buf.put_slice(&rest[..n]);
            this.read += n;
            if this.read == this.prefix.len() {
                this.prefix = Vec::new();
                this.read = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
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

#[cfg(test)]
mod tests {
    use super::*;

    async fn sniffed(chunks: &[&[u8]]) -> Option<(Protocol, Vec<u8>)> {
        let mut mock = tokio_test_stream(chunks);
        let (protocol, mut stream) = sniff(&mut mock).await.expect("io")?;
        let mut all = Vec::new();
        stream.read_to_end(&mut all).await.expect("read");
        Some((protocol, all))
    }

    /// An in-memory stream that yields `chunks` one read at a time.
    fn tokio_test_stream(chunks: &[&[u8]]) -> impl AsyncRead + Unpin {
        let (mut tx, rx) = tokio::io::duplex(64 * 1024);
        let chunks: Vec<Vec<u8>> = chunks.iter().map(|c| c.to_vec()).collect();
        tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            for c in chunks {
                let _ = tx.write_all(&c).await;
                tokio::task::yield_now().await;
            }
        });
        rx
    }

    #[tokio::test]
    async fn tells_protocols_apart_and_replays_every_byte() {
        let h1: &[u8] = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";
        assert_eq!(sniffed(&[h1]).await, Some((Protocol::Http1, h1.to_vec())));
        let mut h2 = H2_PREFACE.to_vec();
        h2.extend_from_slice(b"\x00\x00\x00\x04\x00\x00\x00\x00\x00");
        assert_eq!(
            sniffed(&[&h2[..5], &h2[5..20], &h2[20..]]).await,
            Some((Protocol::Http2, h2.clone()))
        );
        assert_eq!(
            sniffed(&[b"PRI * HTTP/1.1\r\n"]).await.map(|(p, _)| p),
            Some(Protocol::Http1)
        );
        assert_eq!(sniffed(&[b"PRI"]).await, None);
        assert_eq!(sniffed(&[]).await, None);
    }
}
