//! curl against the gateway, as users call it: HTTP/1.1, HTTP/2 with prior knowledge,
//! exact paths, Unix sockets, uploads, errors and the admin endpoints.

use crate::harness::*;
use std::process::Command;

/// What curl printed: the status, the response headers (lowercased names) and the body.
struct CurlReply {
    status: u16,
    version: String,
    headers: Vec<(String, String)>,
    body: String,
}

impl CurlReply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Runs `curl -s -i ARGS` and parses its output.
async fn curl(args: &[&str]) -> CurlReply {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let output = tokio::task::spawn_blocking(move || {
        Command::new("curl")
            .args(["-s", "-i", "--max-time", "30"])
            .args(&args)
            .output()
            .expect("curl runs (scripts/test installs it)")
    })
    .await
    .expect("join");
    assert!(
        output.status.success(),
        "curl failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").expect("a response head");
    let mut lines = head.lines();
    let status_line = lines.next().expect("a status line");
    let mut words = status_line.split_whitespace();
    let version = words.next().expect("a version").to_string();
    let status = words
        .next()
        .and_then(|s| s.parse().ok())
        .expect("a status code");
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    CurlReply {
        status,
        version,
        headers,
        body: body.to_string(),
    }
}

fn app_config(target: &str) -> String {
    format!("[clusters.app]\ntargets = [\"{target}\"]\n\n[[routes]]\nname = \"app\"\nprefix = \"/app\"\ncluster = \"app\"\n")
}

#[tokio::test]
async fn curl_over_http1_and_http2() {
    let origin = Origin::echo("a").await;
    let gw = Gateway::start(&app_config(&origin.url())).await;

    let r = curl(&[&gw.url("/app/x?y=1")]).await;
    assert_eq!(
        (r.status, r.version.as_str()),
        (200, "HTTP/1.1"),
        "{}",
        gw.log()
    );
    assert_eq!(seen(&r.body.clone().into()).uri, "/app/x?y=1");
    assert!(r.header("x-request-id").is_some_and(|id| id.len() == 32));

    let r = curl(&["--http2-prior-knowledge", &gw.url("/app/h2")]).await;
    assert_eq!((r.status, r.version.as_str()), (200, "HTTP/2"));
    let seen_h2 = seen(&r.body.clone().into());
    assert_eq!(seen_h2.uri, "/app/h2");
    assert_eq!(
        seen_h2.header("x-forwarded-host"),
        Some(gw.addr.to_string().as_str())
    );
}

#[tokio::test]
async fn curl_path_as_is_is_normalised_before_routing_and_forwarding() {
    let origin = Origin::echo("a").await;
    let gw = Gateway::start(&app_config(&origin.url())).await;
    let r = curl(&["--path-as-is", &gw.url("/other/../app/./a//b/%7euser")]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(seen(&r.body.clone().into()).uri, "/app/a/b/~user");
    let r = curl(&["--path-as-is", &gw.url("/app/a%2Fb")]).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.header("content-type"), Some("application/problem+json"));
}

#[tokio::test]
async fn curl_over_a_unix_socket_listener() {
    let origin = Origin::echo("a").await;
    let dir = scratch_dir();
    let socket = dir.join("gw.sock");
    let gw = Gateway::start_with(
        &format!("unix = [\"{}\"]", socket.display()),
        &app_config(&origin.url()),
    )
    .await;
    let socket = socket.display().to_string();
    let r = curl(&["--unix-socket", &socket, "http://localhost/app/over-uds"]).await;
    assert_eq!(r.status, 200, "{}", gw.log());
    let seen = seen(&r.body.clone().into());
    assert_eq!(seen.uri, "/app/over-uds");
    assert_eq!(
        seen.header("x-forwarded-for"),
        None,
        "a Unix-socket client has no IP"
    );
}

#[tokio::test]
async fn curl_uploads_a_large_body_whole() {
    let origin = Origin::echo("a").await;
    let gw = Gateway::start(&app_config(&origin.url())).await;
    let file = scratch_dir().join("upload.txt");
    let content: String = (0..200_000)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    std::fs::write(&file, &content).expect("write upload");
    let data = format!("@{}", file.display());
    for extra in [&[][..], &["-H", "Transfer-Encoding: chunked"][..]] {
        let mut args = vec!["-X", "POST", "--data-binary", &data];
        args.extend_from_slice(extra);
        let url = gw.url("/app/upload");
        args.push(&url);
        let r = curl(&args).await;
        assert_eq!(r.status, 200, "{extra:?}");
        assert_eq!(
            seen(&r.body.clone().into()).body.len(),
            content.len(),
            "{extra:?}"
        );
    }
}

#[tokio::test]
async fn curl_sees_problem_json_with_its_own_request_id() {
    let origin = Origin::echo("a").await;
    let gw = Gateway::start(&app_config(&origin.url())).await;
    let r = curl(&["-H", "X-Request-Id: curl-trace-1", &gw.url("/missing")]).await;
    assert_eq!(r.status, 404);
    assert_eq!(r.header("x-request-id"), Some("curl-trace-1"));
    let problem: serde_json::Value = serde_json::from_str(&r.body).expect("problem+json");
    assert_eq!(problem["request_id"], "curl-trace-1");
    assert_eq!(problem["status"], 404);
}

#[tokio::test]
async fn curl_reads_the_admin_endpoints() {
    let origin = Origin::echo("a").await;
    let gw = Gateway::start(&app_config(&origin.url())).await;
    assert_eq!(curl(&[&gw.url("/app/one")]).await.status, 200);
    let r = curl(&[&gw.admin_url("/healthz")]).await;
    assert_eq!((r.status, r.body.as_str()), (200, "ok\n"));
    let r = curl(&[&gw.admin_url("/ready")]).await;
    assert_eq!(r.status, 200);
    let r = curl(&[&gw.admin_url("/metrics")]).await;
    assert!(
        r.body
            .contains("sluice_requests_total{route=\"app\",method=\"GET\",status=\"2xx\"} 1"),
        "{}",
        r.body
    );
    let r = curl(&[&gw.admin_url("/health")]).await;
    let health: serde_json::Value = serde_json::from_str(&r.body).expect("health json");
    assert_eq!(health["clusters"][0]["name"], "app");
    assert_eq!(health["config"]["generation"], 1);
}
