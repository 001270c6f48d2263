//! CubeCL GPU kernels for the Mamba hot paths (issue 9), each beside the plain-tensor
//! `*_reference` twin that the CPU runs and the parity checks compare against.
//!
//! - [`mamba2_step`]: one decoding step of a Mamba-2 mixer (conv over the carried window,
//!   the state update, the read-out, the next window) in one launch; the window and the
//!   token's conv inputs are read where they lie, so no concatenation runs before it.
//! - [`mamba2_steps`]: several such steps in one launch for speculative verification, replaying
//!   the accepted ones from the round's snapshot.
//! - [`gemv::gemv`]: decoding's products (a few rows), split over columns and `K` so that a
//!   576-wide projection still occupies the GPU.
//! - [`chunk_scan`]: the chunked SSD scan of training and prefill: the decayed attention inside
//!   each chunk with the entering state read out, and each chunk's state contribution, each in
//!   one launch, with backwards of their own (the attention's is the same kernel run three
//!   times); the inter-chunk recurrence stays in tensor ops.
//! - [`matmul::matmul_with`]: a matrix product with a named cubek routine instead of burn's
//!   untuned default.
//! - [`softmax::softmax_last`]: softmax with its own backward (three passes instead of burn's
//!   composite's four or five), for the training step's attention scores.
//! - [`attention::causal_self_attention`]: training's causal attention, the backend's (flash on
//!   the GPU) forward with a backward that recomputes the probabilities once.
//! - [`masked_attention::masked_attention`]: decoding's attention over the cache: on the GPU its
//!   products by [`gemv`]'s batched kernels and its softmax by [`attention_softmax`]'s, one
//!   launch a row.
//! - [`reduce`]: sum, max, mean, argmax and softmax along the last axis for inference, a cube
//!   per output where burn would walk each output's axis with one unit (decoding's few rows).
//! - [`rms_norm`]: RMSNorm and Mamba-2's gated RMSNorm for inference, one launch each.
//!
//! The kernels exist with the `cuda` feature; without it every function is its reference.
//! Each reaches burn through `#[backend_extension]`, an opaque op in burn's fusion stream; none
//! takes one tensor as two of its inputs: RMSNorm did (its input again as the unread gate), and
//! speculative rounds replayed from CUDA graphs then computed wrong values in f32 (session 12,
//! BENCHMARKS.md), which no parity check on random inputs could show.
//! `parity` runs each kernel against its reference on random inputs over shapes and dtypes
//! (`distill bench kernels`, `kernels/gpu_parity.sh` on a GPU machine).

pub mod attention;
pub mod attention_softmax;
pub mod chunk_scan;
pub mod gemv;
pub mod mamba2_step;
pub mod mamba2_steps;
pub mod masked_attention;
pub mod matmul;
pub mod parity;
pub mod reduce;
pub mod rms_norm;
pub mod softmax;
#[cfg(feature = "cuda")]
mod warp;

/// Whether a kernel runs: yes unless the environment variable `var` reads `off` (read once into
/// `cell`), so that a benchmark can set it against its twin.
pub(crate) fn switched_on(cell: &'static std::sync::OnceLock<bool>, var: &str, off: &str) -> bool {
    *cell.get_or_init(|| std::env::var(var).map_or(true, |v| v.trim() != off))
}

pub use mamba2_step::{mamba2_step, mamba2_step_reference, Mamba2StepWeights, StepOut};
pub use mamba2_steps::{mamba2_steps, mamba2_steps_history, mamba2_steps_history_reference, mamba2_steps_reference, StepsHistory, StepsOut};
