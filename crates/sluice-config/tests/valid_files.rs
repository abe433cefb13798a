//! Files that validate: every key of the configuration and its runtime value, the
//! defaults, and the shipped example.

use http::{HeaderName, HeaderValue, Method, StatusCode};
use sluice_config::{Action, Balance, Config, HashKey, HostPattern, PathPattern, TargetAddress};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The configuration for `src`, which must validate.
fn config(src: &str) -> Config {
    match sluice_config::parse(src, "test.toml") {
        Ok(c) => c,
        Err(e) => panic!("expected a valid file, got:\n{e}"),
    }
}

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("test address")
}

const EVERY_KEY: &str = r#"
[server]
listen = ["127.0.0.1:8080", "[::1]:8080"]
unix = ["/tmp/sluice-test.sock"]
threads = 4
shutdown_grace = "45s"
access_log = false

[server.limits]
max_uri_size = "16KiB"
max_header_size = 32768
max_headers = 50
header_read_timeout = "2.5s"
keepalive_timeout = "20s"
send_timeout = "30s"

[admin]
listen = "127.0.0.1:9902"
enabled = true

[clusters.users]
targets = ["http://127.0.0.1:8001", { url = "http://127.0.0.1:8002", weight = 3 }]
balance = "hash"
hash_key = "header:X-User-Id"
sticky_cookie = "users_pin"
http2 = true
preserve_host = false
connect_timeout = "250ms"
pool_idle_timeout = "5m"
pool_max_idle = 8

[clusters.local]
targets = ["unix:/run/app.sock"]
balance = "weighted"

[[routes]]
name = "users"
path = "/api/users/{id}/{*rest}"
methods = ["get", "PUT"]
hosts = ["API.example.com", "*.example.com"]
cluster = "users"
strip_prefix = "/api/"
rewrite = "/v2/users/{id}/{rest}"
timeout = "1h"

[[routes]]
name = "static"
prefix = "/static/"
cluster = "local"

[[routes]]
name = "teapot"
path = "/teapot"
respond = { status = 418, body = "short and stout\n", headers = { "content-type" = "text/plain" } }
"#;

#[test]
fn a_file_with_every_key_parses() {
    let c = config(EVERY_KEY);
    assert_eq!(c.source, "test.toml");

    let s = &c.server;
    assert_eq!(s.listen, [addr("127.0.0.1:8080"), addr("[::1]:8080")]);
    assert_eq!(s.unix, [PathBuf::from("/tmp/sluice-test.sock")]);
    assert_eq!(s.threads, 4);
    assert_eq!(s.shutdown_grace, Duration::from_secs(45));
    assert!(!s.access_log);
    assert_eq!(s.limits.max_uri_size, 16 * 1024);
    assert_eq!(s.limits.max_header_size, 32768);
    assert_eq!(s.limits.max_headers, 50);
    assert_eq!(s.limits.header_read_timeout, Duration::from_millis(2500));
    assert_eq!(s.limits.keepalive_timeout, Duration::from_secs(20));
    assert_eq!(s.limits.send_timeout, Duration::from_secs(30));
    assert_eq!(c.admin.listen, Some(addr("127.0.0.1:9902")));

    // Clusters are sorted by name.
    let names: Vec<&str> = c.clusters.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["local", "users"]);
    let local = &c.clusters[0];
    assert_eq!(local.balance, Balance::Weighted);
    assert_eq!(
        local.targets[0].address,
        TargetAddress::Unix(PathBuf::from("/run/app.sock"))
    );
    let users = &c.clusters[1];
    assert_eq!(
        users.balance,
        Balance::Hash(HashKey::Header(HeaderName::from_static("x-user-id")))
    );
    let weights: Vec<u32> = users.targets.iter().map(|t| t.weight).collect();
    assert_eq!(weights, [1, 3]);
    assert_eq!(users.targets[1].url, "http://127.0.0.1:8002");
    assert_eq!(
        users.targets[1].address,
        TargetAddress::Tcp {
            host: "127.0.0.1".into(),
            port: 8002,
            authority: "127.0.0.1:8002".into(),
        }
    );
    assert_eq!(users.sticky_cookie, "users_pin");
    assert!(users.http2);
    assert!(!users.preserve_host);
    assert_eq!(users.connect_timeout, Duration::from_millis(250));
    assert_eq!(users.pool_idle_timeout, Duration::from_secs(300));
    assert_eq!(users.pool_max_idle, 8);

    let r = &c.routes[0];
    assert_eq!(r.name, "users");
    assert_eq!(
        r.path,
        PathPattern::Template("/api/users/{id}/{*rest}".into())
    );
    assert_eq!(r.methods, Some(vec![Method::GET, Method::PUT]));
    assert_eq!(
        r.hosts,
        [
            HostPattern::Exact("api.example.com".into()),
            HostPattern::Wildcard(".example.com".into()),
        ]
    );
    assert!(matches!(r.action, Action::Proxy { cluster: 1 }));
    assert_eq!(r.strip_prefix.as_deref(), Some("/api"));
    assert_eq!(r.rewrite.as_deref(), Some("/v2/users/{id}/{rest}"));
    assert_eq!(r.timeout, Duration::from_secs(3600));
    assert_eq!(r.location.line, 36);

    let r = &c.routes[1];
    assert_eq!(r.path, PathPattern::Prefix("/static".into()));
    assert_eq!(r.methods, None);
    assert!(r.hosts.is_empty());
    assert!(matches!(r.action, Action::Proxy { cluster: 0 }));
    assert_eq!(r.timeout, Duration::from_secs(60));

    match &c.routes[2].action {
        Action::Respond {
            status,
            body,
            headers,
        } => {
            assert_eq!(*status, StatusCode::IM_A_TEAPOT);
            assert_eq!(body, "short and stout\n");
            assert_eq!(
                headers,
                &[(
                    HeaderName::from_static("content-type"),
                    HeaderValue::from_static("text/plain")
                )]
            );
        }
        other => panic!("expected a respond action, got {other:?}"),
    }
}

#[test]
fn defaults_apply_when_keys_are_left_out() {
    let c = config(
        r#"[clusters.c]
targets = ["http://backend"]

[[routes]]
name = "all"
prefix = "/"
cluster = "c"
"#,
    );
    assert_eq!(c.server.listen, [addr("127.0.0.1:8080")]);
    assert!(c.server.unix.is_empty());
    assert_eq!(c.server.threads, 0);
    assert_eq!(c.server.shutdown_grace, Duration::from_secs(30));
    assert!(c.server.access_log);
    assert_eq!(c.server.limits.max_uri_size, 8 * 1024);
    assert_eq!(c.server.limits.max_header_size, 64 * 1024);
    assert_eq!(c.server.limits.max_headers, 100);
    assert_eq!(c.server.limits.header_read_timeout, Duration::from_secs(10));
    assert_eq!(c.server.limits.keepalive_timeout, Duration::from_secs(75));
    assert_eq!(c.server.limits.send_timeout, Duration::from_secs(60));
    assert_eq!(c.admin.listen, Some(addr("127.0.0.1:9901")));
    let cl = &c.clusters[0];
    assert_eq!(cl.balance, Balance::RoundRobin);
    assert_eq!(cl.sticky_cookie, "sluice_sticky");
    assert!(!cl.http2);
    assert!(cl.preserve_host);
    assert_eq!(cl.connect_timeout, Duration::from_secs(5));
    assert_eq!(cl.pool_idle_timeout, Duration::from_secs(90));
    assert_eq!(cl.pool_max_idle, 256);
    assert_eq!(
        cl.targets[0].address,
        TargetAddress::Tcp {
            host: "backend".into(),
            port: 80,
            authority: "backend:80".into(),
        }
    );
    assert_eq!(c.routes[0].timeout, Duration::from_secs(60));
    assert_eq!(c.routes[0].path, PathPattern::Prefix("/".into()));
}

#[test]
fn admin_can_be_turned_off() {
    let c = config("[admin]\nenabled = false\n");
    assert_eq!(c.admin.listen, None);
}

#[test]
fn an_empty_file_is_valid() {
    let c = config("");
    assert!(c.routes.is_empty());
    assert!(c.clusters.is_empty());
}

#[test]
fn the_default_config_parses() {
    let c = match sluice_config::default_config() {
        Ok(c) => c,
        Err(e) => panic!("the built-in config is invalid:\n{e}"),
    };
    assert_eq!(c.source, "<built-in>");
    assert_eq!(c.server.listen, [addr("127.0.0.1:8080")]);
    assert_eq!(c.admin.listen, Some(addr("127.0.0.1:9901")));
    assert_eq!(c.routes.len(), 1);
    assert_eq!(c.routes[0].name, "welcome");
    assert!(matches!(
        c.routes[0].action,
        Action::Respond {
            status: StatusCode::OK,
            ..
        }
    ));
}

#[test]
fn the_example_file_validates() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/sluice.toml");
    if let Err(e) = sluice_config::load(&path) {
        panic!("examples/sluice.toml does not validate:\n{e}");
    }
}

#[test]
fn a_missing_file_is_one_error() {
    let err = match sluice_config::load(Path::new("/nonexistent/sluice.toml")) {
        Ok(_) => panic!("expected an error"),
        Err(e) => e,
    };
    assert_eq!(err.0.len(), 1);
    assert!(err
        .to_string()
        .starts_with("/nonexistent/sluice.toml:1:1: cannot read file: "));
}
