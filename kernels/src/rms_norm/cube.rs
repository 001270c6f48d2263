//! The norm as one CubeCL launch through burn's backend extension: a cube per row.

use burn::backend::cubecl::dtype_to_storage_type;
use burn::backend::fusion::custom::TensorSpec;
use burn::backend::tensor::FloatTensor;
use burn::backend::{backend_extension, Backend, Dispatch, TensorMetadata};
use burn::tensor::{Shape, Tensor as BurnTensor};
use burn_cubecl::cubecl;
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::ops::numeric::empty_device_contiguous_dtype;
use burn_cubecl::CubeBackend;
use cubecl::prelude::*;

use crate::warp::warp_sum;

/// Units per cube: 8 warps, a few values each for SmolLM2's 576-wide rows, 16 for Llama-3-8B's
/// 4,096.
const UNITS: usize = 256;
const WARPS: usize = UNITS / 32;

pub fn rms_norm(x: BurnTensor<2>, weight: BurnTensor<1>, eps: f64) -> BurnTensor<2> {
    // The gate goes unread here, but it must not be `x` again: one fusion tensor handed to a
    // custom op twice (a read-only clone and the read-write original) made speculative rounds
    // on CUDA graphs read wrong values in f32 (session 12: the 50% hybrid drafting for itself
    // accepted 0.07-0.12 of its drafts on graphs, 0.95-0.97 launched; with the weight here,
    // 1.00 and plain greedy's tokens). The weight, read-only like every parameter, costs nothing.
    let d = weight.dims()[0];
    norm(x, weight.clone().reshape([1, d]), weight, eps, false)
}

pub fn gated_rms_norm(y: BurnTensor<2>, z: BurnTensor<2>, weight: BurnTensor<1>, eps: f64) -> BurnTensor<2> {
    norm(y, z, weight, eps, true)
}

/// `gate` is read only when `gated`; the gate and the weight are taken in `x`'s dtype (a cast up
/// to f32 is exact). The epsilon travels as f32 bits: a launch scalar, as the norm computes in f32.
fn norm(x: BurnTensor<2>, gate: BurnTensor<2>, weight: BurnTensor<1>, eps: f64, gated: bool) -> BurnTensor<2> {
    let dtype = x.dtype();
    let (gate, weight) = (gate.cast(dtype).into_dispatch(), weight.cast(dtype).into_dispatch());
    BurnTensor::from_dispatch(<Dispatch as RmsNormOps>::rms_norm(x.into_dispatch(), gate, weight, [(eps as f32).to_bits(), u32::from(gated)]))
}

#[backend_extension(Cube, Fusion)]
pub trait RmsNormOps: Backend {
    /// `params` = `[eps as f32 bits, gated]`.
    #[fusion(meta = norm_meta)]
    fn rms_norm(x: FloatTensor<Self>, gate: FloatTensor<Self>, weight: FloatTensor<Self>, params: [u32; 2]) -> FloatTensor<Self>;
}

fn norm_meta(x: &TensorSpec, _gate: &TensorSpec, _weight: &TensorSpec, _params: &[u32; 2]) -> TensorSpec {
    x.clone()
}

impl RmsNormOps for CubeBackend {
    fn rms_norm(x: FloatTensor<Self>, gate: FloatTensor<Self>, weight: FloatTensor<Self>, params: [u32; 2]) -> FloatTensor<Self> {
        let [rows, d] = x.shape().dims::<2>();
        let w = weight.shape().dims::<1>()[0];
        let gated = params[1] != 0;
        // The kernels read unchecked: a weight per channel of every group, a gate like `x`.
        assert!(d > 0 && w % d == 0 && rows % (w / d).max(1) == 0, "rms_norm: a weight of {w} for rows of {d}");
        assert!(!gated || gate.shape().dims::<2>() == [rows, d], "rms_norm: the gate is shaped like x");
        let (client, device, dtype) = (x.client.clone(), x.device.clone(), x.dtype);
        let (x, gate, weight) = (into_contiguous(x), into_contiguous(gate), into_contiguous(weight));
        let out = empty_device_contiguous_dtype(client.clone(), device, Shape::new([rows, d]), dtype);
        if rows == 0 {
            return out; // CUDA refuses an empty grid
        }
        // SAFETY: `x`, `gate` (when read) and `out` are `[rows, d]` contiguous and `weight`
        // `[groups · d]` with `groups` dividing `rows`; cube `r` reads and writes row `r` only
        // and weight block `r % groups`, every index guarded by `i < d`.
        unsafe {
            rms_norm_kernel::launch_unchecked(
                &client,
                CubeCount::Static(rows as u32, 1, 1),
                CubeDim::new_1d(UNITS as u32),
                x.into_tensor_arg(),
                gate.into_tensor_arg(),
                weight.into_tensor_arg(),
                out.clone().into_tensor_arg(),
                d,
                w / d,
                d as f32,
                f32::from_bits(params[0]),
                UNITS,
                WARPS,
                gated,
                dtype_to_storage_type(dtype),
            );
        }
        out
    }
}

/// Cube `r` normalizes row `r` (gated: `x · silu(gate)`, in f32): each unit sums the squares of
/// every `units`-th value from its own, a warp adds its units' sums by shuffles, unit 0 adds
/// the warps' from shared memory, and every unit scales its values by the shared
/// `1 / sqrt(mean + eps)` and row `r`'s group's weights.
#[cube(launch_unchecked)]
#[allow(clippy::too_many_arguments)]
fn rms_norm_kernel<F: Float>(
    x: &Tensor<F>,
    gate: &Tensor<F>,
    weight: &Tensor<F>,
    out: &mut Tensor<F>,
    d: usize,
    groups: usize,
    d_f: f32,
    eps: f32,
    #[comptime] units: usize,
    #[comptime] warps: usize,
    #[comptime] gated: bool,
    #[define(F)] _dtype: ElemType,
) {
    let unit = UNIT_POS as usize;
    let row = CUBE_POS * d;
    let block = (CUBE_POS % groups) * d;
    let mut sum = 0.0f32;
    for j in 0..d.div_ceil(units) {
        let i = j * units + unit;
        if i < d {
            let v = gated_value::<F>(x, gate, row + i, gated);
            sum += v * v;
        }
    }
    sum = warp_sum(sum);
    let mut partial = Shared::<[f32]>::new_slice(warps);
    let mut total = Shared::<[f32]>::new_slice(1usize);
    let lane = unit % 32;
    if lane == 0 {
        partial[unit / 32] = sum;
    }
    sync_cube();
    if unit == 0 {
        let mut all = 0.0f32;
        #[unroll]
        for w in 0..warps {
            all += partial[w];
        }
        total[0] = 1.0 / (all / d_f + eps).sqrt(); // the mean as the twin's: a division
    }
    sync_cube();
    let inv = total[0];
    for j in 0..d.div_ceil(units) {
        let i = j * units + unit;
        if i < d {
            // Rounded to the dtype before the weight, as the tensor ops round.
            let normed = f32::cast_from(F::cast_from(gated_value::<F>(x, gate, row + i, gated) * inv));
            out[row + i] = F::cast_from(normed * f32::cast_from(weight[block + i]));
        }
    }
}

/// `x[at]`, times `silu(gate[at])` when `gated`, in f32.
#[cube]
fn gated_value<F: Float>(x: &Tensor<F>, gate: &Tensor<F>, at: usize, #[comptime] gated: bool) -> f32 {
    let v = f32::cast_from(x[at]);
    if comptime!(gated) {
        let z = f32::cast_from(gate[at]);
        v * (z / (1.0 + (-z).exp()))
    } else {
        v
    }
}
