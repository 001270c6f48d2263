//! The inside-the-chunk part of the chunked SSD scan (training and prefill): a causal attention
//! whose scores decay, within chunks of `T` positions,
//!
//! `out_t = Σ_{s ≤ t, same chunk} (q_t · k_s) exp(g_t - g_s) v_s`
//!
//! (`q` = C, `k` = B, `v` = dt·x and `g` the running sum of dt·A inside the chunk), and its mirror
//! `reverse`, `Σ_{s ≥ t} (q_t · k_s) exp(g_s - g_t) v_s`. In tensor ops this writes and rereads
//! `[batch, chunks, heads, T, T]` scores and decays several times (the SSD forward spent 3.6 ms at
//! SmolLM2's micro-batch against mamba_ssm's fused Triton scan's 1.04; 1.9 with these kernels,
//! BENCHMARKS.md session 14); the kernel keeps a block of scores in shared memory and skips the
//! blocks the mask empties. [`chunk_scan`] adds the state entering each chunk, read out, in the
//! same launch; [`chunk_states`] forms each chunk's own contribution to the next.
//!
//! The backward is the same map three times over, so the kernel serves it too: with `dO` the
//! output's gradient, `dq = attend(dO, v, k)`, `dk = attend⁻(v, dO, q)`, `dv = attend⁻(k, q,
//! dO)` (`⁻`: the other direction) and `dg_t = ±(dO_t · out_t - v_t · dv_t)`: `g_t` enters the
//! scores of row `t` with one sign and of column `t` with the other, and each sum over a row or a
//! column of `dS ⊙ S` is one of those dot products.

#[cfg(feature = "cuda")]
mod cube;
#[cfg(feature = "cuda")]
mod cube_vec;
mod passing;
#[cfg(feature = "cuda")]
mod passing_cube;
mod state;
#[cfg(feature = "cuda")]
mod state_cube;

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::autodiff::Autodiff;
#[cfg(feature = "cuda")]
use burn::backend::fusion::custom::TensorSpec;
use burn::backend::tensor::FloatTensor;
use burn::backend::{backend_extension, Backend, Dispatch, TensorMetadata};
use burn::tensor::{Shape, Tensor, TensorData};

pub use passing::{pass_states, pass_states_custom, pass_states_reference, StatePassingOps};
pub use state::{chunk_states, chunk_states_custom, chunk_states_reference, ChunkStateOps};

/// The decayed attention inside chunks of `chunk` positions: the kernel on a CubeCL device,
/// differentiated by the backward above under autodiff; elsewhere [`chunk_attend_reference`].
///
/// # Shapes
/// - `q`, `k`: `[batch, seq, heads, n]`; `v`: `[batch, seq, heads, p]`; `g`: `[batch, seq,
///   heads]`, `seq` a multiple of `chunk` -> `[batch, seq, heads, p]`
pub fn chunk_attend(q: Tensor<4>, k: Tensor<4>, v: Tensor<4>, g: Tensor<3>, chunk: usize, reverse: bool) -> Tensor<4> {
    check(&q, &k, &v, &g, chunk);
    #[cfg(feature = "cuda")]
    if wanted() && crate::mamba2_step::runs_on_cube(&q.device()) && kernel_takes(q.dims()[3], v.dims()[3]) {
        return chunk_attend_custom(q, k, v, g, chunk, reverse);
    }
    chunk_attend_reference(q, k, v, g, chunk, reverse)
}

/// [`chunk_attend`] (forward) plus each chunk's entering state read out at every position:
/// `out_t += exp(g_t) E_c q_t` with `E_c` the state entering chunk `c` (`[p, n]`), the whole
/// output of the SSD scan but the skip; one launch on a CubeCL device.
///
/// # Shapes
/// As [`chunk_attend`]; `e`: `[batch, seq / chunk, heads, p, n]`
pub fn chunk_scan(q: Tensor<4>, k: Tensor<4>, v: Tensor<4>, g: Tensor<3>, e: Tensor<5>, chunk: usize) -> Tensor<4> {
    check_state(&q, &v, &e, chunk);
    #[cfg(feature = "cuda")]
    if wanted() && crate::mamba2_step::runs_on_cube(&q.device()) && kernel_takes(q.dims()[3], v.dims()[3]) {
        return chunk_scan_custom(q, k, v, g, e, chunk);
    }
    chunk_scan_reference(q, k, v, g, e, chunk)
}

/// [`chunk_scan`] in tensor ops.
pub fn chunk_scan_reference(q: Tensor<4>, k: Tensor<4>, v: Tensor<4>, g: Tensor<3>, e: Tensor<5>, chunk: usize) -> Tensor<4> {
    check_state(&q, &v, &e, chunk);
    let params = [chunk as u32, 0];
    Tensor::from_dispatch(<Dispatch as ChunkScanOps>::chunk_scan_ops(q.into_dispatch(), k.into_dispatch(), v.into_dispatch(), g.into_dispatch(), e.into_dispatch(), params))
}

/// [`chunk_scan`] through the op with its own backward on any backend.
pub fn chunk_scan_custom(q: Tensor<4>, k: Tensor<4>, v: Tensor<4>, g: Tensor<3>, e: Tensor<5>, chunk: usize) -> Tensor<4> {
    check_state(&q, &v, &e, chunk);
    let params = [chunk as u32, 0];
    Tensor::from_dispatch(<Dispatch as ChunkScanOps>::chunk_scan(q.into_dispatch(), k.into_dispatch(), v.into_dispatch(), g.into_dispatch(), e.into_dispatch(), params))
}

fn check_state(q: &Tensor<4>, v: &Tensor<4>, e: &Tensor<5>, chunk: usize) {
    let ([bs, l, h, n], p) = (q.dims(), v.dims()[3]);
    assert!(chunk > 0 && e.dims() == [bs, l / chunk, h, p, n], "chunk_scan: an entering state {:?} for q {:?}, v {:?} in chunks of {chunk}", e.dims(), q.dims(), v.dims());
}

/// [`chunk_attend`] in tensor ops (differentiated by burn's autodiff): what the CPU runs, and the
/// kernel's twin.
pub fn chunk_attend_reference(q: Tensor<4>, k: Tensor<4>, v: Tensor<4>, g: Tensor<3>, chunk: usize, reverse: bool) -> Tensor<4> {
    check(&q, &k, &v, &g, chunk);
    let params = [chunk as u32, u32::from(reverse)];
    Tensor::from_dispatch(<Dispatch as ChunkScanOps>::chunk_attend_ops(q.into_dispatch(), k.into_dispatch(), v.into_dispatch(), g.into_dispatch(), params))
}

/// [`chunk_attend`] through the op with its own backward on any backend (the CPU's included), so
/// that the tests can hold that backward against burn's autodiff of the tensor ops.
pub fn chunk_attend_custom(q: Tensor<4>, k: Tensor<4>, v: Tensor<4>, g: Tensor<3>, chunk: usize, reverse: bool) -> Tensor<4> {
    check(&q, &k, &v, &g, chunk);
    let params = [chunk as u32, u32::from(reverse)];
    Tensor::from_dispatch(<Dispatch as ChunkScanOps>::chunk_attend(q.into_dispatch(), k.into_dispatch(), v.into_dispatch(), g.into_dispatch(), params))
}

fn check(q: &Tensor<4>, k: &Tensor<4>, v: &Tensor<4>, g: &Tensor<3>, chunk: usize) {
    let [bs, l, h, n] = q.dims();
    let p = v.dims()[3];
    assert!(k.dims() == [bs, l, h, n] && v.dims() == [bs, l, h, p] && g.dims() == [bs, l, h], "chunk_attend: q {:?}, k {:?}, v {:?}, g {:?}", q.dims(), k.dims(), v.dims(), g.dims());
    assert!(chunk > 0 && l % chunk == 0, "chunk_attend: {l} positions are not whole chunks of {chunk}");
}

/// Whether the kernel takes widths `n` (`q`, `k`) and `p` (`v`) both ways round: the backward
/// runs it with `v`'s width as `q`'s (`dq`, `dk`).
#[cfg(feature = "cuda")]
fn kernel_takes(n: usize, p: usize) -> bool {
    cube::supports(n, p) && cube::supports(p, n)
}

/// Whether training and prefill run the kernel (`DISTILL_SSD=ops` keeps the tensor ops, to
/// measure one against the other).
#[cfg(feature = "cuda")]
fn wanted() -> bool {
    static WANTED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    crate::switched_on(&WANTED, "DISTILL_SSD", "ops")
}

/// `"kernel"` or `"ops"`: what the scan runs inside its chunks on `device`, for benchmark records.
pub fn mode(device: &burn::tensor::Device) -> &'static str {
    #[cfg(feature = "cuda")]
    if wanted() && crate::mamba2_step::runs_on_cube(device) {
        return "kernel";
    }
    let _ = device;
    "ops"
}

#[backend_extension(Flex, Autodiff, Cube: cfg(feature = "cuda"), Fusion: cfg(feature = "cuda"))]
pub trait ChunkScanOps: Backend {
    /// The twin, in the backend's tensor ops (`params` = `[chunk, reverse]`).
    #[fusion(default)]
    fn chunk_attend_ops(q: FloatTensor<Self>, k: FloatTensor<Self>, v: FloatTensor<Self>, g: FloatTensor<Self>, params: [u32; 2]) -> FloatTensor<Self> {
        attend_in_ops::<Self>(q, k, v, g, params)
    }

    /// The kernel where the backend has one (the tensor ops elsewhere), with its own backward
    /// under autodiff.
    #[fusion(meta = attend_meta)]
    fn chunk_attend(q: FloatTensor<Self>, k: FloatTensor<Self>, v: FloatTensor<Self>, g: FloatTensor<Self>, params: [u32; 2]) -> FloatTensor<Self> {
        attend_in_ops::<Self>(q, k, v, g, params)
    }

    /// The twin of [`chunk_scan`]: the attention and the entering states' read-out in tensor ops.
    #[fusion(default)]
    fn chunk_scan_ops(q: FloatTensor<Self>, k: FloatTensor<Self>, v: FloatTensor<Self>, g: FloatTensor<Self>, e: FloatTensor<Self>, params: [u32; 2]) -> FloatTensor<Self> {
        let read_out = state_read_out::<Self>(q.clone(), g.clone(), e, params[0] as usize);
        Self::float_add(attend_in_ops::<Self>(q, k, v, g, params), read_out)
    }

    /// [`chunk_scan`]: one launch where the backend has the kernel.
    #[fusion(meta = scan_meta)]
    fn chunk_scan(q: FloatTensor<Self>, k: FloatTensor<Self>, v: FloatTensor<Self>, g: FloatTensor<Self>, e: FloatTensor<Self>, params: [u32; 2]) -> FloatTensor<Self> {
        let read_out = state_read_out::<Self>(q.clone(), g.clone(), e, params[0] as usize);
        Self::float_add(attend_in_ops::<Self>(q, k, v, g, params), read_out)
    }
}

#[cfg(feature = "cuda")]
fn attend_meta(_q: &TensorSpec, _k: &TensorSpec, v: &TensorSpec, _g: &TensorSpec, _params: &[u32; 2]) -> TensorSpec {
    v.clone()
}

#[cfg(feature = "cuda")]
fn scan_meta(_q: &TensorSpec, _k: &TensorSpec, v: &TensorSpec, _g: &TensorSpec, _e: &TensorSpec, _params: &[u32; 2]) -> TensorSpec {
    v.clone()
}

impl ChunkScanOps for burn::backend::Flex {}

/// `[bs, l, h, w]` -> `[bs, nc, h, T, w]`: chunks of `t` positions, a head's chunk a matrix.
fn chunks<B: Backend>(x: FloatTensor<B>, t: usize) -> FloatTensor<B> {
    let [bs, l, h, w] = x.shape().dims::<4>();
    B::float_swap_dims(B::float_reshape(x, Shape::new([bs, l / t, t, h, w])), 2, 3)
}

/// [`chunks`] undone: `[bs, nc, h, T, w]` -> `[bs, l, h, w]`.
fn unchunk<B: Backend>(x: FloatTensor<B>) -> FloatTensor<B> {
    let [bs, nc, h, t, w] = x.shape().dims::<5>();
    B::float_reshape(B::float_swap_dims(x, 2, 3), Shape::new([bs, nc * t, h, w]))
}

/// `g` (`[bs, l, h]`) in [`chunks`] as a column: `[bs, nc, h, T, 1]`.
fn chunk_column<B: Backend>(g: FloatTensor<B>, t: usize) -> FloatTensor<B> {
    let [bs, l, h] = g.shape().dims::<3>();
    chunks::<B>(B::float_reshape(g, Shape::new([bs, l, h, 1])), t)
}

/// `exp(g_t) E_c q_t` at every position: `[bs, l, h, n]`, `[bs, l, h]`, `[bs, nc, h, p, n]` ->
/// `[bs, l, h, p]`.
fn state_read_out<B: Backend>(q: FloatTensor<B>, g: FloatTensor<B>, e: FloatTensor<B>, t: usize) -> FloatTensor<B> {
    let y = B::float_matmul(chunks::<B>(q, t), B::float_swap_dims(e, 3, 4)); // [bs, nc, h, T, p]
    unchunk::<B>(B::float_mul(y, B::float_exp(chunk_column::<B>(g, t))))
}

/// The gradient of [`state_read_out`] for `e`: `Σ_t exp(g_t) dO_t q_tᵀ` over each chunk.
fn state_read_out_grad<B: Backend>(d_o: FloatTensor<B>, q: FloatTensor<B>, g: FloatTensor<B>, t: usize) -> FloatTensor<B> {
    let scaled = B::float_mul(chunks::<B>(d_o, t), B::float_exp(chunk_column::<B>(g, t))); // [bs, nc, h, T, p]
    B::float_matmul(B::float_swap_dims(scaled, 3, 4), chunks::<B>(q, t)) // [bs, nc, h, p, n]
}

/// Scores and decays materialized per chunk: `[batch, chunks, heads, T, T]`.
fn attend_in_ops<B: Backend>(q: FloatTensor<B>, k: FloatTensor<B>, v: FloatTensor<B>, g: FloatTensor<B>, params: [u32; 2]) -> FloatTensor<B> {
    let (t, reverse) = (params[0] as usize, params[1] != 0);
    let (device, dtype) = (q.device(), q.dtype());
    let rows = chunk_column::<B>(g, t); // [bs, nc, h, T, 1]
    let cols = B::float_swap_dims(rows.clone(), 3, 4); // [bs, nc, h, 1, T]
    let seg = if reverse { B::float_sub(cols, rows) } else { B::float_sub(rows, cols) };
    // 1 where row `i` sees column `j`. Zeroing the exponent where it does not keeps exp finite
    // there (a reverse exponent is positive below the diagonal) before the mask zeroes the value.
    let seen: Vec<f32> = (0..t * t).map(|e| (e / t, e % t)).map(|(i, j)| f32::from(if reverse { j >= i } else { j <= i })).collect();
    let mask = B::float_cast(B::float_from_data(TensorData::new(seen, [1, 1, 1, t, t]), &device), dtype.into());
    let decay = B::float_mul(B::float_exp(B::float_mul(seg, mask.clone())), mask);
    let scores = B::float_mul(B::float_matmul(chunks::<B>(q, t), B::float_swap_dims(chunks::<B>(k, t), 3, 4)), decay);
    unchunk::<B>(B::float_matmul(scores, chunks::<B>(v, t))) // [bs, l, h, p]
}

/// `Σ_c a[.., c] b[.., c]`: `[bs, l, h, w]` twice -> `[bs, l, h]`.
fn row_dot<B: Backend>(a: FloatTensor<B>, b: FloatTensor<B>) -> FloatTensor<B> {
    let [bs, l, h, _] = a.shape().dims::<4>();
    B::float_reshape(B::float_sum_dim(B::float_mul(a, b), 3), Shape::new([bs, l, h]))
}

impl<B: Backend + ChunkScanOps, C: CheckpointStrategy> ChunkScanOps for Autodiff<B, C> {
    fn chunk_attend(q: FloatTensor<Self>, k: FloatTensor<Self>, v: FloatTensor<Self>, g: FloatTensor<Self>, params: [u32; 2]) -> FloatTensor<Self> {
        #[derive(Debug)]
        struct AttendBackward;

        impl<B: Backend + ChunkScanOps> Backward<B, 4> for AttendBackward {
            /// `q`, `k`, `v`, `g`, the output, and the op's params.
            type State = ([FloatTensor<B>; 5], [u32; 2]);

            fn backward(self, ops: Ops<Self::State, 4>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
                let [node_q, node_k, node_v, node_g] = ops.parents;
                let d_o = grads.consume::<B>(&ops.node);
                let ([q, k, v, g, o], params) = ops.state;
                let other = [params[0], 1 - params[1]];
                if let Some(node) = node_q {
                    grads.register::<B>(node.id, B::chunk_attend(d_o.clone(), v.clone(), k.clone(), g.clone(), params));
                }
                if let Some(node) = node_k {
                    grads.register::<B>(node.id, B::chunk_attend(v.clone(), d_o.clone(), q.clone(), g.clone(), other));
                }
                if node_v.is_some() || node_g.is_some() {
                    let d_v = B::chunk_attend(k, q, d_o.clone(), g, other);
                    if let Some(node) = node_g {
                        let d_g = B::float_sub(row_dot::<B>(d_o, o), row_dot::<B>(v, d_v.clone()));
                        grads.register::<B>(node.id, if params[1] != 0 { B::float_neg(d_g) } else { d_g });
                    }
                    if let Some(node) = node_v {
                        grads.register::<B>(node.id, d_v);
                    }
                }
            }
        }

        match AttendBackward.prepare::<C>([q.node(), k.node(), v.node(), g.node()]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let (q, k, v, g) = (q.into_primitive(), k.into_primitive(), v.into_primitive(), g.into_primitive());
                let o = B::chunk_attend(q.clone(), k.clone(), v.clone(), g.clone(), params);
                prep.finish(([q, k, v, g, o.clone()], params), o)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::chunk_attend(q.into_primitive(), k.into_primitive(), v.into_primitive(), g.into_primitive(), params)),
        }
    }

    fn chunk_scan(q: FloatTensor<Self>, k: FloatTensor<Self>, v: FloatTensor<Self>, g: FloatTensor<Self>, e: FloatTensor<Self>, params: [u32; 2]) -> FloatTensor<Self> {
        #[derive(Debug)]
        struct ScanBackward;

        impl<B: Backend + ChunkScanOps> Backward<B, 5> for ScanBackward {
            /// `q`, `k`, `v`, `g`, `e`, the output, and the op's params.
            type State = ([FloatTensor<B>; 6], [u32; 2]);

            /// As the attention's, with the read-out's terms: `dq` gains `exp(g_t) E_cᵀ dO_t`
            /// (the kernel with `Eᵀ` as the state), `dE` is `Σ_t exp(g_t) dO_t q_tᵀ`, and
            /// `dO_t · out_t` in `dg` already holds the read-out's `dO_t · exp(g_t) E_c q_t`.
            fn backward(self, ops: Ops<Self::State, 5>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
                let [node_q, node_k, node_v, node_g, node_e] = ops.parents;
                let d_o = grads.consume::<B>(&ops.node);
                let ([q, k, v, g, e, o], params) = ops.state;
                let other = [params[0], 1];
                if let Some(node) = node_e {
                    grads.register::<B>(node.id, state_read_out_grad::<B>(d_o.clone(), q.clone(), g.clone(), params[0] as usize));
                }
                if let Some(node) = node_q {
                    grads.register::<B>(node.id, B::chunk_scan(d_o.clone(), v.clone(), k.clone(), g.clone(), B::float_swap_dims(e, 3, 4), params));
                }
                if let Some(node) = node_k {
                    grads.register::<B>(node.id, B::chunk_attend(v.clone(), d_o.clone(), q.clone(), g.clone(), other));
                }
                if node_v.is_some() || node_g.is_some() {
                    let d_v = B::chunk_attend(k, q, d_o.clone(), g, other);
                    if let Some(node) = node_g {
                        grads.register::<B>(node.id, B::float_sub(row_dot::<B>(d_o, o), row_dot::<B>(v, d_v.clone())));
                    }
                    if let Some(node) = node_v {
                        grads.register::<B>(node.id, d_v);
                    }
                }
            }
        }

        match ScanBackward.prepare::<C>([q.node(), k.node(), v.node(), g.node(), e.node()]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let (q, k, v, g, e) = (q.into_primitive(), k.into_primitive(), v.into_primitive(), g.into_primitive(), e.into_primitive());
                let o = B::chunk_scan(q.clone(), k.clone(), v.clone(), g.clone(), e.clone(), params);
                prep.finish(([q, k, v, g, e, o.clone()], params), o)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::chunk_scan(q.into_primitive(), k.into_primitive(), v.into_primitive(), g.into_primitive(), e.into_primitive(), params)),
        }
    }
}

#[cfg(test)]
mod tests {
    use burn::tensor::{Device, Distribution, Tolerance};

    use super::*;

    /// The decayed attention written out position by position.
    fn by_hand(q: &Tensor<4>, k: &Tensor<4>, v: &Tensor<4>, g: &Tensor<3>, chunk: usize, reverse: bool) -> Vec<f32> {
        let [bs, l, h, n] = q.dims();
        let p = v.dims()[3];
        let f = |t: &Tensor<4>| t.clone().into_data().to_vec::<f32>().unwrap();
        let (q, k, v, g) = (f(q), f(k), f(v), g.clone().into_data().to_vec::<f32>().unwrap());
        let mut out = vec![0.0f32; bs * l * h * p];
        for (b, t, hh) in (0..bs).flat_map(|b| (0..l).flat_map(move |t| (0..h).map(move |hh| (b, t, hh)))) {
            let start = t / chunk * chunk;
            for s in start..start + chunk {
                if (reverse && s < t) || (!reverse && s > t) {
                    continue;
                }
                let row = |x: &[f32], at: usize, w: usize| x[((b * l + at) * h + hh) * w..][..w].to_vec();
                let score: f32 = row(&q, t, n).iter().zip(row(&k, s, n)).map(|(a, b)| a * b).sum();
                let (gt, gs) = (g[(b * l + t) * h + hh], g[(b * l + s) * h + hh]);
                let w = score * if reverse { gs - gt } else { gt - gs }.exp();
                for (i, vs) in row(&v, s, p).iter().enumerate() {
                    out[((b * l + t) * h + hh) * p + i] += w * vs;
                }
            }
        }
        out
    }

    /// Inputs as the scan gives them: `g` a running sum of negative steps inside each chunk.
    fn inputs(device: &Device, [bs, l, h, n, p]: [usize; 5], chunk: usize) -> (Tensor<4>, Tensor<4>, Tensor<4>, Tensor<3>) {
        let normal = Distribution::Normal(0.0, 1.0);
        let steps = Tensor::<4>::random([bs, l / chunk, chunk, h], Distribution::Uniform(-0.5, 0.0), device);
        let g = steps.cumsum(2).reshape([bs, l, h]);
        (Tensor::random([bs, l, h, n], normal, device), Tensor::random([bs, l, h, n], normal, device), Tensor::random([bs, l, h, p], normal, device), g)
    }

    #[test]
    fn the_twin_is_the_sum_written_out_both_ways() {
        let device = Device::flex();
        let (chunk, shape) = (4, [2, 12, 3, 5, 6]);
        let (q, k, v, g) = inputs(&device, shape, chunk);
        for reverse in [false, true] {
            let got = chunk_attend_reference(q.clone(), k.clone(), v.clone(), g.clone(), chunk, reverse);
            let want = by_hand(&q, &k, &v, &g, chunk, reverse);
            got.into_data().assert_approx_eq::<f32>(&TensorData::new(want, [2, 12, 3, 6]), Tolerance::absolute(1e-5));
        }
    }

    /// The op's own backward (the map three times over and two dot products) gives the gradients
    /// burn's autodiff takes through the tensor ops, for every input and both directions.
    #[test]
    fn its_backward_equals_autodiff_of_the_tensor_ops() {
        let device = Device::flex().autodiff();
        let (chunk, shape) = (4, [2, 8, 3, 5, 6]);
        let (q, k, v, g) = inputs(&device, shape, chunk);
        let w = Tensor::<4>::random([2, 8, 3, 6], Distribution::Normal(0.0, 1.0), &device);
        type Attend = fn(Tensor<4>, Tensor<4>, Tensor<4>, Tensor<3>, usize, bool) -> Tensor<4>;
        for reverse in [false, true] {
            let run = |f: Attend| {
                let (q, k, v, g) = (q.clone().require_grad(), k.clone().require_grad(), v.clone().require_grad(), g.clone().require_grad());
                let y = f(q.clone(), k.clone(), v.clone(), g.clone(), chunk, reverse);
                let grads = (y.clone() * w.clone()).sum().backward();
                let d = |x: &Tensor<4>| x.grad(&grads).expect("a gradient").into_data();
                (y.inner().into_data(), [d(&q), d(&k), d(&v)], g.grad(&grads).expect("a gradient").into_data())
            };
            let (ours, want) = (run(chunk_attend_custom), run(chunk_attend_reference));
            let tol = Tolerance::absolute(1e-4);
            ours.0.assert_approx_eq::<f32>(&want.0, tol);
            for (o, w) in ours.1.iter().zip(&want.1) {
                o.assert_approx_eq::<f32>(w, tol);
            }
            ours.2.assert_approx_eq::<f32>(&want.2, tol);
        }
    }

    /// The scan with entering states: the twin adds `exp(g_t) E q_t` to the attention, and the
    /// op's backward (the kernel again, with `Eᵀ`, for `dq`) gives autodiff's gradients, `e`'s too.
    #[test]
    fn the_scan_with_states_reads_them_out_and_differentiates_like_the_tensor_ops() {
        let device = Device::flex().autodiff();
        let (chunk, shape) = (4, [2, 8, 3, 5, 6]);
        let (q, k, v, g) = inputs(&device, shape, chunk);
        let e = Tensor::<5>::random([2, 2, 3, 6, 5], Distribution::Normal(0.0, 1.0), &device);
        let want_out = {
            let attend = by_hand(&q.clone().inner(), &k.clone().inner(), &v.clone().inner(), &g.clone().inner(), chunk, false);
            let (qv, gv, ev) = (q.clone().inner().into_data().to_vec::<f32>().unwrap(), g.clone().inner().into_data().to_vec::<f32>().unwrap(), e.clone().inner().into_data().to_vec::<f32>().unwrap());
            let mut out = attend;
            for (b, t, hh, i) in (0..2).flat_map(|b| (0..8).flat_map(move |t| (0..3).flat_map(move |hh| (0..6).map(move |i| (b, t, hh, i))))) {
                let state = &ev[(((b * 2 + t / chunk) * 3 + hh) * 6 + i) * 5..][..5];
                let read: f32 = (0..5).map(|j| state[j] * qv[((b * 8 + t) * 3 + hh) * 5 + j]).sum();
                out[((b * 8 + t) * 3 + hh) * 6 + i] += gv[(b * 8 + t) * 3 + hh].exp() * read;
            }
            TensorData::new(out, [2, 8, 3, 6])
        };
        let w = Tensor::<4>::random([2, 8, 3, 6], Distribution::Normal(0.0, 1.0), &device);
        type Scan = fn(Tensor<4>, Tensor<4>, Tensor<4>, Tensor<3>, Tensor<5>, usize) -> Tensor<4>;
        let run = |f: Scan| {
            let (q, k, v, g, e) = (q.clone().require_grad(), k.clone().require_grad(), v.clone().require_grad(), g.clone().require_grad(), e.clone().require_grad());
            let y = f(q.clone(), k.clone(), v.clone(), g.clone(), e.clone(), chunk);
            let grads = (y.clone() * w.clone()).sum().backward();
            let d = |x: &Tensor<4>| x.grad(&grads).expect("a gradient").into_data();
            (y.inner().into_data(), [d(&q), d(&k), d(&v)], g.grad(&grads).expect("a gradient").into_data(), e.grad(&grads).expect("a gradient").into_data())
        };
        let (ours, want) = (run(chunk_scan_custom), run(chunk_scan_reference));
        let tol = Tolerance::absolute(1e-4);
        want.0.assert_approx_eq::<f32>(&want_out, tol);
        ours.0.assert_approx_eq::<f32>(&want.0, tol);
        for (o, w) in ours.1.iter().zip(&want.1) {
            o.assert_approx_eq::<f32>(w, tol);
        }
        ours.2.assert_approx_eq::<f32>(&want.2, tol);
        ours.3.assert_approx_eq::<f32>(&want.3, tol);
    }
}
