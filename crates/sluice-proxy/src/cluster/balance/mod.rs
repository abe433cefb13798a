//! Target selection: a pure pick of one target index per request, one file per policy.

mod hash;
mod weighted;

pub use hash::{stable_hash, HashRing};
pub use weighted::SmoothWeighted;

use std::sync::atomic::{AtomicUsize, Ordering};

/// What a request offers a balancer to pick with.
pub struct PickInput<'a> {
    /// The value of the cluster's `hash_key` in this request, if any.
    pub hash_key: Option<&'a [u8]>,
    /// Requests in flight per target, for `least_conn`.
    pub active: &'a dyn Fn(usize) -> usize,
}

/// A cluster's selection policy and its state.
#[derive(Debug)]
pub enum Balancer {
    RoundRobin(AtomicUsize),
    Random,
    LeastConn(AtomicUsize),
    Weighted(SmoothWeighted),
    /// Consistent hashing; requests without the key fall back to round robin.
    Hash(HashRing, AtomicUsize),
}

impl Balancer {
    /// Picks a target index among `count` targets.
    pub fn pick(&self, count: usize, input: &PickInput<'_>) -> usize {
        match self {
            Balancer::RoundRobin(next) => next.fetch_add(1, Ordering::Relaxed) % count,
            Balancer::Random => fastrand::usize(..count),
            Balancer::LeastConn(next) => {
                least_conn(count, next.fetch_add(1, Ordering::Relaxed), input.active)
            }
            Balancer::Weighted(w) => w.pick(),
            Balancer::Hash(ring, next) => match input.hash_key {
                Some(key) => ring.pick(stable_hash(key)),
                None => next.fetch_add(1, Ordering::Relaxed) % count,
            },
        }
    }
}

/// The target with the fewest requests in flight; ties go round robin from `start`.
fn least_conn(count: usize, start: usize, active: &dyn Fn(usize) -> usize) -> usize {
    (0..count)
        .map(|i| (start + i) % count)
        .min_by_key(|&i| active(i))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn idle(_: usize) -> usize {
        0
    }

    #[test]
    fn round_robin_is_exact() {
        let b = Balancer::RoundRobin(AtomicUsize::new(0));
        let input = PickInput {
            hash_key: None,
            active: &idle,
        };
        let picks: Vec<usize> = (0..6).map(|_| b.pick(3, &input)).collect();
        assert_eq!(picks, vec![0, 1, 2, 0, 1, 2]);
    }

    #[test]
    fn least_conn_prefers_idle_targets() {
        let load = [5, 0, 3];
        let active = |i: usize| load[i];
        let b = Balancer::LeastConn(AtomicUsize::new(0));
        let input = PickInput {
            hash_key: None,
            active: &active,
        };
        for _ in 0..5 {
            assert_eq!(b.pick(3, &input), 1);
        }
    }

    #[test]
    fn least_conn_rotates_ties() {
        let b = Balancer::LeastConn(AtomicUsize::new(0));
        let input = PickInput {
            hash_key: None,
            active: &idle,
        };
        let picks: Vec<usize> = (0..3).map(|_| b.pick(3, &input)).collect();
        assert_eq!(picks, vec![0, 1, 2]);
    }

    #[test]
    fn random_stays_in_range() {
        let input = PickInput {
            hash_key: None,
            active: &idle,
        };
        assert!((0..1000).all(|_| Balancer::Random.pick(4, &input) < 4));
    }
}
