//! Attention under a boolean mask for inference: decoding's steps and speculative verification
//! (a few query rows against the whole cache).
//!
//! On a CubeCL device burn's `attention` without autotune is its fallback composite (scores,
//! mask, softmax, product), and that softmax's max and sum walk each row's whole context with one
//! unit: 9 units over 16,384 keys per layer at batch 1 and context 16k. Here the same composite,
//! value for value (the scale, the `-inf` fill, the clamps that keep a fully masked row at zero),
//! with [`crate::reduce`]'s reductions. Elsewhere (the CPU, anything differentiated) it is
//! burn's `attention`.

use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{Bool, Tensor};

/// `softmax(q kᵀ / √d, where mask is false) v`.
///
/// # Shapes
/// - `q`: `[batch, heads, rows, d]`; `k`, `v`: `[batch, heads, keys, d]`;
///   `mask`: `[batch, heads, rows, keys]`, true where a key is hidden -> `[batch, heads, rows, d]`
pub fn masked_attention(q: Tensor<4>, k: Tensor<4>, v: Tensor<4>, mask: Tensor<4, Bool>) -> Tensor<4> {
    #[cfg(feature = "cuda")]
    if crate::reduce::cube_inference(&q.device()) {
        let d = q.dims()[3];
        let scores = q.matmul(k.swap_dims(2, 3)) * (1.0 / (d as f64).sqrt());
        return crate::reduce::safe_softmax_last(scores.mask_fill(mask, f32::NEG_INFINITY)).matmul(v);
    }
    let opts = AttentionModuleOptions { scale: None, softcap: None, is_causal: false };
    attention(q, k, v, Some(mask), None, opts)
}

#[cfg(test)]
mod tests {
    use burn::tensor::{Device, Distribution, Tensor};

    use super::*;

    /// The composite the GPU runs, written out here, equals burn's attention (what the CPU runs).
    #[test]
    fn the_composite_is_burns_attention() {
        let device = Device::flex();
        let n = Distribution::Normal(0.0, 1.0);
        let (q, k, v) = (Tensor::<4>::random([2, 3, 4, 8], n, &device), Tensor::<4>::random([2, 3, 10, 8], n, &device), Tensor::<4>::random([2, 3, 10, 8], n, &device));
        let mask = Tensor::<4>::random([2, 3, 4, 10], Distribution::Uniform(0.0, 1.0), &device).greater_elem(0.7);
        let composite = crate::reduce::safe_softmax_last((q.clone().matmul(k.clone().swap_dims(2, 3)) / 8f64.sqrt()).mask_fill(mask.clone(), f32::NEG_INFINITY)).matmul(v.clone());
        let got = masked_attention(q, k, v, mask);
        let diff = (got - composite).abs().max().into_scalar::<f32>();
        assert!(diff < 1e-5, "{diff}");
    }
}
