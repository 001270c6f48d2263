//! One seeded sampling type shared by generation, evaluation and speculative decoding.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

/// How the next token is chosen from logits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Sampling {
    Greedy,
    Temperature { temperature: f32 },
    TopK { k: usize, temperature: f32 },
    TopP { p: f32, temperature: f32 },
}

/// A `Sampling` with its random state.
#[derive(Debug, Clone)]
pub struct LogitsProcessor {
    pub sampling: Sampling,
    rng: StdRng,
}

impl LogitsProcessor {
    pub fn new(sampling: Sampling, seed: u64) -> Self {
        Self { sampling, rng: StdRng::seed_from_u64(seed) }
    }

    /// Picks a token id from one row of logits.
    pub fn sample(&mut self, logits: &[f32]) -> u32 {
        match self.sampling {
            Sampling::Greedy => argmax(logits),
            Sampling::Temperature { temperature } => {
                let probs = softmax(logits, temperature);
                self.draw(&probs, (0..logits.len()).collect())
            }
            Sampling::TopK { k, temperature } => {
                let probs = softmax(logits, temperature);
                let mut order = sorted_desc(&probs);
                order.truncate(k.max(1));
                self.draw(&probs, order)
            }
            Sampling::TopP { p, temperature } => {
                let probs = softmax(logits, temperature);
                let order = sorted_desc(&probs);
                // Keep the smallest prefix whose mass reaches p (always at least one token).
                let mut mass = 0.0;
                let keep = order.iter().take_while(|&&i| { let before = mass; mass += probs[i]; before < p }).count();
                self.draw(&probs, order[..keep.max(1)].to_vec())
            }
        }
    }

    /// The distribution `sample` draws from, over the whole vocabulary (zeros outside the top-k
    /// or top-p set; greedy is one-hot). Speculative sampling compares the draft's and the
    /// verifier's.
    pub fn probs(&self, logits: &[f32]) -> Vec<f32> {
        let keep = |probs: Vec<f32>, kept: &[usize]| {
            let total: f32 = kept.iter().map(|&i| probs[i]).sum();
            let mut out = vec![0.0; probs.len()];
            for &i in kept {
                out[i] = probs[i] / total;
            }
            out
        };
        match self.sampling {
            Sampling::Greedy => {
                let mut out = vec![0.0; logits.len()];
                out[argmax(logits) as usize] = 1.0;
                out
            }
            Sampling::Temperature { temperature } => softmax(logits, temperature),
            Sampling::TopK { k, temperature } => {
                let probs = softmax(logits, temperature);
                let order = sorted_desc(&probs);
                keep(probs, &order[..k.clamp(1, order.len())])
            }
            Sampling::TopP { p, temperature } => {
                let probs = softmax(logits, temperature);
                let order = sorted_desc(&probs);
                let mut mass = 0.0;
                let n = order.iter().take_while(|&&i| { let before = mass; mass += probs[i]; before < p }).count();
                keep(probs, &order[..n.max(1)])
            }
        }
    }

    /// Draws a token from a distribution over the vocabulary (need not sum to 1).
    pub fn draw_from(&mut self, probs: &[f32]) -> u32 {
        self.draw(probs, (0..probs.len()).filter(|&i| probs[i] > 0.0).collect())
    }

    /// A uniform draw in `[0, 1)` from the same seeded stream.
    pub fn uniform(&mut self) -> f32 {
        self.rng.random::<f32>()
    }

    /// Draws among `candidates` in proportion to `probs`.
    fn draw(&mut self, probs: &[f32], candidates: Vec<usize>) -> u32 {
        let total: f32 = candidates.iter().map(|&i| probs[i]).sum();
        let mut u = self.rng.random::<f32>() * total;
        for &i in &candidates {
            u -= probs[i];
            if u <= 0.0 {
                return i as u32;
            }
        }
        *candidates.last().expect("at least one candidate") as u32
    }
}

pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &v) in logits.iter().enumerate() {
        if v > logits[best] {
            best = i;
        }
    }
    best as u32
}

fn softmax(logits: &[f32], temperature: f32) -> Vec<f32> {
    let t = temperature.max(1e-6);
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let e: Vec<f32> = logits.iter().map(|&l| ((l - max) / t).exp()).collect();
    let s: f32 = e.iter().sum();
    e.into_iter().map(|x| x / s).collect()
}

fn sorted_desc(probs: &[f32]) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..probs.len()).collect();
    idx.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]));
    idx
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOGITS: [f32; 4] = [1.0, 3.0, 2.0, 0.5];

    fn histogram(s: Sampling) -> [usize; 4] {
        let mut p = LogitsProcessor::new(s, 42);
        let mut h = [0; 4];
        for _ in 0..2000 {
            h[p.sample(&LOGITS) as usize] += 1;
        }
        h
    }

    #[test]
    fn greedy_takes_the_max() {
        assert_eq!(LogitsProcessor::new(Sampling::Greedy, 0).sample(&LOGITS), 1);
    }

    #[test]
    fn top_k_one_is_greedy_and_top_k_two_stays_in_the_top_two() {
        assert_eq!(histogram(Sampling::TopK { k: 1, temperature: 1.0 }), [0, 2000, 0, 0]);
        let h = histogram(Sampling::TopK { k: 2, temperature: 1.0 });
        assert_eq!(h[0] + h[3], 0);
        assert!(h[1] > h[2] && h[2] > 0);
    }

    #[test]
    fn top_p_keeps_the_smallest_prefix_reaching_p() {
        // softmax(LOGITS) ~ [0.086, 0.636, 0.234, 0.052]: p = 0.5 keeps token 1 only, p = 0.8 keeps 1 and 2.
        assert_eq!(histogram(Sampling::TopP { p: 0.5, temperature: 1.0 }), [0, 2000, 0, 0]);
        let h = histogram(Sampling::TopP { p: 0.8, temperature: 1.0 });
        assert_eq!(h[0] + h[3], 0);
    }

    #[test]
    fn probs_are_the_distribution_sample_draws_from() {
        let p = |s: Sampling| LogitsProcessor::new(s, 0).probs(&LOGITS);
        assert_eq!(p(Sampling::Greedy), vec![0.0, 1.0, 0.0, 0.0]);
        let t = p(Sampling::Temperature { temperature: 1.0 });
        assert!((t[1] - 0.6308).abs() < 1e-3 && (t.iter().sum::<f32>() - 1.0).abs() < 1e-6, "{t:?}");
        let k = p(Sampling::TopK { k: 2, temperature: 1.0 });
        assert!(k[0] == 0.0 && k[3] == 0.0 && (k[1] - 0.6308 / (0.6308 + 0.2321)).abs() < 1e-3, "{k:?}");
        assert_eq!(p(Sampling::TopP { p: 0.5, temperature: 1.0 }), vec![0.0, 1.0, 0.0, 0.0]);
        // draw_from follows the distribution it is given.
        let mut lp = LogitsProcessor::new(Sampling::Greedy, 7);
        let mut h = [0usize; 4];
        for _ in 0..2000 {
            h[lp.draw_from(&[0.0, 0.25, 0.0, 0.75]) as usize] += 1;
        }
        assert!(h[0] + h[2] == 0 && (h[3] as f32 / 2000.0 - 0.75).abs() < 0.04, "{h:?}");
    }

    #[test]
    fn temperature_follows_softmax_and_is_seeded() {
        let h = histogram(Sampling::Temperature { temperature: 1.0 });
        assert!(h.iter().all(|&c| c > 0));
        assert!((h[1] as f32 / 2000.0 - 0.636).abs() < 0.05, "{h:?}");
        assert_eq!(h, histogram(Sampling::Temperature { temperature: 1.0 }));
        // A low temperature concentrates on the max.
        assert!(histogram(Sampling::Temperature { temperature: 0.05 })[1] > 1990);
    }
}
