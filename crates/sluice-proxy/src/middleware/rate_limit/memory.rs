//! The memory store: a limit's counts in the gateway process, in shards of per-key entries swept once they are back to a full allowance.

use super::{bucket_verdict, refill, window_verdict, KeyRef, Verdict};
use sluice_config::{Algorithm, RateLimit};
use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

const SHARDS: usize = 16;
/// A shard is swept of entries at rest once it holds this many (then twice its size).
const FIRST_SWEEP: usize = 1024;

/// A [`KeyRef`] the map owns.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Ip(IpAddr),
    Text(Box<[u8]>),
    Missing,
}

impl From<KeyRef<'_>> for Key {
    fn from(key: KeyRef<'_>) -> Key {
        match key {
            KeyRef::Ip(ip) => Key::Ip(ip),
            KeyRef::Text(t) => Key::Text(Box::from(t)),
            KeyRef::Owned(t) => Key::Text(t.into_boxed_slice()),
            KeyRef::Missing => Key::Missing,
        }
    }
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

/// One limit's counts, for this process only.
#[derive(Debug)]
pub(super) struct MemoryCounts {
    hasher: RandomState,
    shards: Box<[Mutex<Shard>]>,
    /// Time starts when the limit is made: sliding windows start here.
    epoch: Instant,
}

impl MemoryCounts {
    pub(super) fn new() -> MemoryCounts {
        MemoryCounts {
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

    /// Counts one request for `key` now.
    pub(super) fn take(&self, config: &RateLimit, key: KeyRef<'_>) -> Verdict {
        self.take_at(config, Key::from(key), self.epoch.elapsed())
    }

    /// Counts one request for `key` at `now` (time since the counts were made).
    fn take_at(&self, config: &RateLimit, key: Key, now: Duration) -> Verdict {
        let shard = &self.shards[self.hasher.hash_one(&key) as usize % SHARDS];
        // A poisoned shard only means another request panicked mid-update; the counts
        // are still numbers.
        let mut shard = shard.lock().unwrap_or_else(|p| p.into_inner());
        if shard.entries.len() >= shard.sweep_at && !shard.entries.contains_key(&key) {
            shard.entries.retain(|_, e| !at_rest(config, e, now));
            shard.sweep_at = (shard.entries.len() * 2).max(FIRST_SWEEP);
        }
        let entry = shard
            .entries
            .entry(key)
            .or_insert_with(|| fresh(config, now));
        match entry {
            Entry::Bucket { tokens, at } => bucket(config, tokens, at, now),
            Entry::Window {
                index,
                current,
                previous,
            } => window(config, index, (current, previous), now),
        }
    }
}

fn fresh(config: &RateLimit, now: Duration) -> Entry {
    match config.algorithm {
        Algorithm::TokenBucket => Entry::Bucket {
            tokens: config.burst as f64,
            at: now,
        },
        Algorithm::SlidingWindow => Entry::Window {
            index: window_index(config, now),
            current: 0,
            previous: 0,
        },
    }
}

fn window_index(config: &RateLimit, now: Duration) -> u64 {
    (now.as_nanos() / config.per.as_nanos().max(1)) as u64
}

/// Whether an entry says no more than a fresh one would.
fn at_rest(config: &RateLimit, entry: &Entry, now: Duration) -> bool {
    match entry {
        Entry::Bucket { tokens, at } => {
            tokens + now.saturating_sub(*at).as_secs_f64() * refill(config) >= config.burst as f64
        }
        Entry::Window { index, .. } => window_index(config, now) >= index + 2,
    }
}

/// Refills the bucket up to `now` and takes a token if there is one. The Redis script
/// does the same steps.
fn bucket(config: &RateLimit, tokens: &mut f64, at: &mut Duration, now: Duration) -> Verdict {
    let elapsed = now.saturating_sub(*at).as_secs_f64();
    *tokens = (*tokens + elapsed * refill(config)).min(config.burst as f64);
    *at = now;
    let allowed = *tokens >= 1.0;
    if allowed {
        *tokens -= 1.0;
    }
    bucket_verdict(config, *tokens, allowed)
}

/// Moves the window up to `now` and counts the request if it fits. The Redis script
/// does the same steps.
fn window(
    config: &RateLimit,
    index: &mut u64,
    (current, previous): (&mut u64, &mut u64),
    now: Duration,
) -> Verdict {
    let per = config.per.as_secs_f64();
    let idx = window_index(config, now);
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
    let allowed = *previous as f64 * weight + *current as f64 + 1.0 <= config.rate as f64;
    if allowed {
        *current += 1;
    }
    window_verdict(config, allowed, (*current, *previous), into)
}

#[cfg(test)]
mod tests {
    use super::super::tests::limit;
    use super::*;

    fn key(n: u8) -> Key {
        Key::Ip(IpAddr::from([192, 0, 2, n]))
    }

    #[test]
    fn a_token_bucket_allows_its_burst_then_refills_at_its_rate() {
        let (l, c) = (limit(Algorithm::TokenBucket, 5, 10), MemoryCounts::new());
        let t0 = Duration::from_secs(100);
        for i in 0..10 {
            let v = c.take_at(&l, key(1), t0);
            assert!(v.allowed, "request {i}");
            assert_eq!(v.remaining, 9 - i);
        }
        let refused = c.take_at(&l, key(1), t0);
        assert!(!refused.allowed);
        assert_eq!(refused.retry_after, 2, "one token every 2 s");
        assert!(
            c.take_at(&l, key(2), t0).allowed,
            "another key has its own bucket"
        );
        assert!(!c.take_at(&l, key(1), t0 + Duration::from_secs(1)).allowed);
        assert!(c.take_at(&l, key(1), t0 + Duration::from_secs(2)).allowed);
        // Refilling stops at the burst.
        let later = t0 + Duration::from_secs(1000);
        assert_eq!(c.take_at(&l, key(1), later).remaining, 9);
    }

    #[test]
    fn a_sliding_window_counts_the_previous_window_by_its_remaining_weight() {
        let (l, c) = (limit(Algorithm::SlidingWindow, 10, 10), MemoryCounts::new());
        let start = Duration::from_secs(100); // a window boundary (10 s windows)
        for _ in 0..10 {
            assert!(c.take_at(&l, key(1), start).allowed);
        }
        let refused = c.take_at(&l, key(1), start + Duration::from_secs(5));
        assert!(!refused.allowed);
        assert_eq!(refused.retry_after, 5, "the next window");
        // Halfway into the next window the previous 10 count as 5.
        let half = start + Duration::from_secs(15);
        for i in 0..5 {
            assert!(c.take_at(&l, key(1), half).allowed, "request {i}");
        }
        assert!(!c.take_at(&l, key(1), half).allowed);
        // Two windows later nothing is left of them.
        let later = start + Duration::from_secs(30);
        assert_eq!(c.take_at(&l, key(1), later).remaining, 9);
    }

    #[test]
    fn entries_at_rest_are_swept() {
        let (l, c) = (
            limit(Algorithm::TokenBucket, 1000, 1000),
            MemoryCounts::new(),
        );
        let t0 = Duration::from_secs(1);
        for n in 0..=u8::MAX {
            for a in 0..80u8 {
                let _ = c.take_at(&l, Key::Ip(IpAddr::from([10, a, n, 1])), t0);
            }
        }
        // Once full again, the first keys are at rest and give way to new ones.
        let later = t0 + Duration::from_secs(60);
        for n in 0..=u8::MAX {
            for a in 0..80u8 {
                let _ = c.take_at(&l, Key::Ip(IpAddr::from([11, a, n, 1])), later);
            }
        }
        let total: usize = c
            .shards
            .iter()
            .map(|s| s.lock().map(|s| s.entries.len()).unwrap_or(0))
            .sum();
        assert!(total < 256 * 80 * 3 / 2, "{total} entries left");
    }
}
