//! The masked softmax as one CubeCL launch through burn's backend extension: a cube per row.

use burn::backend::cubecl::dtype_to_storage_type;
use burn::backend::fusion::custom::TensorSpec;
use burn::backend::tensor::{BoolTensor, FloatTensor};
use burn::backend::{backend_extension, Backend, Dispatch, TensorMetadata};
use burn::tensor::{Bool, Shape, Tensor as BurnTensor};
use burn_cubecl::cubecl;
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::ops::numeric::empty_device_contiguous_dtype;
use burn_cubecl::CubeBackend;
use cubecl::prelude::*;

use crate::warp::{warp_max, warp_sum};

const UNITS: usize = 1024;
const WARPS: usize = UNITS / 32;
/// Keys a unit holds in registers at most: the kernel takes rows of up to `UNITS · HELD` keys.
const HELD: usize = 4;
/// The longest row the kernel takes. A cube per row puts a decode step's softmax on a few SMs
/// (9 rows at SmolLM2's batch 1): on the H200 it beat the composite's five launches at 512 keys,
/// matched them at 4,096 and lost at 16,384, even holding its row in registers (BENCHMARKS.md,
/// session 11), where the composite spreads each pass over the whole GPU.
pub(super) const MAX_KEYS: usize = UNITS * HELD;
// `super::mode()` names this bound in a `&'static str`: a change here must change it there.
const _: () = assert!(MAX_KEYS == 4096, "attention_softmax::mode() says 4096 keys");

pub fn masked_softmax(scores: BurnTensor<3>, mask: BurnTensor<3, Bool>, scale: f64) -> BurnTensor<3> {
    BurnTensor::from_dispatch(<Dispatch as MaskedSoftmaxOps>::masked_softmax(scores.into_dispatch(), mask.into_dispatch(), (scale as f32).to_bits()))
}

#[backend_extension(Cube, Fusion)]
pub trait MaskedSoftmaxOps: Backend {
    #[fusion(meta = softmax_meta)]
    fn masked_softmax(scores: FloatTensor<Self>, mask: BoolTensor<Self>, scale_bits: u32) -> FloatTensor<Self>;
}

fn softmax_meta(scores: &TensorSpec, _mask: &TensorSpec, _scale_bits: &u32) -> TensorSpec {
    scores.clone()
}

impl MaskedSoftmaxOps for CubeBackend {
    fn masked_softmax(scores: FloatTensor<Self>, mask: BoolTensor<Self>, scale_bits: u32) -> FloatTensor<Self> {
        let [batch, rows, keys] = scores.shape().dims::<3>();
        // The kernel reads unchecked: a mask entry for every score.
        assert_eq!(mask.shape().dims::<3>(), [batch, rows, keys], "masked_softmax: a mask like the scores");
        let (client, device, dtype, mask_dtype) = (scores.client.clone(), scores.device.clone(), scores.dtype, mask.dtype);
        let (scores, mask) = (into_contiguous(scores), into_contiguous(mask));
        let out = empty_device_contiguous_dtype(client.clone(), device, Shape::new([batch, rows, keys]), dtype);
        if batch * rows == 0 || keys == 0 {
            return out; // CUDA refuses an empty grid
        }
        assert!(keys <= MAX_KEYS, "masked_softmax: {keys} keys, at most {MAX_KEYS} a row");
        // Keys a unit holds: a power of two, so that rows of nearby lengths share a compiled kernel.
        let held = keys.div_ceil(UNITS).next_power_of_two();
        // SAFETY: `scores`, `mask` and `out` are `[batch · rows, keys]` contiguous; cube `r`
        // reads and writes row `r` only, every index guarded by `i < keys`.
        unsafe {
            masked_softmax_kernel::launch_unchecked(
                &client,
                CubeCount::Static((batch * rows) as u32, 1, 1),
                CubeDim::new_1d(UNITS as u32),
                scores.into_tensor_arg(),
                mask.into_tensor_arg(),
                out.clone().into_tensor_arg(),
                keys,
                f32::from_bits(scale_bits),
                UNITS,
                WARPS,
                held,
                [dtype_to_storage_type(dtype), dtype_to_storage_type(mask_dtype)],
            );
        }
        out
    }
}

/// Cube `r` takes row `r`: the largest visible scaled score, then the sum of the shifted
/// exponentials, then each probability, the cube's totals by warp shuffles and shared memory.
/// Each unit reads its `held` keys of the row once, all loads issued together, and keeps their
/// scaled scores in registers for the three passes (one key at a time, each pass over a 4,096-key
/// row was a chain of dependent cache reads that cost more than the composite). Each value is
/// rounded to `F` where the composite's op would store it: the scaled score, the shift, the
/// exponential, the sum.
#[cube(launch_unchecked)]
// The bounds check stays its own `if`: a kernel's `&&` need not skip its right side, and the
// mask read past the row would be out of bounds.
#[allow(clippy::too_many_arguments, clippy::collapsible_if)]
fn masked_softmax_kernel<F: Float, B: Int>(
    scores: &Tensor<F>,
    mask: &Tensor<B>,
    out: &mut Tensor<F>,
    keys: usize,
    scale: f32,
    #[comptime] units: usize,
    #[comptime] warps: usize,
    #[comptime] held: usize,
    #[define(F, B)] _dtypes: [ElemType; 2],
) {
    // The composite multiplies by the scale in the scores' dtype.
    let scale = f32::cast_from(F::cast_from(scale));
    let unit = UNIT_POS as usize;
    let row = CUBE_POS * keys;
    let mut shared = Shared::<[f32]>::new_slice(warps);
    let mut total = Shared::<[f32]>::new_slice(1usize);
    let lane = unit % 32;
    // Key `u · units + unit`'s scaled score, `f32::MIN` for a hidden key.
    let mut vals = Array::<f32>::new(held);

    // Below every finite score a row can hold: the max of a row that has seen only hidden keys.
    let mut m = f32::MIN.runtime();
    #[unroll]
    for u in 0..held {
        let i = u * units + unit;
        let mut v = f32::MIN.runtime();
        if i < keys {
            if u32::cast_from(mask[row + i]) == 0u32 {
                v = f32::cast_from(F::cast_from(f32::cast_from(scores[row + i]) * scale));
            }
        }
        vals[u] = v;
    }
    #[unroll]
    for u in 0..held {
        if vals[u] > m {
            m = vals[u];
        }
    }
    m = warp_max(m);
    if lane == 0 {
        shared[unit / 32] = m;
    }
    sync_cube();
    if unit == 0 {
        let mut all = f32::MIN.runtime();
        #[unroll]
        for w in 0..warps {
            if shared[w] > all {
                all = shared[w];
            }
        }
        total[0] = all;
    }
    sync_cube();
    let max = total[0];
    // Every unit has read the max before unit 0 writes the denominator there.
    sync_cube();

    let mut sum = 0.0f32;
    #[unroll]
    for u in 0..held {
        sum += held_exp::<F>(vals[u], max);
    }
    sum = warp_sum(sum);
    if lane == 0 {
        shared[unit / 32] = sum;
    }
    sync_cube();
    if unit == 0 {
        let mut all = 0.0f32;
        #[unroll]
        for w in 0..warps {
            all += shared[w];
        }
        // Rounded as the composite's sum is, and kept off zero (a row that hides every key
        // has no exponential: zeros, not NaN).
        let mut s = f32::cast_from(F::cast_from(all));
        if s <= 0.0 {
            s = 1.0;
        }
        total[0] = s;
    }
    sync_cube();
    let denominator = total[0];
    #[unroll]
    for u in 0..held {
        let i = u * units + unit;
        if i < keys {
            out[row + i] = F::cast_from(held_exp::<F>(vals[u], max) / denominator);
        }
    }
}

/// `exp(v - max)` of a held scaled score, each step rounded to `F`; 0 for a hidden key
/// (`f32::MIN`).
#[cube]
fn held_exp<F: Float>(v: f32, max: f32) -> f32 {
    if v > f32::MIN {
        let shift = f32::cast_from(F::cast_from(v - max));
        f32::cast_from(F::cast_from(shift.exp()))
    } else {
        0.0f32
    }
}
