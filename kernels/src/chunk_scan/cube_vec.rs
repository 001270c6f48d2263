//! [`super::cube`]'s kernel with its shared-memory reads four (or two) values at a time. The
//! scalar kernel issues six shared loads for every eight products while forming scores and one
//! load per two products while accumulating outputs: the H200 spent most of its issue slots on
//! loads (~16 TFLOP/s of f32, session 14). Here `q`, the scores and `v` are staged as 4-vectors
//! (a unit's four rows, or four columns) and `k` as 2-vectors (a unit's two keys), so a score
//! step is two loads for eight products and an output step two loads (p = 64) for sixteen.
//! Each score and each output sums its terms in the scalar kernel's order; only the units that
//! hold them differ. Session 14 (H200, f32, SmolLM2's layer at 16 x 2,048): 565 µs against 612.
//!
//! Takes `p` a multiple of 64 (a unit's columns are whole 4-vectors, 16 units wide) and `n` a
//! multiple of 32 (the staged slice).

use burn_cubecl::cubecl;
use cubecl::prelude::*;

use super::cube::{KEYS, ROWS, SIDE};

type V4 = Vector<f32, Const<4>>;
type V2 = Vector<f32, Const<2>>;

/// The staged slice of `q`'s and `k`'s width.
pub(crate) const SLICE: usize = 32;

pub(crate) fn takes(n: usize, p: usize) -> bool {
    n > 0 && n.is_multiple_of(SLICE) && p > 0 && p.is_multiple_of(4 * SIDE) && p <= 8 * SIDE
}

/// As [`super::cube`]'s kernel. Shared memory, in vectors: `qv[d·17 + g]` = rows `4g .. 4g + 4`
/// of `q` at column `d`; `kv[d·17 + g]` = keys `2g, 2g + 1` of `k`; `sv[j·17 + g]` = the scores
/// of rows `4g ..` at key `j`; `vv[j·(p/4 + 1) + g]` = columns `4g ..` of `v` at key `j`. The
/// `+ 1` in each stride keeps a warp's stores of one slice in different banks.
#[cube(launch_unchecked)]
#[allow(clippy::too_many_arguments)]
pub(crate) fn chunk_attend_vec_kernel<F: Float>(
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
    #[comptime] reverse: bool,
    #[comptime] with_state: bool,
    #[define(F)] _dtype: ElemType,
) {
    let tx = UNIT_POS_X as usize;
    let ty = UNIT_POS_Y as usize;
    let unit = ty * SIDE + tx;
    let bh = CUBE_POS_Z as usize;
    let base = (bh / heads) * seq * heads + bh % heads;
    let c0 = CUBE_POS_Y as usize * chunk;
    let c1 = c0 + chunk;
    let r0 = c0 + CUBE_POS_X as usize * ROWS;
    let r1 = min(r0 + ROWS, c1);
    let mut k0 = c0;
    let mut k1 = r1;
    if comptime!(reverse) {
        k0 = r0;
        k1 = c1;
    }
    let state = (((bh / heads) * (seq / chunk) + CUBE_POS_Y as usize) * heads + bh % heads) * p * n;
    let groups = comptime!(p / (4 * SIDE)); // a unit's 4-vectors of columns
    let row_vecs = comptime!(ROWS / 4 + 1);
    let key_vecs = comptime!(KEYS / 2 + 1);
    let col_vecs = comptime!(p / 4 + 1);

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

    let mut qv = Shared::<[V4]>::new_slice(comptime!(SLICE * (ROWS / 4 + 1)));
    let mut kv = Shared::<[V2]>::new_slice(comptime!(SLICE * (KEYS / 2 + 1)));
    let mut sv = Shared::<[V4]>::new_slice(comptime!(KEYS * (ROWS / 4 + 1)));
    let mut vv = Shared::<[V4]>::new_slice(comptime!(KEYS * (p / 4 + 1)));
    let mut gs = Shared::<[f32]>::new_slice(KEYS);

    let tiles = (k1 - k0).div_ceil(KEYS);
    let state_tiles = comptime!(if with_state { n.div_ceil(KEYS) } else { 0 });
    for tile in 0..tiles + state_tiles {
        if tile < tiles {
            let j0 = k0 + tile * KEYS;
            // Values: vector `at` of the tile is key `at / (p/4)`, columns `4 (at % (p/4)) ..`.
            #[unroll]
            for e in 0..comptime!(KEYS * p / (4 * SIDE * SIDE)) {
                let at = e * SIDE * SIDE + unit;
                let (j, cg) = (at / (p / 4), at % (p / 4));
                let s = j0 + j;
                let mut x = V4::empty();
                #[unroll]
                for i in 0..4usize {
                    let mut val = 0.0f32.runtime();
                    if s < k1 {
                        val = f32::cast_from(v[(base + s * heads) * p + cg * 4 + i]);
                    }
                    x.insert(i, val);
                }
                vv[j * col_vecs + cg] = x;
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
            for d0 in 0..comptime!(n / SLICE) {
                let col = d0 * SLICE;
                // q: vector `at` is column `at % SLICE` of rows `4 (at / SLICE) ..`.
                #[unroll]
                for e in 0..comptime!(ROWS * SLICE / (4 * SIDE * SIDE)) {
                    let at = e * SIDE * SIDE + unit;
                    let (rg, d) = (at / SLICE, at % SLICE);
                    let mut x = V4::empty();
                    #[unroll]
                    for i in 0..4usize {
                        let t = r0 + rg * 4 + i;
                        let mut val = 0.0f32.runtime();
                        if t < r1 {
                            val = f32::cast_from(q[(base + t * heads) * n + col + d]);
                        }
                        x.insert(i, val);
                    }
                    qv[d * row_vecs + rg] = x;
                }
                #[unroll]
                for e in 0..comptime!(KEYS * SLICE / (2 * SIDE * SIDE)) {
                    let at = e * SIDE * SIDE + unit;
                    let (kg, d) = (at / SLICE, at % SLICE);
                    let mut x = V2::empty();
                    #[unroll]
                    for c in 0..2usize {
                        let s = j0 + kg * 2 + c;
                        let mut val = 0.0f32.runtime();
                        if s < k1 {
                            val = f32::cast_from(k[(base + s * heads) * n + col + d]);
                        }
                        x.insert(c, val);
                    }
                    kv[d * key_vecs + kg] = x;
                }
                sync_cube();
                #[unroll]
                for d in 0..SLICE {
                    let qa = qv[d * row_vecs + ty];
                    let ka = kv[d * key_vecs + tx];
                    #[unroll]
                    for i in 0..4usize {
                        sc[i * 2] += qa.extract(i) * ka.extract(0usize);
                        sc[i * 2 + 1] += qa.extract(i) * ka.extract(1usize);
                    }
                }
                sync_cube();
            }

            // Decayed and masked, as vectors over the unit's four rows, one per key.
            #[unroll]
            for c in 0..2usize {
                let j = tx * 2 + c;
                let s = j0 + j;
                let mut x = V4::empty();
                #[unroll]
                for i in 0..4usize {
                    let t = r0 + ty * 4 + i;
                    let mut seen = s <= t;
                    if comptime!(reverse) {
                        seen = s >= t;
                    }
                    let mut val = 0.0f32.runtime();
                    if seen && s < k1 && t < r1 {
                        let mut gap = gq[i] - gs[j];
                        if comptime!(reverse) {
                            gap = gs[j] - gq[i];
                        }
                        val = sc[i * 2 + c] * gap.exp();
                    }
                    x.insert(i, val);
                }
                sv[j * row_vecs + ty] = x;
            }
        } else {
            let col0 = (tile - tiles) * KEYS;
            // Scores exp(g_t) q_t: vector `at` is column `at % KEYS` of rows `4 (at / KEYS) ..`.
            #[unroll]
            for e in 0..comptime!(ROWS * KEYS / (4 * SIDE * SIDE)) {
                let at = e * SIDE * SIDE + unit;
                let (rg, j) = (at / KEYS, at % KEYS);
                let mut x = V4::empty();
                #[unroll]
                for i in 0..4usize {
                    let t = r0 + rg * 4 + i;
                    let mut val = 0.0f32.runtime();
                    if t < r1 && col0 + j < n {
                        let row = base + t * heads;
                        val = f32::cast_from(g[row]).exp() * f32::cast_from(q[row * n + col0 + j]);
                    }
                    x.insert(i, val);
                }
                sv[j * row_vecs + rg] = x;
            }
            // Values E[c][col0 + j]: vector `at` is key `at % KEYS`, columns `4 (at / KEYS) ..`.
            #[unroll]
            for e in 0..comptime!(KEYS * p / (4 * SIDE * SIDE)) {
                let at = e * SIDE * SIDE + unit;
                let (cg, j) = (at / KEYS, at % KEYS);
                let mut x = V4::empty();
                #[unroll]
                for i in 0..4usize {
                    let mut val = 0.0f32.runtime();
                    if col0 + j < n {
                        val = f32::cast_from(states[state + (cg * 4 + i) * n + col0 + j]);
                    }
                    x.insert(i, val);
                }
                vv[j * col_vecs + cg] = x;
            }
        }
        sync_cube();

        #[unroll]
        for j in 0..KEYS {
            let w = sv[j * row_vecs + ty];
            #[unroll]
            for cv in 0..groups {
                let x = vv[j * col_vecs + tx + cv * SIDE];
                #[unroll]
                for i in 0..4usize {
                    #[unroll]
                    for e in 0..4usize {
                        acc[(i * groups + cv) * 4 + e] += w.extract(i) * x.extract(e);
                    }
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
            for cv in 0..groups {
                #[unroll]
                for e in 0..4usize {
                    out[(base + t * heads) * p + (tx + cv * SIDE) * 4 + e] = F::cast_from(acc[(i * groups + cv) * 4 + e]);
                }
            }
        }
    }
}
