//! `y = x · w` for a few rows of `x`: decoding's projections (one row per sequence and token).
//!
//! burn's default product (cubek's `SimpleCyclicCmma`, autotune off) tiles the output in blocks
//! of many rows and columns and walks `K` through shared memory one tile at a time: for one row
//! that is a handful of cubes (`d_out / tile` of them: 9 for SmolLM2's 576-wide projections) each
//! stepping through `K` in series, so a decode step's ~200 small products are chains of latency
//! rather than bytes (routing them through the TMA routines made a 50% hybrid's decode step 35
//! -> 53 ms, BENCHMARKS.md: the products are a large share of a step). Here every cube takes 32
//! columns and a slice of `K`, its units split that slice again, partial sums meet in shared
//! memory, and a second launch adds the slices: enough cubes to occupy the GPU for any
//! projection, and each unit a few loads deep. The twin is burn's `matmul`.

#[cfg(feature = "cuda")]
mod cube;

use burn::tensor::Tensor;

/// Rows at most for the kernel (each unit keeps a sum per row): decoding at batch 1..9, and
/// speculative verification of up to K = 8 drafts (K + 1 rows). A row's sum runs in the same
/// order whatever the number of rows, so a verified row rounds exactly as that token's decode
/// step does.
pub const MAX_ROWS: usize = 9;

/// `x · w`.
///
/// # Shapes
/// - `x`: `[m, k]`; `w`: `[k, n]` -> `[m, n]`
pub fn gemv(x: Tensor<2>, w: Tensor<2>) -> Tensor<2> {
    #[cfg(feature = "cuda")]
    if takes(x.dims()[0], &x.device()) {
        return cube::gemv(x, w);
    }
    gemv_reference(x, w)
}

/// [`gemv`] as burn's product: what the CPU runs.
pub fn gemv_reference(x: Tensor<2>, w: Tensor<2>) -> Tensor<2> {
    x.matmul(w)
}

/// Rows at most for the batched products: decoding's attention takes the query heads that share
/// a KV head as rows, `group · tokens` of them (SmolLM2: 3 a token, 27 when verifying K = 8).
pub const MAX_BATCHED_ROWS: usize = 32;

/// `x · w` batch by batch: attention's probabilities times its values while decoding, where
/// `K` is the context (thousands of keys) and `n` the head dimension (64): burn's product runs
/// that as a couple of cubes per head walking the whole context in series; here slices of the
/// context run side by side, as in [`gemv`].
///
/// # Shapes
/// - `x`: `[batch, m, k]`; `w`: `[batch, k, n]` -> `[batch, m, n]`
pub fn batched_gemv(x: Tensor<3>, w: Tensor<3>) -> Tensor<3> {
    #[cfg(feature = "cuda")]
    if takes_batched(x.dims()[1], &x.device()) {
        return cube::batched(x, w, false);
    }
    x.matmul(w)
}

/// `x · eᵀ` batch by batch: attention's scores while decoding (`e` the cached keys, a warp per
/// key).
///
/// # Shapes
/// - `x`: `[batch, m, k]`; `e`: `[batch, n, k]` -> `[batch, m, n]`
pub fn batched_gemv_t(x: Tensor<3>, e: Tensor<3>) -> Tensor<3> {
    #[cfg(feature = "cuda")]
    if takes_batched(x.dims()[1], &x.device()) {
        return cube::batched(x, e, true);
    }
    x.matmul(e.swap_dims(1, 2))
}

#[cfg(feature = "cuda")]
fn takes_batched(rows: usize, device: &burn::tensor::Device) -> bool {
    wanted() && rows <= MAX_BATCHED_ROWS && crate::mamba2_step::cube_without_gradients(device)
}

/// Whether decoding's products run the kernel on a CubeCL device (`"gemv"`) or burn's product
/// (`"burn"`: `DISTILL_GEMV=0`, or a build without the kernels), for benchmark records.
pub fn mode() -> &'static str {
    #[cfg(feature = "cuda")]
    if wanted() {
        return "gemv";
    }
    "burn"
}

#[cfg(feature = "cuda")]
fn wanted() -> bool {
    static WANTED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    crate::switched_on(&WANTED, "DISTILL_GEMV", "0")
}

/// Whether [`gemv`] runs the kernel for `rows` rows on `device`: a CubeCL device computing
/// without gradients, at most [`MAX_ROWS`] rows, and `DISTILL_GEMV` not `0`.
#[cfg(feature = "cuda")]
pub fn takes(rows: usize, device: &burn::tensor::Device) -> bool {
    wanted() && rows <= MAX_ROWS && crate::mamba2_step::cube_without_gradients(device)
}

#[cfg(test)]
mod tests {
    use burn::tensor::{Device, Distribution};

    use super::*;

    #[test]
    fn is_the_product_on_the_cpu() {
        let device = Device::flex();
        let x = Tensor::<2>::random([3, 70], Distribution::Normal(0.0, 1.0), &device);
        let w = Tensor::<2>::random([70, 45], Distribution::Normal(0.0, 1.0), &device);
        gemv(x.clone(), w.clone()).into_data().assert_eq(&x.matmul(w).into_data(), true);
    }

    #[test]
    fn the_batched_products_are_the_products_on_the_cpu() {
        let device = Device::flex();
        let n = Distribution::Normal(0.0, 1.0);
        let (x, w) = (Tensor::<3>::random([2, 3, 70], n, &device), Tensor::<3>::random([2, 70, 45], n, &device));
        batched_gemv(x.clone(), w.clone()).into_data().assert_eq(&x.clone().matmul(w.clone()).into_data(), true);
        let e = Tensor::<3>::random([2, 45, 70], n, &device);
        batched_gemv_t(x.clone(), e.clone()).into_data().assert_eq(&x.matmul(e.swap_dims(1, 2)).into_data(), true);
    }
}
