//! HTTP on an accepted connection: HTTP/1.1 and h2c (prior knowledge) on the same port,
//! told apart by the first bytes, with the limits from `[server.limits]`, upgrades, and
//! graceful shutdown.

mod h2_streams;
pub mod http1;
mod sniff;
mod woken;

use crate::cluster::InFlight;
use crate::gateway::Gateway;
use crate::lifecycle::{handle, ConnInfo, X_REQUEST_ID};
use bytes::Bytes;
pub use h2_streams::SendWatch;
use h2_streams::{OpenStreams, StreamExecutor};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::server::conn::http2;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use sluice_config::Limits;
pub use sniff::Prefixed;
use sniff::{sniff, Protocol};
use std::future::Future;
use std::pin::{pin, Pin};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, watch, Notify};
use woken::WhenWoken;

/// The HTTP server settings every connection of a listener uses.
#[derive(Debug)]
pub struct Http {
    http1: http1::H1Settings,
    http2: http2::Builder<StreamExecutor>,
    /// How long a new connection may take to send its first bytes.
    first_bytes_timeout: Duration,
}

/// Builds the server settings from the configured limits.
pub fn http_builder(limits: &Limits) -> Http {
    let h1 = http1::H1Settings {
        limits: http1::HeadLimits {
            max_head: (limits.max_header_size + limits.max_uri_size)
                .saturating_mul(2)
                .max(8192),
            max_headers: limits.max_headers.saturating_mul(2).max(100),
        },
        header_read_timeout: limits.header_read_timeout,
        keepalive_timeout: limits.keepalive_timeout,
        send_timeout: limits.send_timeout,
    };
    let mut h2 = http2::Builder::new(StreamExecutor {
        send_timeout: limits.send_timeout,
    });
    h2.timer(TokioTimer::new())
        .max_concurrent_streams(100)
        .max_header_list_size(
            u32::try_from(limits.max_header_size.saturating_mul(2)).unwrap_or(u32::MAX),
        )
        .max_pending_accept_reset_streams(50)
        .max_local_error_reset_streams(256);
    Http {
        http1: h1,
        http2: h2,
        first_bytes_timeout: limits.header_read_timeout,
    }
}

/// What a connection needs to know about the gateway's shutdown: the signal, and a
/// sender whose drop tells the drain that this connection is done.
#[derive(Debug, Clone)]
pub struct ShutdownWatch {
    pub signal: watch::Receiver<bool>,
    pub done: mpsc::Sender<()>,
}

/// Serves one client connection until it closes or the gateway shuts down.
pub async fn serve_connection<S>(
    http: Arc<Http>,
    stream: S,
    gateway: Arc<Gateway>,
    conn: ConnInfo,
    shutdown: ShutdownWatch,
) where
    S: http1::Io + 'static,
{
    let sniffed = match first_request_bytes(&http, stream, &shutdown).await {
        Some(sniffed) => sniffed,
        None => return,
    };
    let conn = Arc::new(conn);
    match sniffed {
        (Protocol::Http1, io) => {
            http1::serve(Box::new(io), http.http1, gateway, conn, shutdown).await
        }
        (Protocol::Http2, io) => serve_http2(&http, io, gateway, conn, shutdown).await,
    }
}

/// The connection's first bytes, told apart as HTTP/1.1 or HTTP/2; `None` when the
/// client sent nothing in time or the gateway stopped first.
async fn first_request_bytes<S>(
    http: &Http,
    stream: S,
    shutdown: &ShutdownWatch,
) -> Option<(Protocol, Prefixed<S>)>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut stop = shutdown.signal.clone();
    let first_bytes = tokio::time::timeout(http.first_bytes_timeout, sniff(stream));
    tokio::pin!(first_bytes);
    // A connection accepted before the shutdown gets its first request served (its
    // client may have sent it already); one that stays silent is closed soon after.
    let sniffed = tokio::select! {
        sniffed = &mut first_bytes => sniffed,
        () = stopped(&mut stop) => {
            match tokio::time::timeout(LINGER, &mut first_bytes).await {
                Ok(sniffed) => sniffed,
                Err(_) => return None,
            }
        }
    };
    match sniffed {
        Ok(Ok(sniffed)) => sniffed,
        Ok(Err(e)) => {
            tracing::debug!("client connection failed before its first request: {e}");
            None
        }
        Err(_) => {
            tracing::debug!("client sent nothing within the header read timeout; closed");
            None
        }
    }
}

/// Serves an HTTP/2 connection with hyper's server.
async fn serve_http2<S>(
    http: &Http,
    io: Prefixed<S>,
    gateway: Arc<Gateway>,
    conn: Arc<ConnInfo>,
    shutdown: ShutdownWatch,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let first_request = Arc::new(Notify::new());
    let arrived = Arc::clone(&first_request);
    let streams = Arc::new(OpenStreams::default());
    let counted = Arc::clone(&streams);
    let service = service_fn(move |request| {
        arrived.notify_one();
        let open = counted.open();
        let gateway = Arc::clone(&gateway);
        let conn = Arc::clone(&conn);
        async move {
            let Ok(mut response) = handle(&gateway, &conn, request.map(DownstreamBody::H2)).await;
            if let Some(id) = response.body_mut().take_request_id() {
                response.headers_mut().insert(X_REQUEST_ID, id);
            }
            if let Some(watch) = SendWatch::current() {
                watch.hold(open);
                response.body_mut().report_sending(watch);
            }
            Ok::<_, std::convert::Infallible>(response)
        }
    });
    let connection = http.http2.serve_connection(TokioIo::new(io), service);
    // An HTTP/2 connection is idle while no stream is open, for `keepalive_timeout` too.
    let idle = streams.idle_for(http.http1.keepalive_timeout);
    let result = drive(connection, shutdown, &first_request, idle, |c| {
        c.graceful_shutdown()
    })
    .await;
    if let Err(e) = result {
        tracing::debug!("client connection ended: {e}");
    }
}

/// How long a connection accepted just before a shutdown may take to send its first
/// request before it is closed unanswered.
const LINGER: Duration = Duration::from_secs(1);

/// Runs a connection to its end; on shutdown, lets it finish its requests in flight
/// (HTTP/1.1: `Connection: close`; HTTP/2: GOAWAY) and close. A connection that has not
/// started a request yet is given [`LINGER`] for its first one, which is then answered:
/// a client that connected while the listener was accepting is never left unanswered.
/// Once `idle` completes (no request open for the idle timeout), the connection is closed
/// the same way, and dropped if the client has not let it close within [`IDLE_CLOSE`].
/// `graceful` is the connection type's own `graceful_shutdown`.
async fn drive<C>(
    connection: C,
    mut shutdown: ShutdownWatch,
    first_request: &Notify,
    idle: impl Future<Output = ()>,
    graceful: impl FnOnce(Pin<&mut C>),
) -> hyper::Result<()>
where
    C: Future<Output = hyper::Result<()>>,
{
    tokio::pin!(connection);
    let mut started = pin!(first_request.notified());
    // Polled only when they may have changed, not on each of the connection's wake-ups.
    let mut stop = pin!(WhenWoken::new(stopped(&mut shutdown.signal)));
    let mut idle = pin!(WhenWoken::new(idle));
    let stopping = tokio::select! {
        biased;
        result = connection.as_mut() => return result,
        () = &mut started => false,
        () = stop.as_mut() => true,
        () = idle.as_mut() => return close_idle(connection, graceful).await,
    };
    if stopping {
        tokio::select! {
            result = connection.as_mut() => return result,
            () = &mut started => {}
            () = tokio::time::sleep(LINGER) => {}
        }
    } else {
        tokio::select! {
            biased;
            result = connection.as_mut() => return result,
            () = stop.as_mut() => {}
            () = idle.as_mut() => return close_idle(connection, graceful).await,
        }
    }
    graceful(connection.as_mut());
    connection.await
}

/// How long an idle connection told to close may take to finish closing (HTTP/2: the
/// client's acknowledgement of GOAWAY) before it is dropped.
const IDLE_CLOSE: Duration = Duration::from_secs(5);

/// Closes an idle connection gracefully, or drops it after [`IDLE_CLOSE`].
async fn close_idle<C>(
    mut connection: Pin<&mut C>,
    graceful: impl FnOnce(Pin<&mut C>),
) -> hyper::Result<()>
where
    C: Future<Output = hyper::Result<()>>,
{
    tracing::debug!("closing a connection with no request open for the keep-alive timeout");
    graceful(connection.as_mut());
    tokio::time::timeout(IDLE_CLOSE, connection)
        .await
        .unwrap_or(Ok(()))
}

/// Completes once the gateway is shutting down (or the signal's sender is gone).
pub async fn stopped(signal: &mut watch::Receiver<bool>) {
    let _ = signal.wait_for(|stop| *stop).await;
}

/// Copies bytes both ways between a client and a target once both switched protocols.
pub async fn tunnel(
    client: http1::ClientUpgrade,
    mut upstream: Prefixed<crate::upstream::UpstreamStream>,
    in_flight: InFlight,
) {
    let Some(mut client) = client.take().await else {
        tracing::info!("protocol upgrade failed: the client's connection was not handed over");
        return;
    };
    if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
        tracing::debug!("upgraded connection ended: {e}");
    }
    drop(in_flight);
}

/// A request body as the client sends it: over HTTP/1.1 (read by Sluice's server) or
/// HTTP/2 (hyper's), or none.
#[derive(Debug)]
pub enum DownstreamBody {
    H1(http1::H1RequestBody),
    H2(Incoming),
    Empty,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl Body for DownstreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            DownstreamBody::H1(body) => Pin::new(body).poll_frame(cx),
            DownstreamBody::H2(body) => Pin::new(body)
                .poll_frame(cx)
                .map(|f| f.map(|f| f.map_err(BoxError::from))),
            DownstreamBody::Empty => std::task::Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            DownstreamBody::H1(body) => body.is_end_stream(),
            DownstreamBody::H2(body) => body.is_end_stream(),
            DownstreamBody::Empty => true,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            DownstreamBody::H1(body) => body.size_hint(),
            DownstreamBody::H2(body) => body.size_hint(),
            DownstreamBody::Empty => SizeHint::with_exact(0),
        }
    }
}
