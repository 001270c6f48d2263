//! Mamba mixers that replace attention layers, as "The Mamba in the Llama" (arXiv 2408.15237)
//! builds them from a Llama layer, in plain burn tensor ops (GPU kernels must match these).
//!
//! # Glossary (symbol: meaning, shape, where the paper has it)
//! - `u`: the layer input after `input_layernorm`, `[batch, seq, d_model]`; the paper's `o`.
//! - `x`: the SSM input, initialized from `v_proj` (paper: `x <- W_V o`); `d_xb = n_kv_heads * p`
//!   wide before the grouped-query repeat.
//! - `B`: input matrix, from `k_proj` (paper: `B <- W_K o`), `d_xb` wide before the repeat.
//! - `C`: output matrix, from `q_proj` (paper: `C <- W_Q o`), `d_inner = n_heads * p` wide.
//! - `z`: the gate, a new projection; `y <- y * silu(z)`.
//! - `dt` (Δ): per-head (Mamba-2) or per-channel (Mamba-1) step size, `softplus(dt_raw + dt_bias)`;
//!   computed from `u` (the paper's Algorithm 1 says from `x`; the code uses `u`).
//! - `A`: decay, `A = -exp(A_log)`; per head (Mamba-2) or per channel and state (Mamba-1).
//! - `D`: skip connection, `y <- y + D x`.
//! - `h` (`H` in the paper): the state, `[batch, heads, p, n]`; `H_t = exp(dt_t A) H_{t-1} + dt_t x_t B_t^T`,
//!   `y_t = H_t C_t` (linear attention without softmax, paper eq. 1).
//! - `p`: head dim (`headdim`); `n`: state size (`d_state`); Mamba-2 from Llama has `p = n = head_dim`.
//! - `T`: chunk size of the SSD scan; `K = d_conv`: causal conv width (4).
//!
//! Two forms of the same map: the chunked SSD scan (training, prefill) and the recurrent step
//! (decoding), both reading and writing a [`MambaState`] the caller owns.

mod conv;
mod layout;
mod mamba1;
mod mamba2;
mod norm;
mod ssd;
mod state;

pub use conv::{CausalConv1d, CausalConv1dConfig};
pub use layout::InProjLayout;
pub use mamba1::{selective_scan, selective_step, Mamba1, Mamba1Config, Mamba1Inputs};
pub use mamba2::{Mamba2, Mamba2Config, Mamba2Inputs};
pub use norm::{GatedRmsNorm, GatedRmsNormConfig};
pub use ssd::{ssd_chunked, ssd_sequential, ssd_step};
pub use state::MambaState;
