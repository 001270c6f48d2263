//! Loading hybrids: our folders and the reference code's (`model.layers.{i}.mamba.*` keys plus
//! `mamba_config.json`), Mamba-1 or Mamba-2. A folder without `mamba_config.json` is a plain
//! Llama: a hybrid whose every layer is attention.

use std::path::Path;

use burn::tensor::{DType, Device};

use super::config::{HybridConfig, MambaConfigJson};
use super::model::Hybrid;
use crate::error::{Error, Result};
use crate::llama::HfLlamaConfig;
use crate::weights::{load_module, Weights};

/// Key segments under `.mamba.` that are not snake_case in the checkpoint -> our field names.
const SEGMENT_RENAMES: &[(&str, &str)] = &[
    // Mamba-1 and Mamba-2: the decay's log and the skip, named after the paper's symbols.
    ("A_log", "a_log"),
    ("D", "d"),
    // Mamba-1: the projections that take k_proj and q_proj.
    ("B_proj", "b_proj"),
    ("C_proj", "c_proj"),
];

fn rename(key: &str, from_checkpoint: bool) -> String {
    let Some(at) = key.find(".mamba.") else { return key.to_string() };
    let (head, tail) = key.split_at(at + ".mamba.".len());
    let tail: Vec<&str> = tail
        .split('.')
        .map(|seg| {
            let hit = SEGMENT_RENAMES.iter().find(|(ckpt, ours)| seg == if from_checkpoint { *ckpt } else { *ours });
            hit.map_or(seg, |(ckpt, ours)| if from_checkpoint { ours } else { ckpt })
        })
        .collect();
    format!("{head}{}", tail.join("."))
}

/// A checkpoint key as our module path (`...mamba.A_log` -> `...mamba.a_log`).
pub fn field_path(key: &str) -> String {
    rename(key, true)
}

/// A module path as the reference checkpoint names it (`...mamba.a_log` -> `...mamba.A_log`).
pub fn checkpoint_key(path: &str) -> String {
    rename(path, false)
}

impl Hybrid {
    /// Loads checkpoint weights (reference key names) into a model of `config`. Every key must be
    /// consumed and every parameter filled.
    pub fn from_weights(config: &HybridConfig, mut weights: Weights, dtype: DType, device: &Device) -> Result<Self> {
        let entries = std::mem::take(&mut weights.entries);
        weights.entries = entries.into_iter().map(|(k, e)| (field_path(&k), e)).collect();
        let mut ignored = vec!["rotary_emb.inv_freq"];
        if config.llama.tie_embeddings {
            // Tied checkpoints may carry the embedding again as lm_head (the reference's strict
            // `load_state_dict` wants it; we write it).
            ignored.push("lm_head.weight");
        }
        load_module(config.init(device), &weights, &ignored, dtype, device)
    }

    /// Loads a model folder: `config.json`, safetensors, and `mamba_config.json` for hybrids.
    pub fn from_hf_dir(dir: &Path, dtype: DType, device: &Device) -> Result<(Self, HybridConfig)> {
        let weights = Weights::open_hf_dir(dir)?;
        let config = read_config(dir, &weights)?;
        Ok((Self::from_weights(&config, weights, dtype, device)?, config))
    }
}

/// The hybrid config of a folder; the Mamba variant is told by the checkpoint's keys.
pub fn read_config(dir: &Path, weights: &Weights) -> Result<HybridConfig> {
    let llama = HfLlamaConfig::from_file(&dir.join("config.json"))?.into_config()?;
    let path = dir.join("mamba_config.json");
    if !path.exists() {
        return Ok(HybridConfig::all_attention(llama));
    }
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    let json: MambaConfigJson = serde_json::from_str(&text).map_err(|e| Error::Json { path: path.clone(), message: e.to_string() })?;
    let mamba1 = weights.entries.keys().any(|k| k.ends_with(".mamba.in_proj_x.weight"));
    HybridConfig::from_json(llama, &json, mamba1, &path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renames_only_mamba_segments_and_round_trip() {
        assert_eq!(field_path("model.layers.3.mamba.A_log"), "model.layers.3.mamba.a_log");
        assert_eq!(field_path("model.layers.3.mamba.D"), "model.layers.3.mamba.d");
        assert_eq!(field_path("model.layers.3.mamba.B_proj.weight"), "model.layers.3.mamba.b_proj.weight");
        assert_eq!(field_path("model.layers.3.mamba.dt_bias"), "model.layers.3.mamba.dt_bias");
        assert_eq!(field_path("model.layers.3.self_attn.D"), "model.layers.3.self_attn.D");
        for k in ["model.layers.0.mamba.A_log", "model.layers.0.mamba.C_proj.weight", "model.norm.weight"] {
            assert_eq!(checkpoint_key(&field_path(k)), k);
        }
    }
}
