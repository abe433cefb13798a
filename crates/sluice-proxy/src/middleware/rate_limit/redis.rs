//! The Redis store: every gateway node counts in one Redis, one atomic script call per request on Redis's clock, bounded by `[redis].timeout`.

use super::{bucket_verdict, window_verdict, KeyRef, Verdict};
use crate::metrics::{Metrics, MiddlewareLabels};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::Script;
use sluice_config::{Algorithm, OnStoreError, RateLimit, Redis};
use std::io::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, OnceLock};
use std::time::{Duration, Instant};

/// The counting script; `Script` sends it by digest (EVALSHA) and loads it when Redis
/// does not know it yet (after a restart).
static LIMIT_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("limit.lua")));

/// Store errors are logged at most this often; the metric counts every one.
const WARN_EVERY: Duration = Duration::from_secs(1);

/// The gateway's Redis: one multiplexed connection, shared by every Redis-backed limit
/// and kept across reloads that leave `[redis]` alone. It connects on first use and
/// reconnects on its own after Redis goes away, so a Redis back up needs no restart.
pub struct RedisStore {
    pub config: Redis,
    client: redis::Client,
    /// Made on first use, inside the runtime (a snapshot is also built without one,
    /// by `sluice validate`).
    connection: OnceLock<ConnectionManager>,
    /// Milliseconds since `epoch` before which no store error is logged.
    quiet_until: AtomicU64,
    /// Errors not logged since the last line.
    unlogged: AtomicU64,
    /// Whether the last call failed, to log the recovery once.
    failing: AtomicBool,
    epoch: Instant,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// Why the store gave no verdict.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("Redis did not answer within {0:?}")]
    Timeout(Duration),
    #[error("Redis failed: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("the script's reply is not understood: {0}")]
    Reply(&'static str),
}

impl RedisStore {
    /// The store of `config`; nothing connects until the first request.
    pub fn new(config: &Redis) -> Result<RedisStore, String> {
        let client = redis::Client::open(config.url.as_str())
            .map_err(|e| format!("invalid Redis URL `{}`: {e}", config.display_url()))?;
        Ok(RedisStore {
            config: config.clone(),
            client,
            connection: OnceLock::new(),
            quiet_until: AtomicU64::new(0),
            unlogged: AtomicU64::new(0),
            failing: AtomicBool::new(false),
            epoch: Instant::now(),
        })
    }

    fn connection(&self) -> Result<ConnectionManager, StoreError> {
        if let Some(c) = self.connection.get() {
            return Ok(c.clone());
        }
        // One connection attempt at a time, given up after 1 s (or `timeout`, if longer)
        // and not retried: while Redis refuses connections, requests fail at once instead
        // of waiting out `timeout`, and the first request after it is back reconnects.
        // `timeout` bounds each call, so the connection sets no response timeout of its own.
        let settings = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.config.timeout.max(Duration::from_secs(1))))
            .set_response_timeout(None)
            .set_number_of_retries(0);
        let made = ConnectionManager::new_lazy_with_config(self.client.clone(), settings)?;
        Ok(self.connection.get_or_init(|| made).clone())
    }

    /// Runs the script once, within `timeout`.
    async fn run<T: redis::FromRedisValue>(
        &self,
        invocation: &redis::ScriptInvocation<'_>,
    ) -> Result<T, StoreError> {
        let mut connection = self.connection()?;
        let call = invocation.invoke_async(&mut connection);
        let reply = match tokio::time::timeout(self.config.timeout, call).await {
            Ok(reply) => reply?,
            Err(_) => return Err(StoreError::Timeout(self.config.timeout)),
        };
        if self.failing.load(Ordering::Relaxed) && self.failing.swap(false, Ordering::Relaxed) {
            tracing::info!(redis = %self.config.display_url(), "the rate-limit store answers again");
        }
        Ok(reply)
    }

    /// Logs a failed call at most once per [`WARN_EVERY`].
    fn failed(&self, limit: &str, error: &StoreError, action: OnStoreError) {
        self.failing.store(true, Ordering::Relaxed);
        let Some(also) = self.may_log(self.epoch.elapsed().as_millis() as u64) else {
            return;
        };
        let outcome = match action {
            OnStoreError::Allow => "let through",
            OnStoreError::Deny => "refused with 503",
        };
        tracing::warn!(
            redis = %self.config.display_url(),
            middleware = limit,
            "rate-limit store unavailable: {error}; requests are {outcome} (on_store_error); {also} more failures since the last warning"
        );
    }

    /// Whether a failure `now` (milliseconds since `epoch`) may be logged, with how many
    /// went unlogged before it; otherwise counts it as unlogged.
    fn may_log(&self, now: u64) -> Option<u64> {
        let until = self.quiet_until.load(Ordering::Relaxed);
        let next = now + WARN_EVERY.as_millis() as u64;
        if now < until
            || self
                .quiet_until
                .compare_exchange(until, next, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            self.unlogged.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        Some(self.unlogged.swap(0, Ordering::Relaxed))
    }
}

/// One limit's counts in the gateway's Redis, under `sluice:rl:NAME:KEY`.
#[derive(Debug)]
pub(super) struct RedisCounts {
    store: Arc<RedisStore>,
    /// `sluice:rl:NAME:`.
    prefix: Box<[u8]>,
}

impl RedisCounts {
    pub(super) fn new(store: &Arc<RedisStore>, name: &str) -> RedisCounts {
        RedisCounts {
            store: Arc::clone(store),
            prefix: format!("sluice:rl:{name}:").into_bytes().into(),
        }
    }

    /// Whether these counts live in `store`.
    pub(super) fn uses(&self, store: &Arc<RedisStore>) -> bool {
        Arc::ptr_eq(&self.store, store)
    }

    /// Counts one request for `key`: one round trip.
    pub(super) async fn take(
        &self,
        config: &RateLimit,
        key: KeyRef<'_>,
    ) -> Result<Verdict, StoreError> {
        let mut invocation = LIMIT_SCRIPT.prepare_invoke();
        invocation
            .key(redis_key(&self.prefix, key))
            .arg(match config.algorithm {
                Algorithm::TokenBucket => "bucket",
                Algorithm::SlidingWindow => "window",
            })
            .arg(config.rate)
            .arg(u64::try_from(config.per.as_micros()).unwrap_or(u64::MAX))
            .arg(config.burst);
        match config.algorithm {
            Algorithm::TokenBucket => {
                let (allowed, tokens): (u8, String) = self.store.run(&invocation).await?;
                let tokens: f64 = tokens
                    .parse()
                    .map_err(|_| StoreError::Reply("tokens is not a number"))?;
                Ok(bucket_verdict(config, tokens, allowed == 1))
            }
            Algorithm::SlidingWindow => {
                let (allowed, current, previous, into): (u8, u64, u64, u64) =
                    self.store.run(&invocation).await?;
                let into = Duration::from_micros(into).as_secs_f64();
                Ok(window_verdict(
                    config,
                    allowed == 1,
                    (current, previous),
                    into,
                ))
            }
        }
    }

    /// Counts and logs a failed call.
    pub(super) fn failed(
        &self,
        limit: &Arc<str>,
        error: &StoreError,
        action: OnStoreError,
        metrics: &Metrics,
    ) {
        metrics
            .rate_limit_store_errors
            .get_or_create(&MiddlewareLabels {
                middleware: Arc::clone(limit),
            })
            .inc();
        self.store.failed(limit, error, action);
    }
}

/// `prefix` then the key: an address as text, header, consumer, claim and route values
/// as they are; nothing for requests without a value.
fn redis_key(prefix: &[u8], key: KeyRef<'_>) -> Vec<u8> {
    let mut out = Vec::with_capacity(prefix.len() + 40);
    out.extend_from_slice(prefix);
    match key {
        // Writing to a Vec cannot fail.
        KeyRef::Ip(ip) => {
            let _ = write!(out, "{ip}");
        }
        KeyRef::Text(t) => out.extend_from_slice(t),
        KeyRef::Owned(t) => out.extend_from_slice(&t),
        KeyRef::Missing => {}
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::IpAddr;

    #[test]
    fn keys_are_namespaced_by_limit() {
        let prefix = b"sluice:rl:api:";
        assert_eq!(
            redis_key(prefix, KeyRef::Ip(IpAddr::from([192, 0, 2, 7]))),
            b"sluice:rl:api:192.0.2.7"
        );
        assert_eq!(
            redis_key(prefix, KeyRef::Ip("2001:db8::1".parse().expect("ip"))),
            b"sluice:rl:api:2001:db8::1"
        );
        assert_eq!(
            redis_key(prefix, KeyRef::Text(b"acme\xff")),
            b"sluice:rl:api:acme\xff"
        );
        assert_eq!(redis_key(prefix, KeyRef::Missing), b"sluice:rl:api:");
    }

    #[test]
    fn the_store_is_made_without_connecting() {
        let config = Redis {
            url: "redis://127.0.0.1:1/0".into(),
            timeout: Duration::from_millis(50),
        };
        let store = RedisStore::new(&config).expect("store");
        assert!(store.connection.get().is_none());
        let counts = RedisCounts::new(&Arc::new(store), "api");
        assert_eq!(&*counts.prefix, b"sluice:rl:api:");
    }

    #[test]
    fn store_errors_are_logged_at_most_once_a_second() {
        let config = Redis {
            url: "redis://127.0.0.1:1/0".into(),
            timeout: Duration::from_millis(50),
        };
        let store = RedisStore::new(&config).expect("store");
        assert_eq!(store.may_log(5), Some(0));
        for ms in [6, 500, 1004] {
            assert_eq!(store.may_log(ms), None, "{ms} ms");
        }
        assert_eq!(
            store.may_log(1005),
            Some(3),
            "the next line tells how many were not"
        );
        assert_eq!(store.may_log(1006), None);
    }
}
