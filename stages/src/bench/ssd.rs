//! The chunked SSD scan of training and prefill in burn's fused tensor ops, forward and forward
//! with backward, against the bytes a fused kernel would have to move (issue 9 builds a scan
//! kernel only if the tensor ops are not within 1.5x of one). `stages/bench/ssd_torch.py` times
//! the same scan in plain PyTorch (eager, cuBLAS einsums) at the same shape, as a peer.

use burn::tensor::{DType, Distribution, Tensor};
use distill_kernels::parity::COPY_BYTES_PER_S;
use serde::Serialize;

use super::median_ms;
use crate::error::Result;
use crate::mamba::ssd_chunked;
use crate::runtime::Runtime;

#[derive(Debug, Clone, Serialize)]
pub struct SsdResult {
    pub bench: &'static str,
    pub device: String,
    /// `[batch, seq, heads, head_dim, d_state]`.
    pub shape: [usize; 5],
    pub chunk: usize,
    /// Inside the chunks: `kernel` (distill_kernels::chunk_scan) or `ops` (`DISTILL_SSD=ops`, or
    /// no GPU).
    pub inside: &'static str,
    pub forward_ms: f64,
    pub forward_backward_ms: f64,
    /// f32 bytes a fused forward must move: `x`, `dt`, `B`, `C` in, `y` and the final state out.
    pub forward_bytes: f64,
    /// Those bytes over the H200's copy rate.
    pub forward_floor_ms: f64,
    /// The forward and backward's bytes: the forward's, the output's gradient in and a gradient
    /// for each input out.
    pub forward_backward_floor_ms: f64,
}

/// Median of `repeats` timed runs of each, after 2 untimed ones; with `forward_only`, no backward
/// runs and its time is NaN.
pub fn run(shape: [usize; 5], chunk: usize, runtime: &Runtime, repeats: usize, forward_only: bool) -> Result<SsdResult> {
    let [bs, l, h, p, n] = shape;
    let device = runtime.device.clone().autodiff();
    let normal = Distribution::Normal(0.0, 1.0);
    let x = Tensor::<4>::random([bs, l, h, p], normal, &device).require_grad();
    // dt after softplus: small and positive, as a trained layer's.
    let dt = Tensor::<3>::random([bs, l, h], Distribution::Uniform(0.001, 0.1), &device).require_grad();
    let a = Tensor::<1>::random([h], Distribution::Uniform(-16.0, -1.0), &device);
    let b = Tensor::<4>::random([bs, l, h, n], normal, &device).require_grad();
    let c = Tensor::<4>::random([bs, l, h, n], normal, &device).require_grad();
    let w = Tensor::<4>::random([bs, l, h, p], normal, &device);
    let state = Tensor::<4>::zeros([bs, h, p, n], &device);
    let forward = || ssd_chunked(x.clone().inner(), dt.clone().inner(), a.clone().inner(), b.clone().inner(), c.clone().inner(), state.clone().inner(), chunk);
    let backward = || {
        let (y, _) = ssd_chunked(x.clone(), dt.clone(), a.clone(), b.clone(), c.clone(), state.clone(), chunk);
        let grads = (y * w.clone()).sum().backward();
        [x.grad(&grads), b.grad(&grads), c.grad(&grads)].map(|g| g.map(|g| g.cast(DType::F32)))
    };
    let forward_ms = median_ms(runtime, repeats, || drop(forward()))?;
    let forward_backward_ms = if forward_only { f64::NAN } else { median_ms(runtime, repeats, || drop(backward()))? };
    let elems = (bs * l * h * p + bs * l * h + 2 * bs * l * h * n) as f64; // x, dt, B, C
    let forward_bytes = 4.0 * (elems + (bs * l * h * p) as f64 + (bs * h * p * n) as f64);
    let backward_bytes = forward_bytes + 4.0 * ((bs * l * h * p) as f64 + elems);
    Ok(SsdResult {
        bench: "ssd_scan",
        device: format!("{:?}", runtime.device),
        shape,
        chunk,
        inside: distill_kernels::chunk_scan::mode(&runtime.device),
        forward_ms,
        forward_backward_ms,
        forward_bytes,
        forward_floor_ms: forward_bytes / COPY_BYTES_PER_S * 1e3,
        forward_backward_floor_ms: backward_bytes / COPY_BYTES_PER_S * 1e3,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_both_passes_on_a_tiny_shape() {
        let r = run([1, 64, 2, 4, 4], 16, &Runtime::cpu(), 1, false).unwrap();
        assert!(r.forward_ms > 0.0 && r.forward_backward_ms > 0.0 && r.forward_floor_ms > 0.0, "{r:?}");
        assert!(r.forward_backward_floor_ms > r.forward_floor_ms);
    }
}
