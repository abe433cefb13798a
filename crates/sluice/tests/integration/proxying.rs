//! Proxying through the real binary: headers, paths, HTTP/2, Unix sockets, streams, upgrades.

use crate::harness::*;
use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::{Body, Frame, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, Notify};

/// The longest a test waits for something that should come at once: a guard against
/// hanging forever, not a measure of speed.
pub(crate) const BOUND: Duration = Duration::from_secs(60);

/// Awaits `fut` at most [`BOUND`], panicking with `what` if it never completes.
pub(crate) async fn bounded<T>(what: &str, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(BOUND, fut)
        .await
        .unwrap_or_else(|_| panic!("still waiting after {BOUND:?}: {what}"))
}

/// A body fed frame by frame through a channel, for streaming tests.
pub(crate) struct ChannelBody(pub(crate) mpsc::Receiver<Frame<Bytes>>);

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        self.0.poll_recv(cx).map(|frame| frame.map(Ok))
    }
}

/// A sender and the body it feeds.
pub(crate) fn channel_body() -> (mpsc::Sender<Frame<Bytes>>, ChannelBody) {
    let (tx, rx) = mpsc::channel(8);
    (tx, ChannelBody(rx))
}

/// A data frame.
pub(crate) fn data(text: &'static str) -> Frame<Bytes> {
    Frame::data(Bytes::from_static(text.as_bytes()))
}

fn empty_body() -> BoxBody<Bytes, std::io::Error> {
    Empty::new().map_err(|never| match never {}).boxed()
}

/// One cluster `app` with `targets` (and `extra` keys) behind `prefix = "/"`.
pub(crate) fn app(targets: &[String], extra: &str) -> String {
    let targets: Vec<String> = targets.iter().map(|t| format!("\"{t}\"")).collect();
    format!(
        "[clusters.app]\ntargets = [{}]\n{extra}\n\n[[routes]]\nname = \"app\"\nprefix = \"/\"\ncluster = \"app\"\n",
        targets.join(", ")
    )
}

/// An HTTP/1.1 client connection (no pool) to `addr`.
pub(crate) async fn h1_conn<B>(addr: SocketAddr) -> hyper::client::conn::http1::SendRequest<B>
where
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("h1 handshake");
    tokio::spawn(conn.with_upgrades());
    sender
}

/// The whole body of `response`.
pub(crate) async fn body_bytes(response: Response<Incoming>) -> Bytes {
    let body = response.into_body().collect().await;
    body.expect("the whole body").to_bytes()
}

/// A response read off a raw connection, as the bytes said it.
#[derive(Debug)]
pub(crate) struct RawResponse {
    pub status: u16,
    pub head: String,
    pub body: Vec<u8>,
    pub trailers: String,
}

impl RawResponse {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|line| {
            let (k, v) = line.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

async fn fill<S: AsyncRead + Unpin>(stream: &mut S, buf: &mut Vec<u8>) {
    let mut chunk = [0u8; 8192];
    let n = bounded("bytes from the gateway", stream.read(&mut chunk))
        .await
        .expect("read");
    assert!(
        n > 0,
        "connection closed early; got {:?}",
        String::from_utf8_lossy(buf)
    );
    buf.extend_from_slice(&chunk[..n]);
}

/// Takes bytes up to and including the next `delimiter`, reading more as needed.
pub(crate) async fn take_until<S: AsyncRead + Unpin>(
    s: &mut S,
    buf: &mut Vec<u8>,
    delim: &[u8],
) -> String {
    loop {
        if let Some(i) = buf.windows(delim.len()).position(|w| w == delim) {
            let taken: Vec<u8> = buf.drain(..i + delim.len()).collect();
            return String::from_utf8_lossy(&taken[..i]).into_owned();
        }
        fill(s, buf).await;
    }
}

pub(crate) async fn take_exact<S: AsyncRead + Unpin>(
    s: &mut S,
    buf: &mut Vec<u8>,
    n: usize,
) -> Vec<u8> {
    while buf.len() < n {
        fill(s, buf).await;
    }
    buf.drain(..n).collect()
}

/// Reads one HTTP/1.1 response (length or chunked framing); `buf` keeps what follows it.
pub(crate) async fn read_response<S>(stream: &mut S, buf: &mut Vec<u8>) -> RawResponse
where
    S: AsyncRead + Unpin,
{
    let head = take_until(stream, buf, b"\r\n\r\n").await;
    let status = head
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not a response: {head}"));
    let mut response = RawResponse {
        status,
        head,
        body: Vec::new(),
        trailers: String::new(),
    };
    if status < 200 || status == 204 || status == 304 {
        return response;
    }
    if response.header("transfer-encoding") == Some("chunked") {
        (response.body, response.trailers) = read_chunked(stream, buf).await;
        return response;
    }
    let length: usize = response
        .header("content-length")
        .map(|v| v.parse().expect("content-length"))
        .unwrap_or(0);
    response.body = take_exact(stream, buf, length).await;
    response
}

/// Reads a chunked body (of a request or a response) after its head: the data, and the
/// trailer lines, each ended by `\n`; `buf` keeps what follows it.
pub(crate) async fn read_chunked<S>(stream: &mut S, buf: &mut Vec<u8>) -> (Vec<u8>, String)
where
    S: AsyncRead + Unpin,
{
    let mut body = Vec::new();
    loop {
        let line = take_until(stream, buf, b"\r\n").await;
        let size = line.split(';').next().unwrap_or("").trim();
        match usize::from_str_radix(size, 16).expect("chunk size") {
            0 => break,
            n => body.extend_from_slice(&take_exact(stream, buf, n + 2).await[..n]),
        }
    }
    let mut trailers = String::new();
    loop {
        let line = take_until(stream, buf, b"\r\n").await;
        if line.is_empty() {
            return (body, trailers);
        }
        trailers.push_str(&line);
        trailers.push('\n');
    }
}

/// Sends `request` on a new raw connection and reads one response.
pub(crate) async fn raw_exchange(addr: SocketAddr, request: &str) -> RawResponse {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request.as_bytes()).await.expect("write");
    read_response(&mut stream, &mut Vec::new()).await
}

#[tokio::test]
async fn hop_by_hop_headers_stay_on_their_hop() {
    let origin = Origin::echo("a").await;
    let noisy = Origin::custom("noisy", |_req| async {
        Response::builder()
            .header("connection", "x-internal")
            .header("x-internal", "1")
            .header("keep-alive", "timeout=5")
            .header("proxy-authenticate", "Basic")
            .header("upgrade", "h2c")
            .header("x-public", "1")
            .body(empty_body())
            .expect("response")
    })
    .await;
    let config = format!(
        "{}\n[clusters.noisy]\ntargets = [\"{}\"]\n\n[[routes]]\nname = \"noisy\"\npath = \"/noisy\"\ncluster = \"noisy\"\n",
        app(&[origin.url()], ""),
        noisy.url()
    );
    let gw = Gateway::start(&config).await;
    let response = raw_exchange(
        gw.addr,
        "GET /hop HTTP/1.1\r\nHost: shop.example.com\r\nConnection: close, X-Secret\r\n\
         Keep-Alive: timeout=5\r\nProxy-Authorization: Basic YTpi\r\nProxy-Connection: keep-alive\r\n\
         TE: trailers, deflate\r\nUpgrade: websocket\r\nX-Secret: 1\r\nX-Kept: yes\r\n\r\n",
    )
    .await;
    assert_eq!(response.status, 200, "{}", gw.log());
    let seen = seen(&Bytes::from(response.body));
    for gone in [
        "connection",
        "keep-alive",
        "proxy-authorization",
        "proxy-connection",
        "upgrade",
        "x-secret",
    ] {
        assert_eq!(
            seen.header(gone),
            None,
            "{gone} reached the origin: {seen:?}"
        );
    }
    assert_eq!(seen.header("te"), Some("trailers"));
    assert_eq!(seen.header("x-kept"), Some("yes"));

    let (status, headers, _) = get(&gw.url("/noisy")).await;
    assert_eq!(status, 200);
    for gone in ["x-internal", "keep-alive", "proxy-authenticate", "upgrade"] {
        assert!(!headers.contains_key(gone), "{gone} reached the client");
    }
    assert!(headers.contains_key("x-public"));
}

#[tokio::test]
async fn forwarding_headers_request_id_and_host() {
    let origin = Origin::echo("a").await;
    let gw = Gateway::start(&app(&[origin.url()], "")).await;
    let request = Request::get(gw.url("/fwd"))
        .header("host", "shop.example.com")
        .header("x-forwarded-for", "10.0.0.1")
        .header("x-forwarded-proto", "https")
        .header("x-forwarded-host", "evil.example.com")
        .header("x-request-id", "req-from-client-42")
        .body(Full::new(Bytes::new()))
        .expect("request");
    let (status, headers, body) = send(request, false).await.expect("send");
    assert_eq!(status, 200);
    let got = seen(&body);
    assert_eq!(got.header("x-forwarded-for"), Some("10.0.0.1, 127.0.0.1"));
    assert_eq!(got.header("x-forwarded-proto"), Some("http"));
    assert_eq!(got.header("x-forwarded-host"), Some("shop.example.com"));
    assert_eq!(got.header("host"), Some("shop.example.com"));
    assert_eq!(got.header("x-request-id"), Some("req-from-client-42"));
    // The gateway's values replace the client's: each arrives once.
    for name in [
        "host",
        "x-forwarded-for",
        "x-forwarded-proto",
        "x-forwarded-host",
        "x-request-id",
    ] {
        assert_eq!(got.headers.get(name).map(Vec::len), Some(1), "{name}");
    }
    assert_eq!(
        headers.get("x-request-id").map(|v| v.as_bytes()),
        Some(&b"req-from-client-42"[..])
    );

    let (_, headers, body) = get(&gw.url("/fwd")).await;
    let got = seen(&body);
    let id = headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .expect("a generated request id");
    assert!(!id.is_empty());
    assert_eq!(got.header("x-request-id"), Some(id));
    assert_eq!(got.header("x-forwarded-for"), Some("127.0.0.1"));
    let (_, headers2, _) = get(&gw.url("/fwd")).await;
    assert_ne!(headers2.get("x-request-id"), headers.get("x-request-id"));

    let gw = Gateway::start(&app(&[origin.url()], "preserve_host = false")).await;
    let request = Request::get(gw.url("/fwd"))
        .header("host", "shop.example.com")
        .body(Full::new(Bytes::new()))
        .expect("request");
    let (_, _, body) = send(request, false).await.expect("send");
    let seen = seen(&body);
    assert_eq!(seen.header("host"), Some(origin.addr.to_string().as_str()));
    assert_eq!(seen.headers.get("host").map(Vec::len), Some(1));
    assert_eq!(seen.header("x-forwarded-host"), Some("shop.example.com"));
}

#[tokio::test]
async fn normalised_path_is_what_the_origin_gets() {
    let origin = Origin::echo("a").await;
    let gw = Gateway::start(&app(&[origin.url()], "")).await;
    for (sent, forwarded) in [
        ("/app/a/../b//c%7e?x=%2F&y=1", "/app/b/c~?x=%2F&y=1"),
        ("/x/../app/./d%2d", "/app/d-"),
        ("/app/e%20f", "/app/e%20f"),
    ] {
        let request = format!("GET {sent} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
        let response = raw_exchange(gw.addr, &request).await;
        assert_eq!(response.status, 200, "GET {sent}");
        assert_eq!(
            seen(&Bytes::from(response.body)).uri,
            forwarded,
            "GET {sent}"
        );
    }
}

/// The path of an echo `uri`, which is absolute when the origin spoke HTTP/2.
fn path_of(uri: &str) -> &str {
    uri.strip_prefix("http://")
        .and_then(|rest| rest.find('/').map(|i| &rest[i..]))
        .unwrap_or(uri)
}

/// GET `path` on a fresh HTTP/1.1 or HTTP/2 (prior knowledge) connection to `addr`.
async fn fetch(addr: SocketAddr, http2: bool, path: &str) -> Response<Incoming> {
    if http2 {
        let stream = TcpStream::connect(addr).await.expect("connect");
        let (mut sender, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                .await
                .expect("h2 handshake");
        tokio::spawn(conn);
        let request = Request::get(format!("http://{addr}{path}")).body(Empty::<Bytes>::new());
        sender.send_request(request.expect("request")).await
    } else {
        let request = Request::get(path).header("host", addr.to_string());
        let mut sender = h1_conn::<Empty<Bytes>>(addr).await;
        sender
            .send_request(request.body(Empty::new()).expect("request"))
            .await
    }
    .unwrap_or_else(|e| panic!("GET {path} (h2: {http2}): {e}"))
}

#[tokio::test]
async fn http2_on_either_side() {
    let origin = Origin::echo("a").await;
    let h2 = Gateway::start(&app(&[origin.url()], "http2 = true")).await;
    let h1 = Gateway::start(&app(&[origin.url()], "")).await;
    for (gw, client_h2, origin_version) in [
        (&h2, true, "HTTP/2.0"),
        (&h2, false, "HTTP/2.0"),
        (&h1, true, "HTTP/1.1"),
    ] {
        let response = fetch(gw.addr, client_h2, "/v?q=1").await;
        let expected = if client_h2 {
            hyper::Version::HTTP_2
        } else {
            hyper::Version::HTTP_11
        };
        assert_eq!(
            (response.version(), response.status().as_u16()),
            (expected, 200)
        );
        let seen = seen(&body_bytes(response).await);
        assert_eq!(seen.version, origin_version, "client h2: {client_h2}");
        assert_eq!(path_of(&seen.uri), "/v?q=1");
        let host = if origin_version == "HTTP/2.0" {
            seen.uri
                .strip_prefix("http://")
                .and_then(|r| r.split('/').next())
        } else {
            seen.header("host")
        };
        assert_eq!(host, Some(gw.addr.to_string().as_str()), "{seen:?}");
    }
}

#[tokio::test]
async fn unix_socket_listener_and_target() {
    let dir = scratch_dir();
    let listen = dir.join("gw.sock");
    let origin_path = dir.join("origin.sock");
    let origin = Origin::echo_unix("u", &origin_path).await;
    let gw = Gateway::start_with(
        &format!("unix = [\"{}\"]", listen.display()),
        &app(&[format!("unix:{}", origin_path.display())], ""),
    )
    .await;
    let stream = tokio::net::UnixStream::connect(&listen)
        .await
        .expect("connect to the gateway's unix socket");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("h1 handshake");
    tokio::spawn(conn);
    for n in 0..2 {
        let request = Request::get(format!("/over/unix/{n}"))
            .header("host", "local.test")
            .body(Empty::<Bytes>::new())
            .expect("request");
        let response = sender.send_request(request).await.expect("request");
        assert_eq!(response.status(), 200, "{}", gw.log());
        let seen = seen(&body_bytes(response).await);
        assert_eq!(seen.uri, format!("/over/unix/{n}"));
        assert_eq!(seen.header("host"), Some("local.test"));
        assert_eq!(
            seen.header("x-forwarded-for"),
            None,
            "no peer IP on a socket"
        );
    }
    assert_eq!(origin.hits.load(std::sync::atomic::Ordering::Relaxed), 2);
    let (status, _, body) = get(&gw.url("/over/tcp")).await;
    assert_eq!((status, seen(&body).origin.as_str()), (200, "u"));
}

#[tokio::test]
async fn response_and_request_bodies_stream() {
    let release = Arc::new(Notify::new());
    let got_first = Arc::new(Notify::new());
    let (r, g) = (Arc::clone(&release), Arc::clone(&got_first));
    let origin = Origin::custom("stream", move |req: Request<Incoming>| {
        let (release, got_first) = (Arc::clone(&r), Arc::clone(&g));
        async move {
            let (tx, body) = channel_body();
            if req.uri().path() == "/download" {
                tokio::spawn(async move {
                    let _ = tx.send(data("first|")).await;
                    release.notified().await;
                    let _ = tx.send(data("rest")).await;
                });
            } else {
                let mut upload = req.into_body();
                let mut received = Vec::new();
                while let Some(Ok(frame)) = upload.frame().await {
                    received.extend_from_slice(frame.data_ref().map_or(&[][..], |d| d));
                    if received.starts_with(b"first|") {
                        got_first.notify_one();
                    }
                }
                let _ = tx.send(Frame::data(Bytes::from(received))).await;
            }
            Response::new(body.boxed())
        }
    })
    .await;
    let gw = Gateway::start(&app(&[origin.url()], "")).await;

    let mut sender = h1_conn::<Empty<Bytes>>(gw.addr).await;
    let request = Request::get("/download")
        .header("host", "a")
        .body(Empty::new())
        .expect("request");
    let response = sender.send_request(request).await.expect("response head");
    let mut body = response.into_body();
    let mut first = Vec::new();
    while first.len() < b"first|".len() {
        let frame = bounded(
            "the first chunk while the origin holds the rest",
            body.frame(),
        )
        .await
        .expect("a frame")
        .expect("frame");
        first.extend_from_slice(frame.data_ref().map_or(&[][..], |d| d));
    }
    assert_eq!(first, b"first|");
    release.notify_one();
    let rest = body.collect().await.expect("rest").to_bytes();
    assert_eq!(&rest[..], b"rest");

    let (tx, upload) = channel_body();
    let mut sender = h1_conn::<ChannelBody>(gw.addr).await;
    let request = Request::post("/upload")
        .header("host", "a")
        .body(upload)
        .expect("request");
    let response = tokio::spawn(sender.send_request(request));
    tx.send(data("first|")).await.expect("send first");
    bounded(
        "the origin to get the first chunk while the client holds the rest",
        got_first.notified(),
    )
    .await;
    tx.send(data("rest")).await.expect("send rest");
    drop(tx);
    let response = response.await.expect("join").expect("response");
    assert_eq!(&body_bytes(response).await[..], b"first|rest");
}

#[tokio::test]
async fn trailers_pass_through() {
    let origin = Origin::custom("trailers", |_req| async {
        let (tx, body) = channel_body();
        tokio::spawn(async move {
            let _ = tx.send(data("payload")).await;
            let mut trailers = http::HeaderMap::new();
            trailers.insert("x-checksum", http::HeaderValue::from_static("abc123"));
            let _ = tx.send(Frame::trailers(trailers)).await;
        });
        Response::builder()
            .header("trailer", "x-checksum")
            .body(body.boxed())
            .expect("response")
    })
    .await;
    let gw = Gateway::start(&app(&[origin.url()], "http2 = true")).await;
    let response = fetch(gw.addr, true, "/t").await;
    let body = response.into_body().collect().await.expect("body");
    let trailers = body.trailers().cloned().expect("trailers over h2");
    assert_eq!(
        trailers.get("x-checksum").map(|v| v.as_bytes()),
        Some(&b"abc123"[..])
    );
    assert_eq!(&body.to_bytes()[..], b"payload");

    let gw = Gateway::start(&app(&[origin.url()], "")).await;
    let response = raw_exchange(
        gw.addr,
        "GET /t HTTP/1.1\r\nHost: a\r\nTE: trailers\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(response.body, b"payload", "{response:?}");
    assert!(
        response
            .trailers
            .to_ascii_lowercase()
            .contains("x-checksum: abc123"),
        "{response:?}"
    );
}

/// An origin that switches `Upgrade: websocket` requests to a byte stream: it says
/// "hello from origin" and then echoes every byte. Other requests get 400.
pub(crate) async fn ws_origin() -> Origin {
    Origin::custom("ws", |mut req: Request<Incoming>| async move {
        let asked = req.headers().get("upgrade").map(|v| v.as_bytes()) == Some(b"websocket")
            && req.headers().contains_key("sec-websocket-key");
        if !asked {
            return Response::builder()
                .status(400)
                .body(empty_body())
                .expect("response");
        }
        let on_upgrade = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            let Ok(upgraded) = on_upgrade.await else {
                return;
            };
            let mut io = TokioIo::new(upgraded);
            let _ = io.write_all(b"hello from origin\n").await;
            let mut buf = [0u8; 1024];
            while let Ok(n @ 1..) = io.read(&mut buf).await {
                let _ = io.write_all(&buf[..n]).await;
            }
        });
        Response::builder()
            .status(101)
            .header("connection", "upgrade")
            .header("upgrade", "websocket")
            .body(empty_body())
            .expect("response")
    })
    .await
}

/// The request head of a WebSocket handshake, after the request line.
pub(crate) const WS_HANDSHAKE: &str = "Host: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
                     Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

#[tokio::test]
async fn upgrades_switch_protocols_or_stay_http() {
    let ws = ws_origin().await;
    let plain = Origin::echo("plain").await;
    let config = format!(
        "{}\n[clusters.ws]\ntargets = [\"{}\"]\n\n[[routes]]\nname = \"ws\"\npath = \"/ws\"\ncluster = \"ws\"\n",
        app(&[plain.url()], ""),
        ws.url()
    );
    let gw = Gateway::start(&config).await;
    let handshake = WS_HANDSHAKE;

    let mut stream = TcpStream::connect(gw.addr).await.expect("connect");
    let mut buf = Vec::new();
    stream
        .write_all(format!("GET /ws HTTP/1.1\r\n{handshake}").as_bytes())
        .await
        .expect("write");
    let response = read_response(&mut stream, &mut buf).await;
    assert_eq!(response.status, 101, "{response:?}\n{}", gw.log());
    assert_eq!(response.header("upgrade"), Some("websocket"));
    assert_eq!(
        take_until(&mut stream, &mut buf, b"\n").await,
        "hello from origin"
    );
    for message in ["ping 1\n", "a longer second message\n"] {
        stream.write_all(message.as_bytes()).await.expect("write");
        let echoed = take_exact(&mut stream, &mut buf, message.len()).await;
        assert_eq!(echoed, message.as_bytes());
    }
    drop(stream);

    let mut stream = TcpStream::connect(gw.addr).await.expect("connect");
    let mut buf = Vec::new();
    stream
        .write_all(format!("GET /first HTTP/1.1\r\n{handshake}").as_bytes())
        .await
        .expect("write");
    let response = read_response(&mut stream, &mut buf).await;
    assert_eq!(response.status, 200, "{response:?}");
    let seen1 = seen(&Bytes::from(response.body));
    assert_eq!(seen1.header("upgrade"), Some("websocket"));
    stream
        .write_all(b"GET /second HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let response = read_response(&mut stream, &mut buf).await;
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(seen(&Bytes::from(response.body)).uri, "/second");
}
