//! Raw file -> runtime [`Config`], collecting every problem with its location and key.

use crate::error::LineIndex;
use crate::raw::{self, SizeValue, TargetConfig};
use crate::runtime::*;
use crate::units::{parse_duration, parse_size};
use crate::{ConfigError, ConfigErrors, Location};
use http::{HeaderName, HeaderValue, Method, StatusCode};
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::ops::Range;
use std::path::PathBuf;
use std::time::Duration;
use toml::Spanned;

struct Checker<'a> {
    source: &'a str,
    lines: LineIndex,
    file: &'a str,
    errors: Vec<ConfigError>,
}

impl Checker<'_> {
    fn at(&self, span: &Range<usize>) -> Location {
        self.lines.locate(self.source, span.start)
    }

    fn fail(&mut self, span: Range<usize>, key: &str, message: impl Into<String>) {
        let location = self.at(&span);
        self.errors
            .push(ConfigError::new(self.file, location, key, message));
    }

    fn duration(
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

    fn size(&mut self, value: &Option<Spanned<SizeValue>>, key: &str, default: usize) -> usize {
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

    fn count(
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

    fn socket_addr(&mut self, value: &Spanned<String>, key: &str) -> Option<SocketAddr> {
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
    let server = server(&mut c, &raw.server);
    let admin = admin(&mut c, &raw.admin);
    let clusters: Vec<Cluster> = raw
        .clusters
        .iter()
        .filter_map(|(name, cfg)| cluster(&mut c, name, cfg))
        .collect();
    let names: Vec<&str> = raw.clusters.keys().map(|k| k.get_ref().as_str()).collect();
    let routes = routes(&mut c, &raw.routes, &names);
    if c.errors.is_empty() {
        Ok(Config {
            server,
            admin,
            clusters,
            routes,
            source: file.to_string(),
        })
    } else {
        c.errors.sort_by_key(|e| (e.location.line, e.location.col));
        Err(ConfigErrors(c.errors))
    }
}

fn server(c: &mut Checker, s: &raw::ServerConfig) -> Server {
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
    let unix = s.unix.iter().map(|p| PathBuf::from(p.get_ref())).collect();
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
    };
    Server {
        listen,
        unix,
        threads,
        shutdown_grace,
        access_log: s.access_log.unwrap_or(true),
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

fn cluster(c: &mut Checker, name: &Spanned<String>, cfg: &raw::ClusterConfig) -> Option<Cluster> {
    let key = format!("clusters.{}", key_segment(name.get_ref()));
    let before = c.errors.len();
    if cfg.targets.get_ref().is_empty() {
        c.fail(
            cfg.targets.span(),
            &format!("{key}.targets"),
            "a cluster needs at least one target",
        );
    }
    let targets: Vec<Target> = cfg
        .targets
        .get_ref()
        .iter()
        .enumerate()
        .filter_map(|(i, t)| target(c, t, &format!("{key}.targets[{i}]")))
        .collect();
    let hash_key = cfg.hash_key.as_ref().and_then(|h| {
        parse_hash_key(h.get_ref())
            .map_err(|e| c.fail(h.span(), &format!("{key}.hash_key"), e))
            .ok()
    });
    let balance = match cfg
        .balance
        .as_ref()
        .map(|b| (b.get_ref().as_str(), b.span()))
    {
        None | Some(("round_robin", _)) => Balance::RoundRobin,
        Some(("random", _)) => Balance::Random,
        Some(("least_conn", _)) => Balance::LeastConn,
        Some(("weighted", _)) => Balance::Weighted,
        Some(("sticky", _)) => Balance::Sticky,
        Some(("hash", span)) => match hash_key {
            Some(k) => Balance::Hash(k),
            None => {
                if cfg.hash_key.is_none() {
                    c.fail(
                        span,
                        &format!("{key}.balance"),
                        "balance = \"hash\" needs a hash_key",
                    );
                }
                Balance::RoundRobin
            }
        },
        Some((other, span)) => {
            let known = [
                "round_robin",
                "random",
                "least_conn",
                "weighted",
                "hash",
                "sticky",
            ];
            let hint = crate::error::did_you_mean(other, &known)
                .map(|s| format!(" (did you mean `{s}`?)"))
                .unwrap_or_default();
            c.fail(
                span,
                &format!("{key}.balance"),
                format!(
                    "unknown balance `{other}`{hint}; expected one of: {}",
                    known.join(", ")
                ),
            );
            Balance::RoundRobin
        }
    };
    let connect_timeout = c.duration(
        &cfg.connect_timeout,
        &format!("{key}.connect_timeout"),
        Duration::from_secs(5),
    );
    let pool_idle_timeout = c.duration(
        &cfg.pool_idle_timeout,
        &format!("{key}.pool_idle_timeout"),
        Duration::from_secs(90),
    );
    let pool_max_idle = c.count(&cfg.pool_max_idle, &format!("{key}.pool_max_idle"), 256, 0);
    let sticky_cookie = match &cfg.sticky_cookie {
        Some(s)
            if HeaderValue::from_str(s.get_ref()).is_err()
                || s.get_ref().is_empty()
                || s.get_ref().contains(['=', ';', ' ']) =>
        {
            c.fail(
                s.span(),
                &format!("{key}.sticky_cookie"),
                "not a valid cookie name",
            );
            String::new()
        }
        Some(s) => s.get_ref().clone(),
        None => "sluice_sticky".to_string(),
    };
    (c.errors.len() == before).then(|| Cluster {
        name: name.get_ref().clone(),
        targets,
        balance,
        http2: cfg.http2.unwrap_or(false),
        preserve_host: cfg.preserve_host.unwrap_or(true),
        connect_timeout,
        pool_idle_timeout,
        pool_max_idle,
        sticky_cookie,
    })
}

/// A table name as it appears in a key path: bare when it can be, quoted otherwise.
fn key_segment(name: &str) -> String {
    let bare = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if bare {
        name.to_string()
    } else {
        format!("{name:?}")
    }
}

fn target(c: &mut Checker, t: &Spanned<TargetConfig>, key: &str) -> Option<Target> {
    let (url, weight) = match t.get_ref() {
        TargetConfig::Url(u) => (u.as_str(), 1),
        TargetConfig::Weighted(w) => (w.url.as_str(), w.weight.unwrap_or(1)),
    };
    let weight = match u32::try_from(weight) {
        Ok(w) if w > 0 => w,
        _ => {
            c.fail(
                t.span(),
                &format!("{key}.weight"),
                format!("weight must be a whole number of at least 1, got {weight}"),
            );
            return None;
        }
    };
    match parse_target_url(url) {
        Ok(address) => Some(Target {
            url: url.to_string(),
            address,
            weight,
        }),
        Err(e) => {
            c.fail(t.span(), key, e);
            None
        }
    }
}

/// Parses a target URL: `http://host:port` or `unix:/path/to.sock`.
pub(crate) fn parse_target_url(url: &str) -> Result<TargetAddress, String> {
    if let Some(path) = url.strip_prefix("unix:") {
        if !path.starts_with('/') {
            return Err(format!("invalid target URL `{url}`: a unix target needs an absolute path, like \"unix:/run/app.sock\""));
        }
        return Ok(TargetAddress::Unix(PathBuf::from(path)));
    }
    let bad = |why: &str| format!("invalid target URL `{url}`: {why}");
    let uri: http::Uri = url
        .parse()
        .map_err(|_| bad("not a URL; expected http://host:port or unix:/path.sock"))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => {
            return Err(bad(
                "https targets are not supported yet; use http:// or unix:",
            ))
        }
        Some(s) if s.starts_with("tunnel") => {
            return Err(bad("tunnel targets are not supported yet"))
        }
        _ => return Err(bad("expected http://host:port or unix:/path.sock")),
    }
    if uri.path() != "/" && !uri.path().is_empty() || uri.query().is_some() {
        return Err(bad("a target URL has no path or query"));
    }
    let authority = uri.authority().ok_or_else(|| bad("missing host"))?;
    if authority.as_str().contains('@') {
        return Err(bad("credentials in target URLs are not supported"));
    }
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    if host.is_empty() {
        return Err(bad("missing host"));
    }
    let port = authority.port_u16().unwrap_or(80);
    let authority = if authority.port_u16().is_some() {
        authority.as_str().to_string()
    } else {
        format!("{}:80", authority.host())
    };
    Ok(TargetAddress::Tcp {
        host,
        port,
        authority,
    })
}

fn parse_hash_key(text: &str) -> Result<HashKey, String> {
    let bad = || {
        format!(
            "invalid hash_key `{text}`: expected header:NAME, cookie:NAME, query:NAME, ip or path"
        )
    };
    match text.split_once(':') {
        None if text == "ip" => Ok(HashKey::Ip),
        None if text == "path" => Ok(HashKey::Path),
        Some(("header", n)) => HeaderName::try_from(n)
            .map(HashKey::Header)
            .map_err(|_| bad()),
        Some(("cookie", n)) if !n.is_empty() => Ok(HashKey::Cookie(n.to_string())),
        Some(("query", n)) if !n.is_empty() => Ok(HashKey::Query(n.to_string())),
        _ => Err(bad()),
    }
}

fn routes(c: &mut Checker, raw: &[Spanned<raw::RouteConfig>], clusters: &[&str]) -> Vec<Route> {
    let mut seen_names: BTreeMap<String, Location> = BTreeMap::new();
    let mut out: Vec<Route> = Vec::new();
    let mut by_path: HashMap<PathPattern, Vec<usize>> = HashMap::new();
    for (i, r) in raw.iter().enumerate() {
        let key = format!("routes[{i}]");
        let location = c.at(&r.span());
        let before = c.errors.len();
        let route = route(c, r.get_ref(), &key, location, clusters);
        // Names are checked even when the route has other problems, so that every
        // duplicate is reported in one run.
        if let Some(name) = r.get_ref().name.as_ref() {
            let name_text = name.get_ref();
            if let Some(first) = seen_names.get(name_text) {
                let msg = format!(
                    "duplicate route name `{name_text}` (first defined at line {})",
                    first.line
                );
                c.fail(name.span(), &format!("{key}.name"), msg);
            } else if !name_text.trim().is_empty() {
                seen_names.insert(name_text.clone(), location);
            }
        }
        if let Some(route) = route {
            let same_path = by_path.get(&route.path).into_iter().flatten();
            if let Some(other) = same_path.map(|&o| &out[o]).find(|o| overlaps(o, &route)) {
                let msg = format!(
                    "route `{}` has the same host, method and path as route `{}` (line {})",
                    route.name, other.name, other.location.line
                );
                let span = r
                    .get_ref()
                    .path
                    .as_ref()
                    .or(r.get_ref().prefix.as_ref())
                    .map(|p| p.span())
                    .unwrap_or(r.span());
                c.fail(span, &key, msg);
            }
            if c.errors.len() == before {
                by_path
                    .entry(route.path.clone())
                    .or_default()
                    .push(out.len());
                out.push(route);
            }
        }
    }
    out
}

fn overlaps(a: &Route, b: &Route) -> bool {
    let hosts =
        a.hosts.is_empty() && b.hosts.is_empty() || a.hosts.iter().any(|h| b.hosts.contains(h));
    let methods = match (&a.methods, &b.methods) {
        (Some(x), Some(y)) => x.iter().any(|m| y.contains(m)),
        _ => true,
    };
    hosts && methods && a.path == b.path
}

fn route(
    c: &mut Checker,
    r: &raw::RouteConfig,
    key: &str,
    location: Location,
    clusters: &[&str],
) -> Option<Route> {
    let name = match &r.name {
        Some(n) if !n.get_ref().trim().is_empty() => n.get_ref().clone(),
        Some(n) => {
            c.fail(
                n.span(),
                &format!("{key}.name"),
                "a route name must not be empty",
            );
            return None;
        }
        None => {
            c.errors.push(ConfigError::new(
                c.file,
                location,
                key,
                "a route needs a `name`",
            ));
            return None;
        }
    };
    let path = match (&r.path, &r.prefix) {
        (Some(p), None) => check_template(p.get_ref())
            .map(PathPattern::Template)
            .map_err(|e| c.fail(p.span(), &format!("{key}.path"), e))
            .ok(),
        (None, Some(p)) => check_prefix(p.get_ref())
            .map(PathPattern::Prefix)
            .map_err(|e| c.fail(p.span(), &format!("{key}.prefix"), e))
            .ok(),
        (Some(p), Some(_)) => {
            c.fail(p.span(), key, "give either `path` or `prefix`, not both");
            None
        }
        (None, None) => {
            c.errors.push(ConfigError::new(
                c.file,
                location,
                key,
                "a route needs a `path` or a `prefix`",
            ));
            None
        }
    };
    let methods = r.methods.as_ref().map(|list| {
        if list.get_ref().is_empty() {
            c.fail(
                list.span(),
                &format!("{key}.methods"),
                "an empty method list matches nothing; leave `methods` out to match every method",
            );
        }
        list.get_ref()
            .iter()
            .filter_map(|m| {
                let upper = m.get_ref().to_ascii_uppercase();
                match Method::from_bytes(upper.as_bytes()) {
                    Ok(method) if upper != "CONNECT" => Some(method),
                    _ => {
                        c.fail(
                            m.span(),
                            &format!("{key}.methods"),
                            format!("invalid method `{}`", m.get_ref()),
                        );
                        None
                    }
                }
            })
            .collect::<Vec<_>>()
    });
    let hosts = r
        .hosts
        .iter()
        .flatten()
        .filter_map(|h| {
            parse_host(h.get_ref())
                .map_err(|e| c.fail(h.span(), &format!("{key}.hosts"), e))
                .ok()
        })
        .collect();
    let action = match (&r.cluster, &r.respond) {
        (Some(cl), None) => match clusters.iter().position(|n| n == cl.get_ref()) {
            Some(i) => Some(Action::Proxy { cluster: i }),
            None => {
                let hint = crate::error::did_you_mean(cl.get_ref(), clusters)
                    .map(|s| format!(" (did you mean `{s}`?)"))
                    .unwrap_or_default();
                c.fail(
                    cl.span(),
                    &format!("{key}.cluster"),
                    format!("no cluster named `{}`{hint}", cl.get_ref()),
                );
                None
            }
        },
        (None, Some(resp)) => respond(c, resp, &format!("{key}.respond")),
        (Some(cl), Some(_)) => {
            c.fail(
                cl.span(),
                key,
                "give either `cluster` or `respond`, not both",
            );
            None
        }
        (None, None) => {
            c.errors.push(ConfigError::new(
                c.file,
                location,
                key,
                "a route needs a `cluster` or a `respond`",
            ));
            None
        }
    };
    let strip_prefix = r.strip_prefix.as_ref().and_then(|s| {
        check_prefix(s.get_ref())
            .map_err(|e| c.fail(s.span(), &format!("{key}.strip_prefix"), e))
            .ok()
    });
    let rewrite = r.rewrite.as_ref().and_then(|rw| {
        let params = path.as_ref().map(template_params).unwrap_or_default();
        check_rewrite(rw.get_ref(), &params)
            .map_err(|e| c.fail(rw.span(), &format!("{key}.rewrite"), e))
            .ok()
    });
    let timeout = c.duration(
        &r.timeout,
        &format!("{key}.timeout"),
        Duration::from_secs(60),
    );
    Some(Route {
        name,
        path: path?,
        methods,
        hosts,
        action: action?,
        strip_prefix,
        rewrite,
        timeout,
        location,
    })
}

fn respond(c: &mut Checker, resp: &Spanned<raw::RespondConfig>, key: &str) -> Option<Action> {
    let r = resp.get_ref();
    let status = match r.status.map(u16::try_from) {
        None => StatusCode::OK,
        Some(Ok(code)) => match StatusCode::from_u16(code) {
            Ok(s) if code >= 200 => s,
            _ => {
                c.fail(
                    resp.span(),
                    &format!("{key}.status"),
                    format!("invalid status {code}: expected 200 to 999"),
                );
                return None;
            }
        },
        Some(Err(_)) => {
            c.fail(
                resp.span(),
                &format!("{key}.status"),
                "invalid status: expected 200 to 999",
            );
            return None;
        }
    };
    let mut headers = Vec::new();
    for (name, value) in &r.headers {
        match (
            HeaderName::try_from(name.as_str()),
            HeaderValue::try_from(value.as_str()),
        ) {
            (Ok(n), Ok(v)) => headers.push((n, v)),
            _ => c.fail(
                resp.span(),
                &format!("{key}.headers"),
                format!("invalid header `{name}: {value}`"),
            ),
        }
    }
    Some(Action::Respond {
        status,
        body: r.body.clone(),
        headers,
    })
}

/// Checks a path template: absolute, `{name}` as a whole segment, `{*name}` only last.
pub(crate) fn check_template(t: &str) -> Result<String, String> {
    if !t.starts_with('/') {
        return Err(format!("invalid path `{t}`: must start with `/`"));
    }
    let segments: Vec<&str> = t.split('/').skip(1).collect();
    let mut names: Vec<&str> = Vec::new();
    for (i, seg) in segments.iter().enumerate() {
        let open = seg.contains('{') || seg.contains('}');
        if !open {
            continue;
        }
        let inner = seg.strip_prefix('{').and_then(|s| s.strip_suffix('}'));
        let Some(inner) = inner else {
            return Err(format!(
                "invalid path `{t}`: a parameter must be a whole segment, like `/users/{{id}}`"
            ));
        };
        let (catch_all, name) = match inner.strip_prefix('*') {
            Some(n) => (true, n),
            None => (false, inner),
        };
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!(
                "invalid path `{t}`: parameter names are letters, digits and `_`"
            ));
        }
        if catch_all && i + 1 != segments.len() {
            return Err(format!(
                "invalid path `{t}`: `{{*{name}}}` must be the last segment"
            ));
        }
        if names.contains(&name) {
            return Err(format!(
                "invalid path `{t}`: parameter `{name}` appears twice"
            ));
        }
        names.push(name);
    }
    Ok(t.to_string())
}

fn check_prefix(p: &str) -> Result<String, String> {
    if !p.starts_with('/') || p.contains(['{', '}', '?', '#']) {
        return Err(format!(
            "invalid prefix `{p}`: a plain path starting with `/`"
        ));
    }
    Ok(if p.len() > 1 {
        p.trim_end_matches('/').to_string()
    } else {
        p.to_string()
    })
}

fn template_params(p: &PathPattern) -> Vec<String> {
    match p {
        PathPattern::Prefix(_) => Vec::new(),
        PathPattern::Template(t) => t
            .split('/')
            .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(|s| s.trim_start_matches('*').to_string())
            .collect(),
    }
}

fn check_rewrite(rw: &str, params: &[String]) -> Result<String, String> {
    if !rw.starts_with('/') {
        return Err(format!("invalid rewrite `{rw}`: must start with `/`"));
    }
    let mut rest = rw;
    while let Some(start) = rest.find('{') {
        let end = rest[start..]
            .find('}')
            .ok_or_else(|| format!("invalid rewrite `{rw}`: unclosed `{{`"))?
            + start;
        let name = &rest[start + 1..end];
        if !params.iter().any(|p| p == name) {
            return Err(format!(
                "invalid rewrite `{rw}`: `{{{name}}}` is not a parameter of the route's path"
            ));
        }
        rest = &rest[end + 1..];
    }
    Ok(rw.to_string())
}

fn parse_host(h: &str) -> Result<HostPattern, String> {
    let lower = h.trim().to_ascii_lowercase();
    let valid = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
    };
    if let Some(rest) = lower.strip_prefix("*.") {
        if valid(rest) {
            return Ok(HostPattern::Wildcard(format!(".{rest}")));
        }
    } else if valid(&lower) {
        return Ok(HostPattern::Exact(lower));
    }
    Err(format!(
        "invalid host `{h}`: expected a name like `api.example.com` or `*.example.com`"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_urls() {
        assert_eq!(
            parse_target_url("http://127.0.0.1:8001"),
            Ok(TargetAddress::Tcp {
                host: "127.0.0.1".into(),
                port: 8001,
                authority: "127.0.0.1:8001".into()
            })
        );
        assert_eq!(
            parse_target_url("unix:/tmp/a.sock"),
            Ok(TargetAddress::Unix("/tmp/a.sock".into()))
        );
        assert!(parse_target_url("ftp://x").is_err());
        assert!(parse_target_url("http://x:8/path").is_err());
        assert!(parse_target_url("unix:relative.sock").is_err());
        assert!(parse_target_url("not a url").is_err());
    }

    #[test]
    fn templates() {
        assert!(check_template("/users/{id}/{*rest}").is_ok());
        assert!(check_template("/users/{*rest}/x").is_err());
        assert!(check_template("/users/x{id}").is_err());
        assert!(check_template("users").is_err());
        assert!(check_template("/{a}/{a}").is_err());
    }

    #[test]
    fn hosts() {
        assert_eq!(
            parse_host("API.example.com"),
            Ok(HostPattern::Exact("api.example.com".into()))
        );
        assert_eq!(
            parse_host("*.example.com"),
            Ok(HostPattern::Wildcard(".example.com".into()))
        );
        assert!(parse_host("a b").is_err());
    }
}
