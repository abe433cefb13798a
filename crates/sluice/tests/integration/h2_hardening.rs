//! HTTP/2 hardening cases of HARDENING.md sent frame by frame with Python's h2 library.

use crate::harness::*;
use crate::proxying::{channel_body, data};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response};
use serde_json::Value;
use std::process::Command;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const PROTOCOL_ERROR: u64 = 0x1;
const COMPRESSION_ERROR: u64 = 0x9;
const ENHANCE_YOUR_CALM: u64 = 0xb;
const CANCEL: u64 = 0x8;

/// A generous ceiling for the gateway's resident memory after a flood.
const RSS_LIMIT_KIB: u64 = 200 * 1024;

/// One cluster `app` (to `origin`, with `extra` keys) behind `prefix = "/"`.
fn config(origin: &str, extra: &str) -> String {
    format!(
        "[clusters.app]\ntargets = [\"{origin}\"]\n{extra}\n\n[[routes]]\nname = \"app\"\nprefix = \"/\"\ncluster = \"app\"\n"
    )
}

/// A gateway in front of `origin` with `limit` set in `[server.limits]`.
async fn with_limits(origin: &Origin, limit: &str) -> Gateway {
    Gateway::start_with(
        &format!("[server.limits]\n{limit}\n"),
        &config(&origin.url(), ""),
    )
    .await
}

/// Runs `h2_attacks.py CASE 127.0.0.1 PORT` and parses the JSON line it prints: what the
/// client saw. Every socket read in the script is bounded, so this cannot hang.
async fn attack(gw: &Gateway, case: &str) -> Value {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/integration/h2_attacks.py"
    );
    let (name, port) = (case.to_string(), gw.addr.port().to_string());
    let output = tokio::task::spawn_blocking(move || {
        Command::new("python3")
            .args([script, &name, "127.0.0.1", &port])
            .output()
            .expect("run python3 h2_attacks.py (needs `pip install h2`)")
    })
    .await
    .expect("join the attack");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "h2_attacks.py failed: {}\n{stdout}",
        String::from_utf8_lossy(&output.stderr)
    );
    let line = stdout
        .lines()
        .last()
        .expect("h2_attacks.py printed nothing");
    eprintln!("{case}: {line}");
    serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
}

fn num(result: &Value, key: &str) -> Option<u64> {
    result.get(key).and_then(Value::as_u64)
}

/// The stream was refused as malformed: RST_STREAM(PROTOCOL_ERROR), a 400 from the gateway,
/// or (h2 is stricter than RFC 9113 for some cases) a connection error GOAWAY(PROTOCOL_ERROR).
fn assert_rejected(case: &str, result: &Value) {
    let rejected = num(result, "reset") == Some(PROTOCOL_ERROR)
        || num(result, "status") == Some(400)
        || num(result, "goaway") == Some(PROTOCOL_ERROR);
    assert!(rejected, "{case}: expected a reset or 400, got {result}");
}

/// How many client streams (odd ids) there are up to `last_stream_id`.
fn streams_up_to(last_stream_id: u64) -> usize {
    usize::try_from(last_stream_id.div_ceil(2)).expect("a small stream id")
}

/// The gateway's resident memory in KiB, from /proc.
fn rss_kib(gw: &Gateway) -> u64 {
    let pid = gw.child.as_ref().expect("gateway running").id();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc status")
}

fn assert_memory_bounded(gw: &Gateway, case: &str) {
    let rss = rss_kib(gw);
    assert!(rss < RSS_LIMIT_KIB, "{case}: gateway RSS {rss} KiB");
}

/// A normal request over HTTP/1.1 and one over HTTP/2 both reach the origin.
async fn assert_still_serves(gw: &Gateway, origin: &Origin) {
    let before = origin.hits.load(Ordering::SeqCst);
    let (status, _, body) = get(&gw.url("/after")).await;
    assert_eq!(
        status,
        200,
        "the gateway stopped serving; log:\n{}",
        gw.log()
    );
    assert_eq!(seen(&body).uri, "/after");
    let (status, _, body) = get_h2(&gw.url("/after/h2")).await;
    assert_eq!(status, 200);
    assert_eq!(seen(&body).uri, "/after/h2");
    assert_eq!(origin.hits.load(Ordering::SeqCst), before + 2);
}

/// Runs each malformed `case` and checks that nothing reached the origin.
async fn assert_all_rejected(cases: &[&str]) {
    let origin = Origin::echo("o").await;
    let gw = Gateway::start(&config(&origin.url(), "")).await;
    for case in cases {
        let before = origin.hits.load(Ordering::SeqCst);
        let result = attack(&gw, case).await;
        assert_rejected(case, &result);
        assert_eq!(
            origin.hits.load(Ordering::SeqCst),
            before,
            "{case} reached the origin"
        );
        assert_still_serves(&gw, &origin).await;
    }
}

#[tokio::test]
async fn malformed_pseudo_headers_never_reach_the_origin() {
    assert_all_rejected(&[
        "missing-path",
        "relative-path",
        "unknown-pseudo",
        "pseudo-after-regular",
        "duplicate-method",
    ])
    .await;
}

#[tokio::test]
async fn connection_specific_headers_never_reach_the_origin() {
    assert_all_rejected(&["connection", "transfer-encoding", "te-gzip"]).await;
}

#[tokio::test]
async fn te_trailers_is_accepted_and_forwarded() {
    let origin = Origin::echo("o").await;
    let gw = Gateway::start(&config(&origin.url(), "")).await;
    let result = attack(&gw, "te-trailers").await;
    assert_eq!(num(&result, "status"), Some(200), "{result}");
    let body = result["body"].as_str().expect("a body");
    assert_eq!(
        seen(&Bytes::from(body.to_string())).header("te"),
        Some("trailers")
    );
    assert_eq!(origin.hits.load(Ordering::SeqCst), 1);
    assert_still_serves(&gw, &origin).await;
}

#[tokio::test]
async fn control_characters_in_header_values_never_reach_the_origin() {
    assert_all_rejected(&["cr-value", "lf-value", "crlf-value", "nul-value"]).await;
}

/// What the recording origin got: the declared content-length and the body (or an error).
type Uploads = Arc<Mutex<Vec<(Option<usize>, Result<usize, String>)>>>;

/// An origin that reads every request body to its end and records what it got.
async fn recording_origin() -> (Origin, Uploads) {
    let uploads: Uploads = Arc::default();
    let record = Arc::clone(&uploads);
    let origin = Origin::custom("o", move |request: Request<hyper::body::Incoming>| {
        let record = Arc::clone(&record);
        async move {
            let declared = request
                .headers()
                .get(http::header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok()?.parse().ok());
            let body = request.into_body().collect().await;
            let body = body.map(|b| b.to_bytes().len()).map_err(|e| e.to_string());
            record.lock().expect("uploads lock").push((declared, body));
            Response::new(
                Full::new(Bytes::from_static(b"ok"))
                    .map_err(|never| match never {})
                    .boxed(),
            )
        }
    })
    .await;
    (origin, uploads)
}

/// Nothing the origin read so far was a complete body (as long as it said it was).
async fn assert_no_complete_upload(case: &str, origin: &Origin, uploads: &Uploads) {
    // The origin may have the head; wait (bounded) until it has finished reading bodies.
    for _ in 0..100 {
        if uploads.lock().expect("uploads lock").len() == origin.hits.load(Ordering::SeqCst) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for (declared, body) in uploads.lock().expect("uploads lock").iter() {
        assert!(
            !matches!((declared, body), (Some(n), Ok(got)) if n == got),
            "{case}: the origin got a complete-looking body: {declared:?} {body:?}"
        );
    }
}

/// Sends each content-length `case` through a gateway whose `app` cluster has `extra` keys.
async fn assert_bad_lengths_never_arrive_complete(extra: &str, cases: &[&str]) {
    let (origin, uploads) = recording_origin().await;
    let echo = Origin::echo("echo").await;
    let body = format!(
        "{}\n[clusters.echo]\ntargets = [\"{}\"]\n\n[[routes]]\nname = \"echo\"\nprefix = \"/after\"\ncluster = \"echo\"\n",
        config(&origin.url(), extra),
        echo.url()
    );
    let gw = Gateway::start(&body).await;
    for case in cases {
        let result = attack(&gw, case).await;
        // h2 resets the stream itself; the gateway's 400 (bad_request_body) would do too.
        assert!(
            num(&result, "reset") == Some(PROTOCOL_ERROR) || num(&result, "status") == Some(400),
            "{case}: {result}"
        );
        assert_still_serves(&gw, &echo).await;
        assert_no_complete_upload(case, &origin, &uploads).await;
    }
}

#[tokio::test]
async fn content_length_disagreeing_with_data_never_arrives_complete_over_http1() {
    // "cl-under-split": content-length 3, DATA "abc", then DATA "defg". The HTTP/1.1
    // upstream must not get a complete 3-byte request before the excess arrives.
    let cases = ["cl-over", "cl-under", "cl-split", "cl-under-split"];
    assert_bad_lengths_never_arrive_complete("", &cases).await;
}

#[tokio::test]
async fn content_length_disagreeing_with_data_never_arrives_complete_over_http2() {
    let cases = ["cl-over", "cl-under", "cl-split", "cl-under-split"];
    assert_bad_lengths_never_arrive_complete("http2 = true", &cases).await;
}

#[tokio::test]
async fn authority_and_host_must_agree() {
    let origin = Origin::echo("o").await;
    let gw = Gateway::start(&config(&origin.url(), "")).await;

    let result = attack(&gw, "authority-mismatch").await;
    assert_eq!(num(&result, "status"), Some(400), "{result}");
    assert_eq!(result["content_type"], "application/problem+json");
    let problem: Value = serde_json::from_str(result["body"].as_str().expect("a body"))
        .expect("a problem+json body");
    assert_eq!(problem["type"], "urn:sluice:problem:bad_request");
    assert_eq!(origin.hits.load(Ordering::SeqCst), 0);

    let result = attack(&gw, "authority-match").await;
    assert_eq!(num(&result, "status"), Some(200), "{result}");
    let body = result["body"].as_str().expect("a body").to_string();
    let authority = gw.addr.to_string();
    assert_eq!(
        seen(&Bytes::from(body)).header("x-forwarded-host"),
        Some(authority.as_str())
    );
    assert_eq!(origin.hits.load(Ordering::SeqCst), 1);
    assert_still_serves(&gw, &origin).await;
}

#[tokio::test]
async fn streams_beyond_the_concurrency_limit_are_refused() {
    let origin = Origin::echo("o").await;
    let gw = Gateway::start(&config(&origin.url(), "")).await;
    // 150 streams opened in one burst, all still sending their bodies.
    let result = attack(&gw, "concurrent").await;
    assert_eq!(
        num(&result, "max_concurrent_streams"),
        Some(100),
        "{result}"
    );
    assert_eq!(num(&result, "refused"), Some(50), "{result}");
    assert_eq!(num(&result, "ok"), Some(100), "{result}");
    assert!(result.get("goaway").is_none(), "{result}");
    // Only the accepted streams reached the origin.
    assert_eq!(origin.hits.load(Ordering::SeqCst), 100);
    assert_still_serves(&gw, &origin).await;
}

#[tokio::test]
async fn rapid_reset_gets_goaway_and_memory_stays_flat() {
    let origin = Origin::echo("o").await;
    let gw = Gateway::start(&config(&origin.url(), "")).await;
    // 2000 x (HEADERS, RST_STREAM(CANCEL)) on one connection.
    let result = attack(&gw, "rapid-reset").await;
    let goaway = num(&result, "goaway") == Some(ENHANCE_YOUR_CALM);
    let served = result["probe"] == true && num(&result, "status") == Some(200);
    assert!(goaway || served, "{result}");
    if goaway {
        // The connection was cut long before its 2000 streams.
        let last = num(&result, "last_stream_id").expect("last_stream_id");
        assert!(last < 3999, "{result}");
        assert!(origin.hits.load(Ordering::SeqCst) <= streams_up_to(last));
    }
    assert_memory_bounded(&gw, "rapid-reset");
    assert_still_serves(&gw, &origin).await;
}

#[tokio::test]
async fn made_you_reset_gets_goaway_and_memory_stays_flat() {
    let origin = Origin::echo("o").await;
    let gw = Gateway::start(&config(&origin.url(), "")).await;
    // 400 requests whose DATA overruns their content-length: each makes the server reset.
    let result = attack(&gw, "made-you-reset").await;
    assert_eq!(num(&result, "goaway"), Some(ENHANCE_YOUR_CALM), "{result}");
    let last = num(&result, "last_stream_id").expect("last_stream_id");
    assert!(last < 799, "{result}");
    assert!(origin.hits.load(Ordering::SeqCst) <= streams_up_to(last));
    assert_memory_bounded(&gw, "made-you-reset");
    assert_still_serves(&gw, &origin).await;
}

#[tokio::test]
async fn continuation_flood_gets_goaway_and_memory_stays_flat() {
    let origin = Origin::echo("o").await;
    let gw = Gateway::start(&config(&origin.url(), "")).await;
    // HEADERS without END_HEADERS, then up to 5000 CONTINUATION frames of 1 KiB each.
    let result = attack(&gw, "continuation-flood").await;
    let goaway = num(&result, "goaway");
    assert!(
        matches!(goaway, Some(ENHANCE_YOUR_CALM | COMPRESSION_ERROR))
            || num(&result, "status") == Some(431),
        "{result}"
    );
    assert_eq!(origin.hits.load(Ordering::SeqCst), 0);
    assert_memory_bounded(&gw, "continuation-flood");
    assert_still_serves(&gw, &origin).await;
}

#[tokio::test]
async fn hpack_bombs_are_refused() {
    let origin = Origin::echo("o").await;
    let gw = Gateway::start(&config(&origin.url(), "")).await;

    // ~4 KiB on the wire decoding to ~160 KiB: over max_header_list_size (128 KiB).
    let result = attack(&gw, "hpack-bomb-small").await;
    assert_eq!(num(&result, "status"), Some(431), "{result}");
    assert!(result.get("goaway").is_none(), "{result}");
    assert_eq!(origin.hits.load(Ordering::SeqCst), 0);

    // ~5 KiB on the wire decoding to ~4 MiB: the connection is dropped.
    let result = attack(&gw, "hpack-bomb").await;
    assert!(
        num(&result, "goaway") == Some(ENHANCE_YOUR_CALM)
            || num(&result, "status") == Some(431)
            || num(&result, "reset").is_some(),
        "{result}"
    );
    assert_eq!(origin.hits.load(Ordering::SeqCst), 0);
    assert_memory_bounded(&gw, "hpack-bomb");
    assert_still_serves(&gw, &origin).await;
}

#[tokio::test]
async fn a_stream_whose_client_grants_no_window_is_reset_after_the_send_timeout() {
    let origin = Origin::echo("o").await;
    let gw = with_limits(&origin, "send_timeout = \"1s\"").await;
    let result = attack(&gw, "stalled-window").await;
    // The answer's head went out (HEADERS need no window), none of its body could, and
    // the gateway gave up on the stream instead of holding it and its target connection.
    assert_eq!(num(&result, "stalled_status"), Some(200), "{result}");
    assert_eq!(num(&result, "stalled_bytes"), Some(0), "{result}");
    assert_eq!(num(&result, "stalled_reset"), Some(CANCEL), "{result}");
    // The connection itself carries on: the next stream is answered in full.
    assert_eq!(num(&result, "status"), Some(200), "{result}");
    let body = result.get("body").and_then(Value::as_str).unwrap_or("");
    assert_eq!(
        seen(&Bytes::from(body.to_owned())).uri,
        "/after-stall",
        "{result}"
    );
    gw.log_with("server.limits.send_timeout").await;
    assert_still_serves(&gw, &origin).await;
}

#[tokio::test]
async fn a_stream_whose_client_stops_reading_the_connection_is_reset_after_the_send_timeout() {
    // Windows granted, but the client reads nothing: the socket fills, then the stream's
    // send buffer, and the answer waits on the connection instead of the window.
    const SIZE: usize = 32 * 1024 * 1024;
    let origin = Origin::custom("big", |_| async {
        Response::new(boxed(Full::new(Bytes::from(vec![b'x'; SIZE]))))
    })
    .await;
    let gw = with_limits(&origin, "send_timeout = \"1s\"").await;
    let result = attack(&gw, "unread").await;
    assert_eq!(num(&result, "status"), Some(200), "{result}");
    assert_eq!(num(&result, "reset"), Some(CANCEL), "{result}");
    let received = num(&result, "received").unwrap_or(0);
    assert!(received < SIZE as u64, "the whole answer arrived: {result}");
    gw.log_with("server.limits.send_timeout").await;
    // A client that reads gets the whole answer afterwards.
    let (status, _, body) = get_h2(&gw.url("/after")).await;
    assert_eq!((status, body.len()), (200, SIZE));
}

#[tokio::test]
async fn a_target_slower_than_the_send_timeout_does_not_get_an_http2_stream_reset() {
    // The target pauses longer than send_timeout between two chunks: the time it takes
    // to produce the answer is not the client's to account for.
    let origin = slow_origin().await;
    let gw = with_limits(&origin, "send_timeout = \"1s\"").await;
    let (status, _, body) = get_h2(&gw.url("/slow")).await;
    assert_eq!(
        (status, &body[..]),
        (200, &b"first|rest"[..]),
        "{}",
        gw.log()
    );
    assert!(!gw.log().contains("send_timeout"), "{}", gw.log());
}

/// An origin answering "first|", then "rest" 2.5 s later.
async fn slow_origin() -> Origin {
    Origin::custom("slow", |_| async {
        let (tx, body) = channel_body();
        tokio::spawn(async move {
            let _ = tx.send(data("first|")).await;
            tokio::time::sleep(Duration::from_millis(2500)).await;
            let _ = tx.send(data("rest")).await;
        });
        Response::new(body.boxed())
    })
    .await
}

#[tokio::test]
async fn an_http2_connection_with_a_stream_open_is_not_idle() {
    // The first stream stays open for longer than keepalive_timeout; the connection
    // must still be there, with no GOAWAY, for a second request once it ends.
    let origin = slow_origin().await;
    let gw = with_limits(&origin, "keepalive_timeout = \"1s\"").await;
    let result = attack(&gw, "two-in-a-row").await;
    assert_eq!(num(&result, "first_status"), Some(200), "{result}");
    assert_eq!(
        result.get("first_body").and_then(Value::as_str),
        Some("first|rest"),
        "{result}"
    );
    assert_eq!(num(&result, "status"), Some(200), "{result}");
    assert!(result.get("goaway").is_none(), "{result}");
}

#[tokio::test]
async fn an_idle_http2_connection_is_closed_after_the_keepalive_timeout() {
    let origin = Origin::echo("o").await;
    let gw = with_limits(&origin, "keepalive_timeout = \"1s\"").await;
    let result = attack(&gw, "idle").await;
    assert_eq!(num(&result, "status"), Some(200), "{result}");
    // A graceful goodbye: GOAWAY without an error, after which the connection closes.
    assert_eq!(num(&result, "goaway"), Some(0), "{result}");
    assert_eq!(
        result.get("closed").and_then(Value::as_bool),
        Some(true),
        "{result}"
    );
    assert_still_serves(&gw, &origin).await;
}
