//! Reductions along the last axis for inference (decoding, generation, evaluation): sum, max,
//! mean, argmax and the attention's NaN-safe softmax.
//!
//! Without burn's `autotune` feature (off here: BENCHMARKS.md, "Why autotune is off") every
//! reduction on a CubeCL device runs cubek's unit routine, one unit walking each output's whole
//! axis. Training has thousands of rows and fills the GPU that way; decoding has a handful: at
//! batch 1 the greedy argmax is one unit walking 49,152 logits, each RMSNorm one unit over 576
//! values, each attention layer's softmax 9 units over the whole context twice. Those chains of
//! dependent loads are the suspects for what a decode step still costs on a captured graph
//! (12-14 ms a token at context 512, 47 at 16k for the teacher, with bytes that move in well
//! under a millisecond). Here the reduction runs cubek's cube routine instead (a cube per
//! output, its units splitting the axis, planes combining them) where a CubeCL device has few
//! rows to reduce and nothing needs a gradient; elsewhere it is burn's own op, the twin.
//! `DISTILL_REDUCE=burn` keeps burn's everywhere, to measure one against the other.

#[cfg(feature = "cuda")]
mod cube;

use burn::tensor::{Int, Tensor};

/// Which reduction a call asks for (the cube kernel's configuration).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowReduce {
    Sum,
    Max,
    Mean,
}

/// `x` summed over its last axis, which is kept with length 1.
pub fn sum_last<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    reduce_last(x, RowReduce::Sum)
}

/// The largest value along the last axis, kept with length 1.
pub fn max_last<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    reduce_last(x, RowReduce::Max)
}

/// The mean along the last axis, kept with length 1.
pub fn mean_last<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    reduce_last(x, RowReduce::Mean)
}

/// `op` along the last axis (kept, length 1): [`sum_last`], [`max_last`] or [`mean_last`].
pub fn reduce_last<const D: usize>(x: Tensor<D>, op: RowReduce) -> Tensor<D> {
    #[cfg(feature = "cuda")]
    if by_cubes(&x) {
        return cube::reduce_last(x, op);
    }
    reduce_last_reference(x, op)
}

/// [`sum_last`], [`max_last`] and [`mean_last`] as burn's ops: what the CPU runs.
pub fn reduce_last_reference<const D: usize>(x: Tensor<D>, op: RowReduce) -> Tensor<D> {
    match op {
        RowReduce::Sum => x.sum_dim(D - 1),
        RowReduce::Max => x.max_dim(D - 1),
        RowReduce::Mean => x.mean_dim(D - 1),
    }
}

/// The index of the largest value along the last axis (the first of equal ones, as burn's
/// `argmax`), kept with length 1, in the device's default integer type.
pub fn argmax_last<const D: usize>(x: Tensor<D>) -> Tensor<D, Int> {
    #[cfg(feature = "cuda")]
    if by_cubes(&x) {
        return cube::argmax_last(x);
    }
    x.argmax(D - 1)
}

/// Softmax along the last axis as burn's attention computes it when it falls back to separate
/// kernels: the max clamped to the dtype's lowest finite value and the sum to its smallest
/// positive one, so a row masked out entirely (all `-inf`) gives zeros, not NaN.
pub fn safe_softmax_last<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    let finfo = x.dtype().finfo().expect("a float tensor");
    let max = max_last(x.clone()).clamp_min(finfo.min);
    let numerator = (x - max).exp();
    let sum = sum_last(numerator.clone()).clamp_min(finfo.min_positive);
    numerator / sum
}

/// Which reductions inference runs on a CubeCL device: `"cube"` (this module's) or `"burn"`
/// (`DISTILL_REDUCE=burn`, or a build without the kernels), for benchmark records.
pub fn mode() -> &'static str {
    #[cfg(feature = "cuda")]
    if cube_wanted() {
        return "cube";
    }
    "burn"
}

/// Rows at most, and an axis at least this long, for the cube routine: beyond that many rows the
/// unit routine fills the GPU by itself, and a short axis is a few loads for one unit.
#[cfg(feature = "cuda")]
const MAX_ROWS: usize = 65_536;
#[cfg(feature = "cuda")]
const MIN_AXIS: usize = 64;

#[cfg(feature = "cuda")]
fn by_cubes<const D: usize>(x: &Tensor<D>) -> bool {
    let dims = x.dims();
    let (axis, rows) = (dims[D - 1], dims[..D - 1].iter().product::<usize>());
    cube_inference(&x.device()) && rows <= MAX_ROWS && axis >= MIN_AXIS
}

/// A CubeCL device computing without gradients, unless `DISTILL_REDUCE=burn`.
#[cfg(feature = "cuda")]
pub(crate) fn cube_inference(device: &burn::tensor::Device) -> bool {
    cube_wanted() && crate::mamba2_step::cube_without_gradients(device)
}

#[cfg(feature = "cuda")]
fn cube_wanted() -> bool {
    static WANTED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    crate::switched_on(&WANTED, "DISTILL_REDUCE", "burn")
}

#[cfg(test)]
mod tests {
    use burn::tensor::{Device, Distribution, Tensor, TensorData};

    use super::*;

    #[test]
    fn each_reduction_is_burns_own_on_the_cpu() {
        let device = Device::flex();
        let x = Tensor::<3>::random([2, 3, 70], Distribution::Normal(0.0, 1.0), &device);
        for op in [RowReduce::Sum, RowReduce::Max, RowReduce::Mean] {
            let got = reduce_last(x.clone(), op);
            assert_eq!(got.dims(), [2, 3, 1]);
            got.into_data().assert_eq(&reduce_last_reference(x.clone(), op).into_data(), true);
        }
        argmax_last(x.clone()).into_data().assert_eq(&x.argmax(2).into_data(), true);
    }

    /// Values and the masked rows of attention: a fully masked row gives zeros, not NaN.
    #[test]
    fn safe_softmax_is_softmax_and_zero_where_everything_is_masked() {
        let device = Device::flex();
        let x = Tensor::<2>::from_data(TensorData::new(vec![1.0f32, 2.0, 3.0, f32::NEG_INFINITY, f32::NEG_INFINITY, f32::NEG_INFINITY], [2, 3]), &device);
        let got = safe_softmax_last(x).into_data().try_to_vec::<f32>().unwrap();
        let e: Vec<f32> = [1.0f32, 2.0, 3.0].iter().map(|v| (v - 3.0).exp()).collect();
        let s: f32 = e.iter().sum();
        for (g, w) in got.iter().zip(e.iter().map(|v| v / s).chain([0.0; 3])) {
            assert!((g - w).abs() < 1e-6, "{got:?}");
        }
    }
}
