//! Decoding's attention softmax in one launch: `softmax(scale · scores, where mask is false)`,
//! NaN-safe (a fully masked row gives zeros), value for value the composite of
//! [`crate::masked_attention`] (the scaled scores rounded to their dtype, burn's `-inf` fill, the
//! max and sum clamped as [`crate::reduce::safe_softmax_last`] clamps them).
//!
//! In tensor ops that composite is five launches or so (the scale and fill, the max, the shifted
//! exponentials, the sum, the division) in every attention layer of every decode step; here a
//! cube per row reads its row once into registers and makes the three passes (max, sum, write)
//! there, for rows of up to 4,096 keys; longer rows take the composite, which was faster there
//! (BENCHMARKS.md, session 11). The twin is the composite, which the CPU runs.

#[cfg(feature = "cuda")]
mod cube;

use burn::tensor::{Bool, Tensor};

/// The softmax over the last axis of `scale · scores` with `mask`'s true entries hidden.
///
/// # Shapes
/// - `scores`: `[batch, rows, keys]`; `mask`: the same, true where a key is hidden -> same
pub fn masked_softmax(scores: Tensor<3>, mask: Tensor<3, Bool>, scale: f64) -> Tensor<3> {
    #[cfg(feature = "cuda")]
    if wanted() && scores.dims()[2] <= cube::MAX_KEYS && crate::reduce::cube_inference(&scores.device()) {
        return cube::masked_softmax(scores, mask, scale);
    }
    masked_softmax_reference(scores, mask, scale)
}

/// [`masked_softmax`] as the tensor-ops composite.
pub fn masked_softmax_reference(scores: Tensor<3>, mask: Tensor<3, Bool>, scale: f64) -> Tensor<3> {
    crate::reduce::safe_softmax_last((scores * scale).mask_fill(mask, f32::NEG_INFINITY))
}

/// Whether decoding's attention softmax runs the kernel (`DISTILL_ATTN_SOFTMAX=ops` keeps the
/// composite, to measure one against the other).
#[cfg(feature = "cuda")]
fn wanted() -> bool {
    static WANTED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    crate::switched_on(&WANTED, "DISTILL_ATTN_SOFTMAX", "ops")
}

/// `"kernel up to 4096 keys"` where decoding's attention runs it (inside [`crate::masked_attention`]'s batched
/// products), else `"ops"`, for benchmark records.
pub fn mode() -> &'static str {
    #[cfg(feature = "cuda")]
    if wanted() && crate::masked_attention::mode() == "gemv" {
        return "kernel up to 4096 keys";
    }
    "ops"
}

#[cfg(test)]
mod tests {
    use burn::tensor::{Device, Distribution, TensorData};

    use super::*;

    /// The twin hides what the mask hides, scales, and leaves a row that hides every key at zero.
    #[test]
    fn hidden_keys_get_nothing_and_a_fully_hidden_row_is_zeros() {
        let device = Device::flex();
        let scores = Tensor::<3>::random([1, 2, 4], Distribution::Normal(0.0, 3.0), &device);
        let hidden = [false, true, false, true, true, true, true, true];
        let mask = Tensor::<3, Bool>::from_data(TensorData::new(hidden.to_vec(), [1, 2, 4]), &device);
        let got: Vec<f32> = masked_softmax(scores.clone(), mask, 0.5).into_data().to_vec().unwrap();
        let s: Vec<f32> = scores.into_data().to_vec().unwrap();
        let (a, b) = ((0.5 * s[0]).exp(), (0.5 * s[2]).exp());
        let want = [a / (a + b), 0.0, b / (a + b), 0.0, 0.0, 0.0, 0.0, 0.0];
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() < 1e-6, "{got:?} vs {want:?}");
        }
    }
}
