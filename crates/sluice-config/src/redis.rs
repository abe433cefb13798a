//! `[redis]`: the Redis server that holds what several gateway nodes share (rate-limit counts), and the check of its `redis://` URL.

use std::fmt;
use std::time::Duration;

/// The Redis server of `[redis]`. Each gateway process keeps one connection to it,
/// shared by every middleware that uses it.
#[derive(Clone, PartialEq, Eq)]
pub struct Redis {
    /// `redis://[[user]:password@]host[:port][/db]`, checked by [`parse_redis_url`].
    pub url: String,
    /// The longest one round trip may take, waiting for the connection included.
    pub timeout: Duration,
}

impl Redis {
    /// The URL with its password replaced by `***`, for logs and errors.
    pub fn display_url(&self) -> String {
        mask_password(&self.url)
    }
}

// By hand so that the password never reaches a debug print.
impl fmt::Debug for Redis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Redis")
            .field("url", &self.display_url())
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// The parts of a `redis://` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisUrl {
    pub host: String,
    pub port: u16,
    pub db: u32,
}

const SCHEME: &str = "redis://";
const DEFAULT_PORT: u16 = 6379;

/// Checks `redis://[[user]:password@]host[:port][/db]`: a host name, an IPv4 address or
/// a bracketed IPv6 address, a port (6379 when left out) and a database number (0).
pub fn parse_redis_url(text: &str) -> Result<RedisUrl, String> {
    let shown = mask_password(text);
    let bad = |why: &str| format!("invalid Redis URL `{shown}`: {why}");
    let Some(rest) = text.strip_prefix(SCHEME) else {
        if text.starts_with("rediss://") {
            return Err(bad(
                "TLS to Redis (rediss://) is not supported in this version; use redis://",
            ));
        }
        return Err(bad(
            "expected redis://host:port[/db], like \"redis://127.0.0.1:6379\"",
        ));
    };
    if rest.contains(['?', '#']) {
        return Err(bad("a query or fragment is not allowed"));
    }
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, hp)| hp);
    let (host, port) = split_host_port(host_port).ok_or_else(|| {
        bad("expected a host and an optional port, like 127.0.0.1:6379 or [::1]:6379")
    })?;
    if host.is_empty()
        || !host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':'))
    {
        return Err(bad("the host is missing or not a valid name or address"));
    }
    let port = match port {
        None => DEFAULT_PORT,
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n > 0 => n,
            _ => return Err(bad("the port must be a number from 1 to 65535")),
        },
    };
    let db = match path.trim_start_matches('/') {
        "" if path.len() <= 1 => 0,
        n => n
            .parse::<u32>()
            .ok()
            .filter(|_| !n.starts_with('+'))
            .ok_or_else(|| bad("the path must be a database number, like /0"))?,
    };
    Ok(RedisUrl {
        host: host.to_string(),
        port,
        db,
    })
}

/// `host` and `port` of `host[:port]` or `[v6][:port]`; `None` when malformed.
fn split_host_port(text: &str) -> Option<(&str, Option<&str>)> {
    if let Some(v6) = text.strip_prefix('[') {
        let (host, after) = v6.split_once(']')?;
        host.parse::<std::net::Ipv6Addr>().ok()?;
        return match after {
            "" => Some((host, None)),
            _ => Some((host, Some(after.strip_prefix(':')?))),
        };
    }
    match text.split_once(':') {
        Some((_, port)) if port.contains(':') => None,
        Some((host, port)) => Some((host, Some(port))),
        None => Some((text, None)),
    }
}

/// `text` with the password of its user info replaced by `***`.
fn mask_password(text: &str) -> String {
    let Some(rest) = text.strip_prefix(SCHEME) else {
        return text.to_string();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rsplit_once('@') {
        Some((user_info, _)) if user_info.contains(':') => {
            let user = user_info.split_once(':').map_or("", |(u, _)| u);
            format!("{SCHEME}{user}:***@{}", &rest[user_info.len() + 1..])
        }
        _ => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(host: &str, port: u16, db: u32) -> RedisUrl {
        RedisUrl {
            host: host.into(),
            port,
            db,
        }
    }

    #[test]
    fn redis_urls_name_a_host_a_port_and_a_database() {
        assert_eq!(
            parse_redis_url("redis://127.0.0.1:6380/2"),
            Ok(url("127.0.0.1", 6380, 2))
        );
        assert_eq!(
            parse_redis_url("redis://cache.internal"),
            Ok(url("cache.internal", 6379, 0))
        );
        assert_eq!(
            parse_redis_url("redis://:s3cret@[::1]:7000/"),
            Ok(url("::1", 7000, 0))
        );
        assert_eq!(
            parse_redis_url("redis://app:p@ss@redis:6379/15"),
            Ok(url("redis", 6379, 15))
        );
        for (text, why) in [
            ("http://127.0.0.1:6379", "expected redis://host:port[/db]"),
            ("rediss://127.0.0.1:6379", "rediss://) is not supported"),
            ("redis://", "the host is missing"),
            ("redis://:6379", "the host is missing"),
            ("redis://host:0", "the port must be"),
            ("redis://host:65536", "the port must be"),
            ("redis://host:port", "the port must be"),
            ("redis://ho st:1", "not a valid name"),
            ("redis://host/db", "a database number"),
            ("redis://host/1/2", "a database number"),
            ("redis://host/-1", "a database number"),
            ("redis://host?protocol=resp3", "a query or fragment"),
            ("redis://[::1", "expected a host and an optional port"),
            ("redis://::1:6379", "expected a host and an optional port"),
        ] {
            let got = parse_redis_url(text).expect_err(text);
            assert!(got.contains(why), "{text}: {got}");
        }
    }

    #[test]
    fn passwords_are_masked_in_messages_and_debug_output() {
        let err = parse_redis_url("redis://app:hunter22@host:0").expect_err("bad port");
        assert!(!err.contains("hunter22"), "{err}");
        assert!(err.contains("redis://app:***@host:0"), "{err}");
        let r = Redis {
            url: "redis://:hunter22@127.0.0.1:6379/1".into(),
            timeout: Duration::from_millis(50),
        };
        assert_eq!(r.display_url(), "redis://:***@127.0.0.1:6379/1");
        assert!(!format!("{r:?}").contains("hunter22"));
        assert_eq!(mask_password("redis://user@h:1"), "redis://user@h:1");
    }
}
