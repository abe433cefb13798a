//! A future polled only after it asked to be, for the rare branch of a select that a
//! busy connection would otherwise poll on every wake-up of its task.

use pin_project_lite::pin_project;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Wake, Waker};

pin_project! {
    /// Polls `inner` the first time, then only once its own waker has fired.
    pub struct WhenWoken<F> {
        #[pin]
        inner: F,
        flag: Arc<Flag>,
    }
}

/// Set when `inner` is woken; passes the wake-up on to the task polling it.
struct Flag {
    woken: AtomicBool,
    task: Mutex<Option<Waker>>,
}

impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        if let Some(task) = &*self.task.lock().unwrap_or_else(PoisonError::into_inner) {
            task.wake_by_ref();
        }
    }
}

impl<F> WhenWoken<F> {
    pub fn new(inner: F) -> Self {
        WhenWoken {
            inner,
            flag: Arc::new(Flag {
                woken: AtomicBool::new(true),
                task: Mutex::new(None),
            }),
        }
    }
}

impl<F: Future> Future for WhenWoken<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        if !this.flag.woken.swap(false, Ordering::AcqRel) {
            return Poll::Pending;
        }
        {
            let mut task = this
                .flag
                .task
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if !task.as_ref().is_some_and(|t| t.will_wake(cx.waker())) {
                *task = Some(cx.waker().clone());
            }
        }
        let waker = Waker::from(Arc::clone(this.flag));
        this.inner.poll(&mut Context::from_waker(&waker))
    }
}

#[cfg(test)]
mod tests {
    use super::WhenWoken;
    use std::future::Future;
    use std::pin::pin;
    use std::task::{Context, Poll, Waker};

    #[tokio::test]
    async fn polls_again_only_after_its_own_wake_up() {
        let notify = tokio::sync::Notify::new();
        let mut woken = pin!(WhenWoken::new(notify.notified()));
        let mut cx = Context::from_waker(Waker::noop());
        assert!(woken.as_mut().poll(&mut cx).is_pending());
        // Not woken: not polled, even though nothing changed.
        assert!(woken.as_mut().poll(&mut cx).is_pending());
        notify.notify_waiters();
        assert_eq!(woken.as_mut().poll(&mut cx), Poll::Ready(()));
    }
}
