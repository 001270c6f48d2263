//! KL divergence between the teacher's and the student's next-token distributions.
//!
//! `Forward` is KL(teacher || student) (the paper, Eq. 2); `Reverse` is KL(student || teacher)
//! (the M1 follow-up). Both are scaled by `temperature²` so gradients keep their size as the
//! temperature changes (Hinton et al.; at the paper's temperature 1 it is a no-op).

use burn::tensor::activation::log_softmax;
use burn::tensor::Tensor;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum KlDirection {
    #[default]
    Forward,
    Reverse,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum KlReduction {
    /// Summed over positions and vocabulary, divided by the batch size, mask ignored: what the
    /// reference code's `F.kl_div(reduction="batchmean")` on `[batch, seq, vocab]` computes.
    #[default]
    Reference,
    /// Per-token KL averaged over the masked-in tokens.
    TokenMean,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KlOptions {
    pub direction: KlDirection,
    pub reduction: KlReduction,
    pub temperature: f64,
}

impl Default for KlOptions {
    fn default() -> Self {
        Self { direction: KlDirection::Forward, reduction: KlReduction::Reference, temperature: 1.0 }
    }
}

/// # Shapes
/// - `student`, `teacher`: logits `[batch, seq, vocab]`; `mask`: `[batch, seq]`, 1 = counts
/// - returns `[1]`
pub fn kl_divergence(student: Tensor<3>, teacher: Tensor<3>, mask: Tensor<2>, opts: &KlOptions) -> Tensor<1> {
    let [b, s, _] = student.dims();
    let t = opts.temperature;
    // At the paper's temperature 1 the division is skipped: on [tokens, 49152] logits it is a
    // full pass over the largest tensors of the step, forward and backward, for x / 1 = x.
    let scaled = |x: Tensor<3>| if t == 1.0 { x } else { x / t };
    let ls = log_softmax(scaled(student), 2);
    let lt = log_softmax(scaled(teacher), 2);
    let per_token = match opts.direction {
        KlDirection::Forward => (lt.clone().exp() * (lt - ls)).sum_dim(2),
        KlDirection::Reverse => (ls.clone().exp() * (ls - lt)).sum_dim(2),
    }
    .reshape([b, s]); // [b, s, 1] -> [b, s]
    let reduced = match opts.reduction {
        KlReduction::Reference => per_token.sum() / b as f64,
        KlReduction::TokenMean => {
            let count = mask.clone().sum().clamp_min(1.0);
            (per_token * mask).sum() / count
        }
    };
    reduced * (t * t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::losses::golden::*;

    /// Equivalent PyTorch (see make_loss_golden.py `kl`): forward per token is
    /// `(lt.exp() * (lt - ls)).sum(-1)` with `ls, lt = log_softmax(x / T)`; "reference" is
    /// `per.sum() / B`, "token_mean" `(per * m).sum() / m.sum()`, both times `T * T`.
    #[test]
    fn kl_both_directions_and_reductions_match_pytorch() {
        let g = json();
        let shape = [2, 4, 7];
        for direction in [KlDirection::Forward, KlDirection::Reverse] {
            for reduction in [KlReduction::Reference, KlReduction::TokenMean] {
                let opts = KlOptions { direction, reduction, temperature: g["temperature"].as_f64().unwrap() };
                let got = kl_divergence(tensor3(&g["student"], shape), tensor3(&g["teacher"], shape), tensor2(&g["mask"], [2, 4]), &opts);
                let key = format!("{}_{}", serde_json::to_value(direction).unwrap().as_str().unwrap(), serde_json::to_value(reduction).unwrap().as_str().unwrap());
                close(scalar(got), g["kl"][&key].as_f64().unwrap(), &key);
            }
        }
    }

    #[test]
    fn kl_of_a_distribution_to_itself_is_zero() {
        let g = json();
        let x = tensor3(&g["student"], [2, 4, 7]);
        let kl = kl_divergence(x.clone(), x, tensor2(&g["mask"], [2, 4]), &KlOptions::default());
        assert!(scalar(kl).abs() < 1e-6);
    }
}
