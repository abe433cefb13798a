//! The jwt middleware against tokens minted by PyJWT (jwt_mint.py), the attacks of HARDENING.md among them, with keys from a secret, PEM files and a JWKS served here that fails, goes away and rotates.

use crate::harness::*;
use crate::idp::{acceptor, claims, keys, mint, mint_one, now, signed, Jwks, ISSUER};
use bytes::Bytes;
use http_body_util::Full;
use hyper::Request;
use serde_json::{json, Value};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

const SECRET: &str = "a-shared-secret-for-hs256-of-40-bytes!!";
const INVALID_TOKEN: &str = "Bearer error=\"invalid_token\"";

/// Middleware and routes over `app`: `/jwks` (JWKS keys, `idp_lines` added to its block),
/// `/hs` (a secret), `/files` (a PEM file, token in a cookie or the query), `/orders`
/// (claims, scopes and roles), `/limited` (a limit per `sub`), `/open` (nothing).
fn config(jwks_url: &str, idp_lines: &str, origin: &Origin) -> String {
    let pem = keys().dir.join("rs1.pub.pem");
    format!(
        r#"[middleware.idp]
type = "jwt"
algorithms = ["RS256", "PS256", "ES256", "ES384", "EdDSA"]
jwks_url = "{jwks_url}"
issuer = "{ISSUER}"
audience = ["api"]
leeway = "10s"
forward_claims = {{ sub = "x-user-id", tenant = "x-tenant" }}
{idp_lines}

[middleware.orders]
type = "jwt"
algorithms = ["RS256"]
jwks_url = "{jwks_url}"
require_claims = {{ tenant = "acme" }}
require_scopes = ["orders:read"]
require_roles = ["admin", "support"]

[middleware.shared]
type = "jwt"
algorithms = ["HS256"]
secret = "{SECRET}"

[middleware.files]
type = "jwt"
algorithms = ["RS256"]
public_keys = ["{pem}"]
token_from = ["cookie:session", "query:access_token"]
hide_credentials = true

[middleware.tag]
type = "headers"
request = {{ set = {{ "x-claim-tenant" = "t={{claim.tenant}}" }} }}

[middleware.per-user]
type = "rate_limit"
rate = 2
per = "1m"
key = "claim:sub"

[clusters.app]
targets = ["{origin}"]

[[routes]]
name = "jwks"
prefix = "/jwks"
cluster = "app"
middleware = ["idp", "tag"]

[[routes]]
name = "hs"
prefix = "/hs"
cluster = "app"
middleware = ["shared"]

[[routes]]
name = "files"
prefix = "/files"
cluster = "app"
middleware = ["files"]

[[routes]]
name = "orders"
prefix = "/orders"
cluster = "app"
middleware = ["orders"]

[[routes]]
name = "limited"
prefix = "/limited"
cluster = "app"
middleware = ["idp", "per-user"]

[[routes]]
name = "open"
prefix = "/open"
cluster = "app"
"#,
        pem = pem.display(),
        origin = origin.url(),
    )
}

/// A JWKS with the test keys but `rs2`, an echo origin and a gateway over both.
async fn setup(idp_lines: &str) -> (Jwks, Origin, Gateway) {
    let jwks = Jwks::start(&["rs1", "es", "es384", "ed"], None).await;
    let origin = Origin::echo("app").await;
    let gw = Gateway::start_with(NO_WATCH, &config(&jwks.url(), idp_lines, &origin)).await;
    (jwks, origin, gw)
}

async fn get_with(url: &str, headers: &[(&str, &str)]) -> Answer {
    let mut builder = Request::get(url);
    for (k, v) in headers {
        builder = builder.header(*k, *v);
    }
    send(
        builder.body(Full::new(Bytes::new())).expect("request"),
        false,
    )
    .await
    .unwrap_or_else(|e| panic!("GET {url}: {e}"))
}

async fn bearer(gw: &Gateway, path: &str, token: &str) -> Answer {
    get_with(
        &gw.url(path),
        &[("authorization", &format!("Bearer {token}"))],
    )
    .await
}

fn challenge(answer: &Answer) -> &str {
    answer
        .1
        .get("www-authenticate")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

/// Polls `check` every 50 ms, at most about 30 s; `what` names the awaited state.
async fn eventually<F, Fut>(gw: &Gateway, what: &str, check: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..600 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("never saw {what}; log:\n{}", gw.log());
}

#[tokio::test]
async fn tokens_minted_by_pyjwt_pass_and_their_claims_reach_the_target() {
    let (_jwks, origin, gw) = setup("").await;
    let tokens = mint(vec![
        signed("rs1", "RS256", claims(json!({}))),
        signed("rs1", "PS256", claims(json!({}))),
        signed("es", "ES256", claims(json!({}))),
        signed("es384", "ES384", claims(json!({}))),
        signed("ed", "EdDSA", claims(json!({}))),
        signed(
            "rs1",
            "RS256",
            claims(json!({"sub": "eve\r\nx-admin: true"})),
        ),
        json!({"alg": "HS256", "secret": SECRET, "claims": {"sub": "hs", "exp": now() + 600}}),
        json!({"alg": "RS256", "key": keys().dir.join("rs1.key"), "claims": {"exp": now() + 600}}),
    ])
    .await;
    for token in &tokens[..5] {
        let answer = get_with(
            &gw.url("/jwks/me"),
            &[
                ("authorization", &format!("Bearer {token}")),
                ("x-user-id", "mallory"),
            ],
        )
        .await;
        assert_eq!(answer.0, 200, "{}\n{}", text(&answer.2), gw.log());
        let at_target = seen(&answer.2);
        assert_eq!(
            at_target.headers["x-user-id"],
            ["alice"],
            "one value, the token's"
        );
        assert_eq!(at_target.header("x-tenant"), Some("acme"));
        assert_eq!(at_target.header("x-claim-tenant"), Some("t=acme"));
        assert!(
            at_target.header("authorization").is_some(),
            "kept without hide_credentials"
        );
    }
    // A claim cannot add a header line.
    let crlf = seen(&bearer(&gw, "/jwks/me", &tokens[5]).await.2);
    assert_eq!(crlf.header("x-user-id"), Some("evex-admin: true"));
    assert_eq!(crlf.header("x-admin"), None);
    // The claim headers are the gateway's on every route.
    let open = get_with(
        &gw.url("/open"),
        &[("x-user-id", "mallory"), ("x-tenant", "evil")],
    )
    .await;
    assert_eq!(
        (
            seen_header(&open, "x-user-id"),
            seen_header(&open, "x-tenant")
        ),
        (None, None)
    );

    assert_eq!(bearer(&gw, "/hs", &tokens[6]).await.0, 200);
    assert_eq!(
        bearer(&gw, "/hs", &tokens[0]).await.0,
        401,
        "RS256 is not allowed there"
    );
    // PEM keys have no kid: a token without one is checked with them. The token comes
    // from a cookie or the query, and never reaches the target.
    let pem_token = &tokens[7];
    let answer = get_with(
        &gw.url("/files/a"),
        &[("cookie", &format!("theme=dark; session={pem_token}"))],
    )
    .await;
    assert_eq!(answer.0, 200, "{}", text(&answer.2));
    assert_eq!(
        seen_header(&answer, "cookie").as_deref(),
        Some("theme=dark")
    );
    let answer = get(&gw.url(&format!("/files/a?x=1&access_token={pem_token}&y=2"))).await;
    assert_eq!(answer.0, 200, "{}", text(&answer.2));
    assert_eq!(seen(&answer.2).uri, "/files/a?x=1&y=2");
    let refused = bearer(&gw, "/files/a", pem_token).await;
    assert_eq!(refused.0, 401, "not a source there");
    // Once the last request's line is in the log, no token is.
    let id = refused
        .1
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .expect("a request id");
    assert!(
        !gw.log_with(id).await.contains(pem_token.as_str()),
        "tokens are never logged"
    );
    assert_eq!(origin.hits.load(Ordering::SeqCst), 10);
}

fn seen_header(answer: &Answer, name: &str) -> Option<String> {
    seen(&answer.2).header(name).map(str::to_string)
}

#[tokio::test]
async fn the_attacks_of_hardening_md_get_401_with_the_bearer_challenge() {
    let (_jwks, origin, gw) = setup("").await;
    let rs1_public = keys().dir.join("rs1.pub.pem");
    let cases = [
        (
            "alg none",
            json!({"attack": "none", "claims": claims(json!({})), "headers": {"kid": "rs1"}}),
            "the token's algorithm is not allowed",
        ),
        (
            "HS256 signed with the RSA public key",
            json!({"attack": "hmac_with_public_key",
            "public_key": rs1_public, "claims": claims(json!({})), "headers": {"kid": "rs1"}}),
            "the token's algorithm is not allowed",
        ),
        (
            "expired",
            signed("rs1", "RS256", claims(json!({"exp": now() - 60}))),
            "the token has expired",
        ),
        (
            "no exp",
            signed("rs1", "RS256", claims(json!({"exp": null}))),
            "the token lacks a numeric exp claim",
        ),
        (
            "nbf beyond the leeway",
            signed("rs1", "RS256", claims(json!({"nbf": now() + 60}))),
            "the token is not valid yet (nbf)",
        ),
        (
            "issued in the future",
            signed("es", "ES256", claims(json!({"iat": now() + 60}))),
            "the token was issued in the future",
        ),
        (
            "wrong iss",
            signed("rs1", "RS256", claims(json!({"iss": "https://evil.test/"}))),
            "the token's issuer is not accepted",
        ),
        (
            "wrong aud",
            signed("rs1", "RS256", claims(json!({"aud": ["web"]}))),
            "the token's audience is not accepted",
        ),
        (
            "unknown kid",
            signed("rs2", "RS256", claims(json!({}))),
            "no signing key has the token's kid",
        ),
        (
            "bad signature",
            json!({"alg": "RS256", "key": keys().dir.join("rs2.key"),
            "claims": claims(json!({})), "headers": {"kid": "rs1"}}),
            "the token's signature is not valid",
        ),
        (
            "ES256 with the Ed25519 key's kid",
            json!({"alg": "ES256", "key": keys().dir.join("es.key"),
            "claims": claims(json!({})), "headers": {"kid": "ed"}}),
            "no signing key has the token's kid",
        ),
    ];
    let tokens = mint(cases.iter().map(|(_, spec, _)| spec.clone()).collect()).await;
    let mut tried: Vec<(&str, String, &str)> = cases
        .iter()
        .zip(&tokens)
        .map(|((name, _, why), token)| (*name, token.clone(), *why))
        .collect();
    tried.push(("not a JWT", "not-a-token".into(), "the token is malformed"));
    tried.push(("garbage segments", "a.b.c".into(), "the token is malformed"));
    for (name, token, why) in &tried {
        let answer = bearer(&gw, "/jwks/x", token).await;
        assert_problem(&gw, &answer, 401, "unauthorized");
        assert_eq!(challenge(&answer), INVALID_TOKEN, "{name}");
        let problem: Value = serde_json::from_slice(&answer.2).expect("json");
        assert_eq!(problem["detail"], *why, "{name}");
    }
    // The confused token against the PEM key, where RS256 is the only algorithm.
    let confused = get_with(
        &gw.url("/files"),
        &[("cookie", &format!("session={}", tokens[1]))],
    )
    .await;
    assert_eq!((confused.0, challenge(&confused)), (401, INVALID_TOKEN));
    // No token: the bare challenge (RFC 6750 §3.1).
    for headers in [vec![], vec![("authorization", "Basic dXNlcjpwYXNz")]] {
        let answer = get_with(&gw.url("/jwks/x"), &headers).await;
        assert_problem(&gw, &answer, 401, "unauthorized");
        assert_eq!(challenge(&answer), "Bearer");
    }
    assert_eq!(
        origin.hits.load(Ordering::SeqCst),
        0,
        "nothing reached the target"
    );
    let good = mint_one(signed("rs1", "RS256", claims(json!({})))).await;
    assert_eq!(bearer(&gw, "/jwks/x", &good).await.0, 200);
}

#[tokio::test]
async fn authenticated_but_not_allowed_is_a_403() {
    let (_jwks, _origin, gw) = setup("").await;
    let with = |extra: Value| signed("rs1", "RS256", claims(extra));
    let tokens = mint(vec![
        with(json!({"scope": "orders:read profile", "roles": ["admin"]})),
        with(json!({"scp": ["orders:read"], "roles": ["user", "support"]})),
        with(json!({"scope": "orders:write", "roles": ["admin"]})),
        with(json!({"scope": "orders:read", "roles": ["user"]})),
        with(json!({"scope": "orders:read", "roles": ["admin"], "tenant": "globex"})),
    ])
    .await;
    assert_eq!(bearer(&gw, "/orders", &tokens[0]).await.0, 200);
    assert_eq!(bearer(&gw, "/orders", &tokens[1]).await.0, 200);
    for (token, why) in [
        (&tokens[2], "the token lacks scope `orders:read`"),
        (&tokens[3], "the token has none of the roles admin, support"),
        (&tokens[4], "the token's claim `tenant` is not \"acme\""),
    ] {
        let answer = bearer(&gw, "/orders", token).await;
        assert_problem(&gw, &answer, 403, "forbidden");
        assert_eq!(challenge(&answer), "Bearer error=\"insufficient_scope\"");
        let problem: Value = serde_json::from_slice(&answer.2).expect("json");
        assert_eq!(problem["detail"], why);
    }
}

#[tokio::test]
async fn a_rate_limit_counts_per_claim() {
    let (_jwks, _origin, gw) = setup("").await;
    let tokens = mint(vec![
        signed("rs1", "RS256", claims(json!({"sub": "alice"}))),
        signed("ed", "EdDSA", claims(json!({"sub": "bob"}))),
    ])
    .await;
    assert_eq!(
        get(&gw.url("/limited")).await.0,
        401,
        "refused before it is counted"
    );
    assert_eq!(bearer(&gw, "/limited", &tokens[0]).await.0, 200);
    assert_eq!(bearer(&gw, "/limited", &tokens[0]).await.0, 200);
    let third = bearer(&gw, "/limited", &tokens[0]).await;
    assert_problem(&gw, &third, 429, "rate_limited");
    assert_eq!(
        bearer(&gw, "/limited", &tokens[1]).await.0,
        200,
        "bob counts alone"
    );
}

#[tokio::test]
async fn a_rotated_key_is_fetched_once_for_its_unknown_kid() {
    let (jwks, _origin, gw) = setup("jwks_refresh = \"1h\"").await;
    let tokens = mint(vec![
        signed("rs1", "RS256", claims(json!({}))),
        signed("rs2", "RS256", claims(json!({}))),
    ])
    .await;
    // Both jwt blocks with this URL fetch it when the gateway starts.
    eventually(&gw, "the first fetches", || async { jwks.hits() >= 2 }).await;
    assert_eq!(bearer(&gw, "/jwks", &tokens[0]).await.0, 200);
    let before = jwks.hits();
    jwks.serve(&["rs2", "es", "ed"]);
    assert_eq!(
        bearer(&gw, "/jwks", &tokens[1]).await.0,
        200,
        "{}",
        gw.log()
    );
    assert_eq!(jwks.hits(), before + 1);
    // The retired key's kid is unknown now; a burst of such tokens fetches at most once
    // per 10 s.
    let start = Instant::now();
    let burst: Vec<_> = (0..20)
        .map(|_| {
            let (url, token) = (gw.url("/jwks"), tokens[0].clone());
            tokio::spawn(async move {
                get_with(&url, &[("authorization", &format!("Bearer {token}"))])
                    .await
                    .0
            })
        })
        .collect();
    for answer in burst {
        assert_eq!(answer.await.expect("join"), 401);
    }
    let allowed = before + 2 + start.elapsed().as_secs() as usize / 10;
    assert!(jwks.hits() <= allowed, "{} fetches", jwks.hits());
}

#[tokio::test]
async fn last_good_keys_serve_through_a_jwks_outage_within_max_stale() {
    let (mut jwks, _origin, gw) = setup("jwks_refresh = \"1s\"\njwks_max_stale = \"1h\"").await;
    let token = mint_one(signed("es", "ES256", claims(json!({})))).await;
    assert_eq!(bearer(&gw, "/jwks", &token).await.0, 200);
    jwks.fail(500);
    let failing = jwks.hits();
    eventually(&gw, "two failed refreshes", || async {
        jwks.hits() >= failing + 2
    })
    .await;
    assert_eq!(bearer(&gw, "/jwks", &token).await.0, 200);
    jwks.down();
    eventually(&gw, "a refused fetch logged", || async {
        gw.log().contains("JWKS not fetched: cannot connect")
    })
    .await;
    assert_eq!(bearer(&gw, "/jwks", &token).await.0, 200);
    gw.log_with("stay in use for").await;
}

#[tokio::test]
async fn keys_older_than_max_stale_fail_closed_until_the_jwks_is_back() {
    let (mut jwks, _origin, gw) = setup("jwks_refresh = \"1s\"\njwks_max_stale = \"2s\"").await;
    let token = mint_one(signed("ed", "EdDSA", claims(json!({})))).await;
    assert_eq!(bearer(&gw, "/jwks", &token).await.0, 200);
    jwks.down();
    let url = gw.url("/jwks");
    let status = || {
        let (url, token) = (url.clone(), token.clone());
        async move { get_with(&url, &[("authorization", &format!("Bearer {token}"))]).await }
    };
    eventually(&gw, "a 401 once the keys are stale", || async {
        status().await.0 == 401
    })
    .await;
    let answer = status().await;
    assert_eq!(challenge(&answer), INVALID_TOKEN);
    let problem: Value = serde_json::from_slice(&answer.2).expect("json");
    assert_eq!(
        problem["detail"],
        "the signing keys are not available (the JWKS cannot be fetched)"
    );
    jwks.up().await;
    eventually(&gw, "200 once the JWKS is back", || async {
        status().await.0 == 200
    })
    .await;
}

#[tokio::test]
async fn a_reload_keeps_the_key_set_of_an_unchanged_block() {
    let jwks = Jwks::start(&["rs1"], None).await;
    let origin = Origin::echo("app").await;
    let block = |refresh: &str, route: &str| {
        format!(
            "[middleware.idp]\ntype = \"jwt\"\nalgorithms = [\"RS256\"]\njwks_url = \"{}\"\njwks_refresh = \"{refresh}\"\n\n\
             [clusters.app]\ntargets = [\"{}\"]\n\n[[routes]]\nname = \"{route}\"\nprefix = \"/{route}\"\ncluster = \"app\"\nmiddleware = [\"idp\"]\n",
            jwks.url(),
            origin.url()
        )
    };
    let gw = Gateway::start_with(NO_WATCH, &block("1h", "a")).await;
    let token = mint_one(signed(
        "rs1",
        "RS256",
        json!({"sub": "alice", "exp": now() + 600}),
    ))
    .await;
    assert_eq!(bearer(&gw, "/a", &token).await.0, 200);
    assert_eq!(jwks.hits(), 1);
    gw.rewrite(NO_WATCH, &block("1h", "b"));
    assert_eq!(post_reload(&gw).await.0, 200);
    assert_eq!(bearer(&gw, "/b", &token).await.0, 200);
    assert_eq!(jwks.hits(), 1, "the same keys, no new fetch");
    gw.rewrite(NO_WATCH, &block("30m", "b"));
    assert_eq!(post_reload(&gw).await.0, 200);
    eventually(&gw, "a new key set fetched", || async { jwks.hits() == 2 }).await;
    assert_eq!(bearer(&gw, "/b", &token).await.0, 200);
}

#[tokio::test]
async fn an_https_jwks_is_verified_against_jwks_ca() {
    let dir = scratch_dir();
    let pki = crate::tls::Pki::new(&dir);
    let (cert, key) = pki.issue("jwks", "localhost", &["localhost"], false);
    let jwks = Jwks::start(&["rs1"], Some(acceptor(&cert, &key))).await;
    let origin = Origin::echo("app").await;
    let other_ca = crate::tls::Pki::new(&scratch_dir());
    let block = |ca: &Path| {
        format!(
            "[middleware.idp]\ntype = \"jwt\"\nalgorithms = [\"RS256\"]\njwks_url = \"{}\"\njwks_ca = \"{}\"\n\n\
             [clusters.app]\ntargets = [\"{}\"]\n\n[[routes]]\nname = \"a\"\nprefix = \"/\"\ncluster = \"app\"\nmiddleware = [\"idp\"]\n",
            jwks.url(),
            ca.display(),
            origin.url()
        )
    };
    let token = mint_one(signed("rs1", "RS256", json!({"exp": now() + 600}))).await;
    let gw = Gateway::start(&block(&pki.ca)).await;
    assert_eq!(bearer(&gw, "/", &token).await.0, 200, "{}", gw.log());
    let untrusted = Gateway::start(&block(&other_ca.ca)).await;
    let answer = bearer(&untrusted, "/", &token).await;
    assert_eq!(answer.0, 401);
    untrusted.log_with("JWKS not fetched: TLS").await;
}
