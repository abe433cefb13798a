//! Routing through the real binary: templates, precedence, methods, hosts, rewrites, answers.

use crate::harness::*;
use crate::proxying::app;
use bytes::Bytes;
use http_body_util::Full;
use hyper::Request;
use std::future::Future;
use std::time::Duration;

/// `[[routes]]` answering `path` with `body` from the gateway itself.
fn answer(name: &str, path_key: &str, path: &str, extra: &str, body: &str) -> String {
    format!(
        "[[routes]]\nname = \"{name}\"\n{path_key} = \"{path}\"\n{extra}\nrespond = {{ body = \"{body}\" }}\n\n"
    )
}

/// Sends `method path` with `Host: host` over HTTP/1.1.
async fn request(gw: &Gateway, method: &str, path: &str, host: Option<&str>) -> Answer {
    let mut builder = Request::builder().method(method).uri(gw.url(path));
    if let Some(host) = host {
        builder = builder.header("host", host);
    }
    let request = builder.body(Full::new(Bytes::new())).expect("request");
    send(request, false)
        .await
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
}

/// The body of a `200` answer, as text.
async fn body_of(gw: &Gateway, path: &str) -> String {
    let (status, _, body) = get(&gw.url(path)).await;
    assert_eq!(
        status,
        200,
        "GET {path}: {}",
        String::from_utf8_lossy(&body)
    );
    String::from_utf8_lossy(&body).into_owned()
}

/// Parses a problem+json answer and checks its content type and `request_id`.
fn problem(answer: &Answer) -> serde_json::Value {
    let (status, headers, body) = answer;
    assert_eq!(
        headers.get("content-type").map(|v| v.as_bytes()),
        Some(&b"application/problem+json"[..])
    );
    let json: serde_json::Value = serde_json::from_slice(body).expect("problem body is JSON");
    assert_eq!(json["status"], u64::from(*status));
    let id = headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .expect("x-request-id on the answer");
    assert_eq!(json["request_id"], id, "{json}");
    json
}

#[tokio::test]
async fn static_beats_param_beats_catch_all() {
    let routes = [
        answer("me", "path", "/users/me", "", "static"),
        answer("user", "path", "/users/{id}", "", "param"),
        answer("user-rest", "path", "/users/{*rest}", "", "catch-all"),
        answer("orders", "path", "/users/{id}/orders", "", "param-orders"),
        answer("docs-index", "path", "/docs/index", "", "docs-static"),
        answer("docs-page", "path", "/docs/{page}", "", "docs-param"),
        answer("docs", "prefix", "/docs", "", "docs-prefix"),
    ]
    .concat();
    let gw = Gateway::start(&routes).await;
    for (path, expected) in [
        ("/users/me", "static"),
        ("/users/42", "param"),
        ("/users/42/orders", "param-orders"),
        ("/users/me/orders", "param-orders"),
        ("/users/42/a/b", "catch-all"),
        ("/users/me/a", "catch-all"),
        ("/docs/index", "docs-static"),
        ("/docs/intro", "docs-param"),
        ("/docs/intro/more", "docs-prefix"),
        ("/docs", "docs-prefix"),
    ] {
        assert_eq!(body_of(&gw, path).await, expected, "GET {path}");
    }
}

#[tokio::test]
async fn prefix_takes_itself_and_below_only() {
    let routes = [
        answer("static", "prefix", "/static/", "", "static"),
        answer("root-file", "path", "/other", "", "other"),
    ]
    .concat();
    let gw = Gateway::start(&routes).await;
    for path in ["/static", "/static/", "/static/css/site.css", "/static?v=1"] {
        assert_eq!(body_of(&gw, path).await, "static", "GET {path}");
    }
    for path in ["/staticfoo", "/statics/a", "/", "/stat"] {
        let answer = get(&gw.url(path)).await;
        assert_eq!(answer.0, 404, "GET {path}");
        problem(&answer);
    }
}

#[tokio::test]
async fn wrong_method_is_405_with_allow() {
    let routes = [
        answer(
            "item",
            "path",
            "/items/{id}",
            "methods = [\"get\", \"PUT\"]",
            "item",
        ),
        answer(
            "item-delete",
            "path",
            "/items/{id}",
            "methods = [\"DELETE\"]",
            "deleted",
        ),
    ]
    .concat();
    let gw = Gateway::start(&routes).await;
    for (method, expected) in [("GET", "item"), ("PUT", "item"), ("DELETE", "deleted")] {
        let (status, _, body) = request(&gw, method, "/items/7", None).await;
        assert_eq!((status, &body[..]), (200, expected.as_bytes()), "{method}");
    }
    let (status, _, body) = request(&gw, "HEAD", "/items/7", None).await;
    assert_eq!((status, body.len()), (200, 0), "HEAD follows GET");

    let answer = request(&gw, "POST", "/items/7", None).await;
    assert_eq!(answer.0, 405);
    assert_eq!(
        answer.1.get("allow").map(|v| v.as_bytes()),
        Some(&b"DELETE, GET, HEAD, PUT"[..])
    );
    let json = problem(&answer);
    assert_eq!(json["type"], "urn:sluice:problem:method_not_allowed");

    let answer = request(&gw, "POST", "/nothing", None).await;
    assert_eq!(answer.0, 404, "no path: 404, not 405");
}

#[tokio::test]
async fn exact_host_beats_wildcard_beats_any() {
    let routes = [
        answer(
            "exact",
            "path",
            "/who",
            "hosts = [\"api.example.com\"]",
            "exact",
        ),
        answer(
            "wild",
            "path",
            "/who",
            "hosts = [\"*.example.com\"]",
            "wild",
        ),
        answer(
            "deep",
            "path",
            "/who",
            "hosts = [\"*.eu.example.com\"]",
            "deep",
        ),
        answer("any", "path", "/who", "", "any"),
        answer(
            "only-exact",
            "path",
            "/private",
            "hosts = [\"API.example.com\"]",
            "private",
        ),
    ]
    .concat();
    let gw = Gateway::start(&routes).await;
    for (host, expected) in [
        ("api.example.com", "exact"),
        ("api.example.com:8080", "exact"),
        ("API.Example.COM", "exact"),
        ("www.example.com", "wild"),
        ("a.b.example.com:443", "wild"),
        ("x.eu.example.com", "deep"),
        ("example.com", "any"),
        ("badexample.com", "any"),
        ("other.org", "any"),
    ] {
        let (status, _, body) = request(&gw, "GET", "/who", Some(host)).await;
        assert_eq!(
            (status, String::from_utf8_lossy(&body).as_ref()),
            (200, expected),
            "Host: {host}"
        );
    }
    let (status, _, body) = request(&gw, "GET", "/private", Some("api.example.com:1")).await;
    assert_eq!((status, &body[..]), (200, &b"private"[..]));
    let answer = request(&gw, "GET", "/private", Some("www.example.com")).await;
    assert_eq!(
        answer.0, 404,
        "a host-only route is not served for other hosts"
    );
    problem(&answer);
}

#[tokio::test]
async fn strip_prefix_and_rewrite_shape_the_upstream_path() {
    let origin = Origin::echo("app").await;
    let routes = format!(
        "[clusters.app]\ntargets = [\"{}\"]\n\n\
         [[routes]]\nname = \"api\"\nprefix = \"/api\"\nstrip_prefix = \"/api/\"\ncluster = \"app\"\n\n\
         [[routes]]\nname = \"v1-user\"\npath = \"/v1/users/{{id}}\"\nstrip_prefix = \"/v1\"\ncluster = \"app\"\n\n\
         [[routes]]\nname = \"user\"\npath = \"/u/{{id}}\"\nrewrite = \"/v2/users/{{id}}\"\ncluster = \"app\"\n\n\
         [[routes]]\nname = \"orders\"\npath = \"/shop/orders/{{*rest}}\"\nrewrite = \"/v2/orders/{{rest}}\"\ncluster = \"app\"\n\n\
         [[routes]]\nname = \"fixed\"\nprefix = \"/legacy\"\nrewrite = \"/new\"\ncluster = \"app\"\n\n\
         [[routes]]\nname = \"plain\"\nprefix = \"/plain\"\ncluster = \"app\"\n",
        origin.url()
    );
    let gw = Gateway::start(&routes).await;
    for (path, upstream) in [
        ("/api/users/7?x=1&y=2", "/users/7?x=1&y=2"),
        ("/api", "/"),
        ("/api/?x=1", "/?x=1"),
        ("/v1/users/9", "/users/9"),
        ("/u/42?q=a%20b", "/v2/users/42?q=a%20b"),
        ("/shop/orders/2024/17?page=2", "/v2/orders/2024/17?page=2"),
        ("/legacy/any/thing?k=v", "/new?k=v"),
        ("/plain/a%20b?z", "/plain/a%20b?z"),
    ] {
        let (status, _, body) = get(&gw.url(path)).await;
        assert_eq!(status, 200, "GET {path}: {}", gw.log());
        assert_eq!(seen(&body).uri, upstream, "GET {path}");
    }
}

#[tokio::test]
async fn respond_answers_from_the_gateway() {
    let routes = "[[routes]]\nname = \"teapot\"\npath = \"/tea\"\n\
         respond = { status = 418, body = \"short and stout\\n\", headers = { \"content-type\" = \"text/plain; charset=utf-8\", \"x-kettle\" = \"on\" } }\n\n\
         [[routes]]\nname = \"empty\"\npath = \"/empty\"\nrespond = {}\n\n\
         [[routes]]\nname = \"gone\"\nprefix = \"/old\"\nrespond = { status = 301, headers = { location = \"/new\" } }\n";
    let gw = Gateway::start(routes).await;
    let (status, headers, body) = get(&gw.url("/tea")).await;
    assert_eq!(status, 418);
    assert_eq!(&body[..], b"short and stout\n");
    assert_eq!(
        headers.get("content-type").map(|v| v.as_bytes()),
        Some(&b"text/plain; charset=utf-8"[..])
    );
    assert_eq!(
        headers.get("x-kettle").map(|v| v.as_bytes()),
        Some(&b"on"[..])
    );
    assert!(headers.contains_key("x-request-id"));

    let (status, _, body) = get(&gw.url("/empty")).await;
    assert_eq!((status, body.len()), (200, 0));

    let (status, headers, _) = get(&gw.url("/old/page")).await;
    assert_eq!(status, 301);
    assert_eq!(
        headers.get("location").map(|v| v.as_bytes()),
        Some(&b"/new"[..])
    );
}

#[tokio::test]
async fn no_route_is_404_problem_with_the_request_id() {
    let gw = Gateway::start(&answer("only", "path", "/only", "", "only")).await;
    let answer = get(&gw.url("/nowhere/else?x=1")).await;
    assert_eq!(answer.0, 404);
    let json = problem(&answer);
    assert_eq!(json["type"], "urn:sluice:problem:no_route");
    assert_eq!(json["title"], "Not Found");

    let mut builder = Request::get(gw.url("/nowhere"));
    builder = builder.header("x-request-id", "client-chosen-id-1");
    let request = builder.body(Full::new(Bytes::new())).expect("request");
    let answer = send(request, false).await.expect("send");
    assert_eq!(answer.0, 404);
    assert_eq!(problem(&answer)["request_id"], "client-chosen-id-1");
}

#[tokio::test]
async fn routes_show_in_metrics_health_and_access_log() {
    let origin = Origin::echo("a").await;
    let gw = Gateway::start(&app(&[origin.url()], "")).await;
    let mut ids = Vec::new();
    for n in 0..3 {
        let (status, headers, body) = get(&gw.url(&format!("/page/{n}"))).await;
        assert_eq!(status, 200);
        let id = headers.get("x-request-id").and_then(|v| v.to_str().ok());
        ids.push((id.expect("request id").to_string(), body.len()));
    }

    let series = "sluice_requests_total{route=\"app\",method=\"GET\",status=\"2xx\"} 3";
    poll_until(
        "the request counter",
        || async { get(&gw.admin_url("/metrics")).await.2 },
        |text| String::from_utf8_lossy(text).lines().any(|l| l == series),
    )
    .await;

    let (status, _, body) = get(&gw.admin_url("/health")).await;
    assert_eq!(status, 200);
    let health: serde_json::Value = serde_json::from_slice(&body).expect("health JSON");
    assert_eq!(health["config"]["generation"], 1, "{health}");
    assert_eq!(health["clusters"][0]["name"], "app", "{health}");
    assert_eq!(
        health["clusters"][0]["targets"][0]["url"],
        origin.url(),
        "{health}"
    );

    let access = poll_until(
        "three access-log lines",
        || async { access_lines(&gw.log()) },
        |lines| lines.len() >= 3,
    )
    .await;
    for (n, (id, bytes)) in ids.iter().enumerate() {
        let (line, raw) = access
            .iter()
            .find(|(line, _)| line["request_id"] == id.as_str())
            .unwrap_or_else(|| panic!("no access-log line for {id}: {access:?}"));
        assert_eq!(line["method"], "GET", "{raw}");
        assert_eq!(line["path"], format!("/page/{n}"), "{raw}");
        assert_eq!(line["route"], "app", "{raw}");
        assert_eq!(line["status"], 200, "{raw}");
        assert_eq!(line["bytes"], *bytes, "{raw}");
        let target = format!("\"upstream\":\"{}\"", origin.url());
        assert!(raw.contains(&target), "the line names the target: {raw}");
    }
}

/// The access-log lines in a JSON log, parsed and as written.
fn access_lines(log: &str) -> Vec<(serde_json::Value, String)> {
    log.lines()
        .filter(|l| l.contains("\"sluice::access\""))
        .map(|l| {
            (
                serde_json::from_str(l).expect("a JSON log line"),
                l.to_string(),
            )
        })
        .collect()
}

/// Polls `fetch` until `done` holds for its result (bounded), and returns that result.
async fn poll_until<T, F, Fut>(what: &str, fetch: F, done: impl Fn(&T) -> bool) -> T
where
    F: Fn() -> Fut,
    Fut: Future<Output = T>,
{
    for _ in 0..400 {
        let value = fetch().await;
        if done(&value) {
            return value;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("gave up waiting for {what}");
}
