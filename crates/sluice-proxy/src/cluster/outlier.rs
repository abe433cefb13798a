//! Passive outlier detection: a target that fails `consecutive_failures` requests in a
//! row (connect failures, resets, timeouts, 5xx) leaves the rotation for a back-off that
//! doubles on each repeat ejection, up to `max_ejection`.

use sluice_config::Outlier;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

/// One target's ejection state. Reading it on the data path is one atomic load.
#[derive(Debug)]
pub struct Ejector {
    config: Outlier,
    epoch: Instant,
    consecutive: AtomicU32,
    /// Milliseconds after `epoch` (plus one) until which the target is out; 0: never.
    until_ms: AtomicU64,
    history: Mutex<History>,
    ejections: AtomicU64,
}

#[derive(Debug, Default)]
struct History {
    /// Ejections in a row, each starting within `max_ejection` of the previous end.
    repeats: u32,
    last_end: Option<Instant>,
}

impl Ejector {
    pub fn new(config: Outlier) -> Ejector {
        Ejector {
            config,
            epoch: Instant::now(),
            consecutive: AtomicU32::new(0),
            until_ms: AtomicU64::new(0),
            history: Mutex::new(History::default()),
            ejections: AtomicU64::new(0),
        }
    }

    fn ms(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.epoch).as_millis()).unwrap_or(u64::MAX) + 1
    }

    /// Whether the target is out of the rotation at `now`.
    pub fn is_ejected(&self, now: Instant) -> bool {
        let until = self.until_ms.load(Ordering::Relaxed);
        until != 0 && self.ms(now) < until
    }

    /// Ejections so far.
    pub fn ejections(&self) -> u64 {
        self.ejections.load(Ordering::Relaxed)
    }

    /// Records a request's outcome. Returns how long the target is ejected for when this
    /// failure ejected it; `may_eject` says whether the cluster allows one more ejection.
    pub fn record(
        &self,
        failed: bool,
        now: Instant,
        may_eject: impl FnOnce() -> bool,
    ) -> Option<Duration> {
        if !failed {
            self.consecutive.store(0, Ordering::Relaxed);
            return None;
        }
        let run = self.consecutive.fetch_add(1, Ordering::Relaxed) + 1;
        if run < self.config.consecutive_failures || self.is_ejected(now) || !may_eject() {
            return None;
        }
        let mut history = self.history.lock().unwrap_or_else(|p| p.into_inner());
        if history
            .last_end
            .is_some_and(|end| now.saturating_duration_since(end) > self.config.max_ejection)
        {
            history.repeats = 0;
        }
        let factor = 1u32.checked_shl(history.repeats).unwrap_or(u32::MAX);
        let length = self
            .config
            .base_ejection
            .saturating_mul(factor)
            .min(self.config.max_ejection);
        history.repeats = history.repeats.saturating_add(1);
        history.last_end = Some(now + length);
        self.until_ms
            .store(self.ms(now + length), Ordering::Relaxed);
        self.consecutive.store(0, Ordering::Relaxed);
        self.ejections.fetch_add(1, Ordering::Relaxed);
        Some(length)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ejector() -> Ejector {
        Ejector::new(Outlier {
            consecutive_failures: 3,
            base_ejection: Duration::from_secs(10),
            max_ejection: Duration::from_secs(35),
            max_ejected_percent: 50,
        })
    }

    fn fail(e: &Ejector, times: u32) -> Option<Duration> {
        (0..times)
            .filter_map(|_| e.record(true, Instant::now(), || true))
            .last()
    }

    #[tokio::test(start_paused = true)]
    async fn ejects_after_consecutive_failures_and_backs_off() {
        let e = ejector();
        assert_eq!(fail(&e, 2), None);
        assert!(
            e.record(false, Instant::now(), || true).is_none(),
            "a success resets the run"
        );
        assert_eq!(fail(&e, 2), None);
        assert!(!e.is_ejected(Instant::now()));
        assert_eq!(fail(&e, 1), Some(Duration::from_secs(10)));
        assert!(e.is_ejected(Instant::now()));
        tokio::time::advance(Duration::from_secs(10)).await;
        assert!(!e.is_ejected(Instant::now()), "back after its ejection");

        assert_eq!(
            fail(&e, 3),
            Some(Duration::from_secs(20)),
            "a repeat doubles"
        );
        tokio::time::advance(Duration::from_secs(20)).await;
        assert_eq!(
            fail(&e, 3),
            Some(Duration::from_secs(35)),
            "capped at max_ejection"
        );
        assert_eq!(e.ejections(), 3);

        // Well after the last ejection ended, the back-off starts over.
        tokio::time::advance(Duration::from_secs(35 + 36)).await;
        assert_eq!(fail(&e, 3), Some(Duration::from_secs(10)));
    }

    #[tokio::test(start_paused = true)]
    async fn the_cluster_cap_can_refuse_an_ejection() {
        let e = ejector();
        for _ in 0..5 {
            assert_eq!(e.record(true, Instant::now(), || false), None);
        }
        assert!(!e.is_ejected(Instant::now()));
        assert_eq!(
            e.record(true, Instant::now(), || true),
            Some(Duration::from_secs(10))
        );
    }
}
