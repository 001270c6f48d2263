//! Causal attention for training. burn's autodiff differentiates its `attention` op through a
//! materialized fallback: scores scaled in a pass of their own, a boolean mask filled in,
//! and a softmax differentiated through its composite (BENCHMARKS.md: the unfused passes over
//! `[batch, heads, seq, seq]` were 18% of a distillation step on the H200). This is the same
//! function with the scale folded into `q` (a tensor `seq / head_dim` times smaller), the mask
//! as an additive bias whose gradient is the identity, and `softmax_last`'s own backward.

use burn::tensor::Tensor;
use distill_kernels::attention::causal_bias;
use distill_kernels::matmul::{matmul_with, ProductKernels};
use distill_kernels::softmax::softmax_last;

/// `softmax(q kᵀ / sqrt(d) + causal) v`, query `i` of `s` seeing keys up to `i + t - s`.
///
/// # Shapes
/// - `q`: `[batch, heads, s, d]`; `k`, `v`: `[batch, heads, t, d]` (t >= s) -> `[batch, heads, s, d]`
pub fn causal_attention(q: Tensor<4>, k: Tensor<4>, v: Tensor<4>) -> Tensor<4> {
    let [_, _, s, d] = q.dims();
    let t = k.dims()[2];
    let products = ProductKernels::for_attention();
    let scores = matmul_with(q * (1.0 / (d as f64).sqrt()), k.swap_dims(2, 3), products); // [b, h, s, t]
    let bias = causal_bias(s, t, &scores.device(), scores.dtype());
    matmul_with(softmax_last(scores + bias), v, products)
}

#[cfg(test)]
mod tests {
    use burn::tensor::module::attention;
    use burn::tensor::ops::AttentionModuleOptions;
    use burn::tensor::{Device, Distribution, Tolerance};

    use super::*;

    /// Values and the gradients of q, k and v equal burn's causal attention differentiated
    /// through its fallback, for a prefill (s = t) and a query block after a cache (s < t).
    #[test]
    fn equals_burns_causal_attention_with_gradients() {
        let device = Device::flex().autodiff();
        let normal = Distribution::Normal(0.0, 1.0);
        for (s, t) in [(6, 6), (3, 7)] {
            let q = Tensor::<4>::random([2, 3, s, 4], normal, &device).require_grad();
            let k = Tensor::<4>::random([2, 3, t, 4], normal, &device).require_grad();
            let v = Tensor::<4>::random([2, 3, t, 4], normal, &device).require_grad();
            let w = Tensor::<4>::random([2, 3, s, 4], normal, &device);
            let opts = AttentionModuleOptions { scale: None, softcap: None, is_causal: true };
            let ours = causal_attention(q.clone(), k.clone(), v.clone());
            let theirs = attention(q.clone(), k.clone(), v.clone(), None, None, opts);
            let tol = Tolerance::absolute(1e-5);
            ours.clone().into_data().assert_approx_eq::<f32>(&theirs.clone().into_data(), tol);
            let (g1, g2) = ((ours * w.clone()).sum().backward(), (theirs * w).sum().backward());
            for x in [&q, &k, &v] {
                x.grad(&g1).unwrap().into_data().assert_approx_eq::<f32>(&x.grad(&g2).unwrap().into_data(), tol);
            }
        }
    }
}
