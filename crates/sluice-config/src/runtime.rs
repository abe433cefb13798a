//! The validated, immutable configuration the data path runs on. Built once per load or
//! reload; nothing here is a serde type.

use crate::middleware::{Cidr, Middleware};
use crate::tls::{Tls, UpstreamTls};
use crate::Location;
use http::{HeaderName, HeaderValue, Method, StatusCode};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// One loaded configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub server: Server,
    pub admin: Admin,
    /// Clusters, sorted by name; routes refer to them by index.
    pub clusters: Vec<Cluster>,
    /// Middleware, sorted by name; the server and routes refer to them by index.
    pub middleware: Vec<Middleware>,
    /// Routes in file order.
    pub routes: Vec<Route>,
    /// `[redis]`, for rate limits with `store = "redis"`.
    pub redis: Option<crate::redis::Redis>,
    /// The file this came from (`<built-in>` for the default).
    pub source: String,
}

/// The data-plane listeners and their limits.
#[derive(Debug, Clone)]
pub struct Server {
    pub listen: Vec<SocketAddr>,
    pub unix: Vec<PathBuf>,
    /// Worker threads; 0 means one per core.
    pub threads: usize,
    pub shutdown_grace: Duration,
    pub access_log: bool,
    /// Re-read the configuration file when it changes on disk.
    pub watch_config: bool,
    /// Where the running process hands its listening sockets to `sluice run --upgrade`.
    pub upgrade_socket: Option<PathBuf>,
    /// Middleware run on every route, before the route's own.
    pub middleware: Vec<usize>,
    /// Peers whose `X-Forwarded-For` is believed when finding the client's address.
    pub trusted_proxies: Vec<Cidr>,
    /// TLS listeners, when `[server.tls]` is present.
    pub tls: Option<Tls>,
    pub limits: Limits,
}

/// Request limits enforced before routing.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_uri_size: usize,
    pub max_header_size: usize,
    pub max_headers: usize,
    pub header_read_timeout: Duration,
    /// How long a connection may wait idle: HTTP/1.1 for its next request, HTTP/2 with
    /// no stream open.
    pub keepalive_timeout: Duration,
    /// The longest a client may go without taking any of its answer (an HTTP/1.1
    /// connection, or an HTTP/2 stream, is reset after it).
    pub send_timeout: Duration,
    /// The longest a client may pause while sending a request body (408 after).
    pub body_read_timeout: Duration,
    /// Open connections per listener at most; more are answered 503 and closed.
    pub max_connections: Option<usize>,
    /// Requests in flight in the whole gateway at most; more are answered 503.
    pub max_requests: Option<usize>,
}

/// The admin listener; `None` turns it off.
#[derive(Debug, Clone)]
pub struct Admin {
    pub listen: Option<SocketAddr>,
}

/// A named set of targets with a balancing policy.
#[derive(Debug, Clone, PartialEq)]
pub struct Cluster {
    pub name: String,
    pub targets: Vec<Target>,
    pub balance: Balance,
    pub http2: bool,
    pub preserve_host: bool,
    pub connect_timeout: Duration,
    pub pool_idle_timeout: Duration,
    pub pool_max_idle: usize,
    pub sticky_cookie: String,
    /// Requests in flight to the whole cluster at most; `None`: no cap.
    pub max_requests: Option<usize>,
    /// Requests that may wait for a free slot when `max_requests` is reached.
    pub max_pending: usize,
    /// When fewer than this percentage of targets are healthy, use them all.
    pub panic_threshold: u8,
    pub health: Option<HealthCheck>,
    pub outlier: Option<Outlier>,
    pub breaker: Option<Breaker>,
    /// TLS to `https://` targets; `Some` whenever the cluster has one.
    pub tls: Option<UpstreamTls>,
}

/// Active health checks of every target of a cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    pub kind: HealthKind,
    pub interval: Duration,
    pub timeout: Duration,
    /// Consecutive successes that bring a target back.
    pub healthy_threshold: u32,
    /// Consecutive failures that take a target out.
    pub unhealthy_threshold: u32,
}

/// How a target is checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HealthKind {
    /// `GET path` answered with one of `expect`.
    Http {
        path: String,
        host: Option<HeaderValue>,
        expect: Vec<StatusRange>,
    },
    /// A connection is accepted.
    Tcp,
}

/// Statuses from `.0` to `.1`, inclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatusRange(pub u16, pub u16);

impl StatusRange {
    pub fn contains(&self, status: u16) -> bool {
        (self.0..=self.1).contains(&status)
    }
}

/// Passive outlier detection: targets that keep failing leave the rotation for a while.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outlier {
    /// Consecutive connect failures or 5xx answers that eject a target.
    pub consecutive_failures: u32,
    /// The first ejection's length; it doubles on each repeat, up to `max_ejection`.
    pub base_ejection: Duration,
    pub max_ejection: Duration,
    /// At most this percentage of a cluster's targets is ejected at once.
    pub max_ejected_percent: u8,
}

/// A circuit breaker per target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Breaker {
    /// Consecutive failures that open the circuit.
    pub consecutive_failures: u32,
    /// Failure percentage over `window` that opens the circuit, once `min_requests` were seen.
    pub failure_percent: Option<u8>,
    pub window: Duration,
    pub min_requests: u32,
    /// How long the circuit stays open before letting probes through.
    pub open_for: Duration,
    /// Probe requests let through while half-open; that many successes close it.
    pub half_open_requests: u32,
}

/// One upstream server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The URL as written, for logs and `/health`.
    pub url: String,
    pub address: TargetAddress,
    pub weight: u32,
}

/// Where a target listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetAddress {
    /// `http://host:port`; `authority` is `host:port`.
    Tcp {
        host: String,
        port: u16,
        authority: String,
    },
    /// `unix:/path/to.sock`.
    Unix(PathBuf),
    /// `https://host:port`; `authority` is `host:port`.
    Https {
        host: String,
        port: u16,
        authority: String,
    },
}

/// How a cluster picks a target for each request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Balance {
    RoundRobin,
    Random,
    LeastConn,
    Weighted,
    Hash(HashKey),
    /// A cookie pins each client to a target; the first pick is round robin.
    Sticky,
}

/// What a `hash` cluster hashes on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashKey {
    Header(HeaderName),
    Cookie(String),
    Query(String),
    Ip,
    Path,
}

/// One route.
#[derive(Debug, Clone)]
pub struct Route {
    pub name: String,
    pub path: PathPattern,
    /// `None` matches every method.
    pub methods: Option<Vec<Method>>,
    /// Empty matches every host.
    pub hosts: Vec<HostPattern>,
    pub action: Action,
    pub strip_prefix: Option<String>,
    pub rewrite: Option<String>,
    /// Until the response head, over every try and back-off.
    pub timeout: Duration,
    /// Until the response head, for one try.
    pub try_timeout: Duration,
    /// Longest quiet gap in the response body once it has started.
    pub idle_timeout: Option<Duration>,
    /// Largest request body accepted (413 above).
    pub max_body_size: Option<u64>,
    /// Requests in flight on this route at most (503 above).
    pub max_requests: Option<usize>,
    pub retries: Option<Retries>,
    /// The route's middleware in the order they run: `server.middleware`, then its own.
    pub middleware: Vec<usize>,
    /// Where the route is defined, for errors found after validation (router conflicts).
    pub location: Location,
}

/// When and how a route retries a failed request on another target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retries {
    /// Tries in all, the first included.
    pub attempts: u32,
    pub on: RetryOn,
    /// Back-off before the first retry; it doubles per retry (with full jitter).
    pub backoff: Duration,
    pub max_backoff: Duration,
    /// Retries in flight at most, as a percentage of the cluster's requests in flight...
    pub budget_percent: u8,
    /// ...but always at least this many.
    pub min_retries: u32,
    /// Largest request body kept for replay; larger bodies are not retried.
    pub buffer: usize,
    /// Retry non-idempotent methods after the request was sent, too.
    pub all_methods: bool,
}

/// The failures a route retries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RetryOn {
    /// The connection could not be opened (nothing was sent).
    pub connect_failure: bool,
    /// HTTP/2 REFUSED_STREAM or GOAWAY before processing (nothing was processed).
    pub refused_stream: bool,
    /// The connection broke before a response head came.
    pub reset: bool,
    pub status_502: bool,
    pub status_503: bool,
    pub status_504: bool,
}

impl RetryOn {
    /// Every condition: the default.
    pub const ALL: RetryOn = RetryOn {
        connect_failure: true,
        refused_stream: true,
        reset: true,
        status_502: true,
        status_503: true,
        status_504: true,
    };
}

/// The path part of a route.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PathPattern {
    /// `path = "/users/{id}/{*rest}"`.
    Template(String),
    /// `prefix = "/static"`: the prefix itself and everything below it.
    Prefix(String),
}

/// A host a route answers for; ports are ignored when matching.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum HostPattern {
    /// `api.example.com`, lowercased.
    Exact(String),
    /// `*.example.com`, stored as `.example.com`.
    Wildcard(String),
}

/// What a matched route does.
#[derive(Debug, Clone)]
pub enum Action {
    /// Proxy to the cluster at this index of [`Config::clusters`].
    Proxy { cluster: usize },
    /// Answer directly.
    Respond {
        status: StatusCode,
        /// Shared, so that answering copies nothing.
        body: bytes::Bytes,
        headers: Vec<(HeaderName, HeaderValue)>,
    },
}
