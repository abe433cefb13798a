//! Every error the gateway answers itself: status, problem+json body, request id, log line.

use crate::hardening::{exchange, RawOrigin, Reply};
use crate::harness::*;
use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, Request};
use http_body_util::Full;
use serde_json::Value;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// Checks an answer the gateway wrote because of `code`: the status, a problem+json body
/// whose `request_id` and `status` match the response, and the log line naming the cause.
async fn assert_problem(gw: &Gateway, answer: &Answer, status: u16, code: &str) -> Value {
    let (got, headers, body) = answer;
    let text = String::from_utf8_lossy(body);
    assert_eq!(*got, status, "{code}: {text}\n{}", gw.log());
    assert_eq!(
        headers.get("content-type").map(|v| v.as_bytes()),
        Some(&b"application/problem+json"[..]),
        "{code}: {headers:?}"
    );
    let problem: Value = serde_json::from_slice(body).expect("a problem+json body");
    let id = headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .expect("an x-request-id header");
    assert_eq!(problem["request_id"], id, "{code}: {text}");
    assert_eq!(problem["status"], status, "{code}: {text}");
    assert_eq!(problem["type"], format!("urn:sluice:problem:{code}"));
    let detail = problem["detail"].as_str().expect("a detail");
    assert_logged(gw, id, code, detail).await;
    problem
}

/// Waits (bounded) for the gateway's log line about request `id`, and checks its cause.
async fn assert_logged(gw: &Gateway, id: &str, code: &str, detail: &str) {
    for _ in 0..200 {
        let log = gw.log();
        let line = log
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|l| l["request_id"] == id && l.get("code").is_some());
        if let Some(line) = line {
            assert_eq!(line["code"], code, "{line}");
            assert_eq!(line["message"], detail, "{line}");
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "no log line with code `{code}` for request {id}:\n{}",
        gw.log()
    );
}

/// A raw reply as an [`Answer`], for responses a hyper client cannot ask for.
fn answer_of(reply: &Reply) -> Answer {
    let head = reply.text.split("\r\n\r\n").next().unwrap_or("");
    let mut headers = HeaderMap::new();
    for (name, value) in head.lines().skip(1).filter_map(|l| l.split_once(':')) {
        headers.append(
            HeaderName::from_bytes(name.trim().as_bytes()).expect("header name"),
            HeaderValue::from_str(value.trim()).expect("header value"),
        );
    }
    let status = reply.status().expect("a response");
    (status, headers, Bytes::from(reply.body().to_string()))
}

fn proxy_config(cluster: &str, target: &str, route_lines: &str) -> String {
    format!(
        "[clusters.{cluster}]\ntargets = [\"{target}\"]\n\n[[routes]]\nname = \"{cluster}\"\nprefix = \"/{cluster}\"\ncluster = \"{cluster}\"\n{route_lines}\n"
    )
}

#[tokio::test]
async fn no_route_is_404_and_wrong_method_is_405_with_allow() {
    let gw = Gateway::start(
        "[[routes]]\nname = \"only-get\"\npath = \"/only-get\"\nmethods = [\"GET\"]\nrespond = { body = \"ok\" }\n",
    )
    .await;
    let answer = get(&gw.url("/nothing/here")).await;
    assert_problem(&gw, &answer, 404, "no_route").await;

    let post = Request::post(gw.url("/only-get"))
        .body(Full::new(Bytes::from_static(b"x")))
        .expect("request");
    let answer = send(post, false).await.expect("POST");
    assert_problem(&gw, &answer, 405, "method_not_allowed").await;
    let allow = answer.1.get("allow").and_then(|v| v.to_str().ok());
    assert_eq!(allow, Some("GET, HEAD"));
}

#[tokio::test]
async fn refused_and_reset_targets_are_502() {
    let reset = RawOrigin::start(None).await;
    let refused = format!("http://127.0.0.1:{}", free_port());
    let gw = Gateway::start(&format!(
        "{}\n{}",
        proxy_config("refused", &refused, ""),
        proxy_config("reset", &reset.url(), "")
    ))
    .await;
    let answer = get(&gw.url("/refused")).await;
    let problem = assert_problem(&gw, &answer, 502, "upstream_connect_failed").await;
    assert!(problem["detail"]
        .as_str()
        .is_some_and(|d| d.contains(&refused)));

    let answer = get(&gw.url("/reset")).await;
    assert_problem(&gw, &answer, 502, "upstream_failed").await;
    assert_eq!(
        reset.hits.load(Ordering::SeqCst),
        1,
        "the request was sent once"
    );
}

#[tokio::test]
async fn a_target_that_never_answers_is_504_after_the_route_timeout() {
    let silent = Origin::custom("silent", |_| std::future::pending()).await;
    let gw = Gateway::start(&proxy_config(
        "silent",
        &silent.url(),
        "timeout = \"300ms\"",
    ))
    .await;
    let answer = get(&gw.url("/silent")).await;
    assert_problem(&gw, &answer, 504, "upstream_timeout").await;
    assert_eq!(silent.hits.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_pooled_connection_times_out_each_request_by_its_own_route_timeout() {
    // The first request is answered and its connection pooled; the next one goes on that
    // connection and is never answered: the connection's timer, armed for the first
    // request's deadline, must move on to the second's and time it out.
    let answered = Origin::custom(
        "once",
        |request: http::Request<hyper::body::Incoming>| async move {
            if request.uri().path() == "/slow/hang" {
                std::future::pending::<()>().await;
            }
            http::Response::new(boxed(Full::new(Bytes::from_static(b"ok"))))
        },
    )
    .await;
    let gw = Gateway::start(&proxy_config(
        "slow",
        &answered.url(),
        "timeout = \"300ms\"",
    ))
    .await;
    let (status, _, _) = get(&gw.url("/slow/fast")).await;
    assert_eq!(status, 200);
    for _ in 0..2 {
        let answer = get(&gw.url("/slow/hang")).await;
        assert_problem(&gw, &answer, 504, "upstream_timeout").await;
    }
    let (status, _, _) = get(&gw.url("/slow/fast")).await;
    assert_eq!(status, 200);
}

/// A loopback listener that never accepts, with its accept queue full (backlog 0 and one
/// queued connection), so the kernel drops every new SYN: connecting to it hangs.
struct FullBacklog {
    addr: SocketAddr,
    _listener: tokio::net::TcpListener,
    _queued: tokio::net::TcpStream,
}

impl FullBacklog {
    async fn start() -> FullBacklog {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket
            .bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .expect("bind");
        let listener = socket.listen(0).expect("listen");
        let addr = listener.local_addr().expect("addr");
        let queued = tokio::net::TcpStream::connect(addr)
            .await
            .expect("fill the accept queue");
        for _ in 0..200 {
            if accept_queue_len(addr) >= 1 {
                return FullBacklog {
                    addr,
                    _listener: listener,
                    _queued: queued,
                };
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the accept queue of {addr} never filled");
    }
}

/// The accept queue length of the IPv4 listener on `addr`: its `rx_queue` in /proc/net/tcp.
fn accept_queue_len(addr: SocketAddr) -> usize {
    let table = std::fs::read_to_string("/proc/net/tcp").expect("read /proc/net/tcp");
    let local = format!("0100007F:{:04X}", addr.port());
    table
        .lines()
        .skip(1)
        .map(|line| line.split_whitespace().collect::<Vec<_>>())
        .filter(|f| f.get(1) == Some(&local.as_str()) && f.get(3) == Some(&"0A"))
        .filter_map(|f| usize::from_str_radix(f.get(4)?.split(':').nth(1)?, 16).ok())
        .next()
        .unwrap_or(0)
}

#[tokio::test]
async fn a_connect_that_hangs_is_504_after_the_connect_timeout() {
    let full = FullBacklog::start().await;
    let target = format!("http://{}", full.addr);
    let config = proxy_config("hang", &target, "").replace(
        "\n\n[[routes]]",
        "\nconnect_timeout = \"300ms\"\n\n[[routes]]",
    );
    let gw = Gateway::start(&config).await;
    let answer = get(&gw.url("/hang")).await;
    assert_problem(&gw, &answer, 504, "upstream_connect_timeout").await;
}

#[tokio::test]
async fn requests_over_the_limits_are_414_and_431() {
    let gw = Gateway::start_with(
        "[server.limits]\nmax_uri_size = \"1KiB\"\nmax_header_size = \"4KiB\"\nmax_headers = 10\n",
        "[[routes]]\nname = \"all\"\nprefix = \"/\"\nrespond = { body = \"ok\" }\n",
    )
    .await;
    let with_headers = |path: &str, headers: &[(String, String)]| {
        let mut request = Request::get(gw.url(path));
        for (name, value) in headers {
            request = request.header(name, value);
        }
        request.body(Full::new(Bytes::new())).expect("request")
    };
    let few: Vec<(String, String)> = (0..5).map(|i| (format!("x-h-{i}"), "v".into())).collect();
    let within = with_headers(&format!("/?q={}", "a".repeat(900)), &few);
    let (status, _, body) = send(within, false).await.expect("within the limits");
    assert_eq!((status, &body[..]), (200, &b"ok"[..]));

    let long_uri = with_headers(&format!("/?q={}", "a".repeat(1100)), &[]);
    let answer = send(long_uri, false).await.expect("long URI");
    assert_problem(&gw, &answer, 414, "uri_too_long").await;

    let big = with_headers("/", &[("x-big".into(), "b".repeat(5000))]);
    let answer = send(big, false).await.expect("big header");
    assert_problem(&gw, &answer, 431, "headers_too_large").await;

    let many: Vec<(String, String)> = (0..15).map(|i| (format!("x-h-{i}"), "v".into())).collect();
    let answer = send(with_headers("/", &many), false)
        .await
        .expect("many headers");
    assert_problem(&gw, &answer, 431, "headers_too_large").await;
}

#[tokio::test]
async fn forbidden_paths_connect_and_two_hosts_are_400_and_reach_no_origin() {
    let origin = Origin::echo("a").await;
    let gw = Gateway::start(&format!(
        "[clusters.app]\ntargets = [\"{}\"]\n\n[[routes]]\nname = \"app\"\nprefix = \"/\"\ncluster = \"app\"\n",
        origin.url()
    ))
    .await;
    let close = "Host: a\r\nConnection: close\r\n\r\n";
    let cases = [
        ("encoded slash", format!("GET /a%2Fb HTTP/1.1\r\n{close}")),
        ("encoded NUL", format!("GET /a%00b HTTP/1.1\r\n{close}")),
        (
            "encoded backslash",
            format!("GET /a%5Cb HTTP/1.1\r\n{close}"),
        ),
        ("backslash", format!("GET /a\\b HTTP/1.1\r\n{close}")),
        ("bad escape", format!("GET /a%zzb HTTP/1.1\r\n{close}")),
        ("connect", format!("CONNECT a:443 HTTP/1.1\r\n{close}")),
        (
            "two hosts",
            format!("GET /a HTTP/1.1\r\nHost: b\r\n{close}"),
        ),
    ];
    for (case, request) in cases {
        let reply = exchange(gw.addr, request).await;
        assert!(reply.status().is_some(), "{case}: no response");
        assert_problem(&gw, &answer_of(&reply), 400, "bad_request").await;
    }
    assert_eq!(origin.hits.load(Ordering::SeqCst), 0);
    let (status, _, body) = get(&gw.url("/fine")).await;
    assert_eq!((status, seen(&body).uri), (200, "/fine".to_string()));
}
