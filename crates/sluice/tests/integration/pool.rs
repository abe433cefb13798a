//! Keep-alive connections to targets: reused whatever the body framing, never reused with
//! a response left half read, replaced when the target closed them, closed when idle.

use crate::harness::*;
use crate::proxying::{app, bounded, h1_conn, read_response, ChannelBody};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, Notify};

/// An HTTP/1.1 origin that counts the connections it accepted and those that ended.
struct Counting {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    closed: Arc<AtomicUsize>,
    changed: Arc<Notify>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Counting {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Counting {
    /// Answers `/length` with a sized body, `/chunked` with a chunked one, `/empty` with
    /// 204, `/echo` with the request body and `/big` with 4 MiB streamed.
    async fn start() -> Counting {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind origin");
        let addr = listener.local_addr().expect("origin addr");
        let accepted = Arc::new(AtomicUsize::new(0));
        let closed = Arc::new(AtomicUsize::new(0));
        let changed = Arc::new(Notify::new());
        let (a, c, n) = (
            Arc::clone(&accepted),
            Arc::clone(&closed),
            Arc::clone(&changed),
        );
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                a.fetch_add(1, Ordering::SeqCst);
                let (c, n) = (Arc::clone(&c), Arc::clone(&n));
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(answer);
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                    c.fetch_add(1, Ordering::SeqCst);
                    n.notify_waiters();
                });
            }
        });
        Counting {
            addr,
            accepted,
            closed,
            changed,
            task,
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Waits until `n` connections have ended.
    async fn wait_closed(&self, n: usize) {
        bounded("the origin's connections to close", async {
            loop {
                let notified = self.changed.notified();
                if self.closed.load(Ordering::SeqCst) >= n {
                    return;
                }
                notified.await;
            }
        })
        .await;
    }
}

type Reply = Response<http_body_util::combinators::BoxBody<Bytes, std::io::Error>>;

async fn answer(request: Request<Incoming>) -> Result<Reply, std::convert::Infallible> {
    let reply = |status: u16, body| {
        Response::builder()
            .status(status)
            .body(body)
            .expect("response")
    };
    Ok(match request.uri().path() {
        "/length" => reply(200, boxed(Full::new(Bytes::from_static(b"0123456789")))),
        "/empty" => reply(204, boxed(Full::new(Bytes::new()))),
        "/echo" => {
            let body = request
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            reply(200, boxed(Full::new(body)))
        }
        path => {
            let (chunks, size) = if path == "/big" {
                (64, 64 * 1024)
            } else {
                (3, 5)
            };
            let (tx, rx) = mpsc::channel(4);
            tokio::spawn(async move {
                for i in 0..chunks {
                    let chunk = Bytes::from(vec![b'a' + (i % 26) as u8; size]);
                    if tx.send(Frame::data(chunk)).await.is_err() {
                        return;
                    }
                }
            });
            reply(200, ChannelBody(rx).boxed())
        }
    })
}

async fn fetch(gw: &Gateway, method: &str, path: &str, body: &'static str) -> (u16, Bytes) {
    let request = Request::builder()
        .method(method)
        .uri(gw.url(path))
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .expect("request");
    let (status, _, body) = send(request, false).await.expect("send");
    (status, body)
}

#[tokio::test]
async fn requests_in_turn_share_one_connection_whatever_the_framing() {
    let origin = Counting::start().await;
    let gw = Gateway::start(&app(&[origin.url()], "")).await;
    for _ in 0..3 {
        assert_eq!(
            fetch(&gw, "GET", "/length", "").await,
            (200, Bytes::from_static(b"0123456789"))
        );
        let (status, body) = fetch(&gw, "GET", "/chunked", "").await;
        assert_eq!((status, &body[..]), (200, &b"aaaaabbbbbccccc"[..]));
        assert_eq!(fetch(&gw, "GET", "/empty", "").await, (204, Bytes::new()));
        assert_eq!(fetch(&gw, "HEAD", "/length", "").await, (200, Bytes::new()));
        assert_eq!(
            fetch(&gw, "POST", "/echo", "sent and returned").await,
            (200, Bytes::from_static(b"sent and returned"))
        );
    }
    assert_eq!(
        origin.accepted(),
        1,
        "each request opened its own connection"
    );
}

#[tokio::test]
async fn a_response_left_half_read_never_leaves_its_connection_in_the_pool() {
    let origin = Counting::start().await;
    let gw = Gateway::start(&app(&[origin.url()], "")).await;
    let mut sender = h1_conn::<Empty<Bytes>>(gw.addr).await;
    let request = Request::get("/big")
        .header("host", "pool.test")
        .body(Empty::new())
        .expect("request");
    let response = bounded("the head of /big", sender.send_request(request))
        .await
        .expect("response head");
    assert_eq!(response.status(), 200);
    // The client leaves with most of the body unread.
    drop(response);
    drop(sender);
    origin.wait_closed(1).await;

    assert_eq!(
        fetch(&gw, "GET", "/length", "").await,
        (200, Bytes::from_static(b"0123456789"))
    );
    assert_eq!(origin.accepted(), 2);
}

#[tokio::test]
async fn idle_connections_close_after_pool_idle_timeout() {
    let origin = Counting::start().await;
    let gw = Gateway::start(&app(&[origin.url()], "pool_idle_timeout = \"200ms\"")).await;
    assert_eq!(fetch(&gw, "GET", "/length", "").await.0, 200);
    origin.wait_closed(1).await;
    assert_eq!(fetch(&gw, "GET", "/length", "").await.0, 200);
    assert_eq!(origin.accepted(), 2);
}

#[tokio::test]
async fn pool_max_idle_zero_keeps_no_connection() {
    let origin = Counting::start().await;
    let gw = Gateway::start(&app(&[origin.url()], "pool_max_idle = 0")).await;
    for n in 1..=3 {
        assert_eq!(fetch(&gw, "GET", "/length", "").await.0, 200);
        origin.wait_closed(n).await;
    }
    assert_eq!(origin.accepted(), 3);
}

/// A target that closes each connection after one response without saying so: the
/// gateway finds the pooled connection closed and opens another.
#[tokio::test]
async fn a_connection_the_target_closed_is_replaced() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind origin");
    let addr = listener.local_addr().expect("origin addr");
    let accepted = Arc::new(AtomicUsize::new(0));
    let (closed_tx, mut closed_rx) = mpsc::unbounded_channel();
    let count = Arc::clone(&accepted);
    let task = tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                .await;
            drop(stream);
            let _ = closed_tx.send(());
        }
    });
    let gw = Gateway::start(&app(&[format!("http://{addr}")], "")).await;
    for _ in 0..3 {
        let (status, _, body) = get(&gw.url("/once")).await;
        assert_eq!((status, &body[..]), (200, &b"ok"[..]));
        bounded("the origin to close", closed_rx.recv()).await;
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 3);
    task.abort();
}

/// A client that waits for `100 Continue` before sending its body gets it, then the
/// answer; the target's connection is still reused afterwards.
#[tokio::test]
async fn expect_continue_is_answered_and_the_connection_kept() {
    let origin = Counting::start().await;
    let gw = Gateway::start(&app(&[origin.url()], "")).await;
    for _ in 0..2 {
        let mut stream = tokio::net::TcpStream::connect(gw.addr)
            .await
            .expect("connect");
        stream
            .write_all(
                b"POST /echo HTTP/1.1\r\nHost: pool.test\r\nContent-Length: 5\r\n\
                  Expect: 100-continue\r\n\r\n",
            )
            .await
            .expect("write head");
        let mut buf = Vec::new();
        let interim = bounded("100 Continue", read_response(&mut stream, &mut buf)).await;
        assert_eq!(interim.status, 100, "{}", interim.head);
        stream.write_all(b"hello").await.expect("write body");
        let answer = bounded("the answer", read_response(&mut stream, &mut buf)).await;
        assert_eq!(answer.status, 200, "{}\n{}", answer.head, gw.log());
        assert_eq!(answer.body, b"hello");
    }
    assert_eq!(origin.accepted(), 1);
}
