//! A seeded data order: every epoch is a fresh permutation drawn from `(seed, epoch)`, so the
//! examples of any step are a pure function of the step; resuming needs no RNG state.

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;

#[derive(Debug, Clone)]
pub struct DataOrder {
    pub examples: usize,
    pub seed: u64,
}

impl DataOrder {
    /// Example indices of `count` consecutive draws starting at draw `start`.
    pub fn take(&self, start: u64, count: usize) -> Vec<usize> {
        let n = self.examples.max(1) as u64;
        let mut out = Vec::with_capacity(count);
        let mut epoch = u64::MAX;
        let mut perm = Vec::new();
        for draw in start..start + count as u64 {
            if draw / n != epoch {
                epoch = draw / n;
                perm = self.permutation(epoch);
            }
            out.push(perm[(draw % n) as usize]);
        }
        out
    }

    fn permutation(&self, epoch: u64) -> Vec<usize> {
        let mut perm: Vec<usize> = (0..self.examples.max(1)).collect();
        let mut rng = StdRng::seed_from_u64(self.seed ^ epoch.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        perm.shuffle(&mut rng);
        perm
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epochs_are_permutations_and_any_window_is_reproducible() {
        let o = DataOrder { examples: 5, seed: 7 };
        let all = o.take(0, 10);
        let mut first: Vec<usize> = all[..5].to_vec();
        first.sort();
        assert_eq!(first, vec![0, 1, 2, 3, 4]);
        assert_eq!(o.take(3, 4), all[3..7].to_vec());
        assert_ne!(DataOrder { examples: 5, seed: 8 }.take(0, 5), all[..5].to_vec());
    }
}
