//! Shared test helpers: start the real gateway as a child process on free ports, origins
//! written with hyper, and clients (hyper h1/h2 and raw TCP for exact bytes).

#![allow(dead_code)]

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener as StdTcpListener, TcpStream as StdTcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, UnixListener};

/// A fresh scratch directory for one test.
pub fn scratch_dir() -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "sluice-it-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create scratch dir");
    dir
}

/// A loopback port nobody listens on right now.
pub fn free_port() -> u16 {
    StdTcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// The configuration file a test gateway runs: `[server]` on `port` with `server_lines`,
/// admin on `admin_port`, then `body`.
pub fn config_text(port: u16, admin_port: u16, server_lines: &str, body: &str) -> String {
    format!(
        "[server]\nlisten = [\"127.0.0.1:{port}\"]\nthreads = 2\nshutdown_grace = \"10s\"\n{server_lines}\n\n[admin]\nlisten = \"127.0.0.1:{admin_port}\"\n\n{body}\n"
    )
}

/// A running `sluice run` process. Killed on drop.
pub struct Gateway {
    pub child: Option<Child>,
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    pub dir: PathBuf,
    pub config_path: PathBuf,
    /// The process's log, in `dir`.
    pub log_name: String,
}

impl Gateway {
    /// Starts the gateway with `body` (clusters, routes...) after a `[server]` table on a
    /// free port holding `server_lines`, and an admin listener on another free port.
    /// A port picked free can be taken before the gateway binds it (by another test, or
    /// as an outgoing connection's local port): then it starts again on new ports.
    pub async fn start_with(server_lines: &str, body: &str) -> Gateway {
        for _ in 0..5 {
            let mut gw = Gateway::spawn(server_lines, body);
            if gw.wait_ready().await {
                return gw;
            }
        }
        panic!("sluice could not bind free ports in 5 tries");
    }

    fn spawn(server_lines: &str, body: &str) -> Gateway {
        let dir = scratch_dir();
        let port = free_port();
        let admin_port = free_port();
        let config = config_text(port, admin_port, server_lines, body);
        let config_path = dir.join("sluice.toml");
        std::fs::write(&config_path, config).expect("write config");
        let log_name = "sluice.log".to_string();
        let child = run_sluice(&dir, &config_path, &log_name, &[]);
        Gateway {
            child: Some(child),
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            admin: SocketAddr::from(([127, 0, 0, 1], admin_port)),
            dir,
            config_path,
            log_name,
        }
    }

    /// Starts `sluice run --upgrade` on this gateway's configuration file, logging to
    /// `log_name`; it takes the listening sockets over from this process.
    pub fn upgrade(&self, log_name: &str) -> Gateway {
        let child = run_sluice(&self.dir, &self.config_path, log_name, &["--upgrade"]);
        Gateway {
            child: Some(child),
            addr: self.addr,
            admin: self.admin,
            dir: self.dir.clone(),
            config_path: self.config_path.clone(),
            log_name: log_name.to_string(),
        }
    }

    /// Replaces the configuration file, keeping the ports the gateway was started on.
    pub fn rewrite(&self, server_lines: &str, body: &str) {
        let text = config_text(self.addr.port(), self.admin.port(), server_lines, body);
        // Written beside and renamed into place, as editors and deploy tools do, so a
        // watcher never reads half a file.
        let tmp = self.dir.join("sluice.toml.tmp");
        std::fs::write(&tmp, text).expect("write config");
        std::fs::rename(&tmp, &self.config_path).expect("rename config");
    }

    /// Starts the gateway with default `[server]` settings.
    pub async fn start(body: &str) -> Gateway {
        Gateway::start_with("", body).await
    }

    /// Waits until `/ready` answers 200: true. False when the process exited because an
    /// address was taken; any other exit, or no readiness in 10 s, fails the test.
    async fn wait_ready(&mut self) -> bool {
        for _ in 0..200 {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    let log = self.log();
                    if log.contains("cannot listen on") && log.contains("in use") {
                        return false;
                    }
                    panic!("sluice exited ({status}) before it was ready; log:\n{log}");
                }
            }
            if let Ok((200, _, _)) = try_get(&format!("http://{}/ready", self.admin)).await {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("sluice did not become ready; log:\n{}", self.log());
    }

    /// `http://127.0.0.1:PORT` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// `http://127.0.0.1:ADMIN_PORT` + `path`.
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin)
    }

    /// Everything the gateway logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join(&self.log_name)).unwrap_or_default()
    }

    /// The log once it holds `needle`: lines are written in batches, a few milliseconds
    /// after the request. Panics (with the log) if it never does.
    pub async fn log_with(&self, needle: &str) -> String {
        for _ in 0..400 {
            let log = self.log();
            if log.contains(needle) {
                return log;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("the log never showed {needle:?}:\n{}", self.log());
    }

    /// The log once it holds the line of the request `answer` answered (by its request
    /// id): everything logged while that request was served is in it.
    pub async fn log_through(&self, answer: &Answer) -> String {
        let id = answer
            .1
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .expect("the answer carries a request id");
        self.log_with(id).await
    }

    /// Sends a signal to the gateway process (e.g. "TERM").
    pub fn signal(&self, name: &str) {
        let pid = self.child.as_ref().expect("running").id().to_string();
        let status = Command::new("kill")
            .args(["-s", name, &pid])
            .status()
            .expect("kill");
        assert!(status.success());
    }

    /// Waits for the process to exit and returns its exit code.
    pub async fn wait_exit(&mut self) -> Option<i32> {
        let mut child = self.child.take().expect("running");
        tokio::task::spawn_blocking(move || child.wait().ok().and_then(|s| s.code()))
            .await
            .expect("join")
    }
}

/// Spawns `sluice run` on `config` with JSON logs to `dir/log_name`.
fn run_sluice(dir: &Path, config: &Path, log_name: &str, extra: &[&str]) -> Child {
    let log = std::fs::File::create(dir.join(log_name)).expect("log file");
    Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["run", "--log-format", "json", "-c"])
        .arg(config)
        .args(extra)
        .stdout(Stdio::from(log.try_clone().expect("log clone")))
        .stderr(Stdio::from(log))
        .spawn()
        .expect("spawn sluice")
}

impl Drop for Gateway {
    /// Stops the process; a test whose gateway panicked anywhere (a spawned task
    /// included, which would not stop it) fails here.
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let log = self.log();
        if !std::thread::panicking() && log.contains("panicked at") {
            panic!("the gateway panicked:\n{log}");
        }
    }
}

/// What an origin saw of one request.
#[derive(Debug, Clone, serde::Deserialize, serde::Serialize)]
pub struct Seen {
    pub origin: String,
    pub method: String,
    pub uri: String,
    pub version: String,
    pub headers: BTreeMap<String, Vec<String>>,
    pub body: String,
}

impl Seen {
    /// The first value of header `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(name)
            .and_then(|v| v.first())
            .map(String::as_str)
    }
}

/// An origin answering every request with the JSON of what it saw ([`Seen`]).
pub struct Origin {
    pub addr: SocketAddr,
    pub name: String,
    pub hits: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Origin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Origin {
    /// `http://ADDR`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// An echo origin on a free TCP port; HTTP/1.1 and HTTP/2 (prior knowledge).
    pub async fn echo(name: &str) -> Origin {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind origin");
        let addr = listener.local_addr().expect("origin addr");
        let hits = Arc::new(AtomicUsize::new(0));
        let (n, h) = (name.to_string(), Arc::clone(&hits));
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                serve_echo(TokioIo::new(stream), n.clone(), Arc::clone(&h));
            }
        });
        Origin {
            addr,
            name: name.to_string(),
            hits,
            task,
        }
    }

    /// An echo origin on a Unix socket at `path`.
    pub async fn echo_unix(name: &str, path: &Path) -> Origin {
        let listener = UnixListener::bind(path).expect("bind unix origin");
        let hits = Arc::new(AtomicUsize::new(0));
        let (n, h) = (name.to_string(), Arc::clone(&hits));
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                serve_echo(TokioIo::new(stream), n.clone(), Arc::clone(&h));
            }
        });
        Origin {
            addr: SocketAddr::from(([0, 0, 0, 0], 0)),
            name: name.to_string(),
            hits,
            task,
        }
    }

    /// An origin running `handler` for every request, on a free TCP port.
    pub async fn custom<F, Fut>(name: &str, handler: F) -> Origin
    where
        F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
        Fut:
            std::future::Future<Output = Response<BoxBody<Bytes, std::io::Error>>> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind origin");
        let addr = listener.local_addr().expect("origin addr");
        let hits = Arc::new(AtomicUsize::new(0));
        let h = Arc::clone(&hits);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (handler, h) = (handler.clone(), Arc::clone(&h));
                tokio::spawn(async move {
                    let service = service_fn(move |req| {
                        h.fetch_add(1, Ordering::Relaxed);
                        let fut = handler(req);
                        async move { Ok::<_, std::convert::Infallible>(fut.await) }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection_with_upgrades(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Origin {
            addr,
            name: name.to_string(),
            hits,
            task,
        }
    }
}

fn serve_echo<I>(io: I, name: String, hits: Arc<AtomicUsize>)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        let service = service_fn(move |req: Request<Incoming>| {
            hits.fetch_add(1, Ordering::Relaxed);
            let name = name.clone();
            async move {
                let mut headers: BTreeMap<String, Vec<String>> = BTreeMap::new();
                for (k, v) in req.headers() {
                    headers
                        .entry(k.as_str().to_string())
                        .or_default()
                        .push(String::from_utf8_lossy(v.as_bytes()).into_owned());
                }
                let method = req.method().to_string();
                let uri = req.uri().to_string();
                let version = format!("{:?}", req.version());
                let body = req
                    .into_body()
                    .collect()
                    .await
                    .map(|b| b.to_bytes())
                    .unwrap_or_default();
                let seen = Seen {
                    origin: name.clone(),
                    method,
                    uri,
                    version,
                    headers,
                    body: String::from_utf8_lossy(&body).into_owned(),
                };
                let json = serde_json::to_vec(&seen).expect("json");
                let response = Response::builder()
                    .header("content-type", "application/json")
                    .header("x-origin", name)
                    .body(Full::new(Bytes::from(json)))
                    .expect("response");
                Ok::<_, std::convert::Infallible>(response)
            }
        });
        let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
            .serve_connection(io, service)
            .await;
    });
}

/// A response as a test sees it.
pub type Answer = (u16, http::HeaderMap, Bytes);

/// GET over HTTP/1.1, panicking on connection errors.
pub async fn get(url: &str) -> Answer {
    try_get(url)
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"))
}

/// GET over HTTP/1.1.
pub async fn try_get(url: &str) -> Result<Answer, String> {
    send(
        Request::get(url)
            .body(Full::new(Bytes::new()))
            .map_err(|e| e.to_string())?,
        false,
    )
    .await
}

/// GET over HTTP/2 (prior knowledge), panicking on connection errors.
pub async fn get_h2(url: &str) -> Answer {
    let request = Request::get(url)
        .body(Full::new(Bytes::new()))
        .expect("a GET request");
    send(request, true)
        .await
        .unwrap_or_else(|e| panic!("GET {url} over HTTP/2: {e}"))
}

/// Sends a request over HTTP/1.1 or HTTP/2 (prior knowledge) on a fresh connection.
pub async fn send(request: Request<Full<Bytes>>, http2: bool) -> Result<Answer, String> {
    let mut builder = hyper_util::client::legacy::Client::builder(TokioExecutor::new());
    builder.http2_only(http2).pool_max_idle_per_host(0);
    let client = builder.build_http::<Full<Bytes>>();
    let response = client
        .request(request)
        .await
        .map_err(|e| format!("{e:?}"))?;
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((status, headers, body))
}

/// Parses a body the echo origin wrote.
pub fn seen(body: &Bytes) -> Seen {
    serde_json::from_slice(body)
        .unwrap_or_else(|e| panic!("not an echo body ({e}): {}", String::from_utf8_lossy(body)))
}

/// Writes `bytes` on a new TCP connection and reads until the peer closes or goes
/// quiet for `quiet` (a bound on the wait, not an assertion).
pub fn raw(addr: SocketAddr, bytes: &[u8], quiet: Duration) -> String {
    let mut stream = StdTcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(quiet)).expect("timeout");
    stream.write_all(bytes).expect("write");
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Runs `raw` on a blocking thread.
pub async fn raw_async(addr: SocketAddr, bytes: Vec<u8>, quiet: Duration) -> String {
    tokio::task::spawn_blocking(move || raw(addr, &bytes, quiet))
        .await
        .expect("join")
}

/// A full body as the boxed body [`Origin::custom`] handlers answer with.
pub fn boxed(body: Full<Bytes>) -> BoxBody<Bytes, std::io::Error> {
    body.map_err(|never| match never {}).boxed()
}

/// A body as text, for messages.
pub fn text(body: &[u8]) -> String {
    String::from_utf8_lossy(body).into_owned()
}

/// Checks an answer the gateway wrote itself: `status`, `content-type:
/// application/problem+json`, a body as [`assert_problem_body`] checks it, and for 503s
/// `Retry-After: 1` (the gateway adds it to every 503 it writes).
pub fn assert_problem(gw: &Gateway, answer: &Answer, status: u16, code: &str) {
    let (got, headers, body) = answer;
    assert_eq!(
        *got,
        status,
        "expected {status} {code}, got {}\n{}",
        text(body),
        gw.log()
    );
    assert_eq!(
        headers.get("content-type").map(|v| v.as_bytes()),
        Some(&b"application/problem+json"[..]),
        "{headers:?}"
    );
    assert_problem_body(body, status, code);
    if status == 503 {
        assert_eq!(
            headers.get("retry-after").map(|v| v.as_bytes()),
            Some(&b"1"[..]),
            "{headers:?}"
        );
    }
}

/// Checks a problem+json body: its `type` is `urn:sluice:problem:<code>` and its
/// `status` is `status`.
pub fn assert_problem_body(body: &[u8], status: u16, code: &str) {
    let problem: Value = serde_json::from_slice(body)
        .unwrap_or_else(|e| panic!("not a problem+json body ({e}): {}", text(body)));
    assert_eq!(
        problem["type"],
        format!("urn:sluice:problem:{code}"),
        "{problem}"
    );
    assert_eq!(problem["status"], status, "{problem}");
}

/// A `[server]` line turning the file watcher off: reloads come from the admin API or
/// SIGHUP only, so configuration generations are predictable.
pub const NO_WATCH: &str = "watch_config = false";

/// `POST /api/v1/reload` on the admin listener: the status and the JSON answer.
pub async fn post_reload(gw: &Gateway) -> (u16, Value) {
    let request = Request::post(gw.admin_url("/api/v1/reload"))
        .body(Full::new(Bytes::new()))
        .expect("request");
    let (status, _, body) = send(request, false).await.expect("admin answers");
    let json = serde_json::from_slice(&body)
        .unwrap_or_else(|e| panic!("reload answer is not JSON ({e}): {body:?}"));
    (status, json)
}

/// `/health` from the admin listener, which must answer 200 with JSON.
pub async fn health(gw: &Gateway) -> Value {
    let (status, _, body) = get(&gw.admin_url("/health")).await;
    assert_eq!(status, 200, "{}", text(&body));
    serde_json::from_slice(&body).expect("/health is JSON")
}

/// Polls `/health` (bounded: about 20 s) until `check` holds for its `config` object;
/// `what` names the awaited state in the panic message.
pub async fn wait_config(gw: &Gateway, what: &str, check: impl Fn(&Value) -> bool) {
    for _ in 0..400 {
        if check(&health(gw).await["config"]) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "/health never showed {what}: {}\n{}",
        health(gw).await,
        gw.log()
    );
}

/// The OpenMetrics text of the admin listener's `/metrics`, which must answer 200.
pub async fn metrics(gw: &Gateway) -> String {
    let (status, _, body) = get(&gw.admin_url("/metrics")).await;
    assert_eq!(status, 200, "{}", text(&body));
    text(&body)
}
