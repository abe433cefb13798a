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

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(p: &Pipelines, name: &str) -> Arc<crate::middleware::rate_limit::Limiter> {
        match p.stages.iter().find(|(n, _)| n == name).map(|(_, s)| &**s) {
            Some(Stage::RateLimit(l)) => Arc::clone(l),
            other => panic!("{other:?}"),
        }
    }

    fn build(redis: &str, previous: Option<&Pipelines>) -> Pipelines {
        let text = format!(
            "{redis}\n[middleware.shared]\ntype = \"rate_limit\"\nrate = 5\nstore = \"redis\"\n\n\
             [middleware.local]\ntype = \"rate_limit\"\nrate = 5\n"
        );
        let config = sluice_config::parse(&text, "t.toml").expect("valid");
        Pipelines::build(&config, previous).expect("pipelines")
    }

    #[test]
    fn a_reload_keeps_the_redis_connection_and_limits_while_redis_is_unchanged() {
        let first = build("[redis]\nurl = \"redis://127.0.0.1:6379\"", None);
        let same = build("[redis]\nurl = \"redis://127.0.0.1:6379\"", Some(&first));
        let (a, b) = (first.redis.as_ref(), same.redis.as_ref());
        assert!(a.zip(b).is_some_and(|(a, b)| Arc::ptr_eq(a, b)));
        assert!(Arc::ptr_eq(
            &limiter(&first, "shared"),
            &limiter(&same, "shared")
        ));
        // Another timeout is another connection, and the Redis limit follows it; the
        // memory limit keeps its counts.
        let moved = build(
            "[redis]\nurl = \"redis://127.0.0.1:6379\"\ntimeout = \"1s\"",
            Some(&same),
        );
        let (b, c) = (same.redis.as_ref(), moved.redis.as_ref());
        assert!(b.zip(c).is_some_and(|(b, c)| !Arc::ptr_eq(b, c)));
        assert!(!Arc::ptr_eq(
            &limiter(&same, "shared"),
            &limiter(&moved, "shared")
        ));
        assert!(Arc::ptr_eq(
            &limiter(&same, "local"),
            &limiter(&moved, "local")
        ));
    }
}
