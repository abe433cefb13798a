//! The exact error lines for `[middleware.NAME]` blocks and the lists that attach them, and what a valid block becomes.

mod common;

use common::{config, errors};
use http::HeaderName;
use sluice_config::{
    Algorithm, ClaimValue, JwtAlgorithm, JwtKeys, LimitKey, MiddlewareKind, OnStoreError,
    OriginPattern, Secret, Store, TokenSource,
};
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
            "test.toml:27:8: middleware.f.type: unknown middleware type `magic`; expected one of ip, headers, cors, api_key, jwt, rate_limit",
            "test.toml:32:9: middleware.g.store: the redis store needs a [redis] table with the server's url, like url = \"redis://127.0.0.1:6379\"",
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

#[test]
fn jwt_blocks_are_checked_with_their_keys() {
    let src = r#"[middleware.a]
type = "jwt"
algorithms = ["none", "RS256", "RS256", "rs512"]
jwks_url = "ftp://idp.example.com/jwks"
consumers = { x = ["y"] }

[middleware.b]
type = "jwt"
algorithms = ["RS256", "HS256"]
secret = "too-short"

[middleware.c]
type = "jwt"
algorithms = ["HS512"]
jwks_url = "https://idp.example.com/jwks.json"
public_keys = ["keys/a.pem"]

[middleware.d]
type = "jwt"
algorithms = ["ES256"]
jwks_url = "http://idp.example.com/jwks.json"
jwks_ca = "nope/ca.pem"
jwks_refresh = "10m"
jwks_max_stale = "1m"
leeway = "10m"
token_from = ["header:authorization", "body:token", "cookie:"]
audience = []
require_scopes = ["orders read"]
forward_claims = { sub = "authorization", email = "x-user", name = "x-user", bad = "content-length" }

[middleware.e]
type = "jwt"
secret = "${SLUICE_TEST_UNSET_JWT_SECRET}"
jwks_refresh = "1m"

[middleware.f]
type = "jwt"
algorithms = ["EdDSA"]
public_keys = []
issuer = ""
"#;
    assert_eq!(
        errors(src),
        [
            "test.toml:3:15: middleware.a.algorithms[0]: `none` is an unsigned token, which is never accepted",
            "test.toml:3:32: middleware.a.algorithms[2]: `RS256` is listed twice",
            "test.toml:3:41: middleware.a.algorithms[3]: unknown algorithm `rs512`; expected one of HS256, HS384, HS512, RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, EdDSA",
            "test.toml:4:12: middleware.a.jwks_url: invalid JWKS URL `ftp://idp.example.com/jwks`: expected an http:// or https:// URL with a host, like \"https://idp.example.com/.well-known/jwks.json\"",
            "test.toml:5:13: middleware.a.consumers: `consumers` does not apply to type `jwt`; its keys are: algorithms, secret, public_keys, jwks_url, jwks_ca, jwks_refresh, jwks_max_stale, issuer, audience, leeway, token_from, require_claims, require_scopes, require_roles, forward_claims, hide_credentials",
            "test.toml:9:15: middleware.b.algorithms[0]: `RS256` is verified with a public key, not a `secret`; a secret verifies HS256, HS384 and HS512 only",
            "test.toml:10:10: middleware.b.secret: a secret must be at least 32 bytes long",
            "test.toml:16:15: middleware.c.public_keys: give only one of `jwks_url`, `secret` and `public_keys`",
            "test.toml:22:11: middleware.d.jwks_ca: `jwks_ca` only applies to an https:// jwks_url",
            "test.toml:22:11: middleware.d.jwks_ca: cannot read nope/ca.pem: No such file or directory (os error 2)",
            "test.toml:24:18: middleware.d.jwks_max_stale: must be at least jwks_refresh (10m), or the keys would expire between two refreshes",
            "test.toml:25:10: middleware.d.leeway: must be at most 5m",
            "test.toml:26:39: middleware.d.token_from[1]: invalid token source `body:token`: expected \"header:NAME\", \"cookie:NAME\" or \"query:NAME\"",
            "test.toml:26:53: middleware.d.token_from[2]: invalid token source `cookie:`: expected \"header:NAME\", \"cookie:NAME\" or \"query:NAME\"",
            "test.toml:27:12: middleware.d.audience: must list at least one audience; leave the key out not to check `aud`",
            "test.toml:28:19: middleware.d.require_scopes[0]: a scope is one word, without spaces",
            "test.toml:29:26: middleware.d.forward_claims.sub: `authorization` is removed from every request the gateway receives, so it cannot also carry tokens, hosts, credentials or cookies; pick a header of its own, like x-user-id",
            "test.toml:29:68: middleware.d.forward_claims.name: `x-user` already carries claim `email`",
            "test.toml:29:84: middleware.d.forward_claims.bad: `content-length` belongs to the connection's framing and cannot be changed",
            "test.toml:31:1: middleware.e: a jwt middleware needs `algorithms`, the only signing algorithms it accepts, like algorithms = [\"RS256\"]",
            "test.toml:33:10: middleware.e.secret: environment variable `SLUICE_TEST_UNSET_JWT_SECRET` is not set",
            "test.toml:34:16: middleware.e.jwks_refresh: `jwks_refresh` only applies with `jwks_url`",
            "test.toml:39:15: middleware.f.public_keys: must list at least one PEM file",
            "test.toml:40:10: middleware.f.issuer: must not be empty",
        ]
    );
}

#[test]
fn a_claim_keyed_limit_needs_a_jwt_before_it() {
    let src = r#"[middleware.auth]
type = "jwt"
algorithms = ["HS256"]
secret = "0123456789abcdef0123456789abcdef"

[middleware.per-user]
type = "rate_limit"
rate = 10
key = "claim:sub"

[middleware.bad-key]
type = "rate_limit"
rate = 10
key = "claim:"

[[routes]]
name = "ok"
path = "/ok"
respond = { status = 200 }
middleware = ["auth", "per-user"]

[[routes]]
name = "backwards"
path = "/backwards"
respond = { status = 200 }
middleware = ["per-user", "auth"]
"#;
    assert_eq!(
        errors(src),
        [
            "test.toml:14:7: middleware.bad-key.key: invalid key `claim:`: expected ip, route, consumer, header:NAME or claim:NAME",
            "test.toml:26:15: routes[1].middleware[0]: rate limit `per-user` counts per claim `sub`, so a jwt middleware must come before it",
        ]
    );
}

#[test]
fn a_valid_jwt_block_keeps_every_setting() {
    // A variable of its own: tests run in parallel in one process.
    std::env::set_var(
        "SLUICE_TEST_JWT_SECRET",
        "a-shared-secret-of-more-than-32-bytes",
    );
    let pem = std::env::temp_dir().join(format!("sluice-jwt-test-{}.pem", std::process::id()));
    std::fs::write(&pem, "not checked until the gateway loads it").expect("write pem");
    let c = config(&format!(
        r#"[server]
middleware = ["idp"]

[middleware.idp]
type = "jwt"
algorithms = ["RS256", "ES256", "EdDSA"]
jwks_url = "https://idp.example.com/.well-known/jwks.json"
issuer = "https://idp.example.com/"
audience = ["api", "admin"]
leeway = "1m"
token_from = ["header:authorization", "cookie:session", "query:access_token", "header:x-token"]
require_claims = {{ tenant = "acme", level = 3, staff = true }}
require_scopes = ["orders:read"]
require_roles = ["admin", "support"]
forward_claims = {{ sub = "x-user-id", email = "X-User-Email" }}
hide_credentials = true

[middleware.shared]
type = "jwt"
algorithms = ["HS384"]
secret = "${{SLUICE_TEST_JWT_SECRET}}"

[middleware.files]
type = "jwt"
algorithms = ["PS256"]
public_keys = ["{}"]

[middleware.per-user]
type = "rate_limit"
rate = 5
key = "claim:sub"

[[routes]]
name = "r"
path = "/"
respond = {{ status = 200 }}
middleware = ["per-user"]
"#,
        pem.display()
    ));
    let _ = std::fs::remove_file(&pem);
    let jwt = |name: &str| match &c
        .middleware
        .iter()
        .find(|m| m.name == name)
        .expect(name)
        .kind
    {
        MiddlewareKind::Jwt(j) => j.clone(),
        other => panic!("{other:?}"),
    };
    let idp = jwt("idp");
    assert_eq!(
        idp.algorithms,
        [
            JwtAlgorithm::RS256,
            JwtAlgorithm::ES256,
            JwtAlgorithm::EdDSA
        ]
    );
    let JwtKeys::Jwks(jwks) = &idp.keys else {
        panic!("{:?}", idp.keys)
    };
    assert_eq!(
        jwks.url.to_string(),
        "https://idp.example.com/.well-known/jwks.json"
    );
    assert_eq!(
        (jwks.refresh, jwks.max_stale, jwks.ca.is_none()),
        (Duration::from_secs(300), Duration::from_secs(3600), true)
    );
    assert_eq!(idp.issuer.as_deref(), Some("https://idp.example.com/"));
    assert_eq!(idp.audience, ["api", "admin"]);
    assert_eq!(idp.leeway, Duration::from_secs(60));
    assert_eq!(
        idp.token_from,
        [
            TokenSource::Header(HeaderName::from_static("authorization")),
            TokenSource::Cookie("session".into()),
            TokenSource::Query("access_token".into()),
            TokenSource::Header(HeaderName::from_static("x-token")),
        ]
    );
    assert_eq!(
        idp.require_claims,
        [
            ("level".to_string(), ClaimValue::Integer(3)),
            ("staff".to_string(), ClaimValue::Bool(true)),
            ("tenant".to_string(), ClaimValue::Text("acme".into())),
        ]
    );
    assert_eq!(idp.require_scopes, ["orders:read"]);
    assert_eq!(idp.require_roles, ["admin", "support"]);
    assert_eq!(
        idp.forward_claims,
        [
            ("email".to_string(), HeaderName::from_static("x-user-email")),
            ("sub".to_string(), HeaderName::from_static("x-user-id")),
        ]
    );
    assert!(idp.hide_credentials);

    let shared = jwt("shared");
    assert_eq!(
        shared.keys,
        JwtKeys::Secret(Secret::new(
            b"a-shared-secret-of-more-than-32-bytes".to_vec()
        ))
    );
    assert_eq!(shared.leeway, Duration::from_secs(30));
    assert_eq!(
        shared.token_from,
        [TokenSource::Header(HeaderName::from_static(
            "authorization"
        ))]
    );
    assert!(!shared.hide_credentials);
    assert_eq!(jwt("files").keys, JwtKeys::PublicKeys(vec![pem]));
    let limit = c.middleware.iter().find(|m| m.name == "per-user");
    assert!(matches!(
        limit.map(|m| &m.kind),
        Some(MiddlewareKind::RateLimit(l)) if l.key == LimitKey::Claim("sub".into())
    ));
    // A refresh longer than the default max_stale makes max_stale follow it.
    let c = config(
        "[middleware.m]\ntype = \"jwt\"\nalgorithms = [\"RS256\"]\njwks_url = \"http://127.0.0.1:1/k\"\njwks_refresh = \"2h\"\n",
    );
    let MiddlewareKind::Jwt(j) = &c.middleware[0].kind else {
        panic!()
    };
    assert!(matches!(&j.keys, JwtKeys::Jwks(s) if s.max_stale == Duration::from_secs(7200)));
}
