//! Sluice's own HTTP/1.1 server for a client connection: one task reads each request
//! head straight into `http` types, runs the request's lifecycle, and writes the
//! response with its body streamed behind the head, with keep-alive, pipelining,
//! `100 Continue`, upgrades, the header and keep-alive timeouts, and graceful shutdown.

mod body;
mod request;
mod response;

pub use body::{H1RequestBody, RequestBodyError};
pub use request::HeadLimits;

use super::sniff::Prefixed;
use super::woken::WhenWoken;
use super::{stopped, DownstreamBody, ShutdownWatch};
use crate::body::ResponseBody;
use crate::gateway::Gateway;
use crate::http1::deadline::Deadline;
use crate::http1::poll_read;
use crate::http1::write::{BodyFraming, BodySender, Outbox, SendFailure};
use crate::lifecycle::{handle, new_request_id, ConnInfo};
use crate::rescue::{rescue, ProxyError};
use body::Home;
use bytes::BytesMut;
use http::{Method, Request, Response, StatusCode};
use http_body::Body;
use std::future::{poll_fn, Future};
use std::pin::{pin, Pin};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::Poll;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::sync::oneshot;

/// A client connection's byte stream, whatever is under it (TCP, TLS, Unix socket).
pub trait Io: AsyncRead + AsyncWrite + Send + Unpin {
    /// Makes the connection end with a reset rather than an orderly close, so that the
    /// client cannot take an answer cut short for a whole one. Nothing where the
    /// transport has no such thing.
    fn abort(&self) {}
}

impl<S: Io> Io for Prefixed<S> {
    fn abort(&self) {
        self.inner().abort();
    }
}

impl<S: Io> Io for tokio_rustls::server::TlsStream<S> {
    fn abort(&self) {
        self.get_ref().0.abort();
    }
}

/// A client connection, boxed so that one server serves every kind of listener.
pub type BoxIo = Box<dyn Io>;

/// The client's connection once it switched protocols, with the bytes it sent past the
/// request head.
pub type Upgraded = Prefixed<BoxIo>;

/// The read side of a client connection and its buffer.
pub struct Reader {
    io: ReadHalf<BoxIo>,
    buf: BytesMut,
}

/// How a connection reads heads and how long it waits for them.
#[derive(Debug, Clone, Copy)]
pub struct H1Settings {
    pub limits: HeadLimits,
    /// How long a client has to send a whole request head once it started one.
    pub header_read_timeout: Duration,
    /// How long a connection may wait idle for its next request.
    pub keepalive_timeout: Duration,
    /// How long a client may go without taking any of its answer.
    pub send_timeout: Duration,
}

/// The client's side of a protocol upgrade, in the request's extensions: completes with
/// the connection once the `101` answer has been written to it.
#[derive(Clone)]
pub struct ClientUpgrade(Arc<Mutex<Option<oneshot::Receiver<Upgraded>>>>);

impl std::fmt::Debug for ClientUpgrade {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientUpgrade").finish_non_exhaustive()
    }
}

impl ClientUpgrade {
    /// The client's connection, once switched; `None` if it never was.
    pub async fn take(self) -> Option<Upgraded> {
        let receiver = self
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()?;
        receiver.await.ok()
    }
}

/// Bytes of an unread request body read and dropped before a connection closes, so that
/// the kernel does not reset it under the answer the client has still to read.
const LINGER_BYTES: usize = 64 * 1024;
const LINGER_TIME: Duration = Duration::from_secs(2);

/// Serves HTTP/1.1 requests on `io` until the client closes, a request says `close`,
/// a timeout passes, or the gateway shuts down.
pub async fn serve(
    io: BoxIo,
    settings: H1Settings,
    gateway: Arc<Gateway>,
    conn: Arc<ConnInfo>,
    shutdown: ShutdownWatch,
) {
    let (read, write) = tokio::io::split(io);
    let mut reader = Some(Reader {
        io: read,
        buf: BytesMut::with_capacity(crate::http1::READ_CHUNK),
    });
    let mut writer = write;
    let mut head_buf = BytesMut::with_capacity(1024);
    let mut outbox = Outbox::default();
    let home = Arc::new(Home::default());
    let mut signal = shutdown.signal.clone();
    let mut stop = pin!(WhenWoken::new(stopped(&mut signal)));
    let mut timer = Deadline::new(settings.header_read_timeout);
    let mut first = true;
    while let Some(mut rd) = reader.take() {
        let idle = (!first).then_some(stop.as_mut());
        let head = match read_head(&mut rd, &mut timer, idle, &settings).await {
            Ok(Some(head)) => head,
            Ok(None) => break,
            Err(error) => {
                tracing::info!(code = error.code(), "{error}");
                let id = new_request_id();
                answer_problem(&mut writer, &mut head_buf, outbox, &error, &id).await;
                linger(Some(rd), writer).await;
                return;
            }
        };
        first = false;
        let (method_is_head, version, keep_alive) =
            (head.method == Method::HEAD, head.version, head.keep_alive);
        let expect_continue = head.expect_continue;
        let (request, unread, upgrade) = into_request(head, rd, &home);
        reader = unread;

        // Awaited where it is made: a future held in a local is copied once more.
        let response = if expect_continue {
            home.expect_continue();
            with_continue(handle(&gateway, &conn, request), &home, &mut writer).await
        } else {
            handle(&gateway, &conn, request).await
        };
        let Ok(response) = response;

        // The body read to its end (or none): the connection can carry the next request.
        reader = reader.or_else(|| home.take_complete());
        let body_read = reader.is_some();
        let exchange = response::Exchange {
            method_is_head,
            version,
            keep_alive: keep_alive && body_read && !*shutdown.signal.borrow(),
        };
        match send_answer(
            &mut writer,
            &mut head_buf,
            &mut outbox,
            response,
            exchange,
            &mut timer,
            settings.send_timeout,
        )
        .await
        {
            Next::KeepAlive => {}
            Next::Close => break,
            Next::Gone => return,
            Next::Switch(head) => return switch(head, reader.take(), writer, upgrade).await,
            Next::Reset => {
                // Read until the close, the cut answer would look whole: reset instead.
                if let Some(rd) = reader.take().or_else(|| home.take_any()) {
                    rd.io.unsplit(writer).abort();
                    return;
                }
                break;
            }
        }
        timer.set(settings.keepalive_timeout);
    }
    linger(reader.or_else(|| home.take_any()), writer).await;
}

/// The request the lifecycle takes, from a parsed head. The read side goes with the body
/// when there is one and is given back otherwise; a request that asks to switch
/// protocols gets the receiving end of its upgrade.
fn into_request(
    head: request::Head,
    reader: Reader,
    home: &Arc<Home>,
) -> (
    Request<DownstreamBody>,
    Option<Reader>,
    Option<oneshot::Sender<Upgraded>>,
) {
    let mut request = Request::new(DownstreamBody::Empty);
    *request.method_mut() = head.method;
    *request.uri_mut() = head.uri;
    *request.version_mut() = head.version;
    *request.headers_mut() = head.headers;
    let mut upgrade = None;
    if head.upgrade {
        let (sender, receiver) = oneshot::channel();
        request
            .extensions_mut()
            .insert(ClientUpgrade(Arc::new(Mutex::new(Some(receiver)))));
        upgrade = Some(sender);
    }
    let unread = match head.framing {
        Some(framing) => {
            let body = H1RequestBody::new(reader, framing, Arc::clone(home), head.expect_continue);
            *request.body_mut() = DownstreamBody::H1(body);
            None
        }
        None => Some(reader),
    };
    (request, unread, upgrade)
}

/// What the connection does after an answer.
enum Next {
    KeepAlive,
    Close,
    /// The answer was cut short where only a reset can say so.
    Reset,
    /// The client's connection failed.
    Gone,
    /// `101`: this head is to be written, then the connection handed over.
    Switch(bytes::Bytes),
}

/// Writes `response`, its body streamed behind its head. A body that fails before any
/// byte was written becomes the gateway's `502`. The client must take some of the answer
/// at least every `send_timeout` (timed by the connection's `timer`), or the connection
/// is reset.
async fn send_answer(
    writer: &mut WriteHalf<BoxIo>,
    head_buf: &mut BytesMut,
    outbox: &mut Outbox,
    response: Response<ResponseBody>,
    exchange: response::Exchange,
    timer: &mut Deadline,
    send_timeout: Duration,
) -> Next {
    let (parts, mut body) = response.into_parts();
    let exact = body.size_hint().exact();
    let request_id = body.take_request_id();
    let (bytes, framing, keep_alive) =
        response::head(head_buf, &parts, request_id.as_ref(), exact, exchange);
    if parts.status == StatusCode::SWITCHING_PROTOCOLS {
        return Next::Switch(bytes);
    }
    // The body is lent, not moved: it stays here until the answer is written (a
    // bodiless answer's too, for its record).
    let lent = framing.is_some().then_some(&mut body);
    let framing = framing.unwrap_or(BodyFraming::Length(0));
    let mut sender = BodySender::new(std::mem::take(outbox), bytes, lent, framing);
    // The mark of the stall being timed: the bytes written when it began.
    let mut stall: Option<u64> = None;
    let sent = poll_fn(|cx| {
        let polled = sender.poll_send(writer, cx);
        if polled.is_pending() {
            match sender.stalled() {
                None => stall = None,
                Some(mark) => {
                    // A new stall, or the client took some and stopped again.
                    if stall != Some(mark) {
                        stall = Some(mark);
                        timer.set(send_timeout);
                    }
                    if timer.poll_expired(cx) {
                        return Poll::Ready(None);
                    }
                }
            }
        }
        polled.map(Some)
    })
    .await;
    let Some(sent) = sent else {
        tracing::info!(
            after = ?send_timeout,
            "the client took none of its answer for server.limits.send_timeout; resetting the connection"
        );
        return Next::Reset;
    };
    let written = sender.has_written();
    *outbox = sender.take_outbox();
    drop(sender);
    let target = match (&sent, written) {
        (Err(SendFailure::Body(_)), false) => body.target().cloned(),
        _ => None,
    };
    drop(body);
    match sent {
        Ok(()) if keep_alive => Next::KeepAlive,
        Ok(()) => Next::Close,
        Err(SendFailure::Body(e)) if !written => {
            // Nothing of the answer left yet: the client still gets one.
            let error = ProxyError::Upstream {
                target: target.as_deref().unwrap_or("-").to_string(),
                cause: e.to_string(),
            };
            tracing::warn!(code = error.code(), "{error}");
            let id = request_id
                .as_ref()
                .or_else(|| parts.headers.get(crate::lifecycle::X_REQUEST_ID))
                .and_then(|v| v.to_str().ok())
                .unwrap_or("-");
            *outbox = answer_problem(writer, head_buf, std::mem::take(outbox), &error, id).await;
            Next::Close
        }
        Err(SendFailure::Body(e)) => {
            tracing::debug!("response cut off: {e}");
            if framing == BodyFraming::Close {
                Next::Reset
            } else {
                Next::Close
            }
        }
        Err(SendFailure::Io(e)) => {
            tracing::debug!("client connection failed while answering: {e}");
            Next::Gone
        }
    }
}

/// Writes the gateway's own answer for `error` (problem+json, and the connection closes
/// after it); gives the outbox back.
async fn answer_problem(
    writer: &mut WriteHalf<BoxIo>,
    head_buf: &mut BytesMut,
    outbox: Outbox,
    error: &ProxyError,
    request_id: &str,
) -> Outbox {
    let (parts, body) = rescue(error, request_id).into_parts();
    let exchange = response::Exchange {
        method_is_head: false,
        version: http::Version::HTTP_11,
        keep_alive: false,
    };
    let exact = body.size_hint().exact();
    let (bytes, framing, _) = response::head(head_buf, &parts, None, exact, exchange);
    let framing = framing.unwrap_or(BodyFraming::Length(0));
    let mut sender = BodySender::new(outbox, bytes, Some(body), framing);
    let _ = poll_fn(|cx| sender.poll_send(writer, cx)).await;
    sender.take_outbox()
}

/// Reads the next request head, within the timeouts. `Ok(None)`: the connection is to
/// close quietly (the client closed it, was too slow, or the gateway is stopping while
/// it is idle). `idle` is the shutdown signal, watched between requests.
async fn read_head<F: Future>(
    rd: &mut Reader,
    timer: &mut Deadline,
    mut idle: Option<Pin<&mut WhenWoken<F>>>,
    settings: &H1Settings,
) -> Result<Option<request::Head>, ProxyError> {
    poll_fn(|cx| {
        loop {
            let started = !rd.buf.is_empty();
            if started {
                if let Some(head) = request::parse(&mut rd.buf, settings.limits)? {
                    return Poll::Ready(Ok(Some(head)));
                }
            }
            match poll_read(&mut rd.io, cx, &mut rd.buf) {
                Poll::Ready(Ok(0) | Err(_)) => return Poll::Ready(Ok(None)),
                Poll::Ready(Ok(_)) => {
                    if !started {
                        if let Some(head) = request::parse(&mut rd.buf, settings.limits)? {
                            return Poll::Ready(Ok(Some(head)));
                        }
                        // A head begun: it has to be complete within the header timeout.
                        timer.set(settings.header_read_timeout);
                    }
                }
                Poll::Pending => break,
            }
        }
        if timer.poll_expired(cx) {
            tracing::debug!("request head not received in time; connection closed");
            return Poll::Ready(Ok(None));
        }
        if let Some(stop) = idle.as_mut().filter(|_| rd.buf.is_empty()) {
            if stop.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Ok(None));
            }
        }
        Poll::Pending
    })
    .await
}

/// Runs the request's lifecycle, answering `100 Continue` when the body is asked for.
async fn with_continue<F: Future>(
    handler: F,
    home: &Home,
    writer: &mut WriteHalf<BoxIo>,
) -> F::Output {
    let mut handler = pin!(handler);
    tokio::select! {
        biased;
        output = handler.as_mut() => return output,
        () = home.continue_wanted() => {}
    }
    if let Err(e) = writer.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await {
        tracing::debug!("could not send 100 Continue: {e}");
    }
    handler.await
}

/// Writes the `101` head, then hands the connection to the upgrade.
async fn switch(
    head: bytes::Bytes,
    reader: Option<Reader>,
    mut writer: WriteHalf<BoxIo>,
    upgrade: Option<oneshot::Sender<Upgraded>>,
) {
    if writer.write_all(&head).await.is_err() {
        return;
    }
    let (Some(reader), Some(upgrade)) = (reader, upgrade) else {
        return;
    };
    let io = reader.io.unsplit(writer);
    let _ = upgrade.send(Prefixed::new(reader.buf.to_vec(), io));
}

/// Closes the connection after its last answer: the write side first, then what the
/// client still sends is read and dropped, for a bounded time and size, so the answer is
/// not lost to a reset.
async fn linger(reader: Option<Reader>, mut writer: WriteHalf<BoxIo>) {
    let _ = writer.shutdown().await;
    let Some(mut reader) = reader else { return };
    let drain = async {
        let mut left = LINGER_BYTES;
        let mut scratch = [0u8; 4096];
        while left > 0 {
            match reader.io.read(&mut scratch).await {
                Ok(0) | Err(_) => return,
                Ok(n) => left = left.saturating_sub(n),
            }
        }
    };
    let _ = tokio::time::timeout(LINGER_TIME, drain).await;
}
