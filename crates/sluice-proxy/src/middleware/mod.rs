//! The middleware a route runs between routing and its cluster, in the order written, and what they learn about the request on the way.

pub mod api_key;
pub mod cors;
pub mod headers;
pub mod ip;
pub mod jwt;
pub mod rate_limit;

use crate::body::ResponseBody;
use crate::metrics::Metrics;
use crate::rescue::ProxyError;
use http::header::HeaderMap;
use http::request::Parts;
use http::{HeaderName, HeaderValue, Response};
use sluice_config::{Cidr, ConfigError, Middleware, MiddlewareKind, Piece, Template};
use std::fmt::Write as _;
use std::net::IpAddr;
use std::sync::Arc;

/// One middleware, ready to run.
#[derive(Debug)]
pub enum Stage {
    Ip(sluice_config::IpRules),
    Headers(sluice_config::HeaderTransform),
    Cors(sluice_config::Cors),
    ApiKey(api_key::Keys),
    Jwt(Box<jwt::Verifier>),
    RateLimit(Arc<rate_limit::Limiter>),
}

impl Stage {
    /// Builds `m`, keeping the state (rate-limit counters, a JWKS) of `previous` when it
    /// is the same middleware with the same settings. `redis` is the gateway's Redis
    /// store; `file` names the configuration in errors (key files that do not load).
    pub fn build(
        m: &Middleware,
        previous: Option<&Stage>,
        redis: Option<&Arc<rate_limit::redis::RedisStore>>,
        file: &str,
    ) -> Result<Stage, ConfigError> {
        Ok(match &m.kind {
            MiddlewareKind::Ip(rules) => Stage::Ip(rules.clone()),
            MiddlewareKind::Headers(t) => Stage::Headers(t.clone()),
            MiddlewareKind::Cors(c) => Stage::Cors(c.clone()),
            MiddlewareKind::ApiKey(k) => Stage::ApiKey(api_key::Keys::new(k)),
            MiddlewareKind::Jwt(j) => {
                let old = match previous {
                    Some(Stage::Jwt(old)) => Some(&**old),
                    _ => None,
                };
                Stage::Jwt(Box::new(jwt::Verifier::new(&m.name, j, old, file)?))
            }
            MiddlewareKind::RateLimit(limit) => Stage::RateLimit(match previous {
                Some(Stage::RateLimit(old)) if old.can_keep(limit, redis) => Arc::clone(old),
                _ => Arc::new(rate_limit::Limiter::new(&m.name, limit.clone(), redis)),
            }),
        })
    }
}

/// What the pipeline learned about one request, for the stages after it, the response
/// and the access log.
#[derive(Debug, Default)]
pub struct RequestState {
    pub client_ip: Option<IpAddr>,
    pub consumer: Option<Arc<str>>,
    /// The claims of the token a `jwt` middleware verified.
    pub claims: Option<jwt::Claims>,
    /// How many stages ran: their response hooks run, last first.
    ran: usize,
    /// The `Access-Control-Allow-Origin` to answer with.
    cors_origin: Option<HeaderValue>,
    /// The last rate limit's verdict, for the `RateLimit-*` headers.
    rate: Option<rate_limit::Verdict>,
}

/// Fills a header template for this request; placeholders with nothing to say are empty,
/// and control characters never reach the value.
pub fn fill(
    template: &Template,
    state: &RequestState,
    request_id: &HeaderValue,
    route: &str,
) -> HeaderValue {
    let pieces = match template {
        Template::Fixed(v) => return v.clone(),
        Template::Parts(p) => p,
    };
    let mut out = String::new();
    for piece in pieces {
        match piece {
            Piece::Text(t) => out.push_str(t),
            Piece::ClientIp => {
                if let Some(ip) = state.client_ip {
                    let _ = write!(out, "{ip}");
                }
            }
            Piece::RequestId => out.push_str(request_id.to_str().unwrap_or("")),
            Piece::Route => out.push_str(route),
            Piece::Consumer => out.push_str(state.consumer.as_deref().unwrap_or("")),
            Piece::Claim(name) => {
                if let Some(text) = state.claims.as_ref().and_then(|c| c.text(name)) {
                    out.push_str(&text);
                }
            }
        }
    }
    header_value(&out).unwrap_or(HeaderValue::from_static(""))
}

/// `text` as a header value, without its control characters, so that nothing a client
/// or a token says can end a header line. UTF-8 is kept as it is.
pub fn header_value(text: &str) -> Option<HeaderValue> {
    if !text.chars().any(char::is_control) {
        return HeaderValue::from_bytes(text.as_bytes()).ok();
    }
    let mut clean = text.to_string();
    clean.retain(|c| !c.is_control());
    HeaderValue::from_bytes(clean.as_bytes()).ok()
}

/// The client's address: the TCP peer, unless the peer is a trusted proxy; then the
/// rightmost `X-Forwarded-For` entry that is not a trusted proxy itself.
pub fn client_ip(peer: Option<IpAddr>, headers: &HeaderMap, trusted: &[Cidr]) -> Option<IpAddr> {
    let peer = peer?;
    let is_trusted = |ip: IpAddr| trusted.iter().any(|c| c.contains(ip));
    if !is_trusted(peer) {
        return Some(peer);
    }
    let mut client = peer;
    let entries = headers
        .get_all(HeaderName::from_static("x-forwarded-for"))
        .iter()
        .rev()
        .flat_map(|v| v.to_str().unwrap_or("").rsplit(','));
    for entry in entries {
        match entry.trim().parse::<IpAddr>() {
            Ok(ip) => {
                client = ip;
                if !is_trusted(ip) {
                    break;
                }
            }
            // Garbage in the chain: stop at the last address we could believe.
            Err(_) => break,
        }
    }
    Some(client)
}

/// Everything a stage needs to know besides the request itself.
pub struct Context<'a> {
    pub route: &'a str,
    pub request_id: &'a HeaderValue,
    pub metrics: &'a Metrics,
}

/// The stages of one route, in order.
#[derive(Debug, Default)]
pub struct Pipeline {
    stages: Vec<Arc<Stage>>,
}

impl Pipeline {
    pub fn new(stages: Vec<Arc<Stage>>) -> Self {
        Pipeline { stages }
    }

    pub fn is_empty(&self) -> bool {
        self.stages.is_empty()
    }

    /// Whether a CORS preflight for this route is answered by the gateway.
    pub fn answers_preflight(&self) -> bool {
        self.stages.iter().any(|s| matches!(**s, Stage::Cors(_)))
    }

    /// Runs the request side of every stage. `Ok(Some(response))` answers the request
    /// here (a CORS preflight); an error is the client's answer. Only a limit counted in
    /// Redis waits; the other stages never do.
    pub async fn request(
        &self,
        parts: &mut Parts,
        state: &mut RequestState,
        cx: &Context<'_>,
    ) -> Result<Option<Response<ResponseBody>>, ProxyError> {
        for stage in &self.stages {
            state.ran += 1;
            match &**stage {
                Stage::Ip(rules) => ip::check(rules, state.client_ip)?,
                Stage::Headers(t) => headers::apply(&t.request, &mut parts.headers, state, cx),
                Stage::Cors(cors) => {
                    if let Some(answer) = cors::request(cors, parts, state)? {
                        return Ok(Some(answer));
                    }
                }
                Stage::ApiKey(keys) => keys.check(parts, state)?,
                Stage::Jwt(verifier) => verifier.check(parts, state).await?,
                Stage::RateLimit(limiter) => limiter.check(parts, state, cx).await?,
            }
        }
        Ok(None)
    }

    /// Runs the response side of the stages that ran, last first, on any answer: the
    /// target's, the gateway's own, or an error.
    pub fn respond(&self, headers: &mut HeaderMap, state: &RequestState, cx: &Context<'_>) {
        for stage in self.stages[..state.ran.min(self.stages.len())].iter().rev() {
            match &**stage {
                Stage::Headers(t) => headers::apply(&t.response, headers, state, cx),
                Stage::Cors(cors) => cors::respond(cors, headers, state),
                Stage::RateLimit(_) => rate_limit::respond(headers, state),
                Stage::Ip(_) | Stage::ApiKey(_) | Stage::Jwt(_) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn xff(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            "x-forwarded-for",
            HeaderValue::from_str(value).expect("value"),
        );
        h
    }

    #[test]
    fn client_ip_walks_forwarded_for_from_the_right_past_trusted_proxies() {
        let trusted = [Cidr::parse("10.0.0.0/8").expect("cidr")];
        let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
        let proxy = Some(ip("10.0.0.1"));
        // An untrusted peer's header is ignored.
        assert_eq!(
            client_ip(Some(ip("203.0.113.9")), &xff("1.2.3.4"), &trusted),
            Some(ip("203.0.113.9"))
        );
        assert_eq!(
            client_ip(proxy, &xff("6.6.6.6, 198.51.100.7, 10.0.0.2"), &trusted),
            Some(ip("198.51.100.7"))
        );
        // Only trusted hops: the leftmost one.
        assert_eq!(
            client_ip(proxy, &xff("10.1.1.1, 10.0.0.2"), &trusted),
            Some(ip("10.1.1.1"))
        );
        assert_eq!(client_ip(proxy, &HeaderMap::new(), &trusted), proxy);
        assert_eq!(
            client_ip(proxy, &xff("nonsense, 198.51.100.7"), &trusted),
            Some(ip("198.51.100.7"))
        );
        assert_eq!(client_ip(None, &xff("1.2.3.4"), &trusted), None);
    }

    #[test]
    fn filled_templates_carry_no_control_characters() {
        let state = RequestState {
            consumer: Some(Arc::from("al\r\nice")),
            client_ip: Some("192.0.2.1".parse().expect("ip")),
            ..RequestState::default()
        };
        let t = Template::parse("{consumer}@{client_ip} {route} {request_id}").expect("template");
        let v = fill(&t, &state, &HeaderValue::from_static("rid"), "r1");
        assert_eq!(v, "alice@192.0.2.1 r1 rid");
    }
}
