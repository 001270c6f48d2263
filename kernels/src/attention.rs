//! Causal self-attention for training, with its own backward. burn's autodiff differentiates
//! `attention` through its materialized fallback, and even with our own softmax backward
//! (`softmax_last`) the forward still writes the `[batch, heads, seq, seq]` scores and keeps
//! the probabilities alive until the backward: at the SmolLM2 micro-batch of 16 x 2048 tokens,
//! 1.2 GB per attention layer in bf16, 18 GB for the 50% hybrid's 15 layers.
//!
//! Here the forward is the backend's own attention (cubek's flash kernel on the GPU: the scores
//! never reach memory) and keeps only `q`, `k`, `v` and the output `o`. The backward recomputes
//! the probabilities once and forms the gradients as FlashAttention-2's backward does, in tensor
//! ops: with `P = softmax(q kᵀ / √d + causal)` and the output's gradient `dO`,
//! `dV = Pᵀ dO`, `dP = dO Vᵀ`, `dS = P ⊙ (dP - rowsum(dO ⊙ o))`, `dq = dS k / √d`,
//! `dk = dSᵀ q / √d`. `rowsum(dO ⊙ o)` equals `rowsum(dP ⊙ P)` and costs a pass over `[s, d]`
//! rather than `[s, s]`.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::autodiff::Autodiff;
use burn::backend::tensor::FloatTensor;
use burn::backend::{backend_extension, Backend, Dispatch, Scalar, TensorMetadata};
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{Bool, DType, Device, Tensor};

use crate::softmax::SoftmaxOps;

/// Which causal attention training runs: `DISTILL_ATTENTION=recompute` (this module's) or
/// `composite` (the default: the scores materialized, softmax with its own backward). On the
/// 2-core CPU the composite is faster (70.2 against 92.4 ms forward and backward at 2 x 9 x 512
/// x 64: the CPU has no flash forward); on the GPU this one keeps 1.2 GB less per layer alive
/// at the SmolLM2 micro-batch and its speed is not yet measured (`distill bench attention`).
pub fn recompute_in_training() -> bool {
    static CHOSEN: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *CHOSEN.get_or_init(|| match std::env::var("DISTILL_ATTENTION").as_deref() {
        Ok("recompute") => true,
        Ok("composite") | Err(_) => false,
        Ok(other) => panic!("DISTILL_ATTENTION: {other:?} is neither `recompute` nor `composite`"),
    })
}

/// `softmax(q kᵀ / √d + causal) v` over a whole sequence (query `i` sees keys `0..=i`),
/// differentiated by its own backward under autodiff.
///
/// # Shapes
/// - `q`, `k`, `v`: `[batch, heads, seq, d]` -> `[batch, heads, seq, d]`
///
/// # Panics
/// When `k` or `v` is not as long as `q` (a query block after a cache is not training's case).
pub fn causal_self_attention(q: Tensor<4>, k: Tensor<4>, v: Tensor<4>) -> Tensor<4> {
    let s = q.dims()[2];
    assert!(k.dims()[2] == s && v.dims()[2] == s, "causal_self_attention: {s} queries against {} keys", k.dims()[2]);
    // The mask the backward recomputes the probabilities under, made here where tensors have a
    // device and a dtype.
    let bias = causal_bias(s, s, &q.device(), q.dtype());
    Tensor::from_dispatch(<Dispatch as CausalAttentionOps>::causal_self_attention(q.into_dispatch(), k.into_dispatch(), v.into_dispatch(), bias.into_dispatch()))
}

/// The additive causal mask `[1, 1, s, t]`: 0 where query `i` of `s` may see key `j` (`j <= i +
/// t - s`), -inf after.
pub fn causal_bias(s: usize, t: usize, device: &Device, dtype: DType) -> Tensor<4> {
    let future = Tensor::<2, Bool>::tril_mask([s, t], (t - s) as i64, device);
    Tensor::<2>::zeros([s, t], (device, dtype)).mask_fill(future, f32::NEG_INFINITY).reshape([1, 1, s, t])
}

#[backend_extension(Flex, Autodiff, Cube: cfg(feature = "cuda"), Fusion: cfg(feature = "cuda"))]
pub trait CausalAttentionOps: Backend {
    /// The backend's causal attention; `bias` (`[1, 1, s, s]`, 0 or -inf) is for the backward.
    #[fusion(default)]
    fn causal_self_attention(q: FloatTensor<Self>, k: FloatTensor<Self>, v: FloatTensor<Self>, bias: FloatTensor<Self>) -> FloatTensor<Self> {
        let _ = bias;
        let options = AttentionModuleOptions { scale: None, softcap: None, is_causal: true };
        Self::attention(q, k, v, None, None, options)
    }
}

impl CausalAttentionOps for burn::backend::Flex {}

#[cfg(feature = "cuda")]
impl CausalAttentionOps for burn_cubecl::CubeBackend {}

impl<B: Backend + CausalAttentionOps + SoftmaxOps, C: CheckpointStrategy> CausalAttentionOps for Autodiff<B, C> {
    fn causal_self_attention(q: FloatTensor<Self>, k: FloatTensor<Self>, v: FloatTensor<Self>, bias: FloatTensor<Self>) -> FloatTensor<Self> {
        #[derive(Debug)]
        struct AttentionBackward;

        impl<B: Backend + SoftmaxOps> Backward<B, 3> for AttentionBackward {
            /// `q`, `k`, `v`, the output `o` and the causal bias.
            type State = [FloatTensor<B>; 5];

            fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
                let [node_q, node_k, node_v] = ops.parents;
                let d_o = grads.consume::<B>(&ops.node);
                let [q, k, v, o, bias] = ops.state;
                let d = q.shape().dims::<4>()[3];
                let scale = Scalar::from(1.0 / (d as f64).sqrt());
                let t = |x: FloatTensor<B>| B::float_swap_dims(x, 2, 3);
                let scores = B::float_add(B::float_matmul(B::float_mul_scalar(q.clone(), scale), t(k.clone())), bias);
                let p = B::softmax_last(scores); // [b, h, s, s]
                let dot = B::float_sum_dim(B::float_mul(d_o.clone(), o), 3); // [b, h, s, 1]
                let d_p = B::float_matmul(d_o.clone(), t(v));
                let d_s = B::float_mul(p.clone(), B::float_sub(d_p, dot));
                if let Some(node) = node_v {
                    grads.register::<B>(node.id, B::float_matmul(t(p), d_o));
                }
                if let Some(node) = node_q {
                    grads.register::<B>(node.id, B::float_mul_scalar(B::float_matmul(d_s.clone(), k), scale));
                }
                if let Some(node) = node_k {
                    grads.register::<B>(node.id, B::float_mul_scalar(B::float_matmul(t(d_s), q), scale));
                }
            }
        }

        let bias = bias.into_primitive();
        match AttentionBackward.prepare::<C>([q.node(), k.node(), v.node()]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let (q, k, v) = (q.into_primitive(), k.into_primitive(), v.into_primitive());
                let o = B::causal_self_attention(q.clone(), k.clone(), v.clone(), bias.clone());
                prep.finish([q, k, v, o.clone(), bias], o)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::causal_self_attention(q.into_primitive(), k.into_primitive(), v.into_primitive(), bias)),
        }
    }
}

#[cfg(test)]
mod tests {
    use burn::tensor::activation::softmax;
    use burn::tensor::{Device, Distribution, Tolerance};

    use super::*;

    /// The composite the op replaces: scores, causal mask, softmax, product, all differentiated
    /// by burn's autodiff.
    fn composite(q: Tensor<4>, k: Tensor<4>, v: Tensor<4>) -> Tensor<4> {
        let [_, _, s, d] = q.dims();
        let future = Tensor::<2, Bool>::tril_mask([s, s], 0, &q.device()).reshape([1, 1, s, s]);
        let scores = q.matmul(k.swap_dims(2, 3)) * (1.0 / (d as f64).sqrt());
        softmax(scores.mask_fill(future, f32::NEG_INFINITY), 3).matmul(v)
    }

    #[test]
    fn equals_the_differentiated_composite_in_values_and_gradients() {
        let device = Device::flex().autodiff();
        let normal = Distribution::Normal(0.0, 1.0);
        let (q, k, v) = (Tensor::<4>::random([2, 3, 7, 4], normal, &device), Tensor::<4>::random([2, 3, 7, 4], normal, &device), Tensor::<4>::random([2, 3, 7, 4], normal, &device));
        // A weighting of the output, so each gradient depends on every output entry.
        let w = Tensor::<4>::random([2, 3, 7, 4], normal, &device);
        let run = |f: fn(Tensor<4>, Tensor<4>, Tensor<4>) -> Tensor<4>| {
            let (q, k, v) = (q.clone().require_grad(), k.clone().require_grad(), v.clone().require_grad());
            let y = f(q.clone(), k.clone(), v.clone());
            let grads = (y.clone() * w.clone()).sum().backward();
            let g = |x: &Tensor<4>| x.grad(&grads).expect("a gradient");
            (y.inner(), g(&q), g(&k), g(&v))
        };
        let (ours, want) = (run(causal_self_attention), run(composite));
        let tol = Tolerance::absolute(1e-5);
        ours.0.into_data().assert_approx_eq::<f32>(&want.0.into_data(), tol);
        ours.1.into_data().assert_approx_eq::<f32>(&want.1.into_data(), tol);
        ours.2.into_data().assert_approx_eq::<f32>(&want.2.into_data(), tol);
        ours.3.into_data().assert_approx_eq::<f32>(&want.3.into_data(), tol);
    }

    #[test]
    fn without_autodiff_it_is_the_backends_causal_attention() {
        let device = Device::flex();
        let normal = Distribution::Normal(0.0, 1.0);
        let (q, k, v) = (Tensor::<4>::random([1, 2, 5, 8], normal, &device), Tensor::<4>::random([1, 2, 5, 8], normal, &device), Tensor::<4>::random([1, 2, 5, 8], normal, &device));
        let ours = causal_self_attention(q.clone(), k.clone(), v.clone());
        ours.into_data().assert_approx_eq::<f32>(&composite(q, k, v).into_data(), Tolerance::absolute(1e-5));
    }
}
