//! The admin listener: `/healthz` (alive), `/ready` (serving, not draining), `/health`
//! (version, uptime, configuration generation and last reload, clusters and targets),
//! `/metrics`, and `POST /api/v1/reload`.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use sluice_proxy::{Gateway, Reloader, Trigger};
use std::future::Future;
use std::sync::Arc;
use tokio::net::TcpListener;

/// What the admin handlers work on.
#[derive(Clone)]
struct Admin {
    gateway: Arc<Gateway>,
    reloader: Reloader,
}

/// The admin routes over the gateway's shared state.
pub fn router(gateway: Arc<Gateway>, reloader: Reloader) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/ready", get(ready))
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .route("/api/v1/reload", post(reload))
        .with_state(Admin { gateway, reloader })
}

/// Serves the admin API on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    gateway: Arc<Gateway>,
    reloader: Reloader,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(gateway, reloader))
        .with_graceful_shutdown(shutdown)
        .await
}

async fn ready(State(Admin { gateway, .. }): State<Admin>) -> Response {
    if gateway.is_ready() {
        (StatusCode::OK, "ready\n").into_response()
    } else if gateway.is_draining() {
        (StatusCode::SERVICE_UNAVAILABLE, "draining\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "starting\n").into_response()
    }
}

/// Re-reads the configuration: 200 with the new generation, or 422 with every problem;
/// the running configuration is untouched on error.
async fn reload(State(admin): State<Admin>) -> Response {
    match admin.reloader.reload(Trigger::AdminApi).await {
        Ok(generation) => {
            Json(serde_json::json!({ "status": "applied", "generation": generation }))
                .into_response()
        }
        Err(errors) => {
            let body = serde_json::json!({
                "type": "urn:sluice:problem:config_rejected",
                "title": "Unprocessable Content",
                "status": 422,
                "detail": "the configuration was rejected; the previous one keeps serving",
                "errors": errors.lines().collect::<Vec<_>>(),
                "generation": admin.gateway.generation(),
            });
            (
                StatusCode::UNPROCESSABLE_ENTITY,
                [(header::CONTENT_TYPE, "application/problem+json")],
                body.to_string(),
            )
                .into_response()
        }
    }
}

async fn health(State(Admin { gateway, .. }): State<Admin>) -> Json<serde_json::Value> {
    let snapshot = gateway.snapshot();
    let reload = gateway.reload_status();
    let now = tokio::time::Instant::now();
    let since_epoch = |t: std::time::SystemTime| {
        t.duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .ok()
    };
    let clusters: Vec<serde_json::Value> = snapshot
        .clusters
        .iter()
        .map(|c| {
            let targets: Vec<serde_json::Value> = c
                .targets
                .iter()
                .map(|t| {
                    serde_json::json!({
                        "url": &*t.name,
                        "weight": t.target.weight,
                        "active_requests": t.active(),
                        "healthy": t.is_healthy(now),
                        "health_checks": t.health.as_ref().map(|h| serde_json::json!({
                            "passing": h.is_healthy(),
                            "failed_checks": h.failed_checks(),
                        })),
                        "ejected": t.ejector.as_ref().is_some_and(|e| e.is_ejected(now)),
                        "ejections": t.ejector.as_ref().map_or(0, |e| e.ejections()),
                        "circuit": t.circuit(now).as_str(),
                        "circuit_opened": t.breaker.as_ref().map_or(0, |b| b.times_opened()),
                    })
                })
                .collect();
            serde_json::json!({ "name": &*c.name, "targets": targets })
        })
        .collect();
    Json(serde_json::json!({
        "status": if gateway.is_draining() { "draining" } else { "ok" },
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_seconds": gateway.started.elapsed().as_secs(),
        "config": {
            "generation": gateway.generation(),
            "source": snapshot.config.source,
            "reloads_applied": reload.applied,
            "reloads_rejected": reload.rejected,
            "last_reload_unix": reload.last_attempt.and_then(since_epoch),
            "last_reload_error": reload.last_error,
        },
        "clusters": clusters,
    }))
}

async fn metrics(State(Admin { gateway, .. }): State<Admin>) -> Response {
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
