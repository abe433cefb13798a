//! HTTP/1.1 hardening (HARDENING.md) against the real binary, with raw bytes on sockets.

use crate::harness::*;
use bytes::Bytes;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How long a raw client waits for the gateway: a bound on a hang, not an assertion.
const BOUND: Duration = Duration::from_secs(20);

/// What a raw client saw on one connection.
pub(crate) struct Reply {
    pub text: String,
    /// The gateway ended the connection (FIN or RST) before `BOUND` ran out.
    pub closed: bool,
}

impl Reply {
    /// The status of the first response.
    pub fn status(&self) -> Option<u16> {
        let rest = self.text.strip_prefix("HTTP/1.1 ")?;
        rest.get(..3)?.parse().ok()
    }

    /// A header of the first response.
    pub fn header(&self, name: &str) -> Option<&str> {
        let head = self.text.split("\r\n\r\n").next()?;
        head.lines().skip(1).find_map(|line| {
            let (k, v) = line.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }

    /// Everything after the first response head.
    pub fn body(&self) -> &str {
        self.text.split_once("\r\n\r\n").map_or("", |(_, b)| b)
    }

    /// The status of every response head that arrived, in order.
    pub fn statuses(&self) -> Vec<u16> {
        self.text
            .match_indices("HTTP/1.1 ")
            .filter_map(|(i, _)| self.text.get(i + 9..i + 12)?.parse().ok())
            .collect()
    }
}

/// Writes `bytes` on a new connection, then reads until the gateway closes it (or `BOUND`).
pub(crate) async fn exchange(addr: SocketAddr, bytes: impl Into<Vec<u8>>) -> Reply {
    let bytes = bytes.into();
    tokio::task::spawn_blocking(move || {
        let mut stream = TcpStream::connect(addr).expect("connect to the gateway");
        stream.set_read_timeout(Some(BOUND)).expect("read timeout");
        stream.write_all(&bytes).expect("write the request");
        read_to_close(&mut stream)
    })
    .await
    .expect("join raw client")
}

fn read_to_close(stream: &mut TcpStream) -> Reply {
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    let closed = loop {
        match stream.read(&mut buf) {
            Ok(0) => break true,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                break false
            }
            Err(_) => break true,
        }
    };
    Reply {
        text: String::from_utf8_lossy(&out).into_owned(),
        closed,
    }
}

/// An origin on a bare socket: reads one request head, then answers `reply` verbatim and
/// closes, or with `reply = None` resets the connection.
pub(crate) struct RawOrigin {
    pub addr: SocketAddr,
    pub hits: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for RawOrigin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl RawOrigin {
    pub async fn start(reply: Option<&'static [u8]>) -> RawOrigin {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind raw origin");
        let addr = listener.local_addr().expect("raw origin addr");
        let hits = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&hits);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                tokio::spawn(answer_raw(stream, Arc::clone(&counter), reply));
            }
        });
        RawOrigin { addr, hits, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

async fn answer_raw(
    mut stream: tokio::net::TcpStream,
    hits: Arc<AtomicUsize>,
    reply: Option<&'static [u8]>,
) {
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    hits.fetch_add(1, Ordering::SeqCst);
    match reply {
        Some(bytes) => {
            let _ = stream.write_all(bytes).await;
            let _ = stream.shutdown().await;
        }
        None => {
            let _ = stream.set_zero_linger();
        }
    }
}

/// A gateway proxying `/app` to `origin_url`, with a direct answer on `/hello`. The head
/// timeout is long so that only the gateway's own decision closes a connection.
pub(crate) async fn gateway_for(origin_url: &str) -> Gateway {
    gateway_with_limits(origin_url, "").await
}

/// [`gateway_for`] with `limits` (lines of `[server.limits]`) added.
pub(crate) async fn gateway_with_limits(origin_url: &str, limits: &str) -> Gateway {
    Gateway::start_with(
        &format!("[server.limits]\nheader_read_timeout = \"60s\"\n{limits}"),
        &format!(
            "[clusters.app]\ntargets = [\"{origin_url}\"]\n\n[[routes]]\nname = \"app\"\nprefix = \"/app\"\ncluster = \"app\"\n\n[[routes]]\nname = \"hello\"\npath = \"/hello\"\nrespond = {{ status = 200, body = \"hi\" }}\n"
        ),
    )
    .await
}

/// The gateway still proxies a normal request to the echo origin.
pub(crate) async fn still_serves(gw: &Gateway, origin: &Origin, case: &str) {
    let before = origin.hits.load(Ordering::SeqCst);
    let (status, _, body) = get(&gw.url("/app/after")).await;
    assert_eq!(
        status,
        200,
        "{case}: normal request afterwards\n{}",
        gw.log()
    );
    assert_eq!(seen(&body).uri, "/app/after", "{case}");
    assert_eq!(origin.hits.load(Ordering::SeqCst), before + 1, "{case}");
}

const POST: &str = "POST /app/x HTTP/1.1\r\nHost: a\r\n";

#[tokio::test]
async fn ambiguous_request_framing_gets_400_and_close_and_reaches_no_origin() {
    let origin = Origin::echo("a").await;
    let gw = gateway_for(&origin.url()).await;
    let chunked_hello = "\r\n5\r\nhello\r\n0\r\n\r\n";
    let cases = [
        (
            "te gzip, chunked",
            format!("Transfer-Encoding: gzip, chunked\r\n{chunked_hello}"),
        ),
        (
            "te unknown",
            format!("Transfer-Encoding: foo\r\n{chunked_hello}"),
        ),
        (
            "te obfuscated",
            format!("Transfer-Encoding: xchunked\r\n{chunked_hello}"),
        ),
        (
            "te chunked twice",
            format!("Transfer-Encoding: chunked, chunked\r\n{chunked_hello}"),
        ),
        (
            "te chunked not last",
            format!("Transfer-Encoding: chunked, gzip\r\n{chunked_hello}"),
        ),
        (
            "te chunked not last, two lines",
            format!("Transfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n{chunked_hello}"),
        ),
        (
            "cl twice, different",
            "Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!".into(),
        ),
        ("cl +5", "Content-Length: +5\r\n\r\nhello".into()),
        ("cl 5, 6", "Content-Length: 5, 6\r\n\r\nhello!".into()),
        ("cl -1", "Content-Length: -1\r\n\r\nhello".into()),
        (
            "obs-fold",
            "X-A: b\r\n  c\r\nContent-Length: 5\r\n\r\nhello".into(),
        ),
        (
            "space before colon",
            "Content-Length : 5\r\n\r\nhello".into(),
        ),
        (
            "bare CR",
            "X-A: b\rX-B: c\r\nContent-Length: 5\r\n\r\nhello".into(),
        ),
    ];
    for (case, rest) in cases {
        let before = origin.hits.load(Ordering::SeqCst);
        let reply = exchange(gw.addr, format!("{POST}{rest}")).await;
        assert_eq!(reply.status(), Some(400), "{case}: {}", reply.text);
        assert!(reply.closed, "{case}: connection left open: {}", reply.text);
        assert_eq!(reply.statuses(), [400], "{case}: {}", reply.text);
        assert_eq!(
            origin.hits.load(Ordering::SeqCst),
            before,
            "{case}: reached the origin"
        );
        still_serves(&gw, &origin, case).await;
    }
}

#[tokio::test]
async fn content_length_with_chunked_is_read_as_chunked_never_both_forwarded() {
    let origin = Origin::echo("a").await;
    let gw = gateway_for(&origin.url()).await;
    let smuggled = "GET /app/smuggled HTTP/1.1\r\nHost: a\r\n\r\n";
    let request = format!(
        "{POST}Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n{smuggled}"
    );
    let reply = exchange(gw.addr, request).await;
    assert_eq!(reply.status(), Some(200), "{}", reply.text);
    assert_eq!(reply.header("connection"), Some("close"), "{}", reply.text);
    assert!(reply.closed, "connection left open: {}", reply.text);
    assert_eq!(reply.statuses(), [200], "{}", reply.text);
    let seen = seen(&Bytes::from(reply.body().to_string()));
    assert_eq!((seen.uri.as_str(), seen.body.as_str()), ("/app/x", "hello"));
    assert_eq!(seen.header("content-length"), None, "{seen:?}");
    assert_eq!(
        seen.header("transfer-encoding"),
        Some("chunked"),
        "{seen:?}"
    );
    assert_eq!(
        origin.hits.load(Ordering::SeqCst),
        1,
        "the trailing request was forwarded"
    );
    still_serves(&gw, &origin, "cl+te").await;
}

/// A malformed chunk in the client's body is the client's fault: 400 and close, never a
/// 502 blaming the target.
#[tokio::test]
async fn a_malformed_request_chunk_is_the_clients_400() {
    let origin = Origin::echo("a").await;
    let gw = gateway_for(&origin.url()).await;
    let cases = [
        ("chunk size zz", "zz\r\nhello\r\n0\r\n\r\n"),
        (
            "chunk size overflow",
            "fffffffffffffffffff\r\nhello\r\n0\r\n\r\n",
        ),
        ("bare LF in chunk line", "5\nhello\r\n0\r\n\r\n"),
    ];
    for (case, body) in cases {
        let request = format!("{POST}Transfer-Encoding: chunked\r\n\r\n{body}");
        let reply = exchange(gw.addr, request).await;
        assert_eq!(reply.status(), Some(400), "{case}: {}", reply.text);
        assert!(
            reply.text.contains("bad_request_body"),
            "{case}: {}",
            reply.text
        );
        assert!(reply.closed, "{case}: connection left open: {}", reply.text);
        still_serves(&gw, &origin, case).await;
    }
}

/// An HTTP/1.0 target's answer reaches an HTTP/1.1 client as HTTP/1.1, on a connection
/// that stays open for the next request.
#[tokio::test]
async fn the_client_is_answered_in_its_own_http_version() {
    let origin = RawOrigin::start(Some(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok")).await;
    let gw = gateway_for(&origin.url()).await;
    let two = "GET /app/a HTTP/1.1\r\nHost: a\r\n\r\nGET /app/b HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";
    let reply = exchange(gw.addr, two).await;
    assert_eq!(reply.statuses(), [200, 200], "{}", reply.text);
    assert!(reply.text.starts_with("HTTP/1.1 200"), "{}", reply.text);
    assert!(!reply.text.contains("HTTP/1.0"), "{}", reply.text);
}

#[tokio::test]
async fn hop_by_hop_headers_are_removed_both_ways() {
    let origin = Origin::echo("a").await;
    let gw = gateway_for(&origin.url()).await;
    let request = concat!(
        "GET /app/x HTTP/1.1\r\nHost: a\r\nConnection: close, x-secret\r\nX-Secret: 1\r\n",
        "Keep-Alive: timeout=5\r\nProxy-Authorization: Basic eDp5\r\nTE: trailers, gzip\r\n",
        "Upgrade: foo/1\r\nX-Kept: y\r\n\r\n",
    );
    let reply = exchange(gw.addr, request).await;
    assert_eq!(reply.status(), Some(200), "{}", reply.text);
    let seen = seen(&Bytes::from(reply.body().to_string()));
    for name in [
        "connection",
        "x-secret",
        "keep-alive",
        "proxy-authorization",
        "upgrade",
    ] {
        assert_eq!(seen.header(name), None, "{name} was forwarded: {seen:?}");
    }
    assert_eq!(seen.header("te"), Some("trailers"));
    assert_eq!(seen.header("x-kept"), Some("y"));

    let raw = RawOrigin::start(Some(
        b"HTTP/1.1 200 OK\r\nConnection: x-internal\r\nX-Internal: secret\r\nKeep-Alive: timeout=5\r\nX-Kept: y\r\nContent-Length: 2\r\n\r\nok",
    ))
    .await;
    let gw = gateway_for(&raw.url()).await;
    let (status, headers, body) = get(&gw.url("/app/x")).await;
    assert_eq!((status, &body[..]), (200, &b"ok"[..]), "{}", gw.log());
    assert!(!headers.contains_key("x-internal"), "{headers:?}");
    assert!(!headers.contains_key("keep-alive"), "{headers:?}");
    assert_eq!(headers.get("x-kept").map(|v| v.as_bytes()), Some(&b"y"[..]));
}

#[tokio::test]
async fn broken_origin_framing_never_reaches_the_client_as_complete() {
    let short = RawOrigin::start(Some(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")).await;
    let gw = gateway_for(&short.url()).await;
    let reply = exchange(gw.addr, "GET /app/x HTTP/1.1\r\nHost: a\r\n\r\n").await;
    assert_incomplete(&reply, |r| {
        let declared: usize = r
            .header("content-length")
            .and_then(|v| v.parse().ok())
            .expect("a 200 with a content-length");
        r.body().len() < declared
    });

    let chunks = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n";
    let truncated = RawOrigin::start(Some(chunks)).await;
    let gw = gateway_for(&truncated.url()).await;
    let reply = exchange(gw.addr, "GET /app/x HTTP/1.1\r\nHost: a\r\n\r\n").await;
    assert_incomplete(&reply, |r| !r.body().ends_with("0\r\n\r\n"));

    for status_line in [
        &b"HTTP/1.1 2OO OK\r\nContent-Length: 2\r\n\r\nok"[..],
        b"hello\r\n\r\n",
    ] {
        let broken = RawOrigin::start(Some(status_line)).await;
        let gw = gateway_for(&broken.url()).await;
        let reply = exchange(
            gw.addr,
            "GET /app/x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert_eq!(reply.status(), Some(502), "{}", reply.text);
        assert_eq!(broken.hits.load(Ordering::SeqCst), 1);
    }
}

/// A response broken upstream reaches the client as a 502, as nothing, or as a 200 that
/// `truncated` confirms is short; in every case the connection is closed.
fn assert_incomplete(reply: &Reply, truncated: impl Fn(&Reply) -> bool) {
    assert!(reply.closed, "connection left open: {}", reply.text);
    match reply.status() {
        Some(502) => {}
        None if reply.text.is_empty() => {}
        Some(200) => assert!(truncated(reply), "looks complete: {}", reply.text),
        other => panic!("unexpected {other:?}: {}", reply.text),
    }
}

#[tokio::test]
async fn slow_request_heads_are_cut_off() {
    let origin = Origin::echo("a").await;
    let gw = Gateway::start_with(
        "[server.limits]\nheader_read_timeout = \"1s\"\n",
        &format!(
            "[clusters.app]\ntargets = [\"{}\"]\n\n[[routes]]\nname = \"app\"\nprefix = \"/app\"\ncluster = \"app\"\n",
            origin.url()
        ),
    )
    .await;
    let stalled = exchange(gw.addr, "GET /app/x HTTP/1.1\r\nHost: a\r\nX-A: b").await;
    let trickled = tokio::task::spawn_blocking(move || trickle(gw.addr))
        .await
        .expect("join trickling client");
    for (case, reply) in [("stalled", stalled), ("trickled", trickled)] {
        assert!(reply.closed, "{case}: the slow head kept its connection");
        let cut = reply.text.is_empty() || reply.status() == Some(408);
        assert!(cut, "{case}: {}", reply.text);
    }
    assert_eq!(origin.hits.load(Ordering::SeqCst), 0);
    still_serves(&gw, &origin, "slowloris").await;
}

/// Sends a request head one byte at a time, waiting up to 100ms for the gateway between
/// bytes, until the gateway closes the connection or the head is complete.
fn trickle(addr: SocketAddr) -> Reply {
    let head = format!(
        "GET /app/x HTTP/1.1\r\nHost: a\r\nX-Pad: {}\r\n\r\n",
        "p".repeat(200)
    );
    let mut stream = TcpStream::connect(addr).expect("connect to the gateway");
    stream
        .set_read_timeout(Some(Duration::from_millis(100)))
        .expect("read timeout");
    let mut buf = [0u8; 1024];
    for byte in head.as_bytes() {
        if stream.write_all(&[*byte]).is_err() {
            return Reply {
                text: String::new(),
                closed: true,
            };
        }
        match stream.read(&mut buf) {
            Ok(0) => {
                return Reply {
                    text: String::new(),
                    closed: true,
                }
            }
            Ok(n) => {
                let mut reply = read_to_close(&mut stream);
                reply
                    .text
                    .insert_str(0, &String::from_utf8_lossy(&buf[..n]));
                return reply;
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => {
                return Reply {
                    text: String::new(),
                    closed: true,
                }
            }
        }
    }
    stream.set_read_timeout(Some(BOUND)).expect("read timeout");
    read_to_close(&mut stream)
}

#[tokio::test]
async fn a_body_the_gateway_does_not_read_is_never_parsed_as_a_request() {
    let origin = Origin::echo("a").await;
    let gw = gateway_for(&origin.url()).await;
    let inner = "GET /app/smuggled HTTP/1.1\r\nHost: a\r\n\r\n";
    let length = format!("Content-Length: {}\r\n\r\n{inner}", inner.len());
    let chunked = format!(
        "Transfer-Encoding: chunked\r\n\r\n{:x}\r\n{inner}\r\n0\r\n\r\n",
        inner.len()
    );
    let marker = "GET /hello HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";
    let cases = [
        ("direct answer", "/hello", 200, &length),
        ("direct answer, chunked body", "/hello", 200, &chunked),
        ("no route", "/nope", 404, &length),
    ];
    for (case, path, status, rest) in cases {
        let request = format!("POST {path} HTTP/1.1\r\nHost: a\r\n{rest}{marker}");
        let reply = exchange(gw.addr, request).await;
        assert!(reply.closed, "{case}: connection left open: {}", reply.text);
        // The body is drained and the marker answered next, or the connection is closed.
        let statuses = reply.statuses();
        assert!(
            statuses == [status] || statuses == [status, 200],
            "{case}: {}",
            reply.text
        );
        assert!(
            reply
                .body()
                .starts_with(if status == 200 { "hi" } else { "{" }),
            "{case}: {}",
            reply.text
        );
        assert_eq!(
            origin.hits.load(Ordering::SeqCst),
            0,
            "{case}: reached the origin"
        );
    }
    still_serves(&gw, &origin, "unread body").await;
}
