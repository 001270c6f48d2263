//! Writing a hybrid as a model folder in the reference code's layout: the teacher's
//! `config.json`, `model.safetensors` with `model.layers.{i}.mamba.*` keys, `mamba_config.json`,
//! and the teacher's tokenizer and generation files.

use std::path::Path;

use super::config::HybridConfig;
use crate::error::{Error, Result};
use crate::weights::{save_safetensors, Weights};

/// Files copied from the teacher's folder when present.
const COPIED: &[&str] = &["config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"];

pub fn write_hybrid_dir(teacher_dir: &Path, out: &Path, weights: &Weights, config: &HybridConfig) -> Result<()> {
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    for name in COPIED {
        let src = teacher_dir.join(name);
        if src.exists() {
            let dst = out.join(name);
            std::fs::copy(&src, &dst).map_err(|e| Error::io(&dst, e))?;
        }
    }
    save_safetensors(weights, &out.join("model.safetensors"))?;
    let path = out.join("mamba_config.json");
    let text = serde_json::to_string_pretty(&config.to_json()).expect("json serializes");
    std::fs::write(&path, text + "\n").map_err(|e| Error::io(&path, e))
}
