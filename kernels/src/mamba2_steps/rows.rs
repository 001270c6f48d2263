//! The steps kernel with a warp's lanes on state rows and a unit's entries contiguous
//! (`DISTILL_STEPS_LAYOUT=rows`, to measure against the lanes layout of [`super::cube`]).
//!
//! Why: several steps of the lanes layout are bound by instruction issue (session 13): each
//! unit loads `B` and `C` one entry at a time from shared memory, two loads for two FMAs, and
//! sums a row's read-out by shuffles in every step. Here the 32 lanes of a warp hold 32 rows of
//! one head and the same 8 state entries of each, so a step's `B` and `C` are two 4-vector
//! loads each that every lane of the warp shares (a broadcast), and the read-out's partial sums
//! go to shared memory for one pairwise sum a row after the chunk's steps. The state still stays
//! in registers across the steps, read once and written once; it passes through a shared tile
//! so that global loads and stores are whole rows rather than 8 entries at a 512-byte stride.
//!
//! The arithmetic of a step is the lanes layout's in another order: a row's read-out sums each
//! unit's 8 entries in sequence, then the units pairwise. Decoding's one step and
//! verification's several run this same kernel, so they still round alike.

use burn_cubecl::cubecl;
use cubecl::prelude::*;

use super::cube::{conv_silu, input_strides, pairwise_sum, softplus_f32, write_window};

type V4 = Vector<f32, Const<4>>;

/// State entries a unit keeps: two 4-vectors of `B` and two of `C` a step.
pub(super) const SEG: usize = 8;
/// Rows of a warp.
const LANES: usize = 32;
/// Steps whose convolved inputs sit in shared memory at once, at most: the tile, `B` and `C`
/// and the read-out's partial sums must fit CUDA's 48 KB of static shared memory a cube.
pub(super) const CHUNK: usize = 8;
const STATIC_SHARED: usize = 48 * 1024;

/// `(rows, units)` of a cube: 32 rows times as many as keep it at 512 units or fewer, dividing
/// `p`; `None` where this layout does not take the shape (then the lanes layout does).
pub(super) fn cube_shape(p: usize, n: usize) -> Option<(usize, usize)> {
    let segs = n / SEG;
    if !n.is_multiple_of(SEG) || !segs.is_power_of_two() || segs > 32 || !p.is_multiple_of(LANES) {
        return None;
    }
    let mut groups = (512 / (LANES * segs)).max(1);
    while !(p / LANES).is_multiple_of(groups) {
        groups -= 1;
    }
    let rows = LANES * groups;
    let shared = 4 * (rows * (n + 1) + CHUNK * 2 * n + scratch_len(CHUNK, n, rows) + CHUNK * rows + 2 * CHUNK);
    (shared <= STATIC_SHARED).then_some((rows, rows * segs))
}

/// `scratch`'s floats: a chunk's `B` and `C`, then its read-out's partial sums.
const fn scratch_len(chunk: usize, n: usize, rows: usize) -> usize {
    let parts = chunk * rows * (n / SEG + 1);
    if parts > chunk * 2 * n { parts } else { chunk * 2 * n }
}

/// As [`super::cube`]'s kernel, same arguments and shapes; cube `CUBE_POS` holds rows `p0 .. p0
/// + rows` of head `(bi, hi)`; unit `(lane, y)` keeps entries `seg·8 .. seg·8 + 8` of row
/// `(y / segs)·32 + lane`, `seg = y % segs`.
#[cube(launch_unchecked)]
#[allow(clippy::too_many_arguments)]
pub(super) fn mamba2_steps_rows_kernel<F: Float>(
    before: &Tensor<F>,
    xbc: &Tensor<F>,
    conv_weight: &Tensor<F>,
    conv_bias: &Tensor<F>,
    dt: &Tensor<F>,
    dt_bias: &Tensor<F>,
    a: &Tensor<f32>,
    d: &Tensor<F>,
    state: &Tensor<f32>,
    y: &mut Tensor<f32>,
    snapshot: &mut Tensor<f32>,
    window: &mut Tensor<F>,
    steps: usize,
    split: usize,
    snap_at: usize,
    emit_from: usize,
    #[comptime] h: usize,
    #[comptime] kv: usize,
    #[comptime] p: usize,
    #[comptime] n: usize,
    #[comptime] k: usize,
    #[comptime] rows: usize,
    #[comptime] chunk: usize,
    #[comptime] every: bool,
    #[comptime] joined: bool,
    #[define(F)] _dtype: ElemType,
) {
    let segs = comptime!(n / SEG);
    let units = comptime!(rows * segs);
    let channels = kv * p + kv * n + h * n;
    let lane = UNIT_POS_X as usize;
    let uy = UNIT_POS_Y as usize;
    let seg = uy % segs;
    let r = (uy / segs) * LANES + lane;
    let unit = uy * LANES + lane;
    let hb = CUBE_POS / (p / rows); // bi * h + hi
    let hi = hb % h;
    let bi = hb / h;
    let g = hi / (h / kv);
    let p0 = (CUBE_POS % (p / rows)) * rows;
    // The cube's rows of the state, contiguous.
    let block = (hb * p + p0) * n;

    let mut strides = Array::<usize>::new(6usize);
    input_strides::<F>(before, xbc, &mut strides);
    write_window::<F>(before, xbc, window, &strides, split, steps, channels, unit, units, k, joined);

    // The state through the tile: row `rr` at `rr · (n + 1)`, an odd stride, so a warp's 32 rows
    // fall in 32 banks.
    let tile_row = comptime!(n + 1);
    let mut tile = Shared::<[f32]>::new_slice(comptime!(rows * (n + 1)));
    #[unroll]
    for j in 0..SEG {
        let e = j * units + unit;
        tile[(e / n) * tile_row + e % n] = state[block + e];
    }
    sync_cube();
    let mut s = Array::<f32>::new(SEG);
    #[unroll]
    for i in 0..SEG {
        s[i] = tile[r * tile_row + seg * SEG + i];
    }
    if snap_at == 0 {
        // The tile holds the state as it came: copy it out as it went in.
        #[unroll]
        for j in 0..SEG {
            let e = j * units + unit;
            snapshot[block + e] = tile[(e / n) * tile_row + e % n];
        }
    }
    let state_len = state.len();

    // Per step of the chunk: bcv[t · 2n/4 ..] = B of the head's group (n/4 vectors), then C of
    // the head; xs[t · rows + r] = x of row p0 + r; dts[t] = softplus(dt + bias), decays[t] =
    // exp(dt·A). `scratch` holds first the chunk's B and C as scalars, each a unit's conv (four
    // convs a unit for a vector at once took 96 registers a unit, ncu: one cube an SM), then
    // parts[(t · rows + r) · (segs + 1) + seg] = unit (seg, r)'s share of row r's read-out (a
    // row's stride of segs + 1 keeps a warp's 32 stores in different banks).
    let quads = comptime!(2 * n / 4);
    let mut bcv = Shared::<[V4]>::new_slice(comptime!(chunk * 2 * n / 4));
    let mut xs = Shared::<[f32]>::new_slice(comptime!(chunk * rows));
    let mut dts = Shared::<[f32]>::new_slice(chunk);
    let mut decays = Shared::<[f32]>::new_slice(chunk);
    let part_row = comptime!(segs + 1);
    let mut scratch = Shared::<[f32]>::new_slice(comptime!(scratch_len(chunk, n, rows)));
    let mut sums = Array::<f32>::new(segs);
    let a_h = a[hi];
    let d_h = f32::cast_from(d[hi]);
    let bias_h = f32::cast_from(dt_bias[hi]);

    for c in 0..steps.div_ceil(chunk) {
        let c0 = c * chunk;
        let m = min(chunk, steps - c0);
        // The previous chunk's readers of `scratch`, `bcv` and `xs` are done.
        sync_cube();
        for j in 0..(m * 2 * n).div_ceil(units) {
            let i = j * units + unit;
            if i < m * 2 * n {
                let t = i / (2 * n);
                let ci = i % (2 * n);
                let ch = if ci < n { kv * p + g * n + ci } else { kv * (p + n) + hi * n + (ci - n) };
                scratch[i] = conv_silu::<F>(before, xbc, &strides, split, conv_weight, conv_bias, bi, c0 + t, ch, k, joined);
            }
        }
        for j in 0..(m * rows).div_ceil(units) {
            let i = j * units + unit;
            if i < m * rows {
                xs[i] = conv_silu::<F>(before, xbc, &strides, split, conv_weight, conv_bias, bi, c0 + i / rows, g * p + p0 + i % rows, k, joined);
            }
        }
        if unit < m {
            let dt_v = softplus_f32(f32::cast_from(dt[(bi * steps + c0 + unit) * h + hi]) + bias_h);
            dts[unit] = dt_v;
            decays[unit] = (dt_v * a_h).exp();
        }
        sync_cube();
        for j in 0..(m * quads).div_ceil(units) {
            let i = j * units + unit;
            if i < m * quads {
                let mut v = V4::empty();
                #[unroll]
                for q in 0..4usize {
                    v.insert(q, scratch[i * 4 + q]);
                }
                bcv[i] = v;
            }
        }
        sync_cube();

        for tt in 0..m {
            let t = c0 + tt;
            let decay = decays[tt];
            let dx = dts[tt] * xs[tt * rows + r];
            let at = tt * quads + seg * 2;
            let b0 = bcv[at];
            let b1 = bcv[at + 1];
            #[unroll]
            for i in 0..4usize {
                s[i] = s[i] * decay + dx * b0.extract(i);
                s[i + 4] = s[i + 4] * decay + dx * b1.extract(i);
            }
            if comptime!(every) {
                keep_state(snapshot, &mut tile, &s, t * state_len + block, r, seg, unit, units, n);
            } else if t + 1 == snap_at {
                keep_state(snapshot, &mut tile, &s, block, r, seg, unit, units, n);
            }
            // Replayed steps (before `emit_from`) have no output to read out.
            if t >= emit_from {
                let c0v = bcv[at + n / 4];
                let c1v = bcv[at + n / 4 + 1];
                let mut part = 0.0f32;
                #[unroll]
                for i in 0..4usize {
                    part += s[i] * c0v.extract(i);
                }
                #[unroll]
                for i in 0..4usize {
                    part += s[i + 4] * c1v.extract(i);
                }
                scratch[(tt * rows + r) * part_row + seg] = part;
            }
        }

        // The chunk's outputs, one a unit: a row's `segs` parts added pairwise.
        sync_cube();
        for j in 0..(m * rows).div_ceil(units) {
            let o = j * units + unit;
            if o < m * rows {
                let tt = o / rows;
                let t = c0 + tt;
                if t >= emit_from {
                    #[unroll]
                    for i in 0..segs {
                        sums[i] = scratch[o * part_row + i];
                    }
                    pairwise_sum(&mut sums, segs);
                    let rr = o % rows;
                    y[((bi * (steps - emit_from) + (t - emit_from)) * h + hi) * p + p0 + rr] = sums[0] + d_h * xs[o];
                }
            }
        }
    }
}

/// The cube's state into `snapshot` from `at` on: each unit's entries into the tile, then whole
/// rows out. Every unit of the cube calls it at the same step.
#[cube]
#[allow(clippy::too_many_arguments)]
fn keep_state(snapshot: &mut Tensor<f32>, tile: &mut Shared<[f32]>, s: &Array<f32>, at: usize, r: usize, seg: usize, unit: usize, #[comptime] units: usize, #[comptime] n: usize) {
    let tile_row = comptime!(n + 1);
    // The tile's last readers (the load, or the previous copy out) are done.
    sync_cube();
    #[unroll]
    for i in 0..SEG {
        tile[r * tile_row + seg * SEG + i] = s[i];
    }
    sync_cube();
    #[unroll]
    for j in 0..SEG {
        let e = j * units + unit;
        snapshot[at + e] = tile[(e / n) * tile_row + e % n];
    }
}
