//! Graceful shutdown: on a signal the gateway stops accepting, finishes what is in flight, exits 0.

use crate::harness::*;
use crate::proxying::ChannelBody;
use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Frame;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use std::io::ErrorKind;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, Notify};

/// Waits (bounded) for the gateway process to exit and returns its exit code.
pub(crate) async fn exit_code(gw: &mut Gateway) -> Option<i32> {
    for _ in 0..600 {
        let child = gw.child.as_mut().expect("the gateway is running");
        if let Some(status) = child.try_wait().expect("poll the gateway process") {
            gw.child = None;
            return status.code();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("sluice did not exit; log:\n{}", gw.log());
}

/// After a shutdown signal: `/ready` turns 503 and the data port refuses connections
/// (both polled, bounded) while the admin listener keeps answering.
async fn wait_until_draining(gw: &Gateway) {
    let mut ready = None;
    for _ in 0..400 {
        ready = try_get(&gw.admin_url("/ready")).await.ok().map(|a| a.0);
        if ready == Some(503) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(ready, Some(503), "/ready while draining\n{}", gw.log());
    for _ in 0..400 {
        match tokio::net::TcpStream::connect(gw.addr).await {
            Err(e) if e.kind() == ErrorKind::ConnectionRefused => return,
            _ => tokio::time::sleep(Duration::from_millis(25)).await,
        }
    }
    panic!(
        "the data port still accepts connections while draining\n{}",
        gw.log()
    );
}

/// An origin whose handler has started (`arrived`) and waits for the test (`release`).
pub(crate) struct Held {
    pub(crate) origin: Origin,
    pub(crate) arrived: Arc<Notify>,
    pub(crate) release: Arc<Notify>,
}

/// An origin that answers `body` in one piece once released.
pub(crate) async fn held_origin(body: &'static str) -> Held {
    let (arrived, release) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
    let (a, r) = (Arc::clone(&arrived), Arc::clone(&release));
    let origin = Origin::custom("held", move |_| {
        let (a, r) = (Arc::clone(&a), Arc::clone(&r));
        async move {
            a.notify_one();
            r.notified().await;
            Response::new(
                Full::new(Bytes::from_static(body.as_bytes()))
                    .map_err(|e| match e {})
                    .boxed(),
            )
        }
    })
    .await;
    Held {
        origin,
        arrived,
        release,
    }
}

/// An origin that sends `first` at once, then `rest` once released, then ends the body.
async fn streaming_origin(first: &'static str, rest: &'static str) -> Held {
    let (arrived, release) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
    let (a, r) = (Arc::clone(&arrived), Arc::clone(&release));
    let origin = Origin::custom("stream", move |_| {
        let (a, r) = (Arc::clone(&a), Arc::clone(&r));
        async move {
            let (tx, rx) = mpsc::channel(2);
            tokio::spawn(async move {
                let _ = tx
                    .send(Frame::data(Bytes::from_static(first.as_bytes())))
                    .await;
                a.notify_one();
                r.notified().await;
                let _ = tx
                    .send(Frame::data(Bytes::from_static(rest.as_bytes())))
                    .await;
            });
            let body: BoxBody<Bytes, std::io::Error> = ChannelBody(rx).boxed();
            Response::new(body)
        }
    })
    .await;
    Held {
        origin,
        arrived,
        release,
    }
}

fn proxy_to(origin: &Origin) -> String {
    format!(
        "[clusters.app]\ntargets = [\"{}\"]\n\n[[routes]]\nname = \"app\"\nprefix = \"/\"\ncluster = \"app\"\n",
        origin.url()
    )
}

/// Waits (bounded) for `notify`, so a broken origin fails the test instead of hanging it.
async fn bounded(notify: &Notify, what: &str) {
    tokio::time::timeout(Duration::from_secs(30), notify.notified())
        .await
        .unwrap_or_else(|_| panic!("{what} never happened"));
}

#[tokio::test]
async fn sigterm_finishes_the_request_in_flight_then_exits_0() {
    let body = "the whole answer, held until the test lets it go";
    let held = held_origin(body).await;
    let mut gw = Gateway::start(&proxy_to(&held.origin)).await;
    let url = gw.url("/slow");
    let in_flight = tokio::spawn(async move { get(&url).await });
    bounded(&held.arrived, "the request reaching the origin").await;

    gw.signal("TERM");
    wait_until_draining(&gw).await;
    held.release.notify_one();
    let (status, headers, got) = in_flight.await.expect("join the request in flight");
    assert_eq!((status, &got[..]), (200, body.as_bytes()), "{}", gw.log());
    let connection = headers.get("connection").map(|v| v.as_bytes());
    assert_eq!(connection, Some(&b"close"[..]), "{headers:?}");
    assert_eq!(exit_code(&mut gw).await, Some(0), "{}", gw.log());
}

#[tokio::test]
async fn sigterm_lets_a_streaming_response_finish() {
    let held = streaming_origin("first piece, ", "last piece").await;
    let mut gw = Gateway::start(&proxy_to(&held.origin)).await;
    let stream = tokio::net::TcpStream::connect(gw.addr)
        .await
        .expect("connect to the gateway");
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("HTTP/1.1 handshake");
    let connection = tokio::spawn(connection);
    let request = Request::get("/stream")
        .header("host", "a")
        .body(Full::new(Bytes::new()))
        .expect("request");
    let response = sender.send_request(request).await.expect("response head");
    assert_eq!(response.status(), 200, "{}", gw.log());
    let mut body = response.into_body();
    let first = body
        .frame()
        .await
        .expect("a first frame")
        .expect("first frame");
    assert_eq!(
        first.into_data().ok(),
        Some(Bytes::from_static(b"first piece, "))
    );
    bounded(&held.arrived, "the first piece going out").await;

    gw.signal("TERM");
    wait_until_draining(&gw).await;
    held.release.notify_one();
    let rest = body
        .collect()
        .await
        .expect("the rest of the body")
        .to_bytes();
    assert_eq!(&rest[..], b"last piece");
    let ended = tokio::time::timeout(Duration::from_secs(30), connection).await;
    assert!(
        matches!(ended, Ok(Ok(Ok(())))),
        "client connection: {ended:?}"
    );
    assert_eq!(exit_code(&mut gw).await, Some(0), "{}", gw.log());
}

#[tokio::test]
async fn sigint_when_idle_exits_0() {
    let mut gw = Gateway::start("").await;
    gw.signal("INT");
    assert_eq!(exit_code(&mut gw).await, Some(0), "{}", gw.log());
}
