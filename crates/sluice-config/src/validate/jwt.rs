//! Validation of `type = "jwt"` blocks: the algorithm allow-list against the key source, the JWKS settings (never fetched here), time leeway, token sources and claim rules.

use super::middleware::{header_name, secret};
use super::Checker;
use crate::jwt::*;
use crate::raw::{ClaimValueConfig, MiddlewareConfig};
use http::HeaderName;
use std::ops::Range;
use std::time::Duration;
use toml::Spanned;

/// The keys of a jwt block.
pub(super) const KEYS: &[&str] = &[
    "algorithms",
    "secret",
    "public_keys",
    "jwks_url",
    "jwks_ca",
    "jwks_refresh",
    "jwks_max_stale",
    "issuer",
    "audience",
    "leeway",
    "token_from",
    "require_claims",
    "require_scopes",
    "require_roles",
    "forward_claims",
    "hide_credentials",
];

/// HS* secrets shorter than this are refused (RFC 7518 §3.2 asks for the hash's size).
const MIN_SECRET: usize = 32;
const MAX_LEEWAY: Duration = Duration::from_secs(300);
const DEFAULT_LEEWAY: Duration = Duration::from_secs(30);
const DEFAULT_REFRESH: Duration = Duration::from_secs(300);
const DEFAULT_MAX_STALE: Duration = Duration::from_secs(3600);

pub(super) fn jwt(
    c: &mut Checker,
    m: &MiddlewareConfig,
    span: Range<usize>,
    key: &str,
) -> Option<Jwt> {
    let algorithms = algorithms(c, m, span.clone(), key);
    let keys = keys(c, m, span.clone(), key, &algorithms);
    let issuer = m.issuer.as_ref().map(|i| {
        if i.get_ref().is_empty() {
            c.fail(i.span(), &format!("{key}.issuer"), "must not be empty");
        }
        i.get_ref().clone()
    });
    let audience = words(
        c,
        m.audience.as_ref().map(|a| a.get_ref()),
        &format!("{key}.audience"),
        "an audience",
    );
    if let Some(list) = m.audience.as_ref().filter(|a| a.get_ref().is_empty()) {
        c.fail(
            list.span(),
            &format!("{key}.audience"),
            "must list at least one audience; leave the key out not to check `aud`",
        );
    }
    let leeway = c.duration(&m.leeway, &format!("{key}.leeway"), DEFAULT_LEEWAY);
    if let Some(l) = m.leeway.as_ref().filter(|_| leeway > MAX_LEEWAY) {
        c.fail(l.span(), &format!("{key}.leeway"), "must be at most 5m");
    }
    let token_from = token_sources(c, m, key);
    let require_claims = m
        .require_claims
        .iter()
        .flat_map(|map| map.get_ref().iter())
        .map(|(name, value)| {
            let value = match value.get_ref().clone() {
                ClaimValueConfig::Text(t) => ClaimValue::Text(t),
                ClaimValueConfig::Integer(n) => ClaimValue::Integer(n),
                ClaimValueConfig::Bool(b) => ClaimValue::Bool(b),
            };
            (name.clone(), value)
        })
        .collect();
    let require_scopes = words(
        c,
        m.require_scopes.as_ref(),
        &format!("{key}.require_scopes"),
        "a scope",
    );
    let require_roles = words(
        c,
        m.require_roles.as_ref(),
        &format!("{key}.require_roles"),
        "a role",
    );
    let forward_claims = forward_claims(c, m, key, &token_from);
    Some(Jwt {
        algorithms: algorithms.into_iter().map(|(a, _)| a).collect(),
        keys: keys?,
        issuer,
        audience,
        leeway,
        token_from,
        require_claims,
        require_scopes,
        require_roles,
        forward_claims,
        hide_credentials: m.hide_credentials.as_ref().is_some_and(|b| *b.get_ref()),
        location: c.at(&span),
    })
}

/// The allow-list, each with where it is written.
fn algorithms(
    c: &mut Checker,
    m: &MiddlewareConfig,
    span: Range<usize>,
    key: &str,
) -> Vec<(JwtAlgorithm, Range<usize>)> {
    let Some(list) = &m.algorithms else {
        c.fail(
            span,
            key,
            "a jwt middleware needs `algorithms`, the only signing algorithms it accepts, like algorithms = [\"RS256\"]",
        );
        return Vec::new();
    };
    if list.get_ref().is_empty() {
        c.fail(
            list.span(),
            &format!("{key}.algorithms"),
            "must list at least one algorithm",
        );
    }
    let mut out: Vec<(JwtAlgorithm, Range<usize>)> = Vec::new();
    for (i, a) in list.get_ref().iter().enumerate() {
        let k = format!("{key}.algorithms[{i}]");
        match JwtAlgorithm::parse(a.get_ref()) {
            Some(alg) if out.iter().any(|(o, _)| *o == alg) => {
                c.fail(a.span(), &k, format!("`{}` is listed twice", alg.as_str()))
            }
            Some(alg) => out.push((alg, a.span())),
            None if a.get_ref().eq_ignore_ascii_case("none") => c.fail(
                a.span(),
                &k,
                "`none` is an unsigned token, which is never accepted",
            ),
            None => {
                let names: Vec<&str> = JwtAlgorithm::ALL.iter().map(|a| a.as_str()).collect();
                c.fail(
                    a.span(),
                    &k,
                    format!(
                        "unknown algorithm `{}`; expected one of {}",
                        a.get_ref(),
                        names.join(", ")
                    ),
                )
            }
        }
    }
    out
}

/// Exactly one key source, and algorithms that fit it.
fn keys(
    c: &mut Checker,
    m: &MiddlewareConfig,
    span: Range<usize>,
    key: &str,
    algorithms: &[(JwtAlgorithm, Range<usize>)],
) -> Option<JwtKeys> {
    let given: Vec<(&str, Range<usize>)> = [
        ("jwks_url", m.jwks_url.as_ref().map(|u| u.span())),
        ("secret", m.secret.as_ref().map(|s| s.span())),
        ("public_keys", m.public_keys.as_ref().map(|p| p.span())),
    ]
    .into_iter()
    .filter_map(|(k, s)| s.map(|s| (k, s)))
    .collect();
    if m.jwks_url.is_none() {
        for (name, value) in [
            ("jwks_ca", &m.jwks_ca),
            ("jwks_refresh", &m.jwks_refresh),
            ("jwks_max_stale", &m.jwks_max_stale),
        ] {
            if let Some(v) = value {
                c.fail(
                    v.span(),
                    &format!("{key}.{name}"),
                    format!("`{name}` only applies with `jwks_url`"),
                );
            }
        }
    }
    let (source, at) = match given.as_slice() {
        [] => {
            c.fail(
                span,
                key,
                "a jwt middleware needs its keys: `jwks_url`, `secret` or `public_keys`",
            );
            return None;
        }
        [one] => one.clone(),
        [_, (second, at), ..] => {
            c.fail(
                at.clone(),
                &format!("{key}.{second}"),
                "give only one of `jwks_url`, `secret` and `public_keys`",
            );
            return None;
        }
    };
    let hmac = source == "secret";
    for (i, (alg, alg_span)) in algorithms.iter().enumerate() {
        let k = format!("{key}.algorithms[{i}]");
        if hmac && !alg.is_hmac() {
            c.fail(alg_span.clone(), &k, format!("`{}` is verified with a public key, not a `secret`; a secret verifies HS256, HS384 and HS512 only", alg.as_str()));
        } else if !hmac && alg.is_hmac() {
            c.fail(
                alg_span.clone(),
                &k,
                format!(
                    "`{}` needs a `secret`; HMAC keys are never taken from `{source}`",
                    alg.as_str()
                ),
            );
        }
    }
    let base = c.base_dir();
    match source {
        "secret" => {
            let text = m.secret.as_ref()?;
            match secret(text.get_ref()) {
                Ok(s) if s.len() >= MIN_SECRET => {
                    Some(JwtKeys::Secret(Secret::new(s.into_bytes())))
                }
                Ok(_) => {
                    c.fail(
                        text.span(),
                        &format!("{key}.secret"),
                        format!("a secret must be at least {MIN_SECRET} bytes long"),
                    );
                    None
                }
                Err(e) => {
                    c.fail(at, &format!("{key}.secret"), e);
                    None
                }
            }
        }
        "public_keys" => {
            let files = m.public_keys.as_ref().map_or(&[][..], |p| p.get_ref());
            if files.is_empty() {
                c.fail(
                    at,
                    &format!("{key}.public_keys"),
                    "must list at least one PEM file",
                );
            }
            let paths = files
                .iter()
                .enumerate()
                .map(|(i, f)| super::tls::readable(c, &base, f, &format!("{key}.public_keys[{i}]")))
                .collect();
            Some(JwtKeys::PublicKeys(paths))
        }
        _ => jwks(c, m, key, &base).map(JwtKeys::Jwks),
    }
}

fn jwks(
    c: &mut Checker,
    m: &MiddlewareConfig,
    key: &str,
    base: &std::path::Path,
) -> Option<JwksSettings> {
    let url = m.jwks_url.as_ref()?;
    let parsed = url.get_ref().parse::<http::Uri>().ok().filter(|u| {
        matches!(u.scheme_str(), Some("http" | "https"))
            && u.authority()
                .is_some_and(|a| !a.host().is_empty() && !a.as_str().contains('@'))
    });
    let Some(uri) = parsed else {
        c.fail(
            url.span(),
            &format!("{key}.jwks_url"),
            format!("invalid JWKS URL `{}`: expected an http:// or https:// URL with a host, like \"https://idp.example.com/.well-known/jwks.json\"", url.get_ref()),
        );
        return None;
    };
    let ca = m.jwks_ca.as_ref().map(|ca| {
        if uri.scheme_str() != Some("https") {
            c.fail(
                ca.span(),
                &format!("{key}.jwks_ca"),
                "`jwks_ca` only applies to an https:// jwks_url",
            );
        }
        super::tls::readable(c, base, ca, &format!("{key}.jwks_ca"))
    });
    let refresh = c.duration(
        &m.jwks_refresh,
        &format!("{key}.jwks_refresh"),
        DEFAULT_REFRESH,
    );
    if let Some(r) = m
        .jwks_refresh
        .as_ref()
        .filter(|_| refresh < Duration::from_secs(1))
    {
        c.fail(
            r.span(),
            &format!("{key}.jwks_refresh"),
            "must be at least 1s",
        );
    }
    let max_stale = c.duration(
        &m.jwks_max_stale,
        &format!("{key}.jwks_max_stale"),
        DEFAULT_MAX_STALE.max(refresh),
    );
    if let Some(s) = m.jwks_max_stale.as_ref().filter(|_| max_stale < refresh) {
        let written = m
            .jwks_refresh
            .as_ref()
            .map_or("5m", |r| r.get_ref().as_str());
        c.fail(
            s.span(),
            &format!("{key}.jwks_max_stale"),
            format!("must be at least jwks_refresh ({written}), or the keys would expire between two refreshes"),
        );
    }
    Some(JwksSettings {
        url: uri,
        ca,
        refresh,
        max_stale,
    })
}

/// `token_from`, by default the `Authorization: Bearer` header.
fn token_sources(c: &mut Checker, m: &MiddlewareConfig, key: &str) -> Vec<TokenSource> {
    let Some(list) = &m.token_from else {
        return vec![TokenSource::Header(http::header::AUTHORIZATION)];
    };
    if list.get_ref().is_empty() {
        c.fail(
            list.span(),
            &format!("{key}.token_from"),
            "must list at least one place to look for the token",
        );
    }
    list.get_ref()
        .iter()
        .enumerate()
        .filter_map(|(i, s)| {
            let parsed = match s.get_ref().split_once(':') {
                Some(("header", name)) => HeaderName::from_bytes(name.as_bytes())
                    .ok()
                    .map(TokenSource::Header),
                Some(("cookie", name)) if !name.is_empty() => {
                    Some(TokenSource::Cookie(name.to_string()))
                }
                Some(("query", name)) if !name.is_empty() => {
                    Some(TokenSource::Query(name.to_string()))
                }
                _ => None,
            };
            if parsed.is_none() {
                c.fail(
                    s.span(),
                    &format!("{key}.token_from[{i}]"),
                    format!("invalid token source `{}`: expected \"header:NAME\", \"cookie:NAME\" or \"query:NAME\"", s.get_ref()),
                );
            }
            parsed
        })
        .collect()
}

/// Scopes, roles or audiences: non-empty words.
fn words(
    c: &mut Checker,
    list: Option<&Vec<Spanned<String>>>,
    key: &str,
    what: &str,
) -> Vec<String> {
    list.into_iter()
        .flatten()
        .enumerate()
        .map(|(i, w)| {
            let text = w.get_ref();
            if text.is_empty() || text.contains(char::is_whitespace) {
                c.fail(
                    w.span(),
                    &format!("{key}[{i}]"),
                    format!("{what} is one word, without spaces"),
                );
            }
            text.clone()
        })
        .collect()
}

/// `forward_claims = { CLAIM = "header" }`: headers the gateway owns.
fn forward_claims(
    c: &mut Checker,
    m: &MiddlewareConfig,
    key: &str,
    sources: &[TokenSource],
) -> Vec<(String, HeaderName)> {
    let mut out: Vec<(String, HeaderName)> = Vec::new();
    for (claim, header) in m.forward_claims.iter().flat_map(|f| f.get_ref().iter()) {
        let k = format!(
            "{key}.forward_claims.{}",
            super::cluster::key_segment(claim)
        );
        let Some(name) = header_name(c, header.get_ref(), header.span(), &k) else {
            continue;
        };
        // The gateway removes these headers from every request it receives.
        let needed = sources
            .iter()
            .any(|s| matches!(s, TokenSource::Header(h) if *h == name))
            || ["host", "authorization", "cookie"].contains(&name.as_str());
        if needed {
            c.fail(header.span(), &k, format!("`{name}` is removed from every request the gateway receives, so it cannot also carry tokens, hosts, credentials or cookies; pick a header of its own, like x-user-id"));
            continue;
        }
        if let Some((other, _)) = out.iter().find(|(_, h)| *h == name) {
            c.fail(
                header.span(),
                &k,
                format!("`{name}` already carries claim `{other}`"),
            );
            continue;
        }
        out.push((claim.clone(), name));
    }
    out
}
