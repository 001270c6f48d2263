//! The steps as one CubeCL kernel, launched through burn's backend extension (which also queues
//! it in burn's fusion stream); a single decode step is its one-step case, so decoding and
//! speculative verification share every rounding.
//!
//! The kernel itself, its layout and where its time goes: [`super::kernel`]; how a launch is
//! laid out over cubes and lanes: [`super::shape`].

use burn::backend::fusion::custom::TensorSpec;
use burn::backend::tensor::FloatTensor;
use burn::backend::{backend_extension, Backend, Dispatch, TensorMetadata};
use burn::tensor::{DType, Shape, Tensor as BurnTensor};
use burn_cubecl::cubecl;
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::tensor::CubeTensor;
use burn_cubecl::ops::numeric::empty_device_contiguous_dtype;
use burn_cubecl::CubeBackend;
use cubecl::prelude::*;

use super::kernel::{mamba2_steps_kernel, InputStridesLaunch};
use super::shape::{cube_shape, lanes_for, passes_for, vector_width, virtual_lanes, CHUNK};
use super::StepsOut;
use crate::Mamba2StepWeights;

/// Whether a row's read-out is summed through shared memory after the chunk's steps
/// (`DISTILL_STEPS_READOUT=shared`) or by warp shuffles inside each step (the default). The
/// shuffles are a chain of dependent exchanges in every step that a warp waits out before its
/// next; through shared memory a step only stores its unit's partial sum, and after the chunk
/// each row's sums load side by side and add in the shuffles' order (the same rounding). On the
/// H200 (session 11, Llama-3-8B's shape at batch 32) shared memory cost 5-15% more for one step
/// and 4-10% less from 6 steps on, the same from 2 to 5.
fn shared_readout() -> bool {
    static SHUFFLES: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    !crate::switched_on(&SHUFFLES, "DISTILL_STEPS_READOUT", "shared")
}

/// Steps from conv inputs already concatenated, `padded [batch, K - 1 + steps, C]`, read as one
/// contiguous buffer: verification, whose callers keep that concatenation anyway. Returns `(y,
/// snapshot)`; the next window is a slice of `padded`.
///
/// Why not the two parts in place, as decoding's step reads them ([`mamba2_steps_in_place`]):
/// their strides and the branch a tap raise a unit's registers from 40 to 54-64 (ncu), so an SM
/// holds two cubes rather than three. H200, session 15, Llama-3-8B's layer at batch 32 (device
/// times, `VARIANTS` A/B): 5 steps 117 -> 91 µs in f32 and 124 -> 100 in bf16, 9 steps 165 ->
/// 131 and 174 -> 139. Either way the kernel computes the same conv inputs in the same order:
/// it rounds alike.
pub fn mamba2_steps(padded: BurnTensor<3>, dt: BurnTensor<3>, state: BurnTensor<4>, w: &Mamba2StepWeights, snap_at: usize, emit_from: usize) -> (BurnTensor<4>, BurnTensor<4>) {
    let dtype = padded.dtype();
    let p = weights(w, dtype);
    let (y, snapshot) = <Dispatch as Mamba2StepsOps>::mamba2_steps_joined(
        padded.into_dispatch(),
        p.conv_weight,
        p.conv_bias,
        dt.cast(dtype).into_dispatch(),
        p.dt_bias,
        p.a,
        p.d,
        state.cast(DType::F32).into_dispatch(),
        [w.heads, w.kv_heads, w.head_dim, w.d_state, snap_at, emit_from],
    );
    (BurnTensor::from_dispatch(y), BurnTensor::from_dispatch(snapshot))
}

/// Steps from the conv inputs as two parts read where they lie (any strides), `before [batch,
/// rows, C]` then `xbc [batch, new, C]`, the kernel writing the next window itself: decoding's
/// step, which passes its carried window and its token's slice of `in_proj`'s output, where a
/// concatenation cost two copy launches a layer and token (session 13: ~1.5% of a token at
/// batch 1; at batch 32 the one step costs 3-10% more in place than joined, about what the
/// copies would).
pub fn mamba2_steps_in_place(before: BurnTensor<3>, xbc: BurnTensor<3>, dt: BurnTensor<3>, state: BurnTensor<4>, w: &Mamba2StepWeights, snap_at: usize, emit_from: usize) -> StepsOut {
    let dtype = xbc.dtype();
    let p = weights(w, dtype);
    let (y, snapshot, window) = <Dispatch as Mamba2StepsOps>::mamba2_steps(
        before.cast(dtype).into_dispatch(),
        xbc.into_dispatch(),
        p.conv_weight,
        p.conv_bias,
        dt.cast(dtype).into_dispatch(),
        p.dt_bias,
        p.a,
        p.d,
        state.cast(DType::F32).into_dispatch(),
        [w.heads, w.kv_heads, w.head_dim, w.d_state, snap_at, emit_from],
    );
    StepsOut { y: BurnTensor::from_dispatch(y), snapshot: BurnTensor::from_dispatch(snapshot), window: BurnTensor::from_dispatch(window) }
}

/// A layer's step weights in the dtypes the kernel reads (`A` in f32).
struct Params {
    conv_weight: FloatTensor<Dispatch>,
    conv_bias: FloatTensor<Dispatch>,
    dt_bias: FloatTensor<Dispatch>,
    a: FloatTensor<Dispatch>,
    d: FloatTensor<Dispatch>,
}

fn weights(w: &Mamba2StepWeights, dtype: DType) -> Params {
    let same = |t: &BurnTensor<1>| t.clone().cast(dtype).into_dispatch();
    Params {
        conv_weight: w.conv_weight.clone().cast(dtype).into_dispatch(),
        conv_bias: same(&w.conv_bias),
        dt_bias: same(&w.dt_bias),
        a: w.a.clone().cast(DType::F32).into_dispatch(),
        d: same(&w.d),
    }
}

#[backend_extension(Cube, Fusion)]
pub trait Mamba2StepsOps: Backend {
    /// The conv inputs in two parts, read in place. `dims` = `[heads, kv_heads, head_dim,
    /// d_state, snap_at, emit_from]`; returns `(y, snapshot, window)`: both f32, and the last
    /// `K - 1` conv inputs in their dtype.
    #[fusion(meta = steps_meta)]
    #[allow(clippy::too_many_arguments)]
    fn mamba2_steps(
        before: FloatTensor<Self>,
        xbc: FloatTensor<Self>,
        conv_weight: FloatTensor<Self>,
        conv_bias: FloatTensor<Self>,
        dt: FloatTensor<Self>,
        dt_bias: FloatTensor<Self>,
        a: FloatTensor<Self>,
        d: FloatTensor<Self>,
        state: FloatTensor<Self>,
        dims: [usize; 6],
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>);

    /// The conv inputs already concatenated (`padded`); returns `(y, snapshot)`.
    #[fusion(meta = joined_meta)]
    #[allow(clippy::too_many_arguments)]
    fn mamba2_steps_joined(
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
    _before: &TensorSpec,
    xbc: &TensorSpec,
    conv_weight: &TensorSpec,
    _conv_bias: &TensorSpec,
    dt: &TensorSpec,
    _dt_bias: &TensorSpec,
    _a: &TensorSpec,
    _d: &TensorSpec,
    state: &TensorSpec,
    dims: &[usize; 6],
) -> (TensorSpec, TensorSpec, TensorSpec) {
    let (y, kept) = outputs_meta(dt, state, dims);
    let window = TensorSpec::new(Shape::new([dt.shape[0], conv_weight.shape[1] - 1, xbc.shape[2]]), xbc.dtype);
    (y, kept, window)
}

#[allow(clippy::too_many_arguments)]
fn joined_meta(
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
    outputs_meta(dt, state, dims)
}

/// `y` and the snapshot (every step's state with [`super::EVERY_STEP`]).
fn outputs_meta(dt: &TensorSpec, state: &TensorSpec, dims: &[usize; 6]) -> (TensorSpec, TensorSpec) {
    let [h, _, p, n, snap_at, emit_from] = *dims;
    let (bs, steps) = (dt.shape[0], dt.shape[1]);
    let kept = if snap_at == super::EVERY_STEP { TensorSpec::new(Shape::new([steps * bs, h, p, n]), DType::F32) } else { state.clone() };
    (TensorSpec::new(Shape::new([bs, steps - emit_from, h, p]), DType::F32), kept)
}

impl Mamba2StepsOps for CubeBackend {
    fn mamba2_steps(
        before: FloatTensor<Self>,
        xbc: FloatTensor<Self>,
        conv_weight: FloatTensor<Self>,
        conv_bias: FloatTensor<Self>,
        dt: FloatTensor<Self>,
        dt_bias: FloatTensor<Self>,
        a: FloatTensor<Self>,
        d: FloatTensor<Self>,
        state: FloatTensor<Self>,
        dims: [usize; 6],
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        let [bs, rows, channels] = before.shape().dims::<3>();
        let k = conv_weight.shape().dims::<2>()[1];
        let window = empty_device_contiguous_dtype(xbc.client.clone(), xbc.device.clone(), Shape::new([bs, k - 1, channels]), xbc.dtype);
        let (y, snapshot) = launch_steps(before, rows, xbc, window.clone(), false, [conv_weight, conv_bias, dt, dt_bias, a, d, state], dims);
        (y, snapshot, window)
    }

    fn mamba2_steps_joined(
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
        // The kernel's `before` and `window` go unread and unwritten when joined: `padded`
        // stands in for the one, an element's allocation for the other.
        let nothing = empty_device_contiguous_dtype(padded.client.clone(), padded.device.clone(), Shape::new([1, 1, 1]), padded.dtype);
        launch_steps(padded.clone(), 0, padded, nothing, true, [conv_weight, conv_bias, dt, dt_bias, a, d, state], dims)
    }
}

/// The kernel over `split` rows of `before` then those of `xbc` (all of `xbc`'s when `joined`);
/// `rest` = `[conv_weight, conv_bias, dt, dt_bias, a, d, state]`. Returns `(y, snapshot)`.
fn launch_steps(before: CubeTensor, split: usize, xbc: CubeTensor, window: CubeTensor, joined: bool, rest: [CubeTensor; 7], dims: [usize; 6]) -> (CubeTensor, CubeTensor) {
    let [h, kv, p, n, snap_at, emit_from] = dims;
    let [conv_weight, conv_bias, dt, dt_bias, a, d, state] = rest.map(into_contiguous);
    let [bs, steps, _] = dt.shape().dims::<3>();
    let k = conv_weight.shape().dims::<2>()[1];
    let (client, device, dtype) = (xbc.client.clone(), xbc.device.clone(), xbc.dtype);
    let y = empty_device_contiguous_dtype(client.clone(), device.clone(), Shape::new([bs, steps - emit_from, h, p]), DType::F32);
    let kept = if snap_at == super::EVERY_STEP { Shape::new([steps * bs, h, p, n]) } else { state.shape() };
    let snapshot = empty_device_contiguous_dtype(client.clone(), device, kept, DType::F32);
    let every = snap_at == super::EVERY_STEP;
    // A launch scalar is 32 bits: with `every`, a step count no step reaches instead.
    let snap_at = if every { steps + 1 } else { snap_at };
    let sms = client.properties().hardware.num_streaming_multiprocessors;
    let (lanes, rows) = cube_shape(p, n, steps, lanes_for(p, n, steps, bs * h * p, sms));
    let chunk = CHUNK.min(steps);
    let w = vector_width(n);
    let passes = passes_for(n, steps, lanes);
    let count = CubeCount::Static((bs * h * p / rows) as u32, 1, 1);
    let [b_batch, b_row, b_ch] = [0, 1, 2].map(|d| before.meta.strides()[d]);
    let [x_batch, x_row, x_ch] = [0, 1, 2].map(|d| xbc.meta.strides()[d]);
    let strides = InputStridesLaunch::new(b_batch, b_row, b_ch, x_batch, x_row, x_ch);
    // SAFETY: indices stay inside the shapes above: `before` and `xbc` read through their
    // strides (`split + new = K - 1 + steps` rows per batch), the rest contiguous; `rows`
    // divides `p`, `lanes` divides `n` (`kernel_takes` checks).
    unsafe {
        mamba2_steps_kernel::launch_unchecked(
            &client,
            count,
            CubeDim::new_2d(lanes as u32, rows as u32),
            w,
            before.into_tensor_arg(),
            xbc.into_tensor_arg(),
            conv_weight.into_tensor_arg(),
            conv_bias.into_tensor_arg(),
            dt.into_tensor_arg(),
            dt_bias.into_tensor_arg(),
            a.into_tensor_arg(),
            d.into_tensor_arg(),
            state.into_tensor_arg(),
            y.clone().into_tensor_arg(),
            snapshot.clone().into_tensor_arg(),
            window.into_tensor_arg(),
            strides,
            steps,
            split,
            snap_at,
            emit_from,
            h,
            kv,
            p,
            n,
            k,
            lanes,
            virtual_lanes(n),
            rows,
            chunk,
            every,
            shared_readout(),
            joined,
            w,
            passes,
            burn::backend::cubecl::dtype_to_storage_type(dtype),
        );
    }
    (y, snapshot)
}
