//! What generation and evaluation need from a model: a forward pass that continues a cache.
//! The teacher (`Llama`) and the hybrids (`Hybrid`) both implement it, so they share the
//! sampling, decoding and perplexity code.

use burn::tensor::{Device, Int, Tensor};

use crate::llama::Rope;

pub trait CausalLm {
    /// Whatever the model carries between calls (KV cache, conv and SSM states).
    type Cache;

    fn new_cache(&self) -> Self::Cache;

    fn device(&self) -> Device;

    /// Runs `tokens` after what `cache` holds, appending to it.
    ///
    /// # Shapes
    /// - `tokens`: `[batch, seq]`; `valid`: `[batch][seq]` (false = padding)
    /// - returns logits `[batch, seq, vocab]`
    fn forward(&self, tokens: Tensor<2, Int>, valid: &[Vec<bool>], rope: &Rope, cache: &mut Self::Cache) -> Tensor<3>;
}
