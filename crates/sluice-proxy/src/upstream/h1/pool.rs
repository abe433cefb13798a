//! The idle keep-alive connections to one target, and the task that closes those idle
//! for too long.

use super::exchange::Conn;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::task::Context;
use std::time::Duration;
use tokio::time::Instant;

/// The idle connections, most recently used last.
struct Idle {
    #[expect(
        clippy::vec_box,
        reason = "a connection stays in one box for its life: taken and put back without moving"
    )]
    conns: Vec<Box<Conn>>,
    /// A task closes the connections idle for longer than the timeout.
    reaping: bool,
}

pub struct Pool {
    idle: Mutex<Idle>,
    max_idle: usize,
    idle_timeout: Duration,
}

impl Pool {
    pub fn new(max_idle: usize, idle_timeout: Duration) -> Self {
        Pool {
            idle: Mutex::new(Idle {
                conns: Vec::new(),
                reaping: false,
            }),
            max_idle,
            idle_timeout,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Idle> {
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The most recently used idle connection that is still open, for a request that
    /// starts at `now`. A connection's idle time counts from the start of the last
    /// request it carried, so it never looks younger than it is.
    pub fn checkout(&self, cx: &mut Context<'_>, now: Instant) -> Option<Box<Conn>> {
        loop {
            let mut conn = self.lock().conns.pop()?;
            if now.saturating_duration_since(conn.used) < self.idle_timeout
                && conn.is_idle_and_open(cx)
            {
                return Some(conn);
            }
        }
    }

    /// Keeps `conn` for the next request, when there is room (and a runtime to close it
    /// once idle: a body dropped as the runtime shuts down closes its connection).
    pub fn put(self: &Arc<Self>, conn: Box<Conn>) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let start_reaper = {
            let mut idle = self.lock();
            if idle.conns.len() >= self.max_idle || self.idle_timeout.is_zero() {
                return;
            }
            idle.conns.push(conn);
            !std::mem::replace(&mut idle.reaping, true)
        };
        if start_reaper {
            runtime.spawn(reap(Arc::downgrade(self), self.idle_timeout));
        }
    }
}

/// Closes the connections idle for longer than `timeout`, until none is left.
async fn reap(pool: Weak<Pool>, timeout: Duration) {
    loop {
        tokio::time::sleep(timeout / 2).await;
        let Some(pool) = pool.upgrade() else { return };
        // Closed outside the lock.
        let (expired, reaping) = {
            let mut idle = pool.lock();
            let now = Instant::now();
            let keep = idle
                .conns
                .iter()
                .position(|conn| now.saturating_duration_since(conn.used) < timeout)
                .unwrap_or(idle.conns.len());
            let expired: Vec<_> = idle.conns.drain(..keep).collect();
            idle.reaping = !idle.conns.is_empty();
            (expired, idle.reaping)
        };
        drop(expired);
        if !reaping {
            return;
        }
    }
}
