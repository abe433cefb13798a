//! The exact error lines for `[middleware.NAME]` blocks and the lists that attach them, and what a valid block becomes.

mod common;

use common::{config, errors};
use sluice_config::{Algorithm, LimitKey, MiddlewareKind, OnStoreError, OriginPattern, Store};
use std::time::Duration;

#[test]
fn every_block_is_checked_with_its_key() {
    let src = r#"[server]
middleware = ["nope"]
trusted_proxies = ["10.0.0.1/8"]

[middleware.a]
type = "ip"
burst = 3

[middleware.b]
type = "rate_limit"
rate = 0

[middleware.c]
type = "cors"
allow_origins = ["*"]
allow_credentials = true

[middleware.d]
type = "api_key"
consumers = { alice = ["short"] }

[middleware.e]
type = "headers"
request = { set = { "content-length" = "1", "x-a" = "{who}" } }

[middleware.f]
type = "magic"

[middleware.g]
type = "rate_limit"
rate = 5
store = "redis"
key = "claim:sub"

[[routes]]
name = "r"
path = "/"
respond = { status = 200 }
middleware = ["b", "g"]
"#;
    assert_eq!(
        errors(src),
        [
            "test.toml:2:15: server.middleware[0]: no middleware named `nope` (defined: a, b, c, d, e, f, g)",
            "test.toml:3:20: server.trusted_proxies[0]: invalid address block `10.0.0.1/8`: host bits are set; the block is 10.0.0.0/8",
            "test.toml:5:1: middleware.a: an ip middleware needs `allow`, `deny` or both",
            "test.toml:7:9: middleware.a.burst: `burst` does not apply to type `ip`; its keys are: allow, deny",
            "test.toml:11:8: middleware.b.rate: must be a whole number of at least 1",
            "test.toml:16:21: middleware.c.allow_credentials: browsers refuse credentials with any origin (\"*\"); list the allowed origins",
            "test.toml:20:24: middleware.d.consumers.alice[0]: an API key must be at least 8 characters long",
            "test.toml:24:40: middleware.e.request.set.content-length: `content-length` belongs to the connection's framing and cannot be changed",
            "test.toml:24:53: middleware.e.request.set.x-a: unknown placeholder `{who}`; expected client_ip, request_id, route, consumer or claim.NAME",
            "test.toml:27:8: middleware.f.type: unknown middleware type `magic`; expected one of ip, headers, cors, api_key, rate_limit",
            "test.toml:32:9: middleware.g.store: the redis store needs a [redis] table with the server's url, like url = \"redis://127.0.0.1:6379\"",
            "test.toml:33:7: middleware.g.key: `claim:sub` counts per JWT claim, which needs a jwt middleware; jwt is not available in this version",
        ]
    );
}

#[test]
fn attaching_checks_names_order_and_repeats() {
    let src = r#"[server]
middleware = ["limit"]

[middleware.keys]
type = "api_key"
consumers = { alice = ["alice-key-1"] }

[middleware.dup]
type = "api_key"
consumers = { alice = ["alice-key-1"], bob = ["alice-key-1"] }

[middleware.limit]
type = "rate_limit"
rate = 10
key = "consumer"

[[routes]]
name = "r"
path = "/"
respond = { status = 200 }
middleware = ["keys", "limit", "keys"]
"#;
    assert_eq!(
        errors(src),
        [
            "test.toml:2:15: server.middleware[0]: rate limit `limit` counts per consumer, so an api_key middleware must come before it",
            "test.toml:10:47: middleware.dup.consumers.bob[0]: the same key is already given to consumer `alice`",
            "test.toml:21:23: routes[0].middleware[1]: middleware `limit` is attached twice (server.middleware runs it on every route)",
            "test.toml:21:32: routes[0].middleware[2]: middleware `keys` is attached twice",
        ]
    );
}

#[test]
fn valid_blocks_become_the_pipeline_of_each_route() {
    let c = config(
        r#"[server]
middleware = ["web"]
trusted_proxies = ["10.0.0.0/8", "::1"]

[middleware.web]
type = "cors"
allow_origins = ["https://*.example.com"]

[middleware.keys]
type = "api_key"
consumers = { alice = ["alice-key-1"] }

[middleware.limit]
type = "rate_limit"
algorithm = "sliding_window"
rate = 10
per = "1m"
key = "consumer"

[[routes]]
name = "api"
path = "/api"
respond = { status = 200 }
middleware = ["keys", "limit"]

[[routes]]
name = "home"
path = "/"
respond = { status = 200 }
"#,
    );
    let names = |route: usize| -> Vec<&str> {
        c.routes[route]
            .middleware
            .iter()
            .map(|&i| c.middleware[i].name.as_str())
            .collect()
    };
    assert_eq!(names(0), ["web", "keys", "limit"]);
    assert_eq!(names(1), ["web"]);
    assert_eq!(c.server.trusted_proxies.len(), 2);
    let web = c.middleware.iter().find(|m| m.name == "web").expect("web");
    let MiddlewareKind::Cors(cors) = &web.kind else {
        panic!("{web:?}")
    };
    assert!(matches!(
        &cors.origins[..],
        [OriginPattern::Subdomain { .. }]
    ));
    assert_eq!(cors.methods, ["GET", "HEAD", "POST"]);
    let limit = c
        .middleware
        .iter()
        .find(|m| m.name == "limit")
        .expect("limit");
    let MiddlewareKind::RateLimit(limit) = &limit.kind else {
        panic!("{limit:?}")
    };
    assert_eq!(limit.algorithm, Algorithm::SlidingWindow);
    assert_eq!(limit.key, LimitKey::Consumer);
    assert_eq!((limit.rate, limit.burst), (10, 10));
}

#[test]
fn the_consumer_header_cannot_be_one_clients_need() {
    assert_eq!(
        errors(
            "[middleware.k]\ntype = \"api_key\"\nconsumers = { a = [\"a-key-123\"] }\nconsumer_header = \"x-api-key\"\n"
        ),
        ["test.toml:4:19: middleware.k.consumer_header: `x-api-key` is removed from every request the gateway receives, so it cannot also carry keys, hosts, credentials or cookies; pick a header of its own, like x-consumer"]
    );
}

#[test]
fn the_redis_table_is_checked_with_its_key() {
    let src = r#"[redis]
url = "rediss://cache:6379"
timeout = "0ms"
pool = 4

[middleware.shared]
type = "rate_limit"
rate = 10
store = "redis"
on_store_error = "panic"
"#;
    assert_eq!(
        errors(src),
        ["test.toml:4:1: redis.pool: unknown key `pool`; expected one of: url, timeout"]
    );
    let src = r#"[redis]
url = "rediss://cache:6379"
timeout = "0ms"

[middleware.shared]
type = "rate_limit"
rate = 10
store = "redis"
on_store_error = "panic"
"#;
    assert_eq!(
        errors(src),
        [
            "test.toml:2:7: redis.url: invalid Redis URL `rediss://cache:6379`: TLS to Redis (rediss://) is not supported in this version; use redis://",
            "test.toml:3:11: redis.timeout: must be longer than 0",
            "test.toml:9:18: middleware.shared.on_store_error: unknown value `panic`; expected allow or deny",
        ]
    );
    assert_eq!(
        errors("[redis]\ntimeout = \"1s\"\n"),
        ["test.toml:1:1: redis: a [redis] table needs `url`, like url = \"redis://127.0.0.1:6379\""]
    );
    assert_eq!(
        errors("[redis]\nurl = \"redis://:hunter22@cache:99999/0\"\ntimeout = \"fast\"\n"),
        [
            "test.toml:2:7: redis.url: invalid Redis URL `redis://:***@cache:99999/0`: the port must be a number from 1 to 65535",
            "test.toml:3:11: redis.timeout: invalid duration `fast`: expected a number and a unit, like \"250ms\", \"30s\" or \"5m\"",
        ]
    );
    assert_eq!(
        errors("[redis]\nurl = \"${SLUICE_TEST_UNSET_REDIS_URL}\"\n"),
        ["test.toml:2:7: redis.url: environment variable `SLUICE_TEST_UNSET_REDIS_URL` is not set"]
    );
    assert_eq!(
        errors("[middleware.m]\ntype = \"rate_limit\"\nrate = 1\nstore = \"etcd\"\n"),
        ["test.toml:4:9: middleware.m.store: unknown store `etcd`; expected memory or redis"]
    );
}

#[test]
fn a_redis_backed_limit_keeps_its_settings_and_the_redis_table_its_defaults() {
    let c = config(
        r#"[redis]
url = "redis://127.0.0.1:6380/3"

[middleware.shared]
type = "rate_limit"
rate = 100
per = "1m"
store = "redis"
on_store_error = "deny"

[middleware.local]
type = "rate_limit"
rate = 5
"#,
    );
    let redis = c.redis.as_ref().expect("[redis]");
    assert_eq!(redis.url, "redis://127.0.0.1:6380/3");
    assert_eq!(redis.timeout, Duration::from_millis(50));
    let limit = |name: &str| match &c
        .middleware
        .iter()
        .find(|m| m.name == name)
        .expect(name)
        .kind
    {
        MiddlewareKind::RateLimit(l) => l.clone(),
        other => panic!("{other:?}"),
    };
    assert_eq!(
        (limit("shared").store, limit("shared").on_store_error),
        (Store::Redis, OnStoreError::Deny)
    );
    assert_eq!(
        (limit("local").store, limit("local").on_store_error),
        (Store::Memory, OnStoreError::Allow)
    );
    let c = config("[redis]\nurl = \"redis://cache\"\ntimeout = \"250ms\"\n");
    let redis = c.redis.as_ref().expect("[redis]");
    assert_eq!(redis.timeout, Duration::from_millis(250));
    assert!(config("").redis.is_none());
}
