//! The pipeline builder: the one place that assembles each route's middleware, in the order written, when a configuration is loaded.

use crate::middleware::rate_limit::redis::RedisStore;
use crate::middleware::{Pipeline, Stage};
use http::HeaderName;
use sluice_config::{Config, ConfigError, ConfigErrors, Location, MiddlewareKind};
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
    /// The connection to `[redis]`, shared by every limit counted there.
    redis: Option<Arc<RedisStore>>,
}

impl Pipelines {
    /// Builds the pipelines of `config`, carrying rate-limit counters over from
    /// `previous` for middleware whose name and settings did not change, and the Redis
    /// connection when `[redis]` did not change.
    pub fn build(config: &Config, previous: Option<&Pipelines>) -> Result<Pipelines, ConfigErrors> {
        let redis = match &config.redis {
            None => None,
            Some(r) => match previous.and_then(|p| p.redis.as_ref()) {
                Some(old) if old.config == *r => Some(Arc::clone(old)),
                _ => Some(Arc::new(RedisStore::new(r).map_err(|e| {
                    ConfigErrors::single(ConfigError::new(
                        &config.source,
                        Location::START,
                        "redis.url",
                        e,
                    ))
                })?)),
            },
        };
        let stages: Vec<(String, Arc<Stage>)> = config
            .middleware
            .iter()
            .map(|m| {
                let old = previous
                    .and_then(|p| p.stages.iter().find(|(name, _)| *name == m.name))
                    .map(|(_, stage)| stage.as_ref());
                (
                    m.name.clone(),
                    Arc::new(Stage::build(m, old, redis.as_ref())),
                )
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
        Ok(Pipelines {
            stages,
            routes,
            owned_headers,
            redis,
        })
    }
}
