//! A unit taken from a shared counter and given back when dropped: the one mechanism
//! behind every cap on things in flight (connections per listener, requests per route,
//! requests waiting for a cluster slot, retries within their budget).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// One unit of a counter, given back when dropped.
#[derive(Debug)]
pub struct Counted(Arc<AtomicUsize>);

impl Counted {
    /// Takes one unit of `counter` if fewer than `max` are taken.
    pub fn take(counter: &Arc<AtomicUsize>, max: usize) -> Option<Counted> {
        let before = counter.fetch_add(1, Ordering::Relaxed);
        let counted = Counted(Arc::clone(counter));
        (before < max).then_some(counted)
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::Counted;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    #[test]
    fn takes_up_to_max_and_gives_back_on_drop() {
        let counter = Arc::new(AtomicUsize::new(0));
        let a = Counted::take(&counter, 2).expect("first");
        let _b = Counted::take(&counter, 2).expect("second");
        assert!(Counted::take(&counter, 2).is_none());
        assert_eq!(
            counter.load(Ordering::Relaxed),
            2,
            "a refused take leaves no trace"
        );
        drop(a);
        assert!(Counted::take(&counter, 2).is_some());
    }
}
