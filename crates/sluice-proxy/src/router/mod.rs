//! Host + method + path routing. Hosts pick a group (exact, then `*.wildcard` longest
//! first, then any-host); each group is a radix tree (matchit) where static segments beat
//! `{param}` beat `{*catch_all}`; a path that matches with the wrong method answers 405.
//! matchit refuses a `{param}` and a `{*catch_all}` at the same place, so a template it
//! refuses goes to another tree, and the most specific match across trees wins.

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
    /// `".example.com"` -> table; a host tries its suffixes longest first.
    wildcard: HashMap<String, PathTable>,
    any: PathTable,
}

/// A match's path parameters, read only when asked for (by a rewrite).
#[derive(Debug, PartialEq, Eq)]
pub struct Params<'r>(matchit::Params<'r, 'r>);

impl<'r> Params<'r> {
    /// The parameters by name, in template order (a prefix's own catch-all left out).
    pub fn to_vec(&self) -> Vec<(&'r str, &'r str)> {
        self.0.iter().filter(|(k, _)| *k != PREFIX_REST).collect()
    }
}

/// What a lookup found.
#[derive(Debug, PartialEq, Eq)]
pub enum RouteMatch<'r> {
    /// The route at this index of the configuration, with the path parameters.
    Found {
        route: usize,
        params: Params<'r>,
    },
    /// The path matched but not the method; the methods that would.
    MethodNotAllowed {
        allow: String,
    },
    NotFound,
}

#[derive(Debug, Default)]
struct PathTable {
    /// Trees of entry indexes; a template goes to the first tree that takes it.
    trees: Vec<matchit::Router<usize>>,
    /// Candidates per tree entry: (methods or None for any, route index).
    entries: Vec<Vec<(Option<Vec<Method>>, usize)>>,
    /// Per entry, its [`specificity`]: lower is more specific.
    ranks: Vec<Vec<u8>>,
    templates: HashMap<String, usize>,
    /// Template with parameter names erased -> the template, to refuse renamed twins.
    shapes: HashMap<String, String>,
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
                        router.wildcard.entry(suffix.clone()).or_default()
                    }
                };
                if let Err(e) = table.insert(config, index) {
                    errors.push(fail(e));
                }
            }
        }
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
                host.into_iter()
                    .flat_map(|h| h.match_indices('.').map(move |(i, _)| &h[i..]))
                    .filter_map(|suffix| self.wildcard.get(suffix)),
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
                    self.insert_template(config, &template, e)?;
                    self.entries.push(Vec::new());
                    self.ranks.push(specificity(&template));
                    self.templates.insert(template, e);
                    e
                }
            };
            self.entries[entry].push((route.methods.clone(), index));
        }
        Ok(())
    }

    /// Puts a new template in the first tree without a conflicting one.
    fn insert_template(
        &mut self,
        config: &Config,
        template: &str,
        entry: usize,
    ) -> Result<(), String> {
        let shape = shape(template);
        if let Some(twin) = self.shapes.get(&shape) {
            let with = twin.clone();
            return Err(conflict(config, &matchit::InsertError::Conflict { with }));
        }
        for tree in &mut self.trees {
            match tree.insert(template, entry) {
                Ok(()) => {
                    self.shapes.insert(shape, template.to_string());
                    return Ok(());
                }
                Err(matchit::InsertError::Conflict { .. }) => {}
                Err(other) => return Err(conflict(config, &other)),
            }
        }
        let mut tree = matchit::Router::new();
        tree.insert(template, entry)
            .map_err(|err| conflict(config, &err))?;
        self.trees.push(tree);
        self.shapes.insert(shape, template.to_string());
        Ok(())
    }

    fn lookup<'r>(&'r self, method: &Method, path: &'r str) -> RouteMatch<'r> {
        let Some(found) = self
            .trees
            .iter()
            .filter_map(|tree| tree.at(path).ok())
            .min_by(|a, b| self.ranks[*a.value].cmp(&self.ranks[*b.value]))
        else {
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
                params: Params(found.params),
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

/// Segment kinds, left to right: 0 static, 1 `{param}`, 2 `{*catch_all}`. Of two
/// templates matching one path, the smaller (static earliest) is the more specific.
fn specificity(template: &str) -> Vec<u8> {
    template
        .split('/')
        .map(|s| match s.strip_prefix('{') {
            Some(p) if p.starts_with('*') => 2,
            Some(_) => 1,
            None => 0,
        })
        .collect()
}

/// `template` with parameter names erased: two templates of one shape match the same paths.
fn shape(template: &str) -> String {
    template
        .split('/')
        .map(|s| match s.strip_prefix('{') {
            Some(p) if p.starts_with('*') => "{*}",
            Some(_) => "{}",
            None => s,
        })
        .collect::<Vec<_>>()
        .join("/")
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
