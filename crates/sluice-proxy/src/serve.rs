//! Runs the data plane on bound listeners until shutdown: applies reloads as they come,
//! then drains: stop accepting, let requests in flight finish within the grace period,
//! close what is left.

use crate::gateway::Gateway;
use crate::listener::{AcceptLoops, ListenKey, Listeners};
use crate::protocol::ShutdownWatch;
use crate::reload::{Loader, ReloadRequests};
use std::future::Future;
use std::io;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot, watch};

/// Why the data plane stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// SIGTERM or SIGINT: stop listening for good.
    Signal,
    /// A new process has taken the listening sockets over.
    Upgraded,
}

/// A request for a copy of every listening socket, made by an upgrade in progress.
pub type Handoff = oneshot::Sender<io::Result<Vec<(ListenKey, OwnedFd)>>>;

/// What steers a running data plane besides its traffic.
pub struct Control {
    pub reloads: ReloadRequests,
    pub load: Loader,
    pub handoffs: mpsc::Receiver<Handoff>,
    /// Told once every listener accepts and `/ready` answers 200.
    pub started: Option<oneshot::Sender<()>>,
}

/// Serves until `shutdown` completes, applying the reloads `control` asks for, then drains
/// for at most `server.shutdown_grace`. Returns why it stopped, and whether every
/// connection finished within the grace period.
pub async fn serve(
    gateway: Arc<Gateway>,
    listeners: Listeners,
    shutdown: impl Future<Output = Stop>,
    mut control: Control,
) -> (Stop, bool) {
    let (stop, signal) = watch::channel(false);
    let (done, mut all_done) = mpsc::channel::<()>(1);
    let mut accept = AcceptLoops::start(
        listeners,
        Arc::clone(&gateway),
        ShutdownWatch { signal, done },
    );
    gateway.start_health_checks();
    gateway.start_key_refresh();
    let certificates = tokio::spawn(watch_certificates(Arc::clone(&gateway)));
    gateway.set_ready();
    if let Some(started) = control.started.take() {
        let _ = started.send(());
    }
    tokio::pin!(shutdown);
    let why = loop {
        tokio::select! {
            why = &mut shutdown => break why,
            Some(handoff) = control.handoffs.recv() => {
                let _ = handoff.send(accept.sockets());
            }
            Some(request) = control.reloads.0.recv() => {
                tracing::info!(trigger = request.trigger.as_str(), "reloading the configuration");
                let outcome = reload(&gateway, &mut accept, &control.load);
                match &outcome {
                    Ok(generation) => tracing::info!(generation, "configuration reloaded"),
                    Err(e) => tracing::error!("configuration rejected; the previous one keeps serving:\n{e}"),
                }
                let _ = request.reply.send(outcome);
            }
        }
    };

    certificates.abort();
    gateway.set_draining();
    if why == Stop::Upgraded {
        accept.hand_over();
    }
    let grace = gateway.snapshot().config.server.shutdown_grace;
    let connections = gateway.metrics.active_connections.get();
    match why {
        Stop::Signal => {
            tracing::info!(grace = ?grace, connections, "shutting down: no new connections, draining requests in flight")
        }
        Stop::Upgraded => {
            tracing::info!(grace = ?grace, connections, "the new process accepts now; draining requests in flight")
        }
    }
    let _ = stop.send(true);
    accept.join().await;
    // Every connection holds a sender; `recv` returns once the last one has ended.
    let drained = match tokio::time::timeout(grace, all_done.recv()).await {
        Ok(_) => {
            tracing::info!("all connections drained");
            true
        }
        Err(_) => {
            tracing::warn!("shutdown grace period over; closing the connections left");
            false
        }
    };
    (why, drained)
}

/// How often certificate files are checked for changes.
const CERTIFICATE_CHECK: std::time::Duration = std::time::Duration::from_secs(1);

/// Serves renewed certificates as soon as their files change, without a reload; a file
/// that does not load is logged and the certificates loaded before stay.
async fn watch_certificates(gateway: Arc<Gateway>) {
    let mut tick = tokio::time::interval(CERTIFICATE_CHECK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(tls) = gateway.snapshot().tls.clone() else {
            continue;
        };
        if !tls.config.watch_certificates {
            continue;
        }
        match tls.reload_if_changed() {
            Ok(true) => tracing::info!("TLS certificates reloaded"),
            Ok(false) => {}
            Err(e) => tracing::error!("TLS certificates not reloaded; the previous ones stay: {e}"),
        }
    }
}

/// One reload: read, validate, bind what is new, swap, stop what is gone. Either all of
/// it happens or none of it.
fn reload(gateway: &Gateway, accept: &mut AcceptLoops, load: &Loader) -> Result<u64, String> {
    let reject = |text: String| {
        gateway.record_reload(Some(text.clone()));
        text
    };
    let config = load().map_err(|e| reject(e.to_string()))?;
    let added = accept
        .bind_new(&config.server)
        .map_err(|e| reject(e.to_string()))?;
    let current = gateway.snapshot();
    for change in sluice_config::restart_only_changes(&current.config, &config) {
        tracing::warn!("{change} changed; this takes effect after a restart");
    }
    let generation = gateway.apply(config).map_err(|e| e.to_string())?;
    gateway.start_health_checks();
    gateway.start_key_refresh();
    accept.reconcile(added, &gateway.snapshot().config.server);
    Ok(generation)
}
