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
    /// Whether a target may take this request (healthy, not ejected, circuit not open,
    /// not already tried).
    pub usable: &'a dyn Fn(usize) -> bool,
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
    /// Picks a usable target index among `count` targets; `None` when none is usable.
    pub fn pick(&self, count: usize, input: &PickInput<'_>) -> Option<usize> {
        if count == 0 {
            return None;
        }
        match self {
            Balancer::RoundRobin(next) => {
                first_usable(count, next.fetch_add(1, Ordering::Relaxed), input.usable)
            }
            Balancer::Random => first_usable(count, fastrand::usize(..count), input.usable),
            Balancer::LeastConn(next) => least_conn(
                count,
                next.fetch_add(1, Ordering::Relaxed),
                input.active,
                input.usable,
            ),
            Balancer::Weighted(w) => w.pick(input.usable),
            Balancer::Hash(ring, next) => match input.hash_key {
                Some(key) => ring.pick(stable_hash(key), input.usable),
                None => first_usable(count, next.fetch_add(1, Ordering::Relaxed), input.usable),
            },
        }
    }
}

/// The first usable target from `start` on, wrapping around.
fn first_usable(count: usize, start: usize, usable: &dyn Fn(usize) -> bool) -> Option<usize> {
    (0..count).map(|i| (start + i) % count).find(|&i| usable(i))
}

/// The usable target with the fewest requests in flight; ties go round robin from `start`.
fn least_conn(
    count: usize,
    start: usize,
    active: &dyn Fn(usize) -> usize,
    usable: &dyn Fn(usize) -> bool,
) -> Option<usize> {
    (0..count)
        .map(|i| (start + i) % count)
        .filter(|&i| usable(i))
        .min_by_key(|&i| active(i))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn idle(_: usize) -> usize {
        0
    }

    fn all(_: usize) -> bool {
        true
    }

    #[test]
    fn round_robin_is_exact() {
        let b = Balancer::RoundRobin(AtomicUsize::new(0));
        let input = PickInput {
            hash_key: None,
            active: &idle,
            usable: &all,
        };
        let picks: Vec<usize> = (0..6)
            .map(|_| b.pick(3, &input).expect("a target"))
            .collect();
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
            usable: &all,
        };
        for _ in 0..5 {
            assert_eq!(b.pick(3, &input).expect("a target"), 1);
        }
    }

    #[test]
    fn least_conn_rotates_ties() {
        let b = Balancer::LeastConn(AtomicUsize::new(0));
        let input = PickInput {
            hash_key: None,
            active: &idle,
            usable: &all,
        };
        let picks: Vec<usize> = (0..3)
            .map(|_| b.pick(3, &input).expect("a target"))
            .collect();
        assert_eq!(picks, vec![0, 1, 2]);
    }

    #[test]
    fn random_stays_in_range() {
        let input = PickInput {
            hash_key: None,
            active: &idle,
            usable: &all,
        };
        assert!((0..1000).all(|_| Balancer::Random.pick(4, &input).is_some_and(|i| i < 4)));
    }

    #[test]
    fn unusable_targets_are_skipped_by_every_policy() {
        let usable = |i: usize| i != 1;
        let none = |_: usize| false;
        let policies = [
            Balancer::RoundRobin(AtomicUsize::new(0)),
            Balancer::Random,
            Balancer::LeastConn(AtomicUsize::new(0)),
            Balancer::Weighted(SmoothWeighted::new(&[1, 5, 1])),
            Balancer::Hash(
                HashRing::new(["a", "b", "c"].into_iter().map(|t| (t, 1))),
                AtomicUsize::new(0),
            ),
        ];
        for b in &policies {
            for k in 0..200u32 {
                let key = k.to_le_bytes();
                let input = PickInput {
                    hash_key: Some(&key),
                    active: &idle,
                    usable: &usable,
                };
                let picked = b.pick(3, &input);
                assert!(matches!(picked, Some(0 | 2)), "{b:?} picked {picked:?}");
                let input = PickInput {
                    hash_key: Some(&key),
                    active: &idle,
                    usable: &none,
                };
                assert_eq!(b.pick(3, &input), None, "{b:?}");
            }
        }
    }
}
