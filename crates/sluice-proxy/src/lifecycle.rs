//! A request's whole life, top to bottom: limits, host, path, route, then either the
//! gateway's own answer or cluster -> target -> response; failures go through `rescue`.

use crate::body::{Held, RequestRecord, ResponseBody};
use crate::cluster::TargetState;
use crate::counted::Counted;
use crate::forward::{forward, Forwarded, Origin, Outgoing, Payload};
use crate::gateway::{Gateway, Snapshot};
use crate::metrics::Metrics;
use crate::middleware::{self, cors, Context, RequestState};
use crate::protocol::http1::ClientUpgrade;
use crate::protocol::DownstreamBody;
use crate::rescue::{rescue, ProxyError};
use crate::router::{host_without_port, path, Params, RouteMatch};
use crate::upstream::headers::{ip_header, set_upgrade, strip_hop_by_hop, Forwarding};
use crate::upstream::{Kept, RequestBody};
use http::header::{HeaderValue, CONTENT_LENGTH, HOST, SET_COOKIE, TRANSFER_ENCODING};
use http::request::Parts;
use http::uri::PathAndQuery;
use http::{HeaderName, Method, Request, Response, StatusCode, Uri, Version};
use http_body::Body;
use sluice_config::{Action, Limits, Route};
use std::borrow::Cow;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

/// The client connection a request arrived on.
#[derive(Debug)]
pub struct ConnInfo {
    /// The TCP peer; `None` on a Unix-socket listener.
    pub peer: Option<SocketAddr>,
    /// `http` or `https`.
    pub proto: &'static str,
    /// The subject of the client certificate the TLS handshake verified.
    pub client_subject: Option<HeaderValue>,
    /// The peer's address as `X-Forwarded-For` text, written once per connection.
    peer_ip: Option<HeaderValue>,
}

impl ConnInfo {
    pub fn new(
        peer: Option<SocketAddr>,
        proto: &'static str,
        client_subject: Option<HeaderValue>,
    ) -> Self {
        ConnInfo {
            peer,
            proto,
            client_subject,
            peer_ip: peer.map(|p| ip_header(p.ip())),
        }
    }
}

/// `X-Request-Id`: kept from the client when sane, otherwise generated, and returned.
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// What the request has reached so far, for its access-log line and metrics.
#[derive(Default)]
struct Progress {
    route: Option<usize>,
    target: Option<Arc<TargetState>>,
    /// What the route's middleware learned.
    state: RequestState,
}

/// Serves one request. Never fails: every error becomes a problem+json answer.
pub async fn handle(
    gateway: &Gateway,
    conn: &ConnInfo,
    request: Request<DownstreamBody>,
) -> Result<Response<ResponseBody>, Infallible> {
    let start = Instant::now();
    gateway.metrics.active_requests.inc();
    let snapshot = gateway.snapshot();
    let request_id = request_id(&request);
    let method = request.method().clone();
    let access_log = snapshot.config.server.access_log;
    let log_path = if access_log {
        request.uri().path().to_string()
    } else {
        String::new()
    };

    let mut progress = Progress::default();
    let mut response = match proxy(
        &snapshot,
        &gateway.metrics,
        conn,
        request,
        &request_id,
        &mut progress,
    )
    .await
    {
        Ok(response) => response,
        Err(error) => {
            let route = progress
                .route
                .map(|r| snapshot.config.routes[r].name.as_str())
                .unwrap_or("-");
            if error.warns() {
                tracing::warn!(
                    request_id = request_id.to_str().unwrap_or(""),
                    route,
                    code = error.code(),
                    "{error}"
                );
            } else {
                tracing::info!(
                    request_id = request_id.to_str().unwrap_or(""),
                    route,
                    code = error.code(),
                    "{error}"
                );
            }
            rescue(&error, request_id.to_str().unwrap_or(""))
        }
    };

    if let Some(index) = progress.route {
        let pipeline = &snapshot.pipelines.routes[index];
        if !pipeline.is_empty() {
            let cx = Context {
                route: &snapshot.config.routes[index].name,
                request_id: &request_id,
                metrics: &gateway.metrics,
            };
            pipeline.respond(response.headers_mut(), &progress.state, &cx);
        }
    }
    // Kept for the access-log line only when there is one.
    let logged_id = if access_log {
        request_id.clone()
    } else {
        HeaderValue::from_static("")
    };
    response.body_mut().set_request_id(request_id);
    let route = progress
        .route
        .map(|r| Arc::clone(&snapshot.route_series[r]))
        .unwrap_or_else(|| Arc::clone(&gateway.metrics.unmatched));
    let record = RequestRecord {
        metrics: Arc::clone(&gateway.metrics),
        access_log,
        start,
        method,
        path: log_path,
        route,
        target: progress.target.map(|t| Arc::clone(&t.name)),
        consumer: progress.state.consumer.take(),
        status: response.status(),
        request_id: logged_id,
        bytes: 0,
    };
    response.body_mut().set_record(record);
    Ok(response)
}

async fn proxy(
    snapshot: &Snapshot,
    metrics: &Metrics,
    conn: &ConnInfo,
    request: Request<DownstreamBody>,
    request_id: &HeaderValue,
    progress: &mut Progress,
) -> Result<Response<ResponseBody>, ProxyError> {
    let (mut parts, body) = request.into_parts();
    let client_version = parts.version;
    let limits = &snapshot.config.server.limits;
    if let Some(max) = limits.max_requests {
        // This request is already counted.
        if metrics.active_requests.get() > i64::try_from(max).unwrap_or(i64::MAX) {
            return Err(ProxyError::Overloaded(format!(
                "{max} requests in flight (server.limits.max_requests)"
            )));
        }
    }
    check_limits(&parts, limits)?;
    // Sluice's HTTP/1.1 server checked the framing while reading the head.
    let http2 = matches!(body, DownstreamBody::H2(_));
    if http2 {
        check_framing(&parts)?;
    }
    if parts.method == Method::CONNECT {
        return Err(ProxyError::BadRequest("CONNECT is not supported"));
    }
    let tls = snapshot.config.server.tls.as_ref();
    if let Some(tls) = tls.filter(|t| t.redirect_http && conn.proto == "http") {
        return redirect_to_https(&parts, tls);
    }
    let pipelines = &snapshot.pipelines;
    for name in &pipelines.owned_headers {
        parts.headers.remove(name);
    }
    // The verified client certificate's subject, and nobody else's word for it.
    if let (Some(tls), Some(subject)) = (tls, &conn.client_subject) {
        parts
            .headers
            .insert(tls.client_subject_header.clone(), subject.clone());
    }
    let host = request_host(&parts)?;
    // Routing reads its own handle on the URI, so middleware may change the request's.
    let uri = parts.uri.clone();
    let normal_path = path::normalize(uri.path())?;
    let (index, params) = match snapshot
        .router
        .lookup(host.as_deref(), &parts.method, &normal_path)
    {
        RouteMatch::Found { route, params } => (route, params),
        RouteMatch::MethodNotAllowed { allow } => {
            // A CORS preflight is about the method it names, on a route that answers it.
            let preflight = cors::is_preflight(&parts)
                .then(|| cors::requested_method(&parts))
                .flatten()
                .map(|m| snapshot.router.lookup(host.as_deref(), &m, &normal_path));
            match preflight {
                Some(RouteMatch::Found { route, params })
                    if pipelines.routes[route].answers_preflight() =>
                {
                    (route, params)
                }
                _ => return Err(ProxyError::MethodNotAllowed { allow }),
            }
        }
        RouteMatch::NotFound => return Err(ProxyError::NoRoute(normal_path.into_owned())),
    };
    progress.route = Some(index);
    let route = &snapshot.config.routes[index];
    let client_ip = conn.peer.map(|p| p.ip());
    progress.state.client_ip = if snapshot.config.server.trusted_proxies.is_empty() {
        client_ip
    } else {
        middleware::client_ip(
            client_ip,
            &parts.headers,
            &snapshot.config.server.trusted_proxies,
        )
    };
    let pipeline = &pipelines.routes[index];
    if !pipeline.is_empty() {
        let cx = Context {
            route: &route.name,
            request_id,
            metrics,
        };
        // Boxed, so routes without middleware do not carry its future's size.
        if let Some(answer) =
            Box::pin(pipeline.request(&mut parts, &mut progress.state, &cx)).await?
        {
            return Ok(answer);
        }
    }
    let cluster = match &route.action {
        Action::Respond {
            status,
            body,
            headers,
        } => return Ok(respond(*status, body, headers)),
        Action::Proxy { cluster } => &snapshot.clusters[*cluster],
    };

    let route_slot = match route.max_requests {
        Some(max) => Some(
            Counted::take(&snapshot.route_active[index], max).ok_or_else(|| {
                ProxyError::Overloaded(format!(
                    "route {} has {max} requests in flight (max_requests)",
                    route.name
                ))
            })?,
        ),
        None => None,
    };
    let unchanged = matches!(normal_path, Cow::Borrowed(_));
    let upstream_path = upstream_path(route, &parts.uri, &normal_path, unchanged, &params)?;
    let declared: Option<u64> = if http2 {
        parts
            .headers
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse().ok())
    } else {
        // Read with the head: the body's exact size is its Content-Length.
        body.size_hint().exact().filter(|n| *n > 0)
    };
    if let Some(limit) = route
        .max_body_size
        .filter(|l| declared.is_some_and(|d| d > *l))
    {
        return Err(ProxyError::BodyTooLarge(limit));
    }
    let slot = cluster.acquire_slot(route.timeout).await?;

    let client_upgrade = parts.extensions.remove::<ClientUpgrade>();
    let upgrade = strip_hop_by_hop(&mut parts.headers)
        .filter(|_| client_upgrade.is_some() && parts.version == Version::HTTP_11);
    let forwarding = Forwarding::new(
        &parts.headers,
        conn.peer_ip.as_ref(),
        conn.proto,
        original_host(&parts),
        request_id.clone(),
    );
    if let Some(u) = &upgrade {
        set_upgrade(&mut parts.headers, u.clone());
    }

    let body = RequestBody::new(
        body,
        declared,
        route.max_body_size,
        limits.body_read_timeout,
    );
    // A route that retries keeps a small body in memory so it can be sent again.
    let payload = match &route.retries {
        Some(retries) => match Box::pin(body.keep(retries.buffer))
            .await
            .map_err(body_error)?
        {
            Kept::Whole { data, trailers } => Payload::Kept { data, trailers },
            Kept::TooLarge(body) => Payload::Stream(body),
        },
        None => Payload::Stream(body),
    };
    let out = Outgoing {
        method: parts.method,
        headers: parts.headers,
        path: upstream_path,
        forwarding,
    };
    let origin = Origin {
        normal_path: &normal_path,
        client_ip: progress.state.client_ip,
        route_label: &snapshot.route_series[index].label,
    };
    let Forwarded {
        mut response,
        in_flight,
        set_cookie,
    } = forward(
        cluster,
        route,
        metrics,
        out,
        payload,
        &origin,
        &mut progress.target,
    )
    .await?;
    if upgrade.is_some() && response.status() == StatusCode::SWITCHING_PROTOCOLS {
        if let Some(client_upgrade) = client_upgrade {
            if let Some(upstream) = response.body_mut().take_upgrade() {
                tokio::spawn(crate::protocol::tunnel(client_upgrade, upstream, in_flight));
            }
        }
        let (parts, _) = response.into_parts();
        return Ok(Response::from_parts(parts, ResponseBody::full("")));
    }
    let (mut parts, body) = response.into_parts();
    // The client is answered in its own protocol, whatever the target spoke.
    parts.version = client_version;
    strip_hop_by_hop(&mut parts.headers);
    if let Some(cookie) = set_cookie {
        parts.headers.append(SET_COOKIE, cookie);
    }
    let mut body = ResponseBody::upstream(body, route.idle_timeout);
    body.hold(Held {
        in_flight,
        slot,
        route: route_slot,
    });
    Ok(Response::from_parts(parts, body))
}

/// A client body that failed while it was being read.
fn body_error(error: Box<dyn std::error::Error + Send + Sync>) -> ProxyError {
    crate::upstream::client_body_error(error.as_ref())
        .unwrap_or_else(|| ProxyError::DownstreamBody(error.to_string()))
}

/// URI, header-size and header-count limits, checked before anything else.
fn check_limits(parts: &Parts, limits: &Limits) -> Result<(), ProxyError> {
    let uri_len = parts.uri.path_and_query().map_or(0, |p| p.as_str().len())
        + parts.uri.authority().map_or(0, |a| a.as_str().len());
    if uri_len > limits.max_uri_size {
        return Err(ProxyError::UriTooLong(uri_len, limits.max_uri_size));
    }
    if parts.headers.len() > limits.max_headers {
        return Err(ProxyError::HeadersTooLarge("too many header fields"));
    }
    let size: usize = parts
        .headers
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 4)
        .sum();
    if size > limits.max_header_size {
        return Err(ProxyError::HeadersTooLarge("header section too large"));
    }
    Ok(())
}

/// Only a plain `chunked` transfer coding is understood. hyper accepts any list ending in
/// `chunked` (`gzip, chunked`), whose other codings re-framing would silently drop.
fn check_framing(parts: &Parts) -> Result<(), ProxyError> {
    let mut codings = parts.headers.get_all(TRANSFER_ENCODING).iter();
    match (codings.next(), codings.next()) {
        (None, _) => Ok(()),
        (Some(te), None) if te.as_bytes().trim_ascii().eq_ignore_ascii_case(b"chunked") => Ok(()),
        _ => Err(ProxyError::BadFraming(
            "only `Transfer-Encoding: chunked` is supported",
        )),
    }
}

/// The host the client asked for (`:authority` or `Host`), lowercased, port removed.
fn request_host(parts: &Parts) -> Result<Option<Cow<'_, str>>, ProxyError> {
    let mut hosts = parts.headers.get_all(HOST).iter();
    let header = hosts.next();
    if hosts.next().is_some() {
        return Err(ProxyError::BadRequest("more than one Host header"));
    }
    let header = header.map(|h| {
        h.to_str()
            .map_err(|_| ProxyError::BadRequest("the Host header is not valid text"))
    });
    let header = header.transpose()?;
    let host = match (parts.uri.authority(), header) {
        (Some(a), Some(h)) if !a.as_str().eq_ignore_ascii_case(h) => {
            return Err(ProxyError::BadRequest(":authority and Host disagree"))
        }
        (Some(a), _) => a.as_str(),
        (None, Some(h)) => h,
        (None, None) if parts.version == Version::HTTP_11 => {
            return Err(ProxyError::BadRequest("HTTP/1.1 requires a Host header"))
        }
        (None, None) => return Ok(None),
    };
    let host = host_without_port(host);
    Ok(Some(if host.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(host.to_ascii_lowercase())
    } else {
        Cow::Borrowed(host)
    }))
}

/// The host as the client wrote it (with port), shared rather than copied when it came
/// in a `Host` header.
fn original_host(parts: &Parts) -> Option<HeaderValue> {
    match parts.uri.authority() {
        Some(a) => HeaderValue::from_str(a.as_str()).ok(),
        None => parts.headers.get(HOST).cloned(),
    }
}

/// The path and query sent to the target: normalised, then `strip_prefix` or `rewrite`.
fn upstream_path(
    route: &Route,
    uri: &Uri,
    normal: &str,
    unchanged: bool,
    params: &Params<'_>,
) -> Result<PathAndQuery, ProxyError> {
    let rewritten: Cow<'_, str> = if let Some(template) = &route.rewrite {
        Cow::Owned(expand_rewrite(template, &params.to_vec()))
    } else if let Some(rest) = route
        .strip_prefix
        .as_deref()
        .filter(|p| *p != "/")
        .and_then(|p| normal.strip_prefix(p))
        .filter(|r| r.is_empty() || r.starts_with('/'))
    {
        Cow::Owned(if rest.is_empty() {
            "/".to_string()
        } else {
            rest.to_string()
        })
    } else if let Some(original) = uri.path_and_query().filter(|_| unchanged) {
        return Ok(original.clone());
    } else {
        Cow::Borrowed(normal)
    };
    let full = match uri.query() {
        Some(q) => format!("{rewritten}?{q}"),
        None => rewritten.into_owned(),
    };
    PathAndQuery::try_from(full)
        .map_err(|_| ProxyError::BadRequest("the rewritten path is not valid"))
}

/// Fills `{name}` in a rewrite template in one pass, so that a parameter's value is never
/// itself expanded (`/p/{b}/x` must not smuggle `{b}` into another parameter).
fn expand_rewrite(template: &str, params: &[(&str, &str)]) -> String {
    let mut out = String::with_capacity(template.len() + 32);
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let Some(close) = rest[open..].find('}').map(|c| open + c) else {
            break;
        };
        let name = &rest[open + 1..close];
        match params.iter().find(|(k, _)| *k == name) {
            Some((_, value)) => out.push_str(value),
            None => out.push_str(&rest[open..=close]),
        }
        rest = &rest[close + 1..];
    }
    out.push_str(rest);
    out
}

/// `308` to the same host, path and query on the first TLS listener's port.
fn redirect_to_https(
    parts: &Parts,
    tls: &sluice_config::Tls,
) -> Result<Response<ResponseBody>, ProxyError> {
    let host =
        request_host(parts)?.ok_or(ProxyError::BadRequest("a redirect to HTTPS needs a Host"))?;
    let port = match tls.listen.first().map(|a| a.port()) {
        Some(443) | None => String::new(),
        Some(p) => format!(":{p}"),
    };
    let host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host.into_owned()
    };
    let target = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let location = HeaderValue::try_from(format!("https://{host}{port}{target}"))
        .map_err(|_| ProxyError::BadRequest("the request cannot be redirected to HTTPS"))?;
    let mut response = Response::new(ResponseBody::full(""));
    *response.status_mut() = StatusCode::PERMANENT_REDIRECT;
    response
        .headers_mut()
        .insert(http::header::LOCATION, location);
    Ok(response)
}

fn respond(
    status: StatusCode,
    body: &bytes::Bytes,
    headers: &[(HeaderName, HeaderValue)],
) -> Response<ResponseBody> {
    let mut response = Response::new(ResponseBody::full(body.clone()));
    *response.status_mut() = status;
    for (name, value) in headers {
        response.headers_mut().append(name.clone(), value.clone());
    }
    response
}

fn request_id<B>(request: &Request<B>) -> HeaderValue {
    match request.headers().get(X_REQUEST_ID) {
        Some(v)
            if !v.is_empty()
                && v.len() <= 200
                && v.as_bytes().iter().all(|b| b.is_ascii_graphic()) =>
        {
            v.clone()
        }
        _ => generated_request_id(),
    }
}

/// A new random request id, for an answer given before a request could be read.
pub fn new_request_id() -> String {
    generated_request_id().to_str().unwrap_or("-").to_string()
}

fn generated_request_id() -> HeaderValue {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut n = fastrand::u128(..);
    let mut id = [0u8; 32];
    for digit in id.iter_mut().rev() {
        *digit = HEX[(n & 0xf) as usize];
        n >>= 4;
    }
    HeaderValue::from_bytes(&id).unwrap_or(HeaderValue::from_static("-"))
}

#[cfg(test)]
mod tests {
    use super::expand_rewrite;

    #[test]
    fn rewrite_expands_each_parameter_once() {
        assert_eq!(
            expand_rewrite("/v2/users/{id}", &[("id", "42")]),
            "/v2/users/42"
        );
        assert_eq!(
            expand_rewrite("/x/{a}/{b}", &[("a", "{b}"), ("b", "zz")]),
            "/x/{b}/zz"
        );
        assert_eq!(
            expand_rewrite("/files/{rest}", &[("rest", "a/b.txt")]),
            "/files/a/b.txt"
        );
        assert_eq!(expand_rewrite("/fixed", &[("id", "1")]), "/fixed");
    }
}
