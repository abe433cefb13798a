//! Middleware on real requests: IP rules behind trusted proxies, header transforms, API keys, rate limits and CORS, each attached by name.

use crate::harness::*;
use bytes::Bytes;
use http_body_util::Full;
use hyper::Request;

/// An echo origin behind `route_lines` (which name the middleware), after `middleware`.
fn config(origin: &Origin, middleware: &str, routes: &str) -> String {
    format!(
        "{middleware}\n[clusters.app]\ntargets = [\"{}\"]\n\n{routes}",
        origin.url()
    )
}

fn route(name: &str, path: &str, middleware: &str) -> String {
    format!("[[routes]]\nname = \"{name}\"\nprefix = \"{path}\"\ncluster = \"app\"\nmiddleware = [{middleware}]\n\n")
}

/// GET `url` with `headers`.
async fn get_with(url: &str, headers: &[(&str, &str)]) -> Answer {
    request("GET", url, headers).await
}

async fn request(method: &str, url: &str, headers: &[(&str, &str)]) -> Answer {
    let mut builder = Request::builder().method(method).uri(url);
    for (k, v) in headers {
        builder = builder.header(*k, *v);
    }
    send(
        builder.body(Full::new(Bytes::new())).expect("request"),
        false,
    )
    .await
    .unwrap_or_else(|e| panic!("{method} {url}: {e}"))
}

fn header<'a>(answer: &'a Answer, name: &str) -> Option<&'a str> {
    answer.1.get(name).and_then(|v| v.to_str().ok())
}

#[tokio::test]
async fn ip_rules_use_the_client_address_behind_trusted_proxies() {
    let origin = Origin::echo("app").await;
    let mw = "[middleware.office]\ntype = \"ip\"\nallow = [\"198.51.100.0/24\"]\ndeny = [\"198.51.100.13\"]\n";
    let routes = route("office", "/office", "\"office\"") + &route("open", "/open", "");
    // First without trusting anyone: the peer is 127.0.0.1, not on the allow list.
    let gw = Gateway::start(&config(&origin, mw, &routes)).await;
    let answer = get_with(&gw.url("/office"), &[("x-forwarded-for", "198.51.100.7")]).await;
    assert_problem(&gw, &answer, 403, "forbidden");
    assert!(
        text(&answer.2).contains("127.0.0.1 is not allowed"),
        "{}",
        text(&answer.2)
    );
    assert_eq!(
        get(&gw.url("/open")).await.0,
        200,
        "other routes are not filtered"
    );
    drop(gw);

    let gw = Gateway::start_with(
        "trusted_proxies = [\"127.0.0.0/8\", \"10.0.0.0/8\"]",
        &config(&origin, mw, &routes),
    )
    .await;
    let through = |xff: &'static str| {
        let url = gw.url("/office");
        async move { get_with(&url, &[("x-forwarded-for", xff)]).await }
    };
    // The rightmost untrusted entry is the client; what it claims further left is ignored.
    assert_eq!(through("203.0.113.1, 198.51.100.7, 10.1.1.1").await.0, 200);
    let denied = through("198.51.100.13").await;
    assert_problem(&gw, &denied, 403, "forbidden");
    assert!(text(&denied.2).contains("198.51.100.13 is denied"));
    assert_eq!(through("198.51.100.7, 203.0.113.1").await.0, 403);
    assert_eq!(
        get(&gw.url("/office")).await.0,
        403,
        "no header: the peer itself"
    );
}

#[tokio::test]
async fn header_transforms_fill_placeholders_on_requests_and_answers() {
    let origin = Origin::echo("app").await;
    let mw = r#"[middleware.tag]
type = "headers"
request = { set = { "x-client" = "{client_ip} via {route}", "x-req" = "id={request_id} {{literal}}" }, add = { "x-extra" = "two" }, remove = ["x-debug"] }
response = { set = { "strict-transport-security" = "max-age=63072000" }, remove = ["x-origin"] }
"#;
    let dead = format!(
        "[clusters.dead]\ntargets = [\"http://127.0.0.1:{}\"]\n\n[[routes]]\nname = \"dead\"\nprefix = \"/dead\"\ncluster = \"dead\"\nmiddleware = [\"tag\"]\n\n",
        free_port()
    );
    let gw = Gateway::start(&config(
        &origin,
        mw,
        &(dead + &route("tagged", "/", "\"tag\"")),
    ))
    .await;
    let answer = get_with(
        &gw.url("/t"),
        &[
            ("x-debug", "secret"),
            ("x-extra", "one"),
            ("x-request-id", "abc123"),
        ],
    )
    .await;
    assert_eq!(answer.0, 200);
    let seen = seen(&answer.2);
    assert_eq!(seen.header("x-client"), Some("127.0.0.1 via tagged"));
    assert_eq!(seen.header("x-req"), Some("id=abc123 {literal}"));
    assert_eq!(
        seen.headers.get("x-extra"),
        Some(&vec!["one".to_string(), "two".to_string()])
    );
    assert_eq!(seen.header("x-debug"), None);
    assert_eq!(
        header(&answer, "strict-transport-security"),
        Some("max-age=63072000")
    );
    assert_eq!(header(&answer, "x-request-id"), Some("abc123"));
    // The response side runs on the gateway's own errors too.
    let gw_error = get(&gw.url("/dead")).await;
    assert_problem(&gw, &gw_error, 502, "upstream_connect_failed");
    assert_eq!(
        header(&gw_error, "strict-transport-security"),
        Some("max-age=63072000")
    );
}

const KEYS: &str = r#"[middleware.keys]
type = "api_key"
key_from = ["header:x-api-key", "query:api_key"]
consumers = { alice = ["alice-secret-key"], bob = ["sha256:BOBDIGEST"] }
"#;

fn keys_block() -> String {
    use std::fmt::Write;
    // bob's key is given as its SHA-256 digest, as an operator would store it.
    let digest = std::process::Command::new("sh")
        .args(["-c", "printf %s bob-secret-key | sha256sum | cut -d' ' -f1"])
        .output()
        .expect("sha256sum");
    let mut hex = String::new();
    let _ = write!(hex, "{}", String::from_utf8_lossy(&digest.stdout).trim());
    assert_eq!(hex.len(), 64);
    KEYS.replace("BOBDIGEST", &hex)
}

#[tokio::test]
async fn api_keys_name_the_consumer_and_never_reach_the_origin() {
    let origin = Origin::echo("app").await;
    let routes = route("keyed", "/keyed", "\"keys\"") + &route("open", "/open", "");
    let gw = Gateway::start(&config(&origin, &keys_block(), &routes)).await;

    let none = get(&gw.url("/keyed")).await;
    assert_problem(&gw, &none, 401, "unauthorized");
    assert_eq!(
        header(&none, "www-authenticate"),
        Some("ApiKey realm=\"sluice\"")
    );
    let wrong = get_with(&gw.url("/keyed"), &[("x-api-key", "alice-secret-kez")]).await;
    assert_problem(&gw, &wrong, 401, "unauthorized");

    let alice = get_with(
        &gw.url("/keyed"),
        &[("x-api-key", "alice-secret-key"), ("x-consumer", "mallory")],
    )
    .await;
    assert_eq!(alice.0, 200, "{}", text(&alice.2));
    let seen_alice = seen(&alice.2);
    assert_eq!(seen_alice.header("x-consumer"), Some("alice"));
    assert_eq!(seen_alice.header("x-api-key"), None);

    let bob = get(&gw.url("/keyed/x?a=1&api_key=bob-secret-key&b=2")).await;
    assert_eq!(bob.0, 200);
    let seen_bob = seen(&bob.2);
    assert_eq!(seen_bob.header("x-consumer"), Some("bob"));
    assert_eq!(seen_bob.uri, "/keyed/x?a=1&b=2");

    // A client cannot claim an identity on a route without keys either.
    let open = get_with(&gw.url("/open"), &[("x-consumer", "alice")]).await;
    assert_eq!(seen(&open.2).header("x-consumer"), None);

    let log = gw.log_through(&open).await;
    assert!(log.contains("\"consumer\":\"alice\""), "{log}");
    assert!(
        !log.contains("alice-secret-key") && !log.contains("bob-secret-key"),
        "keys must never be logged"
    );
}

#[tokio::test]
async fn rate_limits_admit_exactly_their_limit_under_parallel_load() {
    let origin = Origin::echo("app").await;
    let mw = "[middleware.hundred]\ntype = \"rate_limit\"\nrate = 100\nper = \"1h\"\nkey = \"route\"\n\n\
              [middleware.five]\ntype = \"rate_limit\"\nalgorithm = \"sliding_window\"\nrate = 5\nper = \"1h\"\n";
    let routes = route("busy", "/busy", "\"hundred\"") + &route("small", "/small", "\"five\"");
    let gw = Gateway::start(&config(&origin, mw, &routes)).await;

    let url = gw.url("/busy");
    let tasks: Vec<_> = (0..400)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move { get(&url).await })
        })
        .collect();
    let mut statuses = std::collections::BTreeMap::new();
    for task in tasks {
        let answer = task.await.expect("join");
        *statuses.entry(answer.0).or_insert(0) += 1;
        if answer.0 == 429 {
            assert_problem_body(&answer.2, 429, "rate_limited");
            let retry: u64 = header(&answer, "retry-after")
                .and_then(|v| v.parse().ok())
                .expect("retry-after");
            assert!(retry >= 1, "{retry}");
            assert_eq!(header(&answer, "ratelimit-remaining"), Some("0"));
        }
    }
    assert_eq!(statuses.get(&200), Some(&100), "{statuses:?}");
    assert_eq!(statuses.get(&429), Some(&300), "{statuses:?}");

    for left in (0..5).rev() {
        let answer = get(&gw.url("/small")).await;
        assert_eq!(answer.0, 200);
        assert_eq!(header(&answer, "ratelimit-limit"), Some("5"));
        assert_eq!(
            header(&answer, "ratelimit-remaining"),
            Some(left.to_string().as_str())
        );
    }
    assert_eq!(get(&gw.url("/small")).await.0, 429);

    // A reload that leaves the limit alone keeps its count.
    gw.rewrite("", &(config(&origin, mw, &routes) + "\n# touched\n"));
    let (status, _) = post_reload(&gw).await;
    assert_eq!(status, 200);
    assert_eq!(
        get(&gw.url("/small")).await.0,
        429,
        "the count survives the reload"
    );
}

#[tokio::test]
async fn rate_limits_per_consumer_count_each_consumer_apart() {
    let origin = Origin::echo("app").await;
    let mw = keys_block() + "\n[middleware.per-consumer]\ntype = \"rate_limit\"\nrate = 2\nper = \"1h\"\nkey = \"consumer\"\n";
    let gw = Gateway::start(&config(
        &origin,
        &mw,
        &route("keyed", "/", "\"keys\", \"per-consumer\""),
    ))
    .await;
    let url = gw.url("/a");
    let as_alice = || get_with(&url, &[("x-api-key", "alice-secret-key")]);
    assert_eq!(as_alice().await.0, 200);
    assert_eq!(as_alice().await.0, 200);
    assert_eq!(as_alice().await.0, 429);
    assert_eq!(
        get(&gw.url("/b?api_key=bob-secret-key")).await.0,
        200,
        "bob has his own count"
    );
}

#[tokio::test]
async fn cors_answers_preflights_and_marks_answers_for_allowed_origins() {
    let origin = Origin::echo("app").await;
    let mw = r#"[middleware.web]
type = "cors"
allow_origins = ["https://app.example.com", "https://*.example.org"]
allow_methods = ["GET", "PUT"]
allow_headers = ["content-type", "x-token"]
expose_headers = ["x-request-id"]
allow_credentials = true
max_age = "10m"
"#;
    let routes = "[[routes]]\nname = \"items\"\npath = \"/items/{id}\"\nmethods = [\"GET\", \"PUT\", \"DELETE\"]\ncluster = \"app\"\nmiddleware = [\"web\"]\n";
    let gw = Gateway::start(&config(&origin, mw, routes)).await;
    let url = gw.url("/items/1");

    let pre = request(
        "OPTIONS",
        &url,
        &[
            ("origin", "https://a.b.example.org"),
            ("access-control-request-method", "PUT"),
            ("access-control-request-headers", "Content-Type, X-Token"),
        ],
    )
    .await;
    assert_eq!(pre.0, 204, "{}", text(&pre.2));
    assert_eq!(
        header(&pre, "access-control-allow-origin"),
        Some("https://a.b.example.org")
    );
    assert_eq!(
        header(&pre, "access-control-allow-methods"),
        Some("GET, PUT")
    );
    assert_eq!(
        header(&pre, "access-control-allow-headers"),
        Some("content-type, x-token")
    );
    assert_eq!(
        header(&pre, "access-control-allow-credentials"),
        Some("true")
    );
    assert_eq!(header(&pre, "access-control-max-age"), Some("600"));
    assert_eq!(
        origin.hits.load(std::sync::atomic::Ordering::Relaxed),
        0,
        "answered by the gateway"
    );

    for (origin_header, method, headers, why) in [
        (
            "https://evil.example.com",
            "PUT",
            "",
            "origin https://evil.example.com is not allowed",
        ),
        (
            "https://app.example.com",
            "DELETE",
            "",
            "method DELETE is not allowed",
        ),
        (
            "https://app.example.com",
            "GET",
            "x-other",
            "header x-other is not allowed",
        ),
    ] {
        let mut h = vec![
            ("origin", origin_header),
            ("access-control-request-method", method),
        ];
        if !headers.is_empty() {
            h.push(("access-control-request-headers", headers));
        }
        let refused = request("OPTIONS", &url, &h).await;
        assert_problem(&gw, &refused, 403, "cors_rejected");
        assert!(text(&refused.2).contains(why), "{}", text(&refused.2));
        assert_eq!(header(&refused, "access-control-allow-origin"), None);
    }

    let simple = get_with(&url, &[("origin", "https://app.example.com")]).await;
    assert_eq!(simple.0, 200);
    assert_eq!(
        header(&simple, "access-control-allow-origin"),
        Some("https://app.example.com")
    );
    assert_eq!(
        header(&simple, "access-control-expose-headers"),
        Some("x-request-id")
    );
    assert_eq!(header(&simple, "vary"), Some("Origin"));
    let other = get_with(&url, &[("origin", "https://evil.example.com")]).await;
    assert_eq!(other.0, 200, "the request itself is not refused");
    assert_eq!(header(&other, "access-control-allow-origin"), None);
    // A plain OPTIONS that is not a preflight, or a preflight for a method no route
    // takes, still gets the route's 405.
    assert_eq!(request("OPTIONS", &url, &[]).await.0, 405);
    let unroutable = request(
        "OPTIONS",
        &url,
        &[
            ("origin", "https://app.example.com"),
            ("access-control-request-method", "PATCH"),
        ],
    )
    .await;
    assert_problem(&gw, &unroutable, 405, "method_not_allowed");
}

#[tokio::test]
async fn a_refused_request_leaves_no_body_behind_to_be_read_as_the_next_request() {
    let origin = Origin::echo("app").await;
    let gw = Gateway::start(&config(
        &origin,
        &keys_block(),
        &route("keyed", "/", "\"keys\""),
    ))
    .await;
    // The body of a request refused for want of a key is itself a request with a key: it
    // must never be parsed and answered as a second request.
    let smuggled = "GET /smuggled HTTP/1.1\r\nHost: a\r\nX-Api-Key: alice-secret-key\r\n\r\n";
    let request = format!(
        "POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\n\r\n{smuggled}",
        smuggled.len()
    );
    let answer = raw_async(
        gw.addr,
        request.into_bytes(),
        std::time::Duration::from_secs(2),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    assert_eq!(
        answer.matches("HTTP/1.1 ").count(),
        1,
        "one answer only: {answer}"
    );
    assert_eq!(
        origin.hits.load(std::sync::atomic::Ordering::Relaxed),
        0,
        "{answer}"
    );
    assert_eq!(
        get_with(&gw.url("/after"), &[("x-api-key", "alice-secret-key")])
            .await
            .0,
        200
    );
}
