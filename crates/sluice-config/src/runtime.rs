//! The validated, immutable configuration the data path runs on. Built once per load or
//! reload; nothing here is a serde type.

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
    /// Routes in file order.
    pub routes: Vec<Route>,
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
    pub limits: Limits,
}

/// Request limits enforced before routing.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_uri_size: usize,
    pub max_header_size: usize,
    pub max_headers: usize,
    pub header_read_timeout: Duration,
}

/// The admin listener; `None` turns it off.
#[derive(Debug, Clone)]
pub struct Admin {
    pub listen: Option<SocketAddr>,
}

/// A named set of targets with a balancing policy.
#[derive(Debug, Clone)]
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
    pub timeout: Duration,
    /// Where the route is defined, for errors found after validation (router conflicts).
    pub location: Location,
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
