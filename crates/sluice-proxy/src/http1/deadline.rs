//! A long-lived timer for a connection's successive deadlines, moved without touching the
//! timer wheel unless a new deadline is earlier than the armed one.

use std::future::Future;
use std::pin::Pin;
use std::task::Context;
use std::time::Duration;
use tokio::time::{Instant, Sleep};

/// One timer for a connection: the header and keep-alive timeouts of a client
/// connection, or the response timeouts of the requests a target connection carries.
/// Setting a later deadline only records it; the armed sleep, when it fires first, is
/// moved on to it then. A request costs no timer-wheel work of its own.
#[derive(Debug)]
pub struct Deadline {
    sleep: Pin<Box<Sleep>>,
    at: Instant,
}

impl Deadline {
    /// A timer for `at`.
    pub fn at(at: Instant) -> Self {
        Deadline {
            sleep: Box::pin(tokio::time::sleep_until(at)),
            at,
        }
    }

    /// A timer for `after` from now.
    pub fn new(after: Duration) -> Self {
        Deadline::at(Instant::now() + after)
    }

    /// Moves the deadline to `after` from now.
    pub fn set(&mut self, after: Duration) {
        self.set_at(Instant::now() + after);
    }

    /// Moves the deadline to `at`.
    pub fn set_at(&mut self, at: Instant) {
        self.at = at;
        if at < self.sleep.deadline() {
            self.sleep.as_mut().reset(at);
        }
    }

    /// Whether the deadline has passed; otherwise the task is woken when it may have.
    pub fn poll_expired(&mut self, cx: &mut Context<'_>) -> bool {
        while self.sleep.as_mut().poll(cx).is_ready() {
            if Instant::now() >= self.at {
                return true;
            }
            self.sleep.as_mut().reset(self.at);
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::poll_fn;
    use std::task::Poll;

    async fn expired(timer: &mut Deadline) -> bool {
        poll_fn(|cx| Poll::Ready(timer.poll_expired(cx))).await
    }

    #[tokio::test(start_paused = true)]
    async fn a_later_deadline_is_kept_when_the_armed_one_fires() {
        let start = Instant::now();
        let mut timer = Deadline::at(start + Duration::from_secs(1));
        timer.set_at(start + Duration::from_secs(3));
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(!expired(&mut timer).await, "fired at the old deadline");
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(expired(&mut timer).await);
    }

    #[tokio::test(start_paused = true)]
    async fn an_earlier_deadline_moves_the_timer() {
        let start = Instant::now();
        let mut timer = Deadline::at(start + Duration::from_secs(10));
        timer.set_at(start + Duration::from_secs(1));
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(expired(&mut timer).await);
    }
}
