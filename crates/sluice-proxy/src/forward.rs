//! Sending a request to a cluster: pick a target, send, record how it went, and retry on
//! another target when the route's `retries` allow it: only for the failures it lists,
//! only when the body can be sent again, never after a response byte reached the client,
//! within the retry budget and the route's `timeout`.

use crate::cluster::{Balanced, Cluster, InFlight, Outcome, TargetState};
use crate::counted::Counted;
use crate::metrics::{Metrics, RouteLabels};
use crate::rescue::ProxyError;
use crate::upstream::headers::{Added, Forwarding};
use crate::upstream::RequestBody;
use crate::upstream::UpstreamBody;
use bytes::Bytes;
use http::header::HOST;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Uri, Version};
use sluice_config::{Retries, Route};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// The request as it goes to any target: everything but the target's address.
#[derive(Debug)]
pub struct Outgoing {
    pub method: Method,
    pub headers: HeaderMap,
    pub path: PathAndQuery,
    /// The forwarding headers the gateway sets; their `host` is the one the client
    /// asked for, with its port.
    pub forwarding: Forwarding,
}

/// What is sent as the body.
#[derive(Debug)]
pub enum Payload {
    /// Streamed once: no retry after it was sent.
    Stream(RequestBody),
    /// Kept in memory: sent again on a retry.
    Kept {
        data: Bytes,
        trailers: Option<HeaderMap>,
    },
}

/// A response from a target, with the request's place at that target.
#[derive(Debug)]
pub struct Forwarded {
    pub response: Response<UpstreamBody>,
    pub in_flight: InFlight,
    pub set_cookie: Option<HeaderValue>,
}

/// Where the request came from, for balancing.
pub struct Origin<'a> {
    pub normal_path: &'a str,
    pub client_ip: Option<IpAddr>,
    pub route_label: &'a Arc<String>,
}

/// Sends `out` to `cluster` as `route` says, retrying when allowed. `target` is set to
/// the target of the last try, for the access log.
pub async fn forward(
    cluster: &Cluster,
    route: &Route,
    metrics: &Metrics,
    mut out: Outgoing,
    payload: Payload,
    origin: &Origin<'_>,
    target: &mut Option<Arc<TargetState>>,
) -> Result<Forwarded, ProxyError> {
    let start = Instant::now();
    let deadline = start + route.timeout;
    let policy = route.retries.as_ref();
    let (mut stream, kept) = match payload {
        Payload::Stream(body) => (Some(body), None),
        Payload::Kept { data, trailers } => (None, Some((data, trailers))),
    };
    // Only filled when another try may follow.
    let mut tried: Vec<usize> = Vec::new();
    // The retry in flight, counted against the cluster's budget until the next try ends.
    let mut _budget: Option<Counted> = None;
    let mut attempt = 0u32;
    // Held while this request waits for its next try.
    let mut _waiting: Option<crate::counted::Counted> = None;
    loop {
        attempt += 1;
        let last_possible = kept.is_none() || policy.is_none_or(|p| attempt >= p.attempts);
        // The first try starts now: the clock was just read.
        let now = if attempt == 1 { start } else { Instant::now() };
        let (index, mut pick) = pick(cluster, &out, origin, &tried, now)?;
        _waiting = None;
        if !last_possible {
            tried.push(index);
        }
        let chosen = target.insert(Arc::clone(pick.in_flight.target()));
        let body = match (&kept, stream.take()) {
            (Some((data, trailers)), _) => RequestBody::replay(data.clone(), trailers.clone()),
            (None, Some(body)) => body,
            (None, None) => RequestBody::full(Bytes::new()),
        };
        let headers = if last_possible {
            std::mem::take(&mut out.headers)
        } else {
            out.headers.clone()
        };
        let (request, host) = build(cluster, chosen, &out, headers, body)?;
        let added = Added {
            host: &host,
            forwarding: &out.forwarding,
        };
        let left = deadline.saturating_duration_since(now);
        let result = chosen
            .client
            .send(request, Some(added), now, route.try_timeout.min(left))
            .await
            .map_err(|e| match e {
                // Over the route's timeout rather than the try's: say the route's.
                ProxyError::UpstreamTimeout { target, .. } if route.try_timeout >= left => {
                    ProxyError::UpstreamTimeout {
                        target,
                        after: route.timeout,
                    }
                }
                e => e,
            });
        let outcome = match &result {
            Ok(r) if r.status().is_server_error() => Some(Outcome::Failure),
            Ok(_) => Some(Outcome::Success),
            Err(e) if e.is_target_failure() => Some(Outcome::Failure),
            Err(_) => None,
        };
        if let Some(outcome) = outcome {
            cluster.record(&mut pick.in_flight, outcome);
        }
        // Another try: allowed for this failure, its back-off ends before the route's
        // timeout, and the budget has room.
        let retry = policy
            .filter(|p| !last_possible && retryable(p, &out.method, &result))
            .map(|p| (p, backoff(p, attempt)))
            .filter(|(_, wait)| Instant::now() + *wait < deadline)
            .and_then(|(p, wait)| {
                Some((wait, cluster.try_retry(p.budget_percent, p.min_retries)?))
            });
        let Some((wait, token)) = retry else {
            return result.map(|response| Forwarded {
                response,
                in_flight: pick.in_flight,
                set_cookie: pick.set_cookie,
            });
        };
        let why = match &result {
            Ok(r) => format!("answered {}", r.status().as_u16()),
            Err(e) => e.to_string(),
        };
        tracing::info!(target_url = %chosen.name, attempt, backoff = ?wait, "retrying on another target: {why}");
        metrics
            .retries
            .get_or_create(&RouteLabels {
                route: Arc::clone(origin.route_label),
            })
            .inc();
        drop(result);
        drop(pick);
        _waiting = cluster.between_tries();
        _budget = Some(token);
        Box::pin(tokio::time::sleep(wait)).await;
    }
}

/// A target for this try: one not tried yet when there is one, else any usable one.
fn pick(
    cluster: &Cluster,
    out: &Outgoing,
    origin: &Origin<'_>,
    tried: &[usize],
    now: Instant,
) -> Result<(usize, crate::cluster::Pick), ProxyError> {
    let request = Balanced {
        headers: &out.headers,
        forwarding: Some(&out.forwarding),
        query: out.path.query(),
        path: origin.normal_path,
        client_ip: origin.client_ip,
    };
    match cluster.pick(&request, tried, now) {
        Err(_) if !tried.is_empty() => cluster.pick(&request, &[], now),
        other => other,
    }
}

/// Whether this failure may be retried under `policy` for `method`. Failures where
/// nothing reached the target are retried for any method; the others only for
/// idempotent ones unless `all_methods`.
fn retryable(
    policy: &Retries,
    method: &Method,
    result: &Result<Response<UpstreamBody>, ProxyError>,
) -> bool {
    let on = &policy.on;
    let idempotent = policy.all_methods
        || matches!(
            *method,
            Method::GET
                | Method::HEAD
                | Method::OPTIONS
                | Method::TRACE
                | Method::PUT
                | Method::DELETE
        );
    match result {
        Err(ProxyError::Connect { .. } | ProxyError::ConnectTimeout { .. }) => on.connect_failure,
        Err(ProxyError::RefusedStream { .. }) => on.refused_stream,
        Err(ProxyError::Upstream { .. }) => on.reset && idempotent,
        Err(ProxyError::UpstreamTimeout { .. }) => on.status_504 && idempotent,
        Err(_) => false,
        Ok(r) => {
            idempotent
                && match r.status() {
                    StatusCode::BAD_GATEWAY => on.status_502,
                    StatusCode::SERVICE_UNAVAILABLE => on.status_503,
                    StatusCode::GATEWAY_TIMEOUT => on.status_504,
                    _ => false,
                }
        }
    }
}

/// Full jitter: a random wait up to `backoff * 2^(retry - 1)`, capped at `max_backoff`.
fn backoff(policy: &Retries, retry: u32) -> Duration {
    let factor = 1u32
        .checked_shl(retry.saturating_sub(1))
        .unwrap_or(u32::MAX);
    let ceiling = policy
        .backoff
        .saturating_mul(factor)
        .min(policy.max_backoff);
    ceiling.mul_f64(fastrand::f64())
}

/// The request for `target`: its URI, and `Host` as the cluster wants it (sent as the
/// HTTP/2 authority, or returned for the HTTP/1.1 head).
fn build(
    cluster: &Cluster,
    target: &TargetState,
    out: &Outgoing,
    mut headers: HeaderMap,
    body: RequestBody,
) -> Result<(Request<RequestBody>, HeaderValue), ProxyError> {
    let host = match out
        .forwarding
        .host
        .clone()
        .filter(|_| cluster.preserve_host)
    {
        Some(h) => h,
        None => target.host_header.clone(),
    };
    let uri = if cluster.http2 {
        headers.remove(HOST);
        let authority = Authority::try_from(host.as_bytes())
            .map_err(|_| ProxyError::BadRequest("the Host header is not a valid authority"))?;
        Uri::builder()
            .scheme(Scheme::HTTP)
            .authority(authority)
            .path_and_query(out.path.clone())
            .build()
            .map_err(|e| ProxyError::Internal(format!("cannot build the upstream URI: {e}")))?
    } else {
        // HTTP/1.1 sends the path and query only; the target is the pool's.
        Uri::from(out.path.clone())
    };
    let mut request = Request::new(body);
    *request.method_mut() = out.method.clone();
    *request.uri_mut() = uri;
    *request.version_mut() = if cluster.http2 {
        Version::HTTP_2
    } else {
        Version::HTTP_11
    };
    *request.headers_mut() = headers;
    Ok((request, host))
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_config::RetryOn;

    fn policy() -> Retries {
        Retries {
            attempts: 3,
            on: RetryOn::ALL,
            backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(300),
            budget_percent: 20,
            min_retries: 3,
            buffer: 1024,
            all_methods: false,
        }
    }

    #[test]
    fn backoff_doubles_under_its_cap() {
        let p = policy();
        for _ in 0..200 {
            assert!(backoff(&p, 1) <= Duration::from_millis(100));
            assert!(backoff(&p, 2) <= Duration::from_millis(200));
            assert!(backoff(&p, 5) <= Duration::from_millis(300));
        }
    }

    #[test]
    fn only_unsent_failures_retry_any_method() {
        let p = policy();
        let connect: Result<Response<UpstreamBody>, ProxyError> = Err(ProxyError::Connect {
            target: "t".into(),
            cause: "refused".into(),
        });
        let reset: Result<Response<UpstreamBody>, ProxyError> = Err(ProxyError::Upstream {
            target: "t".into(),
            cause: "reset".into(),
        });
        let refused: Result<Response<UpstreamBody>, ProxyError> =
            Err(ProxyError::RefusedStream { target: "t".into() });
        assert!(retryable(&p, &Method::POST, &connect));
        assert!(retryable(&p, &Method::POST, &refused));
        assert!(!retryable(&p, &Method::POST, &reset));
        assert!(retryable(&p, &Method::GET, &reset));
        assert!(retryable(&p, &Method::PUT, &reset));
        let mut all = policy();
        all.all_methods = true;
        assert!(retryable(&all, &Method::POST, &reset));
        let mut narrow = policy();
        narrow.on = RetryOn {
            connect_failure: true,
            ..RetryOn::default()
        };
        assert!(!retryable(&narrow, &Method::GET, &reset));
        assert!(!retryable(&narrow, &Method::GET, &refused));
    }
}
