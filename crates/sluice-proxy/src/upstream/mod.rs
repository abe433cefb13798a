//! Sending a request to one target over its pool of keep-alive connections (HTTP/1.1, or
//! HTTP/2 when the cluster says so), and mapping failures to [`ProxyError`]s.

mod connector;
mod h1;
pub mod headers;
mod request_body;
pub mod tls;

pub use connector::UpstreamStream;
pub use h1::UpstreamBody;
pub use request_body::{BodyTimeout, BodyTooLarge, ExcessBody, Kept, RequestBody};

use crate::rescue::ProxyError;
use connector::{ConnectError, TargetConnector};
use h1::{ExchangeError, H1Client, SendError};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use sluice_config::{Cluster, Target, TargetAddress};
use std::error::Error as StdError;
use std::time::Duration;

/// A pooled client bound to one target.
#[derive(Debug, Clone)]
pub struct UpstreamClient {
    pool: Pool,
    target: String,
}

#[derive(Debug, Clone)]
enum Pool {
    /// HTTP/1.1: each connection driven by the request using it.
    Http1(H1Client),
    /// HTTP/2: requests multiplexed over connections with their own tasks.
    Http2(Box<Client<TargetConnector, RequestBody>>),
}

impl UpstreamClient {
    pub fn new(
        target: &Target,
        cluster: &Cluster,
        tls: Option<&std::sync::Arc<rustls::ClientConfig>>,
    ) -> Self {
        let secure = match (&target.address, tls) {
            (TargetAddress::Https { host, .. }, Some(config)) => {
                tls::server_name(cluster.tls.as_ref(), host).map(|name| connector::Secure {
                    connector: tokio_rustls::TlsConnector::from(std::sync::Arc::clone(config)),
                    name,
                })
            }
            _ => None,
        };
        let connector =
            TargetConnector::new(target.address.clone(), cluster.connect_timeout, secure);
        let pool = if cluster.http2 {
            let mut builder = Client::builder(TokioExecutor::new());
            builder
                .timer(TokioTimer::new())
                .pool_timer(TokioTimer::new())
                .pool_idle_timeout(cluster.pool_idle_timeout)
                .pool_max_idle_per_host(cluster.pool_max_idle)
                .http2_only(true)
                .set_host(false)
                .retry_canceled_requests(true);
            Pool::Http2(Box::new(builder.build(connector)))
        } else {
            Pool::Http1(H1Client::new(
                connector,
                cluster.pool_max_idle,
                cluster.pool_idle_timeout,
            ))
        };
        UpstreamClient {
            pool,
            target: target.url.clone(),
        }
    }

    /// Sends `request`, with what the gateway adds to it, and waits for the response
    /// head, at most `timeout` counted from `from` (a time the caller has read already:
    /// the clock is not read again).
    pub async fn send(
        &self,
        mut request: http::Request<RequestBody>,
        added: Option<headers::Added<'_>>,
        from: tokio::time::Instant,
        timeout: Duration,
    ) -> Result<http::Response<UpstreamBody>, ProxyError> {
        let deadline = from + timeout;
        let timed_out = || ProxyError::UpstreamTimeout {
            target: self.target.clone(),
            after: timeout,
        };
        match &self.pool {
            // Timed by the connection's own timer (and connecting by its own).
            Pool::Http1(client) => client
                .send(request, added, from, deadline)
                .await
                .map_err(|e| match e {
                    SendError::Connect(e) => self.connect_error(&e),
                    SendError::Exchange(ExchangeError::Timeout) => timed_out(),
                    SendError::Exchange(ExchangeError::Body(body)) => {
                        client_body_error(body.as_ref())
                            .unwrap_or_else(|| ProxyError::DownstreamBody(body.to_string()))
                    }
                    SendError::Exchange(e) => ProxyError::Upstream {
                        target: self.target.clone(),
                        cause: e.to_string(),
                    },
                }),
            Pool::Http2(client) => {
                // hyper writes HTTP/2 heads from the map; `Host` is the URI's authority.
                if let Some(added) = added {
                    added.forwarding.apply(request.headers_mut());
                }
                match Box::pin(tokio::time::timeout_at(deadline, client.request(request))).await {
                    Ok(sent) => sent
                        .map(|response| response.map(UpstreamBody::Plain))
                        .map_err(|e| self.classify(&e)),
                    Err(_) => Err(timed_out()),
                }
            }
        }
    }

    fn connect_error(&self, connect: &ConnectError) -> ProxyError {
        let target = self.target.clone();
        match connect {
            ConnectError::Timeout(after) => ProxyError::ConnectTimeout {
                target,
                after: *after,
            },
            ConnectError::Io(io) => ProxyError::Connect {
                target,
                cause: io.to_string(),
            },
        }
    }

    /// The failure behind `error`: the connection, the client's body, or the target.
    fn classify(&self, error: &(dyn StdError + 'static)) -> ProxyError {
        let target = self.target.clone();
        let mut source: Option<&(dyn StdError + 'static)> = Some(error);
        while let Some(cause) = source {
            if let Some(connect) = cause.downcast_ref::<ConnectError>() {
                return self.connect_error(connect);
            }
            if let Some(h) = cause.downcast_ref::<hyper::Error>() {
                // "error from user's Body stream": the client's body failed, not the target.
                if let Some(body) = h
                    .source()
                    .filter(|_| h.is_user())
                    .and_then(client_body_error)
                {
                    return body;
                }
                if refused(h) {
                    return ProxyError::RefusedStream { target };
                }
                return ProxyError::Upstream {
                    target,
                    cause: h.to_string(),
                };
            }
            source = cause.source();
        }
        ProxyError::Upstream {
            target,
            cause: error.to_string(),
        }
    }
}

/// The error a client's request body failed with, as the client's answer: too large
/// (413), longer than declared or broken off (400). `None` when it is not one of those.
pub fn client_body_error(error: &(dyn StdError + 'static)) -> Option<ProxyError> {
    if let Some(too_large) = error.downcast_ref::<BodyTooLarge>() {
        return Some(ProxyError::BodyTooLarge(too_large.0));
    }
    if let Some(timeout) = error.downcast_ref::<BodyTimeout>() {
        return Some(ProxyError::BodyTimeout(timeout.0));
    }
    (error.is::<hyper::Error>()
        || error.is::<ExcessBody>()
        || error.is::<crate::protocol::http1::RequestBodyError>())
    .then(|| ProxyError::DownstreamBody(error.to_string()))
}

/// An HTTP/2 stream the target refused, or closed by GOAWAY, before processing it:
/// nothing was done, so any request can go elsewhere.
fn refused(error: &hyper::Error) -> bool {
    let mut source = error.source();
    while let Some(cause) = source {
        if let Some(h2) = cause.downcast_ref::<h2::Error>() {
            return h2.reason() == Some(h2::Reason::REFUSED_STREAM)
                || (h2.is_go_away() && h2.reason() == Some(h2::Reason::NO_ERROR));
        }
        source = cause.source();
    }
    false
}
