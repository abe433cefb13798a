//! The request body sent to a target: the client's, streamed, with `Content-Length` held
//! to, or bytes the gateway holds (health checks, replayed retries). The chunk that
//! completes the declared length is held back until the client's stream has really
//! ended, so a client that sends more than it declared (possible over HTTP/2) aborts the
//! upstream request instead of completing it.

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use std::pin::Pin;
use std::task::{Context, Poll};

/// The client sent more body than its `Content-Length` declared.
#[derive(Debug, thiserror::Error)]
#[error("the request body is longer than its Content-Length")]
pub struct ExcessBody;

/// A request body on its way to a target.
#[derive(Debug)]
pub enum RequestBody {
    /// The client's body, streamed.
    Client(ClientBody),
    /// Bytes the gateway holds; `None` once sent (or when empty).
    Full(Option<Bytes>),
}

/// A client's request body on its way to a target.
#[derive(Debug)]
pub struct ClientBody {
    inner: Incoming,
    /// Bytes still expected, when the client declared a length.
    remaining: Option<u64>,
    /// The chunk that completed the declared length, until the end is confirmed.
    held: Option<Bytes>,
    /// Trailers that came after the held chunk, sent right after it.
    trailers: Option<HeaderMap>,
}

impl RequestBody {
    /// Wraps the client's body; `declared` is its `Content-Length`, if it had one.
    pub fn new(inner: Incoming, declared: Option<u64>) -> Self {
        RequestBody::Client(ClientBody {
            inner,
            remaining: declared,
            held: None,
            trailers: None,
        })
    }

    /// A body of `bytes`, sent as one frame.
    pub fn full(bytes: Bytes) -> Self {
        RequestBody::Full((!bytes.is_empty()).then_some(bytes))
    }
}

type Polled = Poll<Option<Result<Frame<Bytes>, Box<dyn std::error::Error + Send + Sync>>>>;

impl Body for RequestBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Polled {
        match self.get_mut() {
            RequestBody::Client(body) => Pin::new(body).poll_frame(cx),
            RequestBody::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            RequestBody::Client(body) => body.is_end_stream(),
            RequestBody::Full(bytes) => bytes.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            RequestBody::Client(body) => body.size_hint(),
            RequestBody::Full(bytes) => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
        }
    }
}

impl Body for ClientBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Polled {
        let this = self.get_mut();
        if let Some(trailers) = this.trailers.take().filter(|_| this.held.is_none()) {
            return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
        }
        loop {
            let frame = match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => {
                    return Poll::Ready(this.held.take().map(|b| Ok(Frame::data(b))))
                }
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(Box::new(e)))),
                Poll::Ready(Some(Ok(frame))) => frame,
            };
            let data = match frame.into_data() {
                Ok(data) => data,
                Err(frame) => match (frame.into_trailers(), this.held.take()) {
                    (Ok(trailers), Some(held)) => {
                        this.trailers = Some(trailers);
                        return Poll::Ready(Some(Ok(Frame::data(held))));
                    }
                    (Ok(trailers), None) => {
                        return Poll::Ready(Some(Ok(Frame::trailers(trailers))))
                    }
                    (Err(_), held) => {
                        this.held = held;
                        continue;
                    }
                },
            };
            if data.is_empty() {
                continue;
            }
            let Some(remaining) = this.remaining else {
                return Poll::Ready(Some(Ok(Frame::data(data))));
            };
            let len = data.len() as u64;
            if this.held.is_some() || len > remaining {
                return Poll::Ready(Some(Err(Box::new(ExcessBody))));
            }
            this.remaining = Some(remaining - len);
            if len < remaining {
                return Poll::Ready(Some(Ok(Frame::data(data))));
            }
            this.held = Some(data);
        }
    }

    fn is_end_stream(&self) -> bool {
        self.held.is_none() && self.trailers.is_none() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        match self.remaining {
            Some(n) => SizeHint::with_exact(n + self.held.as_ref().map_or(0, |b| b.len() as u64)),
            None => self.inner.size_hint(),
        }
    }
}
