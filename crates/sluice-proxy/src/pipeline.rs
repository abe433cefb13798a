//! The pipeline builder: the one place that assembles each route's middleware, in the order written, when a configuration is loaded.

use crate::middleware::{Pipeline, Stage};
use http::HeaderName;
use sluice_config::{Config, MiddlewareKind};
use std::sync::Arc;

/// Every route's pipeline, and the request headers only the gateway may set.
#[derive(Debug, Default)]
pub struct Pipelines {
    /// The built middleware, by index in `config.middleware`.
    stages: Vec<(String, Arc<Stage>)>,
    /// By route index.
    pub routes: Vec<Pipeline>,
    /// Identity headers some middleware sets (the consumer): removed from every request
    /// as it arrives, so that a client can never claim an identity on any route.
    pub owned_headers: Vec<HeaderName>,
}

impl Pipelines {
    /// Builds the pipelines of `config`, carrying rate-limit counters over from
    /// `previous` for middleware whose name and settings did not change.
    pub fn build(config: &Config, previous: Option<&Pipelines>) -> Pipelines {
        let stages: Vec<(String, Arc<Stage>)> = config
            .middleware
            .iter()
            .map(|m| {
                let old = previous
                    .and_then(|p| p.stages.iter().find(|(name, _)| *name == m.name))
                    .map(|(_, stage)| stage.as_ref());
                (m.name.clone(), Arc::new(Stage::build(m, old)))
            })
            .collect();
        let routes = config
            .routes
            .iter()
            .map(|r| {
                Pipeline::new(
                    r.middleware
                        .iter()
                        .map(|&i| Arc::clone(&stages[i].1))
                        .collect(),
                )
            })
            .collect();
        let mut owned_headers: Vec<HeaderName> = Vec::new();
        for m in &config.middleware {
            if let MiddlewareKind::ApiKey(keys) = &m.kind {
                if !owned_headers.contains(&keys.consumer_header) {
                    owned_headers.push(keys.consumer_header.clone());
                }
            }
        }
        Pipelines {
            stages,
            routes,
            owned_headers,
        }
    }
}
