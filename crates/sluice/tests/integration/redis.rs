//! Rate limits counted in a real `redis-server` (a child process on a free port): one exact limit across two gateways, both algorithms, and Redis going away and coming back.

use crate::harness::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A `redis-server` child process on a loopback port, without persistence. Killed on drop.
pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
    dir: PathBuf,
}

impl RedisServer {
    /// Starts Redis on a free port (again on another one if that port was taken first).
    pub async fn start() -> RedisServer {
        for _ in 0..5 {
            if let Some(server) = RedisServer::start_on(free_port()).await {
                return server;
            }
        }
        panic!("redis-server could not bind a free port in 5 tries");
    }

    /// Starts Redis on `port`; `None` when it exits first (the port is taken).
    pub async fn start_on(port: u16) -> Option<RedisServer> {
        let dir = scratch_dir();
        let log = std::fs::File::create(dir.join("redis.log")).expect("redis log");
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&dir)
            .stdout(Stdio::from(log.try_clone().expect("log clone")))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn redis-server (scripts/test installs it)");
        let mut server = RedisServer {
            child: Some(child),
            port,
            dir,
        };
        server.wait_ready().await.then_some(server)
    }

    /// Waits (about 20 s at most) until Redis answers PING; false if it exited.
    async fn wait_ready(&mut self) -> bool {
        for _ in 0..400 {
            if let Some(Ok(Some(_))) = self.child.as_mut().map(Child::try_wait) {
                return false;
            }
            if self.command(&["PING"]).as_deref() == Some("+PONG") {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("redis-server did not answer PING; log:\n{}", self.log());
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills the server and waits for it to be gone.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("redis.log")).unwrap_or_default()
    }

    /// Sends one command and returns the first line of the reply, or `None` when Redis
    /// does not answer (within 2 s).
    pub fn command(&self, args: &[&str]) -> Option<String> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        let mut request = format!("*{}\r\n", args.len());
        for a in args {
            request.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        stream.write_all(request.as_bytes()).ok()?;
        let mut reply = Vec::new();
        let mut byte = [0u8; 1];
        while !reply.ends_with(b"\r\n") {
            match stream.read(&mut byte) {
                Ok(1) => reply.push(byte[0]),
                _ => return None,
            }
        }
        Some(String::from_utf8_lossy(&reply[..reply.len() - 2]).into_owned())
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn header<'a>(answer: &'a Answer, name: &str) -> Option<&'a str> {
    answer.1.get(name).and_then(|v| v.to_str().ok())
}

/// A `[redis]` table for `redis`, then routes answered by the gateway, each behind the
/// rate limit of the same name: `limits` are (name, settings) pairs.
fn config(redis: &RedisServer, timeout: &str, limits: &[(&str, &str)]) -> String {
    let mut out = format!(
        "[redis]\nurl = \"{}\"\ntimeout = \"{timeout}\"\n\n",
        redis.url()
    );
    for (name, settings) in limits {
        out += &format!(
            "[middleware.{name}]\ntype = \"rate_limit\"\nstore = \"redis\"\nkey = \"route\"\n{settings}\n\n\
             [[routes]]\nname = \"{name}\"\npath = \"/{name}\"\nrespond = {{ status = 200, body = \"ok\" }}\nmiddleware = [\"{name}\"]\n\n"
        );
    }
    out
}

#[tokio::test]
async fn two_gateways_share_one_limit_exactly() {
    let redis = RedisServer::start().await;
    // A long timeout and `deny`: a slow call shows up as a 503, never as an extra pass.
    // One token comes back every 36 s, far beyond the test.
    let body = config(
        &redis,
        "10s",
        &[(
            "shared",
            "rate = 100\nper = \"1h\"\non_store_error = \"deny\"",
        )],
    );
    let (a, b) = (Gateway::start(&body).await, Gateway::start(&body).await);
    let urls = [a.url("/shared"), b.url("/shared")];
    let tasks: Vec<_> = (0..400)
        .map(|i| {
            let url = urls[i % 2].clone();
            tokio::spawn(async move { (i % 2, get(&url).await) })
        })
        .collect();
    let mut passed = [0, 0];
    let mut refused = 0;
    for task in tasks {
        let (gateway, answer) = task.await.expect("join");
        match answer.0 {
            200 => passed[gateway] += 1,
            429 => {
                refused += 1;
                assert_problem_body(&answer.2, 429, "rate_limited");
                assert_eq!(header(&answer, "ratelimit-remaining"), Some("0"));
                let retry: u64 = header(&answer, "retry-after")
                    .and_then(|v| v.parse().ok())
                    .expect("retry-after");
                assert!((1..=36).contains(&retry), "{retry}");
            }
            other => panic!("unexpected {other}: {}\n{}", text(&answer.2), a.log()),
        }
        assert_eq!(header(&answer, "ratelimit-limit"), Some("100"));
    }
    // Each gateway got 200 requests: counting alone, each would have let 100 through.
    assert_eq!(passed[0] + passed[1], 100, "{passed:?}");
    assert_eq!(refused, 300);
    // The count lives under the limit's name and the route, and expires.
    let ttl = redis
        .command(&["PTTL", "sluice:rl:shared:shared"])
        .expect("PTTL");
    let ttl: i64 = ttl.trim_start_matches(':').parse().expect("a number");
    assert!(ttl > 0, "{ttl}");
    // A gateway started now finds the same count.
    let c = Gateway::start(&body).await;
    assert_eq!(get(&c.url("/shared")).await.0, 429);
}

#[tokio::test]
async fn token_buckets_and_sliding_windows_count_in_redis() {
    let redis = RedisServer::start().await;
    let gw = Gateway::start(&config(
        &redis,
        "10s",
        &[
            ("bucket", "rate = 1\nper = \"1h\"\nburst = 3"),
            (
                "window",
                "algorithm = \"sliding_window\"\nrate = 3\nper = \"1h\"",
            ),
        ],
    ))
    .await;
    for route in ["bucket", "window"] {
        for left in (0..3).rev() {
            let answer = get(&gw.url(&format!("/{route}"))).await;
            assert_eq!(answer.0, 200, "{route}: {}", text(&answer.2));
            assert_eq!(header(&answer, "ratelimit-limit"), Some("3"), "{route}");
            let remaining = left.to_string();
            assert_eq!(
                header(&answer, "ratelimit-remaining"),
                Some(remaining.as_str()),
                "{route}"
            );
            let reset: u64 = header(&answer, "ratelimit-reset")
                .and_then(|v| v.parse().ok())
                .expect("ratelimit-reset");
            assert!((1..=3 * 3600).contains(&reset), "{route}: {reset}");
        }
        let refused = get(&gw.url(&format!("/{route}"))).await;
        assert_problem(&gw, &refused, 429, "rate_limited");
        assert!(
            text(&refused.2).contains(&format!("rate limit `{route}` exceeded")),
            "{}",
            text(&refused.2)
        );
        let retry: u64 = header(&refused, "retry-after")
            .and_then(|v| v.parse().ok())
            .expect("retry-after");
        assert!((1..=3600).contains(&retry), "{route}: {retry}");
        assert_eq!(header(&refused, "ratelimit-remaining"), Some("0"));
    }
    // Each algorithm keeps its own state in its own hash.
    let fields = |key: &str| redis.command(&["HLEN", key]).expect("HLEN");
    assert_eq!(fields("sluice:rl:bucket:bucket"), ":2", "tokens and at");
    assert_eq!(
        fields("sluice:rl:window:window"),
        ":3",
        "window, current and previous"
    );
}

/// GETs `url` until `done` holds for the answer, at most about 30 s.
async fn poll(url: &str, what: &str, done: impl Fn(&Answer) -> bool) -> Answer {
    for _ in 0..600 {
        let answer = get(url).await;
        if done(&answer) {
            return answer;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{url} never answered {what}");
}

#[tokio::test]
async fn redis_going_away_lets_through_or_refuses_as_configured_until_it_is_back() {
    let mut redis = RedisServer::start().await;
    let port = redis.port;
    let body = config(
        &redis,
        "1s",
        &[
            ("open", "rate = 2\nper = \"1h\"\non_store_error = \"allow\""),
            (
                "closed",
                "rate = 2\nper = \"1h\"\non_store_error = \"deny\"",
            ),
        ],
    );
    let gw = Gateway::start(&body).await;
    for route in ["/open", "/closed"] {
        let statuses = [
            get(&gw.url(route)).await.0,
            get(&gw.url(route)).await.0,
            get(&gw.url(route)).await.0,
        ];
        assert_eq!(statuses, [200, 200, 429], "{route}\n{}", gw.log());
    }

    redis.stop();
    for _ in 0..3 {
        let open = get(&gw.url("/open")).await;
        assert_eq!(open.0, 200, "{}", text(&open.2));
        assert_eq!(
            header(&open, "ratelimit-limit"),
            None,
            "no count, no headers"
        );
        let closed = get(&gw.url("/closed")).await;
        assert_problem(&gw, &closed, 503, "rate_limit_store_unavailable");
        assert!(text(&closed.2).contains("rate limit `closed` cannot reach its store"));
    }
    let metrics = metrics(&gw).await;
    for name in ["open", "closed"] {
        let series = format!("sluice_rate_limit_store_errors_total{{middleware=\"{name}\"}} ");
        let count: u64 = metrics
            .lines()
            .find_map(|l| l.strip_prefix(&series))
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no {series}in\n{metrics}"));
        assert!(count >= 3, "{name}: {count}");
    }
    gw.log_with("rate-limit store unavailable").await;

    // Back on the same port, empty: limits count again without a restart.
    let mut back = None;
    for _ in 0..50 {
        back = RedisServer::start_on(port).await;
        if back.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _redis = back.expect("redis-server back on its port");
    let first = poll(&gw.url("/closed"), "200", |a| a.0 == 200).await;
    assert_eq!(header(&first, "ratelimit-limit"), Some("2"));
    for route in ["/closed", "/open"] {
        let refused = poll(&gw.url(route), "429", |a| a.0 == 429).await;
        assert_problem(&gw, &refused, 429, "rate_limited");
        assert_eq!(header(&refused, "ratelimit-remaining"), Some("0"));
    }
}
