//! Softmax over the last dimension with its own backward. burn's autodiff differentiates its
//! softmax through the composite it is made of (max, subtract, exp, sum, divide), which keeps
//! the exp alive and walks the whole tensor four or five times backward; the softmax's own
//! gradient, `P ⊙ (G - rowsum(G ⊙ P))`, needs only the output and three passes. On the
//! `[batch, heads, seq, seq]` scores of the training step's attention this is most of the
//! attention's elementwise time (BENCHMARKS.md, the profile of issue 5).

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::autodiff::Autodiff;
use burn::backend::tensor::FloatTensor;
use burn::backend::{backend_extension, Backend, Dispatch, TensorMetadata};
use burn::tensor::Tensor;

/// `softmax(x, D - 1)`, differentiated by its own backward under autodiff.
pub fn softmax_last<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    Tensor::from_dispatch(<Dispatch as SoftmaxOps>::softmax_last(x.into_dispatch()))
}

#[backend_extension(Flex, Autodiff, Cube: cfg(feature = "cuda"), Fusion: cfg(feature = "cuda"))]
pub trait SoftmaxOps: Backend {
    /// The max-shifted softmax over the last dimension, in the backend's own ops (which a
    /// fusing backend fuses).
    #[fusion(default)]
    fn softmax_last(x: FloatTensor<Self>) -> FloatTensor<Self> {
        let d = x.shape().num_dims() - 1;
        let max = Self::float_max_dim(x.clone(), d);
        let e = Self::float_exp(Self::float_sub(x, max));
        let sum = Self::float_sum_dim(e.clone(), d);
        Self::float_div(e, sum)
    }
}

impl SoftmaxOps for burn::backend::Flex {}

#[cfg(feature = "cuda")]
impl SoftmaxOps for burn_cubecl::CubeBackend {}

impl<B: Backend + SoftmaxOps, C: CheckpointStrategy> SoftmaxOps for Autodiff<B, C> {
    fn softmax_last(x: FloatTensor<Self>) -> FloatTensor<Self> {
        #[derive(Debug)]
        struct SoftmaxBackward;

        impl<B: Backend + SoftmaxOps> Backward<B, 1> for SoftmaxBackward {
            /// The output `P`.
            type State = FloatTensor<B>;

            fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
                let [node] = ops.parents;
                let grad = grads.consume::<B>(&ops.node);
                let Some(node) = node else { return };
                let p = ops.state;
                let d = p.shape().num_dims() - 1;
                let dot = B::float_sum_dim(B::float_mul(grad.clone(), p.clone()), d);
                grads.register::<B>(node.id, B::float_mul(p, B::float_sub(grad, dot)));
            }
        }

        match SoftmaxBackward.prepare::<C>([x.node()]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let p = B::softmax_last(x.into_primitive());
                prep.finish(p.clone(), p)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::softmax_last(x.into_primitive())),
        }
    }
}

#[cfg(test)]
mod tests {
    use burn::tensor::activation::softmax;
    use burn::tensor::{Device, Distribution, Tolerance};

    use super::*;

    /// Values and gradients equal burn's own softmax differentiated through its composite.
    #[test]
    fn equals_burns_softmax_with_gradients() {
        let device = Device::flex().autodiff();
        let x = Tensor::<4>::random([2, 3, 5, 7], Distribution::Normal(0.0, 3.0), &device).require_grad();
        let w = Tensor::<4>::random([2, 3, 5, 7], Distribution::Normal(0.0, 1.0), &device);
        let (ours, theirs) = (softmax_last(x.clone()), softmax(x.clone(), 3));
        ours.clone().into_data().assert_approx_eq::<f32>(&theirs.clone().into_data(), Tolerance::absolute(1e-6));
        let (g1, g2) = ((ours * w.clone()).sum().backward(), (theirs * w).sum().backward());
        x.grad(&g1).unwrap().into_data().assert_approx_eq::<f32>(&x.grad(&g2).unwrap().into_data(), Tolerance::absolute(1e-6));
    }
}
