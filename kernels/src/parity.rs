//! Kernel against reference on random inputs, with both timed and the kernel's time set
//! against the bytes it must move (`distill bench kernels`). On a device without the kernel
//! both sides are the reference: the check then only proves the harness.

use std::time::Instant;

use burn::tensor::{DType, Device, Distribution, Tensor};
use serde::Serialize;

use crate::mamba2_step::{mamba2_step, mamba2_step_reference, Mamba2StepWeights};
use crate::mamba2_steps::{mamba2_steps, mamba2_steps_history, mamba2_steps_history_reference, mamba2_steps_reference};
use crate::matmul::{matmul_with, ProductKernels};

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

impl StepCase {
    /// `b32 h32/8 p128 n128`: what the benchmark's rows and its `--case` filter name a case by.
    pub fn label(&self) -> String {
        format!("b{} h{}/{} p{} n{}", self.batch, self.heads, self.kv_heads, self.head_dim, self.d_state)
    }
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

/// As [`tolerance`], for products: f32 ones may run on TF32 tensor cores in burn's routine.
fn product_tolerance(dtype: DType) -> f64 {
    if dtype == DType::BF16 { 3e-2 } else { 5e-3 }
}

/// `"bf16"` or `"f32"`, as the records name the dtypes the harness runs.
fn dtype_name(dtype: DType) -> &'static str {
    if dtype == DType::BF16 { "bf16" } else { "f32" }
}

pub fn mamba2_step_parity(case: StepCase, dtype: DType, device: &Device, repeats: usize) -> StepParity {
    let StepCase { batch: bs, heads: h, kv_heads: kv, head_dim: p, d_state: n } = case;
    let k = 4;
    let channels = kv * p + kv * n + h * n;
    let normal = Distribution::Normal(0.0, 0.5);
    let t = |dims: Vec<usize>| -> Tensor<1> { Tensor::<1>::random([dims.iter().product::<usize>()], normal, device).cast(dtype) };
    let w = random_weights(case, k, dtype, device);
    let xbc: Tensor<2> = t(vec![bs, channels]).reshape([bs, channels]);
    let dt: Tensor<2> = t(vec![bs, h]).reshape([bs, h]);
    let window: Tensor<3> = t(vec![bs, k - 1, channels]).reshape([bs, k - 1, channels]);
    let state = Tensor::<4>::random([bs, h, p, n], normal, device);

    let time = |f: &dyn Fn()| host_us(device, repeats, f);
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
    let esize = dtype.size() as f64;
    let bytes = (2 * bs * h * p * n * 4 + bs * h * p * 4) as f64 + (bs * k * channels + channels * (k + 1) + bs * h + 2 * h) as f64 * esize + (h * 4) as f64;
    let tol = tolerance(dtype);
    StepParity {
        bench: "kernel_mamba2_step",
        case,
        dtype: dtype_name(dtype),
        y_rel,
        state_rel,
        within_tolerance: y_rel <= tol && state_rel <= tol,
        kernel_us,
        reference_us,
        bytes,
        floor_us: bytes / COPY_BYTES_PER_S * 1e6,
    }
}

/// A layer of `case`'s shape with random parameters in `dtype` (`A` in f32, as models keep it).
fn random_weights(case: StepCase, k: usize, dtype: DType, device: &Device) -> Mamba2StepWeights {
    let StepCase { heads: h, kv_heads: kv, head_dim: p, d_state: n, .. } = case;
    let channels = kv * p + kv * n + h * n;
    let normal = Distribution::Normal(0.0, 0.5);
    let t = |len: usize| Tensor::<1>::random([len], normal, device).cast(dtype);
    Mamba2StepWeights {
        conv_weight: t(channels * k).reshape([channels, k]),
        conv_bias: t(channels),
        dt_bias: Tensor::<1>::random([h], Distribution::Uniform(-4.0, -1.0), device).cast(dtype),
        a: Tensor::<1>::random([h], Distribution::Uniform(1.0, 16.0), device).neg(),
        d: Tensor::<1>::ones([h], device).cast(dtype),
        heads: h,
        kv_heads: kv,
        head_dim: p,
        d_state: n,
    }
}

/// Host time per call of `f` over `repeats` calls after one untimed call (which compiles the
/// kernels), the device synchronized before and after.
fn host_us(device: &Device, repeats: usize, f: &dyn Fn()) -> f64 {
    f();
    let _ = device.sync();
    let start = Instant::now();
    for _ in 0..repeats.max(1) {
        f();
    }
    let _ = device.sync();
    start.elapsed().as_secs_f64() * 1e6 / repeats.max(1) as f64
}

/// Steps per multi-step case: one (a plain step through the multi-step kernel), then K + 1 for
/// every K from 1 to 8 (speculative verification).
pub const STEPS: [usize; 9] = [1, 2, 3, 4, 5, 6, 7, 8, 9];

#[derive(Debug, Clone, Serialize)]
pub struct StepsParity {
    pub bench: &'static str,
    pub case: StepCase,
    pub steps: usize,
    pub snap_at: usize,
    pub emit_from: usize,
    pub dtype: &'static str,
    pub y_rel: f64,
    pub snapshot_rel: f64,
    /// [`mamba2_steps_history`] (every state kept, graph verification) against its reference,
    /// outputs and states.
    pub history_rel: f64,
    /// Whether the history's outputs and states, the outputs and snapshot above and a single
    /// step (decoding's launch) agree bit for bit where they overlap: greedy speculative output
    /// equals plain decoding's only if they do. Also that the windows the launches leave are
    /// their inputs' copies.
    pub same_rounding: bool,
    pub within_tolerance: bool,
    pub kernel_us: f64,
    pub reference_us: f64,
    /// The state read once and written once, the conv inputs, `dt`, the weights, `y`.
    pub bytes: f64,
    pub floor_us: f64,
}

/// [`mamba2_steps`] against its reference: `steps` steps from a random state, the snapshot
/// after the first half, outputs from the middle on (a round that replays accepted steps, then
/// verifies new ones).
pub fn mamba2_steps_parity(case: StepCase, steps: usize, dtype: DType, device: &Device, repeats: usize) -> StepsParity {
    let StepCase { batch: bs, heads: h, kv_heads: kv, head_dim: p, d_state: n } = case;
    let k = 4;
    let channels = kv * p + kv * n + h * n;
    let (snap_at, emit_from) = (steps / 2, steps / 2);
    let normal = Distribution::Normal(0.0, 0.5);
    let w = random_weights(case, k, dtype, device);
    let padded = Tensor::<3>::random([bs, k - 1 + steps, channels], normal, (device, dtype));
    let dt = Tensor::<3>::random([bs, steps, h], normal, (device, dtype));
    let state = Tensor::<4>::random([bs, h, p, n], normal, device);
    let time = |f: &dyn Fn()| host_us(device, repeats, f);
    let kernel = || mamba2_steps(padded.clone(), dt.clone(), state.clone(), &w, snap_at, emit_from);
    let reference = || mamba2_steps_reference(padded.clone(), dt.clone(), state.clone(), &w, snap_at, emit_from);
    let kernel_us = time(&|| drop(kernel()));
    let reference_us = time(&|| drop(reference()));
    let (got, want) = (kernel(), reference());
    let history = mamba2_steps_history(padded.clone(), dt.clone(), state.clone(), &w);
    let history_want = mamba2_steps_history_reference(padded.clone(), dt.clone(), state.clone(), &w);
    let history_rel = rel_diff(history.y.clone(), history_want.y).max(rel_diff(history.states.clone(), history_want.states));
    let one = mamba2_step(padded.clone().narrow(1, k - 1, 1).reshape([bs, channels]), dt.clone().narrow(1, 0, 1).reshape([bs, h]), padded.clone().narrow(1, 0, k - 1), state.clone(), &w);
    let same_rounding = identical(history.y.clone().narrow(1, emit_from, steps - emit_from), got.y.clone())
        && identical(history.y.narrow(1, 0, 1).reshape([bs, h, p]), one.y)
        && identical(history.states.clone().narrow(0, 0, 1).reshape([bs, h, p, n]), one.state)
        && (snap_at == 0 || identical(history.states.narrow(0, snap_at - 1, 1).reshape([bs, h, p, n]), got.snapshot.clone()))
        // The windows the launches leave are copies of their inputs.
        && identical(got.window.clone(), want.window.clone())
        && identical(one.window, padded.clone().narrow(1, 1, k - 1));
    let (y_rel, snapshot_rel) = (rel_diff(got.y, want.y), rel_diff(got.snapshot, want.snapshot));
    let esize = dtype.size() as f64;
    let bytes = (2 * bs * h * p * n * 4 + bs * (steps - emit_from) * h * p * 4) as f64
        + (bs * (k - 1 + steps) * channels + channels * (k + 1) + bs * steps * h + 2 * h) as f64 * esize
        + (h * 4) as f64;
    let tol = tolerance(dtype);
    StepsParity {
        bench: "kernel_mamba2_steps",
        case,
        steps,
        snap_at,
        emit_from,
        dtype: dtype_name(dtype),
        y_rel,
        snapshot_rel,
        history_rel,
        same_rounding,
        within_tolerance: y_rel <= tol && snapshot_rel <= tol && history_rel <= tol && same_rounding,
        kernel_us,
        reference_us,
        bytes,
        floor_us: bytes / COPY_BYTES_PER_S * 1e6,
    }
}

/// A projection of `rows` tokens from `d_in` to `d_out` features.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct ProjectionCase {
    pub rows: usize,
    pub d_in: usize,
    pub d_out: usize,
}

/// SmolLM2's hybrid projections at 2048 tokens: q/o, k/v, gate/up, down, the Mamba-2 `in_proj`
/// (1545 outputs: rows of an odd byte length, which TMA loads cannot describe) and the tied head.
pub fn projection_cases() -> Vec<ProjectionCase> {
    [(576, 576), (576, 192), (576, 1536), (1536, 576), (576, 1545), (1545, 576), (576, 49152)]
        .map(|(d_in, d_out)| ProjectionCase { rows: 2048, d_in, d_out })
        .to_vec()
}

#[derive(Debug, Clone, Serialize)]
pub struct ProjectionParity {
    pub bench: &'static str,
    pub case: ProjectionCase,
    pub dtype: &'static str,
    pub kernels: String,
    /// Largest |named - default| over the largest |default|, for the product and both gradients.
    pub y_rel: f64,
    pub x_grad_rel: f64,
    pub w_grad_rel: f64,
    pub within_tolerance: bool,
}

/// `y = x·w` and the gradients of `sum(y ⊙ r)` through [`matmul_with`] with `kernels` against
/// burn's default product, on `device` with autodiff: proves the named routines' backward.
pub fn projection_parity(case: ProjectionCase, dtype: DType, device: &Device, kernels: ProductKernels) -> ProjectionParity {
    let ProjectionCase { rows, d_in, d_out } = case;
    let ad = device.clone().autodiff();
    let normal = |std: f64| Distribution::Normal(0.0, std);
    let x = Tensor::<2>::random([rows, d_in], normal(1.0), (&ad, dtype)).require_grad();
    let w = Tensor::<2>::random([d_in, d_out], normal(1.0 / (d_in as f64).sqrt()), (&ad, dtype)).require_grad();
    let r = Tensor::<2>::random([rows, d_out], normal(1.0), (&ad, dtype));
    let run = |k: ProductKernels| {
        let y = matmul_with(x.clone(), w.clone(), k);
        let grads = (y.clone().cast(DType::F32) * r.clone().cast(DType::F32)).sum().backward();
        (y.inner(), x.grad(&grads).expect("x is tracked"), w.grad(&grads).expect("w is tracked"))
    };
    let (y0, dx0, dw0) = run(ProductKernels::DEFAULT);
    let (y1, dx1, dw1) = run(kernels);
    let (y_rel, x_grad_rel, w_grad_rel) = (rel_diff(y1, y0), rel_diff(dx1, dx0), rel_diff(dw1, dw0));
    let tol = product_tolerance(dtype);
    ProjectionParity {
        bench: "kernel_projection",
        case,
        dtype: dtype_name(dtype),
        kernels: format!("{},{},{}", kernels.forward, kernels.lhs_grad, kernels.rhs_grad),
        y_rel,
        x_grad_rel,
        w_grad_rel,
        within_tolerance: y_rel <= tol && x_grad_rel <= tol && w_grad_rel <= tol,
    }
}

/// Largest |a - b| over the largest |b|, in f32; NaN anywhere gives NaN.
/// Bit for bit (the largest difference exactly zero).
fn identical<const D: usize>(a: Tensor<D>, b: Tensor<D>) -> bool {
    (a - b).abs().max().into_scalar::<f32>() == 0.0
}

fn rel_diff<const D: usize>(a: Tensor<D>, b: Tensor<D>) -> f64 {
    let (a, b) = (a.cast(DType::F32), b.cast(DType::F32));
    let scale = b.clone().abs().max().into_scalar::<f32>().max(1e-6) as f64;
    let diff = (a - b).abs();
    if diff.clone().is_nan().any().into_scalar::<bool>() {
        return f64::NAN;
    }
    diff.max().into_scalar::<f32>() as f64 / scale
}

/// Decoding's products `(rows, d_in, d_out, transposed)`: SmolLM2's projections (q/o, k/v,
/// gate/up, down, the Mamba-2 `in_proj`'s odd width, the head, and the tied head: the embedding
/// seen transposed) and Llama-3-8B's, at 1 row (a decode step), 5 (K = 4 verification) and 9.
pub fn gemv_cases() -> Vec<(usize, usize, usize, bool)> {
    let shapes = [(576, 576, false), (576, 192, false), (576, 1536, false), (1536, 576, false), (576, 1545, false), (576, 49_152, false), (576, 49_152, true), (4096, 4096, false), (4096, 14_336, false), (14_336, 4096, false)];
    [1, 5, 9].into_iter().flat_map(|m| shapes.map(|(k, n, t)| (m, k, n, t))).collect()
}

#[derive(Debug, Clone, Serialize)]
pub struct GemvParity {
    pub bench: &'static str,
    pub rows: usize,
    pub d_in: usize,
    pub d_out: usize,
    /// The weight given as the transpose of a row-major `[d_out, d_in]` (a tied head).
    pub transposed: bool,
    /// `floor_us`: the weight's bytes (what a product of few rows must read).
    #[serde(flatten)]
    pub measured: Measured,
}

/// A kernel against its twin: what the parity rows of products share.
#[derive(Debug, Clone, Serialize)]
pub struct Measured {
    pub dtype: &'static str,
    /// Largest |ours - the twin's| over the largest |twin's|.
    pub rel: f64,
    pub within_tolerance: bool,
    pub kernel_us: f64,
    pub reference_us: f64,
    /// The bytes the kernel must move over [`COPY_BYTES_PER_S`].
    pub floor_us: f64,
}

/// [`crate::gemv::gemv`] against burn's product on random inputs.
pub fn gemv_parity(rows: usize, d_in: usize, d_out: usize, transposed: bool, dtype: DType, device: &Device, repeats: usize) -> GemvParity {
    use crate::gemv::{gemv, gemv_reference};
    let x = Tensor::<2>::random([rows, d_in], Distribution::Normal(0.0, 1.0), device).cast(dtype);
    let normal = Distribution::Normal(0.0, 1.0 / (d_in as f64).sqrt());
    let w = match transposed {
        true => Tensor::<2>::random([d_out, d_in], normal, device).cast(dtype).transpose(),
        false => Tensor::<2>::random([d_in, d_out], normal, device).cast(dtype),
    };
    let time = |f: &dyn Fn()| host_us(device, repeats, f);
    let rel = rel_diff(gemv(x.clone(), w.clone()), gemv_reference(x.clone(), w.clone()));
    let tol = product_tolerance(dtype);
    let esize = dtype.size() as f64;
    GemvParity {
        bench: "kernel_gemv",
        rows,
        d_in,
        d_out,
        transposed,
        measured: Measured {
            dtype: dtype_name(dtype),
            rel,
            within_tolerance: rel <= tol,
            kernel_us: time(&|| drop(gemv(x.clone(), w.clone()))),
            reference_us: time(&|| drop(gemv_reference(x.clone(), w.clone()))),
            floor_us: (d_in * d_out) as f64 * esize / COPY_BYTES_PER_S * 1e6,
        },
    }
}

/// Decoding's attention, `(batch, kv_heads, rows, keys, head_dim)`: SmolLM2 (3 KV heads, 3 query
/// heads each, so 3 rows a token; 15 when verifying K = 4, 27 at K = 8) at 512, 4,096 and
/// 16,384 keys, batch 1 and 8, and Llama-3-8B (8 KV heads, 4 rows a token, head dimension 128).
pub fn attention_cases() -> Vec<(usize, usize, usize, usize, usize)> {
    let mut cases = Vec::new();
    for keys in [512, 4_096, 16_384] {
        for rows in [3, 15, 27] {
            cases.push((1, 3, rows, keys, 64));
        }
        cases.push((8, 3, 3, keys, 64));
        cases.push((1, 8, 4, keys, 128));
    }
    cases
}

#[derive(Debug, Clone, Serialize)]
pub struct AttentionParity {
    pub bench: &'static str,
    pub batch: usize,
    pub kv_heads: usize,
    pub rows: usize,
    pub keys: usize,
    pub head_dim: usize,
    /// The twin is the composite with burn's products; `floor_us`: the keys' and values' bytes
    /// (what a decode step's attention must read).
    #[serde(flatten)]
    pub measured: Measured,
}

/// [`crate::masked_attention::decode_attention`] against the same composite with burn's products
/// (scores, `-inf` where masked, the NaN-safe softmax, the values' product), each row hiding the
/// keys after its own position as decoding's steps and a verification's rows do (and, with
/// several sequences, the first hiding all).
/// `case`: `(batch, kv_heads, rows, keys, head_dim)`, as [`attention_cases`] gives them.
pub fn attention_parity(case: (usize, usize, usize, usize, usize), dtype: DType, device: &Device, repeats: usize) -> AttentionParity {
    let (batch, kv_heads, rows, keys, head_dim) = case;
    use crate::masked_attention::decode_attention;
    use crate::reduce::safe_softmax_last;
    let normal = Distribution::Normal(0.0, 1.0);
    let q = Tensor::<4>::random([batch, kv_heads, rows, head_dim], normal, device).cast(dtype);
    let k = Tensor::<4>::random([batch, kv_heads, keys, head_dim], normal, device).cast(dtype);
    let v = Tensor::<4>::random([batch, kv_heads, keys, head_dim], normal, device).cast(dtype);
    // Row r sees the keys up to `keys - rows + r`: the last row the whole cache.
    let slots = Tensor::<1, burn::tensor::Int>::arange(0..keys as i64, device).reshape([1, 1, 1, keys]);
    let last = Tensor::<1, burn::tensor::Int>::arange(0..rows as i64, device).reshape([1, 1, rows, 1]) + (keys - rows) as i64;
    let mask = slots.expand([batch, kv_heads, rows, keys]).greater(last.expand([batch, kv_heads, rows, keys]));
    // With several sequences the first hides every key, as a padding row does: its output is 0.
    let first = Tensor::<1, burn::tensor::Int>::arange(0..batch as i64, device).reshape([batch, 1, 1, 1]).lower_elem(i64::from(batch > 1));
    let mask = mask.bool_or(first.expand([batch, kv_heads, rows, keys]));
    let scale = 1.0 / (head_dim as f64).sqrt();
    let composite = || safe_softmax_last((q.clone().matmul(k.clone().swap_dims(2, 3)) * scale).mask_fill(mask.clone(), f32::NEG_INFINITY)).matmul(v.clone());
    let ours = || decode_attention(q.clone(), k.clone(), v.clone(), mask.clone());
    let rel = rel_diff(ours(), composite());
    let time = |f: &dyn Fn()| host_us(device, repeats, f);
    AttentionParity {
        bench: "kernel_attention",
        batch,
        kv_heads,
        rows,
        keys,
        head_dim,
        measured: Measured {
            dtype: dtype_name(dtype),
            rel,
            within_tolerance: rel <= product_tolerance(dtype),
            kernel_us: time(&|| drop(ours())),
            reference_us: time(&|| drop(composite())),
            floor_us: (2 * batch * kv_heads * keys * head_dim) as f64 * dtype.size() as f64 / COPY_BYTES_PER_S * 1e6,
        },
    }
}

/// Inference norms, `(rows, d)`: a decode step (1 row), a K = 8 verification (9), batch 64,
/// a 2,048-token prefill; SmolLM2's 576 channels and Llama-3-8B's 4,096.
pub fn norm_cases() -> Vec<(usize, usize)> {
    [1, 9, 64, 2_048].into_iter().flat_map(|r| [(r, 576), (r, 4_096)]).collect()
}

#[derive(Debug, Clone, Serialize)]
pub struct NormParity {
    pub bench: &'static str,
    pub rows: usize,
    pub d: usize,
    /// Weight groups of a gated norm; 0 for a plain RMSNorm.
    pub groups: usize,
    /// `floor_us`: the rows read (and the gate) and written, and the weight read.
    #[serde(flatten)]
    pub measured: Measured,
}

/// Mamba-2's gated norms, `(rows, d, groups)`: a row per head and token, SmolLM2's hybrid (9
/// heads of 64) at 1, 5 and 2,048 tokens, and Llama-3-8B's Mamba layer (32 heads of 128).
pub fn gated_norm_cases() -> Vec<(usize, usize, usize)> {
    [1, 5, 2_048].into_iter().flat_map(|t| [(9 * t, 64, 9), (32 * t, 128, 32)]).collect()
}

/// [`crate::rms_norm::rms_norm`] (`groups` 0: ungated) or [`crate::rms_norm::gated_rms_norm`]
/// against its tensor-ops twin on random rows.
pub fn norm_parity(rows: usize, d: usize, groups: usize, dtype: DType, device: &Device, repeats: usize) -> NormParity {
    use crate::rms_norm::{gated_rms_norm, gated_rms_norm_reference, rms_norm, rms_norm_reference};
    let x = Tensor::<2>::random([rows, d], Distribution::Normal(0.0, 2.0), device).cast(dtype);
    let z = Tensor::<2>::random([rows, d], Distribution::Normal(0.0, 1.0), device).cast(dtype);
    let w = Tensor::<1>::random([groups.max(1) * d], Distribution::Normal(1.0, 0.2), device).cast(dtype);
    let ours = || if groups == 0 { rms_norm(x.clone(), w.clone(), 1e-5) } else { gated_rms_norm(x.clone(), z.clone(), w.clone(), 1e-5) };
    let twin = || if groups == 0 { rms_norm_reference(x.clone(), w.clone(), 1e-5) } else { gated_rms_norm_reference(x.clone(), z.clone(), w.clone(), 1e-5) };
    let rel = rel_diff(ours(), twin());
    let time = |f: &dyn Fn()| host_us(device, repeats, f);
    let reads = if groups == 0 { 2 * rows + 1 } else { 3 * rows + groups };
    NormParity {
        bench: "kernel_norm",
        rows,
        d,
        groups,
        measured: Measured {
            dtype: dtype_name(dtype),
            rel,
            within_tolerance: rel <= tolerance(dtype),
            kernel_us: time(&|| drop(ours())),
            reference_us: time(&|| drop(twin())),
            floor_us: (reads * d) as f64 * dtype.size() as f64 / COPY_BYTES_PER_S * 1e6,
        },
    }
}

/// Decoding's reductions: `(rows, axis)` of the greedy argmax over SmolLM2's vocabulary (batch 1
/// and 64), the attention softmax at batch 1 over 512 and 16,384 keys (9 query heads), RMSNorm
/// at batch 1 and 64, and a 512-token prefill's softmax rows.
pub fn reduce_cases() -> Vec<(usize, usize)> {
    vec![(1, 49_152), (64, 49_152), (9, 512), (9, 16_384), (1, 576), (64, 576), (4_608, 512)]
}

#[derive(Debug, Clone, Serialize)]
pub struct ReduceParity {
    pub bench: &'static str,
    pub rows: usize,
    pub axis: usize,
    pub op: &'static str,
    pub dtype: &'static str,
    /// Largest |ours - burn's| over the largest |burn's|; for argmax, over the values at the
    /// chosen indices (equal values may sit at different indices).
    pub rel: f64,
    pub within_tolerance: bool,
    pub kernel_us: f64,
    pub reference_us: f64,
}

/// Each of [`crate::reduce`]'s operations against burn's own on random rows.
pub fn reduce_parity(rows: usize, axis: usize, dtype: DType, device: &Device, repeats: usize) -> Vec<ReduceParity> {
    use crate::reduce::{argmax_last, reduce_last, reduce_last_reference, safe_softmax_last, RowReduce};
    let x = Tensor::<2>::random([rows, axis], Distribution::Normal(0.0, 1.0), device).cast(dtype);
    let time = |f: &dyn Fn()| host_us(device, repeats, f);
    let row = |op: &'static str, rel: f64, kernel_us: f64, reference_us: f64| ReduceParity {
        bench: "kernel_reduce",
        rows,
        axis,
        op,
        dtype: dtype_name(dtype),
        rel,
        within_tolerance: rel <= tolerance(dtype),
        kernel_us,
        reference_us,
    };
    let mut out = Vec::new();
    for (op, name) in [(RowReduce::Sum, "sum"), (RowReduce::Max, "max"), (RowReduce::Mean, "mean")] {
        let rel = rel_diff(reduce_last(x.clone(), op), reduce_last_reference(x.clone(), op));
        out.push(row(name, rel, time(&|| drop(reduce_last(x.clone(), op))), time(&|| drop(reduce_last_reference(x.clone(), op)))));
    }
    let at = |i: Tensor<2, burn::tensor::Int>| x.clone().gather(1, i);
    let rel = rel_diff(at(argmax_last(x.clone())), at(x.clone().argmax(1)));
    out.push(row("argmax", rel, time(&|| drop(argmax_last(x.clone()))), time(&|| drop(x.clone().argmax(1)))));
    let burns = |t: Tensor<2>| burn::tensor::activation::softmax(t, 1);
    let rel = rel_diff(safe_softmax_last(x.clone()), burns(x.clone()));
    out.push(row("softmax", rel, time(&|| drop(safe_softmax_last(x.clone()))), time(&|| drop(burns(x.clone())))));
    out
}

/// The SSD scan's inside-the-chunk attention, `(batch, seq, heads, n, p, chunk)`: SmolLM2's
/// hybrid at its distillation micro-batch (16 x 2,048, 9 heads of 64, d_state 64), a
/// Llama-3-8B-shaped layer (32 heads of 128, d_state 128), a d_state of 16, and short or ragged
/// chunks (a prefill's length as its only chunk; chunks that are no multiple of the kernel's rows).
pub fn ssd_cases() -> Vec<(usize, usize, usize, usize, usize, usize)> {
    vec![(16, 2_048, 9, 64, 64, 256), (2, 2_048, 32, 128, 128, 256), (4, 1_024, 8, 16, 64, 256), (3, 300, 3, 64, 64, 100), (2, 37, 2, 32, 16, 37)]
}

/// Which form of the SSD kernel a parity row checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SsdForm {
    /// [`crate::chunk_scan::chunk_attend`] forward: the scan's inside-the-chunk part.
    Attend,
    /// `chunk_attend` reversed: what the backward runs for `dk` and `dv`.
    Reverse,
    /// [`crate::chunk_scan::chunk_scan`]: with the entering states read out, the scan's output.
    Scan,
    /// [`crate::chunk_scan::chunk_states`] of `v` and `k`: each chunk's state contribution.
    States,
    /// [`crate::chunk_scan::pass_states`] with `e` as each chunk's contribution and its first
    /// chunk's as the entering state, `g`'s last position of each chunk as its decay.
    Passing,
}

#[derive(Debug, Clone, Serialize)]
pub struct SsdParity {
    pub bench: &'static str,
    /// `[batch, seq, heads, n, p]`.
    pub shape: [usize; 5],
    pub chunk: usize,
    pub form: SsdForm,
    /// The gradients' largest relative difference (`q`, `k`, `v`, `g`, and `e` for the scan;
    /// the op's own backward, which runs the kernel three times, against autodiff of the twin);
    /// f32 only, else NaN.
    pub grad_rel: f64,
    /// The arithmetic the kernel does (the causal half of each chunk's scores and products)
    /// over its time, in TFLOP/s.
    pub tflops: f64,
    /// `floor_us`: the inputs read and the output written once.
    #[serde(flatten)]
    pub measured: Measured,
}

/// The SSD kernel in one of its forms against its twin, forward (and, in f32, backward), at the
/// products' tolerance: the twin's products may run on TF32 tensor cores.
pub fn ssd_parity(case: (usize, usize, usize, usize, usize, usize), form: SsdForm, dtype: DType, device: &Device, repeats: usize) -> SsdParity {
    let (bs, l, h, n, p, chunk) = case;
    let normal = Distribution::Normal(0.0, 1.0);
    // `g` as the scan makes it: a running sum of dt·A (dt after softplus, A in [-16, -1]) inside
    // each chunk.
    let steps = Tensor::<4>::random([bs, l / chunk, chunk, h], Distribution::Uniform(-1.6, -0.001), device);
    let g = steps.cumsum(2).reshape([bs, l, h]).cast(dtype);
    let q = Tensor::<4>::random([bs, l, h, n], normal, device).cast(dtype);
    let k = Tensor::<4>::random([bs, l, h, n], normal, device).cast(dtype);
    let v = Tensor::<4>::random([bs, l, h, p], normal, device).cast(dtype);
    let e = Tensor::<5>::random([bs, l / chunk, h, p, n], normal, device).cast(dtype);
    let inputs = SsdInputs { q, k, v, g, e, chunk, form };
    let rel = rel_diff(inputs.run(false), inputs.run(true));
    let grad_rel = if dtype == DType::F32 { inputs.grad_rel() } else { f64::NAN };
    let time = |f: &dyn Fn()| host_us(device, repeats, f);
    let kernel_us = time(&|| drop(inputs.run(false)));
    let seen = (chunk * (chunk + 1) / 2 * (l / chunk)) as f64;
    let read_out = if form == SsdForm::Scan { (l * 2 * n * p) as f64 } else { 0.0 };
    let nc = l / chunk;
    let flops = match form {
        SsdForm::States => (l * 2 * n * p) as f64,
        SsdForm::Passing => (nc * 2 * n * p) as f64,
        _ => seen * (2 * n + 2 * p) as f64 + read_out,
    };
    // Read once and written once: the inputs and the output; for the passing, the contributions
    // and the entering state in, every boundary's state out.
    let elements = if form == SsdForm::Passing { bs * h * (2 * nc + 2) * p * n } else { bs * l * h * (2 * n + 2 * p + 1) };
    let tflops = (bs * h) as f64 * flops / kernel_us / 1e6;
    SsdParity {
        bench: "kernel_ssd",
        shape: [bs, l, h, n, p],
        chunk,
        form,
        grad_rel,
        tflops,
        measured: Measured {
            dtype: dtype_name(dtype),
            rel,
            within_tolerance: rel <= product_tolerance(dtype) && (dtype != DType::F32 || grad_rel <= product_tolerance(dtype)),
            kernel_us,
            reference_us: time(&|| drop(inputs.run(true))),
            floor_us: elements as f64 * dtype.size() as f64 / COPY_BYTES_PER_S * 1e6,
        },
    }
}

struct SsdInputs {
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    g: Tensor<3>,
    e: Tensor<5>,
    chunk: usize,
    form: SsdForm,
}

impl SsdInputs {
    /// The form on these inputs: the kernel's path, or the twin.
    fn run(&self, twin: bool) -> Tensor<4> {
        self.run_on(self.q.clone(), self.k.clone(), self.v.clone(), self.g.clone(), self.e.clone(), twin)
    }

    fn run_on(&self, q: Tensor<4>, k: Tensor<4>, v: Tensor<4>, g: Tensor<3>, e: Tensor<5>, twin: bool) -> Tensor<4> {
        use crate::chunk_scan::{chunk_attend, chunk_attend_reference, chunk_scan, chunk_scan_reference, chunk_states, chunk_states_reference, pass_states_custom, pass_states_reference};
        let reverse = self.form == SsdForm::Reverse;
        let [bs, l, h, n] = k.dims();
        let flat = |s: Tensor<5>| s.reshape([bs, l / self.chunk * h, v.dims()[3], n]);
        let passed = |pass: fn(Tensor<5>, Tensor<3>, Tensor<4>) -> Tensor<5>| {
            let [_, nc, h, p, n] = e.dims();
            let decay = g.clone().reshape([bs, nc, self.chunk, h]).narrow(2, self.chunk - 1, 1).reshape([bs, nc, h]);
            let state = e.clone().narrow(1, 0, 1).reshape([bs, h, p, n]);
            pass(e.clone(), decay, state).reshape([bs, (nc + 1) * h, p, n])
        };
        match (self.form, twin) {
            (SsdForm::Passing, false) => passed(pass_states_custom),
            (SsdForm::Passing, true) => passed(pass_states_reference),
            (SsdForm::States, false) => flat(chunk_states(v.clone(), k, g, self.chunk)),
            (SsdForm::States, true) => flat(chunk_states_reference(v.clone(), k, g, self.chunk)),
            (SsdForm::Scan, false) => chunk_scan(q, k, v, g, e, self.chunk),
            (SsdForm::Scan, true) => chunk_scan_reference(q, k, v, g, e, self.chunk),
            (_, false) => chunk_attend(q, k, v, g, self.chunk, reverse),
            (_, true) => chunk_attend_reference(q, k, v, g, self.chunk, reverse),
        }
    }

    /// The largest relative difference over the gradients of a random weighting of the output.
    fn grad_rel(&self) -> f64 {
        let device = self.q.device().autodiff();
        let w = Tensor::<4>::random(self.run(true).dims(), Distribution::Normal(0.0, 1.0), &device);
        let grads = |twin: bool| {
            let on = |t: &Tensor<4>| Tensor::<4>::from_data(t.clone().into_data(), &device).require_grad();
            let (q, k, v) = (on(&self.q), on(&self.k), on(&self.v));
            let g = Tensor::<3>::from_data(self.g.clone().into_data(), &device).require_grad();
            let e = Tensor::<5>::from_data(self.e.clone().into_data(), &device).require_grad();
            let all = (self.run_on(q.clone(), k.clone(), v.clone(), g.clone(), e.clone(), twin) * w.clone()).sum().backward();
            let d = |t: &Tensor<4>| t.grad(&all).expect("a gradient").reshape([-1]);
            let d_g = || g.grad(&all).expect("a gradient").reshape([-1]);
            let d_e = || e.grad(&all).expect("a gradient").reshape([-1]);
            match self.form {
                SsdForm::Passing => vec![d_e(), d_g()],
                SsdForm::States => vec![d(&k), d(&v), d_g()],
                SsdForm::Scan => vec![d(&k), d(&v), d_g(), d(&q), d_e()],
                SsdForm::Attend | SsdForm::Reverse => vec![d(&k), d(&v), d_g(), d(&q)],
            }
        };
        let (ours, twin) = (grads(false), grads(true));
        ours.into_iter().zip(twin).map(|(a, b)| rel_diff(a, b)).fold(0.0, |m, r| if r.is_nan() || m.is_nan() { f64::NAN } else { m.max(r) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ssd_harness_checks_values_and_gradients_on_the_cpu() {
        for form in [SsdForm::Attend, SsdForm::Reverse, SsdForm::Scan, SsdForm::States, SsdForm::Passing] {
            let r = ssd_parity((2, 12, 3, 16, 16, 4), form, DType::F32, &Device::flex(), 2);
            // On the CPU both sides are the twin, but for the passing: its op walks the chunks
            // one at a time where the twin takes them all at once.
            let same = if form == SsdForm::Passing { r.measured.rel < 1e-6 } else { r.measured.rel == 0.0 };
            assert!(r.measured.within_tolerance && same && r.grad_rel < 1e-5, "{r:?}");
        }
    }

    #[test]
    fn the_gemv_harness_runs_on_the_cpu_where_both_sides_are_burns() {
        for transposed in [false, true] {
            let r = gemv_parity(3, 70, 45, transposed, DType::F32, &Device::flex(), 2);
            assert!(r.measured.within_tolerance && r.measured.rel <= 1e-6, "{r:?}");
        }
    }

    #[test]
    fn the_attention_harness_runs_on_the_cpu_where_both_sides_are_burns() {
        let r = attention_parity((2, 3, 5, 40, 16), DType::F32, &Device::flex(), 2);
        assert!(r.measured.within_tolerance && r.measured.rel <= 1e-5, "{r:?}");
    }

    #[test]
    fn the_norm_harness_runs_on_the_cpu_where_both_sides_are_the_twin() {
        for groups in [0, 3] {
            let r = norm_parity(6, 70, groups, DType::F32, &Device::flex(), 2);
            assert!(r.measured.within_tolerance && r.measured.rel == 0.0, "{r:?}");
        }
    }

    #[test]
    fn the_reduce_harness_runs_on_the_cpu_where_both_sides_are_burns() {
        for r in reduce_parity(3, 70, DType::F32, &Device::flex(), 2) {
            assert!(r.within_tolerance && r.rel <= 1e-6, "{r:?}");
        }
    }

    #[test]
    fn the_harness_runs_on_the_cpu_where_both_sides_are_the_reference() {
        let case = StepCase { batch: 2, heads: 4, kv_heads: 2, head_dim: 8, d_state: 4 };
        let r = mamba2_step_parity(case, DType::F32, &Device::flex(), 2);
        assert!(r.within_tolerance && r.y_rel == 0.0 && r.state_rel == 0.0, "{r:?}");
        assert!(r.bytes > 0.0 && r.kernel_us > 0.0 && r.reference_us > 0.0);
    }

    #[test]
    fn the_projection_harness_differentiates_on_the_cpu() {
        let case = ProjectionCase { rows: 5, d_in: 4, d_out: 3 };
        let r = projection_parity(case, DType::F32, &Device::flex(), ProductKernels::TUNED);
        assert!(r.within_tolerance && r.y_rel == 0.0 && r.x_grad_rel == 0.0 && r.w_grad_rel == 0.0, "{r:?}");
    }

    #[test]
    fn the_steps_harness_runs_on_the_cpu() {
        let case = StepCase { batch: 2, heads: 4, kv_heads: 2, head_dim: 8, d_state: 4 };
        for steps in STEPS {
            let r = mamba2_steps_parity(case, steps, DType::F32, &Device::flex(), 1);
            assert!(r.within_tolerance && r.y_rel == 0.0 && r.snapshot_rel == 0.0 && r.history_rel == 0.0 && r.same_rounding, "{r:?}");
            assert_eq!((r.snap_at, r.emit_from), (steps / 2, steps / 2));
        }
    }
}
