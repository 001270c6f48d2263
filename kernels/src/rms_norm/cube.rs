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

/// Units per cube: 8 warps, a few values each for SmolLM2's 576-wide rows, 16 for Llama-3-8B's
/// 4,096.
const UNITS: usize = 256;
const WARPS: usize = UNITS / 32;

pub fn rms_norm(x: BurnTensor<2>, weight: BurnTensor<1>, eps: f64) -> BurnTensor<2> {
    let dtype = x.dtype();
    // The epsilon travels as f32 bits: a launch scalar, as the norm computes in f32.
    BurnTensor::from_dispatch(<Dispatch as RmsNormOps>::rms_norm(x.into_dispatch(), weight.cast(dtype).into_dispatch(), (eps as f32).to_bits()))
}

#[backend_extension(Cube, Fusion)]
pub trait RmsNormOps: Backend {
    #[fusion(meta = norm_meta)]
    fn rms_norm(x: FloatTensor<Self>, weight: FloatTensor<Self>, eps_bits: u32) -> FloatTensor<Self>;
}

fn norm_meta(x: &TensorSpec, _weight: &TensorSpec, _eps_bits: &u32) -> TensorSpec {
    x.clone()
}

impl RmsNormOps for CubeBackend {
    fn rms_norm(x: FloatTensor<Self>, weight: FloatTensor<Self>, eps_bits: u32) -> FloatTensor<Self> {
        let [rows, d] = x.shape().dims::<2>();
        assert_eq!(weight.shape().dims::<1>()[0], d, "rms_norm: a weight per channel");
        let (client, device, dtype) = (x.client.clone(), x.device.clone(), x.dtype);
        let (x, weight) = (into_contiguous(x), into_contiguous(weight));
        let out = empty_device_contiguous_dtype(client.clone(), device, Shape::new([rows, d]), dtype);
        if rows == 0 || d == 0 {
            return out; // CUDA refuses an empty grid
        }
        // SAFETY: `x` and `out` are `[rows, d]` contiguous and `weight` `[d]`; cube `r` reads and
        // writes row `r` only, every index guarded by `i < d`.
        unsafe {
            rms_norm_kernel::launch_unchecked(
                &client,
                CubeCount::Static(rows as u32, 1, 1),
                CubeDim::new_1d(UNITS as u32),
                x.into_tensor_arg(),
                weight.into_tensor_arg(),
                out.clone().into_tensor_arg(),
                d,
                d as f32,
                f32::from_bits(eps_bits),
                UNITS,
                WARPS,
                dtype_to_storage_type(dtype),
            );
        }
        out
    }
}

/// Cube `r` normalizes row `r`: each unit sums the squares of every `units`-th value from its
/// own, a warp adds its units' sums by shuffles, warp 0 adds the warps' from shared memory, and
/// every unit scales its values by the shared `1 / sqrt(mean + eps)`.
#[cube(launch_unchecked)]
#[allow(clippy::too_many_arguments)]
fn rms_norm_kernel<F: Float>(
    x: &Tensor<F>,
    weight: &Tensor<F>,
    out: &mut Tensor<F>,
    d: usize,
    d_f: f32,
    eps: f32,
    #[comptime] units: usize,
    #[comptime] warps: usize,
    #[define(F)] _dtype: ElemType,
) {
    let unit = UNIT_POS as usize;
    let row = CUBE_POS * d;
    let mut sum = 0.0f32;
    for j in 0..d.div_ceil(units) {
        let i = j * units + unit;
        if i < d {
            let v = f32::cast_from(x[row + i]);
            sum += v * v;
        }
    }
    sum += plane_shuffle_xor(sum, 16u32);
    sum += plane_shuffle_xor(sum, 8u32);
    sum += plane_shuffle_xor(sum, 4u32);
    sum += plane_shuffle_xor(sum, 2u32);
    sum += plane_shuffle_xor(sum, 1u32);
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
            let normed = f32::cast_from(F::cast_from(f32::cast_from(x[row + i]) * inv));
            out[row + i] = F::cast_from(normed * f32::cast_from(weight[i]));
        }
    }
}
