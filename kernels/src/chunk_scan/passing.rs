//! The chunked SSD scan's state passing: from the state entering the sequence and each chunk's
//! own contribution ([`super::chunk_states`]), the state at every chunk boundary,
//!
//! `E_0 = state`, `E_{c+1} = exp(λ_c) E_c + local_c`   (`[p, n]` per head; `λ_c` the chunk's
//! whole log decay),
//!
//! mamba_ssm's `state_passing`. The twin writes the recurrence out all at once, as ssd_minimal
//! does: one `[nc + 1, nc + 1]` matrix of decays `exp(C_k - C_j)` (with `C` the running sum of
//! `λ`) times the stacked contributions. In tensor ops that is about fifteen launches (running
//! sums, masks, fills, exponentials, the product, the copies of its operands into place), most of
//! them on tensors of a few KB: at SmolLM2's micro-batch the SSD forward spent ~0.27 ms of its
//! 1.34 ms of device time in such small launches and ~0.6 ms more in burn's host dispatch of its
//! ~25 ops (session 14). The kernel is one launch each way: a unit walks one state entry of one
//! head through the chunks (forward), or back through them (backward, with each chunk's `dλ` summed
//! over the cube).

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::autodiff::Autodiff;
#[cfg(feature = "cuda")]
use burn::backend::fusion::custom::TensorSpec;
use burn::backend::tensor::FloatTensor;
use burn::backend::{backend_extension, Backend, Dispatch, TensorMetadata};
use burn::tensor::{Bool, Shape, Slice, Tensor};

/// The state at each chunk boundary: the kernel on a CubeCL device (`DISTILL_SSD_PASS=ops` for the
/// twin there), [`pass_states_reference`] elsewhere.
///
/// # Shapes
/// - `local`: `[batch, chunks, heads, p, n]`; `decay`: `[batch, chunks, heads]` (each chunk's
///   log decay `λ`); `state`: `[batch, heads, p, n]` -> `[batch, chunks + 1, heads, p, n]`: the
///   state entering each chunk, then the state after the last
pub fn pass_states(local: Tensor<5>, decay: Tensor<3>, state: Tensor<4>) -> Tensor<5> {
    check(&local, &decay, &state);
    #[cfg(feature = "cuda")]
    if kernel_wanted() && crate::mamba2_step::runs_on_cube(&local.device()) {
        return pass_states_custom(local, decay, state);
    }
    pass_states_reference(local, decay, state)
}

/// Whether [`pass_states`] takes the kernel on a CubeCL device: yes unless `DISTILL_SSD_PASS=ops`
/// (or `DISTILL_SSD=ops`, the whole scan in tensor ops). On the H200 (session 16) it took the scan
/// of `[16, 2048, 9, 64, 64]` from 1.67 to 1.35 ms forward, 6.67 to 6.11 ms with the backward.
#[cfg(feature = "cuda")]
fn kernel_wanted() -> bool {
    static WANTED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    crate::switched_on(&WANTED, "DISTILL_SSD_PASS", "ops") && super::wanted()
}

/// [`pass_states`] in tensor ops, all chunks at once (differentiated by burn's autodiff): the
/// CPU's, and the twin. With `C_k = Σ_{c<k} λ_c`, `E_k = Σ_{j≤k} exp(C_k - C_j) u_j` where `u_0`
/// is the entering state and `u_j` chunk `j - 1`'s contribution.
pub fn pass_states_reference(local: Tensor<5>, decay: Tensor<3>, state: Tensor<4>) -> Tensor<5> {
    check(&local, &decay, &state);
    let [bs, nc, h, p, n] = local.dims();
    let device = local.device();
    let bounds = Tensor::cat(vec![Tensor::zeros([bs, h, 1], (&device, decay.dtype())), decay.swap_dims(1, 2).cumsum(2)], 2); // C: [bs, h, nc+1]
    let gap = bounds.clone().unsqueeze_dim::<4>(3) - bounds.unsqueeze_dim::<4>(2); // [bs, h, k, j] = C_k - C_j
    let later = Tensor::<2, Bool>::tril_mask([nc + 1, nc + 1], 0, &device).reshape([1, 1, nc + 1, nc + 1]).expand([bs, h, nc + 1, nc + 1]);
    // Masked before the exponential too: C_k - C_j > 0 above the diagonal could overflow.
    let weights = gap.mask_fill(later.clone(), 0.0).exp().mask_fill(later, 0.0);
    let u = Tensor::cat(vec![state.unsqueeze_dim::<5>(1), local], 1).swap_dims(1, 2).reshape([bs, h, nc + 1, p * n]);
    weights.matmul(u).reshape([bs, h, nc + 1, p, n]).swap_dims(1, 2)
}

/// [`pass_states`] through the op with its own backward, on any backend.
pub fn pass_states_custom(local: Tensor<5>, decay: Tensor<3>, state: Tensor<4>) -> Tensor<5> {
    check(&local, &decay, &state);
    Tensor::from_dispatch(<Dispatch as StatePassingOps>::pass_states(local.into_dispatch(), decay.into_dispatch(), state.into_dispatch()))
}

fn check(local: &Tensor<5>, decay: &Tensor<3>, state: &Tensor<4>) {
    let [bs, nc, h, p, n] = local.dims();
    assert!(decay.dims() == [bs, nc, h] && state.dims() == [bs, h, p, n], "pass_states: local {:?}, decay {:?}, state {:?}", local.dims(), decay.dims(), state.dims());
}

#[backend_extension(Flex, Autodiff, Cube: cfg(feature = "cuda"), Fusion: cfg(feature = "cuda"))]
pub trait StatePassingOps: Backend {
    /// The states at the boundaries: the kernel where the backend has one, the recurrence a
    /// chunk at a time in tensor ops elsewhere; differentiated by the backward below.
    #[fusion(meta = pass_meta)]
    fn pass_states(local: FloatTensor<Self>, decay: FloatTensor<Self>, state: FloatTensor<Self>) -> FloatTensor<Self> {
        pass_in_ops::<Self>(local, decay, state)
    }

    /// The backward: from the boundary states' gradient `d_out` and the boundary states `out`,
    /// `(d_local, d_decay, d_state)`.
    #[fusion(meta = pass_back_meta)]
    fn pass_states_backward(d_out: FloatTensor<Self>, out: FloatTensor<Self>, decay: FloatTensor<Self>) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        pass_back_in_ops::<Self>(d_out, out, decay)
    }
}

#[cfg(feature = "cuda")]
fn pass_meta(local: &TensorSpec, _decay: &TensorSpec, _state: &TensorSpec) -> TensorSpec {
    let [bs, nc, h, p, n] = local.shape.dims::<5>();
    TensorSpec { shape: Shape::new([bs, nc + 1, h, p, n]), ..local.clone() }
}

#[cfg(feature = "cuda")]
fn pass_back_meta(d_out: &TensorSpec, _out: &TensorSpec, decay: &TensorSpec) -> (TensorSpec, TensorSpec, TensorSpec) {
    let [bs, nc1, h, p, n] = d_out.shape.dims::<5>();
    let local = TensorSpec { shape: Shape::new([bs, nc1 - 1, h, p, n]), ..d_out.clone() };
    let state = TensorSpec { shape: Shape::new([bs, h, p, n]), ..d_out.clone() };
    (local, decay.clone(), state)
}

impl StatePassingOps for burn::backend::Flex {}

/// Chunk `c` of `t` along dim 1, that dim dropped: `[bs, k, ..rest]` -> `[bs, ..rest]`.
fn at<B: Backend>(t: &FloatTensor<B>, c: usize) -> FloatTensor<B> {
    let mut rest = t.shape();
    let mut slices = vec![Slice::new(0, None, 1); rest.rank()];
    slices[1] = Slice::new(c as isize, Some(c as isize + 1), 1);
    rest.remove(1);
    B::float_reshape(B::float_slice(t.clone(), &slices), rest)
}

/// `[bs, ..rest]` -> `[bs, 1, ..rest]`, to concatenate along dim 1.
fn lift<B: Backend>(t: FloatTensor<B>) -> FloatTensor<B> {
    let mut shape = t.shape();
    shape.insert(1, 1);
    B::float_reshape(t, shape)
}

/// `exp(λ_c)` as `[bs, h, 1, 1]`, to scale a `[bs, h, p, n]` state.
fn factor<B: Backend>(decay: &FloatTensor<B>, c: usize) -> FloatTensor<B> {
    let [bs, _, h] = decay.shape().dims::<3>();
    B::float_reshape(B::float_exp(at::<B>(decay, c)), Shape::new([bs, h, 1, 1]))
}

/// The recurrence a chunk at a time.
fn pass_in_ops<B: Backend>(local: FloatTensor<B>, decay: FloatTensor<B>, state: FloatTensor<B>) -> FloatTensor<B> {
    let nc = local.shape().dims::<5>()[1];
    let mut s = state;
    let mut out = Vec::with_capacity(nc + 1);
    for c in 0..nc {
        out.push(lift::<B>(s.clone()));
        s = B::float_add(B::float_mul(s, factor::<B>(&decay, c)), at::<B>(&local, c));
    }
    out.push(lift::<B>(s));
    B::float_cat(out, 1)
}

/// Back through the recurrence: with `G_nc = dE_nc` and `G_c = dE_c + exp(λ_c) G_{c+1}`,
/// `d_local_c = G_{c+1}`, `d_state = G_0` and `dλ_c = exp(λ_c) Σ_{p,n} G_{c+1} ⊙ E_c`.
fn pass_back_in_ops<B: Backend>(d_out: FloatTensor<B>, out: FloatTensor<B>, decay: FloatTensor<B>) -> (FloatTensor<B>, FloatTensor<B>, FloatTensor<B>) {
    let [bs, nc, h] = decay.shape().dims::<3>();
    let mut g = at::<B>(&d_out, nc);
    let (mut d_local, mut d_decay) = (Vec::with_capacity(nc), Vec::with_capacity(nc));
    for c in (0..nc).rev() {
        let a = factor::<B>(&decay, c);
        d_local.push(lift::<B>(g.clone()));
        let r = B::float_sum_dim(B::float_sum_dim(B::float_mul(g.clone(), at::<B>(&out, c)), 3), 2); // [bs, h, 1, 1]
        d_decay.push(B::float_reshape(B::float_mul(r, a.clone()), Shape::new([bs, 1, h])));
        g = B::float_add(at::<B>(&d_out, c), B::float_mul(a, g));
    }
    d_local.reverse();
    d_decay.reverse();
    (B::float_cat(d_local, 1), B::float_cat(d_decay, 1), g)
}

impl<B: Backend + StatePassingOps, C: CheckpointStrategy> StatePassingOps for Autodiff<B, C> {
    fn pass_states(local: FloatTensor<Self>, decay: FloatTensor<Self>, state: FloatTensor<Self>) -> FloatTensor<Self> {
        #[derive(Debug)]
        struct PassBackward;

        impl<B: Backend + StatePassingOps> Backward<B, 3> for PassBackward {
            /// The boundary states and the decays.
            type State = (FloatTensor<B>, FloatTensor<B>);

            fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
                let [node_local, node_decay, node_state] = ops.parents;
                let d_out = grads.consume::<B>(&ops.node);
                let (out, decay) = ops.state;
                let (d_local, d_decay, d_state) = B::pass_states_backward(d_out, out, decay);
                if let Some(node) = node_local {
                    grads.register::<B>(node.id, d_local);
                }
                if let Some(node) = node_decay {
                    grads.register::<B>(node.id, d_decay);
                }
                if let Some(node) = node_state {
                    grads.register::<B>(node.id, d_state);
                }
            }
        }

        match PassBackward.prepare::<C>([local.node(), decay.node(), state.node()]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let decay = decay.into_primitive();
                let out = B::pass_states(local.into_primitive(), decay.clone(), state.into_primitive());
                prep.finish((out.clone(), decay), out)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::pass_states(local.into_primitive(), decay.into_primitive(), state.into_primitive())),
        }
    }
}

#[cfg(test)]
mod tests {
    use burn::tensor::{Device, Distribution, Tolerance};

    use super::*;

    fn inputs(device: &Device) -> (Tensor<5>, Tensor<3>, Tensor<4>) {
        let normal = Distribution::Normal(0.0, 1.0);
        let local = Tensor::<5>::random([2, 5, 3, 4, 6], normal, device);
        let decay = Tensor::<3>::random([2, 5, 3], Distribution::Uniform(-4.0, 0.0), device);
        let state = Tensor::<4>::random([2, 3, 4, 6], normal, device);
        (local, decay, state)
    }

    #[test]
    fn the_twin_is_the_recurrence_a_chunk_at_a_time() {
        let (local, decay, state) = inputs(&Device::flex());
        let got = pass_states_reference(local.clone(), decay.clone(), state.clone());
        let mut s = state;
        for c in 0..5 {
            got.clone().narrow(1, c, 1).squeeze_dim::<4>(1).into_data().assert_approx_eq::<f32>(&s.clone().into_data(), Tolerance::absolute(1e-5));
            let a = decay.clone().narrow(1, c, 1).reshape([2, 3, 1, 1]).exp();
            s = s * a + local.clone().narrow(1, c, 1).squeeze_dim::<4>(1);
        }
        got.narrow(1, 5, 1).squeeze_dim::<4>(1).into_data().assert_approx_eq::<f32>(&s.into_data(), Tolerance::absolute(1e-5));
    }

    #[test]
    fn its_backward_equals_autodiff_of_the_twin() {
        let device = Device::flex().autodiff();
        let (local, decay, state) = inputs(&device);
        let w = Tensor::<5>::random([2, 6, 3, 4, 6], Distribution::Normal(0.0, 1.0), &device);
        type Pass = fn(Tensor<5>, Tensor<3>, Tensor<4>) -> Tensor<5>;
        let run = |f: Pass| {
            let (local, decay, state) = (local.clone().require_grad(), decay.clone().require_grad(), state.clone().require_grad());
            let out = f(local.clone(), decay.clone(), state.clone());
            let grads = (out.clone() * w.clone()).sum().backward();
            (out.inner().into_data(), local.grad(&grads).unwrap().into_data(), decay.grad(&grads).unwrap().into_data(), state.grad(&grads).unwrap().into_data())
        };
        let (ours, want) = (run(pass_states_custom), run(pass_states_reference));
        let tol = Tolerance::absolute(1e-4);
        ours.0.assert_approx_eq::<f32>(&want.0, tol);
        ours.1.assert_approx_eq::<f32>(&want.1, tol);
        ours.2.assert_approx_eq::<f32>(&want.2, tol);
        ours.3.assert_approx_eq::<f32>(&want.3, tol);
    }
}
