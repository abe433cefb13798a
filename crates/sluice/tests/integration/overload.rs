//! Overload: connection limits per listener, and caps on requests in flight for the
//! whole gateway and per route, each answered 503 with Retry-After before work is done.

use crate::harness::*;
use crate::lifecycle::{held_origin, Held};
use crate::proxying::{bounded, read_response};
use std::sync::{Arc, Mutex};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

const REQUEST: &[u8] = b"GET /hello HTTP/1.1\r\nHost: a\r\n\r\n";

fn hello() -> &'static str {
    "[[routes]]\nname = \"hello\"\npath = \"/hello\"\nrespond = { status = 200, body = \"hi\" }\n"
}

async fn ask(stream: &mut TcpStream, buf: &mut Vec<u8>) -> u16 {
    stream.write_all(REQUEST).await.expect("write");
    read_response(stream, buf).await.status
}

#[tokio::test]
async fn connections_over_the_listener_limit_get_503_and_the_others_carry_on() {
    let gw = Gateway::start_with("[server.limits]\nmax_connections = 2", hello()).await;
    let (mut a, mut b) = (
        TcpStream::connect(gw.addr).await.expect("connect"),
        TcpStream::connect(gw.addr).await.expect("connect"),
    );
    let (mut buf_a, mut buf_b) = (Vec::new(), Vec::new());
    assert_eq!(ask(&mut a, &mut buf_a).await, 200);
    assert_eq!(ask(&mut b, &mut buf_b).await, 200);

    let mut third = TcpStream::connect(gw.addr).await.expect("connect");
    let mut buf = Vec::new();
    let refused = read_response(&mut third, &mut buf).await;
    assert_eq!(refused.status, 503, "{refused:?}");
    assert_eq!(refused.header("retry-after"), Some("1"));
    assert!(
        String::from_utf8_lossy(&refused.body).contains("urn:sluice:problem:overloaded"),
        "{refused:?}"
    );

    assert_eq!(
        ask(&mut a, &mut buf_a).await,
        200,
        "existing connections are unaffected"
    );
    drop(b);
    // Once the gateway has seen the close, a new connection gets in.
    let mut admitted = false;
    for _ in 0..200 {
        let mut c = TcpStream::connect(gw.addr).await.expect("connect");
        let mut buf = Vec::new();
        if ask(&mut c, &mut buf).await == 200 {
            admitted = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    assert!(
        admitted,
        "a freed connection slot was never reused\n{}",
        gw.log()
    );
}

/// A cluster `slow` behind route `/slow` (with `route_keys`), and the `/hello` route.
fn slow_and_hello(held: &Held, route_keys: &str) -> String {
    format!(
        "[clusters.slow]\ntargets = [\"{}\"]\n\n[[routes]]\nname = \"slow\"\npath = \"/slow\"\ncluster = \"slow\"\n{route_keys}\n\n{}",
        held.origin.url(),
        hello()
    )
}

/// Sends `GET /slow` and waits until the held origin has it.
async fn hold_one(gw: &Gateway, held: &Held, what: &str) -> tokio::task::JoinHandle<Answer> {
    let url = gw.url("/slow");
    let request = tokio::spawn(async move { get(&url).await });
    bounded(what, held.arrived.notified()).await;
    request
}

/// A 503 with `Retry-After: 1` whose body says `detail`.
fn assert_overloaded(answer: &Answer, detail: &str) {
    let (status, headers, body) = answer;
    assert_eq!(*status, 503, "{body:?}");
    assert_eq!(
        headers.get("retry-after").map(|v| v.as_bytes()),
        Some(&b"1"[..])
    );
    assert!(String::from_utf8_lossy(body).contains(detail), "{body:?}");
}

#[tokio::test]
async fn requests_over_the_gateway_and_route_caps_get_503() {
    let held = held_origin("done").await;
    let gw = Gateway::start(&slow_and_hello(&held, "max_requests = 1")).await;
    let first = hold_one(&gw, &held, "the first request reaches the origin").await;

    assert_overloaded(
        &get(&gw.url("/slow")).await,
        "route slow has 1 requests in flight",
    );
    assert_eq!(
        held.origin.hits.load(std::sync::atomic::Ordering::SeqCst),
        1
    );
    assert_eq!(
        get(&gw.url("/hello")).await.0,
        200,
        "other routes are not capped"
    );

    held.release.notify_one();
    assert_eq!(
        bounded("the held request", first).await.expect("join").0,
        200
    );
    let again = hold_one(&gw, &held, "the next request reaches the origin").await;
    held.release.notify_one();
    assert_eq!(
        bounded("the next request", again).await.expect("join").0,
        200
    );
}

#[tokio::test]
async fn the_gateway_wide_cap_counts_every_route() {
    let held = held_origin("done").await;
    let gw = Gateway::start_with(
        "[server.limits]\nmax_requests = 1",
        &slow_and_hello(&held, ""),
    )
    .await;
    let first = hold_one(&gw, &held, "the first request reaches the origin").await;

    assert_overloaded(&get(&gw.url("/hello")).await, "server.limits.max_requests");

    held.release.notify_one();
    assert_eq!(
        bounded("the held request", first).await.expect("join").0,
        200
    );
    // The held response's end is counted when its body has gone: poll (bounded).
    let mut answered = 0;
    for _ in 0..200 {
        answered = get(&gw.url("/hello")).await.0;
        if answered == 200 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    assert_eq!(answered, 200);
}

#[tokio::test]
async fn a_client_that_stops_sending_its_body_gets_408_and_the_origin_no_complete_body() {
    use http_body_util::BodyExt;
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&bodies);
    let origin = Origin::custom(
        "collect",
        move |req: hyper::Request<hyper::body::Incoming>| {
            let seen = Arc::clone(&seen);
            async move {
                let outcome = match req.into_body().collect().await {
                    Ok(body) => format!("complete: {:?}", body.to_bytes()),
                    Err(e) => format!("broken: {e}"),
                };
                seen.lock().expect("lock").push(outcome);
                hyper::Response::new(
                    http_body_util::Full::new(bytes::Bytes::from_static(b"ok"))
                        .map_err(|e| match e {})
                        .boxed(),
                )
            }
        },
    )
    .await;
    let gw = Gateway::start_with(
        "[server.limits]\nbody_read_timeout = \"300ms\"",
        &crate::proxying::app(&[origin.url()], ""),
    )
    .await;
    let mut stream = TcpStream::connect(gw.addr).await.expect("connect");
    stream
        .write_all(b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nabc")
        .await
        .expect("write");
    let mut buf = Vec::new();
    let response = bounded("the 408", read_response(&mut stream, &mut buf)).await;
    assert_eq!(response.status, 408, "{response:?}\n{}", gw.log());
    assert_eq!(response.header("connection"), Some("close"));
    assert!(
        String::from_utf8_lossy(&response.body).contains("request_body_timeout"),
        "{response:?}"
    );
    assert_eq!(
        get(&gw.url("/after")).await.0,
        200,
        "the gateway still answers"
    );
    let bodies = bodies.lock().expect("lock").clone();
    assert!(
        !bodies.iter().any(|b| b.contains("abc")),
        "the truncated upload arrived as complete: {bodies:?}"
    );
}
