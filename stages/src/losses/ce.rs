//! Next-token cross entropy over the tokens a mask selects (assistant tokens in SFT, every real
//! token in packed text).

use burn::tensor::activation::log_softmax;
use burn::tensor::{Int, Tensor};

/// Log-probability of each target token.
///
/// # Shapes
/// - `logits`: `[batch, seq, vocab]`; `targets`: `[batch, seq]` -> `[batch, seq]`
pub fn token_logps(logits: Tensor<3>, targets: Tensor<2, Int>) -> Tensor<2> {
    let [b, s, _] = logits.dims();
    let logp = log_softmax(logits, 2);
    logp.gather(2, targets.reshape([b, s, 1])).reshape([b, s]) // [b, s, 1] -> [b, s]
}

/// Mean negative log-likelihood of the masked-in targets (0 when the mask is empty).
///
/// # Shapes
/// - `logits`: `[batch, seq, vocab]`; `targets`: `[batch, seq]`; `mask`: `[batch, seq]`, 1 = counts
/// - returns `[1]`
pub fn cross_entropy(logits: Tensor<3>, targets: Tensor<2, Int>, mask: Tensor<2>) -> Tensor<1> {
    let count = mask.clone().sum().clamp_min(1.0);
    let nll = token_logps(logits, targets).neg() * mask;
    nll.sum() / count
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::losses::golden::*;

    /// Equivalent PyTorch: `-(log_softmax(x, -1).gather(-1, t[..., None])[..., 0] * m).sum() / m.sum()`.
    #[test]
    fn masked_cross_entropy_matches_pytorch() {
        let g = json();
        let [b, s, v] = [2, 4, 7];
        let ce = cross_entropy(tensor3(&g["student"], [b, s, v]), ints(&g["targets"], [b, s]), tensor2(&g["mask"], [b, s]));
        close(scalar(ce), g["ce"].as_f64().unwrap(), "ce");
    }
}
