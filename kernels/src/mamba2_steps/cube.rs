//! The steps as one CubeCL kernel, laid out as the single step's (`crate::mamba2_step`'s cube
//! module): a cube holds `rows` rows of one head, each row walked by `lanes` units along the
//! state. The difference is time: each unit keeps its state entries in registers across all the
//! steps, so the state is read once and written once (at `snap_at`), and each step's `B`, `C` and
//! `x` convolutions go through shared memory as in the single step.

use burn::backend::fusion::custom::TensorSpec;
use burn::backend::tensor::FloatTensor;
use burn::backend::{backend_extension, Backend, Dispatch, TensorMetadata};
use burn::tensor::{DType, Shape, Tensor as BurnTensor};
use burn_cubecl::cubecl;
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::ops::numeric::empty_device_contiguous_dtype;
use burn_cubecl::CubeBackend;
use cubecl::prelude::*;

use super::StepsOut;
use crate::mamba2_step::cube::{conv_silu, cube_shape, softplus_f32};
use crate::Mamba2StepWeights;

pub fn mamba2_steps(padded: BurnTensor<3>, dt: BurnTensor<3>, state: BurnTensor<4>, w: &Mamba2StepWeights, snap_at: usize, emit_from: usize) -> StepsOut {
    let dtype = padded.dtype();
    let same = |t: &BurnTensor<1>| t.clone().cast(dtype).into_dispatch();
    let (y, snapshot) = <Dispatch as Mamba2StepsOps>::mamba2_steps(
        padded.into_dispatch(),
        w.conv_weight.clone().cast(dtype).into_dispatch(),
        same(&w.conv_bias),
        dt.cast(dtype).into_dispatch(),
        same(&w.dt_bias),
        w.a.clone().cast(DType::F32).into_dispatch(),
        same(&w.d),
        state.cast(DType::F32).into_dispatch(),
        [w.heads, w.kv_heads, w.head_dim, w.d_state, snap_at, emit_from],
    );
    StepsOut { y: BurnTensor::from_dispatch(y), snapshot: BurnTensor::from_dispatch(snapshot) }
}

#[backend_extension(Cube, Fusion)]
pub trait Mamba2StepsOps: Backend {
    /// `dims` = `[heads, kv_heads, head_dim, d_state, snap_at, emit_from]`; returns
    /// `(y, snapshot)`, both f32.
    #[fusion(meta = steps_meta)]
    #[allow(clippy::too_many_arguments)]
    fn mamba2_steps(
        padded: FloatTensor<Self>,
        conv_weight: FloatTensor<Self>,
        conv_bias: FloatTensor<Self>,
        dt: FloatTensor<Self>,
        dt_bias: FloatTensor<Self>,
        a: FloatTensor<Self>,
        d: FloatTensor<Self>,
        state: FloatTensor<Self>,
        dims: [usize; 6],
    ) -> (FloatTensor<Self>, FloatTensor<Self>);
}

#[allow(clippy::too_many_arguments)]
fn steps_meta(
    _padded: &TensorSpec,
    _conv_weight: &TensorSpec,
    _conv_bias: &TensorSpec,
    dt: &TensorSpec,
    _dt_bias: &TensorSpec,
    _a: &TensorSpec,
    _d: &TensorSpec,
    state: &TensorSpec,
    dims: &[usize; 6],
) -> (TensorSpec, TensorSpec) {
    let [h, _, p, _, _, emit_from] = *dims;
    let (bs, steps) = (dt.shape[0], dt.shape[1]);
    (TensorSpec::new(Shape::new([bs, steps - emit_from, h, p]), DType::F32), state.clone())
}

impl Mamba2StepsOps for CubeBackend {
    fn mamba2_steps(
        padded: FloatTensor<Self>,
        conv_weight: FloatTensor<Self>,
        conv_bias: FloatTensor<Self>,
        dt: FloatTensor<Self>,
        dt_bias: FloatTensor<Self>,
        a: FloatTensor<Self>,
        d: FloatTensor<Self>,
        state: FloatTensor<Self>,
        dims: [usize; 6],
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let [h, kv, p, n, snap_at, emit_from] = dims;
        let [bs, steps, _] = dt.shape().dims::<3>();
        let len = padded.shape().dims::<3>()[1];
        let k = conv_weight.shape().dims::<2>()[1];
        let (client, device, dtype) = (padded.client.clone(), padded.device.clone(), padded.dtype);
        let [padded, conv_weight, conv_bias, dt, dt_bias, a, d, state] =
            [padded, conv_weight, conv_bias, dt, dt_bias, a, d, state].map(into_contiguous);
        let y = empty_device_contiguous_dtype(client.clone(), device.clone(), Shape::new([bs, steps - emit_from, h, p]), DType::F32);
        let snapshot = empty_device_contiguous_dtype(client.clone(), device, state.shape(), DType::F32);
        let (lanes, rows) = cube_shape(p, n);
        let count = CubeCount::Static((bs * h * p / rows) as u32, 1, 1);
        // SAFETY: as the single step's launch: indices stay inside the contiguous shapes above
        // (`len = K - 1 + steps` rows of `padded` per batch), `rows` divides `p`, `lanes`
        // divides `n` (`kernel_takes` checks).
        unsafe {
            mamba2_steps_kernel::launch_unchecked(
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
                snapshot.clone().into_tensor_arg(),
                steps,
                len,
                snap_at,
                emit_from,
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
        (y, snapshot)
    }
}

/// Contiguous layouts: `padded [bs, len, C]`, `conv_weight [C, K]`, `dt [bs, steps, h]`,
/// `state` and `snapshot [bs, h, p, n]`, `y [bs, steps - emit_from, h, p]`.
#[cube(launch_unchecked)]
#[allow(clippy::too_many_arguments)]
fn mamba2_steps_kernel<F: Float>(
    padded: &Tensor<F>,
    conv_weight: &Tensor<F>,
    conv_bias: &Tensor<F>,
    dt: &Tensor<F>,
    dt_bias: &Tensor<F>,
    a: &Tensor<f32>,
    d: &Tensor<F>,
    state: &Tensor<f32>,
    y: &mut Tensor<f32>,
    snapshot: &mut Tensor<f32>,
    steps: usize,
    len: usize,
    snap_at: usize,
    emit_from: usize,
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
    let unit = r * lanes + lane;
    let at = (hb * p + pi) * n + lane;

    let mut bc = Shared::<[f32]>::new_slice(2 * n);
    let mut xs = Shared::<[f32]>::new_slice(rows);
    let mut partial = Shared::<[f32]>::new_slice(rows * lanes);
    let mut s = Array::<f32>::new(n / lanes);
    #[unroll]
    for j in 0..n / lanes {
        s[j] = state[at + j * lanes];
    }
    if snap_at == 0 {
        #[unroll]
        for j in 0..n / lanes {
            snapshot[at + j * lanes] = s[j];
        }
    }
    let a_h = a[hi];
    let d_h = f32::cast_from(d[hi]);
    let bias_h = f32::cast_from(dt_bias[hi]);

    for t in 0..steps {
        let row0 = bi * len + t;
        // The previous step's readers of `bc`, `xs` and `partial` are done.
        sync_cube();
        for jj in 0..(2 * n).div_ceil(rows * lanes) {
            let i = jj * rows * lanes + unit;
            if i < n {
                bc[i] = conv_silu::<F>(padded, conv_weight, conv_bias, row0, kv * p + g * n + i, channels, k);
            } else if i < 2 * n {
                bc[i] = conv_silu::<F>(padded, conv_weight, conv_bias, row0, kv * (p + n) + hi * n + (i - n), channels, k);
            }
        }
        if lane == 0 {
            xs[r] = conv_silu::<F>(padded, conv_weight, conv_bias, row0, g * p + pi, channels, k);
        }
        sync_cube();

        let x = xs[r];
        let dt_v = softplus_f32(f32::cast_from(dt[(bi * steps + t) * h + hi]) + bias_h);
        let decay = (dt_v * a_h).exp();
        let dx = dt_v * x;
        let mut acc = 0.0f32;
        #[unroll]
        for j in 0..n / lanes {
            let ni = j * lanes + lane;
            s[j] = s[j] * decay + dx * bc[ni];
            acc += s[j] * bc[n + ni];
        }
        if t + 1 == snap_at {
            #[unroll]
            for j in 0..n / lanes {
                snapshot[at + j * lanes] = s[j];
            }
        }
        if t >= emit_from {
            partial[unit] = acc;
            sync_cube();
            if lane == 0 {
                let mut sum = d_h * x;
                for l in 0..lanes {
                    sum += partial[r * lanes + l];
                }
                y[((bi * (steps - emit_from) + (t - emit_from)) * h + hi) * p + pi] = sum;
            }
        }
    }
}
