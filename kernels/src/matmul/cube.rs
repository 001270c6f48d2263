//! [`super::matmul_with`] on CubeCL: cubek's `launch_ref` with the named routine, through
//! burn's backend extension (queued in burn's fusion stream like any op). Under autodiff the
//! product records its own backward, whose two products (`dA = dC·Bᵀ`, `dB = Aᵀ·dC`) run with
//! their own named routines: burn's backward of a plain matmul would run the default kernel,
//! slowest of all on the weight gradients' transposed shapes.

use burn::backend::cubecl::dtype_to_storage_type;
use burn::backend::fusion::custom::TensorSpec;
use burn::backend::tensor::FloatTensor;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::autodiff::Autodiff;
use burn::backend::{backend_extension, Backend, Dispatch, TensorMetadata};
use burn::tensor::{DType, Tensor};
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::ops::numeric::empty_device_contiguous_dtype;
use burn_cubecl::tensor::CubeTensor;
use burn_cubecl::CubeBackend;
use cubek::matmul::definition::{MatmulElems, MatmulGlobalElems, MatmulSetupError};
use cubek::matmul::launch::launch_ref;
use cubek::matmul::multi_level::components::tile::TileMatmulKind;
use cubek::matmul::multi_level::routines::batch::double_buffering::DoubleBufferingArgs;
use cubek::matmul::multi_level::routines::batch::ordered_double_buffering::OrderedSelectionArgs;
use cubek::matmul::routine::BlueprintStrategy::Inferred;
use cubek::matmul::strategy::Strategy;
use cubek::matmul::tiled::cmma::CmmaStrategy;
use cubek::std::InputBinding;

use super::{MatmulKernel, ProductKernels};

pub fn matmul_with<const D: usize>(lhs: Tensor<D>, rhs: Tensor<D>, kernels: ProductKernels) -> Tensor<D> {
    Tensor::from_dispatch(<Dispatch as MatmulWithOps>::matmul_with(lhs.into_dispatch(), rhs.into_dispatch(), pack(kernels)))
}

/// The kernels as a plain number (the extension trait's arguments must be ordinary values):
/// one byte each for the product, its left gradient and its right gradient.
fn pack(k: ProductKernels) -> u32 {
    let code = |kernel: MatmulKernel| MatmulKernel::ALL.iter().position(|k| *k == kernel).unwrap_or(0) as u32;
    code(k.forward) | code(k.lhs_grad) << 8 | code(k.rhs_grad) << 16
}

fn strategy(code: u32) -> Strategy {
    use cubek::matmul::multi_level::Strategy as Ml;
    use cubek::matmul::tiled::Strategy as Tiled;
    let mma = TileMatmulKind::Mma;
    match MatmulKernel::ALL.get((code & 0xff) as usize).copied().unwrap_or(MatmulKernel::Default) {
        MatmulKernel::Default => Strategy::Auto,
        MatmulKernel::DoubleCyclicMma => Ml::DoubleCyclicMma(Inferred(DoubleBufferingArgs { tile_matmul: mma, specialized: false })).into(),
        MatmulKernel::DoubleCyclicMmaSpecialized => Ml::DoubleCyclicMma(Inferred(DoubleBufferingArgs { tile_matmul: mma, specialized: true })).into(),
        MatmulKernel::OrderedDoubleMma => {
            Ml::OrderedDoubleMma(Inferred(OrderedSelectionArgs { tile_matmul: mma, partition_k: Some(2), row_count: Some(8), rows_per_plane: Some(2) })).into()
        }
        MatmulKernel::TiledCmmaAsync => Tiled::Cmma(Inferred(CmmaStrategy::async_copy())).into(),
        MatmulKernel::TiledCmmaTma => Tiled::Cmma(Inferred(CmmaStrategy::tma())).into(),
        MatmulKernel::SpecializedTmaMma => Ml::SpecializedTmaMma(Inferred(Default::default())).into(),
        MatmulKernel::DoubleTmaMma => Ml::DoubleTmaMma(Inferred(Default::default())).into(),
    }
}

#[backend_extension(Cube, Fusion, Autodiff)]
pub trait MatmulWithOps: Backend {
    #[fusion(meta = product_meta)]
    fn matmul_with(lhs: FloatTensor<Self>, rhs: FloatTensor<Self>, code: u32) -> FloatTensor<Self>;
}

fn product_meta(lhs: &TensorSpec, rhs: &TensorSpec, _code: &u32) -> TensorSpec {
    let mut shape = lhs.shape.clone();
    let d = shape.num_dims();
    shape[d - 1] = rhs.shape[d - 1];
    TensorSpec::new(shape, lhs.dtype)
}

impl MatmulWithOps for CubeBackend {
    fn matmul_with(lhs: FloatTensor<Self>, rhs: FloatTensor<Self>, code: u32) -> FloatTensor<Self> {
        let dtype = lhs.dtype;
        // A transposed right operand (a weight's `Bᵀ` in `dA = dC·Bᵀ`) is copied row-major: the
        // TMA loaders have not been validated on it, and weights are small.
        let d = rhs.shape().num_dims();
        let rhs = if rhs.meta.strides()[d - 1] == 1 { rhs } else { into_contiguous(rhs) };
        // A routine that cannot take the problem says so before anything is queued.
        launch(&strategy(code), lhs.clone(), rhs.clone(), dtype).unwrap_or_else(|_| launch(&Strategy::Auto, lhs, rhs, dtype).expect("the default matmul takes every problem"))
    }
}

fn launch(strategy: &Strategy, lhs: CubeTensor, rhs: CubeTensor, out_dtype: DType) -> Result<CubeTensor, MatmulSetupError> {
    let mut shape = lhs.shape();
    let d = shape.num_dims();
    shape[d - 1] = rhs.shape()[d - 1];
    let out = empty_device_contiguous_dtype(lhs.client.clone(), lhs.device.clone(), shape, out_dtype);
    let mut elems = MatmulElems::from_globals(&MatmulGlobalElems {
        lhs: dtype_to_storage_type(lhs.dtype),
        rhs: dtype_to_storage_type(rhs.dtype),
        out: dtype_to_storage_type(out_dtype),
    });
    let client = lhs.client.clone();
    let (l, r) = (InputBinding::new(lhs.binding(), elems.lhs_global), InputBinding::new(rhs.binding(), elems.rhs_global));
    launch_ref(strategy, &client, l, r, out.clone().binding(), &mut elems).map(|_| out)
}

impl<B: Backend + MatmulWithOps, C: CheckpointStrategy> MatmulWithOps for Autodiff<B, C> {
    fn matmul_with(lhs: FloatTensor<Self>, rhs: FloatTensor<Self>, code: u32) -> FloatTensor<Self> {
        #[derive(Debug)]
        struct ProductBackward;

        impl<B: Backend + MatmulWithOps> Backward<B, 2> for ProductBackward {
            /// The left operand when the right one needs a gradient, the right one when the left
            /// one does (a frozen weight keeps no activation alive), and the packed kernels.
            type State = (Option<FloatTensor<B>>, Option<FloatTensor<B>>, u32);

            fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
                let [node_lhs, node_rhs] = ops.parents;
                let grad = grads.consume::<B>(&ops.node);
                let (lhs, rhs, code) = ops.state;
                let d = grad.shape().num_dims();
                if let (Some(node), Some(rhs)) = (node_lhs, rhs) {
                    let rhs_t = B::float_swap_dims(rhs, d - 2, d - 1);
                    grads.register::<B>(node.id, B::matmul_with(grad.clone(), rhs_t, (code >> 8) & 0xff));
                }
                if let (Some(node), Some(lhs)) = (node_rhs, lhs) {
                    let lhs_t = B::float_swap_dims(lhs, d - 2, d - 1);
                    grads.register::<B>(node.id, B::matmul_with(lhs_t, grad, (code >> 16) & 0xff));
                }
            }
        }

        // The backward has no broadcast reduction: batch dimensions must agree.
        let (ls, rs) = (lhs.primitive().shape(), rhs.primitive().shape());
        let d = ls.num_dims();
        assert!((0..d - 2).all(|i| ls[i] == rs[i]), "matmul_with under autodiff needs equal batch dimensions, got {ls:?} and {rs:?}");
        let (lhs_tracked, rhs_tracked) = (lhs.is_tracked(), rhs.is_tracked());
        match ProductBackward.prepare::<C>([lhs.node(), rhs.node()]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let (l, r) = (lhs.primitive().clone(), rhs.primitive().clone());
                let out = B::matmul_with(l.clone(), r.clone(), code & 0xff);
                prep.finish((rhs_tracked.then_some(l), lhs_tracked.then_some(r), code), out)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::matmul_with(lhs.into_primitive(), rhs.into_primitive(), code & 0xff)),
        }
    }
}
