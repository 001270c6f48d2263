//! The fused decode step as one CubeCL kernel, launched through burn's backend extension (which
//! also queues it in burn's fusion stream). One unit per `(batch, head, row of the head)`: it
//! convolves its `x` channel and, redundantly across the head's rows, the head's `B` and `C`
//! channels (a few hundred multiply-adds that stay in cache), then walks its state row.
//! Accumulation is f32 whatever the model dtype.

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

/// Units per cube.
const CUBE_UNITS: u32 = 128;

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
        let rows = (bs * h * p) as u32;
        let count = CubeCount::Static(rows.div_ceil(CUBE_UNITS), 1, 1);
        // SAFETY: every index the kernel forms is below the sizes checked by `rows` and the
        // contiguous shapes above, which `dims` and the checkpoint layout fix.
        unsafe {
            mamba2_step_kernel::launch_unchecked(
                &client,
                count,
                CubeDim::new_1d(CUBE_UNITS),
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
                rows as usize,
                h,
                kv,
                p,
                n,
                k,
                burn::backend::cubecl::dtype_to_storage_type(dtype),
            );
        }
        (y, state_out)
    }
}

/// Contiguous layouts: `padded [bs, K, C]`, `conv_weight [C, K]`, `dt [bs, h]`, `state [bs, h, p, n]`.
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
    rows: usize,
    #[comptime] h: usize,
    #[comptime] kv: usize,
    #[comptime] p: usize,
    #[comptime] n: usize,
    #[comptime] k: usize,
    #[define(F)] _dtype: ElemType,
) {
    let row = ABSOLUTE_POS;
    if row >= rows {
        terminate!();
    }
    let channels = kv * p + kv * n + h * n;
    let pi = row % p;
    let hi = (row / p) % h;
    let bi = row / (p * h);
    let g = hi / (h / kv);

    let x = conv_silu::<F>(padded, conv_weight, conv_bias, bi, g * p + pi, channels, k);
    let dt_v = softplus_f32(f32::cast_from(dt[bi * h + hi]) + f32::cast_from(dt_bias[hi]));
    let decay = (dt_v * a[hi]).exp();
    let dx = dt_v * x;
    let at = row * n;
    let mut acc = f32::cast_from(d[hi]) * x;
    for ni in 0..n {
        let b = conv_silu::<F>(padded, conv_weight, conv_bias, bi, kv * p + g * n + ni, channels, k);
        let c = conv_silu::<F>(padded, conv_weight, conv_bias, bi, kv * (p + n) + hi * n + ni, channels, k);
        let s = state[at + ni] * decay + dx * b;
        state_out[at + ni] = s;
        acc += s * c;
    }
    y[row] = acc;
}

/// `silu(bias + Σ_j w[ch, j] · padded[bi, j, ch])` in f32, rounded to `F` after the sum as the
/// reference's conv output is.
#[cube]
fn conv_silu<F: Float>(padded: &Tensor<F>, conv_weight: &Tensor<F>, conv_bias: &Tensor<F>, bi: usize, ch: usize, channels: usize, #[comptime] k: usize) -> f32 {
    let mut sum = f32::cast_from(conv_bias[ch]);
    #[unroll]
    for j in 0..k {
        sum += f32::cast_from(conv_weight[ch * k + j]) * f32::cast_from(padded[(bi * k + j) * channels + ch]);
    }
    let v = f32::cast_from(F::cast_from(sum));
    let s = v / (1.0 + (-v).exp());
    f32::cast_from(F::cast_from(s))
}

#[cube]
fn softplus_f32(v: f32) -> f32 {
    // torch.nn.functional.softplus with threshold 20.
    if v > 20.0 { v } else { (1.0 + v.exp()).ln() }
}
