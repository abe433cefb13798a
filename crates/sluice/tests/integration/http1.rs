//! HTTP/1.1 from clients, through Sluice's own codec: pipelining, HTTP/1.0, keep-alive and
//! `100 Continue`, as raw bytes through the real gateway to real origins.

use crate::hardening::{exchange, gateway_for, gateway_with_limits, still_serves, RawOrigin};
use crate::harness::*;
use crate::proxying::{read_response, take_until, RawResponse};
use bytes::Bytes;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long a client waits for the gateway to close a connection: a bound on a hang, not
/// a measure of speed.
pub(crate) const CLOSE_WITHIN: Duration = Duration::from_secs(10);

/// A raw client connection to the gateway, with the bytes read past the last response.
pub(crate) struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    pub(crate) async fn open(addr: SocketAddr) -> Conn {
        let stream = TcpStream::connect(addr)
            .await
            .expect("connect to the gateway");
        Conn {
            stream,
            buf: Vec::new(),
        }
    }

    /// Writes `bytes` in one write.
    pub(crate) async fn send(&mut self, bytes: &str) {
        self.stream
            .write_all(bytes.as_bytes())
            .await
            .expect("write to the gateway");
    }

    /// The next response (length or chunked framing, or a `1xx` head).
    pub(crate) async fn response(&mut self) -> RawResponse {
        read_response(&mut self.stream, &mut self.buf).await
    }

    /// The next response head alone, for an answer that has no body (HEAD).
    pub(crate) async fn head_only(&mut self) -> RawResponse {
        let head = take_until(&mut self.stream, &mut self.buf, b"\r\n\r\n").await;
        let status = head
            .get(9..12)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("not a response: {head}"));
        RawResponse {
            status,
            head,
            body: Vec::new(),
            trailers: String::new(),
        }
    }

    /// The gateway closes the connection (FIN or reset) within [`CLOSE_WITHIN`], having
    /// sent nothing more.
    pub(crate) async fn closes(&mut self) -> Result<(), String> {
        if !self.buf.is_empty() {
            return Err(format!("bytes past the last response: {}", text(&self.buf)));
        }
        let mut chunk = [0u8; 4096];
        match tokio::time::timeout(CLOSE_WITHIN, self.stream.read(&mut chunk)).await {
            Err(_) => Err(format!("still open after {CLOSE_WITHIN:?}")),
            Ok(Ok(0) | Err(_)) => Ok(()),
            Ok(Ok(n)) => Err(format!("more bytes: {}", text(&chunk[..n]))),
        }
    }
}

/// The echo origin's view of the request a response answered.
fn echoed(response: &RawResponse) -> Seen {
    seen(&Bytes::from(response.body.clone()))
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order() {
    let origin = Origin::echo("a").await;
    let gw = gateway_for(&origin.url()).await;
    let mut conn = Conn::open(gw.addr).await;
    conn.send(concat!(
        "GET /app/one HTTP/1.1\r\nHost: a\r\n\r\n",
        "POST /app/two HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n\r\nbody",
        "GET /hello HTTP/1.1\r\nHost: a\r\n\r\n",
        "GET /app/four HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    ))
    .await;
    let one = conn.response().await;
    let two = conn.response().await;
    let hello = conn.response().await;
    let four = conn.response().await;
    for (i, r) in [&one, &two, &hello, &four].into_iter().enumerate() {
        assert_eq!(r.status, 200, "response {i}: {r:?}\n{}", gw.log());
    }
    let (one, two, four) = (echoed(&one), echoed(&two), echoed(&four));
    assert_eq!(
        [one.uri.as_str(), two.uri.as_str(), four.uri.as_str()],
        ["/app/one", "/app/two", "/app/four"]
    );
    assert_eq!((two.method.as_str(), two.body.as_str()), ("POST", "body"));
    assert_eq!(hello.body, b"hi", "{hello:?}");
    conn.closes()
        .await
        .expect("closed after the Connection: close request");
    assert_eq!(origin.hits.load(Ordering::SeqCst), 3);
    still_serves(&gw, &origin, "pipelining").await;
}

#[tokio::test]
async fn http10_clients_close_unless_they_ask_for_keep_alive() {
    let origin = Origin::echo("a").await;
    let gw = gateway_for(&origin.url()).await;

    // Without keep-alive: one answer, never chunked, then the gateway closes.
    let reply = exchange(gw.addr, "GET /app/plain HTTP/1.0\r\nHost: a\r\n\r\n").await;
    assert_eq!(reply.statuses(), [200], "{}", reply.text);
    assert!(reply.closed, "connection left open: {}", reply.text);
    assert_eq!(reply.header("transfer-encoding"), None, "{}", reply.text);
    if let Some(length) = reply.header("content-length") {
        assert_eq!(
            length.parse::<usize>(),
            Ok(reply.body().len()),
            "{}",
            reply.text
        );
    }
    let plain = seen(&Bytes::from(reply.body().to_string()));
    assert_eq!(plain.uri, "/app/plain");

    // With keep-alive: the answer says so and the connection carries a second request.
    let mut conn = Conn::open(gw.addr).await;
    conn.send("GET /app/k1 HTTP/1.0\r\nHost: a\r\nConnection: keep-alive\r\n\r\n")
        .await;
    let first = conn.response().await;
    assert_eq!(first.status, 200, "{first:?}");
    assert!(
        first
            .header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("keep-alive")),
        "{first:?}"
    );
    assert!(first.header("content-length").is_some(), "{first:?}");
    assert_eq!(echoed(&first).uri, "/app/k1");
    conn.send("GET /app/k2 HTTP/1.0\r\nHost: a\r\n\r\n").await;
    let second = conn.response().await;
    assert_eq!(second.status, 200, "{second:?}");
    assert_eq!(echoed(&second).uri, "/app/k2");
    conn.closes()
        .await
        .expect("closed after a request without keep-alive");
    assert_eq!(origin.hits.load(Ordering::SeqCst), 3);
    still_serves(&gw, &origin, "http/1.0").await;

    // A body of unknown size cannot be chunked for HTTP/1.0: it is read until close,
    // even though the client asked for keep-alive.
    let raw = RawOrigin::start(Some(
        b"HTTP/1.1 200 OK\r\nX-Raw: 1\r\n\r\nuntil the origin closes",
    ))
    .await;
    let gw = gateway_for(&raw.url()).await;
    let reply = exchange(
        gw.addr,
        "GET /app/r HTTP/1.0\r\nHost: a\r\nConnection: keep-alive\r\n\r\n",
    )
    .await;
    assert_eq!(reply.statuses(), [200], "{}", reply.text);
    assert!(reply.closed, "connection left open: {}", reply.text);
    assert_eq!(reply.header("transfer-encoding"), None, "{}", reply.text);
    assert_eq!(reply.header("x-raw"), Some("1"), "{}", reply.text);
    assert_eq!(reply.body(), "until the origin closes", "{}", reply.text);
    let after = exchange(gw.addr, "GET /hello HTTP/1.0\r\nHost: a\r\n\r\n").await;
    assert_eq!(after.statuses(), [200], "{}", after.text);
    assert_eq!(after.body(), "hi", "{}", after.text);
}

#[tokio::test]
async fn an_idle_connection_is_closed_after_the_keepalive_timeout() {
    let origin = Origin::echo("a").await;
    let gw = gateway_with_limits(&origin.url(), "keepalive_timeout = \"1s\"\n").await;
    let mut conn = Conn::open(gw.addr).await;
    conn.send("GET /app/idle HTTP/1.1\r\nHost: a\r\n\r\n").await;
    let response = conn.response().await;
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(echoed(&response).uri, "/app/idle");
    assert_eq!(response.header("connection"), None, "{response:?}");
    conn.closes()
        .await
        .expect("the idle connection is closed by the keep-alive timeout");
    still_serves(&gw, &origin, "keepalive timeout").await;
}

#[tokio::test]
async fn expect_100_continue_comes_before_a_forwarded_body() {
    let origin = Origin::echo("a").await;
    let gw = gateway_for(&origin.url()).await;
    let mut conn = Conn::open(gw.addr).await;
    conn.send(
        "POST /app/e HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\nExpect: 100-continue\r\n\r\n",
    )
    .await;
    let interim = conn.response().await;
    assert_eq!(interim.head, "HTTP/1.1 100 Continue", "{interim:?}");
    conn.send("hello world").await;
    let answer = conn.response().await;
    assert_eq!(answer.status, 200, "{answer:?}\n{}", gw.log());
    let seen = echoed(&answer);
    assert_eq!(
        (seen.uri.as_str(), seen.body.as_str()),
        ("/app/e", "hello world")
    );
    // The connection carries the next request.
    conn.send("GET /app/next HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        .await;
    let next = conn.response().await;
    assert_eq!(next.status, 200, "{next:?}");
    assert_eq!(echoed(&next).uri, "/app/next");
    conn.closes().await.expect("closed after Connection: close");
}

#[tokio::test]
async fn expect_100_continue_is_not_sent_for_the_gateways_own_answer() {
    let origin = Origin::echo("a").await;
    let gw = gateway_for(&origin.url()).await;
    for (path, status) in [("/nope", 404), ("/hello", 200)] {
        // The body is never sent: the client waits for `100 Continue`.
        let request = format!(
            "POST {path} HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n"
        );
        let reply = exchange(gw.addr, request).await;
        assert_eq!(reply.statuses(), [status], "{path}: {}", reply.text);
        assert!(
            !reply.text.contains("100 Continue"),
            "{path}: {}",
            reply.text
        );
        assert!(reply.closed, "{path}: connection left open: {}", reply.text);
    }
    assert_eq!(origin.hits.load(Ordering::SeqCst), 0);
    still_serves(&gw, &origin, "expect on a direct answer").await;
}

#[tokio::test]
async fn a_client_that_stops_reading_is_cut_off_after_the_send_timeout() {
    const SIZE: usize = 32 * 1024 * 1024;
    let origin = Origin::custom("big", |_| async {
        http::Response::new(boxed(http_body_util::Full::new(Bytes::from(vec![
            b'x';
            SIZE
        ]))))
    })
    .await;
    let gw = gateway_with_limits(&origin.url(), "send_timeout = \"1s\"\n").await;
    let mut stream = TcpStream::connect(gw.addr).await.expect("connect");
    stream
        .write_all(b"GET /app/big HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .expect("write the request");
    // Take nothing for well over the send timeout, then read whatever is there.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut got = 0usize;
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        match tokio::time::timeout(CLOSE_WITHIN, stream.read(&mut chunk)).await {
            Err(_) => panic!("still open after {CLOSE_WITHIN:?}, {got} bytes read"),
            Ok(Ok(0) | Err(_)) => break,
            Ok(Ok(n)) => got += n,
        }
    }
    assert!(
        got < SIZE,
        "the whole answer arrived ({got} bytes): the stalled connection was not cut\n{}",
        gw.log()
    );
    let mut conn = Conn::open(gw.addr).await;
    conn.send("GET /hello HTTP/1.1\r\nHost: a\r\n\r\n").await;
    let after = conn.response().await;
    assert_eq!((after.status, after.body.as_slice()), (200, &b"hi"[..]));
}
