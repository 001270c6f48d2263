//! RMSNorm for inference: `x / sqrt(mean(x²) + eps)` in f32, rounded to the input's dtype, times
//! the weight, as `LlamaRMSNorm` does.
//!
//! In tensor ops that is four or five launches a row set (the cast and square, the mean, the
//! scale, the cast back, the weight), and a decode step runs two norms a layer, 61 for SmolLM2's
//! 30 layers: on a captured graph, where a SmolLM2 step is ~2.9 ms of launches for bytes that
//! move in microseconds (BENCHMARKS.md), about a quarter of its launches. Here one launch: a cube
//! per row, its units splitting the row, the sum of squares by warp shuffles and shared memory.
//! The twin is the tensor ops, which the CPU and anything differentiated run.

#[cfg(feature = "cuda")]
mod cube;

use burn::tensor::{DType, Tensor};

/// RMSNorm of each row of `x` with `weight`.
///
/// # Shapes
/// - `x`: `[rows, d]`; `weight`: `[d]` -> `[rows, d]`, in `x`'s dtype
pub fn rms_norm(x: Tensor<2>, weight: Tensor<1>, eps: f64) -> Tensor<2> {
    #[cfg(feature = "cuda")]
    if wanted() && crate::mamba2_step::cube_without_gradients(&x.device()) {
        return cube::rms_norm(x, weight, eps);
    }
    rms_norm_reference(x, weight, eps)
}

/// Mamba-2's gated RMSNorm (`norm_before_gate = False`): `rmsnorm(y · silu(z))` over each row,
/// the rows cycling through `weight`'s groups (row `r` takes the `r % groups`-th block of `d`
/// weights: a token's heads, one group each).
///
/// # Shapes
/// - `y`, `z`: `[rows, d]`; `weight`: `[groups · d]`, `groups` dividing `rows` -> `[rows, d]`, in
///   `y`'s dtype
pub fn gated_rms_norm(y: Tensor<2>, z: Tensor<2>, weight: Tensor<1>, eps: f64) -> Tensor<2> {
    #[cfg(feature = "cuda")]
    if wanted() && crate::mamba2_step::cube_without_gradients(&y.device()) {
        return cube::gated_rms_norm(y, z, weight, eps);
    }
    gated_rms_norm_reference(y, z, weight, eps)
}

/// [`gated_rms_norm`] in tensor ops.
pub fn gated_rms_norm_reference(y: Tensor<2>, z: Tensor<2>, weight: Tensor<1>, eps: f64) -> Tensor<2> {
    let [rows, d] = y.dims();
    let groups = weight.dims()[0] / d;
    let dtype = y.dtype();
    let v = y.cast(DType::F32) * burn::tensor::activation::silu(z.cast(DType::F32));
    let var = crate::reduce::mean_last(v.clone().powi_scalar(2));
    let v = (v * (var + eps).sqrt().recip()).cast(dtype).reshape([rows / groups, groups, d]);
    (v * weight.cast(dtype).reshape([1, groups, d])).reshape([rows, d])
}

/// [`rms_norm`] in tensor ops: what the CPU runs, and the kernel's twin.
pub fn rms_norm_reference(x: Tensor<2>, weight: Tensor<1>, eps: f64) -> Tensor<2> {
    let dtype = x.dtype();
    let x = x.cast(DType::F32);
    let var = crate::reduce::mean_last(x.clone().powi_scalar(2)); // [rows, 1]
    let x = x * (var + eps).sqrt().recip();
    x.cast(dtype) * weight.cast(dtype).unsqueeze::<2>()
}

/// Whether inference norms run the kernel (`DISTILL_RMSNORM=ops` keeps the tensor ops, to
/// measure one against the other).
#[cfg(feature = "cuda")]
fn wanted() -> bool {
    static WANTED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    crate::switched_on(&WANTED, "DISTILL_RMSNORM", "ops")
}

/// `"kernel"` or `"ops"`, for benchmark records.
pub fn mode() -> &'static str {
    #[cfg(feature = "cuda")]
    if wanted() {
        return "kernel";
    }
    "ops"
}

#[cfg(test)]
mod tests {
    use burn::tensor::{Device, Distribution};

    use super::*;

    /// The gated norm's twin is Mamba-2's gated RMSNorm written out: each token's heads a group
    /// with its own weights.
    #[test]
    fn the_gated_twin_normalizes_each_group_with_its_weights() {
        let device = Device::flex();
        let (tokens, heads, p) = (2, 3, 4);
        let y = Tensor::<2>::random([tokens * heads, p], Distribution::Normal(0.0, 2.0), &device);
        let z = Tensor::<2>::random([tokens * heads, p], Distribution::Normal(0.0, 1.0), &device);
        let w = Tensor::<1>::random([heads * p], Distribution::Normal(1.0, 0.3), &device);
        let got: Vec<f32> = gated_rms_norm(y.clone(), z.clone(), w.clone(), 1e-5).into_data().to_vec().unwrap();
        let (y, z, w): (Vec<f32>, Vec<f32>, Vec<f32>) = (y.into_data().to_vec().unwrap(), z.into_data().to_vec().unwrap(), w.into_data().to_vec().unwrap());
        for r in 0..tokens * heads {
            let v: Vec<f32> = (0..p).map(|i| y[r * p + i] * z[r * p + i] / (1.0 + (-z[r * p + i]).exp())).collect();
            let inv = 1.0 / (v.iter().map(|x| x * x).sum::<f32>() / p as f32 + 1e-5).sqrt();
            for i in 0..p {
                let want = v[i] * inv * w[(r % heads) * p + i];
                assert!((got[r * p + i] - want).abs() < 1e-5, "row {r}, {i}: {} vs {want}", got[r * p + i]);
            }
        }
    }

    #[test]
    fn is_the_tensor_ops_on_the_cpu() {
        let device = Device::flex();
        let x = Tensor::<2>::random([3, 70], Distribution::Normal(0.0, 2.0), &device);
        let w = Tensor::<1>::random([70], Distribution::Normal(1.0, 0.1), &device);
        rms_norm(x.clone(), w.clone(), 1e-5).into_data().assert_eq(&rms_norm_reference(x, w, 1e-5).into_data(), true);
    }
}
