//! HTTP on an accepted connection: HTTP/1.1 and h2c (prior knowledge) on the same port,
//! with the limits from `[server.limits]`, upgrades, and graceful shutdown.

use crate::cluster::InFlight;
use crate::gateway::Gateway;
use crate::lifecycle::{handle, ConnInfo};
use hyper::rt::{Read, Write};
use hyper::service::service_fn;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::Watcher;
use sluice_config::Limits;
use std::sync::Arc;

/// The HTTP server settings every connection of a listener uses.
pub type Http = auto::Builder<TokioExecutor>;

/// Builds the server settings from the configured limits.
pub fn http_builder(limits: &Limits) -> Http {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_headers(limits.max_headers.saturating_mul(2).max(100))
        .max_buf_size(
            (limits.max_header_size + limits.max_uri_size)
                .saturating_mul(2)
                .max(8192),
        )
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(100)
        .max_header_list_size(
            u32::try_from(limits.max_header_size.saturating_mul(2)).unwrap_or(u32::MAX),
        )
        .max_pending_accept_reset_streams(50)
        .max_local_error_reset_streams(256);
    builder
}

/// Serves one client connection until it closes or the gateway shuts down.
pub async fn serve_connection<I>(
    http: Arc<Http>,
    io: I,
    gateway: Arc<Gateway>,
    conn: ConnInfo,
    watcher: Watcher,
) where
    I: Read + Write + Unpin + Send + 'static,
{
    let conn = Arc::new(conn);
    let service =
        service_fn(move |request| handle(Arc::clone(&gateway), Arc::clone(&conn), request));
    let connection = http.serve_connection_with_upgrades(io, service);
    if let Err(e) = watcher.watch(connection.into_owned()).await {
        tracing::debug!("client connection ended: {e}");
    }
}

/// Copies bytes both ways between a client and a target once both switched protocols.
pub async fn tunnel(client: OnUpgrade, upstream: OnUpgrade, in_flight: InFlight) {
    let (client, upstream) = match tokio::try_join!(client, upstream) {
        Ok(pair) => pair,
        Err(e) => {
            tracing::info!("protocol upgrade failed: {e}");
            return;
        }
    };
    let mut client = TokioIo::new(client);
    let mut upstream = TokioIo::new(upstream);
    if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
        tracing::debug!("upgraded connection ended: {e}");
    }
    drop(in_flight);
}
