//! Router tests: precedence, methods, hosts, prefixes, and a property test that every
//! configured static path is found.

use super::*;
use proptest::prelude::*;

fn router(routes: &str) -> Router {
    let src = format!("[clusters.c]\ntargets = [\"http://127.0.0.1:1\"]\n{routes}");
    let config = sluice_config::parse(&src, "t.toml").expect("valid config");
    Router::build(&config).expect("router builds")
}

fn found(r: &Router, host: Option<&str>, method: Method, path: &str) -> Option<usize> {
    match r.lookup(host, &method, path) {
        RouteMatch::Found { route, .. } => Some(route),
        _ => None,
    }
}

const ROUTES: &str = r#"
[[routes]]
name = "static"
path = "/users/me"
cluster = "c"
[[routes]]
name = "param"
path = "/users/{id}"
methods = ["GET", "PUT"]
cluster = "c"
[[routes]]
name = "rest"
path = "/users/{id}/{*rest}"
cluster = "c"
[[routes]]
name = "files"
prefix = "/static"
cluster = "c"
[[routes]]
name = "exact-host"
path = "/"
hosts = ["api.example.com"]
cluster = "c"
[[routes]]
name = "wild-host"
path = "/"
hosts = ["*.example.com"]
cluster = "c"
[[routes]]
name = "any-host"
path = "/"
cluster = "c"
"#;

#[test]
fn static_beats_param_beats_catch_all() {
    let r = router(ROUTES);
    assert_eq!(found(&r, None, Method::GET, "/users/me"), Some(0));
    assert_eq!(found(&r, None, Method::GET, "/users/42"), Some(1));
    assert_eq!(found(&r, None, Method::GET, "/users/42/a/b"), Some(2));
    match r.lookup(None, &Method::GET, "/users/42") {
        RouteMatch::Found { params, .. } => assert_eq!(params.to_vec(), vec![("id", "42")]),
        other => panic!("expected a match, got {other:?}"),
    }
}

#[test]
fn param_beats_catch_all_or_prefix_in_the_same_place() {
    let r = router(
        r#"
[[routes]]
name = "me"
path = "/users/me"
cluster = "c"
[[routes]]
name = "param"
path = "/users/{id}"
cluster = "c"
[[routes]]
name = "catch-all"
path = "/users/{*rest}"
cluster = "c"
[[routes]]
name = "orders"
path = "/users/{user}/orders"
cluster = "c"
[[routes]]
name = "page"
path = "/docs/{page}"
cluster = "c"
[[routes]]
name = "docs"
prefix = "/docs"
cluster = "c"
"#,
    );
    assert_eq!(found(&r, None, Method::GET, "/users/me"), Some(0));
    assert_eq!(found(&r, None, Method::GET, "/users/42"), Some(1));
    assert_eq!(found(&r, None, Method::GET, "/users/42/a/b"), Some(2));
    assert_eq!(found(&r, None, Method::GET, "/users/me/orders"), Some(3));
    assert_eq!(found(&r, None, Method::GET, "/docs/intro"), Some(4));
    assert_eq!(found(&r, None, Method::GET, "/docs/intro/more"), Some(5));
    assert_eq!(found(&r, None, Method::GET, "/docs"), Some(5));
    match r.lookup(None, &Method::GET, "/users/42/a/b") {
        RouteMatch::Found { params, .. } => {
            assert_eq!(params.to_vec(), vec![("rest", "42/a/b")]);
        }
        other => panic!("expected a match, got {other:?}"),
    }
}

#[test]
fn wrong_method_lists_allowed() {
    let r = router(ROUTES);
    assert_eq!(
        r.lookup(None, &Method::DELETE, "/users/42"),
        RouteMatch::MethodNotAllowed {
            allow: "GET, HEAD, PUT".into()
        }
    );
    assert_eq!(found(&r, None, Method::HEAD, "/users/42"), Some(1));
}

#[test]
fn prefix_matches_itself_and_below_only() {
    let r = router(ROUTES);
    assert_eq!(found(&r, None, Method::GET, "/static"), Some(3));
    assert_eq!(found(&r, None, Method::GET, "/static/"), Some(3));
    assert_eq!(found(&r, None, Method::GET, "/static/css/a.css"), Some(3));
    assert_eq!(found(&r, None, Method::GET, "/staticfoo"), None);
}

#[test]
fn exact_beats_wildcard_beats_any_host() {
    let r = router(ROUTES);
    assert_eq!(
        found(&r, Some("api.example.com"), Method::GET, "/"),
        Some(4)
    );
    assert_eq!(
        found(&r, Some("www.example.com"), Method::GET, "/"),
        Some(5)
    );
    assert_eq!(found(&r, Some("example.org"), Method::GET, "/"), Some(6));
    assert_eq!(found(&r, None, Method::GET, "/"), Some(6));
    assert_eq!(found(&r, Some("example.com"), Method::GET, "/"), Some(6));
}

#[test]
fn host_falls_back_to_any_host_routes_for_other_paths() {
    let r = router(ROUTES);
    assert_eq!(
        found(&r, Some("api.example.com"), Method::GET, "/users/me"),
        Some(0)
    );
}

#[test]
fn no_match_is_not_found() {
    let r = router(ROUTES);
    assert_eq!(
        r.lookup(None, &Method::GET, "/nothing/here"),
        RouteMatch::NotFound
    );
}

#[test]
fn conflicting_parameter_names_are_config_errors() {
    let src = "[clusters.c]\ntargets = [\"http://127.0.0.1:1\"]\n[[routes]]\nname = \"a\"\npath = \"/u/{id}\"\nmethods = [\"GET\"]\ncluster = \"c\"\n[[routes]]\nname = \"b\"\npath = \"/u/{name}\"\nmethods = [\"PUT\"]\ncluster = \"c\"\n";
    let config = sluice_config::parse(src, "t.toml").expect("valid config");
    let errors = Router::build(&config).expect_err("conflict");
    assert_eq!(errors.len(), 1);
    assert!(
        errors[0]
            .to_string()
            .starts_with("t.toml:8:1: routes[1]: path conflicts with `/u/{id}` of route `a`"),
        "{}",
        errors[0]
    );
}

#[test]
fn strips_ports_from_hosts() {
    assert_eq!(host_without_port("a.com:8080"), "a.com");
    assert_eq!(host_without_port("a.com"), "a.com");
    assert_eq!(host_without_port("[::1]:80"), "[::1]");
}

proptest! {
    #[test]
    fn every_static_route_is_found(segs in proptest::collection::btree_set("[a-z]{1,6}(/[a-z0-9]{1,4}){0,3}", 1..40)) {
        let routes: String = segs.iter().enumerate().map(|(i, s)| format!("[[routes]]\nname = \"r{i}\"\npath = \"/{s}\"\ncluster = \"c\"\n")).collect();
        let r = router(&routes);
        for (i, s) in segs.iter().enumerate() {
            let path = format!("/{s}");
            prop_assert_eq!(found(&r, None, Method::GET, &path), Some(i));
        }
    }

    #[test]
    fn the_most_specific_template_wins(
        shapes in proptest::collection::btree_set(proptest::collection::vec(0u8..4, 1..4), 1..12),
        paths in proptest::collection::vec(proptest::collection::vec(0u8..3, 1..5), 1..20),
    ) {
        // Segment kinds: 0 `a`, 1 `b`, 2 `{pN}`, 3 `{*rest}` (last segment only).
        let templates: Vec<Vec<u8>> = shapes
            .into_iter()
            .map(|mut t| {
                for k in t.iter_mut().rev().skip(1) {
                    *k = (*k).min(2);
                }
                t
            })
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        let text = |t: &[u8]| -> String {
            t.iter()
                .enumerate()
                .map(|(i, k)| match k {
                    0 => "/a".to_string(),
                    1 => "/b".to_string(),
                    2 => format!("/{{p{i}}}"),
                    _ => "/{*rest}".to_string(),
                })
                .collect()
        };
        let routes: String = templates
            .iter()
            .enumerate()
            .map(|(i, t)| format!("[[routes]]\nname = \"r{i}\"\npath = \"{}\"\ncluster = \"c\"\n", text(t)))
            .collect();
        let r = router(&routes);
        let rank = |k: u8| if k < 2 { 0 } else { k - 1 };
        for path in paths {
            let matches = |t: &[u8]| {
                t.iter().enumerate().all(|(i, k)| match k {
                    0 | 1 => path.get(i) == Some(k),
                    _ => i < path.len(),
                }) && (t.len() == path.len() || t.last() == Some(&3) && t.len() <= path.len())
            };
            let expected = templates
                .iter()
                .enumerate()
                .filter(|(_, t)| matches(t))
                .min_by_key(|(_, t)| t.iter().map(|k| rank(*k)).collect::<Vec<_>>())
                .map(|(i, _)| i);
            let path_text: String = path.iter().map(|k| ["/a", "/b", "/c"][usize::from(*k)]).collect();
            prop_assert_eq!(found(&r, None, Method::GET, &path_text), expected, "{}", path_text);
        }
    }
}
