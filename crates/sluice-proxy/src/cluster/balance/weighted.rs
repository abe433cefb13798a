//! Smooth weighted round robin (as nginx does it): over any window of `sum(weights)`
//! picks, each target gets exactly its weight, spread out rather than in bursts.

use std::sync::Mutex;

/// Weighted selection state.
#[derive(Debug)]
pub struct SmoothWeighted {
    weights: Vec<i64>,
    current: Mutex<Vec<i64>>,
}

impl SmoothWeighted {
    pub fn new(weights: &[u32]) -> Self {
        let weights: Vec<i64> = weights.iter().map(|w| i64::from(*w)).collect();
        SmoothWeighted {
            current: Mutex::new(vec![0; weights.len()]),
            weights,
        }
    }

    /// The next target among the usable ones; the unusable ones neither gain nor lose
    /// credit, so the proportions among the others stay exact.
    pub fn pick(&self, usable: &dyn Fn(usize) -> bool) -> Option<usize> {
        let mut current = match self.current.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        let mut best: Option<usize> = None;
        let mut total = 0;
        for (i, w) in self.weights.iter().enumerate() {
            if !usable(i) {
                continue;
            }
            total += w;
            current[i] += w;
            if best.is_none_or(|b| current[i] > current[b]) {
                best = Some(i);
            }
        }
        if let Some(b) = best {
            current[b] -= total;
        }
        best
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_proportions_smoothly_spread() {
        let w = SmoothWeighted::new(&[5, 1, 1]);
        let picks: Vec<usize> = (0..7)
            .map(|_| w.pick(&|_| true).expect("a target"))
            .collect();
        assert_eq!(picks, vec![0, 0, 1, 0, 2, 0, 0]);
        let w = SmoothWeighted::new(&[1, 3]);
        let mut counts = [0; 2];
        for _ in 0..400 {
            counts[w.pick(&|_| true).expect("a target")] += 1;
        }
        assert_eq!(counts, [100, 300]);
    }
}
