//! The streams of an HTTP/2 connection, watched: a stream whose client takes none of its
//! answer for `send_timeout` is reset, and a connection with no stream open for
//! `keepalive_timeout` is closed.
//!
//! hyper's HTTP/2 server passes an answer's body on only when the client's flow-control
//! window (or the connection's send buffer) has room: a client that grants none leaves
//! the stream waiting, holding the target connection the answer comes from. Each
//! stream hyper spawns is run inside a [`Watched`] future, and the stream's
//! [`ResponseBody`](crate::body::ResponseBody) reports to it through a [`SendWatch`]:
//! when the body has handed over a chunk and is not asked for the next one, the stream
//! is waiting on the client, and after `send_timeout` of that the stream is dropped,
//! which resets it (`RST_STREAM`) and frees the target connection. Time the target takes
//! to produce the answer does not count: the body is being asked then. The same watch
//! holds the stream's place in its connection's [`OpenStreams`].

use pin_project_lite::pin_project;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::{Instant, Sleep};

tokio::task_local! {
    /// The watch of the stream being polled, for the answer's body to report to.
    static CURRENT: Arc<SendWatch>;
}

/// Spawns each stream of an HTTP/2 connection on tokio, watched for a stalled client.
#[derive(Debug, Clone, Copy)]
pub struct StreamExecutor {
    pub send_timeout: Duration,
}

impl<F> hyper::rt::Executor<F> for StreamExecutor
where
    F: Future<Output = ()> + Send + 'static,
{
    fn execute(&self, stream: F) {
        tokio::spawn(Watched {
            stream,
            watch: Arc::new(SendWatch::default()),
            send_timeout: self.send_timeout,
            armed: None,
            timer: None,
        });
    }
}

/// What a stream's answer body reports: how many chunks it handed over, and whether it
/// has been asked for the next one since. One word: the count shifted left, the low bit
/// set while the last chunk handed over is waiting on the client. Only the stream's own
/// task reads and writes it, so plain loads and stores do.
#[derive(Debug, Default)]
pub struct SendWatch {
    state: AtomicU64,
    /// The stream counted open on its connection until the watch, which lives as long
    /// as the stream, is dropped.
    open: OnceLock<OpenStream>,
}

impl SendWatch {
    /// The watch of the stream being polled, when this runs inside one.
    pub fn current() -> Option<Arc<SendWatch>> {
        CURRENT.try_with(Arc::clone).ok()
    }

    /// Keeps `stream` counted open until the stream ends.
    pub fn hold(&self, stream: OpenStream) {
        let _ = self.open.set(stream);
    }

    /// The body is being asked for its next chunk: the last one was taken.
    pub fn asked(&self) {
        let state = self.state.load(Ordering::Relaxed);
        self.state.store(state & !1, Ordering::Relaxed);
    }

    /// The body handed over a chunk, which now waits to be taken.
    pub fn handed(&self) {
        let handed = self.state.load(Ordering::Relaxed);
        self.state.store((handed | 1) + 2, Ordering::Relaxed);
    }

    /// The chunk count, when the last chunk handed over is still waiting.
    fn waiting(&self) -> Option<u64> {
        let state = self.state.load(Ordering::Relaxed);
        (state & 1 == 1).then_some(state >> 1)
    }
}

pin_project! {
    /// A stream run until it ends, or until its answer waited `send_timeout` on the
    /// client for the same chunk.
    struct Watched<F> {
        #[pin]
        stream: F,
        watch: Arc<SendWatch>,
        send_timeout: Duration,
        // The chunk whose wait `timer` is timing, if one waits.
        armed: Option<u64>,
        // Made at the first wait and moved for each later one; once a wait ends it may
        // still fire, which wakes the stream once for nothing.
        timer: Option<Pin<Box<Sleep>>>,
    }
}

impl<F: Future<Output = ()>> Future for Watched<F> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.project();
        let stream = this.stream;
        // The watch in `CURRENT` for the poll. An Arc clone per poll measured cheaper
        // than tokio's `TaskLocalFuture`, which swaps the value in and out (h2load pairs:
        // 0.97-0.99 with the latter).
        if CURRENT
            .sync_scope(Arc::clone(this.watch), || stream.poll(cx))
            .is_ready()
        {
            return Poll::Ready(());
        }
        let Some(chunk) = this.watch.waiting() else {
            *this.armed = None;
            return Poll::Pending;
        };
        if *this.armed != Some(chunk) {
            // A new chunk waits: its wait starts now.
            let until = Instant::now() + *this.send_timeout;
            *this.armed = Some(chunk);
            match this.timer {
                Some(timer) => timer.as_mut().reset(until),
                None => *this.timer = Some(Box::pin(tokio::time::sleep_until(until))),
            }
        }
        let expired = this
            .timer
            .as_mut()
            .is_some_and(|timer| timer.as_mut().poll(cx).is_ready());
        if !expired {
            return Poll::Pending;
        }
        tracing::info!(
            after = ?this.send_timeout,
            "the HTTP/2 client took none of its answer for server.limits.send_timeout; resetting the stream"
        );
        Poll::Ready(())
    }
}

/// How many streams of an HTTP/2 connection are open, for closing it once idle.
#[derive(Debug)]
pub struct OpenStreams(watch::Sender<usize>);

impl Default for OpenStreams {
    fn default() -> Self {
        OpenStreams(watch::Sender::new(0))
    }
}

impl OpenStreams {
    /// Counts a stream open until the returned guard is dropped.
    pub fn open(self: &Arc<Self>) -> OpenStream {
        self.0.send_modify(|open| *open += 1);
        OpenStream(Arc::clone(self))
    }

    /// Completes once no stream has been open for `timeout`.
    pub async fn idle_for(&self, timeout: Duration) {
        let mut open = self.0.subscribe();
        loop {
            // The sender lives in `self`, so neither wait can fail.
            let _ = open.wait_for(|open| *open == 0).await.map(drop);
            if tokio::time::timeout(timeout, open.wait_for(|open| *open > 0))
                .await
                .is_err()
            {
                return;
            }
        }
    }
}

/// A stream counted open; see [`OpenStreams::open`].
#[derive(Debug)]
pub struct OpenStream(Arc<OpenStreams>);

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.0 .0.send_modify(|open| *open = open.saturating_sub(1));
    }
}
