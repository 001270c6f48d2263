//! Mixed caches: keys and values for attention layers, conv and SSM states for Mamba layers.

use crate::llama::KvCache;
use crate::mamba::MambaState;

/// Everything a hybrid carries between forward calls; a plain struct the caller owns.
#[derive(Debug, Clone, Default)]
pub struct HybridCache {
    /// Per layer KV (left `None` at Mamba layers) and which cached positions are real tokens.
    pub kv: KvCache,
    /// Per layer Mamba state (left empty at attention layers).
    pub mamba: Vec<MambaState>,
}

impl HybridCache {
    pub fn new(n_layers: usize) -> Self {
        Self { kv: KvCache::new(n_layers), mamba: vec![MambaState::default(); n_layers] }
    }

    /// Number of positions seen so far.
    pub fn len(&self) -> usize {
        self.kv.len()
    }

    pub fn is_empty(&self) -> bool {
        self.kv.is_empty()
    }
}
