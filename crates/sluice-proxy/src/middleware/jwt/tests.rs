//! The verifier on tokens signed here with a shared secret: what passes, what is refused and with which answer, and what reaches the target.

use super::*;
use jsonwebtoken::{encode, EncodingKey, Header};
use serde_json::json;
use sluice_config::MiddlewareKind;

const SECRET: &str = "0123456789abcdef0123456789abcdef-test";

/// A verifier for the jwt block `[middleware.auth]` with `keys` (TOML lines).
fn verifier(keys: &str) -> Verifier {
    let text = format!("[middleware.auth]\ntype = \"jwt\"\nsecret = \"{SECRET}\"\n{keys}\n");
    let config = sluice_config::parse(&text, "t.toml").expect("valid");
    let MiddlewareKind::Jwt(jwt) = &config.middleware[0].kind else {
        panic!("not a jwt block")
    };
    Verifier::new("auth", jwt, None, "t.toml").expect("keys load")
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

fn sign(alg: Algorithm, claims: Value) -> String {
    encode(
        &Header::new(alg),
        &claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .expect("sign")
}

fn request(token: &str) -> Parts {
    http::Request::get("/x")
        .header("authorization", format!("Bearer {token}"))
        .header("x-user", "spoofed")
        .body(())
        .expect("request")
        .into_parts()
        .0
}

async fn check(v: &Verifier, token: &str) -> Result<(Parts, RequestState), ProxyError> {
    let mut parts = request(token);
    let mut state = RequestState::default();
    v.check(&mut parts, &mut state).await?;
    Ok((parts, state))
}

async fn refused(v: &Verifier, token: &str) -> (&'static str, &'static str) {
    match check(v, token).await {
        Err(ProxyError::Unauthorized { challenge, detail }) => (challenge, detail),
        other => panic!("expected a 401, got {other:?}"),
    }
}

#[tokio::test]
async fn a_valid_token_gives_its_claims_and_forwarded_headers() {
    let v = verifier(
        "algorithms = [\"HS256\"]\nissuer = \"idp\"\naudience = [\"api\"]\nforward_claims = { sub = \"x-user\", n = \"x-n\" }",
    );
    let token = sign(
        Algorithm::HS256,
        json!({"sub": "al\r\nice", "n": 5, "iss": "idp", "aud": ["other", "api"], "exp": now() + 60, "iat": now()}),
    );
    let (parts, state) = check(&v, &token).await.expect("accepted");
    assert_eq!(
        parts.headers.get("x-user").map(|h| h.as_bytes()),
        Some(&b"alice"[..])
    );
    assert_eq!(
        parts.headers.get("x-n").map(|h| h.as_bytes()),
        Some(&b"5"[..])
    );
    assert!(
        parts.headers.get("authorization").is_some(),
        "kept by default"
    );
    assert_eq!(
        state.claims.as_ref().and_then(|c| c.text("sub")).as_deref(),
        Some("al\r\nice")
    );
}

#[tokio::test]
async fn bad_tokens_are_refused_with_the_reason() {
    let v = verifier(
        "algorithms = [\"HS256\"]\nissuer = \"idp\"\naudience = [\"api\"]\nleeway = \"10s\"",
    );
    let good = json!({"iss": "idp", "aud": "api", "exp": now() + 60});
    let with = |extra: Value| {
        let mut c = good.clone();
        for (k, v) in extra.as_object().into_iter().flatten() {
            if v.is_null() {
                c.as_object_mut().map(|m| m.remove(k));
            } else {
                c[k] = v.clone();
            }
        }
        c
    };
    let unsigned = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#),
        URL_SAFE_NO_PAD.encode(good.to_string())
    );
    let crit = format!(
        "{}.{}.c2ln",
        URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","crit":["exp"]}"#),
        URL_SAFE_NO_PAD.encode(good.to_string())
    );
    let mut tampered = sign(Algorithm::HS256, good.clone());
    tampered.push('A');
    let cases = [
        (unsigned, "the token's algorithm is not allowed"),
        (
            sign(Algorithm::HS384, good.clone()),
            "the token's algorithm is not allowed",
        ),
        (
            crit,
            "the token names critical header extensions, which are not supported",
        ),
        (tampered, "the token's signature is not valid"),
        (
            sign(Algorithm::HS256, with(json!({"exp": now() - 30}))),
            "the token has expired",
        ),
        (
            sign(Algorithm::HS256, with(json!({"exp": null}))),
            "the token lacks a numeric exp claim",
        ),
        (
            sign(Algorithm::HS256, with(json!({"exp": "tomorrow"}))),
            "the token lacks a numeric exp claim",
        ),
        (
            sign(Algorithm::HS256, with(json!({"nbf": "now"}))),
            "a time claim of the token is not a number",
        ),
        (
            sign(Algorithm::HS256, with(json!({"nbf": now() + 30}))),
            "the token is not valid yet (nbf)",
        ),
        (
            sign(Algorithm::HS256, with(json!({"iat": now() + 30}))),
            "the token was issued in the future",
        ),
        (
            sign(Algorithm::HS256, with(json!({"iss": "evil"}))),
            "the token's issuer is not accepted",
        ),
        (
            sign(Algorithm::HS256, with(json!({"iss": ["idp", "evil"]}))),
            "the token's issuer is not accepted",
        ),
        (
            sign(Algorithm::HS256, with(json!({"iss": null}))),
            "the token has no iss claim",
        ),
        (
            sign(Algorithm::HS256, with(json!({"aud": ["web"]}))),
            "the token's audience is not accepted",
        ),
        (
            sign(Algorithm::HS256, with(json!({"aud": null}))),
            "the token has no aud claim",
        ),
        ("abc".to_string(), "the token is malformed"),
        ("a.b.c".to_string(), "the token is malformed"),
        ("a.b.c.d".to_string(), "the token is malformed"),
    ];
    for (token, why) in cases {
        assert_eq!(refused(&v, &token).await, (INVALID_TOKEN, why), "{token}");
    }
    // Within the leeway, times still pass.
    for extra in [
        json!({"exp": now() - 5}),
        json!({"nbf": now() + 5}),
        json!({"iat": now() + 5}),
    ] {
        let token = sign(Algorithm::HS256, with(extra.clone()));
        assert!(check(&v, &token).await.is_ok(), "{extra}");
    }
    let mut no_token = request("x");
    no_token.headers.remove("authorization");
    let err = v
        .check(&mut no_token, &mut RequestState::default())
        .await
        .expect_err("refused");
    assert!(matches!(
        err,
        ProxyError::Unauthorized {
            challenge: "Bearer",
            ..
        }
    ));
}

#[tokio::test]
async fn claims_the_route_does_not_accept_are_a_403() {
    let v = verifier(
        "algorithms = [\"HS512\"]\nrequire_scopes = [\"orders:read\"]\nrequire_claims = { tenant = \"acme\" }",
    );
    let token = |c: Value| sign(Algorithm::HS512, c);
    let exp = now() + 60;
    let ok = token(json!({"exp": exp, "scope": "orders:read", "tenant": "acme"}));
    assert!(check(&v, &ok).await.is_ok());
    for (claims, why) in [
        (
            json!({"exp": exp, "scope": "orders:write", "tenant": "acme"}),
            "the token lacks scope `orders:read`",
        ),
        (
            json!({"exp": exp, "scope": "orders:read", "tenant": "evil"}),
            "the token's claim `tenant` is not \"acme\"",
        ),
    ] {
        match check(&v, &token(claims)).await {
            Err(ProxyError::InsufficientScope(detail)) => assert_eq!(detail, why),
            other => panic!("expected a 403, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn hidden_tokens_do_not_reach_the_target() {
    let v = verifier("algorithms = [\"HS256\"]\nhide_credentials = true\ntoken_from = [\"header:authorization\", \"query:t\"]");
    let token = sign(Algorithm::HS256, json!({"exp": now() + 60}));
    let (parts, _) = check(&v, &token).await.expect("accepted");
    assert!(parts.headers.get("authorization").is_none());
}

#[test]
fn public_key_files_must_fit_the_algorithms() {
    let dir = std::env::temp_dir().join(format!("sluice-jwt-unit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let pem = dir.join("ed.pem");
    std::fs::write(
        &pem,
        "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEAHO0+MtwfeGyfbsYJVu13sBngEEg060+gxIbOWFRD06s=\n-----END PUBLIC KEY-----\n",
    )
    .expect("write");
    let private = dir.join("private.pem");
    std::fs::write(
        &private,
        "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
    )
    .expect("write");
    let build = |algorithms: &str, file: &std::path::Path| {
        let text = format!(
            "[middleware.files]\ntype = \"jwt\"\nalgorithms = [{algorithms}]\npublic_keys = [\"{}\"]\n",
            file.display()
        );
        let config = sluice_config::parse(&text, "t.toml").expect("valid");
        let MiddlewareKind::Jwt(jwt) = &config.middleware[0].kind else {
            panic!("not a jwt block")
        };
        Verifier::new("files", jwt, None, "t.toml").map(|_| ())
    };
    assert!(build("\"EdDSA\"", &pem).is_ok());
    let err = build("\"EdDSA\", \"RS256\"", &pem).expect_err("no RSA key");
    assert_eq!(
        err.to_string(),
        "t.toml:1:1: middleware.files.algorithms: no key in `public_keys` verifies RS256"
    );
    let err = build("\"EdDSA\"", &private).expect_err("private");
    assert_eq!(
        err.to_string(),
        format!(
            "t.toml:1:1: middleware.files.public_keys[0]: {}: this is a private key; give its public key (openssl pkey -in KEY -pubout)",
            private.display()
        )
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn token_headers_are_read_before_any_key() {
    let h = |json: &str| TokenHeader::parse(&format!("{}.e30.sig", URL_SAFE_NO_PAD.encode(json)));
    assert_eq!(
        h(r#"{"alg":"RS256","kid":"k1"}"#),
        Ok(TokenHeader {
            alg: "RS256".into(),
            kid: Some("k1".into())
        })
    );
    assert_eq!(h(r#"{"alg":"none"}"#).map(|t| t.alg), Ok("none".into()));
    assert!(h(r#"{"kid":"k1"}"#).is_err());
    assert!(h(r#"{"alg":"RS256","kid":7}"#).is_err());
    assert!(h(r#"["alg"]"#).is_err());
}

#[test]
fn verified_tokens_are_served_until_exp_and_only_for_the_same_key_set() {
    let verified = Verified::default();
    let admitted = |sub: &str| {
        let mut claims = serde_json::Map::new();
        claims.insert("sub".into(), sub.into());
        Arc::new(Admitted {
            claims: Claims::new(claims),
            refusal: None,
            forwarded: Vec::new(),
        })
    };
    let claims_of = |a: Option<Arc<Admitted>>| a.map(|a| a.claims.clone());
    let a = admitted("a");
    verified.put("token-a", Arc::clone(&a), 1_000.0, 7);
    assert_eq!(
        claims_of(verified.get("token-a", 7, 999.0)),
        Some(a.claims.clone())
    );
    assert_eq!(
        claims_of(verified.get("token-b", 7, 999.0)),
        None,
        "another token"
    );
    assert_eq!(
        claims_of(verified.get("token-a", 8, 999.0)),
        None,
        "another key set"
    );
    assert_eq!(
        claims_of(verified.get("token-a", 7, 999.0)),
        None,
        "dropped once it missed"
    );
    verified.put("token-a", Arc::clone(&a), 1_000.0, 7);
    assert_eq!(
        claims_of(verified.get("token-a", 7, 1_000.0)),
        None,
        "expired"
    );
    // A full shard makes room instead of growing.
    for i in 0..PER_SHARD * SHARDS * 2 {
        verified.put(&format!("t{i}"), admitted("t"), f64::MAX, 0);
    }
    let kept: usize = verified
        .shards
        .iter()
        .map(|s| s.lock().map(|s| s.len()).unwrap_or(0))
        .sum();
    assert!(kept <= PER_SHARD * SHARDS, "{kept}");
}

#[test]
fn a_token_sharing_another_tokens_hash_is_not_served_its_claims() {
    let verified = Verified::default();
    let admitted = Arc::new(Admitted {
        claims: Claims::new(serde_json::Map::new()),
        refusal: None,
        forwarded: Vec::new(),
    });
    verified.put("token-a", admitted, f64::MAX, 0);
    // Move token-a's entry to the slot token-b hashes to, as a collision would.
    let (a, b) = (verified.hash("token-a"), verified.hash("token-b"));
    let entry = verified
        .shard("token-a")
        .1
        .remove(&a)
        .expect("token-a is kept");
    verified.shard("token-b").1.insert(b, entry);
    assert!(verified.get("token-b", 0, 1.0).is_none());
}
