//! Validation of `[[routes]]`: names, paths, methods, hosts, actions, rewrites, and the
//! checks across routes (duplicate names, same host + method + path).

use super::Checker;
use crate::middleware::Middleware;
use crate::raw;
use crate::runtime::*;
use crate::Location;
use http::{HeaderName, HeaderValue, Method, StatusCode};
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;
use toml::Spanned;

pub(super) fn routes(
    c: &mut Checker,
    raw: &[Spanned<raw::RouteConfig>],
    clusters: &[&str],
    middleware: (&[Middleware], &[&str]),
    server_middleware: &[usize],
) -> Vec<Route> {
    let mut seen_names: BTreeMap<String, Location> = BTreeMap::new();
    let mut out: Vec<Route> = Vec::new();
    let mut by_path: HashMap<PathPattern, Vec<usize>> = HashMap::new();
    for (i, r) in raw.iter().enumerate() {
        let key = format!("routes[{i}]");
        let location = c.at(&r.span());
        let before = c.errors.len();
        let attached = super::middleware::attach(
            c,
            &r.get_ref().middleware,
            &format!("{key}.middleware"),
            middleware,
            server_middleware,
        );
        let route = route(c, r.get_ref(), &key, location, clusters).map(|mut route| {
            route.middleware = attached;
            route
        });
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
            c.fail_at(location, key, "a route needs a `name`");
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
            c.fail_at(location, key, "a route needs a `path` or a `prefix`");
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
            c.fail_at(location, key, "a route needs a `cluster` or a `respond`");
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
    let try_timeout = c.duration(&r.try_timeout, &format!("{key}.try_timeout"), timeout);
    if let Some(t) = r.try_timeout.as_ref().filter(|_| try_timeout > timeout) {
        c.fail(
            t.span(),
            &format!("{key}.try_timeout"),
            "must not be longer than the route's timeout",
        );
    }
    let idle_timeout = r
        .idle_timeout
        .as_ref()
        .map(|_| c.duration(&r.idle_timeout, &format!("{key}.idle_timeout"), timeout));
    let max_body_size = r
        .max_body_size
        .as_ref()
        .map(|_| c.size(&r.max_body_size, &format!("{key}.max_body_size"), 1) as u64);
    let max_requests = r
        .max_requests
        .as_ref()
        .map(|_| c.count(&r.max_requests, &format!("{key}.max_requests"), 1, 1));
    let retries = r
        .retries
        .as_ref()
        .map(|rt| super::resilience::retries(c, rt.get_ref(), &format!("{key}.retries")));
    Some(Route {
        name,
        path: path?,
        methods,
        hosts,
        action: action?,
        strip_prefix,
        rewrite,
        timeout,
        try_timeout,
        idle_timeout,
        max_body_size,
        max_requests,
        retries,
        middleware: Vec::new(),
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
        body: bytes::Bytes::from(r.body.clone()),
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
