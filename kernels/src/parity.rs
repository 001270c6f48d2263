//! Kernel against reference on random inputs, with both timed and the kernel's time set
//! against the bytes it must move (`distill bench kernels`). On a device without the kernel
//! both sides are the reference: the check then only proves the harness.

use std::time::Instant;

use burn::tensor::{DType, Device, Distribution, Tensor};
use serde::Serialize;

use crate::mamba2_step::{mamba2_step, mamba2_step_reference, Mamba2StepWeights};

/// The H200's measured device-to-device copy rate (KINDS.md), the floor's denominator.
pub const COPY_BYTES_PER_S: f64 = 4.3e12;

/// A Mamba-2 layer's decode shape.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct StepCase {
    pub batch: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub d_state: usize,
}

/// SmolLM2's hybrid layers (9 heads over 3, head_dim 64), a Llama-3-8B one (32 over 8,
/// head_dim 128) and a Mamba-2-style one (no GQA, d_state 16), at batch 1 to 64.
pub fn default_cases() -> Vec<StepCase> {
    let layers = [(9, 3, 64, 64), (32, 8, 128, 128), (8, 8, 64, 16)];
    let mut cases = Vec::new();
    for (heads, kv_heads, head_dim, d_state) in layers {
        for batch in [1, 8, 32, 64] {
            cases.push(StepCase { batch, heads, kv_heads, head_dim, d_state });
        }
    }
    cases
}

#[derive(Debug, Clone, Serialize)]
pub struct StepParity {
    pub bench: &'static str,
    pub case: StepCase,
    pub dtype: &'static str,
    /// Largest |kernel - reference| over `y`, relative to the largest |reference|.
    pub y_rel: f64,
    pub state_rel: f64,
    pub within_tolerance: bool,
    pub kernel_us: f64,
    pub reference_us: f64,
    /// Bytes one step must read and write (state in and out, inputs, weights, `y`).
    pub bytes: f64,
    /// `bytes` over [`COPY_BYTES_PER_S`].
    pub floor_us: f64,
}

/// f32 is compared at accumulation-order rounding, bf16 at its 8-bit mantissa.
fn tolerance(dtype: DType) -> f64 {
    if dtype == DType::BF16 { 3e-2 } else { 1e-4 }
}

pub fn mamba2_step_parity(case: StepCase, dtype: DType, device: &Device, repeats: usize) -> StepParity {
    let StepCase { batch: bs, heads: h, kv_heads: kv, head_dim: p, d_state: n } = case;
    let k = 4;
    let channels = kv * p + kv * n + h * n;
    let normal = Distribution::Normal(0.0, 0.5);
    let t = |dims: Vec<usize>| -> Tensor<1> { Tensor::<1>::random([dims.iter().product::<usize>()], normal, device).cast(dtype) };
    let w = Mamba2StepWeights {
        conv_weight: t(vec![channels, k]).reshape([channels, k]),
        conv_bias: t(vec![channels]),
        dt_bias: Tensor::<1>::random([h], Distribution::Uniform(-4.0, -1.0), device).cast(dtype),
        a: Tensor::<1>::random([h], Distribution::Uniform(1.0, 16.0), device).neg(),
        d: Tensor::<1>::ones([h], device).cast(dtype),
        heads: h,
        kv_heads: kv,
        head_dim: p,
        d_state: n,
    };
    let xbc: Tensor<2> = t(vec![bs, channels]).reshape([bs, channels]);
    let dt: Tensor<2> = t(vec![bs, h]).reshape([bs, h]);
    let window: Tensor<3> = t(vec![bs, k - 1, channels]).reshape([bs, k - 1, channels]);
    let state = Tensor::<4>::random([bs, h, p, n], normal, device);

    let time = |f: &dyn Fn()| {
        f(); // compiles the kernels
        let _ = device.sync();
        let start = Instant::now();
        for _ in 0..repeats.max(1) {
            f();
        }
        let _ = device.sync();
        start.elapsed().as_secs_f64() * 1e6 / repeats.max(1) as f64
    };
    let kernel = || mamba2_step(xbc.clone(), dt.clone(), window.clone(), state.clone(), &w);
    let reference = || mamba2_step_reference(xbc.clone(), dt.clone(), window.clone(), state.clone(), &w);
    let kernel_us = time(&|| drop(kernel()));
    let reference_us = time(&|| drop(reference()));
    let (got, want) = (kernel(), reference());
    let rel = |a: Tensor<1>, b: Tensor<1>| {
        let scale = b.clone().abs().max().into_scalar::<f32>().max(1e-6) as f64;
        (a - b).abs().max().into_scalar::<f32>() as f64 / scale
    };
    let y_rel = rel(got.y.reshape([bs * h * p]), want.y.reshape([bs * h * p]));
    let state_rel = rel(got.state.reshape([bs * h * p * n]), want.state.reshape([bs * h * p * n]));
    let esize = if dtype == DType::BF16 { 2.0 } else { 4.0 };
    let bytes = (2 * bs * h * p * n * 4 + bs * h * p * 4) as f64 + (bs * k * channels + channels * (k + 1) + bs * h + 2 * h) as f64 * esize + (h * 4) as f64;
    let tol = tolerance(dtype);
    StepParity {
        bench: "kernel_mamba2_step",
        case,
        dtype: if dtype == DType::BF16 { "bf16" } else { "f32" },
        y_rel,
        state_rel,
        within_tolerance: y_rel <= tol && state_rel <= tol,
        kernel_us,
        reference_us,
        bytes,
        floor_us: bytes / COPY_BYTES_PER_S * 1e6,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_harness_runs_on_the_cpu_where_both_sides_are_the_reference() {
        let case = StepCase { batch: 2, heads: 4, kv_heads: 2, head_dim: 8, d_state: 4 };
        let r = mamba2_step_parity(case, DType::F32, &Device::flex(), 2);
        assert!(r.within_tolerance && r.y_rel == 0.0 && r.state_rel == 0.0, "{r:?}");
        assert!(r.bytes > 0.0 && r.kernel_us > 0.0 && r.reference_us > 0.0);
    }
}
