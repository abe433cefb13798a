//! The exact `file:line:col: key: message` lines `sluice_config::parse` gives for each
//! kind of problem.

mod common;

use common::{config, errors};

// ---- unknown keys ----------------------------------------------------------------

#[test]
fn unknown_top_level_table_suggests_the_close_one() {
    let src = r#"[sever]
listen = ["127.0.0.1:8080"]
"#;
    assert_eq!(
        errors(src),
        ["test.toml:1:2: sever: unknown key `sever` (did you mean `server`?)"]
    );
}

#[test]
fn unknown_top_level_key_lists_the_known_ones() {
    let src = r#"[server]
listen = ["127.0.0.1:8080"]

[[routes]]
name = "a"
path = "/"
respond = {}

[colour]
"#;
    assert_eq!(
        errors(src),
        ["test.toml:9:2: colour: unknown key `colour`; expected one of: server, admin, clusters, middleware, routes, redis"]
    );
}

#[test]
fn unknown_array_table_is_named_with_its_index() {
    let src = r#"[[route]]
name = "a"
"#;
    assert_eq!(
        errors(src),
        ["test.toml:1:3: route[0]: unknown key `route` (did you mean `routes`?)"]
    );
}

#[test]
fn unknown_key_in_server() {
    let src = r#"[server]
listen = ["127.0.0.1:8080"]
thread = 4
"#;
    assert_eq!(
        errors(src),
        ["test.toml:3:1: server.thread: unknown key `thread` (did you mean `threads`?)"]
    );
}

#[test]
fn unknown_table_in_server() {
    let src = r#"[server]
listen = ["127.0.0.1:8080"]

[server.tsl]
cert = "cert.pem"
"#;
    assert_eq!(
        errors(src),
        ["test.toml:4:9: server.tsl: unknown key `tsl` (did you mean `tls`?)"]
    );
    let src = r#"[server.tls]
cert = "cert.pem"
"#;
    assert_eq!(
        errors(src),
        ["test.toml:2:1: server.tls.cert: unknown key `cert`; expected one of: listen, certificates, min_version, alpn, client_auth, client_ca, client_subject_header, redirect_http, watch_certificates"]
    );
}

#[test]
fn unknown_key_in_server_limits() {
    let src = r#"[server.limits]
max_header = 10
"#;
    assert_eq!(
        errors(src),
        ["test.toml:2:1: server.limits.max_header: unknown key `max_header` (did you mean `max_headers`?)"]
    );
}

#[test]
fn unknown_key_in_admin() {
    let src = r#"[admin]
enable = false
"#;
    assert_eq!(
        errors(src),
        ["test.toml:2:1: admin.enable: unknown key `enable` (did you mean `enabled`?)"]
    );
}

#[test]
fn unknown_key_in_the_second_route_is_indexed_1() {
    let src = r#"[clusters.api]
targets = ["http://127.0.0.1:8001"]

[[routes]]
name = "a"
path = "/a"
cluster = "api"

[[routes]]
name = "b"
path = "/b"
clustr = "api"
"#;
    assert_eq!(
        errors(src),
        ["test.toml:12:1: routes[1].clustr: unknown key `clustr` (did you mean `cluster`?)"]
    );
}

#[test]
fn unknown_key_in_an_inline_respond_table() {
    let src = r#"[[routes]]
name = "a"
path = "/a"
respond = { status = 200 }

[[routes]]
name = "b"
path = "/b"
respond = { status = 200, bdy = "hi" }
"#;
    assert_eq!(
        errors(src),
        ["test.toml:9:27: routes[1].respond.bdy: unknown key `bdy` (did you mean `body`?)"]
    );
}

#[test]
fn unknown_key_in_a_cluster() {
    let src = r#"[clusters.users]
targets = ["http://127.0.0.1:8001"]
balanse = "random"
"#;
    assert_eq!(
        errors(src),
        ["test.toml:3:1: clusters.users.balanse: unknown key `balanse` (did you mean `balance`?)"]
    );
}

#[test]
fn unknown_key_in_a_weighted_target() {
    let src = r#"[clusters.users]
targets = [
  "http://127.0.0.1:8001",
  { url = "http://127.0.0.1:8002", wieght = 3 },
]
"#;
    assert_eq!(
        errors(src),
        ["test.toml:4:36: clusters.users.targets.wieght: unknown key `wieght` (did you mean `weight`?)"]
    );
}

#[test]
fn missing_targets_names_the_cluster() {
    let src = r#"[server]
threads = 2

[clusters.users]
balance = "random"
"#;
    assert_eq!(
        errors(src),
        ["test.toml:4:1: clusters.users: missing field `targets`"]
    );
}

#[test]
fn wrong_types_name_what_is_expected() {
    assert_eq!(
        errors("[server]\nthreads = \"4\"\n"),
        ["test.toml:2:11: server.threads: invalid type: string \"4\", expected i64"]
    );
    assert_eq!(
        errors("[server.limits]\nmax_uri_size = true\n"),
        ["test.toml:2:16: server.limits.max_uri_size: invalid type: boolean `true`, expected a size like \"64KiB\" or a number of bytes"]
    );
    assert_eq!(
        errors("[clusters.c]\ntargets = [8001]\n"),
        ["test.toml:2:12: clusters.c.targets: invalid type: integer `8001`, expected a target URL or a table like { url = \"http://host:port\", weight = 2 }"]
    );
}

// ---- references and duplicates ---------------------------------------------------

#[test]
fn undefined_cluster_suggests_the_close_one() {
    let src = r#"[clusters.users]
targets = ["http://127.0.0.1:8001"]

[[routes]]
name = "users"
path = "/users"
cluster = "user"
"#;
    assert_eq!(
        errors(src),
        ["test.toml:7:11: routes[0].cluster: no cluster named `user` (did you mean `users`?)"]
    );
}

#[test]
fn undefined_cluster_with_nothing_close() {
    let src = r#"[clusters.users]
targets = ["http://127.0.0.1:8001"]

[[routes]]
name = "orders"
path = "/orders"
cluster = "orders"
"#;
    assert_eq!(
        errors(src),
        ["test.toml:7:11: routes[0].cluster: no cluster named `orders`"]
    );
}

#[test]
fn duplicate_route_names() {
    let src = r#"[[routes]]
name = "hello"
path = "/a"
respond = {}

[[routes]]
name = "hello"
path = "/b"
respond = {}
"#;
    assert_eq!(
        errors(src),
        ["test.toml:7:8: routes[1].name: duplicate route name `hello` (first defined at line 1)"]
    );
}

#[test]
fn duplicate_route_name_is_reported_beside_other_problems_of_that_route() {
    let src = r#"[[routes]]
name = "hello"
path = "/a"
respond = {}

[[routes]]
name = "hello"
path = "/b"
cluster = "nowhere"
"#;
    assert_eq!(
        errors(src),
        [
            "test.toml:7:8: routes[1].name: duplicate route name `hello` (first defined at line 1)",
            "test.toml:9:11: routes[1].cluster: no cluster named `nowhere`",
        ]
    );
}

#[test]
fn same_host_method_and_path() {
    let src = r#"[[routes]]
name = "get-users"
path = "/users/{id}"
methods = ["GET", "HEAD"]
hosts = ["api.example.com"]
respond = {}

[[routes]]
name = "all-users"
path = "/users/{id}"
hosts = ["API.example.com", "www.example.com"]
respond = {}
"#;
    assert_eq!(
        errors(src),
        ["test.toml:10:8: routes[1]: route `all-users` has the same host, method and path as route `get-users` (line 1)"]
    );
}

#[test]
fn same_path_with_other_methods_or_hosts_is_fine() {
    let src = r#"[[routes]]
name = "get"
path = "/users"
methods = ["GET"]
respond = {}

[[routes]]
name = "post"
path = "/users"
methods = ["POST"]
respond = {}

[[routes]]
name = "other-host"
path = "/users"
hosts = ["other.example.com"]
respond = {}

[[routes]]
name = "prefix"
prefix = "/users"
respond = {}
"#;
    assert_eq!(config(src).routes.len(), 4);
}

// ---- values ------------------------------------------------------------------------

#[test]
fn a_zero_send_timeout_is_refused() {
    let src = "[server.limits]\nsend_timeout = \"0s\"\n\n[[routes]]\nname = \"a\"\npath = \"/\"\nrespond = {}\n";
    assert_eq!(
        errors(src),
        ["test.toml:2:16: server.limits.send_timeout: must be longer than 0"]
    );
}

#[test]
fn unparsable_durations() {
    let src = r#"[server]
shutdown_grace = "30 sec"

[server.limits]
header_read_timeout = "fast"
keepalive_timeout = "1 min"
send_timeout = "-1s"

[[routes]]
name = "a"
path = "/"
respond = {}
timeout = "30"
"#;
    assert_eq!(
        errors(src),
        [
            "test.toml:2:18: server.shutdown_grace: invalid duration `30 sec`: unknown unit `sec` (use ms, s, m or h)",
            "test.toml:5:23: server.limits.header_read_timeout: invalid duration `fast`: expected a number and a unit, like \"250ms\", \"30s\" or \"5m\"",
            "test.toml:6:21: server.limits.keepalive_timeout: invalid duration `1 min`: unknown unit `min` (use ms, s, m or h)",
            "test.toml:7:16: server.limits.send_timeout: invalid duration `-1s`: expected a number and a unit, like \"250ms\", \"30s\" or \"5m\"",
            "test.toml:13:11: routes[0].timeout: invalid duration `30`: missing unit (ms, s, m or h)",
        ]
    );
}

#[test]
fn unparsable_sizes() {
    let src = r#"[server.limits]
max_uri_size = "lots"
max_header_size = "10 parsecs"
"#;
    assert_eq!(
        errors(src),
        [
            "test.toml:2:16: server.limits.max_uri_size: invalid size `lots`: expected a number and a unit, like \"64KiB\" or \"10MiB\"",
            "test.toml:3:19: server.limits.max_header_size: invalid size `10 parsecs`: unknown unit `parsecs` (use B, KiB, MiB, GiB, KB, MB or GB)",
        ]
    );
    assert_eq!(
        errors("[server.limits]\nmax_uri_size = 0\n"),
        ["test.toml:2:16: server.limits.max_uri_size: must be greater than 0"]
    );
    assert_eq!(
        errors("[server.limits]\nmax_uri_size = -1\n"),
        ["test.toml:2:16: server.limits.max_uri_size: invalid size `-1`: must not be negative"]
    );
}

#[test]
fn unparsable_target_urls() {
    let src = r#"[clusters.c]
targets = [
  "http://127.0.0.1:8001",
  "ftp://files.example.com",
  "https://127.0.0.1:8443",
  "127.0.0.1:8002",
  "unix:run/app.sock",
  "http://127.0.0.1:8003/api",
  { url = "tunnel:laptop", weight = 2 },
]
"#;
    assert_eq!(
        errors(src),
        [
            "test.toml:4:3: clusters.c.targets[1]: invalid target URL `ftp://files.example.com`: expected http://host:port, https://host:port or unix:/path.sock",
            "test.toml:6:3: clusters.c.targets[3]: invalid target URL `127.0.0.1:8002`: expected http://host:port, https://host:port or unix:/path.sock",
            "test.toml:7:3: clusters.c.targets[4]: invalid target URL `unix:run/app.sock`: a unix target needs an absolute path, like \"unix:/run/app.sock\"",
            "test.toml:8:3: clusters.c.targets[5]: invalid target URL `http://127.0.0.1:8003/api`: a target URL has no path or query",
            "test.toml:9:3: clusters.c.targets[6]: invalid target URL `tunnel:laptop`: expected http://host:port, https://host:port or unix:/path.sock",
        ]
    );
}

#[test]
fn unparsable_socket_addresses() {
    let src = r#"[server]
listen = ["127.0.0.1:8080", "localhost:8080"]

[admin]
listen = "127.0.0.1"
"#;
    assert_eq!(
        errors(src),
        [
            "test.toml:2:29: server.listen[1]: invalid socket address `localhost:8080`: expected IP:PORT, like \"127.0.0.1:8080\" or \"[::1]:8080\"",
            "test.toml:5:10: admin.listen: invalid socket address `127.0.0.1`: expected IP:PORT, like \"127.0.0.1:8080\" or \"[::1]:8080\"",
        ]
    );
}

#[test]
fn admin_listen_is_checked_even_when_admin_is_off() {
    let src = r#"[admin]
enabled = false
listen = "0.0.0.0"
"#;
    assert_eq!(
        errors(src),
        ["test.toml:3:10: admin.listen: invalid socket address `0.0.0.0`: expected IP:PORT, like \"127.0.0.1:8080\" or \"[::1]:8080\""]
    );
}

#[test]
fn no_listener_at_all() {
    assert_eq!(
        errors("[server]\nlisten = []\n"),
        ["test.toml:2:10: server.listen: no listener: give at least one address here or in server.unix"]
    );
}

#[test]
fn upgrade_socket_must_be_a_path_of_its_own() {
    assert_eq!(
        errors("[server]\nupgrade_socket = \"\"\n"),
        ["test.toml:2:18: server.upgrade_socket: must not be empty; leave the key out to turn upgrades off"]
    );
    assert_eq!(
        errors("[server]\nunix = [\"/run/s.sock\"]\nupgrade_socket = \"/run/s.sock\"\n"),
        ["test.toml:3:18: server.upgrade_socket: must differ from every server.unix path"]
    );
    let ok = config("[server]\nupgrade_socket = \"/run/sluice/upgrade.sock\"\n");
    assert_eq!(
        ok.server.upgrade_socket.as_deref(),
        Some(std::path::Path::new("/run/sluice/upgrade.sock"))
    );
    assert_eq!(config("[server]\n").server.upgrade_socket, None);
}

#[test]
fn empty_target_list() {
    let src = r#"[clusters.users]
targets = []
"#;
    assert_eq!(
        errors(src),
        ["test.toml:2:11: clusters.users.targets: a cluster needs at least one target"]
    );
}

#[test]
fn weight_zero() {
    let src = r#"[clusters.users]
targets = [{ url = "http://127.0.0.1:8001", weight = 0 }]
"#;
    assert_eq!(
        errors(src),
        ["test.toml:2:12: clusters.users.targets[0].weight: weight must be a whole number of at least 1, got 0"]
    );
}

#[test]
fn unknown_balance_and_bad_hash_key() {
    let src = r#"[clusters.a]
targets = ["http://127.0.0.1:8001"]
balance = "roundrobin"

[clusters.b]
targets = ["http://127.0.0.1:8002"]
balance = "hash"

[clusters.c]
targets = ["http://127.0.0.1:8003"]
balance = "hash"
hash_key = "header"

[clusters.d]
targets = ["http://127.0.0.1:8004"]
balance = "sticky"
sticky_cookie = "a=b"
"#;
    assert_eq!(
        errors(src),
        [
            "test.toml:3:11: clusters.a.balance: unknown balance `roundrobin` (did you mean `round_robin`?); expected one of: round_robin, random, least_conn, weighted, hash, sticky",
            "test.toml:7:11: clusters.b.balance: balance = \"hash\" needs a hash_key",
            "test.toml:12:12: clusters.c.hash_key: invalid hash_key `header`: expected header:NAME, cookie:NAME, query:NAME, ip or path",
            "test.toml:17:17: clusters.d.sticky_cookie: not a valid cookie name",
        ]
    );
}

#[test]
fn a_cluster_name_that_is_not_a_bare_key_is_quoted() {
    let src = r#"[clusters."users.v2"]
targets = []
"#;
    assert_eq!(
        errors(src),
        ["test.toml:2:11: clusters.\"users.v2\".targets: a cluster needs at least one target"]
    );
}

#[test]
fn bad_route_shapes() {
    let src = r#"[[routes]]
path = "/no-name"
respond = {}

[[routes]]
name = "both"
path = "/a"
prefix = "/a"
respond = {}

[[routes]]
name = "neither"
path = "/b/{*rest}/c"

[[routes]]
name = "params"
path = "/c/{id}"
methods = ["GET", "G E T"]
hosts = ["api.example.com:8080"]
rewrite = "/d/{name}"
respond = { status = 99, headers = { "bad header" = "x" } }
"#;
    assert_eq!(
        errors(src),
        [
            "test.toml:1:1: routes[0]: a route needs a `name`",
            "test.toml:7:8: routes[1]: give either `path` or `prefix`, not both",
            "test.toml:11:1: routes[2]: a route needs a `cluster` or a `respond`",
            "test.toml:13:8: routes[2].path: invalid path `/b/{*rest}/c`: `{*rest}` must be the last segment",
            "test.toml:18:19: routes[3].methods: invalid method `G E T`",
            "test.toml:19:10: routes[3].hosts: invalid host `api.example.com:8080`: expected a name like `api.example.com` or `*.example.com`",
            "test.toml:20:11: routes[3].rewrite: invalid rewrite `/d/{name}`: `{name}` is not a parameter of the route's path",
            "test.toml:21:11: routes[3].respond.status: invalid status 99: expected 200 to 999",
        ]
    );
}

// ---- many problems -----------------------------------------------------------------

#[test]
fn several_problems_are_all_reported_in_file_order() {
    let src = r#"[server]
listen = ["127.0.0.1:8080", "localhost:80"]
shutdown_grace = "soon"

[admin]
listen = "127.0.0.1"

[clusters.users]
targets = []

[clusters.api]
targets = ["http://127.0.0.1:8001", { url = "http://127.0.0.1:8002", weight = 0 }]
balance = "round-robin"

[[routes]]
name = "a"
path = "/a"
cluster = "apii"

[[routes]]
name = "a"
path = "/b/{id}"
rewrite = "/{ident}"
cluster = "api"
timeout = "10"
"#;
    let err = match sluice_config::parse(src, "test.toml") {
        Ok(_) => panic!("expected errors"),
        Err(e) => e,
    };
    assert_eq!(
        err.to_string(),
        "\
test.toml:2:29: server.listen[1]: invalid socket address `localhost:80`: expected IP:PORT, like \"127.0.0.1:8080\" or \"[::1]:8080\"
test.toml:3:18: server.shutdown_grace: invalid duration `soon`: expected a number and a unit, like \"250ms\", \"30s\" or \"5m\"
test.toml:6:10: admin.listen: invalid socket address `127.0.0.1`: expected IP:PORT, like \"127.0.0.1:8080\" or \"[::1]:8080\"
test.toml:9:11: clusters.users.targets: a cluster needs at least one target
test.toml:12:37: clusters.api.targets[1].weight: weight must be a whole number of at least 1, got 0
test.toml:13:11: clusters.api.balance: unknown balance `round-robin` (did you mean `round_robin`?); expected one of: round_robin, random, least_conn, weighted, hash, sticky
test.toml:18:11: routes[0].cluster: no cluster named `apii` (did you mean `api`?)
test.toml:21:8: routes[1].name: duplicate route name `a` (first defined at line 15)
test.toml:23:11: routes[1].rewrite: invalid rewrite `/{ident}`: `{ident}` is not a parameter of the route's path
test.toml:25:11: routes[1].timeout: invalid duration `10`: missing unit (ms, s, m or h)"
    );
    assert_eq!(err.0.len(), 10);
    assert!(err.0.iter().all(|e| e.file == "test.toml"));
}

// ---- good files --------------------------------------------------------------------

#[test]
fn tls_settings_are_checked_with_their_keys() {
    let src = r#"[server.tls]
listen = ["127.0.0.1:8443"]
certificates = []
min_version = "1.1"
alpn = ["spdy"]
client_auth = "required"
"#;
    assert_eq!(
        errors(src),
        [
            "test.toml:3:16: server.tls.certificates: give at least one certificate",
            "test.toml:4:15: server.tls.min_version: unknown TLS version `1.1`; expected \"1.2\" or \"1.3\"",
            "test.toml:5:9: server.tls.alpn[0]: unknown protocol `spdy`; expected \"h2\" or \"http/1.1\"",
            "test.toml:6:15: server.tls.client_auth: client certificates need `client_ca`, the CA that issues them",
        ]
    );
    assert_eq!(
        errors("[server.tls]\ncertificates = [{ cert = \"/nonexistent/a.pem\", key = \"/nonexistent/a.key\" }]\n"),
        [
            "test.toml:1:1: server.tls: [server.tls] needs `listen`, like listen = [\"0.0.0.0:443\"]",
            "test.toml:2:26: server.tls.certificates[0].cert: cannot read /nonexistent/a.pem: No such file or directory (os error 2)",
            "test.toml:2:54: server.tls.certificates[0].key: cannot read /nonexistent/a.key: No such file or directory (os error 2)",
        ]
    );
}

#[test]
fn upstream_tls_settings_are_checked_with_their_keys() {
    let src = r#"[clusters.plain]
targets = ["http://127.0.0.1:8001"]
[clusters.plain.tls]
server_name = "a.test"

[clusters.secure]
targets = ["https://10.0.0.7", "https://10.0.0.8:8443"]
[clusters.secure.tls]
ca = "/nonexistent/ca.pem"
server_name = "bad name"
client_cert = "/nonexistent/c.pem"
insecure_skip_verify = true
"#;
    assert_eq!(
        errors(src),
        [
            "test.toml:3:1: clusters.plain.tls: no target of this cluster is https://, so these settings would do nothing",
            "test.toml:9:6: clusters.secure.tls.ca: cannot read /nonexistent/ca.pem: No such file or directory (os error 2)",
            "test.toml:9:6: clusters.secure.tls.ca: a CA is never consulted with insecure_skip_verify = true; remove one of them",
            "test.toml:10:15: clusters.secure.tls.server_name: `bad name` is not a host name or IP address",
            "test.toml:11:15: clusters.secure.tls: client_cert and client_key go together",
        ]
    );
    let c = config("[clusters.s]\ntargets = [\"https://api.example.com\"]\n");
    assert_eq!(
        c.clusters[0].targets[0].address,
        sluice_config::TargetAddress::Https {
            host: "api.example.com".into(),
            port: 443,
            authority: "api.example.com:443".into()
        }
    );
    assert!(
        c.clusters[0].tls.is_some(),
        "https targets get TLS settings by default"
    );
}
