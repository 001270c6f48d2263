//! The steps kernel's body (launched from [`super::cube`]).
//!
//! A cube holds `rows` rows of one head; each row is walked by `lanes` units along the state
//! dimension, so a warp reads consecutive state entries (one unit per row, walking it alone with a
//! stride of `n`, reached 10% of the H200's bandwidth). Each unit keeps its state entries in
//! registers across all the steps: the state is read once and written once (at `snap_at`), in
//! whole vectors of `w` entries. Before the steps, the cube's units convolve the conv inputs of
//! up to `CHUNK` steps at once into shared memory (`B` and `C` of the head, `x` of its rows: loads
//! issued together, and one barrier per chunk rather than three per step); a step reads its `B`
//! and `C` from there as vectors of `w` entries. A row's `y` is the sum over its lanes by warp
//! shuffles (or, after the chunk's steps, through shared memory: `shared_readout` in [`super::cube`]).
//! Cubes have 512 units: every cube of a head convolves the same `B` and `C` (so not fewer), and
//! an SM holds two to four cubes of 512 but one of 1,024, which then leaves it idle at every
//! barrier (ncu, session 11). One step walks a row with 16 lanes; several steps with 8 where the
//! launch still has a cube for every SM ([`super::shape::lanes_for`]), a unit then walking its
//! 16 entries in two passes over the chunk's steps, 8 at a time ([`super::shape::passes_for`]).
//! The cube's shape and the passes never change the arithmetic, so every shape rounds alike.
//! Accumulation is f32 whatever the model dtype.
//!
//! Where several steps' time went (ncu, Llama-3-8B's layer at batch 32, bf16, H200): at 16
//! lanes the 5-step launch was bound by instruction issue (0.82 warps issued a scheduler and
//! cycle, 94% occupancy). Session 17 cut its instructions from 954 a warp to 778 by loading `B`
//! and `C` as 4-vectors (a scalar load an entry cost two instructions of address arithmetic
//! besides), then to less than half by walking rows with 4 lanes, where a cube of a whole head
//! convolves `B` and `C` once rather than four times: 5 steps 84 -> 66 µs, one step 55 -> 49.
//! A unit then holds 32 entries and takes 61 registers (two cubes an SM, 47% occupancy), and
//! the launch waits on latency instead (0.43 issued; stalls on shared and global loads). Session
//! 18's passes hold half a unit's entries at a time: at 8 lanes that is 32 registers, four cubes
//! an SM (90% occupancy, 0.71 issued), and 5 steps in 62 µs (the cube of half a head convolves
//! `B` and `C` twice a head, but occupancy pays for it). Two passes at 4 lanes kept 62
//! registers: nvcc held both halves. What was tried and measured before: one scalar load of `B`
//! and `C` an entry in a strided layout (session 13: 4-entry loads there raised the registers
//! to 64-83), an unrolled step loop, a rows layout with 86-96 registers (session 15, 515ec8b),
//! rows a unit (sessions 16 and 18), `B` and `C` in shared memory in bf16 (session 18: within
//! noise), a unit a conv channel over the chunk's steps (session 18: 20% slower): none paid.

use burn_cubecl::cubecl;
use cubecl::prelude::*;

/// The conv inputs, `K - 1 + steps` rows a batch, as `before [bs, split, C]` then `xbc [bs, ..,
/// C]`, any strides; contiguous: `conv_weight [C, K]`, `dt [bs, steps, h]`, `state` and `snapshot [bs, h,
/// p, n]` (with `every`, `snapshot [steps · bs, h, p, n]`: the state after each step), `y [bs,
/// steps - emit_from, h, p]`, `window [bs, K - 1, C]` (the last `K - 1` inputs). Cube `CUBE_POS` holds rows `p0 ..
/// p0 + rows` of head `(bi, hi)`; unit `(lane, r)` keeps the state entries of virtual lanes
/// `lane, lane + lanes, ..` (below `virt`) of row `p0 + r`, virtual lane `v` holding the `n /
/// virt` contiguous entries from `v · n / virt` (so that `B` and `C` load as vectors of `w`).
#[cube(launch_unchecked)]
#[allow(clippy::too_many_arguments)]
pub(super) fn mamba2_steps_kernel<F: Float, N: Size>(
    before: &Tensor<F>,
    xbc: &Tensor<F>,
    conv_weight: &Tensor<F>,
    conv_bias: &Tensor<F>,
    dt: &Tensor<F>,
    dt_bias: &Tensor<F>,
    a: &Tensor<f32>,
    d: &Tensor<F>,
    state: &Tensor<Vector<f32, N>>,
    y: &mut Tensor<f32>,
    snapshot: &mut Tensor<Vector<f32, N>>,
    window: &mut Tensor<F>,
    strides: InputStrides,
    steps: usize,
    split: usize,
    snap_at: usize,
    emit_from: usize,
    #[comptime] h: usize,
    #[comptime] kv: usize,
    #[comptime] p: usize,
    #[comptime] n: usize,
    #[comptime] k: usize,
    #[comptime] lanes: usize,
    #[comptime] virt: usize,
    #[comptime] rows: usize,
    #[comptime] chunk: usize,
    #[comptime] every: bool,
    #[comptime] deferred: bool,
    #[comptime] joined: bool,
    #[comptime] w: usize,
    #[comptime] passes: usize,
    #[define(F)] _dtype: ElemType,
) {
    let channels = kv * p + kv * n + h * n;
    let units = comptime!(rows * lanes);
    let lane = UNIT_POS_X as usize;
    let r = UNIT_POS_Y as usize;
    let unit = r * lanes + lane;
    let hb = CUBE_POS / (p / rows); // bi * h + hi
    let hi = hb % h;
    let bi = hb / h;
    let g = hi / (h / kv);
    let p0 = (CUBE_POS % (p / rows)) * rows;
    let per = comptime!(n / virt); // entries per virtual lane
    let vecs = comptime!(per / w); // vectors of `w` entries per virtual lane
    // The unit's first vector of `state`: its virtual lane `lane`'s.
    let at = (hb * p + p0 + r) * comptime!(n / w) + lane * vecs;

    // Per step of the chunk: bc[t·2n ..][0..n] = B of the head's group, [n..2n] = C of the head;
    // xs[t·rows + r] = x of row p0 + r; dts[t] = softplus(dt + bias), decays[t] = exp(dt·A).
    // The step loop then reads only shared memory and registers: no global load, no
    // transcendental in the chain of dependent steps.
    let mut bc = Shared::<[Vector<f32, N>]>::new_slice(comptime!(chunk * 2 * n / w));
    let mut xs = Shared::<[f32]>::new_slice(chunk * rows);
    let mut dts = Shared::<[f32]>::new_slice(chunk);
    let mut decays = Shared::<[f32]>::new_slice(chunk);
    // parts[tt · rows · (lanes + 1) + r · (lanes + 1) + lane]: unit (lane, r)'s share of row r's
    // read-out at step tt of the chunk; a row's stride of `lanes + 1` keeps the read-out's loads,
    // a unit a row, in different banks.
    let row_stride = comptime!(lanes + 1);
    let mut parts = Shared::<[f32]>::new_slice(comptime!(if deferred { chunk * rows * (lanes + 1) } else { 1 }));
    let groups = comptime!(virt / lanes); // virtual lanes per unit
    // The unit's group `q` is virtual lane `lane + q · lanes`, its `j`-th entry in vector
    // `at + q · lanes · vecs + j / w`: whole vectors, so that a warp's loads and stores of the
    // state are `lanes` consecutive vectors a row (strided scalars made the decode step 40%
    // slower: four times the sectors an instruction). With `passes` > 1 (one chunk), a unit
    // walks its groups in that many passes over the steps, pass `pass` those with `q % passes ==
    // pass`, and holds only one pass's: entry `qi · per + j` of `s` is group `qi · passes + pass`'s.
    let held = comptime!(groups / passes);
    let mut s = Array::<f32>::new(comptime!(held * per));
    load_state::<N>(state, &mut s, at, 0usize, held, passes, vecs, lanes, w);
    // In vectors, as the cubes cover the state.
    let state_len = CUBE_COUNT as usize * comptime!(rows * n / w);
    let mut accs = Array::<f32>::new(held);
    // carried[tt · units + unit]: the unit's sum over its earlier passes' groups at step tt.
    let mut carried = Shared::<[f32]>::new_slice(comptime!(if passes > 1 { chunk * units } else { 1 }));
    let a_h = a[hi];
    let d_h = f32::cast_from(d[hi]);
    let bias_h = f32::cast_from(dt_bias[hi]);

    for c in 0..steps.div_ceil(chunk) {
        let c0 = c * chunk;
        let m = min(chunk, steps - c0);
        if c > 0 {
            // The previous chunk's readers of `bc` and `xs` are done. (Uniform across the cube.)
            sync_cube();
        }
        // The chunk's convolutions, `B` and `C` then `x`, one index space over the units, so
        // that no unit does two while others do none; `dt` by the units after them.
        let bc_len = m * 2 * n;
        let convs = bc_len + m * rows;
        for j in 0..convs.div_ceil(units) {
            let i = j * units + unit;
            if i < bc_len {
                let t = i / (2 * n);
                let ci = i % (2 * n);
                let ch = if ci < n { kv * p + g * n + ci } else { kv * (p + n) + hi * n + (ci - n) };
                let scalars = bc.with_vector_size_mut::<Const<1>>();
                scalars[i] = Vector::<f32, Const<1>>::new(conv_silu::<F>(before, xbc, &strides, split, conv_weight, conv_bias, bi, c0 + t, ch, k, joined));
            } else if i < convs {
                let o = i - bc_len;
                xs[o] = conv_silu::<F>(before, xbc, &strides, split, conv_weight, conv_bias, bi, c0 + o / rows, g * p + p0 + o % rows, k, joined);
            }
        }
        let tt = (unit + units - convs % units) % units;
        if tt < m {
            let dt_v = softplus_f32(f32::cast_from(dt[(bi * steps + c0 + tt) * h + hi]) + bias_h);
            dts[tt] = dt_v;
            decays[tt] = (dt_v * a_h).exp();
        }
        if c == 0 {
            // Here rather than first: its loads then wait behind the chunk's, not before them.
            write_window::<F>(before, xbc, window, &strides, split, steps, channels, unit, units, k, joined);
            if snap_at == 0 {
                // After the convolutions: a store of the state (even one predicated off) waits
                // for its load, which would hold the convolutions' loads back by one latency.
                store_state::<N>(snapshot, &s, at, 0usize, held, passes, vecs, lanes, w);
            }
        }
        sync_cube();

        #[unroll]
        for pass in 0..passes {
            if comptime!(pass > 0) {
                load_state::<N>(state, &mut s, at, pass, held, passes, vecs, lanes, w);
                if snap_at == 0 {
                    store_state::<N>(snapshot, &s, at, pass, held, passes, vecs, lanes, w);
                }
            }
            for tt in 0..m {
                let t = c0 + tt;
                let x = xs[tt * rows + r];
                let decay = decays[tt];
                let dx = dts[tt] * x;
                // `B` and `C` of the step, `w` entries a load: the unit's virtual lanes hold
                // contiguous entries, so a row's lanes read consecutive vectors (a warp's other rows
                // the same ones). One scalar load an entry had a warp issue 94 instructions
                // a step (ncu, session 17), a shared load and two of address arithmetic each.
                let base = tt * comptime!(2 * n / w) + lane * vecs;
                #[unroll]
                for qi in 0..held {
                    let q = comptime!(qi * passes + pass);
                    let mut part = 0.0f32;
                    #[unroll]
                    for v in 0..vecs {
                        let bv = bc[base + comptime!(q * lanes * vecs + v)];
                        let cv = bc[base + comptime!(n / w + q * lanes * vecs + v)];
                        #[unroll]
                        for e in 0..w {
                            let i = comptime!(qi * per + v * w + e);
                            s[i] = s[i] * decay + dx * bv.extract(e);
                            part += s[i] * cv.extract(e);
                        }
                    }
                    accs[qi] = part;
                }
                // The unit's virtual lanes pairwise, as the shuffles at offsets `virt / 2` down
                // to `lanes` would have added them across lanes. A pass's groups lie `passes`
                // apart, so pairwise they add as those levels do, all but the last; the last adds
                // the two passes' sums (`carried` + `acc`).
                pairwise_sum(&mut accs, held);
                let mut acc = accs[0];
                keep_state::<N>(snapshot, &s, t, state_len, at, snap_at, pass, held, passes, vecs, lanes, w, every);
                if comptime!(pass + 1 < passes) {
                    carried[tt * units + unit] = acc;
                } else {
                    if comptime!(passes > 1) {
                        acc = carried[tt * units + unit] + acc;
                    }
                    if comptime!(deferred) {
                        parts[(tt * rows + r) * row_stride + lane] = acc;
                    } else if t >= emit_from {
                        // Uniform across the cube, so every lane of a warp takes part in the shuffles.
                        #[unroll]
                        for i in 0..comptime!(lanes.trailing_zeros() as usize) {
                            acc += plane_shuffle_xor(acc, (lanes >> (i + 1)) as u32);
                        }
                        if lane == 0 {
                            y[((bi * (steps - emit_from) + (t - emit_from)) * h + hi) * p + p0 + r] = acc + d_h * x;
                        }
                    }
                }
            }
        }
        if comptime!(deferred) {
            // The chunk's outputs, one a unit: a row's `lanes` parts load side by side and add
            // pairwise at offsets `lanes / 2` down to 1, as the shuffles add them.
            sync_cube();
            let mut v = Array::<f32>::new(lanes);
            for j in 0..(m * rows).div_ceil(units) {
                let o = j * units + unit;
                if o < m * rows {
                    let tt = o / rows;
                    let rr = o % rows;
                    let t = c0 + tt;
                    if t >= emit_from {
                        #[unroll]
                        for i in 0..lanes {
                            v[i] = parts[o * row_stride + i];
                        }
                        pairwise_sum(&mut v, lanes);
                        y[((bi * (steps - emit_from) + (t - emit_from)) * h + hi) * p + p0 + rr] = v[0] + d_h * xs[tt * rows + rr];
                    }
                }
            }
        }
    }
}

/// After step `t`, the unit's state entries into `snapshot`: every step's (`every`), or the
/// state after step `snap_at - 1`.
#[cube]
#[allow(clippy::too_many_arguments)]
fn keep_state<N: Size>(
    snapshot: &mut Tensor<Vector<f32, N>>,
    s: &Array<f32>,
    t: usize,
    state_len: usize,
    at: usize,
    snap_at: usize,
    #[comptime] pass: usize,
    #[comptime] held: usize,
    #[comptime] passes: usize,
    #[comptime] vecs: usize,
    #[comptime] lanes: usize,
    #[comptime] w: usize,
    #[comptime] every: bool,
) {
    if comptime!(every) {
        store_state::<N>(snapshot, s, t * state_len + at, pass, held, passes, vecs, lanes, w);
    } else if t + 1 == snap_at {
        store_state::<N>(snapshot, s, at, pass, held, passes, vecs, lanes, w);
    }
}

/// Pass `pass`'s state entries of the unit from `state`, vector `at` on (see [`store_state`]).
#[cube]
#[allow(clippy::too_many_arguments)]
fn load_state<N: Size>(state: &Tensor<Vector<f32, N>>, s: &mut Array<f32>, at: usize, #[comptime] pass: usize, #[comptime] held: usize, #[comptime] passes: usize, #[comptime] vecs: usize, #[comptime] lanes: usize, #[comptime] w: usize) {
    #[unroll]
    for qi in 0..held {
        #[unroll]
        for v in 0..vecs {
            let x = state[at + comptime!((qi * passes + pass) * lanes * vecs + v)];
            #[unroll]
            for e in 0..w {
                s[comptime!(qi * vecs * w + v * w + e)] = x.extract(e);
            }
        }
    }
}

/// Pass `pass`'s state entries of the unit into `out` from vector `at`: its `held` groups, group
/// `q = qi · passes + pass` (virtual lane `lane + q · lanes`) at `at + q · lanes · vecs`.
#[cube]
#[allow(clippy::too_many_arguments)]
fn store_state<N: Size>(out: &mut Tensor<Vector<f32, N>>, s: &Array<f32>, at: usize, #[comptime] pass: usize, #[comptime] held: usize, #[comptime] passes: usize, #[comptime] vecs: usize, #[comptime] lanes: usize, #[comptime] w: usize) {
    #[unroll]
    for qi in 0..held {
        #[unroll]
        for v in 0..vecs {
            let mut x = Vector::<f32, N>::empty();
            #[unroll]
            for e in 0..w {
                x.insert(e, s[comptime!(qi * vecs * w + v * w + e)]);
            }
            out[at + comptime!((qi * passes + pass) * lanes * vecs + v)] = x;
        }
    }
}

/// `v[0] = ` the sum of `v[0..len]` (`len` a power of two up to 32) added pairwise at offsets
/// `len / 2` down to 1: the order in which shuffles by xor leave the sum at lane 0.
#[cube]
fn pairwise_sum(v: &mut Array<f32>, #[comptime] len: usize) {
    if comptime!(len >= 32) {
        #[unroll]
        for q in 0..16 {
            v[q] = v[q] + v[q + 16];
        }
    }
    if comptime!(len >= 16) {
        #[unroll]
        for q in 0..8 {
            v[q] = v[q] + v[q + 8];
        }
    }
    if comptime!(len >= 8) {
        #[unroll]
        for q in 0..4 {
            v[q] = v[q] + v[q + 4];
        }
    }
    if comptime!(len >= 4) {
        #[unroll]
        for q in 0..2 {
            v[q] = v[q] + v[q + 2];
        }
    }
    if comptime!(len >= 2) {
        v[0] = v[0] + v[1];
    }
}

/// The conv inputs' strides, batch, row and channel of `before` then of `xbc`, as launch
/// scalars. Read from the tensors' metadata they were loads from global memory at every cube's
/// start, on the path to its first convolution: ncu put 15% of a decode step's stall samples on
/// the wait for them at batch 32 (session 16).
#[derive(CubeType, CubeLaunch, Clone, Copy)]
pub(crate) struct InputStrides {
    b_batch: usize,
    b_row: usize,
    b_ch: usize,
    x_batch: usize,
    x_row: usize,
    x_ch: usize,
}

/// The next window (the last `K - 1` conv inputs): the copy a concatenation used to make, in
/// this launch. Each cube copies its share, whole warps of consecutive elements, by its last
/// units: those the chunk's convolutions (from its first unit on) leave idle, at the shapes
/// decoding runs. Nothing with `joined` (the caller slices its concatenation).
#[cube]
#[allow(clippy::too_many_arguments)]
fn write_window<F: Float>(
    before: &Tensor<F>,
    xbc: &Tensor<F>,
    window: &mut Tensor<F>,
    strides: &InputStrides,
    split: usize,
    steps: usize,
    channels: usize,
    unit: usize,
    #[comptime] units: usize,
    #[comptime] k: usize,
    #[comptime] joined: bool,
) {
    if comptime!(!joined) {
        let window_len = window.len();
        let share = window_len.div_ceil(CUBE_COUNT as usize * 32) * 32;
        for j in 0..share.div_ceil(units) {
            let w = j * units + (units - 1 - unit);
            let e = CUBE_POS as usize * share + w;
            if w < share && e < window_len {
                let ch = e % channels;
                let wr = (e / channels) % (k - 1);
                window[e] = conv_input::<F>(before, xbc, strides, split, e / (channels * (k - 1)), steps + wr, ch, joined);
            }
        }
    }
}

/// Conv input row `row` of batch `b` at channel `ch`: of `before` below `split`, of `xbc` from
/// there, each read through its strides.
#[cube]
#[allow(clippy::too_many_arguments)]
fn conv_input<F: Float>(before: &Tensor<F>, xbc: &Tensor<F>, strides: &InputStrides, split: usize, b: usize, row: usize, ch: usize, #[comptime] joined: bool) -> F {
    if comptime!(joined) {
        xbc[b * strides.x_batch + row * strides.x_row + ch * strides.x_ch]
    } else if row < split {
        before[b * strides.b_batch + row * strides.b_row + ch * strides.b_ch]
    } else {
        xbc[b * strides.x_batch + (row - split) * strides.x_row + ch * strides.x_ch]
    }
}

/// `silu(bias + Σ_j w[ch, j] · input[row0 + j, ch])` in f32, the inputs those of
/// [`conv_input`] for batch `b`, rounded to `F` after the sum as the reference's conv output is.
#[cube]
#[allow(clippy::too_many_arguments)]
fn conv_silu<F: Float>(before: &Tensor<F>, xbc: &Tensor<F>, strides: &InputStrides, split: usize, conv_weight: &Tensor<F>, conv_bias: &Tensor<F>, b: usize, row0: usize, ch: usize, #[comptime] k: usize, #[comptime] joined: bool) -> f32 {
    let mut sum = f32::cast_from(conv_bias[ch]);
    #[unroll]
    for j in 0..k {
        sum += f32::cast_from(conv_weight[ch * k + j]) * f32::cast_from(conv_input::<F>(before, xbc, strides, split, b, row0 + j, ch, joined));
    }
    let v = f32::cast_from(F::cast_from(sum));
    let s = v / (1.0 + (-v).exp());
    f32::cast_from(F::cast_from(s))
}

#[cube]
fn softplus_f32(v: f32) -> f32 {
    // torch.nn.functional.softplus with threshold 20.
    if v > 20.0 { v } else { (1.0 + v.exp()).ln() }
}
