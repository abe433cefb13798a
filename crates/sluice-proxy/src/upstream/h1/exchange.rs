//! One request and response on one connection to a target: the request head and body
//! written (the body streamed, also while the response is read), the response head
//! parsed from the connection's read buffer.

use super::super::connector::UpstreamStream;
use super::super::headers::Added;
use super::super::RequestBody;
use crate::http1::deadline::Deadline;
use crate::http1::write::{self, BodyFraming, BodySender, Outbox, SendFailure};
use crate::http1::{head_end, poll_read, ConnectionTokens, Seen, READ_CHUNK};
use bytes::{Bytes, BytesMut};
use http::header::{CONNECTION, CONTENT_LENGTH, HOST, TRANSFER_ENCODING};
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Version};
use http_body::Body;
use std::io;
use std::mem::MaybeUninit;
use std::task::{ready, Context, Poll};

/// The largest response head read from a target.
const MAX_HEAD: usize = 64 * 1024;
/// The most header fields in a response head.
const MAX_FIELDS: usize = 128;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Why an exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum ExchangeError {
    /// The client's request body failed: the client's fault, not the target's.
    #[error(transparent)]
    Body(BoxError),
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("the target closed the connection before answering")]
    Closed,
    #[error("invalid response from the target: {0}")]
    Invalid(&'static str),
    /// No response head by the deadline ([`Conn::answer_by`]).
    #[error("no response before the deadline")]
    Timeout,
}

/// One keep-alive connection to a target, with its read buffer.
pub struct Conn {
    pub io: UpstreamStream,
    pub rbuf: BytesMut,
    /// Request heads are written here.
    pub wbuf: BytesMut,
    /// What a request sends is queued here.
    outbox: Outbox,
    /// When the last request on this connection started: its idle time counts from here.
    pub used: tokio::time::Instant,
    /// The response timeout of the request in flight, one timer for the connection's life.
    timer: Option<Deadline>,
}

impl Conn {
    pub fn new(io: UpstreamStream, used: tokio::time::Instant) -> Box<Self> {
        Box::new(Conn {
            io,
            rbuf: BytesMut::with_capacity(READ_CHUNK),
            wbuf: BytesMut::with_capacity(512),
            outbox: Outbox::default(),
            used,
            timer: None,
        })
    }

    /// The request in flight must have its response head by `at`.
    pub fn answer_by(&mut self, at: tokio::time::Instant) {
        match &mut self.timer {
            Some(timer) => timer.set_at(at),
            None => self.timer = Some(Deadline::at(at)),
        }
    }

    /// Whether the connection is quiet and still open: the target neither closed it nor
    /// sent anything unasked. Costs no system call while the socket has nothing to read.
    pub fn is_idle_and_open(&mut self, cx: &mut Context<'_>) -> bool {
        if !self.rbuf.is_empty() {
            return false;
        }
        // Room to read into: a read into no room would look like the end of the stream.
        self.rbuf.reserve(64);
        let quiet = match &self.io {
            // Readiness is checked without registering for a wake-up.
            UpstreamStream::Tcp(tcp) => tcp.try_read_buf(&mut self.rbuf),
            UpstreamStream::Unix(unix) => unix.try_read_buf(&mut self.rbuf),
            UpstreamStream::Tls(_) => {
                return poll_read(&mut self.io, cx, &mut self.rbuf).is_pending()
            }
        };
        matches!(quiet, Err(e) if e.kind() == io::ErrorKind::WouldBlock)
    }
}

/// A response head from a target.
pub struct Head {
    pub status: StatusCode,
    pub version: Version,
    pub headers: HeaderMap,
    /// Which framing headers it has.
    pub seen: Seen,
    /// The target keeps the connection open after this response.
    pub keep_alive: bool,
}

/// The request head for `method`, `target` and `headers`, framed for `body`: its length
/// when known, chunked otherwise. The client's own framing headers are not copied.
pub fn request_head(
    buf: &mut BytesMut,
    method: &Method,
    target: &str,
    headers: &HeaderMap,
    body: &RequestBody,
    added: Option<Added<'_>>,
) -> (Bytes, BodyFraming) {
    write::request_line(buf, method, target);
    if let Some(added) = added {
        buf.extend_from_slice(b"host: ");
        buf.extend_from_slice(added.host.as_bytes());
        buf.extend_from_slice(b"\r\n");
    }
    for (name, value) in headers {
        if name == CONTENT_LENGTH || name == TRANSFER_ENCODING {
            continue;
        }
        // The gateway's own headers are written below, in place of the client's.
        if added.is_some_and(|a| name == HOST || a.forwarding.replaces(name)) {
            continue;
        }
        buf.extend_from_slice(name.as_str().as_bytes());
        buf.extend_from_slice(b": ");
        buf.extend_from_slice(value.as_bytes());
        buf.extend_from_slice(b"\r\n");
    }
    let framing = if body.is_end_stream() {
        let expects_body = !matches!(
            *method,
            Method::GET | Method::HEAD | Method::DELETE | Method::OPTIONS | Method::TRACE
        );
        if expects_body || headers.contains_key(CONTENT_LENGTH) {
            write::content_length(buf, 0);
        }
        BodyFraming::Length(0)
    } else if let Some(n) = body.size_hint().exact() {
        write::content_length(buf, n);
        BodyFraming::Length(n)
    } else {
        buf.extend_from_slice(b"transfer-encoding: chunked\r\n");
        BodyFraming::Chunked
    };
    if let Some(added) = added {
        added.forwarding.write(buf);
    }
    buf.extend_from_slice(b"\r\n");
    (buf.split().freeze(), framing)
}

/// A request on its way: the part of it not yet written, and the response's head.
pub struct Exchange {
    /// Boxed once for the connection's life: an exchange moves with its response.
    pub conn: Box<Conn>,
    /// The body boxed: most requests have none, and an exchange moves with its response.
    sender: BodySender<Box<RequestBody>>,
    /// Writing failed: the connection cannot be reused.
    pub write_failed: Option<io::Error>,
}

impl Exchange {
    pub fn new(conn: Box<Conn>, head: Bytes, body: RequestBody, framing: BodyFraming) -> Self {
        let body = (!body.is_end_stream()).then(|| Box::new(body));
        let mut conn = conn;
        let outbox = std::mem::take(&mut conn.outbox);
        Exchange {
            conn,
            sender: BodySender::new(outbox, head, body, framing),
            write_failed: None,
        }
    }

    /// The connection, once the exchange is over, to carry the next one.
    pub fn into_conn(mut self) -> Box<Conn> {
        self.conn.outbox = self.sender.take_outbox();
        self.conn
    }

    /// Everything was written, or writing failed and stopped.
    pub fn is_sent(&self) -> bool {
        self.sender.is_sent() || self.write_failed.is_some()
    }

    /// A frame of the body was taken: the request cannot be sent again.
    pub fn is_touched(&self) -> bool {
        self.sender.is_touched()
    }

    /// The body, for another try, when none of it was taken.
    pub fn untouched_body(&mut self) -> Option<RequestBody> {
        self.sender.untouched_body().map(|body| *body)
    }

    /// Writes as much of the request as can go now. Fails only when the client's body
    /// does; a failed write stops the sending and is kept in `write_failed`.
    pub fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        if self.is_sent() {
            return Poll::Ready(Ok(()));
        }
        match ready!(self.sender.poll_send(&mut self.conn.io, cx)) {
            Ok(()) => Poll::Ready(Ok(())),
            Err(SendFailure::Body(e)) => Poll::Ready(Err(e)),
            Err(SendFailure::Io(e)) => {
                self.write_failed = Some(e);
                Poll::Ready(Ok(()))
            }
        }
    }

    /// Sends the request and reads the response head, skipping interim (1xx) answers
    /// other than `101 Switching Protocols`.
    pub fn poll_head(&mut self, cx: &mut Context<'_>) -> Poll<Result<Head, ExchangeError>> {
        loop {
            if let Poll::Ready(Err(e)) = self.poll_send(cx) {
                return Poll::Ready(Err(ExchangeError::Body(e)));
            }
            if let Some(head) = parse_head(&mut self.conn.rbuf)? {
                if head.status.is_informational() && head.status != StatusCode::SWITCHING_PROTOCOLS
                {
                    continue;
                }
                return Poll::Ready(Ok(head));
            }
            let read = match poll_read(&mut self.conn.io, cx, &mut self.conn.rbuf) {
                Poll::Ready(read) => read,
                Poll::Pending => {
                    if self.conn.timer.as_mut().is_some_and(|t| t.poll_expired(cx)) {
                        return Poll::Ready(Err(ExchangeError::Timeout));
                    }
                    return Poll::Pending;
                }
            };
            match read {
                Ok(0) => {
                    return Poll::Ready(Err(match self.write_failed.take() {
                        Some(e) => ExchangeError::Io(e),
                        None => ExchangeError::Closed,
                    }))
                }
                Ok(_) => {}
                Err(e) => return Poll::Ready(Err(ExchangeError::Io(e))),
            }
        }
    }
}

/// Parses a response head at the start of `buf`, once it is all there: split off the
/// buffer first and parsed in place, so header values share its bytes.
fn parse_head(buf: &mut BytesMut) -> Result<Option<Head>, ExchangeError> {
    let Some(end) = head_end(buf) else {
        if buf.len() > MAX_HEAD {
            return Err(ExchangeError::Invalid("response head too large"));
        }
        return Ok(None);
    };
    let head = buf.split_to(end + 4).freeze();
    let mut fields = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_FIELDS];
    let mut response = httparse::Response::new(&mut []);
    match httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut response,
        &head,
        &mut fields,
    ) {
        Ok(httparse::Status::Complete(len)) if len == head.len() => {}
        Err(httparse::Error::TooManyHeaders) => {
            return Err(ExchangeError::Invalid("too many header fields"))
        }
        _ => return Err(ExchangeError::Invalid("malformed response head")),
    }
    let status = response
        .code
        .and_then(|c| StatusCode::from_u16(c).ok())
        .ok_or(ExchangeError::Invalid("invalid status code"))?;
    let version = if response.version == Some(0) {
        Version::HTTP_10
    } else {
        Version::HTTP_11
    };
    // Room for the headers the gateway adds on the way back.
    let mut headers = HeaderMap::with_capacity(response.headers.len() + 4);
    let mut seen = Seen::default();
    let mut tokens = ConnectionTokens::default();
    for field in response.headers.iter() {
        let name = HeaderName::from_bytes(field.name.as_bytes())
            .map_err(|_| ExchangeError::Invalid("invalid header name"))?;
        // A `Connection` that names no other header is hop-by-hop and nothing more:
        // read here, never kept.
        if name == CONNECTION && !tokens.read(field.value) {
            continue;
        }
        seen.note(&name, field.value);
        let value = HeaderValue::from_maybe_shared(head.slice_ref(field.value))
            .map_err(|_| ExchangeError::Invalid("invalid header value"))?;
        headers.append(name, value);
    }
    Ok(Some(Head {
        status,
        version,
        headers,
        seen,
        keep_alive: !tokens.close && (version == Version::HTTP_11 || tokens.keep_alive),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_heads_whole_or_waits() {
        let mut buf =
            BytesMut::from(&b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-A: b\r\n\r\nok"[..]);
        let head = parse_head(&mut buf).expect("valid").expect("complete");
        assert_eq!(head.status, StatusCode::OK);
        assert_eq!(head.headers["x-a"], "b");
        assert_eq!(&buf[..], b"ok");
        let mut partial = BytesMut::from(&b"HTTP/1.1 200 OK\r\nContent-Le"[..]);
        assert!(parse_head(&mut partial).expect("valid so far").is_none());
        for bad in [&b"HTTP/1.1 2OO OK\r\n\r\n"[..], b"hello\r\n\r\n"] {
            assert!(parse_head(&mut BytesMut::from(bad)).is_err());
        }
    }

    #[test]
    fn keep_alive_follows_version_and_connection() {
        let keeps = |head: &str| {
            let mut buf = BytesMut::from(head.as_bytes());
            parse_head(&mut buf)
                .expect("valid")
                .expect("complete")
                .keep_alive
        };
        assert!(keeps("HTTP/1.1 200 OK\r\n\r\n"));
        assert!(!keeps("HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n"));
        assert!(!keeps("HTTP/1.1 200 OK\r\nConnection: x-a, Close\r\n\r\n"));
        assert!(!keeps("HTTP/1.0 200 OK\r\n\r\n"));
        assert!(keeps("HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\n\r\n"));
        // A plain `keep-alive` is not kept as a header; one naming others is, to be
        // stripped with what it names.
        let mut buf = BytesMut::from(&b"HTTP/1.1 200 OK\r\nConnection: keep-alive\r\n\r\n"[..]);
        let head = parse_head(&mut buf).expect("valid").expect("complete");
        assert!(!head.headers.contains_key(CONNECTION));
        let mut buf = BytesMut::from(&b"HTTP/1.1 200 OK\r\nConnection: x-a\r\n\r\n"[..]);
        let head = parse_head(&mut buf).expect("valid").expect("complete");
        assert!(head.keep_alive && head.headers.contains_key(CONNECTION));
    }
}
