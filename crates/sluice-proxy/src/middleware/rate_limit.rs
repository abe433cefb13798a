//! `type = "rate_limit"`: token buckets or sliding windows per client address, header, consumer or route, counted in memory.

use super::{Context, RequestState};
use crate::rescue::ProxyError;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::request::Parts;
use sluice_config::{Algorithm, LimitKey, RateLimit};
use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const SHARDS: usize = 16;
/// A shard is swept of entries at rest once it holds this many (then twice its size).
const FIRST_SWEEP: usize = 1024;

/// What requests are counted together.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Ip(IpAddr),
    Text(Box<str>),
    /// The request has no value for the key (no such header, a Unix-socket client):
    /// such requests share one count.
    Missing,
}

#[derive(Debug)]
enum Entry {
    Bucket {
        tokens: f64,
        at: Duration,
    },
    Window {
        index: u64,
        current: u64,
        previous: u64,
    },
}

#[derive(Debug)]
struct Shard {
    entries: HashMap<Key, Entry>,
    sweep_at: usize,
}

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

/// One rate limit's counters, kept across reloads that leave its settings alone.
#[derive(Debug)]
pub struct Limiter {
    pub config: RateLimit,
    name: Arc<str>,
    hasher: RandomState,
    shards: Box<[Mutex<Shard>]>,
    epoch: Instant,
}

impl Limiter {
    pub fn new(name: &str, config: RateLimit) -> Limiter {
        Limiter {
            config,
            name: Arc::from(name),
            hasher: RandomState::new(),
            shards: (0..SHARDS)
                .map(|_| {
                    Mutex::new(Shard {
                        entries: HashMap::new(),
                        sweep_at: FIRST_SWEEP,
                    })
                })
                .collect(),
            epoch: Instant::now(),
        }
    }

    pub fn check(
        &self,
        parts: &Parts,
        state: &mut RequestState,
        cx: &Context<'_>,
    ) -> Result<(), ProxyError> {
        let text = |t: &str| Key::Text(Box::from(t));
        let key = match &self.config.key {
            LimitKey::Ip => state.client_ip.map_or(Key::Missing, Key::Ip),
            LimitKey::Header(name) => parts.headers.get(name).map_or(Key::Missing, |v| {
                text(&String::from_utf8_lossy(v.as_bytes()))
            }),
            LimitKey::Consumer => state.consumer.as_deref().map_or(Key::Missing, text),
            LimitKey::Route => text(cx.route),
            LimitKey::Claim(_) => Key::Missing,
        };
        let verdict = self.take(key, self.epoch.elapsed());
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

    /// Counts one request for `key` at `now` (time since the limiter was made).
    fn take(&self, key: Key, now: Duration) -> Verdict {
        let shard = &self.shards[self.hasher.hash_one(&key) as usize % SHARDS];
        // A poisoned shard only means another request panicked mid-update; the counts
        // are still numbers.
        let mut shard = shard.lock().unwrap_or_else(|p| p.into_inner());
        if shard.entries.len() >= shard.sweep_at && !shard.entries.contains_key(&key) {
            shard.entries.retain(|_, e| !self.at_rest(e, now));
            shard.sweep_at = (shard.entries.len() * 2).max(FIRST_SWEEP);
        }
        let entry = shard.entries.entry(key).or_insert_with(|| self.fresh(now));
        match entry {
            Entry::Bucket { tokens, at } => self.bucket(tokens, at, now),
            Entry::Window {
                index,
                current,
                previous,
            } => self.window(index, current, previous, now),
        }
    }

    fn fresh(&self, now: Duration) -> Entry {
        match self.config.algorithm {
            Algorithm::TokenBucket => Entry::Bucket {
                tokens: self.config.burst as f64,
                at: now,
            },
            Algorithm::SlidingWindow => Entry::Window {
                index: self.window_index(now),
                current: 0,
                previous: 0,
            },
        }
    }

    /// Tokens per second.
    fn refill(&self) -> f64 {
        self.config.rate as f64 / self.config.per.as_secs_f64()
    }

    fn window_index(&self, now: Duration) -> u64 {
        (now.as_nanos() / self.config.per.as_nanos().max(1)) as u64
    }

    /// Whether an entry says no more than a fresh one would.
    fn at_rest(&self, entry: &Entry, now: Duration) -> bool {
        match entry {
            Entry::Bucket { tokens, at } => {
                tokens + now.saturating_sub(*at).as_secs_f64() * self.refill()
                    >= self.config.burst as f64
            }
            Entry::Window { index, .. } => self.window_index(now) >= index + 2,
        }
    }

    fn bucket(&self, tokens: &mut f64, at: &mut Duration, now: Duration) -> Verdict {
        let burst = self.config.burst as f64;
        let refill = self.refill();
        *tokens = (*tokens + now.saturating_sub(*at).as_secs_f64() * refill).min(burst);
        *at = now;
        let allowed = *tokens >= 1.0;
        if allowed {
            *tokens -= 1.0;
        }
        Verdict {
            allowed,
            limit: self.config.burst,
            remaining: tokens.floor() as u64,
            reset: seconds((burst - *tokens) / refill),
            retry_after: if allowed {
                0
            } else {
                seconds((1.0 - *tokens) / refill).max(1)
            },
        }
    }

    fn window(
        &self,
        index: &mut u64,
        current: &mut u64,
        previous: &mut u64,
        now: Duration,
    ) -> Verdict {
        let per = self.config.per.as_secs_f64();
        let rate = self.config.rate;
        let idx = self.window_index(now);
        if idx == *index + 1 {
            *previous = *current;
            *current = 0;
        } else if idx != *index {
            *previous = 0;
            *current = 0;
        }
        *index = idx;
        let into = now.as_secs_f64() - idx as f64 * per;
        let weight = (1.0 - into / per).clamp(0.0, 1.0);
        let estimate = *previous as f64 * weight + *current as f64;
        let allowed = estimate + 1.0 <= rate as f64;
        if allowed {
            *current += 1;
        }
        let used = estimate + f64::from(u8::from(allowed));
        let retry_after = if allowed {
            0
        } else if *current + 1 > rate || *previous == 0 {
            // Only the next window has room.
            seconds(per - into).max(1)
        } else {
            // Room comes as the previous window's weight fades.
            let fade_to = (rate - *current - 1) as f64 / *previous as f64;
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
    use sluice_config::{OnStoreError, Store};

    fn limiter(algorithm: Algorithm, rate: u64, burst: u64) -> Limiter {
        Limiter::new(
            "t",
            RateLimit {
                algorithm,
                rate,
                per: Duration::from_secs(10),
                burst,
                key: LimitKey::Ip,
                store: Store::Memory,
                on_store_error: OnStoreError::Allow,
            },
        )
    }

    fn key(n: u8) -> Key {
        Key::Ip(IpAddr::from([192, 0, 2, n]))
    }

    #[test]
    fn a_token_bucket_allows_its_burst_then_refills_at_its_rate() {
        let l = limiter(Algorithm::TokenBucket, 5, 10);
        let t0 = Duration::from_secs(100);
        for i in 0..10 {
            let v = l.take(key(1), t0);
            assert!(v.allowed, "request {i}");
            assert_eq!(v.remaining, 9 - i);
        }
        let refused = l.take(key(1), t0);
        assert!(!refused.allowed);
        assert_eq!(refused.retry_after, 2, "one token every 2 s");
        assert!(l.take(key(2), t0).allowed, "another key has its own bucket");
        assert!(!l.take(key(1), t0 + Duration::from_secs(1)).allowed);
        assert!(l.take(key(1), t0 + Duration::from_secs(2)).allowed);
        // Refilling stops at the burst.
        let later = t0 + Duration::from_secs(1000);
        assert_eq!(l.take(key(1), later).remaining, 9);
    }

    #[test]
    fn a_sliding_window_counts_the_previous_window_by_its_remaining_weight() {
        let l = limiter(Algorithm::SlidingWindow, 10, 10);
        let start = Duration::from_secs(100); // a window boundary (10 s windows)
        for _ in 0..10 {
            assert!(l.take(key(1), start).allowed);
        }
        let refused = l.take(key(1), start + Duration::from_secs(5));
        assert!(!refused.allowed);
        assert_eq!(refused.retry_after, 5, "the next window");
        // Halfway into the next window the previous 10 count as 5.
        let half = start + Duration::from_secs(15);
        for i in 0..5 {
            assert!(l.take(key(1), half).allowed, "request {i}");
        }
        assert!(!l.take(key(1), half).allowed);
        // Two windows later nothing is left of them.
        assert_eq!(l.take(key(1), start + Duration::from_secs(30)).remaining, 9);
    }

    #[test]
    fn entries_at_rest_are_swept() {
        let l = limiter(Algorithm::TokenBucket, 1000, 1000);
        let t0 = Duration::from_secs(1);
        for n in 0..=u8::MAX {
            for a in 0..80u8 {
                let _ = l.take(Key::Ip(IpAddr::from([10, a, n, 1])), t0);
            }
        }
        // Once full again, the first keys are at rest and give way to new ones.
        let later = t0 + Duration::from_secs(60);
        for n in 0..=u8::MAX {
            for a in 0..80u8 {
                let _ = l.take(Key::Ip(IpAddr::from([11, a, n, 1])), later);
            }
        }
        let total: usize = l
            .shards
            .iter()
            .map(|s| s.lock().map(|s| s.entries.len()).unwrap_or(0))
            .sum();
        assert!(total < 256 * 80 * 3 / 2, "{total} entries left");
    }
}
