//! Raw file -> runtime [`Config`], collecting every problem with its location and key.
//! One file per part of the configuration: `[server]`/`[admin]` here, clusters and routes
//! beside it.

mod cluster;
mod jwt;
mod middleware;
mod redis;
mod resilience;
mod route;
mod tls;

use crate::error::LineIndex;
use crate::middleware::Middleware;
use crate::raw::{self, SizeValue};
use crate::runtime::*;
use crate::units::{parse_duration, parse_size};
use crate::{ConfigError, ConfigErrors, Location};
use std::net::SocketAddr;
use std::ops::Range;
use std::path::PathBuf;
use std::time::Duration;
use toml::Spanned;

pub(crate) struct Checker<'a> {
    source: &'a str,
    lines: LineIndex,
    pub(crate) file: &'a str,
    pub(crate) errors: Vec<ConfigError>,
}

impl Checker<'_> {
    /// The directory relative paths in the file are taken from.
    pub(crate) fn base_dir(&self) -> std::path::PathBuf {
        std::path::Path::new(self.file)
            .parent()
            .map(std::path::Path::to_path_buf)
            .unwrap_or_default()
    }

    pub(crate) fn at(&self, span: &Range<usize>) -> Location {
        self.lines.locate(self.source, span.start)
    }

    /// Records a problem at a location found earlier (a whole table rather than a value).
    pub(crate) fn fail_at(&mut self, location: Location, key: &str, message: impl Into<String>) {
        self.errors
            .push(ConfigError::new(self.file, location, key, message));
    }

    pub(crate) fn fail(&mut self, span: Range<usize>, key: &str, message: impl Into<String>) {
        let location = self.at(&span);
        self.errors
            .push(ConfigError::new(self.file, location, key, message));
    }

    pub(crate) fn duration(
        &mut self,
        value: &Option<Spanned<String>>,
        key: &str,
        default: Duration,
    ) -> Duration {
        match value {
            None => default,
            Some(v) => parse_duration(v.get_ref()).unwrap_or_else(|e| {
                self.fail(v.span(), key, e);
                default
            }),
        }
    }

    pub(crate) fn size(
        &mut self,
        value: &Option<Spanned<SizeValue>>,
        key: &str,
        default: usize,
    ) -> usize {
        let Some(v) = value else { return default };
        let parsed = match v.get_ref() {
            SizeValue::Bytes(n) => {
                u64::try_from(*n).map_err(|_| format!("invalid size `{n}`: must not be negative"))
            }
            SizeValue::Text(t) => parse_size(t),
        };
        match parsed.and_then(|n| usize::try_from(n).map_err(|_| "size too large".to_string())) {
            Ok(0) => {
                self.fail(v.span(), key, "must be greater than 0");
                default
            }
            Ok(n) => n,
            Err(e) => {
                self.fail(v.span(), key, e);
                default
            }
        }
    }

    pub(crate) fn count(
        &mut self,
        value: &Option<Spanned<i64>>,
        key: &str,
        default: usize,
        min: i64,
    ) -> usize {
        let Some(v) = value else { return default };
        match usize::try_from(*v.get_ref()) {
            Ok(n) if *v.get_ref() >= min => n,
            _ => {
                self.fail(
                    v.span(),
                    key,
                    format!("must be a whole number of at least {min}"),
                );
                default
            }
        }
    }

    pub(crate) fn socket_addr(&mut self, value: &Spanned<String>, key: &str) -> Option<SocketAddr> {
        match value.get_ref().parse() {
            Ok(a) => Some(a),
            Err(_) => {
                let msg = format!("invalid socket address `{}`: expected IP:PORT, like \"127.0.0.1:8080\" or \"[::1]:8080\"", value.get_ref());
                self.fail(value.span(), key, msg);
                None
            }
        }
    }
}

/// Validates a parsed file. `source` and `file` are used for error locations.
pub(crate) fn validate(
    raw: raw::ConfigFile,
    source: &str,
    file: &str,
) -> Result<Config, ConfigErrors> {
    let mut c = Checker {
        source,
        lines: LineIndex::new(source),
        file,
        errors: Vec::new(),
    };
    let middleware = middleware::all(&mut c, &raw.middleware, raw.redis.is_some());
    let defined: Vec<&str> = raw
        .middleware
        .keys()
        .map(|k| k.get_ref().as_str())
        .collect();
    let server = server(&mut c, &raw.server, (&middleware, &defined));
    let admin = admin(&mut c, &raw.admin);
    let clusters: Vec<Cluster> = raw
        .clusters
        .iter()
        .filter_map(|(name, cfg)| cluster::cluster(&mut c, name, cfg))
        .collect();
    let names: Vec<&str> = raw.clusters.keys().map(|k| k.get_ref().as_str()).collect();
    let routes = route::routes(
        &mut c,
        &raw.routes,
        &names,
        (&middleware, &defined),
        &server.middleware,
    );
    let redis = redis::redis(&mut c, &raw.redis);
    if c.errors.is_empty() {
        Ok(Config {
            server,
            admin,
            clusters,
            middleware,
            routes,
            redis,
            source: file.to_string(),
        })
    } else {
        c.errors.sort_by_key(|e| (e.location.line, e.location.col));
        Err(ConfigErrors(c.errors))
    }
}

fn server(c: &mut Checker, s: &raw::ServerConfig, all: (&[Middleware], &[&str])) -> Server {
    let listen = match &s.listen {
        None => vec![SocketAddr::from(([127, 0, 0, 1], 8080))],
        Some(list) => {
            let addrs: Vec<SocketAddr> = list
                .get_ref()
                .iter()
                .enumerate()
                .filter_map(|(i, a)| c.socket_addr(a, &format!("server.listen[{i}]")))
                .collect();
            if list.get_ref().is_empty() && s.unix.is_empty() {
                c.fail(
                    list.span(),
                    "server.listen",
                    "no listener: give at least one address here or in server.unix",
                );
            }
            addrs
        }
    };
    let unix: Vec<PathBuf> = s.unix.iter().map(|p| PathBuf::from(p.get_ref())).collect();
    let upgrade_socket = s.upgrade_socket.as_ref().and_then(|p| {
        let path = PathBuf::from(p.get_ref());
        let problem = if p.get_ref().is_empty() {
            Some("must not be empty; leave the key out to turn upgrades off")
        } else if p.get_ref().contains('\n') {
            Some("must not contain a line break")
        } else if unix.contains(&path) {
            Some("must differ from every server.unix path")
        } else {
            None
        };
        match problem {
            Some(message) => {
                c.fail(p.span(), "server.upgrade_socket", message);
                None
            }
            None => Some(path),
        }
    });
    let threads = c.count(&s.threads, "server.threads", 0, 0);
    let shutdown_grace = c.duration(
        &s.shutdown_grace,
        "server.shutdown_grace",
        Duration::from_secs(30),
    );
    let l = &s.limits;
    let limits = Limits {
        max_uri_size: c.size(&l.max_uri_size, "server.limits.max_uri_size", 8 * 1024),
        max_header_size: c.size(
            &l.max_header_size,
            "server.limits.max_header_size",
            64 * 1024,
        ),
        max_headers: c.count(&l.max_headers, "server.limits.max_headers", 100, 1),
        header_read_timeout: c.duration(
            &l.header_read_timeout,
            "server.limits.header_read_timeout",
            Duration::from_secs(10),
        ),
        keepalive_timeout: c.duration(
            &l.keepalive_timeout,
            "server.limits.keepalive_timeout",
            Duration::from_secs(75),
        ),
        send_timeout: c.positive_duration(
            &l.send_timeout,
            "server.limits.send_timeout",
            Duration::from_secs(60),
        ),
        body_read_timeout: c.duration(
            &l.body_read_timeout,
            "server.limits.body_read_timeout",
            Duration::from_secs(60),
        ),
        max_connections: l
            .max_connections
            .as_ref()
            .map(|_| c.count(&l.max_connections, "server.limits.max_connections", 1, 1)),
        max_requests: l
            .max_requests
            .as_ref()
            .map(|_| c.count(&l.max_requests, "server.limits.max_requests", 1, 1)),
    };
    Server {
        listen,
        unix,
        threads,
        shutdown_grace,
        access_log: s.access_log.unwrap_or(true),
        watch_config: s.watch_config.unwrap_or(true),
        upgrade_socket,
        middleware: middleware::attach(c, &s.middleware, "server.middleware", all, &[]),
        tls: s.tls.as_ref().and_then(|t| {
            let base = c.base_dir();
            tls::tls(c, t, &base)
        }),
        trusted_proxies: middleware::cidrs(c, &s.trusted_proxies, "server.trusted_proxies"),
        limits,
    }
}

fn admin(c: &mut Checker, a: &raw::AdminConfig) -> Admin {
    // The address is checked even when admin is off, so a typo never waits for the
    // day it is turned on.
    let listen = match &a.listen {
        None => Some(SocketAddr::from(([127, 0, 0, 1], 9901))),
        Some(v) => c.socket_addr(v, "admin.listen"),
    };
    if a.enabled == Some(false) {
        return Admin { listen: None };
    }
    Admin { listen }
}
