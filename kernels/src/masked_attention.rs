//! Attention under a boolean mask for inference: decoding's steps and speculative verification
//! (a few query rows against the whole cache).
//!
//! On a CubeCL device burn's `attention` without autotune is its fallback composite (scores,
//! mask, softmax, product), and that softmax's max and sum walk each row's whole context with one
//! unit: 9 units over 16,384 keys per layer at batch 1 and context 16k. Here the same composite,
//! value for value (the scale, the `-inf` fill, the clamps that keep a fully masked row at zero),
//! with [`crate::reduce`]'s reductions and, for up to [`crate::gemv::MAX_BATCHED_ROWS`] query
//! rows per KV head, [`crate::gemv`]'s batched products ([`decode_attention`]). Elsewhere (the
//! CPU, anything differentiated) it is burn's `attention`.

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
        let [rows, d] = [q.dims()[2], q.dims()[3]];
        if products_wanted() && rows <= crate::gemv::MAX_BATCHED_ROWS {
            return decode_attention(q, k, v, mask);
        }
        let scores = q.matmul(k.swap_dims(2, 3)) * (1.0 / (d as f64).sqrt());
        return crate::reduce::safe_softmax_last(scores.mask_fill(mask, f32::NEG_INFINITY)).matmul(v);
    }
    let opts = AttentionModuleOptions { scale: None, softcap: None, is_causal: false };
    attention(q, k, v, Some(mask), None, opts)
}

/// [`masked_attention`] with its two products by [`crate::gemv`]'s batched kernels, a batch per
/// head, and its softmax by [`crate::attention_softmax`]'s: the scores a warp per key, the values' product over slices of the context side by
/// side. burn's product ran the values' as a couple of cubes per head walking the whole context
/// in series, so a decode step's attention cost grew ~38 µs per layer per 1,000 tokens of
/// context (session 9: the teacher 3.5 ms a token at 512, 21.3 at 16k) where its bytes take
/// under 1 µs. A row's sums run in an order that does not depend on the number of rows, so a
/// verified token's attention rounds as its decode step's does.
///
/// # Shapes
/// as [`masked_attention`], with `rows` at most [`crate::gemv::MAX_BATCHED_ROWS`]
pub fn decode_attention(q: Tensor<4>, k: Tensor<4>, v: Tensor<4>, mask: Tensor<4, Bool>) -> Tensor<4> {
    use crate::gemv::{batched_gemv, batched_gemv_t};
    let [b, h, rows, d] = q.dims();
    let t = k.dims()[2];
    let scale = 1.0 / (d as f64).sqrt();
    let scores = batched_gemv_t(q.reshape([b * h, rows, d]), k.reshape([b * h, t, d]));
    let probs = crate::attention_softmax::masked_softmax(scores, mask.reshape([b * h, rows, t]), scale);
    batched_gemv(probs, v.reshape([b * h, t, d])).reshape([b, h, rows, d])
}

/// `"gemv"` where decoding's attention takes the batched products, else `"burn"`, for benchmark
/// records.
pub fn mode() -> &'static str {
    #[cfg(feature = "cuda")]
    if products_wanted() && crate::gemv::mode() == "gemv" && crate::reduce::mode() == "cube" {
        return "gemv";
    }
    "burn"
}

/// Whether decoding's attention takes the batched products (`DISTILL_ATTN_GEMV=0`, or
/// `DISTILL_GEMV=0` for every product, keeps burn's, to measure one against the other).
#[cfg(feature = "cuda")]
fn products_wanted() -> bool {
    static WANTED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    crate::switched_on(&WANTED, "DISTILL_ATTN_GEMV", "0")
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
