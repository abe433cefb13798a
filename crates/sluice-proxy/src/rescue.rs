//! Turns any failure on the data path into the client's answer: an RFC 9457
//! `application/problem+json` body carrying the request id.

use crate::body::ResponseBody;
use http::header::{HeaderValue, ALLOW, CONNECTION, CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE};
use http::{Response, StatusCode};
use std::sync::Arc;
use std::time::Duration;

/// Everything that can stop a request before the target's answer reaches the client.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("no route matches {0}")]
    NoRoute(String),
    #[error("method not allowed; the route accepts {allow}")]
    MethodNotAllowed { allow: String },
    #[error("bad request: {0}")]
    BadRequest(&'static str),
    #[error("bad path: {0}")]
    BadPath(#[from] crate::router::path::PathError),
    /// The request's framing cannot be trusted: the connection must not carry another.
    #[error("bad request framing: {0}")]
    BadFraming(&'static str),
    /// The client's request body broke off or was malformed while being forwarded.
    #[error("the request body could not be read: {0}")]
    DownstreamBody(String),
    #[error("the client sent no request body data for {0:?} (server.limits.body_read_timeout)")]
    BodyTimeout(Duration),
    #[error("the request body is over the route's limit of {0} bytes")]
    BodyTooLarge(u64),
    #[error("target {target} refused the stream before processing it")]
    RefusedStream { target: String },
    #[error("request URI is {0} bytes, over the limit of {1}")]
    UriTooLong(usize, usize),
    #[error("request headers are over the limit ({0})")]
    HeadersTooLarge(&'static str),
    #[error("cannot connect to target {target}: {cause}")]
    Connect { target: String, cause: String },
    #[error("connecting to target {target} timed out after {after:?}")]
    ConnectTimeout { target: String, after: Duration },
    #[error("target {target} failed: {cause}")]
    Upstream { target: String, cause: String },
    #[error("target {target} did not answer within {after:?}")]
    UpstreamTimeout { target: String, after: Duration },
    #[error("no healthy target in cluster {cluster}")]
    NoHealthyTarget { cluster: String },
    #[error("the circuit of every usable target in cluster {cluster} is open")]
    CircuitOpen { cluster: String },
    #[error("cluster {cluster} is at its max_requests and max_pending")]
    ClusterOverloaded { cluster: String },
    #[error("overloaded: {0}")]
    Overloaded(String),
    /// No credentials, or credentials that do not check out; `challenge` goes into
    /// `WWW-Authenticate`.
    #[error("{detail}")]
    Unauthorized {
        challenge: &'static str,
        detail: &'static str,
    },
    #[error("{0}")]
    Forbidden(String),
    /// A verified bearer token whose claims the route does not accept (RFC 6750
    /// `insufficient_scope`).
    #[error("{0}")]
    InsufficientScope(String),
    #[error("CORS: {0}")]
    CorsRejected(String),
    #[error("rate limit `{limit}` exceeded; retry in {retry_after} s")]
    RateLimited { limit: Arc<str>, retry_after: u64 },
    /// The limit's shared store did not answer in time and `on_store_error = "deny"`.
    #[error("rate limit `{limit}` cannot reach its store")]
    RateLimitStoreUnavailable { limit: Arc<str> },
    #[error("internal error: {0}")]
    Internal(String),
}

impl ProxyError {
    /// The status the client gets.
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::NoRoute(_) => StatusCode::NOT_FOUND,
            ProxyError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ProxyError::BadRequest(_)
            | ProxyError::BadPath(_)
            | ProxyError::BadFraming(_)
            | ProxyError::DownstreamBody(_) => StatusCode::BAD_REQUEST,
            ProxyError::UriTooLong(..) => StatusCode::URI_TOO_LONG,
            ProxyError::BodyTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ProxyError::BodyTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            ProxyError::RefusedStream { .. } => StatusCode::BAD_GATEWAY,
            ProxyError::HeadersTooLarge(_) => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ProxyError::Connect { .. } | ProxyError::Upstream { .. } => StatusCode::BAD_GATEWAY,
            ProxyError::ConnectTimeout { .. } | ProxyError::UpstreamTimeout { .. } => {
                StatusCode::GATEWAY_TIMEOUT
            }
            ProxyError::NoHealthyTarget { .. }
            | ProxyError::CircuitOpen { .. }
            | ProxyError::ClusterOverloaded { .. }
            | ProxyError::Overloaded(_)
            | ProxyError::RateLimitStoreUnavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::Unauthorized { .. } => StatusCode::UNAUTHORIZED,
            ProxyError::Forbidden(_)
            | ProxyError::InsufficientScope(_)
            | ProxyError::CorsRejected(_) => StatusCode::FORBIDDEN,
            ProxyError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ProxyError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// A stable machine-readable name, used as the problem `type` and in logs.
    pub fn code(&self) -> &'static str {
        match self {
            ProxyError::NoRoute(_) => "no_route",
            ProxyError::MethodNotAllowed { .. } => "method_not_allowed",
            ProxyError::BadRequest(_) | ProxyError::BadPath(_) | ProxyError::BadFraming(_) => {
                "bad_request"
            }
            ProxyError::DownstreamBody(_) => "bad_request_body",
            ProxyError::UriTooLong(..) => "uri_too_long",
            ProxyError::BodyTooLarge(_) => "body_too_large",
            ProxyError::BodyTimeout(_) => "request_body_timeout",
            ProxyError::RefusedStream { .. } => "upstream_refused_stream",
            ProxyError::HeadersTooLarge(_) => "headers_too_large",
            ProxyError::Connect { .. } => "upstream_connect_failed",
            ProxyError::ConnectTimeout { .. } => "upstream_connect_timeout",
            ProxyError::Upstream { .. } => "upstream_failed",
            ProxyError::UpstreamTimeout { .. } => "upstream_timeout",
            ProxyError::NoHealthyTarget { .. } => "no_healthy_target",
            ProxyError::CircuitOpen { .. } => "circuit_open",
            ProxyError::ClusterOverloaded { .. } => "cluster_overloaded",
            ProxyError::Overloaded(_) => "overloaded",
            ProxyError::Unauthorized { .. } => "unauthorized",
            ProxyError::Forbidden(_) | ProxyError::InsufficientScope(_) => "forbidden",
            ProxyError::CorsRejected(_) => "cors_rejected",
            ProxyError::RateLimited { .. } => "rate_limited",
            ProxyError::RateLimitStoreUnavailable { .. } => "rate_limit_store_unavailable",
            ProxyError::Internal(_) => "internal",
        }
    }

    /// Whether the failure is logged at `warn` with its request: server-side failures,
    /// except those already logged at most once a second where they arise.
    pub fn warns(&self) -> bool {
        self.status().is_server_error()
            && !matches!(self, ProxyError::RateLimitStoreUnavailable { .. })
    }

    /// Whether the failure is the target's (for outlier detection and the breaker).
    pub fn is_target_failure(&self) -> bool {
        matches!(
            self,
            ProxyError::Connect { .. }
                | ProxyError::ConnectTimeout { .. }
                | ProxyError::Upstream { .. }
                | ProxyError::UpstreamTimeout { .. }
                | ProxyError::RefusedStream { .. }
        )
    }
}

/// The client's answer for `error`.
pub fn rescue(error: &ProxyError, request_id: &str) -> Response<ResponseBody> {
    let status = error.status();
    let body = serde_json::json!({
        "type": format!("urn:sluice:problem:{}", error.code()),
        "title": status.canonical_reason().unwrap_or("Error"),
        "status": status.as_u16(),
        "detail": error.to_string(),
        "request_id": request_id,
    });
    let mut response = Response::new(ResponseBody::full(body.to_string()));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    match error {
        ProxyError::MethodNotAllowed { allow } => {
            if let Ok(v) = HeaderValue::from_str(allow) {
                headers.insert(ALLOW, v);
            }
        }
        ProxyError::BadFraming(_)
        | ProxyError::DownstreamBody(_)
        | ProxyError::BodyTooLarge(_)
        | ProxyError::BodyTimeout(_) => {
            headers.insert(CONNECTION, HeaderValue::from_static("close"));
        }
        ProxyError::NoHealthyTarget { .. }
        | ProxyError::CircuitOpen { .. }
        | ProxyError::ClusterOverloaded { .. }
        | ProxyError::Overloaded(_)
        | ProxyError::RateLimitStoreUnavailable { .. } => {
            headers.insert(RETRY_AFTER, HeaderValue::from_static("1"));
        }
        ProxyError::RateLimited { retry_after, .. } => {
            headers.insert(RETRY_AFTER, HeaderValue::from(*retry_after));
        }
        ProxyError::Unauthorized { challenge, .. } => {
            headers.insert(WWW_AUTHENTICATE, HeaderValue::from_static(challenge));
        }
        ProxyError::InsufficientScope(_) => {
            headers.insert(
                WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer error=\"insufficient_scope\""),
            );
        }
        _ => {}
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problem_body_carries_request_id_and_allow() {
        let e = ProxyError::MethodNotAllowed {
            allow: "GET, PUT".into(),
        };
        let r = rescue(&e, "abc");
        assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(
            r.headers().get(ALLOW).map(|v| v.as_bytes()),
            Some(&b"GET, PUT"[..])
        );
        assert_eq!(
            r.headers().get(CONTENT_TYPE).map(|v| v.as_bytes()),
            Some(&b"application/problem+json"[..])
        );
    }

    #[test]
    fn an_unreachable_limit_store_is_a_503_to_retry_in_a_second() {
        let e = ProxyError::RateLimitStoreUnavailable {
            limit: Arc::from("shared"),
        };
        let r = rescue(&e, "abc");
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(e.code(), "rate_limit_store_unavailable");
        assert_eq!(
            r.headers().get(RETRY_AFTER).map(|v| v.as_bytes()),
            Some(&b"1"[..])
        );
        assert!(!e.warns(), "the limiter logs it, once a second");
        assert!(ProxyError::Overloaded("x".into()).warns());
    }

    #[test]
    fn bad_framing_closes_the_connection() {
        let r = rescue(&ProxyError::BadFraming("te"), "abc");
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        assert_eq!(
            r.headers().get(CONNECTION).map(|v| v.as_bytes()),
            Some(&b"close"[..])
        );
        let r = rescue(&ProxyError::BadRequest("path"), "abc");
        assert!(r.headers().get(CONNECTION).is_none());
    }
}
