//! Speculative decoding for hybrids and pure Mamba models (METHOD.md 4; issue 6): a draft model
//! proposes `K` tokens, the verifier checks them in one pass and keeps the longest acceptable
//! prefix. Attention layers verify against the KV cache; Mamba layers scan the `K + 1` tokens
//! in one pass from a snapshot of their state and keep each step's scan inputs, so rejecting
//! tokens replays only the accepted steps and nothing is recomputed from the prompt.
//!
//! - `round`: a Mamba layer's round (conv inputs with an offset, snapshot, per-step inputs) and
//!   the one-pass state advance of both Mamba variants, what Mamba-1 layers verify with;
//! - `round2`: a Mamba-2 layer's round through the multi-step kernel (replay and verification in
//!   one launch, each step the decode step's arithmetic);
//! - `cache`: `SpecCache` (KV + rounds) with `commit(keep)`, and `forward_round`;
//! - `accept`: greedy and rejection-sampling verdicts;
//! - `decode`: the loop, `speculative_generate`;
//! - `graph`: greedy rounds replayed from one captured graph (the GPU's path), one capture per
//!   prompt set;
//! - `request`: `run_speculative`, the call behind `distill generate --draft`;
//! - `draft`: the paper's draft, some of the teacher's layers with its embeddings and head.

mod accept;
mod cache;
mod decode;
mod draft;
mod graph;
#[cfg(test)]
mod properties;
mod request;
mod round;
mod round2;

pub use accept::{verify, Verdict};
pub use cache::{forward_round, SpecCache};
pub use decode::{acceptance_for, speculative_decode, speculative_generate, RoundCost, SpecModel, SpeculativeOptions, SpeculativeStats};
pub use draft::{first_and_last, keep_layers, write_draft_dir};
pub use graph::{speculative_each_on_graph, speculative_on_graph, verification_ms};
pub use request::{run_speculative, TextStream};
pub use round::{selective_advance, ssd_advance, Decay, MambaRound, StepInputs};
pub use round2::Mamba2Round;
