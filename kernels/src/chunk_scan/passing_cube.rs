//! The state passing as one CubeCL launch each way. A unit holds one state entry of one head
//! (`UNITS` consecutive entries a cube, so loads and stores are whole rows) and walks it through
//! the chunks in f32: forward `s ← exp(λ_c) s + local_c`, writing each boundary's; backward
//! `G ← dE_c + exp(λ_c) G`, writing `d_local` and leaving each chunk's share of `dλ_c` summed over
//! the cube (warp sums, then one unit over the warps) for the host to add over the cubes of a head.

use burn::backend::cubecl::dtype_to_storage_type;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Backend, TensorMetadata};
use burn::tensor::{DType, Shape};
use burn_cubecl::cubecl;
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::ops::numeric::empty_device_contiguous_dtype;
use burn_cubecl::CubeBackend;
use cubecl::prelude::*;

use super::passing::StatePassingOps;

/// Units per cube: state entries of one head a cube walks.
const UNITS: usize = 256;

impl StatePassingOps for CubeBackend {
    fn pass_states(local: FloatTensor<Self>, decay: FloatTensor<Self>, state: FloatTensor<Self>) -> FloatTensor<Self> {
        let [bs, nc, h, p, n] = local.shape().dims::<5>();
        let (client, device, dtype) = (local.client.clone(), local.device.clone(), local.dtype);
        let [local, decay, state] = [local, decay, state].map(into_contiguous);
        let out = empty_device_contiguous_dtype(client.clone(), device, Shape::new([bs, nc + 1, h, p, n]), dtype);
        let pn = p * n;
        if bs * h * pn == 0 {
            return out; // CUDA refuses an empty grid
        }
        // SAFETY: all contiguous, `local [bs, nc, h, pn]`, `decay [bs, nc, h]`, `state [bs, h,
        // pn]`, `out [bs, nc + 1, h, pn]`; units past `pn` do nothing.
        unsafe {
            pass_states_kernel::launch_unchecked(
                &client,
                CubeCount::Static(pn.div_ceil(UNITS) as u32, (bs * h) as u32, 1),
                CubeDim::new_1d(UNITS as u32),
                local.into_tensor_arg(),
                decay.into_tensor_arg(),
                state.into_tensor_arg(),
                out.clone().into_tensor_arg(),
                nc,
                h,
                pn,
                dtype_to_storage_type(dtype),
            );
        }
        out
    }

    fn pass_states_backward(d_out: FloatTensor<Self>, out: FloatTensor<Self>, decay: FloatTensor<Self>) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        let [bs, nc1, h, p, n] = d_out.shape().dims::<5>();
        let nc = nc1 - 1;
        let (client, device, dtype) = (d_out.client.clone(), d_out.device.clone(), d_out.dtype);
        let [d_out, out, decay] = [d_out, out, decay].map(into_contiguous);
        let pn = p * n;
        let cubes = pn.div_ceil(UNITS);
        let d_local = empty_device_contiguous_dtype(client.clone(), device.clone(), Shape::new([bs, nc, h, p, n]), dtype);
        let d_state = empty_device_contiguous_dtype(client.clone(), device.clone(), Shape::new([bs, h, p, n]), dtype);
        // Each cube's share of `dλ`: `[bs, h, nc, cubes]`, summed over the cubes below.
        let shares = empty_device_contiguous_dtype(client.clone(), device, Shape::new([bs, h, nc, cubes]), DType::F32);
        if bs * h * pn > 0 && nc > 0 {
            // SAFETY: as the forward's; `shares` written by each cube's unit 0 at its own index.
            unsafe {
                pass_states_back_kernel::launch_unchecked(
                    &client,
                    CubeCount::Static(cubes as u32, (bs * h) as u32, 1),
                    CubeDim::new_1d(UNITS as u32),
                    d_out.into_tensor_arg(),
                    out.into_tensor_arg(),
                    decay.into_tensor_arg(),
                    d_local.clone().into_tensor_arg(),
                    d_state.clone().into_tensor_arg(),
                    shares.clone().into_tensor_arg(),
                    nc,
                    h,
                    pn,
                    cubes,
                    UNITS,
                    dtype_to_storage_type(dtype),
                );
            }
        }
        (d_local, decay_grad::<Self>(shares, dtype), d_state)
    }
}

/// `dλ [bs, nc, h]` in `dtype` from the cubes' shares `[bs, h, nc, cubes]`.
fn decay_grad<B: Backend>(shares: FloatTensor<B>, dtype: DType) -> FloatTensor<B> {
    let [bs, h, nc, _] = shares.shape().dims::<4>();
    let summed = B::float_reshape(B::float_sum_dim(shares, 3), Shape::new([bs, h, nc]));
    B::float_cast(B::float_swap_dims(summed, 1, 2), dtype.into())
}

/// `local [bs, nc, h, pn]`, `decay [bs, nc, h]`, `state [bs, h, pn]` -> `out [bs, nc + 1, h, pn]`.
#[cube(launch_unchecked)]
#[allow(clippy::too_many_arguments)]
fn pass_states_kernel<F: Float>(local: &Tensor<F>, decay: &Tensor<F>, state: &Tensor<F>, out: &mut Tensor<F>, nc: usize, h: usize, pn: usize, #[define(F)] _dtype: ElemType) {
    let e = CUBE_POS_X as usize * CUBE_DIM_X as usize + UNIT_POS_X as usize;
    let bh = CUBE_POS_Y as usize;
    let (b, hh) = (bh / h, bh % h);
    if e < pn {
        let mut s = f32::cast_from(state[bh * pn + e]);
        for c in 0..nc {
            out[((b * (nc + 1) + c) * h + hh) * pn + e] = F::cast_from(s);
            let a = f32::cast_from(decay[(b * nc + c) * h + hh]).exp();
            s = s * a + f32::cast_from(local[((b * nc + c) * h + hh) * pn + e]);
        }
        out[((b * (nc + 1) + nc) * h + hh) * pn + e] = F::cast_from(s);
    }
}

/// `d_out` and `out` `[bs, nc + 1, h, pn]`, `decay [bs, nc, h]` -> `d_local [bs, nc, h, pn]`,
/// `d_state [bs, h, pn]`, `shares [bs, h, nc, cubes]` (this cube's `exp(λ_c) Σ G_{c+1} ⊙ E_c`).
#[cube(launch_unchecked)]
#[allow(clippy::too_many_arguments)]
fn pass_states_back_kernel<F: Float>(
    d_out: &Tensor<F>,
    out: &Tensor<F>,
    decay: &Tensor<F>,
    d_local: &mut Tensor<F>,
    d_state: &mut Tensor<F>,
    shares: &mut Tensor<f32>,
    nc: usize,
    h: usize,
    pn: usize,
    cubes: usize,
    #[comptime] units: usize,
    #[define(F)] _dtype: ElemType,
) {
    let unit = UNIT_POS_X as usize;
    let e = CUBE_POS_X as usize * units + unit;
    let bh = CUBE_POS_Y as usize;
    let (b, hh) = (bh / h, bh % h);
    let inside = e < pn;
    let mut warps = Shared::<[f32]>::new_slice(comptime!(units / 32));
    let mut g = 0.0f32.runtime();
    if inside {
        g = f32::cast_from(d_out[((b * (nc + 1) + nc) * h + hh) * pn + e]);
    }
    for back in 0..nc {
        let c = nc - 1 - back;
        let a = f32::cast_from(decay[(b * nc + c) * h + hh]).exp();
        let mut r = 0.0f32.runtime();
        if inside {
            d_local[((b * nc + c) * h + hh) * pn + e] = F::cast_from(g);
            r = g * f32::cast_from(out[((b * (nc + 1) + c) * h + hh) * pn + e]);
            g = f32::cast_from(d_out[((b * (nc + 1) + c) * h + hh) * pn + e]) + a * g;
        }
        // Every unit takes part in the warp sum, inside or not.
        let warp_sum = plane_sum(r);
        if unit % 32 == 0 {
            warps[unit / 32] = warp_sum;
        }
        sync_cube();
        if unit == 0 {
            let mut total = 0.0f32;
            #[unroll]
            for w in 0..units / 32 {
                total += warps[w];
            }
            shares[(bh * nc + c) * cubes + CUBE_POS_X as usize] = total * a;
        }
        // The warps' sums are read before the next chunk's overwrite them.
        sync_cube();
    }
    if inside {
        d_state[bh * pn + e] = F::cast_from(g);
    }
}
