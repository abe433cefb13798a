//! Sending a request to one target over its pool of keep-alive connections (HTTP/1.1, or
//! HTTP/2 when the cluster says so), and mapping failures to [`ProxyError`]s.

mod connector;
pub mod headers;
mod request_body;

pub use request_body::{ExcessBody, RequestBody};

use crate::rescue::ProxyError;
use connector::{ConnectError, TargetConnector};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use sluice_config::{Cluster, Target};
use std::error::Error as _;
use std::time::Duration;

/// A pooled client bound to one target.
#[derive(Debug, Clone)]
pub struct UpstreamClient {
    client: Client<TargetConnector, RequestBody>,
    target: String,
}

impl UpstreamClient {
    pub fn new(target: &Target, cluster: &Cluster) -> Self {
        let connector = TargetConnector::new(target.address.clone(), cluster.connect_timeout);
        let mut builder = Client::builder(TokioExecutor::new());
        builder
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(cluster.pool_idle_timeout)
            .pool_max_idle_per_host(cluster.pool_max_idle)
            .http2_only(cluster.http2)
            .set_host(false)
            .retry_canceled_requests(true);
        UpstreamClient {
            client: builder.build(connector),
            target: target.url.clone(),
        }
    }

    /// Sends `request` and waits for the response head, at most `timeout`.
    pub async fn send(
        &self,
        request: http::Request<RequestBody>,
        timeout: Duration,
    ) -> Result<http::Response<Incoming>, ProxyError> {
        match tokio::time::timeout(timeout, self.client.request(request)).await {
            Err(_) => Err(ProxyError::UpstreamTimeout {
                target: self.target.clone(),
                after: timeout,
            }),
            Ok(Ok(response)) => Ok(response),
            Ok(Err(e)) => Err(self.classify(&e)),
        }
    }

    fn classify(&self, error: &hyper_util::client::legacy::Error) -> ProxyError {
        let target = self.target.clone();
        let mut source = error.source();
        while let Some(cause) = source {
            if let Some(connect) = cause.downcast_ref::<ConnectError>() {
                return match connect {
                    ConnectError::Timeout(after) => ProxyError::ConnectTimeout {
                        target,
                        after: *after,
                    },
                    ConnectError::Io(io) => ProxyError::Connect {
                        target,
                        cause: io.to_string(),
                    },
                };
            }
            if let Some(h) = cause.downcast_ref::<hyper::Error>() {
                // "error from user's Body stream": the client's body failed, not the target.
                if h.is_user()
                    && h.source()
                        .is_some_and(|s| s.is::<hyper::Error>() || s.is::<ExcessBody>())
                {
                    let detail = h.source().map(ToString::to_string).unwrap_or_default();
                    return ProxyError::DownstreamBody(detail);
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
