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
    /// Identity headers the gateway sets (the consumer, forwarded JWT claims, a client
    /// certificate's subject): removed from every request as it arrives, so that a client
    /// can never claim an identity on any route.
    pub owned_headers: Vec<HeaderName>,
    /// The connection to `[redis]`, shared by every limit counted there.
    redis: Option<Arc<RedisStore>>,
}

impl Pipelines {
    /// Builds the pipelines of `config`, carrying rate-limit counters and JWKS key sets
    /// over from `previous` for middleware whose name and settings did not change, and the
    /// Redis connection when `[redis]` did not change.
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
                let stage = Stage::build(m, old, redis.as_ref(), &config.source)
                    .map_err(ConfigErrors::single)?;
                Ok((m.name.clone(), Arc::new(stage)))
            })
            .collect::<Result<_, ConfigErrors>>()?;
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
        let set_by_middleware = config.middleware.iter().flat_map(|m| match &m.kind {
            MiddlewareKind::ApiKey(keys) => vec![&keys.consumer_header],
            MiddlewareKind::Jwt(jwt) => jwt.forward_claims.iter().map(|(_, h)| h).collect(),
            _ => Vec::new(),
        });
        // A verified client certificate's subject is the TLS listeners' to set.
        let set_by_tls = config.server.tls.iter().map(|t| &t.client_subject_header);
        let mut owned_headers: Vec<HeaderName> = Vec::new();
        for name in set_by_tls.chain(set_by_middleware) {
            if !owned_headers.contains(name) {
                owned_headers.push(name.clone());
            }
        }
        Ok(Pipelines {
            stages,
            routes,
            owned_headers,
            redis,
        })
    }

    /// Starts the background work of the stages that have some (JWKS refreshes) and do
    /// not run it yet; called once the runtime runs, and after every reload.
    pub fn start_background(&self) {
        for (_, stage) in &self.stages {
            if let Stage::Jwt(verifier) = &**stage {
                verifier.start_refresh();
            }
        }
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

    fn verifier(p: &Pipelines, name: &str) -> Arc<Stage> {
        let stage = p.stages.iter().find(|(n, _)| n == name).map(|(_, s)| s);
        Arc::clone(stage.expect(name))
    }

    #[test]
    fn a_reload_keeps_a_jwks_while_its_settings_are_unchanged() {
        let build = |refresh: &str, issuer: &str, previous: Option<&Pipelines>| {
            let text = format!(
                "[middleware.auth]\ntype = \"jwt\"\nalgorithms = [\"RS256\"]\n\
                 jwks_url = \"http://127.0.0.1:9/jwks\"\njwks_refresh = \"{refresh}\"\nissuer = \"{issuer}\"\n\
                 forward_claims = {{ sub = \"x-user-id\" }}\n"
            );
            let config = sluice_config::parse(&text, "t.toml").expect("valid");
            Pipelines::build(&config, previous).expect("pipelines")
        };
        let shares =
            |a: &Pipelines, b: &Pipelines| match (&*verifier(a, "auth"), &*verifier(b, "auth")) {
                (Stage::Jwt(a), Stage::Jwt(b)) => a.shares_key_set(b),
                other => panic!("{other:?}"),
            };
        let first = build("5m", "a", None);
        assert_eq!(first.owned_headers, [HeaderName::from_static("x-user-id")]);
        // Another issuer is another verifier, on the same keys.
        let same = build("5m", "b", Some(&first));
        assert!(shares(&first, &same));
        let moved = build("1m", "b", Some(&same));
        assert!(!shares(&same, &moved));
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
