//! A per-channel parameter (a norm weight, a conv tap, a bias, Mamba's `D`) applied over every
//! token, written so that its gradient is cheap on the GPU.
//!
//! The gradient of `x[.., c] * w[c]` with respect to `w` sums over all tokens. burn's autodiff
//! reduces the broadcast axes in one reduction whose output has only `c` elements; without
//! autotuning, cubecl runs it with one thread per output, each walking every token: on the
//! H200 that was 3.6 ms for a `[16384, 576]` gradient (a 36 µs read), and a third of a whole
//! distillation step. Broadcasting `w` to `[r, c]` first splits the same sum in two: `r·c`
//! threads each sum `rows / r` tokens, then `c` threads sum `r` partials.

use burn::tensor::Tensor;

/// Partial sums per channel the reductions should have at least (enough threads to fill a GPU).
const PARALLEL_OUTPUTS: usize = 65_536;

/// `x * w` with `w` broadcast over every axis of `x` but the last.
///
/// # Shapes
/// - `x`: `[.., c]`; `w`: `[c]` -> `[.., c]`
pub fn mul_channels<const D: usize>(x: Tensor<D>, w: Tensor<1>) -> Tensor<D> {
    let (x, w, dims) = split(x, w);
    (x * w).reshape(dims)
}

/// `x + w` with `w` broadcast over every axis of `x` but the last.
///
/// # Shapes
/// - `x`: `[.., c]`; `w`: `[c]` -> `[.., c]`
pub fn add_channels<const D: usize>(x: Tensor<D>, w: Tensor<1>) -> Tensor<D> {
    let (x, w, dims) = split(x, w);
    (x + w).reshape(dims)
}

/// `x` as `[rows / r, r, c]` and `w` broadcast to `[1, r, c]`.
fn split<const D: usize>(x: Tensor<D>, w: Tensor<1>) -> (Tensor<3>, Tensor<3>, [usize; D]) {
    let dims = x.dims();
    let c = dims[D - 1];
    let rows = dims[..D - 1].iter().product::<usize>();
    let r = partials(rows, c);
    (x.reshape([rows / r, r, c]), w.reshape([1, 1, c]).expand([1, r, c]), dims)
}

/// The largest divisor of `rows` that gives at most about [`PARALLEL_OUTPUTS`] partial sums.
fn partials(rows: usize, c: usize) -> usize {
    let most = (PARALLEL_OUTPUTS / c.max(1)).clamp(1, rows.max(1));
    (1..=most).rev().find(|r| rows % r == 0).unwrap_or(1)
}

#[cfg(test)]
mod tests {
    use burn::tensor::{Device, Distribution};

    use super::*;

    #[test]
    fn partial_sums_divide_the_rows_and_stay_near_the_target() {
        assert_eq!(partials(16384, 576), 64); // at most 65536 / 576 = 113
        assert_eq!(partials(1, 576), 1);
        assert_eq!(partials(7, 100_000), 1);
        assert_eq!(partials(30, 4096), 15);
    }

    #[test]
    fn values_and_gradients_equal_the_plain_broadcast() {
        let device = Device::flex().autodiff();
        let x = Tensor::<3>::random([3, 10, 8], Distribution::Normal(0.0, 1.0), &device).require_grad();
        let w = Tensor::<1>::random([8], Distribution::Normal(0.0, 1.0), &device).require_grad();
        let ours = mul_channels(x.clone(), w.clone()) + add_channels(x.clone(), w.clone()).powi_scalar(2);
        let plain = x.clone() * w.clone().reshape([1, 1, 8]) + (x.clone() + w.clone().reshape([1, 1, 8])).powi_scalar(2);
        // The sums run in another order: equal up to f32 rounding of the gradient's size.
        let close = |a: Tensor<3>, b: Tensor<3>| {
            let scale = b.clone().abs().max().into_scalar::<f32>().max(1.0);
            let diff = (a - b).abs().max().into_scalar::<f32>();
            eprintln!("max diff {diff:e} at scale {scale}");
            diff < 1e-5 * scale
        };
        assert!(close(ours.clone(), plain.clone()));
        let (g1, g2) = (ours.sum().backward(), plain.sum().backward());
        let (w1, w2) = (w.grad(&g1).unwrap().reshape([1, 1, 8]), w.grad(&g2).unwrap().reshape([1, 1, 8]));
        assert!(close(w1, w2));
        assert!(close(x.grad(&g1).unwrap(), x.grad(&g2).unwrap()));
    }
}
