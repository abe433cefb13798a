//! Resilience through the real binary: health checks, ejection, circuit breakers, request caps.

use crate::harness::*;
use crate::lifecycle::held_origin;
use crate::proxying::{app, bounded};
use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::Full;
use hyper::{Request, Response};
use serde_json::Value;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// HTTP checks of `/healthz` every 200 ms; two results in a row change a target's state.
const HTTP_CHECKS: &str = "[clusters.app.health]\ntype = \"http\"\npath = \"/healthz\"\nhost = \"health.internal\"\nexpect = [200, \"2xx\"]\ninterval = \"200ms\"\ntimeout = \"200ms\"\nhealthy_threshold = 2\nunhealthy_threshold = 2\n";

/// Ejection after three failures in a row, for longer than any test runs.
const OUTLIER: &str = "[clusters.app.outlier]\nconsecutive_failures = 3\nbase_ejection = \"1m\"\nmax_ejected_percent = 50\n";

/// Polls of `/health` a bounded wait makes (every 50 ms: about 20 s).
const POLLS: usize = 400;

/// What a [`Backend`] saw of a request that was not one of the test's own (`/req/...`).
#[derive(Debug, Clone)]
struct Check {
    path: String,
    host: Option<String>,
}

/// An origin whose health-check path and other paths can each be switched to failing.
struct Backend {
    origin: Origin,
    /// `/healthz` answers 503 while set, 200 otherwise.
    checks_fail: Arc<AtomicBool>,
    /// Every other path answers 500 while set, otherwise 200 with the origin's name.
    requests_fail: Arc<AtomicBool>,
    /// Every request not sent by the test itself: the gateway's health checks.
    checks: Arc<Mutex<Vec<Check>>>,
}

impl Backend {
    async fn start(name: &'static str, checks_fail: bool, requests_fail: bool) -> Backend {
        let checks_fail = Arc::new(AtomicBool::new(checks_fail));
        let requests_fail = Arc::new(AtomicBool::new(requests_fail));
        let checks = Arc::new(Mutex::new(Vec::new()));
        let (c, r, seen) = (
            Arc::clone(&checks_fail),
            Arc::clone(&requests_fail),
            Arc::clone(&checks),
        );
        let origin = Origin::custom(name, move |request: Request<hyper::body::Incoming>| {
            let path = request.uri().path().to_string();
            let host = request
                .headers()
                .get("host")
                .map(|h| String::from_utf8_lossy(h.as_bytes()).into_owned());
            let status = if path.starts_with("/req/") {
                if r.load(Ordering::SeqCst) {
                    500
                } else {
                    200
                }
            } else {
                let failing = c.load(Ordering::SeqCst);
                seen.lock().expect("the checks list").push(Check {
                    path: path.clone(),
                    host,
                });
                if path == "/healthz" && !failing {
                    200
                } else {
                    503
                }
            };
            async move { reply(status, name) }
        })
        .await;
        Backend {
            origin,
            checks_fail,
            requests_fail,
            checks,
        }
    }

    fn url(&self) -> String {
        self.origin.url()
    }

    fn hits(&self) -> usize {
        self.origin.hits.load(Ordering::SeqCst)
    }
}

/// An answer with `status`, an `x-origin: name` header and `name` as the body.
fn reply(status: u16, name: &str) -> Response<BoxBody<Bytes, std::io::Error>> {
    Response::builder()
        .status(status)
        .header("x-origin", name)
        .body(boxed(Full::new(Bytes::from(name.to_string()))))
        .expect("response")
}

/// The test's own request number `i` (`GET /req/i`).
async fn ask(gw: &Gateway, i: usize) -> Answer {
    get(&gw.url(&format!("/req/{i}"))).await
}

/// The origin that answered (its `x-origin` header), or `-` for the gateway itself.
fn origin_of(answer: &Answer) -> &str {
    answer
        .1
        .get("x-origin")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
}

/// The entry of `/health` for target `url` of cluster `app`.
fn target_in(health: &Value, url: &str) -> Value {
    let clusters = health["clusters"].as_array().expect("a list of clusters");
    clusters
        .iter()
        .filter(|c| c["name"] == "app")
        .flat_map(|c| c["targets"].as_array().into_iter().flatten())
        .find(|t| t["url"] == url)
        .cloned()
        .unwrap_or_else(|| panic!("no target {url} in cluster app: {health}"))
}

/// The `/health` entry of target `url`.
async fn target(gw: &Gateway, url: &str) -> Value {
    target_in(&health(gw).await, url)
}

/// Polls `/health` (bounded) until `check` holds for target `url`; returns its entry.
async fn wait_target(gw: &Gateway, url: &str, what: &str, check: impl Fn(&Value) -> bool) -> Value {
    for _ in 0..POLLS {
        let entry = target(gw, url).await;
        if check(&entry) {
            return entry;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "/health never showed {url} {what}: {}\n{}",
        health(gw).await,
        gw.log()
    );
}

/// Polls `/metrics` (bounded) until it has `line`.
async fn wait_metric(gw: &Gateway, line: &str) {
    for _ in 0..POLLS {
        if metrics(gw).await.lines().any(|l| l == line) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "/metrics never had `{line}`:\n{}\n{}",
        metrics(gw).await,
        gw.log()
    );
}

/// Sends `n` requests and asserts every one is answered 200 by `origin`.
async fn all_reach(gw: &Gateway, n: usize, origin: &str) {
    for i in 0..n {
        let answer = ask(gw, i).await;
        assert_eq!(
            (answer.0, origin_of(&answer)),
            (200, origin),
            "request {i}: {}\n{}\n{}",
            text(&answer.2),
            health(gw).await,
            gw.log()
        );
    }
}

#[tokio::test]
async fn a_target_failing_its_checks_leaves_the_rotation_and_comes_back() {
    let a = Backend::start("a", false, false).await;
    let b = Backend::start("b", true, false).await;
    let gw = Gateway::start(&app(&[a.url(), b.url()], HTTP_CHECKS)).await;

    let out = wait_target(&gw, &b.url(), "unhealthy", |t| t["healthy"] == false).await;
    assert_eq!(out["health_checks"]["passing"], false, "{out}");
    assert!(
        out["health_checks"]["failed_checks"]
            .as_u64()
            .is_some_and(|n| n >= 2),
        "{out}"
    );
    assert_eq!(out["ejected"], false, "{out}");
    assert_eq!(target(&gw, &a.url()).await["healthy"], true, "{}", gw.log());
    let line = format!(
        "sluice_target_healthy{{cluster=\"app\",target=\"{}\"}} 0",
        b.url()
    );
    wait_metric(&gw, &line).await;
    all_reach(&gw, 20, "a").await;

    b.checks_fail.store(false, Ordering::SeqCst);
    wait_target(&gw, &b.url(), "healthy again", |t| t["healthy"] == true).await;
    let mut reached_b = 0;
    for i in 0..20 {
        let answer = ask(&gw, i).await;
        assert_eq!(answer.0, 200, "{}\n{}", text(&answer.2), gw.log());
        if origin_of(&answer) == "b" {
            reached_b += 1;
        }
    }
    assert!(
        reached_b > 0,
        "no request reached b once healthy\n{}",
        gw.log()
    );

    // Every request the test did not send itself was a check, as configured.
    let checks = b.checks.lock().expect("the checks list").clone();
    assert!(!checks.is_empty(), "b saw no health check");
    for check in &checks {
        assert_eq!(check.path, "/healthz", "{checks:?}");
        assert_eq!(check.host.as_deref(), Some("health.internal"), "{checks:?}");
    }
}

#[tokio::test]
async fn no_healthy_target_is_a_503_unless_the_panic_threshold_is_reached() {
    let a = Backend::start("a", true, false).await;
    let b = Backend::start("b", true, false).await;
    let targets = [a.url(), b.url()];

    let gw = Gateway::start(&app(&targets, HTTP_CHECKS)).await;
    for url in &targets {
        wait_target(&gw, url, "unhealthy", |t| t["healthy"] == false).await;
    }
    for i in 0..5 {
        assert_problem(&gw, &ask(&gw, i).await, 503, "no_healthy_target");
    }
    drop(gw);

    let extra = format!("panic_threshold = 50\n\n{HTTP_CHECKS}");
    let gw = Gateway::start(&app(&targets, &extra)).await;
    for url in &targets {
        wait_target(&gw, url, "unhealthy", |t| t["healthy"] == false).await;
    }
    let mut reached = std::collections::BTreeSet::new();
    for i in 0..10 {
        let answer = ask(&gw, i).await;
        assert_eq!(
            answer.0,
            200,
            "in panic mode every target takes requests: {}\n{}",
            text(&answer.2),
            gw.log()
        );
        reached.insert(origin_of(&answer).to_string());
    }
    assert_eq!(
        reached.into_iter().collect::<Vec<_>>(),
        ["a", "b"],
        "{}",
        gw.log()
    );
    for url in &targets {
        assert_eq!(
            target(&gw, url).await["healthy"],
            false,
            "panic mode does not change what /health shows"
        );
    }
}

#[tokio::test]
async fn a_tcp_check_takes_out_an_address_nobody_listens_on() {
    let live = Origin::echo("live").await;
    let dead = format!("http://127.0.0.1:{}", free_port());
    let checks = "[clusters.app.health]\ntype = \"tcp\"\ninterval = \"200ms\"\ntimeout = \"200ms\"\nhealthy_threshold = 2\nunhealthy_threshold = 2\n";
    let gw = Gateway::start(&app(&[dead.clone(), live.url()], checks)).await;

    let out = wait_target(&gw, &dead, "unhealthy", |t| t["healthy"] == false).await;
    assert_eq!(out["health_checks"]["passing"], false, "{out}");
    let up = target(&gw, &live.url()).await;
    assert_eq!(up["healthy"], true, "{up}\n{}", gw.log());
    assert_eq!(up["health_checks"]["passing"], true, "{up}");
    all_reach(&gw, 20, "live").await;
}

#[tokio::test]
async fn a_target_answering_5xx_is_ejected() {
    let bad = Backend::start("bad", false, true).await;
    let good = Origin::echo("good").await;
    let gw = Gateway::start(&app(&[bad.url(), good.url()], OUTLIER)).await;

    let mut ejected = None;
    for i in 0..200 {
        let answer = ask(&gw, i).await;
        match origin_of(&answer) {
            "bad" => assert_eq!(answer.0, 500),
            "good" => assert_eq!(answer.0, 200),
            other => panic!("answered by {other}: {}\n{}", text(&answer.2), gw.log()),
        }
        let entry = target(&gw, &bad.url()).await;
        if entry["ejected"] == true {
            ejected = Some(entry);
            break;
        }
    }
    let entry = ejected.unwrap_or_else(|| panic!("bad was never ejected\n{}", gw.log()));
    assert_eq!(entry["ejections"], 1, "{entry}");
    assert_eq!(entry["healthy"], false, "{entry}");
    let hits = bad.hits();

    all_reach(&gw, 20, "good").await;
    assert_eq!(bad.hits(), hits, "an ejected target gets no requests");
    let text = metrics(&gw).await;
    let line = format!(
        "sluice_target_ejections_total{{cluster=\"app\",target=\"{}\"}} 1",
        bad.url()
    );
    assert!(text.lines().any(|l| l == line), "no `{line}` in\n{text}");
    assert!(
        gw.log()
            .contains("target ejected after consecutive failures"),
        "{}",
        gw.log()
    );
}

#[tokio::test]
async fn a_target_refusing_connections_is_ejected() {
    let dead = format!("http://127.0.0.1:{}", free_port());
    let good = Origin::echo("good").await;
    let gw = Gateway::start(&app(&[dead.clone(), good.url()], OUTLIER)).await;

    let mut ejected = false;
    for i in 0..200 {
        let answer = ask(&gw, i).await;
        if answer.0 != 200 {
            assert_problem(&gw, &answer, 502, "upstream_connect_failed");
        }
        if target(&gw, &dead).await["ejected"] == true {
            ejected = true;
            break;
        }
    }
    assert!(ejected, "the dead target was never ejected\n{}", gw.log());
    all_reach(&gw, 20, "good").await;
}

#[tokio::test]
async fn max_ejected_percent_keeps_a_target_in_rotation() {
    let a = Backend::start("a", false, true).await;
    let b = Backend::start("b", false, true).await;
    let gw = Gateway::start(&app(&[a.url(), b.url()], OUTLIER)).await;

    for i in 0..30 {
        let answer = ask(&gw, i).await;
        assert_eq!(
            answer.0,
            500,
            "one target always stays in rotation, so its 500 comes through: {}\n{}",
            text(&answer.2),
            gw.log()
        );
    }
    let health = health(&gw).await;
    let entries = [target_in(&health, &a.url()), target_in(&health, &b.url())];
    let ejected = entries.iter().filter(|t| t["ejected"] == true).count();
    assert_eq!(
        ejected, 1,
        "50% of two targets: exactly one ejected (both failed 3 times in a row)\n{health}"
    );
    let ejections: u64 = entries
        .iter()
        .map(|t| t["ejections"].as_u64().expect("a count"))
        .sum();
    assert_eq!(ejections, 1, "{health}");
}

#[tokio::test]
async fn an_open_circuit_spares_the_target_until_a_probe_succeeds() {
    let backend = Backend::start("only", false, true).await;
    let breaker = "[clusters.app.breaker]\nconsecutive_failures = 3\nopen_for = \"3s\"\n";
    let gw = Gateway::start(&app(&[backend.url()], breaker)).await;

    for i in 0..3 {
        let answer = ask(&gw, i).await;
        assert_eq!(
            (answer.0, origin_of(&answer)),
            (500, "only"),
            "{}",
            gw.log()
        );
    }
    assert_eq!(backend.hits(), 3);
    assert_problem(&gw, &ask(&gw, 3).await, 503, "circuit_open");
    assert_eq!(
        backend.hits(),
        3,
        "an open circuit keeps requests off the target"
    );
    let entry = target(&gw, &backend.url()).await;
    assert_eq!(entry["circuit"], "open", "{entry}\n{}", gw.log());
    assert_eq!(entry["circuit_opened"], 1, "{entry}");
    let text = metrics(&gw).await;
    let line = format!(
        "sluice_target_circuit_state{{cluster=\"app\",target=\"{}\",state=\"open\"}} 1",
        backend.url()
    );
    assert!(text.lines().any(|l| l == line), "no `{line}` in\n{text}");

    // Once open_for is over, one probe goes through; its success closes the circuit.
    backend.requests_fail.store(false, Ordering::SeqCst);
    let mut closed = false;
    for i in 0..POLLS {
        let answer = ask(&gw, 100 + i).await;
        if answer.0 == 200 {
            closed = true;
            break;
        }
        assert_problem(&gw, &answer, 503, "circuit_open");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(closed, "no request got through\n{}", gw.log());
    assert_eq!(
        backend.hits(),
        4,
        "only the probe reached the target after the circuit opened"
    );
    let entry = target(&gw, &backend.url()).await;
    assert_eq!(entry["circuit"], "closed", "{entry}\n{}", gw.log());
    assert_eq!(entry["circuit_opened"], 1, "{entry}");
    all_reach(&gw, 5, "only").await;
}

#[tokio::test]
async fn max_requests_without_pending_turns_the_next_request_away() {
    let held = held_origin("held answer").await;
    let gw = Gateway::start(&app(
        &[held.origin.url()],
        "max_requests = 1\nmax_pending = 0\n",
    ))
    .await;

    let url = gw.url("/first");
    let first = tokio::spawn(async move { get(&url).await });
    bounded("the first request at the origin", held.arrived.notified()).await;
    assert_problem(
        &gw,
        &get(&gw.url("/second")).await,
        503,
        "cluster_overloaded",
    );
    assert_eq!(held.origin.hits.load(Ordering::SeqCst), 1);

    held.release.notify_one();
    let (status, _, body) = bounded("the first request", first).await.expect("join");
    assert_eq!(
        (status, &body[..]),
        (200, &b"held answer"[..]),
        "{}",
        gw.log()
    );

    let url = gw.url("/third");
    let third = tokio::spawn(async move { get(&url).await });
    bounded("the third request at the origin", held.arrived.notified()).await;
    held.release.notify_one();
    let (status, _, body) = bounded("the third request", third).await.expect("join");
    assert_eq!(
        (status, &body[..]),
        (200, &b"held answer"[..]),
        "{}",
        gw.log()
    );
}

#[tokio::test]
async fn max_pending_lets_a_request_wait_for_a_slot() {
    let held = held_origin("held answer").await;
    let body = format!(
        "[clusters.app]\ntargets = [\"{}\"]\nmax_requests = 1\nmax_pending = 1\n\n[[routes]]\nname = \"app\"\nprefix = \"/\"\ncluster = \"app\"\ntimeout = \"20s\"\n",
        held.origin.url()
    );
    let gw = Gateway::start(&body).await;

    let url = gw.url("/first");
    let first = tokio::spawn(async move { get(&url).await });
    bounded("the first request at the origin", held.arrived.notified()).await;
    let url = gw.url("/second");
    let second = tokio::spawn(async move { get(&url).await });
    // Both are in the gateway: the second one waits for the first one's slot.
    let mut waiting = false;
    for _ in 0..POLLS {
        if second.is_finished() {
            let answer = second.await.expect("join");
            panic!(
                "the second request did not wait: {} {}\n{}",
                answer.0,
                text(&answer.2),
                gw.log()
            );
        }
        if metrics(&gw)
            .await
            .lines()
            .any(|l| l == "sluice_active_requests 2")
        {
            waiting = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        waiting,
        "the second request never reached the gateway\n{}",
        gw.log()
    );
    assert!(
        !second.is_finished(),
        "the second request did not wait for the slot\n{}",
        gw.log()
    );
    assert_eq!(
        held.origin.hits.load(Ordering::SeqCst),
        1,
        "the second request does not reach the origin while the first holds the slot"
    );

    held.release.notify_one();
    let (status, _, answer) = bounded("the first request", first).await.expect("join");
    assert_eq!((status, &answer[..]), (200, &b"held answer"[..]));
    bounded("the second request at the origin", held.arrived.notified()).await;
    held.release.notify_one();
    let (status, _, answer) = bounded("the second request", second).await.expect("join");
    assert_eq!(
        (status, &answer[..]),
        (200, &b"held answer"[..]),
        "{}",
        gw.log()
    );
}

#[tokio::test]
async fn health_state_survives_a_reload_that_keeps_the_cluster() {
    let a = Backend::start("a", false, false).await;
    let b = Backend::start("b", true, false).await;
    let cluster = app(&[a.url(), b.url()], HTTP_CHECKS);
    let gw = Gateway::start_with(NO_WATCH, &cluster).await;
    let before = wait_target(&gw, &b.url(), "unhealthy", |t| t["healthy"] == false).await;
    let failed_before = before["health_checks"]["failed_checks"]
        .as_u64()
        .expect("a count");

    let extra = "[[routes]]\nname = \"extra\"\npath = \"/extra\"\nrespond = { status = 200, body = \"extra\" }\n";
    gw.rewrite(NO_WATCH, &format!("{cluster}\n{extra}"));
    let (status, answer) = post_reload(&gw).await;
    assert_eq!(status, 200, "{answer}\n{}", gw.log());
    let health = health(&gw).await;
    assert_eq!(health["config"]["generation"], 2, "{health}");
    let after = target_in(&health, &b.url());
    assert_eq!(
        after["healthy"], false,
        "b is still out after the reload: {after}"
    );
    assert_eq!(after["health_checks"]["passing"], false, "{after}");
    assert!(
        after["health_checks"]["failed_checks"]
            .as_u64()
            .is_some_and(|n| n >= failed_before),
        "the count of failed checks carries over: {before} then {after}"
    );
    assert_eq!(get(&gw.url("/extra")).await.2, "extra");
    all_reach(&gw, 10, "a").await;

    // The checks kept running through the reload: b comes back.
    b.checks_fail.store(false, Ordering::SeqCst);
    wait_target(&gw, &b.url(), "healthy again", |t| t["healthy"] == true).await;
}
