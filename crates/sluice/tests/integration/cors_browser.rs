//! CORS as a browser enforces it: a page served from one origin calls the gateway on another from headless Chromium, and what its script can read is what users get.

use crate::harness::*;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Response;
use std::process::Command;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

/// A page whose script calls `gateway` (a `PUT` with a JSON body and a custom header,
/// which needs a preflight, then a simple `GET`) and writes what it could read into
/// the document.
fn page(gateway: &str) -> String {
    format!(
        r#"<!doctype html><html><body>waiting<script>
(async () => {{
  const out = [];
  try {{
    const r = await fetch("{gateway}/items/1", {{ method: "PUT", headers: {{ "content-type": "application/json", "x-token": "t" }}, body: "{{}}" }});
    out.push("put:" + r.status);
  }} catch (e) {{ out.push("put:blocked"); }}
  try {{
    const r = await fetch("{gateway}/items/1");
    out.push("get:" + r.status + ":" + (r.headers.get("x-request-id") ? "id" : "no-id"));
  }} catch (e) {{ out.push("get:blocked"); }}
  document.body.textContent = "RESULT " + out.join(" ");
}})();
</script></body></html>"#
    )
}

/// Serves the page in `html` (set once the gateway's address is known) at every path.
async fn page_origin(html: Arc<Mutex<String>>) -> Origin {
    Origin::custom("page", move |_| {
        let html = html.lock().map(|h| h.clone()).unwrap_or_default();
        async move {
            let mut response =
                Response::new(Full::new(Bytes::from(html)).map_err(|e| match e {}).boxed());
            response
                .headers_mut()
                .insert("content-type", http::HeaderValue::from_static("text/html"));
            response
        }
    })
    .await
}

/// Loads `url` in headless Chromium and returns the `RESULT ...` line its script wrote.
async fn browse(url: String) -> String {
    tokio::task::spawn_blocking(move || {
        let out = Command::new("timeout")
            .args([
                "90",
                "chromium",
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
            ])
            .args(["--virtual-time-budget=20000", "--dump-dom", &url])
            .output()
            .expect("run chromium (installed by scripts/test)");
        let dom = String::from_utf8_lossy(&out.stdout).into_owned();
        dom.lines()
            .find_map(|l| {
                l.find("RESULT ").map(|at| {
                    l[at..]
                        .trim_end_matches("</body></html>")
                        .trim()
                        .to_string()
                })
            })
            .unwrap_or_else(|| {
                format!(
                    "no result; dom: {dom}; stderr: {}",
                    String::from_utf8_lossy(&out.stderr)
                )
            })
    })
    .await
    .expect("join")
}

fn gateway_config(app: &Origin, allowed_origin: &str) -> String {
    format!(
        r#"[middleware.web]
type = "cors"
allow_origins = ["{allowed_origin}"]
allow_methods = ["GET", "PUT"]
allow_headers = ["content-type", "x-token"]
expose_headers = ["x-request-id"]

[clusters.app]
targets = ["{}"]

[[routes]]
name = "items"
path = "/items/{{id}}"
methods = ["GET", "PUT"]
cluster = "app"
middleware = ["web"]
"#,
        app.url()
    )
}

#[tokio::test]
async fn a_page_on_an_allowed_origin_reads_answers_and_another_is_blocked() {
    let app = Origin::echo("app").await;
    let html = Arc::new(Mutex::new(String::new()));
    let page_site = page_origin(Arc::clone(&html)).await;
    let page_url = format!("http://127.0.0.1:{}", page_site.addr.port());
    let allowed = Gateway::start(&gateway_config(&app, &page_url)).await;
    // The page comes from 127.0.0.1:PAGE and calls the gateway as localhost:GATEWAY:
    // another origin to the browser.
    *html.lock().expect("page") = page(&format!("http://localhost:{}", allowed.addr.port()));

    let result = browse(format!("{page_url}/index.html")).await;
    assert_eq!(result, "RESULT put:200 get:200:id", "{}", allowed.log());
    assert_eq!(
        app.hits.load(Ordering::Relaxed),
        2,
        "the PUT and the GET reached the origin"
    );

    // The same page, but the gateway only allows another site: the browser stops the
    // PUT at its preflight and hides the GET's answer from the script.
    allowed.rewrite("", &gateway_config(&app, "https://elsewhere.example"));
    assert_eq!(post_reload(&allowed).await.0, 200);
    let result = browse(format!("{page_url}/index.html")).await;
    assert_eq!(
        result,
        "RESULT put:blocked get:blocked",
        "{}",
        allowed.log()
    );
    assert_eq!(
        app.hits.load(Ordering::Relaxed),
        3,
        "the refused preflight kept the PUT from the origin; the simple GET was sent"
    );
}
