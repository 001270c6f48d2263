//! Building a `Llama` from checkpoint weights.

use std::path::Path;

use burn::tensor::{DType, Device};

use super::config::{HfLlamaConfig, LlamaConfig};
use super::model::Llama;
use crate::error::Result;
use crate::weights::{load_module, Weights};

/// Checkpoint keys the model may leave unused, by suffix, each with why.
const IGNORED: &[&str] = &[
    // Older transformers saved the RoPE buffer; we recompute it from the config.
    "rotary_emb.inv_freq",
];

impl Llama {
    /// Loads weights into a model of `config`, cast to `dtype` on `device`. Every checkpoint key
    /// must be consumed and every parameter filled.
    pub fn from_weights(config: &LlamaConfig, weights: &Weights, dtype: DType, device: &Device) -> Result<Self> {
        let mut ignored = IGNORED.to_vec();
        if config.tie_embeddings {
            // Tied checkpoints sometimes carry a copy of the embedding as lm_head.
            ignored.push("lm_head.weight");
        }
        load_module(config.init(device), weights, &ignored, dtype, device)
    }

    /// Loads a Hugging Face model folder (`config.json` + safetensors).
    pub fn from_hf_dir(dir: &Path, dtype: DType, device: &Device) -> Result<(Self, LlamaConfig)> {
        let config = HfLlamaConfig::from_file(&dir.join("config.json"))?.into_config()?;
        let weights = Weights::open_hf_dir(dir)?;
        Ok((Self::from_weights(&config, &weights, dtype, device)?, config))
    }
}
