//! The request body sent to a target: the client's, streamed, with `Content-Length` held
//! to, or bytes the gateway holds (health checks, replayed retries). The chunk that
//! completes the declared length is held back until the client's stream has really
//! ended, so a client that sends more than it declared (possible over HTTP/2) aborts the
//! upstream request instead of completing it.

use crate::protocol::DownstreamBody;
use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

/// The client sent more body than its `Content-Length` declared.
#[derive(Debug, thiserror::Error)]
#[error("the request body is longer than its Content-Length")]
pub struct ExcessBody;

/// The client's body is over the route's `max_body_size`.
#[derive(Debug, thiserror::Error)]
#[error("the request body is over the limit of {0} bytes")]
pub struct BodyTooLarge(pub u64);

/// The client sent no body data for `server.limits.body_read_timeout`.
#[derive(Debug, thiserror::Error)]
#[error("the client sent no request body data for {0:?} (body_read_timeout)")]
pub struct BodyTimeout(pub std::time::Duration);

/// A request body on its way to a target.
#[derive(Debug)]
///
/// Small to move: what is large is boxed, and a request without a body holds nothing.
pub enum RequestBody {
    /// The client's body, streamed.
    Client(Box<ClientBody>),
    /// Bytes the gateway holds (a health check, or a body kept for retries); taken as
    /// they are sent.
    Full {
        data: Option<Bytes>,
        trailers: Option<Box<HeaderMap>>,
    },
    /// The start of the client's body, read while trying to keep it, then the rest.
    Prefixed {
        prefix: VecDeque<Bytes>,
        rest: Box<ClientBody>,
    },
}

/// The client's body after [`RequestBody::keep`]: whole in memory, or too large for it.
#[derive(Debug)]
pub enum Kept {
    Whole {
        data: Bytes,
        trailers: Option<HeaderMap>,
    },
    /// Larger than the buffer: to be streamed, and not replayed.
    TooLarge(RequestBody),
}

/// A client's request body on its way to a target.
#[derive(Debug)]
pub struct ClientBody {
    inner: DownstreamBody,
    /// Bytes still expected, when the client declared a length.
    remaining: Option<u64>,
    /// The chunk that completed the declared length, until the end is confirmed.
    held: Option<Bytes>,
    /// Trailers that came after the held chunk, sent right after it.
    trailers: Option<HeaderMap>,
    /// The most the body may carry, and what it carried so far.
    limit: Option<u64>,
    seen: u64,
    idle: Option<BodyIdle>,
}

/// The body-read timeout. It runs only while the gateway waits for the client: not
/// while the target is slow to take the body (backpressure is not the client's fault).
#[derive(Debug)]
struct BodyIdle {
    after: std::time::Duration,
    timer: Pin<Box<tokio::time::Sleep>>,
    /// Whether the last poll found nothing: the timer is running.
    waiting: bool,
}

impl RequestBody {
    /// Wraps the client's body; `declared` is its `Content-Length`, if it had one, and
    /// `limit` the most it may carry.
    /// `idle` is the longest the client may pause between two pieces of body.
    pub fn new(
        inner: DownstreamBody,
        declared: Option<u64>,
        limit: Option<u64>,
        idle: std::time::Duration,
    ) -> Self {
        if inner.is_end_stream() && declared.unwrap_or(0) == 0 {
            return RequestBody::Full {
                data: None,
                trailers: None,
            };
        }
        let idle = (!inner.is_end_stream()).then(|| BodyIdle {
            after: idle,
            timer: Box::pin(tokio::time::sleep(idle)),
            waiting: false,
        });
        RequestBody::Client(Box::new(ClientBody {
            inner,
            remaining: declared,
            held: None,
            trailers: None,
            limit,
            seen: 0,
            idle,
        }))
    }

    /// A body of `bytes`, sent as one frame.
    pub fn full(bytes: Bytes) -> Self {
        RequestBody::replay(bytes, None)
    }

    /// A kept body, sent again.
    pub fn replay(data: Bytes, trailers: Option<HeaderMap>) -> Self {
        RequestBody::Full {
            data: (!data.is_empty()).then_some(data),
            trailers: trailers.map(Box::new),
        }
    }

    /// Reads the client's body into memory if it fits in `buffer` bytes, so that it
    /// can be sent again; otherwise gives back a body that streams what was read and
    /// then the rest.
    pub async fn keep(self, buffer: usize) -> Result<Kept, BoxError> {
        let mut client = match self {
            RequestBody::Client(client) => client,
            RequestBody::Full { data, trailers } => {
                return Ok(Kept::Whole {
                    data: data.unwrap_or_default(),
                    trailers: trailers.map(|t| *t),
                })
            }
            prefixed @ RequestBody::Prefixed { .. } => return Ok(Kept::TooLarge(prefixed)),
        };
        let mut chunks: VecDeque<Bytes> = VecDeque::new();
        let mut size = 0usize;
        let mut trailers = None;
        while let Some(frame) = client.frame().await {
            match frame?.into_data() {
                Ok(data) => {
                    size += data.len();
                    chunks.push_back(data);
                    if size > buffer {
                        return Ok(Kept::TooLarge(RequestBody::Prefixed {
                            prefix: chunks,
                            rest: client,
                        }));
                    }
                }
                Err(frame) => trailers = frame.into_trailers().ok(),
            }
        }
        let data = match chunks.len() {
            0 => Bytes::new(),
            1 => chunks.pop_front().unwrap_or_default(),
            _ => {
                let mut all = bytes::BytesMut::with_capacity(size);
                for chunk in chunks {
                    all.extend_from_slice(&chunk);
                }
                all.freeze()
            }
        };
        Ok(Kept::Whole { data, trailers })
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

type Polled = Poll<Option<Result<Frame<Bytes>, Box<dyn std::error::Error + Send + Sync>>>>;

impl Body for RequestBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Polled {
        match self.get_mut() {
            RequestBody::Client(body) => Pin::new(body).poll_frame(cx),
            RequestBody::Full { data, trailers } => Poll::Ready(match data.take() {
                Some(d) => Some(Ok(Frame::data(d))),
                None => trailers.take().map(|t| Ok(Frame::trailers(*t))),
            }),
            RequestBody::Prefixed { prefix, rest } => match prefix.pop_front() {
                Some(d) => Poll::Ready(Some(Ok(Frame::data(d)))),
                None => Pin::new(rest).poll_frame(cx),
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            RequestBody::Client(body) => body.is_end_stream(),
            RequestBody::Full { data, trailers } => data.is_none() && trailers.is_none(),
            RequestBody::Prefixed { prefix, rest } => prefix.is_empty() && rest.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            RequestBody::Client(body) => body.size_hint(),
            RequestBody::Full { data, .. } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |b| b.len() as u64))
            }
            RequestBody::Prefixed { prefix, rest } => {
                let read: u64 = prefix.iter().map(|b| b.len() as u64).sum();
                let rest = rest.size_hint();
                let mut hint = SizeHint::new();
                hint.set_lower(rest.lower() + read);
                if let Some(upper) = rest.upper() {
                    hint.set_upper(upper + read);
                }
                hint
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
                Poll::Pending => {
                    if let Some(idle) = &mut this.idle {
                        if !idle.waiting {
                            idle.waiting = true;
                            let deadline = tokio::time::Instant::now() + idle.after;
                            idle.timer.as_mut().reset(deadline);
                        }
                        if idle.timer.as_mut().poll(cx).is_ready() {
                            return Poll::Ready(Some(Err(Box::new(BodyTimeout(idle.after)))));
                        }
                    }
                    return Poll::Pending;
                }
                Poll::Ready(None) => {
                    return Poll::Ready(this.held.take().map(|b| Ok(Frame::data(b))))
                }
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(Some(Ok(frame))) => {
                    if let Some(idle) = &mut this.idle {
                        idle.waiting = false;
                    }
                    frame
                }
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
            this.seen += data.len() as u64;
            if let Some(limit) = this.limit.filter(|l| this.seen > *l) {
                return Poll::Ready(Some(Err(Box::new(BodyTooLarge(limit)))));
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
