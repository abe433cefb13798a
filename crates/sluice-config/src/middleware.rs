//! Middleware as the data path runs it (IP rules, header transforms, CORS, API keys, JWTs, rate limits), validated from `[middleware.NAME]` blocks.

use http::{HeaderName, HeaderValue, Method};
use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

/// One `[middleware.NAME]` block.
#[derive(Debug, Clone, PartialEq)]
pub struct Middleware {
    pub name: String,
    pub kind: MiddlewareKind,
}

#[derive(Debug, Clone, PartialEq)]
pub enum MiddlewareKind {
    Ip(IpRules),
    Headers(HeaderTransform),
    Cors(Cors),
    ApiKey(ApiKeys),
    Jwt(Box<crate::jwt::Jwt>),
    RateLimit(RateLimit),
}

impl MiddlewareKind {
    /// The `type` written in the file.
    pub fn type_name(&self) -> &'static str {
        match self {
            MiddlewareKind::Ip(_) => "ip",
            MiddlewareKind::Headers(_) => "headers",
            MiddlewareKind::Cors(_) => "cors",
            MiddlewareKind::ApiKey(_) => "api_key",
            MiddlewareKind::Jwt(_) => "jwt",
            MiddlewareKind::RateLimit(_) => "rate_limit",
        }
    }
}

/// An address block: `10.0.0.0/8`, `2001:db8::/32`, or one address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    pub fn parse(text: &str) -> Result<Cidr, String> {
        let bad = |why: &str| format!("invalid address block `{text}`: {why}");
        let (addr, prefix) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| bad("expected an IP address like \"10.0.0.0/8\" or \"::1\""))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => match p.parse::<u8>() {
                Ok(n) if n <= max => n,
                _ => return Err(bad(&format!("the prefix length must be 0 to {max}"))),
            },
        };
        let cidr = Cidr { addr, prefix };
        if cidr.network() != addr {
            return Err(bad(&format!(
                "host bits are set; the block is {}",
                Cidr {
                    addr: cidr.network(),
                    prefix
                }
            )));
        }
        Ok(cidr)
    }

    fn network(&self) -> IpAddr {
        match self.addr {
            IpAddr::V4(a) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                IpAddr::V4((u32::from(a) & mask).into())
            }
            IpAddr::V6(a) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                IpAddr::V6((u128::from(a) & mask).into())
            }
        }
    }

    /// Whether `ip` is in the block; an IPv4-mapped IPv6 address counts as IPv4.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(ip) & mask == u32::from(net)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(ip) & mask == u128::from(net)
            }
            _ => false,
        }
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// `type = "ip"`: deny wins; with an allow list, only its blocks get through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpRules {
    pub allow: Vec<Cidr>,
    pub deny: Vec<Cidr>,
}

/// `type = "headers"`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct HeaderTransform {
    pub request: HeaderOps,
    pub response: HeaderOps,
}

/// Removals first, then `set` (replacing), then `add` (appending).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct HeaderOps {
    pub remove: Vec<HeaderName>,
    pub set: Vec<(HeaderName, Template)>,
    pub add: Vec<(HeaderName, Template)>,
}

impl HeaderOps {
    pub fn is_empty(&self) -> bool {
        self.remove.is_empty() && self.set.is_empty() && self.add.is_empty()
    }
}

/// A header value with placeholders filled per request.
#[derive(Debug, Clone, PartialEq)]
pub enum Template {
    /// No placeholder: the value as written.
    Fixed(HeaderValue),
    Parts(Vec<Piece>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    Text(String),
    ClientIp,
    RequestId,
    Route,
    Consumer,
    Claim(String),
}

impl Template {
    /// Parses `text`: `{client_ip}`, `{request_id}`, `{route}`, `{consumer}` and
    /// `{claim.NAME}` are filled per request; `{{` and `}}` are literal braces.
    pub fn parse(text: &str) -> Result<Template, String> {
        let mut pieces = Vec::new();
        let mut literal = String::new();
        let mut rest = text;
        while let Some(at) = rest.find(['{', '}']) {
            literal.push_str(&rest[..at]);
            let tail = &rest[at..];
            if tail.starts_with("{{") || tail.starts_with("}}") {
                literal.push_str(&tail[..1]);
                rest = &tail[2..];
                continue;
            }
            if tail.starts_with('}') {
                return Err("unmatched `}` (write `}}` for a literal brace)".into());
            }
            let close = tail
                .find('}')
                .ok_or("unclosed `{` (write `{{` for a literal brace)")?;
            let name = &tail[1..close];
            let piece = match name {
                "client_ip" => Piece::ClientIp,
                "request_id" => Piece::RequestId,
                "route" => Piece::Route,
                "consumer" => Piece::Consumer,
                _ => match name.strip_prefix("claim.") {
                    Some(claim) if !claim.is_empty() => Piece::Claim(claim.to_string()),
                    _ => return Err(format!(
                        "unknown placeholder `{{{name}}}`; expected client_ip, request_id, route, consumer or claim.NAME"
                    )),
                },
            };
            if !literal.is_empty() {
                pieces.push(Piece::Text(std::mem::take(&mut literal)));
            }
            pieces.push(piece);
            rest = &tail[close + 1..];
        }
        literal.push_str(rest);
        let check = |t: &str| {
            HeaderValue::from_str(t).map_err(|_| {
                "not a valid header value (control characters are not allowed)".to_string()
            })
        };
        if pieces.is_empty() {
            return check(&literal).map(Template::Fixed);
        }
        if !literal.is_empty() {
            check(&literal)?;
            pieces.push(Piece::Text(literal));
        }
        for piece in &pieces {
            if let Piece::Text(t) = piece {
                check(t)?;
            }
        }
        Ok(Template::Parts(pieces))
    }
}

/// `type = "cors"`.
#[derive(Debug, Clone, PartialEq)]
pub struct Cors {
    pub origins: Vec<OriginPattern>,
    pub methods: Vec<Method>,
    /// Request headers a page may send; `None` allows those the preflight asks for.
    pub allow_headers: Option<Vec<HeaderName>>,
    pub expose_headers: Vec<HeaderName>,
    pub credentials: bool,
    pub max_age: Option<Duration>,
}

/// An allowed `Origin`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OriginPattern {
    /// `*`: every origin.
    Any,
    /// `https://app.example.com`, compared without case.
    Exact(String),
    /// `https://*.example.com`: any subdomain, at any depth, on that scheme (and port).
    Subdomain { scheme: String, suffix: String },
}

impl OriginPattern {
    pub fn parse(text: &str) -> Result<OriginPattern, String> {
        if text == "*" {
            return Ok(OriginPattern::Any);
        }
        let lower = text.to_ascii_lowercase();
        let (scheme, host) = lower.split_once("://").ok_or_else(|| {
            format!("invalid origin `{text}`: expected scheme://host[:port], like \"https://app.example.com\"")
        })?;
        if scheme.is_empty() || host.is_empty() || host.contains('/') {
            return Err(format!(
                "invalid origin `{text}`: expected scheme://host[:port] with no path"
            ));
        }
        match host.strip_prefix("*.") {
            Some(suffix) if !suffix.is_empty() && !suffix.contains('*') => {
                Ok(OriginPattern::Subdomain {
                    scheme: scheme.to_string(),
                    suffix: format!(".{suffix}"),
                })
            }
            _ if host.contains('*') => Err(format!(
                "invalid origin `{text}`: a wildcard is only allowed as the first label, like \"https://*.example.com\""
            )),
            _ => Ok(OriginPattern::Exact(lower)),
        }
    }

    /// Whether the `Origin` header value `origin` is allowed.
    pub fn matches(&self, origin: &str) -> bool {
        match self {
            OriginPattern::Any => true,
            OriginPattern::Exact(o) => o.eq_ignore_ascii_case(origin),
            OriginPattern::Subdomain { scheme, suffix } => {
                let Some((s, host)) = origin.split_once("://") else {
                    return false;
                };
                s.eq_ignore_ascii_case(scheme)
                    && host.len() > suffix.len()
                    && host
                        .get(host.len() - suffix.len()..)
                        .is_some_and(|tail| tail.eq_ignore_ascii_case(suffix))
                    && !host[..host.len() - suffix.len()].contains(['/', '@', ':'])
            }
        }
    }
}

/// `type = "api_key"`.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiKeys {
    /// Where the key is looked for, in order.
    pub sources: Vec<KeySource>,
    pub consumers: Vec<Consumer>,
    /// The header that tells the origin who the consumer is.
    pub consumer_header: HeaderName,
    /// Remove the key from the request before it is forwarded.
    pub hide_credentials: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    Header(HeaderName),
    Query(String),
}

/// A named API client and the SHA-256 digests of its keys (never the keys themselves).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Consumer {
    pub name: String,
    pub key_digests: Vec<[u8; 32]>,
}

/// `type = "rate_limit"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimit {
    pub algorithm: Algorithm,
    /// Requests allowed per `per`.
    pub rate: u64,
    pub per: Duration,
    /// Token bucket capacity (defaults to `rate`); unused by the sliding window.
    pub burst: u64,
    pub key: LimitKey,
    pub store: Store,
    pub on_store_error: OnStoreError,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    TokenBucket,
    SlidingWindow,
}

/// What requests are counted together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LimitKey {
    Ip,
    Header(HeaderName),
    Consumer,
    Claim(String),
    Route,
}

/// Where a rate limit keeps its counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Store {
    /// In the gateway process: each node counts alone.
    Memory,
    /// In the `[redis]` server: every node counts together.
    Redis,
}

/// What a limit does with a request when its store cannot answer in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnStoreError {
    Allow,
    Deny,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_blocks() {
        let net = Cidr::parse("10.1.0.0/16").expect("valid");
        assert!(net.contains("10.1.200.3".parse().expect("ip")));
        assert!(!net.contains("10.2.0.1".parse().expect("ip")));
        assert!(net.contains("::ffff:10.1.0.9".parse().expect("ip")));
        let one = Cidr::parse("192.168.1.7").expect("valid");
        assert!(one.contains("192.168.1.7".parse().expect("ip")));
        assert!(!one.contains("192.168.1.8".parse().expect("ip")));
        let v6 = Cidr::parse("2001:db8::/32").expect("valid");
        assert!(v6.contains("2001:db8:1::1".parse().expect("ip")));
        assert!(!v6.contains("10.1.0.1".parse().expect("ip")));
        assert!(Cidr::parse("0.0.0.0/0")
            .expect("valid")
            .contains("8.8.8.8".parse().expect("ip")));
        assert_eq!(
            Cidr::parse("10.1.2.3/16"),
            Err(
                "invalid address block `10.1.2.3/16`: host bits are set; the block is 10.1.0.0/16"
                    .into()
            )
        );
        assert!(Cidr::parse("10.0.0.0/33").is_err());
        assert!(Cidr::parse("example.com").is_err());
    }

    #[test]
    fn templates() {
        assert_eq!(
            Template::parse("static"),
            Ok(Template::Fixed(HeaderValue::from_static("static")))
        );
        assert_eq!(
            Template::parse("ip={client_ip} {{x}} {claim.sub}"),
            Ok(Template::Parts(vec![
                Piece::Text("ip=".into()),
                Piece::ClientIp,
                Piece::Text(" {x} ".into()),
                Piece::Claim("sub".into()),
            ]))
        );
        assert!(Template::parse("{nope}").is_err());
        assert!(Template::parse("{client_ip").is_err());
        assert!(Template::parse("a}b").is_err());
        assert!(Template::parse("bad\r\nx: y").is_err());
    }

    #[test]
    fn origins() {
        let exact = OriginPattern::parse("https://App.example.com").expect("valid");
        assert!(exact.matches("https://app.example.com"));
        assert!(!exact.matches("http://app.example.com"));
        let sub = OriginPattern::parse("https://*.example.com").expect("valid");
        assert!(sub.matches("https://a.example.com"));
        assert!(sub.matches("https://a.b.EXAMPLE.com"));
        assert!(!sub.matches("https://example.com"));
        assert!(!sub.matches("https://evil-example.com"));
        assert!(!sub.matches("https://a.example.com.evil.net"));
        assert!(!sub.matches("http://a.example.com"));
        assert!(OriginPattern::parse("https://a.*.com").is_err());
        assert!(OriginPattern::parse("example.com").is_err());
        assert!(OriginPattern::parse("https://a.com/path").is_err());
    }
}
