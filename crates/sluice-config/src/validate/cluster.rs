//! Validation of `[clusters.NAME]`: targets, weights, balancing and pool settings.

use super::{resilience, Checker};
use crate::raw::{self, TargetConfig};
use crate::runtime::*;
use crate::tls::UpstreamTls;
use http::{HeaderName, HeaderValue};
use std::path::PathBuf;
use std::time::Duration;
use toml::Spanned;

pub(super) fn cluster(
    c: &mut Checker,
    name: &Spanned<String>,
    cfg: &raw::ClusterConfig,
) -> Option<Cluster> {
    let key = format!("clusters.{}", key_segment(name.get_ref()));
    let before = c.errors.len();
    if cfg.targets.get_ref().is_empty() {
        c.fail(
            cfg.targets.span(),
            &format!("{key}.targets"),
            "a cluster needs at least one target",
        );
    }
    let targets: Vec<Target> = cfg
        .targets
        .get_ref()
        .iter()
        .enumerate()
        .filter_map(|(i, t)| target(c, t, &format!("{key}.targets[{i}]")))
        .collect();
    let hash_key = cfg.hash_key.as_ref().and_then(|h| {
        parse_hash_key(h.get_ref())
            .map_err(|e| c.fail(h.span(), &format!("{key}.hash_key"), e))
            .ok()
    });
    let balance = match cfg
        .balance
        .as_ref()
        .map(|b| (b.get_ref().as_str(), b.span()))
    {
        None | Some(("round_robin", _)) => Balance::RoundRobin,
        Some(("random", _)) => Balance::Random,
        Some(("least_conn", _)) => Balance::LeastConn,
        Some(("weighted", _)) => Balance::Weighted,
        Some(("sticky", _)) => Balance::Sticky,
        Some(("hash", span)) => match hash_key {
            Some(k) => Balance::Hash(k),
            None => {
                if cfg.hash_key.is_none() {
                    c.fail(
                        span,
                        &format!("{key}.balance"),
                        "balance = \"hash\" needs a hash_key",
                    );
                }
                Balance::RoundRobin
            }
        },
        Some((other, span)) => {
            let known = [
                "round_robin",
                "random",
                "least_conn",
                "weighted",
                "hash",
                "sticky",
            ];
            let hint = crate::error::did_you_mean(other, &known)
                .map(|s| format!(" (did you mean `{s}`?)"))
                .unwrap_or_default();
            c.fail(
                span,
                &format!("{key}.balance"),
                format!(
                    "unknown balance `{other}`{hint}; expected one of: {}",
                    known.join(", ")
                ),
            );
            Balance::RoundRobin
        }
    };
    let connect_timeout = c.duration(
        &cfg.connect_timeout,
        &format!("{key}.connect_timeout"),
        Duration::from_secs(5),
    );
    let pool_idle_timeout = c.duration(
        &cfg.pool_idle_timeout,
        &format!("{key}.pool_idle_timeout"),
        Duration::from_secs(90),
    );
    let pool_max_idle = c.count(&cfg.pool_max_idle, &format!("{key}.pool_max_idle"), 256, 0);
    let sticky_cookie = match &cfg.sticky_cookie {
        Some(s)
            if HeaderValue::from_str(s.get_ref()).is_err()
                || s.get_ref().is_empty()
                || s.get_ref().contains(['=', ';', ' ']) =>
        {
            c.fail(
                s.span(),
                &format!("{key}.sticky_cookie"),
                "not a valid cookie name",
            );
            String::new()
        }
        Some(s) => s.get_ref().clone(),
        None => "sluice_sticky".to_string(),
    };
    let max_requests = cfg
        .max_requests
        .as_ref()
        .map(|_| c.count(&cfg.max_requests, &format!("{key}.max_requests"), 1, 1));
    let max_pending = c.count(&cfg.max_pending, &format!("{key}.max_pending"), 0, 0);
    if let Some(p) = cfg.max_pending.as_ref().filter(|_| max_requests.is_none()) {
        c.fail(
            p.span(),
            &format!("{key}.max_pending"),
            "max_pending needs max_requests",
        );
    }
    let panic_threshold = c.percent(&cfg.panic_threshold, &format!("{key}.panic_threshold"), 0);
    let health = cfg
        .health
        .as_ref()
        .map(|h| resilience::health(c, h.get_ref(), &format!("{key}.health")));
    let outlier = cfg
        .outlier
        .as_ref()
        .map(|o| resilience::outlier(c, o.get_ref(), &format!("{key}.outlier")));
    let breaker = cfg
        .breaker
        .as_ref()
        .map(|b| resilience::breaker(c, b.get_ref(), &format!("{key}.breaker")));
    let secure = targets
        .iter()
        .any(|t| matches!(t.address, TargetAddress::Https { .. }));
    let tls = match &cfg.tls {
        Some(t) if !secure => {
            c.fail(
                t.span(),
                &format!("{key}.tls"),
                "no target of this cluster is https://, so these settings would do nothing",
            );
            None
        }
        Some(t) => Some(super::tls::upstream(c, t, &format!("{key}.tls"))),
        None => secure.then(UpstreamTls::default),
    };
    (c.errors.len() == before).then(|| Cluster {
        name: name.get_ref().clone(),
        targets,
        balance,
        http2: cfg.http2.unwrap_or(false),
        preserve_host: cfg.preserve_host.unwrap_or(true),
        connect_timeout,
        pool_idle_timeout,
        pool_max_idle,
        sticky_cookie,
        max_requests,
        max_pending,
        panic_threshold,
        health,
        outlier,
        breaker,
        tls,
    })
}

/// A table name as it appears in a key path: bare when it can be, quoted otherwise.
pub(super) fn key_segment(name: &str) -> String {
    let bare = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if bare {
        name.to_string()
    } else {
        format!("{name:?}")
    }
}

fn target(c: &mut Checker, t: &Spanned<TargetConfig>, key: &str) -> Option<Target> {
    let (url, weight) = match t.get_ref() {
        TargetConfig::Url(u) => (u.as_str(), 1),
        TargetConfig::Weighted(w) => (w.url.as_str(), w.weight.unwrap_or(1)),
    };
    let weight = match u32::try_from(weight) {
        Ok(w) if w > 0 => w,
        _ => {
            c.fail(
                t.span(),
                &format!("{key}.weight"),
                format!("weight must be a whole number of at least 1, got {weight}"),
            );
            return None;
        }
    };
    match parse_target_url(url) {
        Ok(address) => Some(Target {
            url: url.to_string(),
            address,
            weight,
        }),
        Err(e) => {
            c.fail(t.span(), key, e);
            None
        }
    }
}

/// Parses a target URL: `http://host:port` or `unix:/path/to.sock`.
fn parse_target_url(url: &str) -> Result<TargetAddress, String> {
    if let Some(path) = url.strip_prefix("unix:") {
        if !path.starts_with('/') {
            return Err(format!("invalid target URL `{url}`: a unix target needs an absolute path, like \"unix:/run/app.sock\""));
        }
        return Ok(TargetAddress::Unix(PathBuf::from(path)));
    }
    let bad = |why: &str| format!("invalid target URL `{url}`: {why}");
    let uri: http::Uri = url
        .parse()
        .map_err(|_| bad("not a URL; expected http://host:port or unix:/path.sock"))?;
    let secure = match uri.scheme_str() {
        Some("http") => false,
        Some("https") => true,
        Some(s) if s.starts_with("tunnel") => {
            return Err(bad("tunnel targets are not supported yet"))
        }
        _ => {
            return Err(bad(
                "expected http://host:port, https://host:port or unix:/path.sock",
            ))
        }
    };
    if uri.path() != "/" && !uri.path().is_empty() || uri.query().is_some() {
        return Err(bad("a target URL has no path or query"));
    }
    let authority = uri.authority().ok_or_else(|| bad("missing host"))?;
    if authority.as_str().contains('@') {
        return Err(bad("credentials in target URLs are not supported"));
    }
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    if host.is_empty() {
        return Err(bad("missing host"));
    }
    let default_port = if secure { 443 } else { 80 };
    let port = authority.port_u16().unwrap_or(default_port);
    let authority = if authority.port_u16().is_some() {
        authority.as_str().to_string()
    } else {
        format!("{}:{default_port}", authority.host())
    };
    Ok(if secure {
        TargetAddress::Https {
            host,
            port,
            authority,
        }
    } else {
        TargetAddress::Tcp {
            host,
            port,
            authority,
        }
    })
}

fn parse_hash_key(text: &str) -> Result<HashKey, String> {
    let bad = || {
        format!(
            "invalid hash_key `{text}`: expected header:NAME, cookie:NAME, query:NAME, ip or path"
        )
    };
    match text.split_once(':') {
        None if text == "ip" => Ok(HashKey::Ip),
        None if text == "path" => Ok(HashKey::Path),
        Some(("header", n)) => HeaderName::try_from(n)
            .map(HashKey::Header)
            .map_err(|_| bad()),
        Some(("cookie", n)) if !n.is_empty() => Ok(HashKey::Cookie(n.to_string())),
        Some(("query", n)) if !n.is_empty() => Ok(HashKey::Query(n.to_string())),
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_urls() {
        assert_eq!(
            parse_target_url("http://127.0.0.1:8001"),
            Ok(TargetAddress::Tcp {
                host: "127.0.0.1".into(),
                port: 8001,
                authority: "127.0.0.1:8001".into()
            })
        );
        assert_eq!(
            parse_target_url("unix:/tmp/a.sock"),
            Ok(TargetAddress::Unix("/tmp/a.sock".into()))
        );
        assert!(parse_target_url("ftp://x").is_err());
        assert!(parse_target_url("http://x:8/path").is_err());
        assert!(parse_target_url("unix:relative.sock").is_err());
        assert!(parse_target_url("not a url").is_err());
    }
}
