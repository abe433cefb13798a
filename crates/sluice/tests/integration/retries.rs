//! Retries, timeouts and body limits through the real binary: which failures go to another target, with what body, within which budget.

use crate::hardening::RawOrigin;
use crate::harness::*;
use crate::proxying::{body_bytes, bounded, channel_body, data, h1_conn, ChannelBody};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::task::JoinSet;

/// Short back-offs, so that retries do not slow the tests down.
const QUICK: &str = "backoff = \"1ms\", max_backoff = \"5ms\"";

/// What the gateway logs for every retry.
const RETRYING: &str = "retrying on another target";

/// Cluster `app` with `targets` (round robin) behind route `app` on `prefix = "/"`, the
/// route holding `route_keys`.
fn config(targets: &[String], route_keys: &str) -> String {
    let targets: Vec<String> = targets.iter().map(|t| format!("\"{t}\"")).collect();
    format!(
        "[clusters.app]\ntargets = [{}]\n\n[[routes]]\nname = \"app\"\nprefix = \"/\"\ncluster = \"app\"\n{route_keys}\n",
        targets.join(", ")
    )
}

/// A target URL on a loopback port nobody listens on.
fn dead_target() -> String {
    format!("http://127.0.0.1:{}", free_port())
}

fn hits(counter: &AtomicUsize) -> usize {
    counter.load(Ordering::SeqCst)
}

/// `POST url` with `body` (and its Content-Length) and `headers`, on a fresh connection.
async fn post(url: &str, body: impl Into<Bytes>, headers: &[(&str, String)]) -> Answer {
    let mut request = Request::post(url);
    for (name, value) in headers {
        request = request.header(*name, value.as_str());
    }
    let request = request.body(Full::new(body.into())).expect("request");
    send(request, false)
        .await
        .unwrap_or_else(|e| panic!("POST {url}: {e}"))
}

/// The value of `sluice_retries_total{route="app"}`, if the series exists.
fn retries_of_app(metrics: &str) -> Option<f64> {
    metrics.lines().find_map(|line| {
        let value = line.strip_prefix("sluice_retries_total{route=\"app\"} ")?;
        let value = value.split_whitespace().next()?;
        Some(
            value
                .parse()
                .unwrap_or_else(|e| panic!("not a number ({e}): {line}")),
        )
    })
}

#[tokio::test]
async fn a_reset_is_retried_for_gets_but_never_for_posts() {
    let reset = RawOrigin::start(None).await;
    let good = Origin::echo("good").await;
    let gw = Gateway::start(&config(
        &[reset.url(), good.url()],
        &format!("retries = {{ attempts = 2, {QUICK} }}"),
    ))
    .await;

    for i in 0..10 {
        let (status, _, body) = get(&gw.url(&format!("/get/{i}"))).await;
        assert_eq!(status, 200, "GET {i}: {}\n{}", text(&body), gw.log());
        let seen = seen(&body);
        assert_eq!(
            (seen.origin.as_str(), seen.method.as_str()),
            ("good", "GET")
        );
        assert_eq!(seen.uri, format!("/get/{i}"));
    }
    assert!(
        hits(&reset.hits) >= 1,
        "the resetting target was never tried\n{}",
        gw.log()
    );
    gw.log_with(RETRYING).await;

    let (reset_before, good_before) = (hits(&reset.hits), hits(&good.hits));
    let mut failed = 0;
    for i in 0..10 {
        let (r, g) = (hits(&reset.hits), hits(&good.hits));
        let answer = post(&gw.url(&format!("/post/{i}")), format!("body-{i}"), &[]).await;
        let (reset_delta, good_delta) = (hits(&reset.hits) - r, hits(&good.hits) - g);
        assert_eq!(
            reset_delta + good_delta,
            1,
            "POST {i} reached {reset_delta} resetting and {good_delta} good origins\n{}",
            gw.log()
        );
        if reset_delta == 1 {
            failed += 1;
            assert_problem(&gw, &answer, 502, "upstream_failed");
        } else {
            assert_eq!(answer.0, 200, "POST {i}: {}\n{}", text(&answer.2), gw.log());
            let seen = seen(&answer.2);
            assert_eq!(
                (seen.origin.as_str(), seen.body.as_str()),
                ("good", format!("body-{i}").as_str())
            );
        }
    }
    let reset_delta = hits(&reset.hits) - reset_before;
    let good_delta = hits(&good.hits) - good_before;
    assert_eq!(reset_delta + good_delta, 10, "{}", gw.log());
    assert_eq!(failed, reset_delta);
    // Round robin alternates between the two targets: both kinds of answer happened.
    assert!(
        failed >= 1 && good_delta >= 1,
        "{failed} failed, {good_delta} reached the good origin"
    );
}

#[tokio::test]
async fn a_connect_failure_is_retried_for_any_method_with_the_same_body() {
    let good = Origin::echo("good").await;
    let gw = Gateway::start(&config(
        &[dead_target(), good.url()],
        &format!("retries = {{ attempts = 2, {QUICK} }}"),
    ))
    .await;
    for n in 0..6 {
        let answer = post(&gw.url("/submit"), format!("payload-{n}"), &[]).await;
        assert_eq!(answer.0, 200, "POST {n}: {}\n{}", text(&answer.2), gw.log());
        let seen = seen(&answer.2);
        assert_eq!(seen.origin, "good");
        assert_eq!(seen.method, "POST");
        assert_eq!(seen.body, format!("payload-{n}"), "POST {n}");
        assert_eq!(
            seen.header("content-length"),
            Some(format!("payload-{n}").len().to_string().as_str())
        );
    }
    assert_eq!(hits(&good.hits), 6);
    gw.log_with(RETRYING).await;
}

#[tokio::test]
async fn a_body_larger_than_the_buffer_streams_and_is_not_retried() {
    let good = Origin::echo("good").await;
    let gw = Gateway::start(&config(
        &[dead_target(), good.url()],
        &format!("retries = {{ attempts = 3, buffer = 16, {QUICK} }}"),
    ))
    .await;
    let body: String = (0..100u8).map(|i| char::from(b'a' + i % 26)).collect();
    assert_eq!(body.len(), 100);

    // Round robin starts at the first target, the dead one.
    let first = post(&gw.url("/big"), body.clone(), &[]).await;
    assert_problem(&gw, &first, 502, "upstream_connect_failed");
    assert_eq!(hits(&good.hits), 0, "the streamed body was sent again");
    let log = gw.log_through(&first).await;
    assert!(!log.contains(RETRYING), "{log}");

    let second = post(&gw.url("/big"), body.clone(), &[]).await;
    assert_eq!(second.0, 200, "{}\n{}", text(&second.2), gw.log());
    let seen = seen(&second.2);
    assert_eq!(
        (seen.origin.as_str(), seen.body.as_str()),
        ("good", body.as_str())
    );
    assert_eq!(hits(&good.hits), 1);
}

#[tokio::test]
async fn an_empty_retry_budget_sends_nothing_again() {
    let good = Origin::echo("good").await;
    let dead = dead_target();

    let gw = Gateway::start(&config(
        &[dead.clone(), good.url()],
        &format!("retries = {{ attempts = 3, budget_percent = 0, min_retries = 0, {QUICK} }}"),
    ))
    .await;
    let answer = get(&gw.url("/budget")).await;
    assert_problem(&gw, &answer, 502, "upstream_connect_failed");
    assert_eq!(hits(&good.hits), 0);
    let exposed = metrics(&gw).await;
    assert!(
        retries_of_app(&exposed).is_none_or(|v| v <= 0.0),
        "a retry was counted without a budget:\n{exposed}"
    );
    let log = gw.log_through(&answer).await;
    assert!(!log.contains(RETRYING), "{log}");

    let gw = Gateway::start(&config(
        &[dead, good.url()],
        &format!("retries = {{ attempts = 3, {QUICK} }}"),
    ))
    .await;
    let (status, _, body) = get(&gw.url("/budget")).await;
    assert_eq!(status, 200, "{}\n{}", text(&body), gw.log());
    assert_eq!(seen(&body).origin, "good");
    let exposed = metrics(&gw).await;
    assert_eq!(retries_of_app(&exposed), Some(1.0), "{exposed}");
    gw.log_with(RETRYING).await;
}

/// What the origins of [`a_target_killed_under_load_fails_no_get_and_repeats_no_post`]
/// saw: (origin, x-post-id) for every POST, as it arrived.
type Posts = Arc<Mutex<Vec<(&'static str, String)>>>;

/// An origin whose accept loop and every connection live in one [`JoinSet`]: `kill`
/// aborts them all, so its listener closes and requests in flight lose their connection.
struct Killable {
    addr: SocketAddr,
    hits: Arc<AtomicUsize>,
    tasks: Arc<Mutex<JoinSet<()>>>,
    killed: Arc<AtomicBool>,
}

impl Killable {
    /// Answers every request with its `name` after 2 ms, noting POSTs' `x-post-id` in `posts`.
    async fn start(name: &'static str, posts: Posts) -> Killable {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind origin");
        let addr = listener.local_addr().expect("origin addr");
        let hits = Arc::new(AtomicUsize::new(0));
        let tasks = Arc::new(Mutex::new(JoinSet::new()));
        let killed = Arc::new(AtomicBool::new(false));
        let (set, dead, counter) = (Arc::clone(&tasks), Arc::clone(&killed), Arc::clone(&hits));
        let accept = async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (counter, posts) = (Arc::clone(&counter), Arc::clone(&posts));
                let service = service_fn(move |request| {
                    killable_answer(name, Arc::clone(&counter), Arc::clone(&posts), request)
                });
                let mut set = set.lock().expect("task set");
                if dead.load(Ordering::SeqCst) {
                    return;
                }
                set.spawn(async move {
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        };
        tasks.lock().expect("task set").spawn(accept);
        Killable {
            addr,
            hits,
            tasks,
            killed,
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn kill(&self) {
        let mut set = self.tasks.lock().expect("task set");
        self.killed.store(true, Ordering::SeqCst);
        set.abort_all();
    }
}

impl Drop for Killable {
    fn drop(&mut self) {
        if let Ok(mut set) = self.tasks.lock() {
            self.killed.store(true, Ordering::SeqCst);
            set.abort_all();
        }
    }
}

async fn killable_answer(
    name: &'static str,
    hits: Arc<AtomicUsize>,
    posts: Posts,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    hits.fetch_add(1, Ordering::SeqCst);
    if request.method() == hyper::Method::POST {
        let id = request
            .headers()
            .get("x-post-id")
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .unwrap_or_default();
        posts.lock().expect("posts").push((name, id));
    }
    let _ = request.into_body().collect().await;
    tokio::time::sleep(Duration::from_millis(2)).await;
    let response = Response::builder()
        .header("x-origin", name)
        .body(Full::new(Bytes::from_static(name.as_bytes())))
        .expect("response");
    Ok(response)
}

/// Concurrent clients of the load test; also the retry budget's floor, so that the
/// budget never turns a retry away (each request holds at most one retry token).
const WORKERS: usize = 4;
/// Requests sent in all, at least.
const TOTAL: usize = 300;
/// Successes before the killable target is killed.
const KILL_AFTER: usize = 50;

#[tokio::test]
async fn a_target_killed_under_load_fails_no_get_and_repeats_no_post() {
    let posts: Posts = Arc::new(Mutex::new(Vec::new()));
    let one = Killable::start("one", Arc::clone(&posts)).await;
    let two = Killable::start("two", Arc::clone(&posts)).await;
    let victim = Killable::start("victim", Arc::clone(&posts)).await;
    let gw = Arc::new(
        Gateway::start(&config(
            &[one.url(), two.url(), victim.url()],
            &format!("retries = {{ attempts = 3, min_retries = {WORKERS}, {QUICK} }}"),
        ))
        .await,
    );

    let sent = Arc::new(AtomicUsize::new(0));
    let ok = Arc::new(AtomicUsize::new(0));
    let killed = Arc::new(AtomicBool::new(false));
    let mut workers = JoinSet::new();
    for _ in 0..WORKERS {
        let (gw, sent, ok, killed) = (
            Arc::clone(&gw),
            Arc::clone(&sent),
            Arc::clone(&ok),
            Arc::clone(&killed),
        );
        workers.spawn(async move {
            // (request number, POST?, status, body)
            let mut answers: Vec<(usize, bool, u16, Bytes)> = Vec::new();
            loop {
                if killed.load(Ordering::SeqCst) && sent.load(Ordering::SeqCst) >= TOTAL {
                    return answers;
                }
                let n = sent.fetch_add(1, Ordering::SeqCst);
                let is_post = n % 2 == 1;
                let url = gw.url(&format!("/load/{n}"));
                let (status, _, body) = if is_post {
                    post(&url, format!("post-{n}"), &[("x-post-id", n.to_string())]).await
                } else {
                    get(&url).await
                };
                if status == 200 {
                    ok.fetch_add(1, Ordering::SeqCst);
                }
                answers.push((n, is_post, status, body));
            }
        });
    }

    bounded(&format!("{KILL_AFTER} successes before the kill"), async {
        while ok.load(Ordering::SeqCst) < KILL_AFTER {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await;
    victim.kill();
    killed.store(true, Ordering::SeqCst);
    let victim_hits = hits(&victim.hits);
    let sent_at_kill = sent.load(Ordering::SeqCst);

    let mut answers = Vec::new();
    bounded("the load to finish", async {
        while let Some(joined) = workers.join_next().await {
            answers.extend(joined.expect("a load worker panicked"));
        }
    })
    .await;
    let log = gw.log();
    assert!(answers.len() >= TOTAL, "{} answers", answers.len());
    assert!(
        victim_hits > 0,
        "the victim took no request before it was killed\n{log}"
    );
    assert!(sent_at_kill < TOTAL, "the load ended before the kill");

    let mut failed_posts = 0;
    for (n, is_post, status, body) in &answers {
        if !is_post {
            assert_eq!(*status, 200, "GET {n}: {}\n{log}", text(body));
            continue;
        }
        if *status != 200 {
            failed_posts += 1;
            assert_eq!(*status, 502, "POST {n}: {}\n{log}", text(body));
            assert_problem_body(body, 502, "upstream_failed");
        }
    }

    let posts = posts.lock().expect("posts").clone();
    let mut seen_ids: HashMap<&str, Vec<&str>> = HashMap::new();
    for (origin, id) in &posts {
        seen_ids.entry(id.as_str()).or_default().push(origin);
    }
    let repeated: Vec<_> = seen_ids.iter().filter(|(_, o)| o.len() > 1).collect();
    assert!(
        repeated.is_empty(),
        "POSTs that reached origins more than once (id -> origins): {repeated:?}\n{log}"
    );
    for (n, is_post, status, _) in &answers {
        if *is_post && *status == 200 {
            assert!(
                seen_ids.contains_key(n.to_string().as_str()),
                "POST {n} got 200 but no origin saw it"
            );
        }
    }
    eprintln!(
        "{} requests, {} sent before the kill, {failed_posts} POSTs failed, the victim took {victim_hits} before the kill and {} in all",
        answers.len(),
        sent_at_kill,
        hits(&victim.hits)
    );
}

/// An origin that waits `delay` before answering with its name.
async fn slow_origin(name: &'static str, delay: Duration) -> Origin {
    Origin::custom(name, move |_request| async move {
        tokio::time::sleep(delay).await;
        Response::builder()
            .header("x-origin", name)
            .body(boxed(Full::new(Bytes::from_static(name.as_bytes()))))
            .expect("response")
    })
    .await
}

#[tokio::test]
async fn timeouts_over_the_route_and_over_one_try() {
    // The route's timeout ends the wait for a response head.
    let sleeper = slow_origin("sleeper", Duration::from_secs(3)).await;
    let gw = Gateway::start(&config(&[sleeper.url()], "timeout = \"300ms\"")).await;
    let answer = get(&gw.url("/slow")).await;
    assert_problem(&gw, &answer, 504, "upstream_timeout");

    // A try that times out goes to the next target while the route's time lasts.
    let slow = slow_origin("slow", Duration::from_secs(30)).await;
    let fast = slow_origin("fast", Duration::ZERO).await;
    let targets = [slow.url(), fast.url()];
    let gw = Gateway::start(&config(
        &targets,
        "timeout = \"10s\"\ntry_timeout = \"200ms\"\nretries = {}",
    ))
    .await;
    let (status, headers, body) = get(&gw.url("/try")).await;
    assert_eq!(status, 200, "{}\n{}", text(&body), gw.log());
    assert_eq!(
        headers.get("x-origin").map(|v| v.as_bytes()),
        Some(&b"fast"[..])
    );
    assert_eq!(hits(&slow.hits), 1, "round robin starts at the slow target");
    gw.log_with(RETRYING).await;

    let gw = Gateway::start(&config(
        &targets,
        "timeout = \"10s\"\ntry_timeout = \"200ms\"",
    ))
    .await;
    let answer = get(&gw.url("/try")).await;
    assert_problem(&gw, &answer, 504, "upstream_timeout");
    assert_eq!(hits(&slow.hits), 2);
    assert_eq!(hits(&fast.hits), 1);
}

#[tokio::test]
async fn a_response_body_quiet_for_the_idle_timeout_is_cut_off() {
    let origin = Origin::custom("chunks", |request: Request<Incoming>| async move {
        let (tx, body) = channel_body();
        if request.uri().path() == "/stall" {
            tokio::spawn(async move {
                let _ = tx.send(data("first|")).await;
                // Holds the body open, never ending it, until the gateway lets go.
                tx.closed().await;
            });
        } else {
            tokio::spawn(async move {
                for i in 0..10 {
                    if tx
                        .send(Frame::data(Bytes::from(format!("chunk-{i}|"))))
                        .await
                        .is_err()
                    {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            });
        }
        Response::new(body.boxed())
    })
    .await;
    let routes = |path: &str, idle: &str| {
        format!(
            "[[routes]]\nname = \"{}\"\npath = \"{path}\"\ncluster = \"app\"\nidle_timeout = \"{idle}\"\n",
            &path[1..]
        )
    };
    let gw = Gateway::start(&format!(
        "[clusters.app]\ntargets = [\"{}\"]\n\n{}\n{}",
        origin.url(),
        routes("/stall", "500ms"),
        routes("/drip", "2s")
    ))
    .await;

    let mut sender = h1_conn::<Empty<Bytes>>(gw.addr).await;
    let request = Request::get("/stall")
        .header("host", "a")
        .body(Empty::new())
        .expect("request");
    let response = bounded("the head of /stall", sender.send_request(request))
        .await
        .expect("response head");
    assert_eq!(response.status(), 200, "{}", gw.log());
    let mut body = response.into_body();
    let mut first = Vec::new();
    while first.len() < b"first|".len() {
        let frame = bounded("the first chunk", body.frame())
            .await
            .expect("a frame")
            .expect("the first chunk arrives");
        first.extend_from_slice(frame.data_ref().map_or(&[][..], |d| d));
    }
    assert_eq!(first, b"first|");
    let next = bounded("the body to be cut off", body.frame()).await;
    assert!(
        matches!(next, Some(Err(_))),
        "the stalled body should end with an error, got {next:?}\n{}",
        gw.log()
    );

    let mut sender = h1_conn::<Empty<Bytes>>(gw.addr).await;
    let request = Request::get("/drip")
        .header("host", "a")
        .body(Empty::new())
        .expect("request");
    let response = bounded("the head of /drip", sender.send_request(request))
        .await
        .expect("response head");
    assert_eq!(response.status(), 200, "{}", gw.log());
    let whole = bounded("the whole dripping body", body_bytes(response)).await;
    let expected: String = (0..10).map(|i| format!("chunk-{i}|")).collect();
    assert_eq!(text(&whole), expected);
}

#[tokio::test]
async fn bodies_over_max_body_size_get_413() {
    let origin = Origin::echo("echo").await;
    let gw = Gateway::start(&config(&[origin.url()], "max_body_size = 10")).await;

    let answer = post(&gw.url("/upload"), vec![b'x'; 100], &[]).await;
    assert_problem(&gw, &answer, 413, "body_too_large");
    assert_eq!(hits(&origin.hits), 0, "the origin saw a request too large");

    let (status, _, body) = post(&gw.url("/upload"), "0123456789", &[]).await;
    assert_eq!(status, 200, "{}\n{}", text(&body), gw.log());
    assert_eq!(seen(&body).body, "0123456789");

    // Chunked, with no length to refuse it by: cut off once more than 10 bytes came.
    let (status, body) = chunked_upload(&gw).await;
    assert_eq!(status, 413, "{}\n{}", text(&body), gw.log());
    assert_problem_body(&body, 413, "body_too_large");

    // With retries the body is read into memory before the first try: no origin sees it.
    let before = hits(&origin.hits);
    let gw = Gateway::start(&config(&[origin.url()], "max_body_size = 10\nretries = {}")).await;
    let (status, body) = chunked_upload(&gw).await;
    assert_eq!(status, 413, "{}\n{}", text(&body), gw.log());
    assert_problem_body(&body, 413, "body_too_large");
    assert_eq!(
        hits(&origin.hits),
        before,
        "the origin saw a body too large"
    );
}

/// POSTs three chunks of 8 bytes with no Content-Length; the status and body answered.
async fn chunked_upload(gw: &Gateway) -> (u16, Bytes) {
    let (tx, upload) = channel_body();
    for _ in 0..3 {
        tx.send(data("8 bytes!")).await.expect("queue a chunk");
    }
    drop(tx);
    let mut sender = h1_conn::<ChannelBody>(gw.addr).await;
    let request = Request::post("/upload")
        .header("host", "a")
        .body(upload)
        .expect("request");
    let response = bounded(
        "the answer to a chunked upload",
        sender.send_request(request),
    )
    .await
    .unwrap_or_else(|e| panic!("chunked upload: {e}\n{}", gw.log()));
    let status = response.status().as_u16();
    (
        status,
        bounded("the answer's body", body_bytes(response)).await,
    )
}
