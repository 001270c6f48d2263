//! The fused decode step as one CubeCL kernel, launched through burn's backend extension (which
//! also queues it in burn's fusion stream). A cube holds `ROWS` rows of one head; each row is
//! walked by `LANES` units along the state dimension, so a warp reads consecutive state entries
//! (one unit per row, walking it alone, read with a stride of `n` and reached 10% of the H200's
//! bandwidth). The cube's units first convolve the head's `B` and `C` channels together into
//! shared memory, each channel once per cube rather than once per row; each row's `y` is the sum
//! of its lanes' partials through shared memory. Accumulation is f32 whatever the model dtype.

use burn::backend::fusion::custom::TensorSpec;
use burn::backend::tensor::FloatTensor;
use burn::backend::{backend_extension, Backend, Dispatch, TensorMetadata};
use burn::tensor::{DType, Shape, Tensor as BurnTensor};
use burn_cubecl::cubecl;
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::ops::numeric::empty_device_contiguous_dtype;
use burn_cubecl::CubeBackend;
use cubecl::prelude::*;

use super::{Mamba2StepWeights, StepOut};

/// Units per cube, at most.
const CUBE_UNITS: usize = 256;

/// Whether the kernel takes this layer: its lanes must split `n` evenly.
pub fn supports(w: &Mamba2StepWeights) -> bool {
    w.d_state % w.d_state.min(32) == 0
}

/// `(lanes, rows)` of a cube: lanes along `n` (a warp's width, or `n` when smaller), as many rows
/// of the head as fit.
pub(crate) fn cube_shape(p: usize, n: usize) -> (usize, usize) {
    let lanes = n.min(32);
    let mut rows = (CUBE_UNITS / lanes).min(p);
    while p % rows != 0 {
        rows -= 1;
    }
    (lanes, rows)
}

pub fn mamba2_step(xbc: BurnTensor<2>, dt: BurnTensor<2>, window: BurnTensor<3>, state: BurnTensor<4>, w: &Mamba2StepWeights) -> StepOut {
    let k = w.conv_weight.dims()[1];
    let dtype = xbc.dtype();
    let padded = BurnTensor::cat(vec![window, xbc.unsqueeze_dim::<3>(1)], 1); // [bs, K, C]
    let window = padded.clone().narrow(1, 1, k - 1);
    let same = |t: &BurnTensor<1>| t.clone().cast(dtype).into_dispatch();
    let (y, state) = <Dispatch as Mamba2StepOps>::mamba2_step(
        padded.into_dispatch(),
        w.conv_weight.clone().cast(dtype).into_dispatch(),
        same(&w.conv_bias),
        dt.cast(dtype).into_dispatch(),
        same(&w.dt_bias),
        w.a.clone().cast(DType::F32).into_dispatch(),
        same(&w.d),
        state.cast(DType::F32).into_dispatch(),
        [w.heads, w.kv_heads, w.head_dim, w.d_state],
    );
    StepOut { y: BurnTensor::from_dispatch(y), state: BurnTensor::from_dispatch(state), window }
}

#[backend_extension(Cube, Fusion)]
pub trait Mamba2StepOps: Backend {
    /// `dims` = `[heads, kv_heads, head_dim, d_state]`; returns `(y, state)`, both f32.
    #[fusion(meta = step_meta)]
    #[allow(clippy::too_many_arguments)]
    fn mamba2_step(
        padded: FloatTensor<Self>,
        conv_weight: FloatTensor<Self>,
        conv_bias: FloatTensor<Self>,
        dt: FloatTensor<Self>,
        dt_bias: FloatTensor<Self>,
        a: FloatTensor<Self>,
        d: FloatTensor<Self>,
        state: FloatTensor<Self>,
        dims: [usize; 4],
    ) -> (FloatTensor<Self>, FloatTensor<Self>);
}

#[allow(clippy::too_many_arguments)]
fn step_meta(
    padded: &TensorSpec,
    _conv_weight: &TensorSpec,
    _conv_bias: &TensorSpec,
    _dt: &TensorSpec,
    _dt_bias: &TensorSpec,
    _a: &TensorSpec,
    _d: &TensorSpec,
    state: &TensorSpec,
    dims: &[usize; 4],
) -> (TensorSpec, TensorSpec) {
    let [h, _, p, _] = *dims;
    (TensorSpec::new(Shape::new([padded.shape[0], h, p]), DType::F32), state.clone())
}

impl Mamba2StepOps for CubeBackend {
    fn mamba2_step(
        padded: FloatTensor<Self>,
        conv_weight: FloatTensor<Self>,
        conv_bias: FloatTensor<Self>,
        dt: FloatTensor<Self>,
        dt_bias: FloatTensor<Self>,
        a: FloatTensor<Self>,
        d: FloatTensor<Self>,
        state: FloatTensor<Self>,
        dims: [usize; 4],
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let [h, kv, p, n] = dims;
        let [bs, k, _] = padded.shape().dims::<3>();
        let (client, device, dtype) = (padded.client.clone(), padded.device.clone(), padded.dtype);
        let [padded, conv_weight, conv_bias, dt, dt_bias, a, d, state] =
            [padded, conv_weight, conv_bias, dt, dt_bias, a, d, state].map(into_contiguous);
        let y = empty_device_contiguous_dtype(client.clone(), device.clone(), Shape::new([bs, h, p]), DType::F32);
        let state_out = empty_device_contiguous_dtype(client.clone(), device, state.shape(), DType::F32);
        let (lanes, rows) = cube_shape(p, n);
        let count = CubeCount::Static((bs * h * p / rows) as u32, 1, 1);
        // SAFETY: every index the kernel forms is below the contiguous shapes above, which `dims`
        // and the checkpoint layout fix; `rows` divides `p`, and `lanes` divides `n` (both
        // powers of two in every Mamba-2 checkpoint; `supports` checks).
        unsafe {
            mamba2_step_kernel::launch_unchecked(
                &client,
                count,
                CubeDim::new_2d(lanes as u32, rows as u32),
                padded.into_tensor_arg(),
                conv_weight.into_tensor_arg(),
                conv_bias.into_tensor_arg(),
                dt.into_tensor_arg(),
                dt_bias.into_tensor_arg(),
                a.into_tensor_arg(),
                d.into_tensor_arg(),
                state.into_tensor_arg(),
                y.clone().into_tensor_arg(),
                state_out.clone().into_tensor_arg(),
                h,
                kv,
                p,
                n,
                k,
                lanes,
                rows,
                burn::backend::cubecl::dtype_to_storage_type(dtype),
            );
        }
        (y, state_out)
    }
}

/// Contiguous layouts: `padded [bs, K, C]`, `conv_weight [C, K]`, `dt [bs, h]`, `state [bs, h, p, n]`.
/// Cube `CUBE_POS` holds rows `chunk·rows ..` of head `(bi, hi)`; unit `(lane, r)` walks state
/// entries `lane, lane + lanes, ..` of its row `r`.
#[cube(launch_unchecked)]
#[allow(clippy::too_many_arguments)]
fn mamba2_step_kernel<F: Float>(
    padded: &Tensor<F>,
    conv_weight: &Tensor<F>,
    conv_bias: &Tensor<F>,
    dt: &Tensor<F>,
    dt_bias: &Tensor<F>,
    a: &Tensor<f32>,
    d: &Tensor<F>,
    state: &Tensor<f32>,
    y: &mut Tensor<f32>,
    state_out: &mut Tensor<f32>,
    #[comptime] h: usize,
    #[comptime] kv: usize,
    #[comptime] p: usize,
    #[comptime] n: usize,
    #[comptime] k: usize,
    #[comptime] lanes: usize,
    #[comptime] rows: usize,
    #[define(F)] _dtype: ElemType,
) {
    let channels = kv * p + kv * n + h * n;
    let lane = UNIT_POS_X as usize;
    let r = UNIT_POS_Y as usize;
    let hb = CUBE_POS / (p / rows); // bi * h + hi
    let hi = hb % h;
    let bi = hb / h;
    let g = hi / (h / kv);
    let pi = (CUBE_POS % (p / rows)) * rows + r;

    // bc[0..n] = B of the head's group, bc[n..2n] = C of the head; xs = this cube's x channels.
    let mut bc = Shared::<[f32]>::new_slice(2 * n);
    let mut xs = Shared::<[f32]>::new_slice(rows);
    let mut partial = Shared::<[f32]>::new_slice(rows * lanes);
    let unit = r * lanes + lane;
    for j in 0..(2 * n).div_ceil(rows * lanes) {
        let i = j * rows * lanes + unit;
        if i < n {
            bc[i] = conv_silu::<F>(padded, conv_weight, conv_bias, bi * k, kv * p + g * n + i, channels, k);
        } else if i < 2 * n {
            bc[i] = conv_silu::<F>(padded, conv_weight, conv_bias, bi * k, kv * (p + n) + hi * n + (i - n), channels, k);
        }
    }
    if lane == 0 {
        xs[r] = conv_silu::<F>(padded, conv_weight, conv_bias, bi * k, g * p + pi, channels, k);
    }
    sync_cube();

    let x = xs[r];
    let dt_v = softplus_f32(f32::cast_from(dt[bi * h + hi]) + f32::cast_from(dt_bias[hi]));
    let decay = (dt_v * a[hi]).exp();
    let dx = dt_v * x;
    let at = (hb * p + pi) * n + lane;
    // All loads before any store: the compiler cannot tell `state_out` from `state`, so an
    // interleaved loop would wait out one memory latency per entry.
    let mut old = Array::<f32>::new(n / lanes);
    #[unroll]
    for j in 0..n / lanes {
        old[j] = state[at + j * lanes];
    }
    let mut acc = 0.0f32;
    #[unroll]
    for j in 0..n / lanes {
        let ni = j * lanes + lane;
        let s = old[j] * decay + dx * bc[ni];
        state_out[at + j * lanes] = s;
        acc += s * bc[n + ni];
    }
    partial[unit] = acc;
    sync_cube();
    if lane == 0 {
        let mut sum = f32::cast_from(d[hi]) * x;
        for l in 0..lanes {
            sum += partial[r * lanes + l];
        }
        y[hb * p + pi] = sum;
    }
}

/// `silu(bias + Σ_j w[ch, j] · padded[row0 + j, ch])` in f32 (`padded` seen as rows of
/// `channels`), rounded to `F` after the sum as the reference's conv output is.
#[cube]
pub(crate) fn conv_silu<F: Float>(padded: &Tensor<F>, conv_weight: &Tensor<F>, conv_bias: &Tensor<F>, row0: usize, ch: usize, channels: usize, #[comptime] k: usize) -> f32 {
    let mut sum = f32::cast_from(conv_bias[ch]);
    #[unroll]
    for j in 0..k {
        sum += f32::cast_from(conv_weight[ch * k + j]) * f32::cast_from(padded[(row0 + j) * channels + ch]);
    }
    let v = f32::cast_from(F::cast_from(sum));
    let s = v / (1.0 + (-v).exp());
    f32::cast_from(F::cast_from(s))
}

#[cube]
pub(crate) fn softplus_f32(v: f32) -> f32 {
    // torch.nn.functional.softplus with threshold 20.
    if v > 20.0 { v } else { (1.0 + v.exp()).ln() }
}
