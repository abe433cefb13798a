//! Active health checks: one task per target probes it every `interval` (HTTP `GET` or a
//! TCP connect) and takes it out of the rotation after `unhealthy_threshold` failures in
//! a row, back in after `healthy_threshold` successes. The task ends with its target.

use super::TargetState;
use crate::upstream::RequestBody;
use bytes::Bytes;
use http::header::HOST;
use http::{Request, Uri};
use sluice_config::{HealthCheck, HealthKind, TargetAddress};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};

/// A target's health as the checks see it. Targets start healthy.
#[derive(Debug)]
pub struct ActiveHealth {
    pub check: HealthCheck,
    healthy: AtomicBool,
    started: AtomicBool,
    failed_checks: AtomicU64,
}

impl ActiveHealth {
    pub fn new(check: HealthCheck) -> ActiveHealth {
        ActiveHealth {
            check,
            healthy: AtomicBool::new(true),
            started: AtomicBool::new(false),
            failed_checks: AtomicU64::new(0),
        }
    }

    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// Checks that failed so far.
    pub fn failed_checks(&self) -> u64 {
        self.failed_checks.load(Ordering::Relaxed)
    }
}

/// Starts the checks of `target` unless they already run (a target kept by a reload).
pub fn start(target: &Arc<TargetState>, cluster: Arc<str>) {
    let Some(health) = &target.health else { return };
    if health.started.swap(true, Ordering::Relaxed) {
        return;
    }
    tokio::spawn(run(Arc::downgrade(target), cluster));
}

async fn run(target: Weak<TargetState>, cluster: Arc<str>) {
    let Some(interval) = target
        .upgrade()
        .and_then(|t| t.health.as_ref().map(|h| h.check.interval))
    else {
        return;
    };
    // A random first delay spreads the checks of many targets over the interval.
    tokio::time::sleep(interval.mul_f64(fastrand::f64())).await;
    let (mut successes, mut failures) = (0u32, 0u32);
    loop {
        let Some(target) = target.upgrade() else {
            return;
        };
        let Some(health) = &target.health else { return };
        match probe(&target, &health.check).await {
            Ok(()) => {
                successes += 1;
                failures = 0;
                if !health.is_healthy() && successes >= health.check.healthy_threshold {
                    health.healthy.store(true, Ordering::Relaxed);
                    tracing::info!(cluster = %cluster, target = %target.name, "target is healthy again; back in rotation");
                }
            }
            Err(cause) => {
                health.failed_checks.fetch_add(1, Ordering::Relaxed);
                failures += 1;
                successes = 0;
                if health.is_healthy() && failures >= health.check.unhealthy_threshold {
                    health.healthy.store(false, Ordering::Relaxed);
                    tracing::warn!(cluster = %cluster, target = %target.name, cause, "target failed its health checks; out of rotation");
                } else {
                    tracing::debug!(cluster = %cluster, target = %target.name, cause, "health check failed");
                }
            }
        }
        drop(target);
        tokio::time::sleep(interval).await;
    }
}

/// One check: `Ok` when the target passes.
async fn probe(target: &TargetState, check: &HealthCheck) -> Result<(), String> {
    match &check.kind {
        HealthKind::Tcp => {
            let connect = async {
                match &target.target.address {
                    TargetAddress::Tcp { authority, .. }
                    | TargetAddress::Https { authority, .. } => {
                        tokio::net::TcpStream::connect(authority.as_str())
                            .await
                            .map(drop)
                    }
                    TargetAddress::Unix(path) => {
                        tokio::net::UnixStream::connect(path).await.map(drop)
                    }
                }
            };
            match tokio::time::timeout(check.timeout, connect).await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(format!("cannot connect: {e}")),
                Err(_) => Err(format!("no connection within {:?}", check.timeout)),
            }
        }
        HealthKind::Http { path, host, expect } => {
            let host = host.clone().unwrap_or_else(|| target.host_header.clone());
            // HTTP/2 carries the host as the URI's authority, HTTP/1.1 in `Host`.
            let authority = if target.key.http2 {
                http::uri::Authority::try_from(host.as_bytes())
                    .map_err(|e| format!("the check's host is not an authority: {e}"))?
            } else {
                target.authority.clone()
            };
            let uri = Uri::builder()
                .scheme("http")
                .authority(authority)
                .path_and_query(path.as_str())
                .build()
                .map_err(|e| format!("cannot build the check's URI: {e}"))?;
            let mut request = Request::get(uri)
                .header("user-agent", "sluice-health-check")
                .body(RequestBody::full(Bytes::new()))
                .map_err(|e| format!("cannot build the check request: {e}"))?;
            if !target.key.http2 {
                request.headers_mut().insert(HOST, host);
            }
            let response = target
                .client
                .send(request, None, tokio::time::Instant::now(), check.timeout)
                .await
                .map_err(|e| e.to_string())?;
            let status = response.status().as_u16();
            if expect.iter().any(|r| r.contains(status)) {
                Ok(())
            } else {
                Err(format!("answered {status}"))
            }
        }
    }
}
