//! The admin listener: `/healthz` (alive), `/ready` (serving, not draining), `/health`
//! (version, uptime, configuration generation, clusters and targets) and `/metrics`.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use sluice_proxy::Gateway;
use std::future::Future;
use std::sync::Arc;
use tokio::net::TcpListener;

/// The admin routes over the gateway's shared state.
pub fn router(gateway: Arc<Gateway>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/ready", get(ready))
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .with_state(gateway)
}

/// Serves the admin API on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    gateway: Arc<Gateway>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(gateway))
        .with_graceful_shutdown(shutdown)
        .await
}

async fn ready(State(gateway): State<Arc<Gateway>>) -> Response {
    if gateway.is_ready() {
        (StatusCode::OK, "ready\n").into_response()
    } else if gateway.is_draining() {
        (StatusCode::SERVICE_UNAVAILABLE, "draining\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "starting\n").into_response()
    }
}

async fn health(State(gateway): State<Arc<Gateway>>) -> Json<serde_json::Value> {
    let snapshot = gateway.snapshot();
    let clusters: Vec<serde_json::Value> = snapshot
        .clusters
        .iter()
        .map(|c| {
            let targets: Vec<serde_json::Value> = c
                .targets
                .iter()
                .map(|t| serde_json::json!({ "url": &*t.name, "weight": t.target.weight, "active_requests": t.active() }))
                .collect();
            serde_json::json!({ "name": &*c.name, "targets": targets })
        })
        .collect();
    Json(serde_json::json!({
        "status": if gateway.is_draining() { "draining" } else { "ok" },
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_seconds": gateway.started.elapsed().as_secs(),
        "config": { "generation": gateway.generation(), "source": snapshot.config.source },
        "clusters": clusters,
    }))
}

async fn metrics(State(gateway): State<Arc<Gateway>>) -> Response {
    let mut text = String::new();
    match prometheus_client::encoding::text::encode(&mut text, &gateway.registry) {
        Ok(()) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(e) => {
            tracing::error!("cannot encode metrics: {e}");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}
