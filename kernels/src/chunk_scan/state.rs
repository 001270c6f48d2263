//! Each chunk's own contribution to the SSD state at its end,
//!
//! `S_c = Σ_{s in chunk c} exp(g_last - g_s) x_s b_sᵀ`   (`[p, n]` per chunk and head),
//!
//! mamba_ssm's `chunk_state`. In tensor ops this is a decay, a multiply, and a batched product
//! over `[batch, chunks, heads, T, w]` views that burn first copies into place (the SSD forward
//! spent ~0.35 ms of its 2.0 ms on them at SmolLM2's micro-batch, session 14); the kernel reads
//! `x` and `b` where they lie. The backward is tensor ops: `dx_s = exp(g_last - g_s) b_s dSᵀ`,
//! `db_s = exp(g_last - g_s) dS x_s`... as written out in [`ChunkStateOps`]'s autodiff.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::autodiff::Autodiff;
#[cfg(feature = "cuda")]
use burn::backend::fusion::custom::TensorSpec;
use burn::backend::tensor::FloatTensor;
use burn::backend::{backend_extension, Backend, Dispatch, TensorMetadata};
use burn::tensor::{Shape, Slice, Tensor, TensorData};

use super::{chunk_column, chunks, unchunk};

/// Each chunk's state contribution: the kernel on a CubeCL device (its backward in tensor
/// ops), the tensor ops elsewhere.
///
/// # Shapes
/// - `x`: `[batch, seq, heads, p]`; `b`: `[batch, seq, heads, n]`; `g`: `[batch, seq, heads]`
///   (the log decay from each chunk's start), `seq` a multiple of `chunk` -> `[batch, seq /
///   chunk, heads, p, n]`
pub fn chunk_states(x: Tensor<4>, b: Tensor<4>, g: Tensor<3>, chunk: usize) -> Tensor<5> {
    check(&x, &b, &g, chunk);
    #[cfg(feature = "cuda")]
    if super::wanted() && crate::mamba2_step::runs_on_cube(&x.device()) && super::state_cube::supports_states(x.dims()[3], b.dims()[3]) {
        return chunk_states_custom(x, b, g, chunk);
    }
    chunk_states_reference(x, b, g, chunk)
}

/// [`chunk_states`] in tensor ops (differentiated by burn's autodiff): the CPU's, and the twin.
pub fn chunk_states_reference(x: Tensor<4>, b: Tensor<4>, g: Tensor<3>, chunk: usize) -> Tensor<5> {
    check(&x, &b, &g, chunk);
    Tensor::from_dispatch(<Dispatch as ChunkStateOps>::chunk_states_ops(x.into_dispatch(), b.into_dispatch(), g.into_dispatch(), chunk as u32))
}

/// [`chunk_states`] through the op with its own backward, on any backend.
pub fn chunk_states_custom(x: Tensor<4>, b: Tensor<4>, g: Tensor<3>, chunk: usize) -> Tensor<5> {
    check(&x, &b, &g, chunk);
    Tensor::from_dispatch(<Dispatch as ChunkStateOps>::chunk_states(x.into_dispatch(), b.into_dispatch(), g.into_dispatch(), chunk as u32))
}

fn check(x: &Tensor<4>, b: &Tensor<4>, g: &Tensor<3>, chunk: usize) {
    let [bs, l, h, _] = x.dims();
    assert!(b.dims()[..3] == [bs, l, h] && g.dims() == [bs, l, h], "chunk_states: x {:?}, b {:?}, g {:?}", x.dims(), b.dims(), g.dims());
    assert!(chunk > 0 && l % chunk == 0, "chunk_states: {l} positions are not whole chunks of {chunk}");
}

#[backend_extension(Flex, Autodiff, Cube: cfg(feature = "cuda"), Fusion: cfg(feature = "cuda"))]
pub trait ChunkStateOps: Backend {
    /// The twin, in the backend's tensor ops.
    #[fusion(default)]
    fn chunk_states_ops(x: FloatTensor<Self>, b: FloatTensor<Self>, g: FloatTensor<Self>, chunk: u32) -> FloatTensor<Self> {
        states_in_ops::<Self>(x, b, g, chunk as usize)
    }

    /// The kernel where the backend has one, with the backward below under autodiff.
    #[fusion(meta = states_meta)]
    fn chunk_states(x: FloatTensor<Self>, b: FloatTensor<Self>, g: FloatTensor<Self>, chunk: u32) -> FloatTensor<Self> {
        states_in_ops::<Self>(x, b, g, chunk as usize)
    }
}

#[cfg(feature = "cuda")]
fn states_meta(x: &TensorSpec, b: &TensorSpec, _g: &TensorSpec, chunk: &u32) -> TensorSpec {
    let ([bs, l, h, p], n) = (x.shape.dims::<4>(), b.shape.dims::<4>()[3]);
    TensorSpec { shape: Shape::new([bs, l / *chunk as usize, h, p, n]), ..x.clone() }
}

impl ChunkStateOps for burn::backend::Flex {}

/// `exp(g_last - g_s)` per chunk: `[bs, l, h]` -> `[bs, nc, h, T, 1]`.
fn to_end<B: Backend>(g: FloatTensor<B>, t: usize) -> FloatTensor<B> {
    let g = chunk_column::<B>(g, t);
    let all = Slice::new(0, None, 1);
    let last = B::float_slice(g.clone(), &[all, all, all, Slice::new(t as isize - 1, Some(t as isize), 1), all]);
    B::float_exp(B::float_sub(last, g))
}

fn states_in_ops<B: Backend>(x: FloatTensor<B>, b: FloatTensor<B>, g: FloatTensor<B>, t: usize) -> FloatTensor<B> {
    let scaled = B::float_mul(chunks::<B>(x, t), to_end::<B>(g, t)); // [bs, nc, h, T, p]
    B::float_matmul(B::float_swap_dims(scaled, 3, 4), chunks::<B>(b, t))
}

impl<B: Backend + ChunkStateOps, C: CheckpointStrategy> ChunkStateOps for Autodiff<B, C> {
    fn chunk_states(x: FloatTensor<Self>, b: FloatTensor<Self>, g: FloatTensor<Self>, chunk: u32) -> FloatTensor<Self> {
        #[derive(Debug)]
        struct StatesBackward;

        impl<B: Backend + ChunkStateOps> Backward<B, 3> for StatesBackward {
            /// `x`, `b`, `g` and the chunk length.
            type State = ([FloatTensor<B>; 3], u32);

            /// With `w_s = exp(g_last - g_s)` and `dS` the states' gradient: `dx_s = w_s dS b_s`,
            /// `db_s = w_s dSᵀ x_s`, and with `r_s = dx_s · x_s` (= `w_s x_sᵀ dS b_s`),
            /// `dg_s = -r_s` plus, at each chunk's last position, `Σ_s r_s`.
            fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
                let [node_x, node_b, node_g] = ops.parents;
                let d_s = grads.consume::<B>(&ops.node); // [bs, nc, h, p, n]
                let ([x, b, g], chunk) = ops.state;
                let t = chunk as usize;
                let [bs, l, h] = g.shape().dims::<3>();
                let w = to_end::<B>(g, t);
                let (xc, bc) = (chunks::<B>(x, t), chunks::<B>(b, t));
                let d_xc = B::float_mul(B::float_matmul(bc.clone(), B::float_swap_dims(d_s.clone(), 3, 4)), w.clone());
                if let Some(node) = node_b {
                    grads.register::<B>(node.id, unchunk::<B>(B::float_mul(B::float_matmul(xc.clone(), d_s), w)));
                }
                if let Some(node) = node_g {
                    let r = B::float_sum_dim(B::float_mul(d_xc.clone(), xc), 4); // [bs, nc, h, T, 1]
                    let total = B::float_sum_dim(r.clone(), 3); // [bs, nc, h, 1, 1]
                    let last: Vec<f32> = (0..t).map(|s| f32::from(s + 1 == t)).collect();
                    let last = B::float_cast(B::float_from_data(TensorData::new(last, [1, 1, 1, t, 1]), &r.device()), r.dtype().into());
                    let d_g = B::float_sub(B::float_mul(total, last), r);
                    grads.register::<B>(node.id, B::float_reshape(unchunk::<B>(d_g), Shape::new([bs, l, h])));
                }
                if let Some(node) = node_x {
                    grads.register::<B>(node.id, unchunk::<B>(d_xc));
                }
            }
        }

        match StatesBackward.prepare::<C>([x.node(), b.node(), g.node()]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let (x, b, g) = (x.into_primitive(), b.into_primitive(), g.into_primitive());
                let s = B::chunk_states(x.clone(), b.clone(), g.clone(), chunk);
                prep.finish(([x, b, g], chunk), s)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::chunk_states(x.into_primitive(), b.into_primitive(), g.into_primitive(), chunk)),
        }
    }
}

#[cfg(test)]
mod tests {
    use burn::tensor::{Device, Distribution, Tolerance};

    use super::*;

    #[test]
    fn the_twin_is_the_sum_written_out() {
        let device = Device::flex();
        let (bs, l, h, p, n, t) = (2, 8, 3, 4, 5, 4);
        let normal = Distribution::Normal(0.0, 1.0);
        let (x, b) = (Tensor::<4>::random([bs, l, h, p], normal, &device), Tensor::<4>::random([bs, l, h, n], normal, &device));
        let g = Tensor::<3>::random([bs, l, h], Distribution::Uniform(-3.0, 0.0), &device);
        let got = chunk_states_reference(x.clone(), b.clone(), g.clone(), t);
        let f = |v: Tensor<4>| v.into_data().to_vec::<f32>().unwrap();
        let (x, b, g) = (f(x), f(b), g.into_data().to_vec::<f32>().unwrap());
        let mut want = vec![0.0f32; bs * (l / t) * h * p * n];
        for (bi, s, hi, i, j) in (0..bs).flat_map(|bi| (0..l).flat_map(move |s| (0..h).flat_map(move |hi| (0..p).flat_map(move |i| (0..n).map(move |j| (bi, s, hi, i, j)))))) {
            let last = s / t * t + t - 1;
            let w = (g[(bi * l + last) * h + hi] - g[(bi * l + s) * h + hi]).exp();
            want[(((bi * (l / t) + s / t) * h + hi) * p + i) * n + j] += w * x[((bi * l + s) * h + hi) * p + i] * b[((bi * l + s) * h + hi) * n + j];
        }
        got.into_data().assert_approx_eq::<f32>(&TensorData::new(want, [bs, l / t, h, p, n]), Tolerance::absolute(1e-5));
    }

    #[test]
    fn its_backward_equals_autodiff_of_the_tensor_ops() {
        let device = Device::flex().autodiff();
        let normal = Distribution::Normal(0.0, 1.0);
        let x = Tensor::<4>::random([2, 8, 3, 4], normal, &device);
        let b = Tensor::<4>::random([2, 8, 3, 5], normal, &device);
        let g = Tensor::<3>::random([2, 8, 3], Distribution::Uniform(-3.0, 0.0), &device);
        let w = Tensor::<5>::random([2, 2, 3, 4, 5], normal, &device);
        type States = fn(Tensor<4>, Tensor<4>, Tensor<3>, usize) -> Tensor<5>;
        let run = |f: States| {
            let (x, b, g) = (x.clone().require_grad(), b.clone().require_grad(), g.clone().require_grad());
            let s = f(x.clone(), b.clone(), g.clone(), 4);
            let grads = (s.clone() * w.clone()).sum().backward();
            (s.inner().into_data(), x.grad(&grads).unwrap().into_data(), b.grad(&grads).unwrap().into_data(), g.grad(&grads).unwrap().into_data())
        };
        let (ours, want) = (run(chunk_states_custom), run(chunk_states_reference));
        let tol = Tolerance::absolute(1e-4);
        ours.0.assert_approx_eq::<f32>(&want.0, tol);
        ours.1.assert_approx_eq::<f32>(&want.1, tol);
        ours.2.assert_approx_eq::<f32>(&want.2, tol);
        ours.3.assert_approx_eq::<f32>(&want.3, tol);
    }
}
