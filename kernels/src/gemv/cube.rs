//! The product as two CubeCL launches through burn's backend extension (queued in burn's fusion
//! stream like any op): partial sums over slices of `K`, then their sum in the output's dtype.
//! Accumulation is f32 whatever the model dtype.

use burn::backend::cubecl::dtype_to_storage_type;
use burn::backend::fusion::custom::TensorSpec;
use burn::backend::tensor::FloatTensor;
use burn::backend::{backend_extension, Backend, Dispatch, TensorMetadata};
use burn::tensor::{DType, Shape, Tensor as BurnTensor};
use burn_cubecl::cubecl;
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::ops::numeric::empty_device_contiguous_dtype;
use burn_cubecl::tensor::CubeTensor;
use burn_cubecl::CubeBackend;
use cubecl::prelude::*;

/// Columns a cube takes (a warp's width: each `K` row's 32 values are one coalesced read).
const LANES: usize = 32;
/// Units per cube along its slice of `K`.
const ROWS: usize = 8;
/// Cubes to aim for: four per SM of an H200 (132 SMs), so that even a 576-wide projection keeps
/// the GPU's load units busy.
const TARGET_CUBES: usize = 528;
/// `K` rows per unit at least, so a slice is worth its partial sums' round trip.
const MIN_DEPTH: usize = 4;

// The partial kernel's shared sums, `ROWS · m · LANES` f32, within CUDA's 48 KiB of static
// shared memory for every row count the batched products take.
const _: () = assert!(ROWS * super::MAX_BATCHED_ROWS * LANES * 4 <= 48 * 1024);

pub fn gemv(x: BurnTensor<2>, w: BurnTensor<2>) -> BurnTensor<2> {
    let dtype = x.dtype();
    BurnTensor::from_dispatch(<Dispatch as GemvOps>::gemv(x.into_dispatch(), w.cast(dtype).into_dispatch()))
}

/// `x · w` for `x` `[batch, m, k]` and `w` `[batch, k, n]`, or with `transposed` `x · wᵀ` for
/// `w` `[batch, n, k]`: the same kernels, a batch per cube row of the grid.
pub fn batched(x: BurnTensor<3>, w: BurnTensor<3>, transposed: bool) -> BurnTensor<3> {
    let dtype = x.dtype();
    BurnTensor::from_dispatch(<Dispatch as GemvOps>::batched_gemv(x.into_dispatch(), w.cast(dtype).into_dispatch(), transposed))
}

#[backend_extension(Cube, Fusion)]
pub trait GemvOps: Backend {
    #[fusion(meta = gemv_meta)]
    fn gemv(x: FloatTensor<Self>, w: FloatTensor<Self>) -> FloatTensor<Self>;
    #[fusion(meta = batched_meta)]
    fn batched_gemv(x: FloatTensor<Self>, w: FloatTensor<Self>, transposed: bool) -> FloatTensor<Self>;
}

fn gemv_meta(x: &TensorSpec, w: &TensorSpec) -> TensorSpec {
    TensorSpec::new(Shape::new([x.shape[0], w.shape[1]]), x.dtype)
}

fn batched_meta(x: &TensorSpec, w: &TensorSpec, transposed: &bool) -> TensorSpec {
    let n = if *transposed { w.shape[1] } else { w.shape[2] };
    TensorSpec::new(Shape::new([x.shape[0], x.shape[1], n]), x.dtype)
}

/// `(column blocks, slices of K, rows of K per slice)` for `m x k · k x n`.
fn grid(k: usize, n: usize) -> (usize, usize, usize) {
    let blocks = n.div_ceil(LANES);
    let slices = TARGET_CUBES.div_ceil(blocks).clamp(1, (k / (ROWS * MIN_DEPTH)).max(1));
    (blocks, slices, k.div_ceil(slices))
}

impl GemvOps for CubeBackend {
    fn gemv(x: FloatTensor<Self>, w: FloatTensor<Self>) -> FloatTensor<Self> {
        let [m, k] = x.shape().dims::<2>();
        let n = w.shape().dims::<2>()[1];
        let x = into_contiguous(x);
        // A tied head's weight is the embedding `[n, k]` seen transposed: read its rows as they
        // lie (a copy would move the whole table, 56 MB for SmolLM2's, at every token).
        let strides = w.meta.strides();
        if k > 1 && n > 1 && strides[0] == 1 && strides[1] == k {
            return by_rows(x, w, Dims { batch: 1, m, k, n }, Shape::new([m, n]));
        }
        by_slices(x, into_contiguous(w), Dims { batch: 1, m, k, n }, Shape::new([m, n]))
    }

    fn batched_gemv(x: FloatTensor<Self>, w: FloatTensor<Self>, transposed: bool) -> FloatTensor<Self> {
        let [batch, m, k] = x.shape().dims::<3>();
        let [wb, w1, w2] = w.shape().dims::<3>();
        let (wk, n) = if transposed { (w2, w1) } else { (w1, w2) };
        // The kernels read unchecked: a mismatch would read past a buffer.
        assert!(wb == batch && wk == k && m <= crate::gemv::MAX_BATCHED_ROWS, "batched gemv: [{batch}, {m}, {k}] by {:?} (transposed: {transposed})", [wb, w1, w2]);
        let dims = Dims { batch, m, k, n };
        let (x, w) = (into_contiguous(x), into_contiguous(w));
        if transposed { by_rows(x, w, dims, Shape::new([batch, m, n])) } else { by_slices(x, w, dims, Shape::new([batch, m, n])) }
    }
}

/// A product's sizes: `batch` products of `[m, k]` by `[k, n]`.
#[derive(Clone, Copy)]
struct Dims {
    batch: usize,
    m: usize,
    k: usize,
    n: usize,
}

/// `x · w` for `w` `[batch, k, n]` contiguous: partial sums over slices of `K`, then their sum.
fn by_slices(x: CubeTensor, w: CubeTensor, d: Dims, shape: Shape) -> CubeTensor {
    let Dims { batch, m, k, n } = d;
    let (client, device, dtype) = (x.client.clone(), x.device.clone(), x.dtype);
    let (blocks, slices, per_slice) = grid(k, n);
    let total = batch * m * n;
    let partial = empty_device_contiguous_dtype(client.clone(), device.clone(), Shape::new([slices, total]), DType::F32);
    let out = empty_device_contiguous_dtype(client.clone(), device, shape, dtype);
    // SAFETY: `x` is `[batch, m, k]` and `w` `[batch, k, n]`, contiguous; every read is guarded
    // by `col < n` and `kk < k` inside its batch; `partial` is `[slices, batch · m · n]` and
    // every cube writes its own slice's columns of its batch; the sum reads `slices` values per
    // output below `total`.
    unsafe {
        gemv_partial_kernel::launch_unchecked(
            &client,
            CubeCount::Static(blocks as u32, slices as u32, batch as u32),
            CubeDim::new_2d(LANES as u32, ROWS as u32),
            x.into_tensor_arg(),
            w.into_tensor_arg(),
            partial.clone().into_tensor_arg(),
            k,
            n,
            per_slice,
            total,
            m,
            LANES,
            ROWS,
            dtype_to_storage_type(dtype),
        );
        gemv_sum_kernel::launch_unchecked(
            &client,
            CubeCount::Static(total.div_ceil(256) as u32, 1, 1),
            CubeDim::new_1d(256),
            partial.into_tensor_arg(),
            out.clone().into_tensor_arg(),
            total,
            slices,
            dtype_to_storage_type(dtype),
        );
    }
    out
}

/// `x · eᵀ` for `e` `[batch, n, k]` row-major (the weight given as its transpose): a warp per
/// output column, its lanes along the row, the sum by warp shuffles.
fn by_rows(x: CubeTensor, e: CubeTensor, d: Dims, shape: Shape) -> CubeTensor {
    let Dims { batch, m, k, n } = d;
    let (client, dtype) = (x.client.clone(), x.dtype);
    let out = empty_device_contiguous_dtype(client.clone(), x.device.clone(), shape, dtype);
    // SAFETY: `x` is `[batch, m, k]` contiguous; `e`'s buffer holds `[batch, n, k]` row-major
    // (for the 2-D product checked by the caller from the view's strides, offset-free as a
    // transpose is); reads are guarded by `col < n` and `kk < k` inside their batch; `out` is
    // `[batch, m, n]`, each column written by its warp's lane 0.
    let lanes = row_lanes(k);
    unsafe {
        gemv_rows_kernel::launch_unchecked(
            &client,
            CubeCount::Static(n.div_ceil(ROWS * (LANES / lanes)) as u32, batch as u32, 1),
            CubeDim::new_2d(LANES as u32, ROWS as u32),
            x.into_tensor_arg(),
            e.into_tensor_arg(),
            out.clone().into_tensor_arg(),
            k,
            n,
            m,
            lanes,
            dtype_to_storage_type(dtype),
        );
    }
    out
}

/// Lanes that walk one row of `e`: a warp for long rows (a head's 576), fewer for attention's
/// keys (64 or 128 wide), so that each lane loads at least 8 values and a warp takes several
/// keys: every output's sum costs `log2(lanes)` shuffles per row of `x`, and verification's
/// 27 rows would spend 135 shuffles a key with a whole warp on 64 values. Depends on `k` alone,
/// so a verified row rounds as its decode step does.
fn row_lanes(k: usize) -> usize {
    (k / 8).next_power_of_two().clamp(4, LANES)
}

/// Warp `r` of cube `(c, b)` takes output columns `(c·ROWS + r)·(32 / lanes) ..` of batch `b`,
/// `lanes` lanes each: they walk the column's row of `e` (contiguous, so each step a coalesced
/// read), for all `m` rows of `x` at once.
#[cube(launch_unchecked)]
#[allow(clippy::too_many_arguments)]
fn gemv_rows_kernel<F: Float>(
    x: &Tensor<F>,
    e: &Tensor<F>,
    out: &mut Tensor<F>,
    k: usize,
    n: usize,
    #[comptime] m: usize,
    #[comptime] lanes: usize,
    #[define(F)] _dtype: ElemType,
) {
    let lane = UNIT_POS_X as usize % lanes;
    let per_warp = comptime!(32 / lanes);
    let col = (CUBE_POS_X as usize * CUBE_DIM_Y as usize + UNIT_POS_Y as usize) * per_warp + UNIT_POS_X as usize / lanes;
    let batch = CUBE_POS_Y as usize;
    let (x0, e0, out0) = (batch * m * k, batch * n * k, batch * m * n);
    let mut acc = Array::<f32>::new(m);
    #[unroll]
    for i in 0..m {
        acc[i] = 0.0;
    }
    if col < n {
        for j in 0..k.div_ceil(lanes) {
            let kk = j * lanes + lane;
            if kk < k {
                let ev = f32::cast_from(e[e0 + col * k + kk]);
                #[unroll]
                for i in 0..m {
                    acc[i] += f32::cast_from(x[x0 + i * k + kk]) * ev;
                }
            }
        }
    }
    // Outside `col < n`, so every lane of the warp takes part; an xor below `lanes` stays
    // inside a column's aligned group of lanes.
    #[unroll]
    for i in 0..m {
        let mut v = acc[i];
        #[unroll]
        for b in 0..comptime!(lanes.trailing_zeros() as usize) {
            v += plane_shuffle_xor(v, (lanes >> (b + 1)) as u32);
        }
        if lane == 0 && col < n {
            out[out0 + i * n + col] = F::cast_from(v);
        }
    }
}

/// Cube `(bx, s, b)` sums rows `s·per_slice ..` of `K` for columns `bx·lanes ..` of batch `b`;
/// unit `(lane, r)` takes column `bx·lanes + lane` and every `rows`-th row of the slice from
/// `r`, for all `m` rows of `x` at once; the cube's `rows` partials per column meet in shared
/// memory. `partial` is `[slices, total]`, `total` the outputs of all batches.
#[cube(launch_unchecked)]
#[allow(clippy::too_many_arguments)]
fn gemv_partial_kernel<F: Float>(
    x: &Tensor<F>,
    w: &Tensor<F>,
    partial: &mut Tensor<f32>,
    k: usize,
    n: usize,
    per_slice: usize,
    total: usize,
    #[comptime] m: usize,
    #[comptime] lanes: usize,
    #[comptime] rows: usize,
    #[define(F)] _dtype: ElemType,
) {
    let lane = UNIT_POS_X as usize;
    let r = UNIT_POS_Y as usize;
    let col = CUBE_POS_X as usize * lanes + lane;
    let slice = CUBE_POS_Y as usize;
    let batch = CUBE_POS_Z as usize;
    let (x0, w0, out0) = (batch * m * k, batch * k * n, batch * m * n);
    let k0 = slice * per_slice;
    let k1 = min(k0 + per_slice, k);
    let mut acc = Array::<f32>::new(m);
    #[unroll]
    for i in 0..m {
        acc[i] = 0.0;
    }
    if col < n {
        for j in 0..per_slice.div_ceil(rows) {
            let kk = k0 + r + j * rows;
            if kk < k1 {
                let wv = f32::cast_from(w[w0 + kk * n + col]);
                #[unroll]
                for i in 0..m {
                    acc[i] += f32::cast_from(x[x0 + i * k + kk]) * wv;
                }
            }
        }
    }
    let mut sums = Shared::<[f32]>::new_slice(comptime!(rows * m * lanes));
    #[unroll]
    for i in 0..m {
        sums[(r * m + i) * lanes + lane] = acc[i];
    }
    sync_cube();
    if r == 0 && col < n {
        #[unroll]
        for i in 0..m {
            let mut s = 0.0f32;
            #[unroll]
            for q in 0..rows {
                s += sums[(q * m + i) * lanes + lane];
            }
            partial[slice * total + out0 + i * n + col] = s;
        }
    }
}

/// `out[i] = Σ_s partial[s, i]`, rounded to `F` once.
#[cube(launch_unchecked)]
fn gemv_sum_kernel<F: Float>(partial: &Tensor<f32>, out: &mut Tensor<F>, total: usize, slices: usize, #[define(F)] _dtype: ElemType) {
    let i = ABSOLUTE_POS;
    if i < total {
        let mut s = 0.0f32;
        for q in 0..slices {
            s += partial[q * total + i];
        }
        out[i] = F::cast_from(s);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Small projections get slices of K; the vocabulary head has blocks enough without them.
    #[test]
    fn the_grid_fills_the_gpu_for_every_projection() {
        assert_eq!(grid(576, 576), (18, 18, 32)); // 324 cubes, 4 rows of K per unit
        assert_eq!(grid(576, 49_152), (1_536, 1, 576));
        let (blocks, slices, per) = grid(1_536, 576);
        assert!(blocks * slices >= 300 && per >= ROWS * MIN_DEPTH && slices * per >= 1_536);
    }

    /// A head's rows keep a whole warp (as measured in session 9); attention's keys take a
    /// quarter or half of one, each lane loading 8 values.
    #[test]
    fn long_rows_take_a_warp_and_keys_a_part_of_one() {
        assert_eq!(row_lanes(576), 32);
        assert_eq!(row_lanes(4_096), 32);
        assert_eq!(row_lanes(64), 8);
        assert_eq!(row_lanes(128), 16);
        assert_eq!(row_lanes(16), 4);
    }
}
