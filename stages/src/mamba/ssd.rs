//! The Mamba-2 scan (state space duality, SSD) in three forms that compute the same map:
//! the chunked scan (training and prefill), the sequential recurrence (the definition), and
//! one recurrent step (decoding). All in f32; inputs are cast.
//!
//! Per head: `H_t = exp(dt_t A) H_{t-1} + dt_t x_t B_t^T`, `y_t = H_t C_t` (without the `D` skip).

use burn::tensor::{DType, Tensor};
use distill_kernels::chunk_scan::{chunk_scan, chunk_states, pass_states};

use crate::channels::mul_channels;

/// The chunked SSD scan. Within a chunk of `T` steps the output is a masked (decayed) attention
/// `y = (C B^T ∘ L) (dt x)`, where `L_ij = exp(sum_{j<k<=i} dt_k A)`; across chunks a state is
/// carried, one step per chunk. A sequence that is not a multiple of `T` is padded with `dt = 0`
/// steps, which leave the state unchanged.
///
/// # Shapes
/// - `x`: `[batch, seq, heads, p]`; `dt`: `[batch, seq, heads]` (after softplus); `a`: `[heads]` (negative)
/// - `b`, `c`: `[batch, seq, heads, n]` (already repeated to heads)
/// - `state`: `[batch, heads, p, n]`, the state before the first step
/// - returns `y` `[batch, seq, heads, p]` and the state after the last step
pub fn ssd_chunked(x: Tensor<4>, dt: Tensor<3>, a: Tensor<1>, b: Tensor<4>, c: Tensor<4>, state: Tensor<4>, chunk: usize) -> (Tensor<4>, Tensor<4>) {
    let [bs, l, h, p] = x.dims();
    let n = b.dims()[3];
    let device = x.device();
    let f = |t: Tensor<4>| t.cast(DType::F32);
    let (x, b, c, dt, a, state) = (f(x), f(b), f(c), dt.cast(DType::F32), a.cast(DType::F32), f(state));
    let t = chunk.clamp(1, l.max(1));
    let nc = l.div_ceil(t);
    let pad = nc * t - l;
    let pad4 = |v: Tensor<4>| {
        let [_, _, d2, d3] = v.dims();
        if pad == 0 { v } else { Tensor::cat(vec![v, Tensor::zeros([bs, pad, d2, d3], &device)], 1) }
    };
    let xdt = pad4(x * dt.clone().unsqueeze_dim::<4>(3)); // dt folded into x: [bs, nc*T, h, p]
    let dt = if pad == 0 { dt } else { Tensor::cat(vec![dt, Tensor::zeros([bs, pad, h], &device)], 1) };
    let (b, c) = (pad4(b), pad4(c));
    // g: the log decay from each chunk's start, [bs, nc*T, h] as the kernel reads it.
    let g = mul_channels(dt, a).reshape([bs, nc, t, h]).cumsum(2).reshape([bs, nc * t, h]);
    // Each chunk's own contribution to the state at its end: sum_s exp(g_{T-1} - g_s) xdt_s B_s^T
    // (a kernel on the GPU, reading xdt and B where they lie).
    let local = chunk_states(xdt.clone(), b.clone(), g.clone(), t); // [bs, nc, h, p, n]
    // Across chunks: the state entering each and the state after the last, from the entering
    // state and each chunk's own contribution (distill_kernels::pass_states: all chunks at once in
    // tensor ops, [nc+1, nc+1] decays times the stacked contributions, as ssd_minimal does,
    // rather than nc dependent steps of a few launches each; one launch each way on the GPU).
    let chunk_log = g.clone().reshape([bs, nc, t, h]).narrow(2, t - 1, 1).reshape([bs, nc, h]);
    let at_bounds = pass_states(local, chunk_log, state); // [bs, nc+1, h, p, n]
    let entering = at_bounds.clone().narrow(1, 0, nc);
    let s = at_bounds.narrow(1, nc, 1).reshape([bs, h, p, n]);
    // The output: inside each chunk, y_t = sum_{s<=t} (C_t . B_s) exp(g_t - g_s) xdt_s, plus the
    // state entering the chunk decayed to t and read out, exp(g_t) E C_t. One kernel on the GPU
    // (distill_kernels::chunk_scan; `[bs, nc, h, T, T]` scores in tensor ops elsewhere). The
    // exponent is a difference of running sums, as mamba_ssm's chunk-scan kernels form it: the
    // cancellation costs little in f32 (|g| <= T·max|dt·A|, a few hundred for trained layers, so
    // off by ~1e-5), and the cancellation-free form (a cumulative sum down each column of a
    // [T, T] mask, ssd_minimal's `segsum`) went through burn's cumulative kernel, which is
    // O(T^2) per column on the GPU: 8% of a hybrid's distillation step on the H200 at T = 256.
    let y = chunk_scan(c, b, xdt, g, entering, t).narrow(1, 0, l);
    (y, s)
}

/// The recurrence one step at a time: the definition the chunked scan must equal.
///
/// # Shapes
/// As [`ssd_chunked`].
pub fn ssd_sequential(x: Tensor<4>, dt: Tensor<3>, a: Tensor<1>, b: Tensor<4>, c: Tensor<4>, state: Tensor<4>) -> (Tensor<4>, Tensor<4>) {
    let [bs, l, h, p] = x.dims();
    let n = b.dims()[3];
    let mut s = state;
    let mut ys = Vec::with_capacity(l);
    for i in 0..l {
        let at = |v: &Tensor<4>, w: usize| v.clone().narrow(1, i, 1).reshape([bs, h, w]);
        let (y, next) = ssd_step(at(&x, p), dt.clone().narrow(1, i, 1).reshape([bs, h]), a.clone(), at(&b, n), at(&c, n), s);
        ys.push(y);
        s = next;
    }
    (Tensor::stack(ys, 1), s)
}

/// One recurrent step.
///
/// # Shapes
/// - `x`: `[batch, heads, p]`; `dt`: `[batch, heads]`; `a`: `[heads]`; `b`, `c`: `[batch, heads, n]`
/// - `state`: `[batch, heads, p, n]`
/// - returns `y` `[batch, heads, p]` (f32) and the new state
pub fn ssd_step(x: Tensor<3>, dt: Tensor<2>, a: Tensor<1>, b: Tensor<3>, c: Tensor<3>, state: Tensor<4>) -> (Tensor<3>, Tensor<4>) {
    let [bs, h, _] = x.dims();
    let f = |t: Tensor<3>| t.cast(DType::F32);
    let (x, b, c, dt) = (f(x), f(b), f(c), dt.cast(DType::F32));
    let decay = (dt.clone() * a.cast(DType::F32).reshape([1, h])).exp().reshape([bs, h, 1, 1]);
    let input = (x * dt.unsqueeze_dim::<3>(2)).unsqueeze_dim::<4>(3) * b.unsqueeze_dim::<4>(2); // [bs, h, p, n]
    let s = state.cast(DType::F32) * decay + input;
    let y = (s.clone() * c.unsqueeze_dim::<4>(2)).sum_dim(3).squeeze_dim::<3>(3);
    (y, s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::activation::softplus;
    use burn::tensor::{Device, Distribution};

    fn max_diff(a: Tensor<4>, b: Tensor<4>) -> f32 {
        (a - b).abs().max().into_scalar::<f32>()
    }

    /// Random inputs with the scales of a converted layer: dt in about [1e-3, 1], A in [-16, -1].
    fn inputs(bs: usize, l: usize, h: usize, p: usize, n: usize) -> (Tensor<4>, Tensor<3>, Tensor<1>, Tensor<4>, Tensor<4>, Tensor<4>) {
        let d = Device::flex();
        let normal = Distribution::Normal(0.0, 1.0);
        let dt = softplus(Tensor::<3>::random([bs, l, h], Distribution::Uniform(-5.0, 0.5), &d), 1.0);
        let a = Tensor::<1>::random([h], Distribution::Uniform(1.0, 16.0), &d).neg();
        let s0 = Tensor::random([bs, h, p, n], normal, &d);
        (Tensor::random([bs, l, h, p], normal, &d), dt, a, Tensor::random([bs, l, h, n], normal, &d), Tensor::random([bs, l, h, n], normal, &d), s0)
    }

    #[test]
    fn chunked_equals_sequential_on_ragged_lengths_batches_and_carried_state() {
        // (batch, seq, heads, p, n, chunk): seq not a multiple of the chunk, a chunk longer than
        // the sequence, one-step chunks, one token.
        for (bs, l, h, p, n, chunk) in [(2, 37, 3, 4, 5, 8), (1, 16, 2, 8, 8, 16), (3, 5, 1, 2, 3, 64), (2, 9, 2, 3, 2, 1), (2, 1, 4, 4, 4, 8)] {
            let (x, dt, a, b, c, s0) = inputs(bs, l, h, p, n);
            let (y1, s1) = ssd_chunked(x.clone(), dt.clone(), a.clone(), b.clone(), c.clone(), s0.clone(), chunk);
            let (y2, s2) = ssd_sequential(x, dt, a, b, c, s0);
            let (dy, ds) = (max_diff(y1, y2), max_diff(s1, s2));
            eprintln!("bs {bs} seq {l} chunk {chunk}: max |chunked - sequential| y {dy:e}, state {ds:e}");
            assert!(dy < 1e-4 && ds < 1e-4, "bs {bs} l {l} chunk {chunk}: y {dy:e} state {ds:e}");
        }
    }

    #[test]
    fn splitting_a_sequence_and_carrying_the_state_changes_nothing() {
        let (x, dt, a, b, c, s0) = inputs(2, 20, 2, 4, 4);
        let (y, s) = ssd_chunked(x.clone(), dt.clone(), a.clone(), b.clone(), c.clone(), s0.clone(), 6);
        let part = |v: &Tensor<4>, from, len| v.clone().narrow(1, from, len);
        let (ya, sa) = ssd_chunked(part(&x, 0, 13), dt.clone().narrow(1, 0, 13), a.clone(), part(&b, 0, 13), part(&c, 0, 13), s0, 6);
        let (yb, sb) = ssd_chunked(part(&x, 13, 7), dt.narrow(1, 13, 7), a, part(&b, 13, 7), part(&c, 13, 7), sa, 6);
        assert!(max_diff(y, Tensor::cat(vec![ya, yb], 1)) < 1e-4);
        assert!(max_diff(s, sb) < 1e-4);
    }
}
