//! Writing HTTP/1.1: message heads serialised into one buffer, and an outbox of byte
//! chunks sent with vectored writes, so a head and a short body leave in one system call;
//! a body streamed behind its head, framed by length or in chunks.

use super::chunked::{last_chunk_with, size_line, LAST_CHUNK};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::{HeaderMap, Method, StatusCode};
use http_body::Body;
use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use tokio::io::AsyncWrite;

/// How much body is gathered before it is written.
const GATHER: usize = 64 * 1024;

/// How a message's body is framed on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    /// Exactly this many bytes.
    Length(u64),
    Chunked,
    /// Until the connection closes (responses to HTTP/1.0 clients).
    Close,
}

/// Why a message could not be sent whole.
#[derive(Debug)]
pub enum SendFailure<E> {
    /// The body failed.
    Body(E),
    /// The connection failed, or the body did not match its declared length.
    Io(io::Error),
}

/// A message head and its body on their way out, written as the body yields data.
#[derive(Debug)]
pub struct BodySender<B> {
    outbox: Outbox,
    body: Option<B>,
    framing: BodyFraming,
    /// Everything was written and flushed.
    sent: bool,
    /// A frame of the body was taken: it cannot be sent again.
    touched: bool,
}

impl<B> BodySender<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    /// `body` is `None` when the message has none. `outbox` is an empty one to reuse
    /// (see [`BodySender::take_outbox`]).
    pub fn new(mut outbox: Outbox, head: Bytes, body: Option<B>, framing: BodyFraming) -> Self {
        outbox.clear();
        outbox.push(head);
        if body.is_none() && framing == BodyFraming::Chunked {
            // A chunked message without a body still ends with the last chunk.
            outbox.push_static(LAST_CHUNK);
        }
        BodySender {
            outbox,
            body,
            framing,
            sent: false,
            touched: false,
        }
    }

    pub fn is_sent(&self) -> bool {
        self.sent
    }

    /// The outbox, emptied, to send the next message with.
    pub fn take_outbox(&mut self) -> Outbox {
        let mut outbox = std::mem::take(&mut self.outbox);
        outbox.clear();
        outbox
    }

    pub fn is_touched(&self) -> bool {
        self.touched
    }

    /// The body still to send (or the one that failed).
    pub fn body(&self) -> Option<&B> {
        self.body.as_ref()
    }

    /// Whether any byte of the message reached the connection.
    pub fn has_written(&self) -> bool {
        self.outbox.wrote
    }

    /// When the connection would take no more of what waits: the bytes written so far
    /// (a mark that moves when it takes some again). `None` while it takes them, or
    /// while the sender waits on the body instead.
    pub fn stalled(&self) -> Option<u64> {
        (self.outbox.blocked && !self.outbox.is_empty()).then_some(self.outbox.written)
    }

    /// The body, when none of it was taken yet.
    pub fn untouched_body(&mut self) -> Option<B> {
        if self.touched {
            return None;
        }
        self.body.take()
    }

    /// Writes as much as can go now; `Ready(Ok)` once all of it is written and flushed.
    pub fn poll_send<S: AsyncWrite + Unpin>(
        &mut self,
        io: &mut S,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), SendFailure<B::Error>>> {
        while !self.sent {
            let waiting = self.gather(cx)?;
            ready!(self.outbox.poll_write(io, cx)).map_err(SendFailure::Io)?;
            if self.body.is_some() && !waiting {
                continue;
            }
            // Flushed whenever the body has to wait (TLS holds records until then).
            ready!(Pin::new(&mut *io).poll_flush(cx)).map_err(SendFailure::Io)?;
            if self.body.is_some() {
                return Poll::Pending;
            }
            self.sent = true;
        }
        Poll::Ready(Ok(()))
    }

    /// Queues what the body has ready; `true` when it has to wait for more.
    fn gather(&mut self, cx: &mut Context<'_>) -> Result<bool, SendFailure<B::Error>> {
        while self.outbox.len() < GATHER {
            let Some(body) = self.body.as_mut() else {
                return Ok(false);
            };
            let frame = match Pin::new(body).poll_frame(cx) {
                Poll::Pending => return Ok(true),
                Poll::Ready(None) => {
                    self.end(None)?;
                    continue;
                }
                // The failed body stays, for the caller to look at (see `body`).
                Poll::Ready(Some(Err(e))) => return Err(SendFailure::Body(e)),
                Poll::Ready(Some(Ok(frame))) => frame,
            };
            self.touched = true;
            match frame.into_data() {
                Ok(data) => self.data(data)?,
                Err(frame) => {
                    if let Ok(trailers) = frame.into_trailers() {
                        self.end(Some(&trailers))?;
                    }
                }
            }
        }
        Ok(false)
    }

    fn data(&mut self, data: Bytes) -> Result<(), SendFailure<B::Error>> {
        if data.is_empty() {
            return Ok(());
        }
        match &mut self.framing {
            BodyFraming::Chunked => {
                self.outbox.push(size_line(data.len()));
                self.outbox.push(data);
                self.outbox.push_static(b"\r\n");
            }
            BodyFraming::Length(left) => {
                *left = left.checked_sub(data.len() as u64).ok_or_else(|| {
                    SendFailure::Io(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "the body is longer than its Content-Length",
                    ))
                })?;
                self.outbox.push(data);
            }
            BodyFraming::Close => self.outbox.push(data),
        }
        Ok(())
    }

    /// The body ended, with `trailers` if it had them (sent only in chunked framing).
    fn end(&mut self, trailers: Option<&HeaderMap>) -> Result<(), SendFailure<B::Error>> {
        self.body = None;
        match (self.framing, trailers) {
            (BodyFraming::Chunked, None) => self.outbox.push_static(LAST_CHUNK),
            (BodyFraming::Chunked, Some(trailers)) => self.outbox.push(last_chunk_with(trailers)),
            (BodyFraming::Length(left), _) if left > 0 => {
                return Err(SendFailure::Io(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the body is shorter than its Content-Length",
                )))
            }
            _ => {}
        }
        Ok(())
    }
}

/// The most slices handed to one vectored write.
const MAX_SLICES: usize = 16;

/// Bytes waiting to be written, in order.
#[derive(Debug, Default)]
pub struct Outbox {
    queue: VecDeque<Bytes>,
    queued: usize,
    /// Some bytes were written since the last `clear`.
    wrote: bool,
    /// Bytes written over the outbox's life.
    written: u64,
    /// The last write found the connection full: it took nothing more.
    blocked: bool,
}

impl Outbox {
    pub fn push(&mut self, bytes: Bytes) {
        if !bytes.is_empty() {
            self.queued += bytes.len();
            self.queue.push_back(bytes);
        }
    }

    pub fn push_static(&mut self, bytes: &'static [u8]) {
        self.push(Bytes::from_static(bytes));
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Drops whatever waits, keeping the room.
    pub fn clear(&mut self) {
        self.queue.clear();
        self.queued = 0;
        self.wrote = false;
        self.blocked = false;
    }

    /// How many bytes wait.
    pub fn len(&self) -> usize {
        self.queued
    }

    /// Writes everything queued; `Ready(Ok)` once the outbox is empty.
    pub fn poll_write<S: AsyncWrite + Unpin>(
        &mut self,
        io: &mut S,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<()>> {
        while !self.queue.is_empty() {
            let polled = if self.queue.len() == 1 || !io.is_write_vectored() {
                Pin::new(&mut *io).poll_write(cx, &self.queue[0])
            } else {
                let mut slices = [IoSlice::new(&[]); MAX_SLICES];
                let n = self.queue.len().min(MAX_SLICES);
                for (slice, bytes) in slices.iter_mut().zip(self.queue.iter()) {
                    *slice = IoSlice::new(bytes);
                }
                Pin::new(&mut *io).poll_write_vectored(cx, &slices[..n])
            };
            let Poll::Ready(written) = polled else {
                self.blocked = true;
                return Poll::Pending;
            };
            let written = written?;
            if written == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.advance(written);
        }
        Poll::Ready(Ok(()))
    }

    fn advance(&mut self, mut n: usize) {
        self.wrote = true;
        self.blocked = false;
        self.written += n as u64;
        self.queued -= n;
        while n > 0 {
            let Some(front) = self.queue.front_mut() else {
                return;
            };
            if n < front.len() {
                front.advance(n);
                return;
            }
            n -= front.len();
            self.queue.pop_front();
        }
    }
}

/// `METHOD target HTTP/1.1\r\n`.
pub fn request_line(buf: &mut BytesMut, method: &Method, target: &str) {
    buf.put_slice(method.as_str().as_bytes());
    buf.put_u8(b' ');
    buf.put_slice(target.as_bytes());
    buf.put_slice(b" HTTP/1.1\r\n");
}

/// `HTTP/1.1 code reason\r\n`.
pub fn status_line(buf: &mut BytesMut, status: StatusCode) {
    buf.put_slice(b"HTTP/1.1 ");
    buf.put_slice(status.as_str().as_bytes());
    buf.put_u8(b' ');
    buf.put_slice(status.canonical_reason().unwrap_or("").as_bytes());
    buf.put_slice(b"\r\n");
}

/// `content-length: n\r\n`.
pub fn content_length(buf: &mut BytesMut, n: u64) {
    buf.put_slice(b"content-length: ");
    buf.put_slice(itoa::Buffer::new().format(n).as_bytes());
    buf.put_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, Full, StreamBody};

    /// A writer that takes at most `max` bytes a call.
    struct Trickle {
        out: Vec<u8>,
        max: usize,
    }

    impl AsyncWrite for Trickle {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            let n = buf.len().min(self.max);
            self.out.extend_from_slice(&buf[..n]);
            Poll::Ready(Ok(n))
        }
        fn poll_write_vectored(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            bufs: &[IoSlice<'_>],
        ) -> Poll<io::Result<usize>> {
            let mut left = self.max;
            let mut n = 0;
            for b in bufs {
                let take = b.len().min(left);
                self.out.extend_from_slice(&b[..take]);
                left -= take;
                n += take;
            }
            Poll::Ready(Ok(n))
        }
        fn is_write_vectored(&self) -> bool {
            true
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    fn send_all<B: Body<Data = Bytes> + Unpin>(body: B, framing: BodyFraming) -> (Vec<u8>, bool)
    where
        B::Error: std::fmt::Debug,
    {
        let mut sender = BodySender::new(
            Outbox::default(),
            Bytes::from_static(b"HEAD\r\n"),
            Some(body),
            framing,
        );
        let mut io = Trickle {
            out: Vec::new(),
            max: 5,
        };
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let ok = matches!(sender.poll_send(&mut io, &mut cx), Poll::Ready(Ok(())));
        (io.out, ok)
    }

    #[test]
    fn bodies_are_framed_by_length_or_chunks() {
        let frames = || {
            let frames: Vec<Result<http_body::Frame<Bytes>, std::convert::Infallible>> = vec![
                Ok(http_body::Frame::data(Bytes::from_static(b"hello"))),
                Ok(http_body::Frame::data(Bytes::from_static(b" world"))),
                Ok(http_body::Frame::trailers(HeaderMap::from_iter([(
                    http::header::HeaderName::from_static("x-sum"),
                    http::HeaderValue::from_static("1"),
                )]))),
            ];
            StreamBody::new(futures_stream(frames))
        };
        assert_eq!(
            send_all(frames(), BodyFraming::Chunked),
            (
                b"HEAD\r\n5\r\nhello\r\n6\r\n world\r\n0\r\nx-sum: 1\r\n\r\n".to_vec(),
                true
            )
        );
        assert_eq!(
            send_all(frames(), BodyFraming::Length(11)),
            (b"HEAD\r\nhello world".to_vec(), true)
        );
        // A body that does not match its length never completes.
        assert!(!send_all(frames(), BodyFraming::Length(12)).1);
        assert!(
            !send_all(
                Full::new(Bytes::from_static(b"hello")),
                BodyFraming::Length(4)
            )
            .1
        );
        assert!(send_all(Full::new(Bytes::new()).boxed(), BodyFraming::Length(0)).1);
    }

    /// A stream over `items`, ready at once.
    fn futures_stream<T: Unpin>(items: Vec<T>) -> impl futures_core::Stream<Item = T> + Unpin {
        struct Iter<T>(std::vec::IntoIter<T>);
        impl<T: Unpin> futures_core::Stream for Iter<T> {
            type Item = T;
            fn poll_next(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<T>> {
                Poll::Ready(self.0.next())
            }
        }
        Iter(items.into_iter())
    }

    #[test]
    fn partial_writes_keep_order() {
        for max in [1, 3, 7, 100] {
            let mut outbox = Outbox::default();
            outbox.push_static(b"HTTP/1.1 200 OK\r\n\r\n");
            outbox.push(Bytes::from_static(b"hello"));
            outbox.push(Bytes::new());
            outbox.push_static(b" world");
            let mut io = Trickle {
                out: Vec::new(),
                max,
            };
            let mut cx = Context::from_waker(std::task::Waker::noop());
            assert!(outbox.poll_write(&mut io, &mut cx).is_ready());
            assert_eq!(io.out, b"HTTP/1.1 200 OK\r\n\r\nhello world");
            assert!(outbox.is_empty());
            assert_eq!(outbox.len(), 0);
        }
    }
}
