//! Runs the data plane on bound listeners until shutdown, then drains: stop accepting,
//! let requests in flight finish within the grace period, close what is left.

use crate::gateway::Gateway;
use crate::listener::{run_accept_loops, Listeners};
use hyper_util::server::graceful::GracefulShutdown;
use std::future::Future;
use std::sync::Arc;
use tokio::sync::watch;

/// Serves until `shutdown` completes, then drains for at most `server.shutdown_grace`.
/// Returns whether every connection finished within the grace period.
pub async fn serve(
    gateway: Arc<Gateway>,
    listeners: Listeners,
    shutdown: impl Future<Output = ()>,
) -> bool {
    let graceful = Arc::new(GracefulShutdown::new());
    let (stop_accepting, stop_rx) = watch::channel(false);
    let accept = tokio::spawn(run_accept_loops(
        listeners,
        Arc::clone(&gateway),
        Arc::clone(&graceful),
        stop_rx,
    ));
    gateway.set_ready();
    shutdown.await;

    gateway.set_draining();
    let grace = gateway.snapshot().config.server.shutdown_grace;
    tracing::info!(grace = ?grace, connections = graceful.count(), "shutting down: no new connections, draining requests in flight");
    let _ = stop_accepting.send(true);
    let _ = accept.await;
    let Ok(graceful) = Arc::try_unwrap(graceful) else {
        tracing::error!("accept loops still hold connections; closing without draining");
        return false;
    };
    match tokio::time::timeout(grace, graceful.shutdown()).await {
        Ok(()) => {
            tracing::info!("all connections drained");
            true
        }
        Err(_) => {
            tracing::warn!("shutdown grace period over; closing the connections left");
            false
        }
    }
}
