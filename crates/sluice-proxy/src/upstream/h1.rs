//! HTTP/1.1 to one target over pooled keep-alive connections, each driven by the task of
//! the request using it: no task, channel or wake-up between the request and its
//! connection, and the connection goes back to the pool when the response body ends.

use super::connector::{ConnectError, TargetConnector};
use super::RequestBody;
use bytes::Bytes;
use http::{Request, Response, StatusCode, Uri};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

/// Drives one connection: writes requests, reads responses, hands over an upgraded stream.
type Driver = Pin<Box<dyn Future<Output = hyper::Result<()>> + Send>>;

/// One keep-alive connection to the target.
struct Conn {
    sender: http1::SendRequest<RequestBody>,
    /// `None` once the connection has ended (or been handed to an upgrade).
    driver: Option<Driver>,
}

impl Conn {
    /// Lets the connection make progress; `false` once it has ended. An ended driver is
    /// dropped at once: a request still waiting on it gets its error, and it is never
    /// polled again.
    fn drive(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(driver) = self.driver.as_mut() else {
            return false;
        };
        if driver.as_mut().poll(cx).is_pending() {
            return true;
        }
        self.driver = None;
        false
    }
}

/// Why a request could not be sent.
#[derive(Debug)]
pub enum SendError {
    Connect(ConnectError),
    Http(hyper::Error),
}

/// The idle connections to one target, most recently used last.
struct Idle {
    conns: Vec<(Conn, Instant)>,
    /// A task closes the connections idle for longer than the timeout.
    reaping: bool,
}

struct Pool {
    idle: Mutex<Idle>,
    max_idle: usize,
    idle_timeout: Duration,
}

impl Pool {
    fn lock(&self) -> std::sync::MutexGuard<'_, Idle> {
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The most recently used idle connection that is still open and ready.
    fn checkout(&self, cx: &mut Context<'_>) -> Option<Conn> {
        loop {
            let (mut conn, since) = self.lock().conns.pop()?;
            if since.elapsed() < self.idle_timeout && conn.drive(cx) && conn.sender.is_ready() {
                return Some(conn);
            }
        }
    }

    /// Keeps `conn` for the next request, when there is room (and a runtime to close it
    /// once idle: a body dropped as the runtime shuts down closes its connection).
    fn put(self: &Arc<Self>, conn: Conn) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let start_reaper = {
            let mut idle = self.lock();
            if idle.conns.len() >= self.max_idle || self.idle_timeout.is_zero() {
                return;
            }
            idle.conns.push((conn, Instant::now()));
            !std::mem::replace(&mut idle.reaping, true)
        };
        if start_reaper {
            runtime.spawn(reap(Arc::downgrade(self), self.idle_timeout));
        }
    }
}

/// Closes the connections idle for longer than `timeout`, until none is left.
async fn reap(pool: Weak<Pool>, timeout: Duration) {
    loop {
        tokio::time::sleep(timeout / 2).await;
        let Some(pool) = pool.upgrade() else { return };
        // Closed outside the lock.
        let (expired, reaping) = {
            let mut idle = pool.lock();
            let now = Instant::now();
            let keep = idle
                .conns
                .iter()
                .position(|(_, since)| now.duration_since(*since) < timeout)
                .unwrap_or(idle.conns.len());
            let expired: Vec<_> = idle.conns.drain(..keep).collect();
            idle.reaping = !idle.conns.is_empty();
            (expired, idle.reaping)
        };
        drop(expired);
        if !reaping {
            return;
        }
    }
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
            pool: Arc::new(Pool {
                idle: Mutex::new(Idle {
                    conns: Vec::new(),
                    reaping: false,
                }),
                max_idle,
                idle_timeout,
            }),
        }
    }

    /// Sends `request` on an idle connection, or a new one, and waits for the response
    /// head. A pooled connection the target closed before the request was written is
    /// replaced by a new one, once.
    pub async fn send(
        &self,
        mut request: Request<RequestBody>,
    ) -> Result<Response<UpstreamBody>, SendError> {
        origin_form(request.uri_mut());
        let mut fresh = false;
        loop {
            let mut conn = match poll_fn(|cx| Poll::Ready(self.pool.checkout(cx))).await {
                Some(conn) => conn,
                None => {
                    fresh = true;
                    self.connect().await?
                }
            };
            match exchange(&mut conn, request).await {
                Ok(response) => return Ok(self.wrap(conn, response)),
                Err(mut e) => match e.take_message() {
                    Some(unsent) if !fresh => request = unsent,
                    _ => return Err(SendError::Http(e.into_error())),
                },
            }
        }
    }

    async fn connect(&self) -> Result<Conn, SendError> {
        let stream = self.connector.connect().await.map_err(SendError::Connect)?;
        let (sender, connection) = http1::Builder::new()
            .handshake(TokioIo::new(stream))
            .await
            .map_err(SendError::Http)?;
        Ok(Conn {
            sender,
            driver: Some(Box::pin(connection.with_upgrades())),
        })
    }

    fn wrap(&self, conn: Conn, response: Response<Incoming>) -> Response<UpstreamBody> {
        if response.status() == StatusCode::SWITCHING_PROTOCOLS {
            // The connection now belongs to the upgrade: driven to the hand-over (unless
            // that is done already), never reused.
            if let Some(driver) = conn.driver {
                tokio::spawn(driver);
            }
            return response.map(UpstreamBody::Plain);
        }
        response.map(|incoming| {
            UpstreamBody::Pooled(PooledBody {
                incoming,
                conn: Some(conn),
                pool: Arc::clone(&self.pool),
            })
        })
    }
}

/// Sends `request` on `conn`, driving the connection until the response head arrives.
async fn exchange(
    conn: &mut Conn,
    request: Request<RequestBody>,
) -> Result<Response<Incoming>, hyper::client::conn::TrySendError<Request<RequestBody>>> {
    let mut response = std::pin::pin!(conn.sender.try_send_request(request));
    poll_fn(|cx| {
        if let Poll::Ready(answer) = response.as_mut().poll(cx) {
            return Poll::Ready(answer);
        }
        if conn.drive(cx) {
            return Poll::Pending;
        }
        // The connection ended (its driver dropped): the answer is settled.
        response.as_mut().poll(cx)
    })
    .await
}

/// HTTP/1.1 requests carry only the path and query.
fn origin_form(uri: &mut Uri) {
    if uri.scheme().is_some() || uri.authority().is_some() {
        let path = uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
        *uri = Uri::from(path);
    }
}

/// A response body from a target, over HTTP/1.1 from the pool or as hyper gives it.
#[derive(Debug)]
pub enum UpstreamBody {
    Pooled(PooledBody),
    Plain(Incoming),
}

/// A response body read from a pooled connection, which goes back to the pool when the
/// body has been read to its end.
pub struct PooledBody {
    incoming: Incoming,
    conn: Option<Conn>,
    pool: Arc<Pool>,
}

impl std::fmt::Debug for PooledBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PooledBody")
            .field("incoming", &self.incoming)
            .finish_non_exhaustive()
    }
}

impl PooledBody {
    /// Back to the pool once its exchange is over and it can take another request.
    fn release(&mut self, cx: &mut Context<'_>) {
        if let Some(mut conn) = self.conn.take() {
            if conn.drive(cx) && conn.sender.is_ready() {
                self.pool.put(conn);
            }
        }
    }
}

impl Body for PooledBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let mut polled = Pin::new(&mut this.incoming).poll_frame(cx);
        if polled.is_pending() {
            // The read side lives in the connection: let it move the next bytes here.
            if let Some(conn) = this.conn.as_mut() {
                if !conn.drive(cx) {
                    this.conn = None;
                }
                polled = Pin::new(&mut this.incoming).poll_frame(cx);
            }
        }
        match &polled {
            Poll::Ready(None) => this.release(cx),
            // The last frame: the peer may not ask for more.
            Poll::Ready(Some(Ok(_))) if this.incoming.is_end_stream() => this.release(cx),
            Poll::Ready(Some(Err(_))) => this.conn = None,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.incoming.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.incoming.size_hint()
    }
}

impl Drop for PooledBody {
    fn drop(&mut self) {
        // A body with nothing left to read (empty, or read to its end) is never polled
        // to `None`; its connection is still good for the next request.
        if self.conn.is_some() && self.incoming.is_end_stream() {
            self.release(&mut Context::from_waker(std::task::Waker::noop()));
        }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            UpstreamBody::Pooled(body) => Pin::new(body).poll_frame(cx),
            UpstreamBody::Plain(body) => Pin::new(body).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            UpstreamBody::Pooled(body) => body.is_end_stream(),
            UpstreamBody::Plain(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            UpstreamBody::Pooled(body) => body.size_hint(),
            UpstreamBody::Plain(body) => body.size_hint(),
        }
    }
}
