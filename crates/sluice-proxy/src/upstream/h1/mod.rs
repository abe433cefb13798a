//! HTTP/1.1 to one target over pooled keep-alive connections, spoken by Sluice's own
//! codec and driven by the task of the request using each connection: no task, channel
//! or wake-up between a request and its connection. A connection goes back to the pool
//! when its response has been read to the end and its request written in full.

mod exchange;
mod pool;

use super::connector::{ConnectError, TargetConnector, UpstreamStream};
use super::headers::Added;
use super::RequestBody;
use crate::http1::chunked::Decoded;
use crate::http1::framing::{declared, Framing};
use crate::http1::poll_read;
use crate::http1::write::BodyFraming;
use crate::protocol::Prefixed;
use bytes::Bytes;
pub use exchange::ExchangeError;
use exchange::{request_head, Conn, Exchange, Head};
use http::{Method, Request, Response, StatusCode, Version};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use pool::Pool;
use std::future::poll_fn;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::Instant;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Why a request could not be sent.
#[derive(Debug)]
pub enum SendError {
    Connect(ConnectError),
    Exchange(ExchangeError),
}

/// HTTP/1.1 client for one target.
#[derive(Clone)]
pub struct H1Client {
    connector: TargetConnector,
    pool: Arc<Pool>,
}

impl std::fmt::Debug for H1Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("H1Client")
            .field("connector", &self.connector)
            .finish_non_exhaustive()
    }
}

impl H1Client {
    pub fn new(connector: TargetConnector, max_idle: usize, idle_timeout: Duration) -> Self {
        H1Client {
            connector,
            pool: Arc::new(Pool::new(max_idle, idle_timeout)),
        }
    }

    /// Sends `request` on an idle connection, or a new one, and waits for the response
    /// head. When a pooled connection turns out closed before anything came back, an
    /// idempotent request whose body was not taken yet goes once more on a new one.
    /// `now` is when the request started, as the caller read it; the response head must
    /// come by `deadline` (connecting included).
    pub async fn send(
        &self,
        request: Request<RequestBody>,
        added: Option<Added<'_>>,
        now: Instant,
        deadline: Instant,
    ) -> Result<Response<UpstreamBody>, SendError> {
        let (parts, body) = request.into_parts();
        let target = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        let mut body = Some(body);
        let mut head: Option<(Bytes, BodyFraming)> = None;
        let mut retried = false;
        loop {
            // After a pooled connection failed, the next try goes on a new one.
            let pooled = if retried {
                None
            } else {
                poll_fn(|cx| Poll::Ready(self.pool.checkout(cx, now))).await
            };
            let fresh = pooled.is_none();
            let mut conn = match pooled {
                Some(mut conn) => {
                    conn.used = now;
                    conn
                }
                // Boxed: connecting (TLS included) is rare next to reusing, and its
                // future would otherwise widen every request's.
                None => {
                    let connect = tokio::time::timeout_at(deadline, self.connector.connect());
                    let io = Box::pin(connect)
                        .await
                        .map_err(|_| SendError::Exchange(ExchangeError::Timeout))?
                        .map_err(SendError::Connect)?;
                    Conn::new(io, now)
                }
            };
            // The connection's own timer: no timer-wheel work for each request.
            conn.answer_by(deadline);
            let payload = body
                .take()
                .unwrap_or_else(|| RequestBody::full(Bytes::new()));
            let (bytes, framing) = head
                .get_or_insert_with(|| {
                    request_head(
                        &mut conn.wbuf,
                        &parts.method,
                        target,
                        &parts.headers,
                        &payload,
                        added,
                    )
                })
                .clone();
            let mut exchange = Exchange::new(conn, bytes, payload, framing);
            match poll_fn(|cx| exchange.poll_head(cx)).await {
                Ok(head) => return self.response(exchange, head, &parts.method),
                Err(ExchangeError::Closed | ExchangeError::Io(_))
                    if !fresh && !exchange.is_touched() && parts.method.is_idempotent() =>
                {
                    tracing::debug!(
                        "a pooled connection to the target was closed; sending on a new one"
                    );
                    body_back(&mut body, exchange.untouched_body());
                    retried = true;
                }
                Err(e) => return Err(SendError::Exchange(e)),
            }
        }
    }

    fn response(
        &self,
        exchange: Exchange,
        head: Head,
        method: &Method,
    ) -> Result<Response<UpstreamBody>, SendError> {
        if head.status == StatusCode::SWITCHING_PROTOCOLS {
            // The connection now belongs to the upgrade, with what was read past the head.
            let Conn { io, rbuf, .. } = *exchange.into_conn();
            let upgrade = UpstreamBody::Upgrade(Some(Prefixed::new(rbuf.to_vec(), io)));
            return Ok(with_head(head, upgrade));
        }
        let bodiless = *method == Method::HEAD
            || head.status == StatusCode::NO_CONTENT
            || head.status == StatusCode::NOT_MODIFIED;
        // Checked even when no body follows: a HEAD or 304 answer passes its length on.
        let (declared, both) = declared(&head.headers, false, head.seen).map_err(|_| {
            SendError::Exchange(ExchangeError::Invalid(
                "invalid Content-Length or Transfer-Encoding",
            ))
        })?;
        // Transfer-Encoding in an HTTP/1.0 answer is faulty framing (RFC 9112, 6.1).
        let faulty = head.version == Version::HTTP_10 && head.seen.transfer_encoding;
        let framing = if bodiless {
            Framing::Length(0)
        } else {
            declared.unwrap_or(Framing::Close)
        };
        let body = UpstreamBody::Pooled(H1Body {
            // A length and chunks both: read as chunked, and the connection not trusted
            // with another request.
            reusable: head.keep_alive && !both && !faulty && framing != Framing::Close,
            framing,
            exchange: Some(exchange),
            pool: Arc::clone(&self.pool),
            ended: false,
        });
        Ok(with_head(head, body))
    }
}

/// The response a target's head describes, with `body`.
fn with_head(head: Head, body: UpstreamBody) -> Response<UpstreamBody> {
    let mut response = Response::new(body);
    *response.status_mut() = head.status;
    *response.version_mut() = head.version;
    *response.headers_mut() = head.headers;
    response
}

/// Puts an untouched request body back for the next try.
fn body_back(slot: &mut Option<RequestBody>, body: Option<RequestBody>) {
    *slot = Some(body.unwrap_or_else(|| RequestBody::full(Bytes::new())));
}

/// A response body from a target.
#[derive(Debug)]
pub enum UpstreamBody {
    /// HTTP/1.1, read from a pooled connection.
    Pooled(H1Body),
    /// HTTP/2, as hyper's client gives it.
    Plain(Incoming),
    /// `101 Switching Protocols`: no body; the connection, for the upgrade.
    Upgrade(Option<Prefixed<UpstreamStream>>),
}

impl UpstreamBody {
    /// The target's connection after `101 Switching Protocols`.
    pub fn take_upgrade(&mut self) -> Option<Prefixed<UpstreamStream>> {
        match self {
            UpstreamBody::Upgrade(io) => io.take(),
            _ => None,
        }
    }
}

/// A response body read from a pooled HTTP/1.1 connection.
pub struct H1Body {
    framing: Framing,
    /// `None` once the body ended or failed.
    exchange: Option<Exchange>,
    pool: Arc<Pool>,
    reusable: bool,
    ended: bool,
}

impl std::fmt::Debug for H1Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("H1Body")
            .field("framing", &self.framing)
            .field("ended", &self.ended)
            .finish_non_exhaustive()
    }
}

/// The target's response could not be read.
#[derive(Debug, thiserror::Error)]
#[error("the target's response failed: {0}")]
pub struct UpstreamBodyError(String);

impl H1Body {
    /// The body ended: the connection goes back to the pool if it can take another
    /// request (its request written in full, nothing unread, the target keeping it open).
    fn finish(&mut self) {
        self.ended = true;
        if let Some(exchange) = self.exchange.take() {
            if self.reusable
                && exchange.is_sent()
                && exchange.write_failed.is_none()
                && exchange.conn.rbuf.is_empty()
            {
                self.pool.put(exchange.into_conn());
            }
        }
    }

    fn fail(&mut self, error: BoxError) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.exchange = None;
        Poll::Ready(Some(Err(error)))
    }
}

impl Body for H1Body {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let Some(exchange) = this.exchange.as_mut() else {
            return Poll::Ready(if this.ended {
                None
            } else {
                Some(Err(Box::new(UpstreamBodyError(
                    "the response was cut off".into(),
                ))))
            });
        };
        loop {
            // The request's body keeps going up while the response comes down.
            if let Poll::Ready(Err(e)) = exchange.poll_send(cx) {
                return this.fail(e);
            }
            match this.framing.decode(&mut exchange.conn.rbuf) {
                Err(e) => return this.fail(Box::new(e)),
                Ok(Decoded::Data(data)) => {
                    if this.framing.is_done() {
                        this.finish();
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Ok(Decoded::End(trailers)) => {
                    this.finish();
                    return Poll::Ready(trailers.map(|t| Ok(Frame::trailers(t))));
                }
                Ok(Decoded::Incomplete) => {}
            }
            match poll_read(&mut exchange.conn.io, cx, &mut exchange.conn.rbuf) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return this.fail(Box::new(e)),
                Poll::Ready(Ok(0)) => {
                    return match this.framing.at_eof() {
                        Ok(()) => {
                            this.ended = true;
                            this.exchange = None;
                            Poll::Ready(None)
                        }
                        Err(e) => this.fail(Box::new(e)),
                    }
                }
                Poll::Ready(Ok(_)) => {}
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ended || (self.exchange.is_some() && self.framing.is_done())
    }

    fn size_hint(&self) -> SizeHint {
        match self.framing.exact() {
            Some(n) => SizeHint::with_exact(n),
            None => SizeHint::default(),
        }
    }
}

impl Drop for H1Body {
    fn drop(&mut self) {
        // A body with nothing left to read (empty, or read to its end) is never polled
        // to its end; its connection is still good for the next request.
        if self.exchange.is_some() && self.framing.is_done() {
            self.finish();
        }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            UpstreamBody::Pooled(body) => Pin::new(body).poll_frame(cx),
            UpstreamBody::Plain(body) => Pin::new(body)
                .poll_frame(cx)
                .map(|f| f.map(|f| f.map_err(BoxError::from))),
            UpstreamBody::Upgrade(_) => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            UpstreamBody::Pooled(body) => body.is_end_stream(),
            UpstreamBody::Plain(body) => body.is_end_stream(),
            UpstreamBody::Upgrade(_) => true,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            UpstreamBody::Pooled(body) => body.size_hint(),
            UpstreamBody::Plain(body) => body.size_hint(),
            UpstreamBody::Upgrade(_) => SizeHint::with_exact(0),
        }
    }
}
