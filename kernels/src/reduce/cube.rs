//! The reductions through cubek's cube routine, launched through burn's backend extension (queued
//! in burn's fusion stream like any op): burn-cubecl's own `reduce_dim` with a named strategy
//! instead of its default one.

use burn::backend::fusion::custom::TensorSpec;
use burn::backend::tensor::{FloatTensor, IntTensor};
use burn::backend::{backend_extension, Backend, Dispatch, TensorMetadata};
use burn::tensor::{DType, IntDType, Int, Tensor};
use burn_cubecl::kernel::reduce::{reduce_dim, KernelReduceStrategy};
use burn_cubecl::CubeBackend;
use cubek::reduce::components::instructions::ReduceOperationConfig;
use cubek::reduce::launch::{RoutineStrategy, VectorizationStrategy};
use cubek::reduce::routines::cube::CubeStrategy;
use cubek::reduce::routines::BlueprintStrategy;
use cubek::reduce::ReduceStrategy;

use super::RowReduce;

pub fn reduce_last<const D: usize>(x: Tensor<D>, op: RowReduce) -> Tensor<D> {
    let code = match op {
        RowReduce::Sum => 0,
        RowReduce::Max => 1,
        RowReduce::Mean => 2,
    };
    Tensor::from_dispatch(<Dispatch as RowReduceOps>::reduce_rows(x.into_dispatch(), code))
}

pub fn argmax_last<const D: usize>(x: Tensor<D>) -> Tensor<D, Int> {
    let ints = INTS.iter().position(|t| *t == x.device().settings().int_dtype).unwrap_or(0) as u32;
    Tensor::from_dispatch(<Dispatch as RowReduceOps>::argmax_rows(x.into_dispatch(), ints))
}

/// Integer dtypes by code (the extension's arguments must be plain values).
const INTS: [IntDType; 8] = [IntDType::I64, IntDType::I32, IntDType::I16, IntDType::I8, IntDType::U64, IntDType::U32, IntDType::U16, IntDType::U8];

#[backend_extension(Cube, Fusion)]
pub trait RowReduceOps: Backend {
    /// `op`: 0 sum, 1 max, 2 mean, over the last axis (kept, length 1).
    #[fusion(meta = reduced_meta)]
    fn reduce_rows(x: FloatTensor<Self>, op: u32) -> FloatTensor<Self>;
    /// The argmax over the last axis (kept, length 1), in the integer dtype of code `ints`.
    #[fusion(meta = argmax_meta)]
    fn argmax_rows(x: FloatTensor<Self>, ints: u32) -> IntTensor<Self>;
}

fn last_kept(x: &TensorSpec) -> burn::tensor::Shape {
    let mut shape = x.shape.clone();
    let d = shape.num_dims();
    shape[d - 1] = 1;
    shape
}

fn reduced_meta(x: &TensorSpec, _op: &u32) -> TensorSpec {
    TensorSpec::new(last_kept(x), x.dtype)
}

fn argmax_meta(x: &TensorSpec, ints: &u32) -> TensorSpec {
    TensorSpec::new(last_kept(x), int_dtype(*ints))
}

fn int_dtype(code: u32) -> DType {
    INTS.get(code as usize).copied().unwrap_or(IntDType::I64).into()
}

/// A cube per output, its units splitting the axis, planes combining the partial results.
fn by_cube() -> KernelReduceStrategy {
    KernelReduceStrategy::Specific(ReduceStrategy {
        routine: RoutineStrategy::Cube(BlueprintStrategy::Inferred(CubeStrategy { use_planes: true })),
        vectorization: VectorizationStrategy { parallel_output_vectorization: false },
        autotune_level: Default::default(),
    })
}

impl RowReduceOps for CubeBackend {
    fn reduce_rows(x: FloatTensor<Self>, op: u32) -> FloatTensor<Self> {
        let config = match op {
            0 => ReduceOperationConfig::Sum,
            1 => ReduceOperationConfig::Max,
            _ => ReduceOperationConfig::Mean,
        };
        let dim = x.shape().num_dims() - 1;
        // A problem the routine does not take runs burn's default one, as burn's own call would.
        reduce_dim(x.clone(), None, dim, by_cube(), config)
            .or_else(|_| reduce_dim(x, None, dim, KernelReduceStrategy::Unspecified, config))
            .expect("burn's default reduction takes every problem")
    }

    fn argmax_rows(x: FloatTensor<Self>, ints: u32) -> IntTensor<Self> {
        let dim = x.shape().num_dims() - 1;
        let out = Some(int_dtype(ints));
        reduce_dim(x.clone(), out, dim, by_cube(), ReduceOperationConfig::ArgMax)
            .or_else(|_| reduce_dim(x, out, dim, KernelReduceStrategy::Unspecified, ReduceOperationConfig::ArgMax))
            .expect("burn's default reduction takes every problem")
    }
}
