//! `type = "rate_limit"`: token buckets or sliding windows per client address, header, consumer, JWT claim or route, counted in memory or in Redis.

mod memory;
pub mod redis;

use super::{Context, RequestState};
use crate::rescue::ProxyError;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::request::Parts;
use redis::{RedisCounts, RedisStore};
use sluice_config::{LimitKey, OnStoreError, RateLimit, Store};
use std::borrow::Cow;
use std::net::IpAddr;
use std::sync::Arc;

/// The limit's answer for one request, also sent as `RateLimit-*` headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    pub allowed: bool,
    pub limit: u64,
    pub remaining: u64,
    /// Seconds until the count is back to full.
    pub reset: u64,
    /// Seconds until a request would be allowed (when refused).
    pub retry_after: u64,
}

/// What a request is counted under, borrowed from the request.
#[derive(Debug, Clone, PartialEq, Eq)]
enum KeyRef<'a> {
    Ip(IpAddr),
    Text(&'a [u8]),
    /// A number or boolean claim, written out.
    Owned(Vec<u8>),
    /// The request has no value for the key (no such header, a Unix-socket client):
    /// such requests share one count.
    Missing,
}

/// Where a limiter's counts live.
#[derive(Debug)]
enum Counts {
    Memory(memory::MemoryCounts),
    Redis(RedisCounts),
}

/// One rate limit and its counts, kept across reloads that leave its settings (and, for
/// the Redis store, `[redis]`) alone.
#[derive(Debug)]
pub struct Limiter {
    pub config: RateLimit,
    name: Arc<str>,
    counts: Counts,
}

impl Limiter {
    /// A limiter for `[middleware.NAME]`; `redis` is the gateway's store, which a limit
    /// with `store = "redis"` always has (validation requires `[redis]`).
    pub fn new(name: &str, config: RateLimit, redis: Option<&Arc<RedisStore>>) -> Limiter {
        let counts = match (config.store, redis) {
            (Store::Redis, Some(store)) => Counts::Redis(RedisCounts::new(store, name)),
            _ => Counts::Memory(memory::MemoryCounts::new()),
        };
        Limiter {
            config,
            name: Arc::from(name),
            counts,
        }
    }

    /// Whether this limiter can go on counting for `config` after a reload whose
    /// gateway store is `redis`.
    pub fn can_keep(&self, config: &RateLimit, redis: Option<&Arc<RedisStore>>) -> bool {
        self.config == *config
            && match (&self.counts, redis) {
                (Counts::Memory(_), _) => true,
                (Counts::Redis(counts), Some(store)) => counts.uses(store),
                (Counts::Redis(_), None) => false,
            }
    }

    /// Counts the request. Refused: 429. The Redis store not answering within
    /// `[redis].timeout`: the request passes, or gets 503, as `on_store_error` says.
    pub async fn check(
        &self,
        parts: &Parts,
        state: &mut RequestState,
        cx: &Context<'_>,
    ) -> Result<(), ProxyError> {
        let key = self.key(parts, state, cx);
        let verdict = match &self.counts {
            Counts::Memory(counts) => counts.take(&self.config, key),
            // Boxed so that the pipeline's future stays small for memory-only routes.
            Counts::Redis(counts) => match Box::pin(counts.take(&self.config, key)).await {
                Ok(verdict) => verdict,
                Err(error) => {
                    counts.failed(&self.name, &error, self.config.on_store_error, cx.metrics);
                    return match self.config.on_store_error {
                        OnStoreError::Allow => Ok(()),
                        OnStoreError::Deny => Err(ProxyError::RateLimitStoreUnavailable {
                            limit: Arc::clone(&self.name),
                        }),
                    };
                }
            },
        };
        state.rate = Some(verdict);
        if verdict.allowed {
            Ok(())
        } else {
            Err(ProxyError::RateLimited {
                limit: Arc::clone(&self.name),
                retry_after: verdict.retry_after,
            })
        }
    }

    fn key<'a>(&self, parts: &'a Parts, state: &'a RequestState, cx: &Context<'a>) -> KeyRef<'a> {
        match &self.config.key {
            LimitKey::Ip => state.client_ip.map_or(KeyRef::Missing, KeyRef::Ip),
            LimitKey::Header(name) => parts
                .headers
                .get(name)
                .map_or(KeyRef::Missing, |v| KeyRef::Text(v.as_bytes())),
            LimitKey::Consumer => state
                .consumer
                .as_deref()
                .map_or(KeyRef::Missing, |c| KeyRef::Text(c.as_bytes())),
            LimitKey::Route => KeyRef::Text(cx.route.as_bytes()),
            LimitKey::Claim(name) => match state.claims.as_ref().and_then(|c| c.text(name)) {
                Some(Cow::Borrowed(text)) => KeyRef::Text(text.as_bytes()),
                Some(Cow::Owned(text)) => KeyRef::Owned(text.into_bytes()),
                None => KeyRef::Missing,
            },
        }
    }
}

/// Tokens added per second.
fn refill(config: &RateLimit) -> f64 {
    config.rate as f64 / config.per.as_secs_f64()
}

/// A token bucket's verdict when `tokens` are left after the request (taken or not).
fn bucket_verdict(config: &RateLimit, tokens: f64, allowed: bool) -> Verdict {
    let refill = refill(config);
    Verdict {
        allowed,
        limit: config.burst,
        remaining: tokens.max(0.0).floor() as u64,
        reset: seconds((config.burst as f64 - tokens) / refill),
        retry_after: if allowed {
            0
        } else {
            seconds((1.0 - tokens) / refill).max(1)
        },
    }
}

/// A sliding window's verdict: `current` requests counted in this window (the request
/// included when allowed), `previous` in the one before, `into` seconds into this one.
fn window_verdict(
    config: &RateLimit,
    allowed: bool,
    (current, previous): (u64, u64),
    into: f64,
) -> Verdict {
    let per = config.per.as_secs_f64();
    let rate = config.rate;
    let weight = (1.0 - into / per).clamp(0.0, 1.0);
    let used = previous as f64 * weight + current as f64;
    let retry_after = if allowed {
        0
    } else if current + 1 > rate || previous == 0 {
        // Only the next window has room.
        seconds(per - into).max(1)
    } else {
        // Room comes as the previous window's weight fades.
        let fade_to = (rate - current - 1) as f64 / previous as f64;
        seconds(per * (1.0 - fade_to) - into).max(1)
    };
    Verdict {
        allowed,
        limit: rate,
        remaining: (rate as f64 - used).max(0.0).floor() as u64,
        reset: seconds(per - into),
        retry_after,
    }
}

/// Whole seconds, rounded up.
fn seconds(s: f64) -> u64 {
    if s.is_finite() && s > 0.0 {
        s.ceil() as u64
    } else {
        0
    }
}

const RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("ratelimit-limit");
const RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("ratelimit-remaining");
const RATELIMIT_RESET: HeaderName = HeaderName::from_static("ratelimit-reset");

/// `RateLimit-Limit`, `-Remaining` and `-Reset` from the last limit the request met.
pub fn respond(headers: &mut HeaderMap, state: &RequestState) {
    if let Some(v) = state.rate {
        headers.insert(RATELIMIT_LIMIT, HeaderValue::from(v.limit));
        headers.insert(RATELIMIT_REMAINING, HeaderValue::from(v.remaining));
        headers.insert(RATELIMIT_RESET, HeaderValue::from(v.reset));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_config::Algorithm;
    use std::time::Duration;

    pub(super) fn limit(algorithm: Algorithm, rate: u64, burst: u64) -> RateLimit {
        RateLimit {
            algorithm,
            rate,
            per: Duration::from_secs(10),
            burst,
            key: LimitKey::Ip,
            store: Store::Memory,
            on_store_error: OnStoreError::Allow,
        }
    }

    #[test]
    fn bucket_verdicts_count_whole_tokens_and_round_waits_up() {
        let l = limit(Algorithm::TokenBucket, 5, 10);
        let v = bucket_verdict(&l, 7.5, true);
        assert_eq!(
            (v.limit, v.remaining, v.reset, v.retry_after),
            (10, 7, 5, 0)
        );
        let v = bucket_verdict(&l, 0.25, false);
        assert_eq!((v.remaining, v.reset, v.retry_after), (0, 20, 2));
        // Less than a second to wait still says one.
        let v = bucket_verdict(&l, 0.9, false);
        assert_eq!(v.retry_after, 1);
    }

    #[test]
    fn window_verdicts_weigh_the_previous_window() {
        let l = limit(Algorithm::SlidingWindow, 10, 10);
        // 2.5 s into a 10 s window: the previous 8 weigh 6.
        let v = window_verdict(&l, true, (3, 8), 2.5);
        assert_eq!(
            (v.limit, v.remaining, v.reset, v.retry_after),
            (10, 1, 8, 0)
        );
        // Refused with 4 here and 8 before: room for a fifth once 8 weigh 5, at 3.75 s.
        let v = window_verdict(&l, false, (4, 8), 2.5);
        assert_eq!((v.remaining, v.retry_after), (0, 2));
        // This window full: only the next one has room.
        let v = window_verdict(&l, false, (10, 0), 2.5);
        assert_eq!(v.retry_after, 8);
    }

    #[test]
    fn keys_come_from_the_request() {
        let mut l = limit(Algorithm::TokenBucket, 1, 1);
        let limiter = |l: &RateLimit| Limiter::new("k", l.clone(), None);
        let (parts, _) = http::Request::builder()
            .header("x-tenant", "acme")
            .body(())
            .expect("request")
            .into_parts();
        let id = HeaderValue::from_static("id");
        let metrics = crate::metrics::Metrics::register(&mut Default::default());
        let cx = Context {
            route: "r1",
            request_id: &id,
            metrics: &metrics,
        };
        let state = RequestState {
            client_ip: Some(IpAddr::from([192, 0, 2, 1])),
            ..RequestState::default()
        };
        let key = |l: &RateLimit| limiter(l).key(&parts, &state, &cx);
        assert_eq!(key(&l), KeyRef::Ip(IpAddr::from([192, 0, 2, 1])));
        l.key = LimitKey::Header(HeaderName::from_static("x-tenant"));
        assert_eq!(key(&l), KeyRef::Text(b"acme"));
        l.key = LimitKey::Header(HeaderName::from_static("x-other"));
        assert_eq!(key(&l), KeyRef::Missing);
        l.key = LimitKey::Route;
        assert_eq!(key(&l), KeyRef::Text(b"r1"));
        l.key = LimitKey::Consumer;
        assert_eq!(key(&l), KeyRef::Missing);
        l.key = LimitKey::Claim("sub".into());
        assert_eq!(key(&l), KeyRef::Missing, "no token verified");
        let claims = serde_json::json!({"sub": "alice", "uid": 7});
        let state = RequestState {
            claims: claims
                .as_object()
                .cloned()
                .map(super::super::jwt::Claims::new),
            ..RequestState::default()
        };
        let key = |l: &RateLimit| limiter(l).key(&parts, &state, &cx);
        assert_eq!(key(&l), KeyRef::Text(b"alice"));
        l.key = LimitKey::Claim("uid".into());
        assert_eq!(key(&l), KeyRef::Owned(b"7".to_vec()));
    }
}
