//! Direct Preference Optimization (Rafailov et al.; the paper's Eq. 4): the policy's log-ratio
//! to a reference model on the chosen answer should exceed that on the rejected one. The
//! reference is the teacher (the paper) or a frozen copy of the student (the reference code);
//! either way this function only sees its log-probs.

use burn::tensor::activation::log_sigmoid;
use burn::tensor::{Int, Tensor};

use super::ce::token_logps;

/// Summed log-probability of each sequence's masked-in (answer) tokens.
///
/// # Shapes
/// - `logits`: `[batch, seq, vocab]`; `targets`, `mask`: `[batch, seq]` -> `[batch]`
pub fn sequence_logps(logits: Tensor<3>, targets: Tensor<2, Int>, mask: Tensor<2>) -> Tensor<1> {
    let [b, _, _] = logits.dims();
    (token_logps(logits, targets) * mask).sum_dim(1).reshape([b]) // [b, 1] -> [b]
}

pub struct DpoOutput {
    /// `[1]`: mean of `-log σ(chosen_reward - rejected_reward)`.
    pub loss: Tensor<1>,
    /// `[pairs]`: `beta * (log π(chosen) - log π_ref(chosen))`.
    pub chosen_rewards: Tensor<1>,
    /// `[pairs]`
    pub rejected_rewards: Tensor<1>,
}

/// # Shapes
/// - every input `[pairs]` -> `DpoOutput`
pub fn dpo_loss(policy_chosen: Tensor<1>, policy_rejected: Tensor<1>, ref_chosen: Tensor<1>, ref_rejected: Tensor<1>, beta: f64) -> DpoOutput {
    let chosen_rewards = (policy_chosen - ref_chosen) * beta;
    let rejected_rewards = (policy_rejected - ref_rejected) * beta;
    let loss = log_sigmoid(chosen_rewards.clone() - rejected_rewards.clone()).neg().mean();
    DpoOutput { loss, chosen_rewards, rejected_rewards }
}

impl DpoOutput {
    /// Mean reward margin and the fraction of pairs whose chosen reward is higher.
    pub fn margin_and_accuracy(&self) -> (f64, f64) {
        let c = self.chosen_rewards.clone().into_data().convert::<f32>().try_to_vec::<f32>().unwrap_or_default();
        let r = self.rejected_rewards.clone().into_data().convert::<f32>().try_to_vec::<f32>().unwrap_or_default();
        let n = c.len().max(1) as f64;
        let margin = c.iter().zip(&r).map(|(c, r)| (c - r) as f64).sum::<f64>() / n;
        let accuracy = c.iter().zip(&r).filter(|(c, r)| c > r).count() as f64 / n;
        (margin, accuracy)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::losses::golden::*;

    fn logps(side: &serde_json::Value, model: &str) -> Tensor<1> {
        let (b, s) = (2, 4);
        sequence_logps(tensor3(&side[model], [b, s, 7]), ints(&side["targets"], [b, s]), tensor2(&side["mask"], [b, s]))
    }

    /// Equivalent PyTorch: `chosen = beta * (pc - rc)`, `rejected = beta * (pr - rr)`,
    /// `loss = -logsigmoid(chosen - rejected).mean()` (make_loss_golden.py `dpo`).
    #[test]
    fn dpo_with_teacher_and_self_references_matches_pytorch() {
        let g = json();
        let d = &g["dpo"];
        let (c, r) = (&d["sides"]["chosen"], &d["sides"]["rejected"]);
        let got = floats(&serde_json::to_value(logps(c, "policy").into_data().try_to_vec::<f32>().unwrap()).unwrap());
        for (x, want) in got.iter().zip(floats(&c["policy_logps"])) {
            close(*x as f64, want as f64, "sequence logps");
        }
        for reference in ["teacher", "self"] {
            let want = &d[reference];
            let out = dpo_loss(logps(c, "policy"), logps(r, "policy"), logps(c, reference), logps(r, reference), d["beta"].as_f64().unwrap());
            let (margin, accuracy) = out.margin_and_accuracy();
            close(scalar(out.loss), want["loss"].as_f64().unwrap(), reference);
            close(margin, want["margin"].as_f64().unwrap(), "margin");
            close(accuracy, want["accuracy"].as_f64().unwrap(), "accuracy");
            let rewards = out.chosen_rewards.into_data().try_to_vec::<f32>().unwrap();
            for (x, w) in rewards.iter().zip(floats(&want["chosen_rewards"])) {
                close(*x as f64, w as f64, "chosen reward");
            }
        }
    }
}
