//! Validation of `[middleware.NAME]` blocks, `server.trusted_proxies`, and the middleware lists attached to the server and to routes.

use super::Checker;
use crate::middleware::*;
use crate::raw::{HeaderOpsConfig, MiddlewareConfig};
use http::{HeaderName, Method};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::time::Duration;
use toml::Spanned;

const TYPES: &str = "ip, headers, cors, api_key, jwt, rate_limit";

/// Checks every block; `has_redis` tells whether a `[redis]` table is there for limits
/// with `store = "redis"`.
pub(super) fn all(
    c: &mut Checker,
    raw: &BTreeMap<Spanned<String>, Spanned<MiddlewareConfig>>,
    has_redis: bool,
) -> Vec<Middleware> {
    raw.iter()
        .filter_map(|(name, cfg)| {
            let key = format!("middleware.{}", super::cluster::key_segment(name.get_ref()));
            let kind = one(c, cfg, &key, has_redis)?;
            Some(Middleware {
                name: name.get_ref().clone(),
                kind,
            })
        })
        .collect()
}

/// The keys set in a block, with where each is written.
fn keys_set(m: &MiddlewareConfig) -> Vec<(&'static str, Option<Range<usize>>)> {
    fn list<T>(v: &Option<Vec<Spanned<T>>>) -> Option<Option<Range<usize>>> {
        v.as_ref().map(|l| l.first().map(|x| x.span()))
    }
    fn one<T>(v: &Option<Spanned<T>>) -> Option<Option<Range<usize>>> {
        v.as_ref().map(|x| Some(x.span()))
    }
    [
        ("allow", list(&m.allow)),
        ("deny", list(&m.deny)),
        ("request", one(&m.request)),
        ("response", one(&m.response)),
        ("allow_origins", one(&m.allow_origins)),
        ("allow_methods", list(&m.allow_methods)),
        ("allow_headers", list(&m.allow_headers)),
        ("expose_headers", list(&m.expose_headers)),
        ("allow_credentials", one(&m.allow_credentials)),
        ("max_age", one(&m.max_age)),
        ("key_from", list(&m.key_from)),
        ("consumers", one(&m.consumers)),
        ("consumer_header", one(&m.consumer_header)),
        ("hide_credentials", one(&m.hide_credentials)),
        ("algorithm", one(&m.algorithm)),
        ("rate", one(&m.rate)),
        ("per", one(&m.per)),
        ("burst", one(&m.burst)),
        ("key", one(&m.key)),
        ("store", one(&m.store)),
        ("on_store_error", one(&m.on_store_error)),
        ("algorithms", one(&m.algorithms)),
        ("secret", one(&m.secret)),
        ("public_keys", one(&m.public_keys)),
        ("jwks_url", one(&m.jwks_url)),
        ("jwks_ca", one(&m.jwks_ca)),
        ("jwks_refresh", one(&m.jwks_refresh)),
        ("jwks_max_stale", one(&m.jwks_max_stale)),
        ("issuer", one(&m.issuer)),
        ("audience", one(&m.audience)),
        ("leeway", one(&m.leeway)),
        ("token_from", one(&m.token_from)),
        ("require_claims", one(&m.require_claims)),
        ("require_scopes", list(&m.require_scopes)),
        ("require_roles", list(&m.require_roles)),
        ("forward_claims", one(&m.forward_claims)),
    ]
    .into_iter()
    .filter_map(|(k, span)| span.map(|s| (k, s)))
    .collect()
}

fn one(
    c: &mut Checker,
    cfg: &Spanned<MiddlewareConfig>,
    key: &str,
    has_redis: bool,
) -> Option<MiddlewareKind> {
    let m = cfg.get_ref();
    let Some(kind) = &m.kind else {
        c.fail(
            cfg.span(),
            key,
            format!("a middleware needs a `type`: one of {TYPES}"),
        );
        return None;
    };
    let own: &[&str] = match kind.get_ref().as_str() {
        "ip" => &["allow", "deny"],
        "headers" => &["request", "response"],
        "cors" => &[
            "allow_origins",
            "allow_methods",
            "allow_headers",
            "expose_headers",
            "allow_credentials",
            "max_age",
        ],
        "api_key" => &[
            "key_from",
            "consumers",
            "consumer_header",
            "hide_credentials",
        ],
        "jwt" => super::jwt::KEYS,
        "rate_limit" => &[
            "algorithm",
            "rate",
            "per",
            "burst",
            "key",
            "store",
            "on_store_error",
        ],
        other => {
            c.fail(
                kind.span(),
                &format!("{key}.type"),
                format!("unknown middleware type `{other}`; expected one of {TYPES}"),
            );
            return None;
        }
    };
    let before = c.errors.len();
    for (name, span) in keys_set(m) {
        if !own.contains(&name) {
            c.fail(
                span.unwrap_or(cfg.span()),
                &format!("{key}.{name}"),
                format!(
                    "`{name}` does not apply to type `{}`; its keys are: {}",
                    kind.get_ref(),
                    own.join(", ")
                ),
            );
        }
    }
    let built = match kind.get_ref().as_str() {
        "ip" => ip(c, m, cfg.span(), key).map(MiddlewareKind::Ip),
        "headers" => Some(MiddlewareKind::Headers(HeaderTransform {
            request: header_ops(c, &m.request, &format!("{key}.request")),
            response: header_ops(c, &m.response, &format!("{key}.response")),
        })),
        "cors" => cors(c, m, cfg.span(), key).map(MiddlewareKind::Cors),
        "api_key" => api_key(c, m, cfg.span(), key).map(MiddlewareKind::ApiKey),
        "jwt" => super::jwt::jwt(c, m, cfg.span(), key).map(|j| MiddlewareKind::Jwt(Box::new(j))),
        _ => rate_limit(c, m, cfg.span(), key, has_redis).map(MiddlewareKind::RateLimit),
    };
    built.filter(|_| c.errors.len() == before)
}

/// A list of address blocks.
pub(super) fn cidrs(c: &mut Checker, list: &Option<Vec<Spanned<String>>>, key: &str) -> Vec<Cidr> {
    list.iter()
        .flatten()
        .enumerate()
        .filter_map(|(i, text)| {
            Cidr::parse(text.get_ref())
                .map_err(|e| c.fail(text.span(), &format!("{key}[{i}]"), e))
                .ok()
        })
        .collect()
}

fn ip(c: &mut Checker, m: &MiddlewareConfig, span: Range<usize>, key: &str) -> Option<IpRules> {
    let allow = cidrs(c, &m.allow, &format!("{key}.allow"));
    let deny = cidrs(c, &m.deny, &format!("{key}.deny"));
    if m.allow.as_ref().is_none_or(Vec::is_empty) && m.deny.as_ref().is_none_or(Vec::is_empty) {
        c.fail(span, key, "an ip middleware needs `allow`, `deny` or both");
        return None;
    }
    Some(IpRules { allow, deny })
}

/// Headers whose change would break the message's framing or the connection.
const UNTOUCHABLE: [&str; 7] = [
    "connection",
    "content-length",
    "transfer-encoding",
    "keep-alive",
    "te",
    "upgrade",
    "trailer",
];

pub(super) fn header_name(
    c: &mut Checker,
    name: &str,
    span: Range<usize>,
    key: &str,
) -> Option<HeaderName> {
    match HeaderName::from_bytes(name.as_bytes()) {
        Ok(h) if UNTOUCHABLE.contains(&h.as_str()) => {
            c.fail(
                span,
                key,
                format!("`{name}` belongs to the connection's framing and cannot be changed"),
            );
            None
        }
        Ok(h) => Some(h),
        Err(_) => {
            c.fail(span, key, format!("invalid header name `{name}`"));
            None
        }
    }
}

fn header_ops(c: &mut Checker, ops: &Option<Spanned<HeaderOpsConfig>>, key: &str) -> HeaderOps {
    let Some(ops) = ops else {
        return HeaderOps::default();
    };
    let o = ops.get_ref();
    let mut pairs = |map: &Option<BTreeMap<String, Spanned<String>>>, what: &str| {
        map.iter()
            .flatten()
            .filter_map(|(name, value)| {
                let k = format!("{key}.{what}.{}", super::cluster::key_segment(name));
                let header = header_name(c, name, value.span(), &k)?;
                match Template::parse(value.get_ref()) {
                    Ok(t) => Some((header, t)),
                    Err(e) => {
                        c.fail(value.span(), &k, e);
                        None
                    }
                }
            })
            .collect::<Vec<_>>()
    };
    let set = pairs(&o.set, "set");
    let add = pairs(&o.add, "add");
    let remove = o
        .remove
        .iter()
        .flatten()
        .enumerate()
        .filter_map(|(i, n)| header_name(c, n.get_ref(), n.span(), &format!("{key}.remove[{i}]")))
        .collect();
    HeaderOps { remove, set, add }
}

fn header_list(c: &mut Checker, list: &Option<Vec<Spanned<String>>>, key: &str) -> Vec<HeaderName> {
    list.iter()
        .flatten()
        .enumerate()
        .filter_map(
            |(i, n)| match HeaderName::from_bytes(n.get_ref().as_bytes()) {
                Ok(h) => Some(h),
                Err(_) => {
                    c.fail(
                        n.span(),
                        &format!("{key}[{i}]"),
                        format!("invalid header name `{}`", n.get_ref()),
                    );
                    None
                }
            },
        )
        .collect()
}

fn cors(c: &mut Checker, m: &MiddlewareConfig, span: Range<usize>, key: &str) -> Option<Cors> {
    let Some(list) = m.allow_origins.as_ref() else {
        c.fail(span, key, "a cors middleware needs `allow_origins`");
        return None;
    };
    if list.get_ref().is_empty() {
        c.fail(
            list.span(),
            &format!("{key}.allow_origins"),
            "must list at least one origin",
        );
    }
    let origins: Vec<OriginPattern> = list
        .get_ref()
        .iter()
        .enumerate()
        .filter_map(|(i, o)| {
            OriginPattern::parse(o.get_ref())
                .map_err(|e| c.fail(o.span(), &format!("{key}.allow_origins[{i}]"), e))
                .ok()
        })
        .collect();
    let methods = match &m.allow_methods {
        None => vec![Method::GET, Method::HEAD, Method::POST],
        Some(list) => list
            .iter()
            .enumerate()
            .filter_map(|(i, v)| {
                match Method::from_bytes(v.get_ref().to_ascii_uppercase().as_bytes()) {
                    Ok(method) => Some(method),
                    Err(_) => {
                        c.fail(
                            v.span(),
                            &format!("{key}.allow_methods[{i}]"),
                            format!("invalid method `{}`", v.get_ref()),
                        );
                        None
                    }
                }
            })
            .collect(),
    };
    let any_header = m
        .allow_headers
        .as_ref()
        .is_some_and(|l| l.iter().any(|h| h.get_ref() == "*"));
    let allow_headers = match &m.allow_headers {
        Some(_) if any_header => None,
        None => None,
        list => Some(header_list(c, list, &format!("{key}.allow_headers"))),
    };
    let credentials = m.allow_credentials.as_ref().is_some_and(|b| *b.get_ref());
    if let Some(flag) = m.allow_credentials.as_ref().filter(|_| credentials) {
        if origins.contains(&OriginPattern::Any) {
            c.fail(
                flag.span(),
                &format!("{key}.allow_credentials"),
                "browsers refuse credentials with any origin (\"*\"); list the allowed origins",
            );
        }
    }
    let max_age = m
        .max_age
        .as_ref()
        .map(|_| c.duration(&m.max_age, &format!("{key}.max_age"), Duration::ZERO));
    Some(Cors {
        origins,
        methods,
        allow_headers,
        expose_headers: header_list(c, &m.expose_headers, &format!("{key}.expose_headers")),
        credentials,
        max_age,
    })
}

/// `${NAME}` reads the environment variable NAME; anything else is the value itself.
pub(super) fn secret(text: &str) -> Result<String, String> {
    match text.strip_prefix("${").and_then(|t| t.strip_suffix('}')) {
        Some(var) => {
            std::env::var(var).map_err(|_| format!("environment variable `{var}` is not set"))
        }
        None => Ok(text.to_string()),
    }
}

/// A key as written: `sha256:HEX` (its digest), `${ENV}`, or the key itself.
fn key_digest(text: &str) -> Result<[u8; 32], String> {
    if let Some(hex) = text.strip_prefix("sha256:") {
        let bytes: Option<Vec<u8>> = (0..hex.len())
            .step_by(2)
            .map(|i| {
                hex.get(i..i + 2)
                    .and_then(|b| u8::from_str_radix(b, 16).ok())
            })
            .collect();
        return bytes
            .and_then(|b| <[u8; 32]>::try_from(b).ok())
            .ok_or_else(|| "a `sha256:` key needs 64 hex digits".to_string());
    }
    let key = secret(text)?;
    if key.len() < 8 {
        return Err("an API key must be at least 8 characters long".into());
    }
    Ok(Sha256::digest(key.as_bytes()).into())
}

fn api_key(
    c: &mut Checker,
    m: &MiddlewareConfig,
    span: Range<usize>,
    key: &str,
) -> Option<ApiKeys> {
    let sources = match &m.key_from {
        None => vec![KeySource::Header(HeaderName::from_static("x-api-key"))],
        Some(list) => list
            .iter()
            .enumerate()
            .filter_map(|(i, s)| {
                let parsed = match s.get_ref().split_once(':') {
                    Some(("header", name)) => HeaderName::from_bytes(name.as_bytes())
                        .ok()
                        .map(KeySource::Header),
                    Some(("query", name)) if !name.is_empty() => {
                        Some(KeySource::Query(name.to_string()))
                    }
                    _ => None,
                };
                if parsed.is_none() {
                    c.fail(
                        s.span(),
                        &format!("{key}.key_from[{i}]"),
                        format!(
                            "invalid key source `{}`: expected \"header:NAME\" or \"query:NAME\"",
                            s.get_ref()
                        ),
                    );
                }
                parsed
            })
            .collect(),
    };
    let Some(consumers_cfg) = &m.consumers else {
        c.fail(
            span,
            key,
            "an api_key middleware needs `consumers`, like { alice = [\"KEY\"] }",
        );
        return None;
    };
    if consumers_cfg.get_ref().is_empty() {
        c.fail(
            consumers_cfg.span(),
            &format!("{key}.consumers"),
            "must name at least one consumer",
        );
    }
    let mut owners: HashMap<[u8; 32], String> = HashMap::new();
    let mut consumers = Vec::new();
    for (name, keys) in consumers_cfg.get_ref() {
        let ck = format!("{key}.consumers.{}", super::cluster::key_segment(name));
        if name.is_empty() || http::HeaderValue::from_str(name).is_err() {
            c.fail(
                consumers_cfg.span(),
                &ck,
                "a consumer name must be non-empty text without control characters",
            );
        }
        if keys.is_empty() {
            c.fail(
                consumers_cfg.span(),
                &ck,
                "a consumer needs at least one key",
            );
        }
        let mut key_digests = Vec::new();
        for (i, k) in keys.iter().enumerate() {
            match key_digest(k.get_ref()) {
                Ok(d) => {
                    if let Some(other) = owners.insert(d, name.clone()) {
                        c.fail(
                            k.span(),
                            &format!("{ck}[{i}]"),
                            format!("the same key is already given to consumer `{other}`"),
                        );
                    }
                    key_digests.push(d);
                }
                Err(e) => c.fail(k.span(), &format!("{ck}[{i}]"), e),
            }
        }
        consumers.push(Consumer {
            name: name.clone(),
            key_digests,
        });
    }
    let consumer_header = match &m.consumer_header {
        None => HeaderName::from_static("x-consumer"),
        Some(h) => header_name(c, h.get_ref(), h.span(), &format!("{key}.consumer_header"))?,
    };
    // The gateway removes this header from every request it receives: it must not be one
    // clients need.
    let clash = sources
        .iter()
        .any(|s| matches!(s, KeySource::Header(n) if *n == consumer_header))
        || ["host", "authorization", "cookie"].contains(&consumer_header.as_str());
    if let (true, Some(h)) = (clash, &m.consumer_header) {
        c.fail(
            h.span(),
            &format!("{key}.consumer_header"),
            format!("`{consumer_header}` is removed from every request the gateway receives, so it cannot also carry keys, hosts, credentials or cookies; pick a header of its own, like x-consumer"),
        );
    }
    Some(ApiKeys {
        sources,
        consumers,
        consumer_header,
        hide_credentials: m.hide_credentials.as_ref().is_none_or(|b| *b.get_ref()),
    })
}

fn rate_limit(
    c: &mut Checker,
    m: &MiddlewareConfig,
    span: Range<usize>,
    key: &str,
    has_redis: bool,
) -> Option<RateLimit> {
    let algorithm = match m.algorithm.as_ref().map(|a| (a, a.get_ref().as_str())) {
        None | Some((_, "token_bucket")) => Algorithm::TokenBucket,
        Some((_, "sliding_window")) => Algorithm::SlidingWindow,
        Some((a, other)) => {
            c.fail(
                a.span(),
                &format!("{key}.algorithm"),
                format!("unknown algorithm `{other}`; expected token_bucket or sliding_window"),
            );
            Algorithm::TokenBucket
        }
    };
    if m.rate.is_none() {
        c.fail(
            span,
            key,
            "a rate_limit middleware needs `rate`, like rate = 100",
        );
        return None;
    }
    let rate = c.count(&m.rate, &format!("{key}.rate"), 1, 1) as u64;
    let per = c.duration(&m.per, &format!("{key}.per"), Duration::from_secs(1));
    if per.is_zero() {
        if let Some(p) = &m.per {
            c.fail(p.span(), &format!("{key}.per"), "must be longer than 0");
        }
    }
    let burst = match (&m.burst, algorithm) {
        (Some(b), Algorithm::SlidingWindow) => {
            c.fail(
                b.span(),
                &format!("{key}.burst"),
                "a sliding window has no burst; use token_bucket for one",
            );
            rate
        }
        _ => c.count(&m.burst, &format!("{key}.burst"), rate as usize, 1) as u64,
    };
    let limit_key = match m.key.as_ref() {
        None => LimitKey::Ip,
        Some(k) => match parse_limit_key(k.get_ref()) {
            Ok(parsed) => parsed,
            Err(e) => {
                c.fail(k.span(), &format!("{key}.key"), e);
                LimitKey::Ip
            }
        },
    };
    let store = match m.store.as_ref().map(|s| (s, s.get_ref().as_str())) {
        None | Some((_, "memory")) => Store::Memory,
        Some((s, "redis")) => {
            if !has_redis {
                c.fail(
                    s.span(),
                    &format!("{key}.store"),
                    "the redis store needs a [redis] table with the server's url, like url = \"redis://127.0.0.1:6379\"",
                );
            }
            Store::Redis
        }
        Some((s, other)) => {
            c.fail(
                s.span(),
                &format!("{key}.store"),
                format!("unknown store `{other}`; expected memory or redis"),
            );
            Store::Memory
        }
    };
    let on_store_error = match m.on_store_error.as_ref().map(|s| (s, s.get_ref().as_str())) {
        None | Some((_, "allow")) => OnStoreError::Allow,
        Some((_, "deny")) => OnStoreError::Deny,
        Some((s, other)) => {
            c.fail(
                s.span(),
                &format!("{key}.on_store_error"),
                format!("unknown value `{other}`; expected allow or deny"),
            );
            OnStoreError::Allow
        }
    };
    Some(RateLimit {
        algorithm,
        rate,
        per,
        burst,
        key: limit_key,
        store,
        on_store_error,
    })
}

fn parse_limit_key(text: &str) -> Result<LimitKey, String> {
    let bad =
        || format!("invalid key `{text}`: expected ip, route, consumer, header:NAME or claim:NAME");
    Ok(match text.split_once(':') {
        None if text == "ip" => LimitKey::Ip,
        None if text == "route" => LimitKey::Route,
        None if text == "consumer" => LimitKey::Consumer,
        Some(("header", name)) => {
            LimitKey::Header(HeaderName::from_bytes(name.as_bytes()).map_err(|_| bad())?)
        }
        Some(("claim", name)) if !name.is_empty() => LimitKey::Claim(name.to_string()),
        _ => return Err(bad()),
    })
}

/// Resolves a list of middleware names (`server.middleware` or a route's) to indexes.
/// `defined` names every block in the file, the invalid ones too (already reported).
pub(super) fn attach(
    c: &mut Checker,
    list: &Option<Vec<Spanned<String>>>,
    key: &str,
    (all, defined): (&[Middleware], &[&str]),
    already: &[usize],
) -> Vec<usize> {
    let mut out: Vec<usize> = already.to_vec();
    for (i, name) in list.iter().flatten().enumerate() {
        let k = format!("{key}[{i}]");
        let Some(index) = all.iter().position(|m| m.name == *name.get_ref()) else {
            if defined.contains(&name.get_ref().as_str()) {
                continue;
            }
            let known = defined;
            let hint = if known.is_empty() {
                "no [middleware.NAME] block is defined".to_string()
            } else {
                format!("defined: {}", known.join(", "))
            };
            c.fail(
                name.span(),
                &k,
                format!("no middleware named `{}` ({hint})", name.get_ref()),
            );
            continue;
        };
        if out.contains(&index) {
            let where_ = if already.contains(&index) {
                " (server.middleware runs it on every route)"
            } else {
                ""
            };
            c.fail(
                name.span(),
                &k,
                format!("middleware `{}` is attached twice{where_}", name.get_ref()),
            );
            continue;
        }
        // A rate limit keyed on the consumer needs someone to name the consumer first.
        if let MiddlewareKind::RateLimit(RateLimit {
            key: LimitKey::Consumer,
            ..
        }) = &all[index].kind
        {
            if !out
                .iter()
                .any(|&m| matches!(all[m].kind, MiddlewareKind::ApiKey(_)))
            {
                c.fail(name.span(), &k, format!("rate limit `{}` counts per consumer, so an api_key middleware must come before it", name.get_ref()));
            }
        }
        // One keyed on a claim needs a verified token first.
        if let MiddlewareKind::RateLimit(RateLimit {
            key: LimitKey::Claim(claim),
            ..
        }) = &all[index].kind
        {
            if !out
                .iter()
                .any(|&m| matches!(all[m].kind, MiddlewareKind::Jwt(_)))
            {
                c.fail(name.span(), &k, format!("rate limit `{}` counts per claim `{claim}`, so a jwt middleware must come before it", name.get_ref()));
            }
        }
        out.push(index);
    }
    out
}
