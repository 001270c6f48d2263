//! Building a `Llama` from checkpoint weights.

use std::collections::BTreeMap;
use std::path::Path;

use burn::tensor::{DType, Device};

use super::config::{HfLlamaConfig, LlamaConfig};
use super::model::Llama;
use crate::error::Result;
use crate::weights::{load_module, param_shapes, Weights};

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

    /// `name -> shape` of every parameter a model of `config` has (checkpoint orientation).
    pub fn param_shapes(config: &LlamaConfig, device: &Device) -> BTreeMap<String, Vec<usize>> {
        param_shapes(&config.init(device))
    }

    /// Whether a checkpoint key may be left unused by a model of `config`.
    pub fn ignorable(config: &LlamaConfig, key: &str) -> bool {
        IGNORED.iter().any(|s| key.ends_with(s)) || (config.tie_embeddings && key == "lm_head.weight")
    }

    /// Loads a Hugging Face model folder (`config.json` + safetensors).
    pub fn from_hf_dir(dir: &Path, dtype: DType, device: &Device) -> Result<(Self, LlamaConfig)> {
        let config = HfLlamaConfig::from_file(&dir.join("config.json"))?.into_config()?;
        let weights = Weights::open_hf_dir(dir)?;
        Ok((Self::from_weights(&config, &weights, dtype, device)?, config))
    }
}
