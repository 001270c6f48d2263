//! What generation and evaluation need from a model: a forward pass that continues a cache.
//! The teacher (`Llama`) and the hybrids (`Hybrid`) both implement it, so they share the
//! sampling, decoding and perplexity code.

use burn::tensor::{Device, Int, Tensor};

use crate::generate::GenerateOptions;
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

    /// Tells `cache` how many positions it will hold in all (see `KvCache::reserved`).
    fn reserve(&self, _cache: &mut Self::Cache, _positions: usize) {}

    /// Greedy [`generate`](crate::generate::generate) with its steps replayed from a captured
    /// graph, where the model has such a step (`generate::graph`); `None` where not.
    fn generate_on_graph(&self, _rope: &Rope, _prompts: &[Vec<u32>], _opts: &GenerateOptions, _on_token: &mut dyn FnMut(usize, u32) -> bool) -> Option<Vec<Vec<u32>>> {
        None
    }
}
