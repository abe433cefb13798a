//! HTTP/1.1 towards targets, through Sluice's own codec: what a target sends, sends
//! wrongly or cuts short, and what the client gets of it. Raw bytes, real gateway, origins
//! on bare sockets.

use crate::hardening::{gateway_for, RawOrigin};
use crate::harness::*;
use crate::http1::{Conn, CLOSE_WITHIN};
use crate::proxying::{read_chunked, take_exact, take_until};
use bytes::Bytes;
use http_body_util::Full;
use hyper::Response;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What a [`BareOrigin`] does with a request, by its path and how many requests with that
/// path came before it (on any connection).
#[derive(Debug, Clone, Copy)]
enum Act {
    /// `200 ok`, keeping the connection, after waiting this long.
    Answer(Duration),
    /// Answers these bytes verbatim and keeps the connection.
    Raw(&'static [u8]),
    /// Closes the connection without answering.
    Close,
    /// Answers these bytes verbatim, then closes the connection a moment later.
    RawThenClose(&'static [u8]),
    /// Answers these bytes verbatim and closes the connection at once.
    RawAndClose(&'static [u8]),
}

/// How long a [`BareOrigin`] waits for a request body to end before it takes it for
/// incomplete: a bound on a hang, not a measure of speed.
const BODY_WITHIN: Duration = Duration::from_secs(10);

/// One request as a [`BareOrigin`] read it.
#[derive(Debug, Clone)]
struct Received {
    /// Which of the origin's connections (counted from 0, in accept order) carried it.
    conn: usize,
    head: String,
    /// The body's data (length or chunked framing), once it is complete.
    body: Vec<u8>,
    /// Trailer lines, each ended by `\n`.
    trailers: String,
    /// The body was framed completely (its length, or chunks up to the last one and the
    /// trailers) within [`BODY_WITHIN`].
    complete: bool,
}

impl Received {
    fn path(&self) -> &str {
        self.head.split(' ').nth(1).unwrap_or("")
    }
}

/// An origin on a bare socket that reads whole requests (length or chunked bodies) on
/// keep-alive connections, keeps what it read, and acts as its script says.
struct BareOrigin {
    addr: SocketAddr,
    received: Arc<Mutex<Vec<Received>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for BareOrigin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl BareOrigin {
    /// Answers every request `200 ok`, keeping the connection.
    async fn start() -> BareOrigin {
        BareOrigin::scripted(|_, _| Act::Answer(Duration::ZERO)).await
    }

    async fn scripted(script: fn(&str, usize) -> Act) -> BareOrigin {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind origin");
        let addr = listener.local_addr().expect("origin addr");
        let received = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&received);
        let task = tokio::spawn(async move {
            for conn in 0.. {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                tokio::spawn(serve(stream, conn, Arc::clone(&log), script));
            }
        });
        BareOrigin {
            addr,
            received,
            task,
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn received(&self) -> Vec<Received> {
        self.received
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

async fn serve(
    mut stream: TcpStream,
    conn: usize,
    log: Arc<Mutex<Vec<Received>>>,
    script: fn(&str, usize) -> Act,
) {
    let mut buf = Vec::new();
    loop {
        // Waits for the next request as long as the gateway keeps the connection.
        if buf.is_empty() {
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let head = take_until(&mut stream, &mut buf, b"\r\n\r\n").await;
        let lower = head.to_ascii_lowercase();
        let chunked = lower.contains("\r\ntransfer-encoding: chunked");
        let length: usize = lower
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .map_or(0, |v| v.trim().parse().unwrap_or(0));
        // Kept before its body is read, as incomplete: a body cut off by a close ends this
        // task inside the reading helpers, which panic on an early end.
        let received = Received {
            conn,
            head,
            body: Vec::new(),
            trailers: String::new(),
            complete: false,
        };
        let path = received.path().to_string();
        let (before, index) = {
            let mut log = log.lock().unwrap_or_else(PoisonError::into_inner);
            let before = log.iter().filter(|r| r.path() == path).count();
            log.push(received);
            (before, log.len() - 1)
        };
        let body = tokio::time::timeout(BODY_WITHIN, async {
            if chunked {
                read_chunked(&mut stream, &mut buf).await
            } else {
                let body = take_exact(&mut stream, &mut buf, length).await;
                (body, String::new())
            }
        })
        .await;
        if let Ok((body, trailers)) = body {
            let mut log = log.lock().unwrap_or_else(PoisonError::into_inner);
            let received = &mut log[index];
            (received.body, received.trailers) = (body, trailers);
            received.complete = true;
        }
        match script(&path, before) {
            Act::Answer(after) => {
                tokio::time::sleep(after).await;
                let ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
                if stream.write_all(ok).await.is_err() {
                    return;
                }
            }
            Act::Raw(bytes) => {
                if stream.write_all(bytes).await.is_err() {
                    return;
                }
            }
            Act::Close => return,
            Act::RawAndClose(bytes) => {
                let _ = stream.write_all(bytes).await;
                let _ = stream.shutdown().await;
                return;
            }
            Act::RawThenClose(bytes) => {
                let _ = stream.write_all(bytes).await;
                tokio::time::sleep(Duration::from_millis(300)).await;
                return;
            }
        }
    }
}

#[tokio::test]
async fn a_chunked_request_body_with_trailers_reaches_the_origin_chunked() {
    let origin = BareOrigin::start().await;
    let gw = gateway_for(&origin.url()).await;
    let mut conn = Conn::open(gw.addr).await;
    conn.send(concat!(
        "POST /app/c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n",
        "5\r\nhello\r\n6\r\n world\r\n0\r\nX-Sum: 42\r\nX-Other: z\r\n\r\n",
    ))
    .await;
    let answer = conn.response().await;
    assert_eq!(
        (answer.status, &answer.body[..]),
        (200, &b"ok"[..]),
        "{answer:?}\n{}",
        gw.log()
    );
    conn.send("GET /app/next HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        .await;
    let next = conn.response().await;
    assert_eq!((next.status, &next.body[..]), (200, &b"ok"[..]), "{next:?}");
    conn.closes().await.expect("closed after Connection: close");

    let received = origin.received();
    assert_eq!(received.len(), 2, "{received:?}");
    let post = &received[0];
    let head = post.head.to_ascii_lowercase();
    assert!(head.starts_with("post /app/c http/1.1\r\n"), "{post:?}");
    assert!(
        head.contains("\r\ntransfer-encoding: chunked"),
        "not chunked: {post:?}"
    );
    assert!(!head.contains("\r\ncontent-length:"), "{post:?}");
    assert_eq!(text(&post.body), "hello world", "{post:?}");
    assert_eq!(
        post.trailers.to_ascii_lowercase(),
        "x-sum: 42\nx-other: z\n",
        "{post:?}"
    );
    assert!(
        received[1].head.starts_with("GET /app/next HTTP/1.1\r\n"),
        "{received:?}"
    );
}

#[tokio::test]
async fn a_chunked_response_with_trailers_reaches_the_client_chunked() {
    let origin = RawOrigin::start(Some(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\nX-Sum: 42\r\n\r\n",
    ))
    .await;
    let gw = gateway_for(&origin.url()).await;
    let mut conn = Conn::open(gw.addr).await;
    for (i, last) in [(1, false), (2, true)] {
        let close = if last { "Connection: close\r\n" } else { "" };
        conn.send(&format!(
            "GET /app/t{i} HTTP/1.1\r\nHost: a\r\nTE: trailers\r\n{close}\r\n"
        ))
        .await;
        let response = conn.response().await;
        assert_eq!(response.status, 200, "{i}: {response:?}\n{}", gw.log());
        assert_eq!(
            response.header("transfer-encoding"),
            Some("chunked"),
            "{i}: {response:?}"
        );
        assert_eq!(response.header("content-length"), None, "{i}: {response:?}");
        assert_eq!(text(&response.body), "hello world", "{i}: {response:?}");
        assert!(
            response.trailers.to_ascii_lowercase().contains("x-sum: 42"),
            "{i}: {response:?}"
        );
    }
    conn.closes().await.expect("closed after Connection: close");
    assert_eq!(origin.hits.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_close_delimited_response_is_framed_for_the_client() {
    let body = "read until the origin closes";
    let origin = RawOrigin::start(Some(
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nread until the origin closes",
    ))
    .await;
    let gw = gateway_for(&origin.url()).await;
    let mut conn = Conn::open(gw.addr).await;
    for (i, last) in [(1, false), (2, true)] {
        let close = if last { "Connection: close\r\n" } else { "" };
        conn.send(&format!("GET /app/u{i} HTTP/1.1\r\nHost: a\r\n{close}\r\n"))
            .await;
        let response = conn.response().await;
        assert_eq!(response.status, 200, "{i}: {response:?}\n{}", gw.log());
        let chunked = response.header("transfer-encoding") == Some("chunked");
        let length = response.header("content-length");
        assert!(
            chunked != length.is_some(),
            "{i}: framed by exactly one of chunks or length: {response:?}"
        );
        if let Some(length) = length {
            assert_eq!(length, body.len().to_string(), "{i}: {response:?}");
        }
        assert_eq!(text(&response.body), body, "{i}: {response:?}");
        if !last {
            assert_eq!(response.header("connection"), None, "{i}: {response:?}");
        }
    }
    conn.closes().await.expect("closed after Connection: close");
    assert_eq!(origin.hits.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_head_answer_has_the_length_but_no_body() {
    let origin = Origin::custom("head", |req| async move {
        Response::builder()
            .header("content-length", "11")
            .header("x-method", req.method().as_str())
            .body(boxed(Full::new(Bytes::from_static(b"hello world"))))
            .expect("response")
    })
    .await;
    let gw = gateway_for(&origin.url()).await;
    let mut conn = Conn::open(gw.addr).await;
    conn.send("HEAD /app/h HTTP/1.1\r\nHost: a\r\n\r\n").await;
    let head = conn.head_only().await;
    assert_eq!(head.status, 200, "{head:?}\n{}", gw.log());
    assert_eq!(head.header("x-method"), Some("HEAD"), "{head:?}");
    assert_eq!(head.header("content-length"), Some("11"), "{head:?}");
    assert_eq!(head.header("transfer-encoding"), None, "{head:?}");
    // Body bytes after the HEAD answer would be read here in place of the next head.
    conn.send("GET /app/g HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        .await;
    let get = conn.response().await;
    assert_eq!(get.status, 200, "{get:?}");
    assert_eq!(get.header("x-method"), Some("GET"), "{get:?}");
    assert_eq!(text(&get.body), "hello world", "{get:?}");
    conn.closes().await.expect("closed after Connection: close");
    assert_eq!(origin.hits.load(Ordering::SeqCst), 2);
}

/// A request retried on a new connection after its pooled one closed must be framed as
/// it was the first time, whole: an empty chunked body (`0\r\n\r\n`) is "untouched" by the
/// first try (no data frame was taken), so the retry goes out with the cached
/// `transfer-encoding: chunked` head and an empty replacement body, which writes no last
/// chunk. The target waits for a body that never ends; the connection is desynchronised.
#[tokio::test]
async fn a_retried_chunked_request_still_ends_its_body() {
    let origin = BareOrigin::scripted(|path, before| match (path, before) {
        ("/app/x", 0) => Act::Close,
        _ => Act::Answer(Duration::ZERO),
    })
    .await;
    let gw = gateway_for(&origin.url()).await;
    let mut conn = Conn::open(gw.addr).await;
    // A pooled connection to the target.
    conn.send("GET /app/warm HTTP/1.1\r\nHost: a\r\n\r\n").await;
    let warm = conn.response().await;
    assert_eq!(warm.status, 200, "{warm:?}\n{}", gw.log());
    // Sent on the pooled connection, which the target closes; retried on a new one.
    conn.send("PUT /app/x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
        .await;
    let answer = conn.response().await;
    assert_eq!(answer.status, 200, "{answer:?}\n{}", gw.log());
    let arrivals = origin.received();
    let tries: Vec<_> = arrivals
        .iter()
        .filter(|a| a.head.starts_with("PUT /app/x "))
        .collect();
    assert_eq!(tries.len(), 2, "{arrivals:#?}");
    for (i, a) in tries.iter().enumerate() {
        assert!(
            a.complete,
            "try {i}: the body never ended on the wire: {a:#?}\n{}",
            gw.log()
        );
    }
}

/// docs/proxying.md: "A pooled connection found closed before anything came back is
/// replaced once". `H1Client::send` loops instead: each pooled connection that the
/// target closes under the request is followed by the next pooled one, then a fresh
/// one, so a request that makes the target drop connections reaches it once per pooled
/// connection plus one.
#[tokio::test]
async fn a_request_on_a_closed_pooled_connection_is_replaced_only_once() {
    let origin = BareOrigin::scripted(|path, _| match path {
        "/app/poison" => Act::Close,
        _ => Act::Answer(Duration::from_millis(500)),
    })
    .await;
    let gw = gateway_for(&origin.url()).await;
    // Three requests at once: three connections to the target, all pooled afterwards.
    let slow: Vec<_> = (0..3)
        .map(|i| {
            let addr = gw.addr;
            tokio::spawn(async move {
                let mut conn = Conn::open(addr).await;
                conn.send(&format!("GET /app/slow{i} HTTP/1.1\r\nHost: a\r\n\r\n"))
                    .await;
                conn.response().await.status
            })
        })
        .collect();
    for task in slow {
        assert_eq!(task.await.expect("join"), 200, "{}", gw.log());
    }
    let mut conn = Conn::open(gw.addr).await;
    conn.send("GET /app/poison HTTP/1.1\r\nHost: a\r\n\r\n")
        .await;
    let answer = conn.response().await;
    assert_eq!(answer.status, 502, "{answer:?}\n{}", gw.log());
    let arrivals = origin.received();
    let tries = arrivals
        .iter()
        .filter(|a| a.head.starts_with("GET /app/poison "))
        .count();
    assert!(
        tries <= 2,
        "the GET reached the target {tries} times: {arrivals:#?}"
    );
}

/// A target response with both Content-Length and Transfer-Encoding has ambiguous
/// framing (RFC 9112 6.3: "ought to be handled as an error"; HARDENING.md: broken origin
/// framing is a 502). Read as chunked, fine; but the connection must not go back to the
/// pool, where a next request would be answered by whatever a length-framing reading of
/// the stream left behind.
#[tokio::test]
async fn a_response_framed_by_both_length_and_chunks_does_not_keep_its_connection() {
    let origin = BareOrigin::scripted(|path, _| match path {
        "/app/both" => Act::Raw(
            b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        ),
        _ => Act::Answer(Duration::ZERO),
    })
    .await;
    let gw = gateway_for(&origin.url()).await;
    let mut conn = Conn::open(gw.addr).await;
    conn.send("GET /app/both HTTP/1.1\r\nHost: a\r\n\r\n").await;
    let both = conn.response().await;
    if both.status == 200 {
        assert_eq!(text(&both.body), "hello", "{both:?}");
    } else {
        assert_eq!(both.status, 502, "{both:?}");
    }
    conn.send("GET /app/next HTTP/1.1\r\nHost: a\r\n\r\n").await;
    let next = conn.response().await;
    assert_eq!(next.status, 200, "{next:?}\n{}", gw.log());
    let arrivals = origin.received();
    let conns: Vec<usize> = arrivals.iter().map(|a| a.conn).collect();
    assert_eq!(conns.len(), 2, "{arrivals:#?}");
    assert_ne!(
        conns[0], conns[1],
        "the connection of the ambiguous response was reused: {arrivals:#?}"
    );
}

/// HARDENING.md: the gateway re-frames what it forwards, and a response with broken
/// framing is a 502. A HEAD (or 304) answer keeps the target's Content-Length lines
/// verbatim, without the check every other answer gets, so two disagreeing lengths (or
/// `+5`, `abc`) reach the client, and any cache behind it.
#[tokio::test]
async fn a_head_answer_never_passes_on_a_broken_content_length() {
    let origin = BareOrigin::scripted(|path, _| match path {
        "/app/h" => Act::Raw(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n"),
        _ => Act::Answer(Duration::ZERO),
    })
    .await;
    let gw = gateway_for(&origin.url()).await;
    let mut conn = Conn::open(gw.addr).await;
    conn.send("HEAD /app/h HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        .await;
    let head = conn.head_only().await;
    let lengths: Vec<&str> = head
        .head
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .filter(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
        .map(|(_, v)| v.trim())
        .collect();
    assert!(
        head.status == 502 || lengths.len() <= 1,
        "broken framing passed on: {head:?}"
    );
}

/// docs/proxying.md: "A response that fails after its head was sent ... the gateway
/// closes the client connection (HTTP/1.1) ... so a truncated response never looks
/// complete." An HTTP/1.0 client's answer is read until close, so a plain close (FIN) is
/// exactly what a complete answer looks like; only a reset tells it apart.
#[tokio::test]
async fn a_truncated_answer_to_an_http10_client_does_not_end_like_a_complete_one() {
    // The head and part of a chunked body, then the origin closes.
    let origin = BareOrigin::scripted(|_, _| {
        Act::RawThenClose(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
    })
    .await;
    let gw = gateway_for(&origin.url()).await;
    let mut stream = TcpStream::connect(gw.addr).await.expect("connect");
    stream
        .write_all(b"GET /app/cut HTTP/1.0\r\nHost: a\r\n\r\n")
        .await
        .expect("write");
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    let ending = loop {
        match tokio::time::timeout(CLOSE_WITHIN, stream.read(&mut chunk)).await {
            Err(_) => panic!("no end within {CLOSE_WITHIN:?}: {}", text(&got)),
            Ok(Ok(0)) => break "a clean end of stream",
            Ok(Ok(n)) => got.extend_from_slice(&chunk[..n]),
            Ok(Err(_)) => break "a reset",
        }
    };
    let got = text(&got);
    let looks_complete = ending == "a clean end of stream"
        && got.starts_with("HTTP/1.1 200")
        && !got.to_ascii_lowercase().contains("content-length")
        && got.ends_with("hello");
    assert!(
        !looks_complete,
        "the cut-off answer ended with {ending} and reads as complete: {got:?}\n{}",
        gw.log()
    );
}

/// A target that sends its head and the start of a body, then closes: when the gateway
/// sees the end of the connection before it wrote anything, it drops the head and body it
/// had queued and closes the client's connection with no answer at all, not even a 502
/// (nothing was sent, so one could still go). On a reused keep-alive connection an empty
/// close is what clients take for "never processed" and send the request again.
#[tokio::test]
async fn a_response_cut_before_anything_was_written_is_still_answered() {
    let origin = BareOrigin::scripted(|path, _| match path {
        "/app/cut" => {
            Act::RawAndClose(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
        }
        _ => Act::Answer(Duration::ZERO),
    })
    .await;
    let gw = gateway_for(&origin.url()).await;
    for i in 0..5 {
        let mut stream = TcpStream::connect(gw.addr).await.expect("connect");
        stream
            .write_all(b"POST /app/cut HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\n\r\nx")
            .await
            .expect("write");
        let mut got = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            match tokio::time::timeout(CLOSE_WITHIN, stream.read(&mut chunk)).await {
                Err(_) => panic!("{i}: no end within {CLOSE_WITHIN:?}: {}", text(&got)),
                Ok(Ok(0) | Err(_)) => break,
                Ok(Ok(n)) => got.extend_from_slice(&chunk[..n]),
            }
        }
        assert!(
            got.starts_with(b"HTTP/1.1 "),
            "{i}: the connection closed without any answer: {:?}\n{}",
            text(&got),
            gw.log()
        );
    }
}
