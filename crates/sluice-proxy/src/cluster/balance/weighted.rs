//! Smooth weighted round robin (as nginx does it): over any window of `sum(weights)`
//! picks, each target gets exactly its weight, spread out rather than in bursts.

use std::sync::Mutex;

/// Weighted selection state.
#[derive(Debug)]
pub struct SmoothWeighted {
    weights: Vec<i64>,
    total: i64,
    current: Mutex<Vec<i64>>,
}

impl SmoothWeighted {
    pub fn new(weights: &[u32]) -> Self {
        let weights: Vec<i64> = weights.iter().map(|w| i64::from(*w)).collect();
        SmoothWeighted {
            total: weights.iter().sum(),
            current: Mutex::new(vec![0; weights.len()]),
            weights,
        }
    }

    pub fn pick(&self) -> usize {
        let mut current = match self.current.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        let mut best = 0;
        for (i, w) in self.weights.iter().enumerate() {
            current[i] += w;
            if current[i] > current[best] {
                best = i;
            }
        }
        current[best] -= self.total;
        best
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_proportions_smoothly_spread() {
        let w = SmoothWeighted::new(&[5, 1, 1]);
        let picks: Vec<usize> = (0..7).map(|_| w.pick()).collect();
        assert_eq!(picks, vec![0, 0, 1, 0, 2, 0, 0]);
        let w = SmoothWeighted::new(&[1, 3]);
        let mut counts = [0; 2];
        for _ in 0..400 {
            counts[w.pick()] += 1;
        }
        assert_eq!(counts, [100, 300]);
    }
}
