//! Runs the data plane on bound listeners until shutdown, then drains: stop accepting,
//! let requests in flight finish within the grace period, close what is left.

use crate::gateway::Gateway;
use crate::listener::{run_accept_loops, Listeners};
use crate::protocol::ShutdownWatch;
use std::future::Future;
use std::sync::Arc;
use tokio::sync::{mpsc, watch};

/// Serves until `shutdown` completes, then drains for at most `server.shutdown_grace`.
/// Returns whether every connection finished within the grace period.
pub async fn serve(
    gateway: Arc<Gateway>,
    listeners: Listeners,
    shutdown: impl Future<Output = ()>,
) -> bool {
    let (stop, signal) = watch::channel(false);
    let (done, mut all_done) = mpsc::channel::<()>(1);
    let accept = tokio::spawn(run_accept_loops(
        listeners,
        Arc::clone(&gateway),
        ShutdownWatch { signal, done },
    ));
    gateway.set_ready();
    shutdown.await;

    gateway.set_draining();
    let grace = gateway.snapshot().config.server.shutdown_grace;
    let connections = gateway.metrics.active_connections.get();
    tracing::info!(grace = ?grace, connections, "shutting down: no new connections, draining requests in flight");
    let _ = stop.send(true);
    let _ = accept.await;
    // Every connection holds a sender; `recv` returns once the last one has ended.
    match tokio::time::timeout(grace, all_done.recv()).await {
        Ok(_) => {
            tracing::info!("all connections drained");
            true
        }
        Err(_) => {
            tracing::warn!("shutdown grace period over; closing the connections left");
            false
        }
    }
}
