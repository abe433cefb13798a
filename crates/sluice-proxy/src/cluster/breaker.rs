//! A circuit breaker per target: closed until `consecutive_failures` failures in a row
//! (or `failure_percent` of the requests in a window) open it; open answers without
//! touching the target; after `open_for` it is half-open and lets `half_open_requests`
//! probes through, closing when they all succeed and opening again on a failure.

use sluice_config::Breaker;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use tokio::time::Instant;

/// What `/health` and metrics show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CircuitState {
    Closed,
    Open,
    HalfOpen,
}

impl CircuitState {
    pub fn as_str(self) -> &'static str {
        match self {
            CircuitState::Closed => "closed",
            CircuitState::Open => "open",
            CircuitState::HalfOpen => "half_open",
        }
    }
}

/// How a request got through: normally, or as one of the half-open probes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Normal,
    Probe,
}

/// A change worth a log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    Opened,
    Closed,
}

#[derive(Debug)]
pub struct CircuitBreaker {
    config: Breaker,
    inner: Mutex<Inner>,
    /// Whether the state is closed, mirrored out of `inner` so that letting a request
    /// through a closed circuit (the usual case) takes no lock.
    closed: AtomicBool,
    opened: AtomicU64,
}

#[derive(Debug)]
struct Inner {
    state: CircuitState,
    open_until: Instant,
    consecutive: u32,
    window_start: Instant,
    window_ok: u32,
    window_failed: u32,
    probes_in_flight: u32,
    probe_successes: u32,
}

impl CircuitBreaker {
    pub fn new(config: Breaker) -> CircuitBreaker {
        let now = Instant::now();
        CircuitBreaker {
            config,
            inner: Mutex::new(Inner {
                state: CircuitState::Closed,
                open_until: now,
                consecutive: 0,
                window_start: now,
                window_ok: 0,
                window_failed: 0,
                probes_in_flight: 0,
                probe_successes: 0,
            }),
            closed: AtomicBool::new(true),
            opened: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The state at `now` (an open circuit whose time is up shows as half-open).
    pub fn state(&self, now: Instant) -> CircuitState {
        let inner = self.lock();
        match inner.state {
            CircuitState::Open if now >= inner.open_until => CircuitState::HalfOpen,
            state => state,
        }
    }

    /// How many times the circuit opened.
    pub fn times_opened(&self) -> u64 {
        self.opened.load(Ordering::Relaxed)
    }

    /// Whether a request would be let through now, without taking a probe slot.
    pub fn would_admit(&self, now: Instant) -> bool {
        if self.closed.load(Ordering::Relaxed) {
            return true;
        }
        let inner = self.lock();
        match inner.state {
            CircuitState::Closed => true,
            CircuitState::Open if now < inner.open_until => false,
            _ => inner.probes_in_flight < self.config.half_open_requests,
        }
    }

    /// Lets a request through, taking a probe slot when half-open; `None`: refused.
    pub fn admit(&self, now: Instant) -> Option<Admission> {
        if self.closed.load(Ordering::Relaxed) {
            return Some(Admission::Normal);
        }
        let mut inner = self.lock();
        match inner.state {
            CircuitState::Closed => return Some(Admission::Normal),
            CircuitState::Open if now < inner.open_until => return None,
            CircuitState::Open => {
                inner.state = CircuitState::HalfOpen;
                inner.probes_in_flight = 0;
                inner.probe_successes = 0;
            }
            CircuitState::HalfOpen => {}
        }
        if inner.probes_in_flight < self.config.half_open_requests {
            inner.probes_in_flight += 1;
            Some(Admission::Probe)
        } else {
            None
        }
    }

    /// A probe ended without an outcome (the client left): frees its slot.
    pub fn cancel(&self, admission: Admission) {
        if admission == Admission::Probe {
            let mut inner = self.lock();
            inner.probes_in_flight = inner.probes_in_flight.saturating_sub(1);
        }
    }

    /// Records the outcome of a request let through by [`CircuitBreaker::admit`].
    pub fn record(&self, admission: Admission, failed: bool, now: Instant) -> Option<Transition> {
        let mut inner = self.lock();
        if admission == Admission::Probe {
            inner.probes_in_flight = inner.probes_in_flight.saturating_sub(1);
            if inner.state != CircuitState::HalfOpen {
                return None;
            }
            if failed {
                return Some(self.open(&mut inner, now));
            }
            inner.probe_successes += 1;
            if inner.probe_successes >= self.config.half_open_requests {
                inner.state = CircuitState::Closed;
                self.closed.store(true, Ordering::Relaxed);
                inner.consecutive = 0;
                inner.window_start = now;
                inner.window_ok = 0;
                inner.window_failed = 0;
                return Some(Transition::Closed);
            }
            return None;
        }
        // Outcomes of requests admitted before the circuit opened change nothing.
        if inner.state != CircuitState::Closed {
            return None;
        }
        if now.saturating_duration_since(inner.window_start) >= self.config.window {
            inner.window_start = now;
            inner.window_ok = 0;
            inner.window_failed = 0;
        }
        if !failed {
            inner.consecutive = 0;
            inner.window_ok += 1;
            return None;
        }
        inner.consecutive += 1;
        inner.window_failed += 1;
        let seen = inner.window_ok + inner.window_failed;
        let ratio_tripped = self.config.failure_percent.is_some_and(|pct| {
            seen >= self.config.min_requests
                && u64::from(inner.window_failed) * 100 >= u64::from(pct) * u64::from(seen)
        });
        if inner.consecutive >= self.config.consecutive_failures || ratio_tripped {
            return Some(self.open(&mut inner, now));
        }
        None
    }

    fn open(&self, inner: &mut Inner, now: Instant) -> Transition {
        inner.state = CircuitState::Open;
        self.closed.store(false, Ordering::Relaxed);
        inner.open_until = now + self.config.open_for;
        inner.probes_in_flight = 0;
        inner.probe_successes = 0;
        self.opened.fetch_add(1, Ordering::Relaxed);
        Transition::Opened
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn breaker(failure_percent: Option<u8>) -> CircuitBreaker {
        CircuitBreaker::new(Breaker {
            consecutive_failures: 3,
            failure_percent,
            window: Duration::from_secs(10),
            min_requests: 10,
            open_for: Duration::from_secs(30),
            half_open_requests: 2,
        })
    }

    fn run(b: &CircuitBreaker, failed: bool) -> Option<Transition> {
        let admission = b.admit(Instant::now()).expect("admitted");
        b.record(admission, failed, Instant::now())
    }

    #[tokio::test(start_paused = true)]
    async fn opens_refuses_probes_and_closes() {
        let b = breaker(None);
        assert_eq!(run(&b, true), None);
        assert_eq!(run(&b, true), None);
        assert_eq!(run(&b, false), None, "a success resets the run");
        assert_eq!(run(&b, true), None);
        assert_eq!(run(&b, true), None);
        assert_eq!(run(&b, true), Some(Transition::Opened));
        assert_eq!(b.state(Instant::now()), CircuitState::Open);
        assert_eq!(b.admit(Instant::now()), None, "open refuses");
        assert!(!b.would_admit(Instant::now()));

        tokio::time::advance(Duration::from_secs(30)).await;
        assert_eq!(b.state(Instant::now()), CircuitState::HalfOpen);
        let first = b.admit(Instant::now());
        let second = b.admit(Instant::now());
        assert_eq!(
            (first, second),
            (Some(Admission::Probe), Some(Admission::Probe))
        );
        assert_eq!(
            b.admit(Instant::now()),
            None,
            "only half_open_requests probes"
        );
        assert_eq!(b.record(Admission::Probe, false, Instant::now()), None);
        assert_eq!(
            b.record(Admission::Probe, false, Instant::now()),
            Some(Transition::Closed)
        );
        assert_eq!(b.state(Instant::now()), CircuitState::Closed);
        assert_eq!(b.times_opened(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_probe_opens_again_and_a_cancelled_one_frees_its_slot() {
        let b = breaker(None);
        for _ in 0..3 {
            run(&b, true);
        }
        tokio::time::advance(Duration::from_secs(30)).await;
        let probe = b.admit(Instant::now()).expect("probe");
        b.cancel(probe);
        let probe = b.admit(Instant::now()).expect("probe");
        let _other = b.admit(Instant::now()).expect("second probe slot");
        assert_eq!(
            b.record(probe, true, Instant::now()),
            Some(Transition::Opened)
        );
        assert_eq!(b.state(Instant::now()), CircuitState::Open);
        tokio::time::advance(Duration::from_secs(29)).await;
        assert_eq!(
            b.admit(Instant::now()),
            None,
            "open for the whole open_for again"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn failure_percentage_over_a_window() {
        let b = breaker(Some(50));
        // Alternating: never three failures in a row, but half of them fail.
        for i in 0..9 {
            assert_eq!(run(&b, i % 2 == 0), None, "below min_requests at {i}");
        }
        assert_eq!(run(&b, true), Some(Transition::Opened));

        let b = breaker(Some(50));
        for i in 0..9 {
            run(&b, i % 2 == 0);
        }
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(run(&b, true), None, "a new window starts from zero");
    }
}
