//! Token-weighted perplexity and next-token accuracy of a model on tokenized documents.

use burn::tensor::activation::log_softmax;
use burn::tensor::{DType, Int, Tensor, TensorData};

use crate::llama::Rope;
use crate::lm::CausalLm;

#[derive(Debug, Clone, Copy)]
pub struct EvalOptions {
    /// Tokens per window (each window predicts up to this many tokens).
    pub seq_len: usize,
    pub batch_size: usize,
    /// Stop after this many predicted tokens.
    pub max_tokens: usize,
}

/// Sums over every predicted token.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct EvalTotals {
    pub tokens: usize,
    pub nll: f64,
    pub correct: usize,
}

impl EvalTotals {
    pub fn perplexity(&self) -> f64 {
        (self.nll / self.tokens.max(1) as f64).exp()
    }
    pub fn accuracy(&self) -> f64 {
        self.correct as f64 / self.tokens.max(1) as f64
    }
}

/// Cuts documents into windows of `seq_len + 1` tokens that overlap by one (each token is
/// predicted once), stopping at `max_tokens` predicted tokens.
pub fn windows(docs: &[Vec<u32>], seq_len: usize, max_tokens: usize) -> Vec<Vec<u32>> {
    let mut out = Vec::new();
    let mut budget = max_tokens;
    for doc in docs {
        let mut start = 0;
        while start + 1 < doc.len() && budget > 0 {
            let predicted = (doc.len() - 1 - start).min(seq_len).min(budget);
            out.push(doc[start..start + predicted + 1].to_vec());
            budget -= predicted;
            start += predicted;
        }
    }
    out
}

/// Evaluates `model` on `docs`; `on_batch(step, totals_so_far)` follows progress.
pub fn evaluate<M: CausalLm>(model: &M, rope: &Rope, docs: &[Vec<u32>], opts: &EvalOptions, mut on_batch: impl FnMut(u64, &EvalTotals)) -> EvalTotals {
    let device = model.device();
    let mut totals = EvalTotals::default();
    let all = windows(docs, opts.seq_len, opts.max_tokens);
    for (step, batch) in all.chunks(opts.batch_size.max(1)).enumerate() {
        let (b, s) = (batch.len(), batch.iter().map(|w| w.len() - 1).max().unwrap_or(0));
        let mut inputs = Vec::with_capacity(b * s);
        let mut targets = Vec::with_capacity(b * s);
        let mut valid = Vec::with_capacity(b);
        for w in batch {
            let n = w.len() - 1;
            // Right padding: padded positions come after every real one, so nothing attends to them.
            inputs.extend(w[..n].iter().map(|&t| t as i64).chain(std::iter::repeat_n(0, s - n)));
            targets.extend(w[1..].iter().map(|&t| t as i64).chain(std::iter::repeat_n(0, s - n)));
            valid.push((0..s).map(|i| i < n).collect::<Vec<bool>>());
        }
        let input: Tensor<2, Int> = Tensor::from_data(TensorData::new(inputs, [b, s]), &device);
        let target: Tensor<3, Int> = Tensor::from_data(TensorData::new(targets.clone(), [b, s, 1]), &device);
        let logits = model.forward(input, &valid, rope, &mut model.new_cache());
        let logp = log_softmax(logits.cast(DType::F32), 2); // [b, s, vocab]
        let picked = logp.clone().gather(2, target); // [b, s, 1]
        let best = logp.argmax(2); // [b, s, 1]
        let nll: Vec<f32> = picked.into_data().convert::<f32>().try_to_vec().unwrap_or_default();
        let best: Vec<i64> = best.into_data().convert::<i64>().try_to_vec().unwrap_or_default();
        for (i, row) in valid.iter().enumerate() {
            for (t, &ok) in row.iter().enumerate() {
                if ok {
                    let k = i * s + t;
                    totals.tokens += 1;
                    totals.nll -= nll[k] as f64;
                    totals.correct += (best[k] == targets[k]) as usize;
                }
            }
        }
        on_batch(step as u64, &totals);
    }
    totals
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_overlap_by_one_and_respect_the_budget() {
        let docs = vec![(0..10).collect::<Vec<u32>>(), vec![7], (0..3).collect()];
        let w = windows(&docs, 4, 100);
        assert_eq!(w, vec![vec![0, 1, 2, 3, 4], vec![4, 5, 6, 7, 8], vec![8, 9], vec![0, 1, 2]]);
        let predicted: usize = w.iter().map(|w| w.len() - 1).sum();
        assert_eq!(predicted, 9 + 2);
        let w = windows(&docs, 4, 6);
        assert_eq!(w, vec![vec![0, 1, 2, 3, 4], vec![4, 5, 6]]);
    }
}
