//! The decayed attention inside chunks as one CubeCL launch, in the manner of a register-tiled
//! matrix product: a cube takes `ROWS` rows of one chunk of one head and walks the keys its mask
//! leaves it `KEYS` at a time; per key tile it forms the `ROWS x KEYS` scores from `q` and `k`
//! staged in shared memory a `slice` of their width at a time, decays and masks them into shared
//! memory, and adds their product with the tile's `v` to its outputs, which stay in registers
//! until the end. Each unit holds a 4 x 2 block of scores and a 4 x (p / 16) block of outputs.
//! Tiles above the diagonal (below it, reversed) are never visited: half the arithmetic of the
//! tensor ops, which multiply the whole `T x T` and mask afterwards. Accumulation is f32.

use burn::backend::cubecl::dtype_to_storage_type;
use burn::backend::tensor::FloatTensor;
use burn::backend::TensorMetadata;
use burn::tensor::Shape;
use burn_cubecl::cubecl;
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::ops::numeric::empty_device_contiguous_dtype;
use burn_cubecl::CubeBackend;
use cubecl::prelude::*;

use super::ChunkScanOps;

/// Rows of a chunk per cube (4 per unit over 16 rows of units).
pub(crate) const ROWS: usize = 64;
/// Keys per tile (2 per unit over 16 columns of units).
pub(crate) const KEYS: usize = 32;
/// Units per cube: 16 x 16.
pub(crate) const SIDE: usize = 16;

/// Whether the kernel takes these widths: `q`'s in slices of 16 or 32, `v`'s in 16 columns of
/// units with at most 8 outputs a row each (the registers a unit keeps).
pub(crate) fn supports(n: usize, p: usize) -> bool {
    n > 0 && n.is_multiple_of(16) && p > 0 && p.is_multiple_of(SIDE) && p <= 8 * SIDE
}

/// Whether widths the vectorized kernel takes go to it (`DISTILL_SSD_VEC=0`: the scalar one, to
/// measure one against the other).
fn vectorized() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    crate::switched_on(&ON, "DISTILL_SSD_VEC", "0")
}

impl ChunkScanOps for CubeBackend {
    fn chunk_attend(q: FloatTensor<Self>, k: FloatTensor<Self>, v: FloatTensor<Self>, g: FloatTensor<Self>, params: [u32; 2]) -> FloatTensor<Self> {
        launch(q, k, v, g, None, params)
    }

    fn chunk_scan(q: FloatTensor<Self>, k: FloatTensor<Self>, v: FloatTensor<Self>, g: FloatTensor<Self>, e: FloatTensor<Self>, params: [u32; 2]) -> FloatTensor<Self> {
        launch(q, k, v, g, Some(e), params)
    }
}

fn launch(q: FloatTensor<CubeBackend>, k: FloatTensor<CubeBackend>, v: FloatTensor<CubeBackend>, g: FloatTensor<CubeBackend>, e: Option<FloatTensor<CubeBackend>>, params: [u32; 2]) -> FloatTensor<CubeBackend> {
    let [bs, l, h, n] = q.shape().dims::<4>();
    let p = v.shape().dims::<4>()[3];
    let (chunk, reverse) = (params[0] as usize, params[1] != 0);
    let (client, device, dtype) = (q.client.clone(), q.device.clone(), q.dtype);
    assert!(supports(n, p), "chunk_attend: no kernel for widths {n} and {p}");
    assert!(k.dtype == dtype && v.dtype == dtype && g.dtype == dtype && e.as_ref().is_none_or(|e| e.dtype == dtype), "chunk_attend: q, k, v, g (and e) in one dtype");
    assert!(e.is_none() || !reverse, "chunk_scan: entering states only forward");
    let with_state = e.is_some();
    let [q, k, v, g] = [q, k, v, g].map(into_contiguous);
    // Without states the kernel's `states` argument goes unread: `g` stands in.
    let states = e.map_or_else(|| g.clone(), into_contiguous);
    let out = empty_device_contiguous_dtype(client.clone(), device, Shape::new([bs, l, h, p]), dtype);
    if bs * l * h == 0 {
        return out; // CUDA refuses an empty grid
    }
    let slice = if n.is_multiple_of(32) { 32 } else { 16 };
    let count = CubeCount::Static(chunk.div_ceil(ROWS) as u32, (l / chunk) as u32, (bs * h) as u32);
    if vectorized() && super::cube_vec::takes(n, p) {
        // SAFETY: as below; the vectorized kernel reads and writes the same elements.
        unsafe {
            super::cube_vec::chunk_attend_vec_kernel::launch_unchecked(
                &client,
                count,
                CubeDim::new_2d(SIDE as u32, SIDE as u32),
                q.into_tensor_arg(),
                k.into_tensor_arg(),
                v.into_tensor_arg(),
                g.into_tensor_arg(),
                states.into_tensor_arg(),
                out.clone().into_tensor_arg(),
                l,
                chunk,
                h,
                n,
                p,
                reverse,
                with_state,
                dtype_to_storage_type(dtype),
            );
        }
        return out;
    }
    // SAFETY: every tensor is contiguous in the shapes the callers asserted (`l` whole chunks,
    // `states [bs, l / chunk, h, p, n]`); a cube reads positions inside its own chunk of its own
    // head and that chunk's state, every position and column guarded against `l`, the chunk's
    // end and the widths, and writes its own rows.
    unsafe {
        chunk_attend_kernel::launch_unchecked(
            &client,
            count,
            CubeDim::new_2d(SIDE as u32, SIDE as u32),
            q.into_tensor_arg(),
            k.into_tensor_arg(),
            v.into_tensor_arg(),
            g.into_tensor_arg(),
            states.into_tensor_arg(),
            out.clone().into_tensor_arg(),
            l,
            chunk,
            h,
            n,
            p,
            slice,
            reverse,
            with_state,
            dtype_to_storage_type(dtype),
        );
    }
    out
}

/// Cube `(x, y, z)`: rows `x·ROWS ..` of chunk `y` of head `z` (`batch · h + head`); unit
/// `(tx, ty)` owns rows `ty·4 .. ty·4 + 4` and, per key tile, keys `tx` and `tx + 16`, and output
/// columns `tx, tx + 16, ..`. Shared memory: `qs[d·(ROWS + 1) + r]` and `ks[d·(KEYS + 1) + j]`
/// (transposed, and padded so that a warp's stores of one row's slice fall in different banks),
/// `vs[j·(p + 1) + c]` (padded: the state tiles store it a column at a time), `ss[r·(KEYS + 4) + j]` (a stride whose rows `r` and `r + 4`, read by one
/// warp, fall 16 banks apart), `gs[j]`.
#[cube(launch_unchecked)]
#[allow(clippy::too_many_arguments)]
fn chunk_attend_kernel<F: Float>(
    q: &Tensor<F>,
    k: &Tensor<F>,
    v: &Tensor<F>,
    g: &Tensor<F>,
    states: &Tensor<F>,
    out: &mut Tensor<F>,
    seq: usize,
    chunk: usize,
    heads: usize,
    #[comptime] n: usize,
    #[comptime] p: usize,
    #[comptime] slice: usize,
    #[comptime] reverse: bool,
    #[comptime] with_state: bool,
    #[define(F)] _dtype: ElemType,
) {
    let tx = UNIT_POS_X as usize;
    let ty = UNIT_POS_Y as usize;
    let unit = ty * SIDE + tx;
    let bh = CUBE_POS_Z as usize;
    // Position `t` of this head sits at row `base + t·heads` of the `[batch · seq · heads, w]` views.
    let base = (bh / heads) * seq * heads + bh % heads;
    let c0 = CUBE_POS_Y as usize * chunk;
    let c1 = c0 + chunk;
    let r0 = c0 + CUBE_POS_X as usize * ROWS;
    let r1 = min(r0 + ROWS, c1);
    // The keys a row of this cube may see: up to its last row, or from its first.
    let mut k0 = c0;
    let mut k1 = r1;
    if comptime!(reverse) {
        k0 = r0;
        k1 = c1;
    }
    let cols = comptime!(p / SIDE);
    // Chunk `CUBE_POS_Y` of head `bh`'s entering state, `[p, n]`, in `states [batch, chunks, heads, p, n]`.
    let state = (((bh / heads) * (seq / chunk) + CUBE_POS_Y as usize) * heads + bh % heads) * p * n;

    let mut gq = Array::<f32>::new(4usize);
    #[unroll]
    for i in 0..4usize {
        let t = r0 + ty * 4 + i;
        let mut gt = 0.0f32.runtime();
        if t < r1 {
            gt = f32::cast_from(g[base + t * heads]);
        }
        gq[i] = gt;
    }
    let mut acc = Array::<f32>::new(comptime!(4 * p / SIDE));
    #[unroll]
    for e in 0..comptime!(4 * p / SIDE) {
        acc[e] = 0.0;
    }

    let mut qs = Shared::<[f32]>::new_slice(comptime!(slice * (ROWS + 1)));
    let mut ks = Shared::<[f32]>::new_slice(comptime!(slice * (KEYS + 1)));
    let mut vs = Shared::<[f32]>::new_slice(comptime!(KEYS * (p + 1)));
    let mut ss = Shared::<[f32]>::new_slice(comptime!(ROWS * (KEYS + 4)));
    let mut gs = Shared::<[f32]>::new_slice(KEYS);

    let tiles = (k1 - k0).div_ceil(KEYS);
    // With the entering state, `n / KEYS` more tiles whose "scores" are `exp(g_t) q_t` and whose
    // "values" are the state's columns: `exp(g_t) E q_t` by the same accumulation.
    let state_tiles = comptime!(if with_state { n.div_ceil(KEYS) } else { 0 });
    for tile in 0..tiles + state_tiles {
      if tile < tiles {
        let j0 = k0 + tile * KEYS;
        // The tile's values and log decays; read after the scores' barriers.
        #[unroll]
        for e in 0..comptime!(KEYS * p / (SIDE * SIDE)) {
            let at = e * SIDE * SIDE + unit;
            let s = j0 + at / p;
            let mut x = 0.0f32.runtime();
            if s < k1 {
                x = f32::cast_from(v[(base + s * heads) * p + at % p]);
            }
            vs[(at / p) * (p + 1) + at % p] = x;
        }
        if unit < KEYS {
            let s = j0 + unit;
            let mut x = 0.0f32.runtime();
            if s < k1 {
                x = f32::cast_from(g[base + s * heads]);
            }
            gs[unit] = x;
        }

        let mut sc = Array::<f32>::new(8usize);
        #[unroll]
        for e in 0..8usize {
            sc[e] = 0.0;
        }
        for d0 in 0..comptime!(n / slice) {
            let col = d0 * slice;
            #[unroll]
            for e in 0..comptime!(ROWS * slice / (SIDE * SIDE)) {
                let at = e * SIDE * SIDE + unit;
                let (r, d) = (at / slice, at % slice);
                let t = r0 + r;
                let mut x = 0.0f32.runtime();
                if t < r1 {
                    x = f32::cast_from(q[(base + t * heads) * n + col + d]);
                }
                qs[d * (ROWS + 1) + r] = x;
            }
            #[unroll]
            for e in 0..comptime!(KEYS * slice / (SIDE * SIDE)) {
                let at = e * SIDE * SIDE + unit;
                let (j, d) = (at / slice, at % slice);
                let s = j0 + j;
                let mut x = 0.0f32.runtime();
                if s < k1 {
                    x = f32::cast_from(k[(base + s * heads) * n + col + d]);
                }
                ks[d * (KEYS + 1) + j] = x;
            }
            sync_cube();
            #[unroll]
            for d in 0..slice {
                let ka = ks[d * (KEYS + 1) + tx];
                let kb = ks[d * (KEYS + 1) + tx + SIDE];
                #[unroll]
                for i in 0..4usize {
                    let qv = qs[d * (ROWS + 1) + ty * 4 + i];
                    sc[i * 2] += qv * ka;
                    sc[i * 2 + 1] += qv * kb;
                }
            }
            sync_cube();
        }

        // Decayed and masked into shared memory. The exponent is taken only where the row sees
        // the key: elsewhere it may be positive and large, and inf · 0 would be NaN.
        #[unroll]
        for i in 0..4usize {
            let t = r0 + ty * 4 + i;
            #[unroll]
            for c in 0..2usize {
                let j = tx + c * SIDE;
                let s = j0 + j;
                let mut seen = s <= t;
                if comptime!(reverse) {
                    seen = s >= t;
                }
                let mut x = 0.0f32.runtime();
                if seen && s < k1 && t < r1 {
                    let mut gap = gq[i] - gs[j];
                    if comptime!(reverse) {
                        gap = gs[j] - gq[i];
                    }
                    x = sc[i * 2 + c] * gap.exp();
                }
                ss[(ty * 4 + i) * (KEYS + 4) + j] = x;
            }
        }
      } else {
        let col0 = (tile - tiles) * KEYS;
        #[unroll]
        for e in 0..comptime!(ROWS * KEYS / (SIDE * SIDE)) {
            let at = e * SIDE * SIDE + unit;
            let (r, j) = (at / KEYS, at % KEYS);
            let t = r0 + r;
            let mut x = 0.0f32.runtime();
            if t < r1 && col0 + j < n {
                let row = base + t * heads;
                x = f32::cast_from(g[row]).exp() * f32::cast_from(q[row * n + col0 + j]);
            }
            ss[r * (KEYS + 4) + j] = x;
        }
        #[unroll]
        for e in 0..comptime!(KEYS * p / (SIDE * SIDE)) {
            let at = e * SIDE * SIDE + unit;
            let (c, j) = (at / KEYS, at % KEYS);
            let mut x = 0.0f32.runtime();
            if col0 + j < n {
                x = f32::cast_from(states[state + c * n + col0 + j]);
            }
            vs[j * (p + 1) + c] = x;
        }
      }
        sync_cube();

        let mut w = Array::<f32>::new(4usize);
        #[unroll]
        for j in 0..KEYS {
            #[unroll]
            for i in 0..4usize {
                w[i] = ss[(ty * 4 + i) * (KEYS + 4) + j];
            }
            #[unroll]
            for c in 0..cols {
                let x = vs[j * (p + 1) + tx + c * SIDE];
                #[unroll]
                for i in 0..4usize {
                    acc[i * cols + c] += w[i] * x;
                }
            }
        }
        sync_cube();
    }

    #[unroll]
    for i in 0..4usize {
        let t = r0 + ty * 4 + i;
        if t < r1 {
            #[unroll]
            for c in 0..cols {
                out[(base + t * heads) * p + tx + c * SIDE] = F::cast_from(acc[i * cols + c]);
            }
        }
    }
}
