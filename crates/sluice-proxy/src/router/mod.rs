//! Host + method + path routing. Hosts pick a group (exact, then `*.wildcard` longest
//! first, then any-host); each group is a radix tree (matchit) where static segments beat
//! `{param}` beat `{*catch_all}`; a path that matches with the wrong method answers 405.

pub mod path;

use http::Method;
use sluice_config::{Config, ConfigError, HostPattern, PathPattern};
use std::collections::HashMap;

/// The parameter name a `prefix` route uses for the rest of the path.
const PREFIX_REST: &str = "__sluice_prefix_rest";

/// A routing table built once per configuration.
#[derive(Debug, Default)]
pub struct Router {
    exact: HashMap<String, PathTable>,
    /// `(".example.com", table)`, longest suffix first.
    wildcard: Vec<(String, PathTable)>,
    any: PathTable,
}

/// What a lookup found.
#[derive(Debug, PartialEq, Eq)]
pub enum RouteMatch<'r> {
    /// The route at this index of the configuration, with the path parameters.
    Found {
        route: usize,
        params: Vec<(&'r str, &'r str)>,
    },
    /// The path matched but not the method; the methods that would.
    MethodNotAllowed {
        allow: String,
    },
    NotFound,
}

#[derive(Debug, Default)]
struct PathTable {
    tree: matchit::Router<usize>,
    /// Candidates per tree entry: (methods or None for any, route index).
    entries: Vec<Vec<(Option<Vec<Method>>, usize)>>,
    templates: HashMap<String, usize>,
}

impl Router {
    /// Builds the table; a conflict matchit cannot hold is a configuration error.
    pub fn build(config: &Config) -> Result<Router, Vec<ConfigError>> {
        let mut router = Router::default();
        let mut errors = Vec::new();
        for (index, route) in config.routes.iter().enumerate() {
            let fail = |msg: String| {
                ConfigError::new(
                    &config.source,
                    route.location,
                    &format!("routes[{index}]"),
                    msg,
                )
            };
            if route.hosts.is_empty() {
                if let Err(e) = router.any.insert(config, index) {
                    errors.push(fail(e));
                }
            }
            for host in &route.hosts {
                let table = match host {
                    HostPattern::Exact(h) => router.exact.entry(h.clone()).or_default(),
                    HostPattern::Wildcard(suffix) => {
                        match router.wildcard.iter().position(|(s, _)| s == suffix) {
                            Some(i) => &mut router.wildcard[i].1,
                            None => {
                                router.wildcard.push((suffix.clone(), PathTable::default()));
                                let last = router.wildcard.len() - 1;
                                &mut router.wildcard[last].1
                            }
                        }
                    }
                };
                if let Err(e) = table.insert(config, index) {
                    errors.push(fail(e));
                }
            }
        }
        router
            .wildcard
            .sort_by_key(|w| std::cmp::Reverse(w.0.len()));
        if errors.is_empty() {
            Ok(router)
        } else {
            Err(errors)
        }
    }

    /// Finds the route for a request. `host` is lowercased and without port.
    pub fn lookup<'r>(
        &'r self,
        host: Option<&str>,
        method: &Method,
        path: &'r str,
    ) -> RouteMatch<'r> {
        let mut not_allowed = None;
        let tables = host
            .and_then(|h| self.exact.get(h))
            .into_iter()
            .chain(
                self.wildcard
                    .iter()
                    .filter(move |(suffix, _)| host.is_some_and(|h| h.ends_with(suffix.as_str())))
                    .map(|(_, t)| t),
            )
            .chain(std::iter::once(&self.any));
        for table in tables {
            match table.lookup(method, path) {
                RouteMatch::NotFound => {}
                RouteMatch::MethodNotAllowed { allow } => {
                    not_allowed.get_or_insert(allow);
                }
                found => return found,
            }
        }
        match not_allowed {
            Some(allow) => RouteMatch::MethodNotAllowed { allow },
            None => RouteMatch::NotFound,
        }
    }
}

impl PathTable {
    fn insert(&mut self, config: &Config, index: usize) -> Result<(), String> {
        let route = &config.routes[index];
        let templates: Vec<String> = match &route.path {
            PathPattern::Template(t) => vec![t.clone()],
            PathPattern::Prefix(p) if p == "/" => vec!["/".into(), format!("/{{*{PREFIX_REST}}}")],
            PathPattern::Prefix(p) => vec![
                p.clone(),
                format!("{p}/"),
                format!("{p}/{{*{PREFIX_REST}}}"),
            ],
        };
        for template in templates {
            let entry = match self.templates.get(&template) {
                Some(&e) => e,
                None => {
                    let e = self.entries.len();
                    self.tree
                        .insert(template.clone(), e)
                        .map_err(|err| conflict(config, &err))?;
                    self.entries.push(Vec::new());
                    self.templates.insert(template, e);
                    e
                }
            };
            self.entries[entry].push((route.methods.clone(), index));
        }
        Ok(())
    }

    fn lookup<'r>(&'r self, method: &Method, path: &'r str) -> RouteMatch<'r> {
        let Ok(found) = self.tree.at(path) else {
            return RouteMatch::NotFound;
        };
        let candidates = &self.entries[*found.value];
        let hit = candidates.iter().find(|(methods, _)| {
            methods.as_ref().is_none_or(|m| {
                m.contains(method) || (method == Method::HEAD && m.contains(&Method::GET))
            })
        });
        match hit {
            Some((_, route)) => RouteMatch::Found {
                route: *route,
                params: found
                    .params
                    .iter()
                    .filter(|(k, _)| *k != PREFIX_REST)
                    .collect(),
            },
            None => {
                let mut allow: Vec<&str> = candidates
                    .iter()
                    .flat_map(|(m, _)| m.iter().flatten())
                    .map(Method::as_str)
                    .collect();
                if allow.contains(&"GET") {
                    allow.push("HEAD");
                }
                allow.sort_unstable();
                allow.dedup();
                RouteMatch::MethodNotAllowed {
                    allow: allow.join(", "),
                }
            }
        }
    }
}

fn conflict(config: &Config, err: &matchit::InsertError) -> String {
    match err {
        matchit::InsertError::Conflict { with } => {
            let other = config
                .routes
                .iter()
                .find(|r| match &r.path {
                    PathPattern::Template(t) => t == with,
                    PathPattern::Prefix(p) => with.starts_with(p.as_str()),
                })
                .map(|r| format!(" of route `{}`", r.name))
                .unwrap_or_default();
            format!("path conflicts with `{}`{other}: two parameters in the same place must have the same name", with.replace(&format!("{{*{PREFIX_REST}}}"), "..."))
        }
        other => format!("invalid path: {other}"),
    }
}

/// The host a request is for: lowercased, port removed.
pub fn host_without_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host
            .split_once(']')
            .map(|(h, _)| &host[..h.len() + 1])
            .unwrap_or(host);
    }
    host.rsplit_once(':').map(|(h, _)| h).unwrap_or(host)
}

#[cfg(test)]
mod tests;
