//! Writing a teacher as a normal Hugging Face folder that transformers loads:
//! `config.json`, `model.safetensors`, `tokenizer.json`, `tokenizer_config.json`,
//! `generation_config.json`.

use std::path::Path;

use crate::error::{Error, Result};
use crate::gguf::Gguf;
use crate::llama::{HfLlamaConfig, Llama};
use crate::text::{HfTokenizerConfig, TextTokenizer};
use crate::weights::{save_safetensors, Weights};

fn write_json(path: &Path, value: &impl serde::Serialize) -> Result<()> {
    let text = serde_json::to_string_pretty(value).expect("json serializes");
    std::fs::write(path, text + "\n").map_err(|e| Error::io(path, e))
}

/// Converts a llama GGUF into a Hugging Face folder at `out` (weights dequantized to f32).
pub fn export_gguf(gguf_path: &Path, out: &Path) -> Result<HfLlamaConfig> {
    let gguf = Gguf::open(gguf_path)?;
    let hf = gguf.hf_config()?;
    let config = hf.into_config()?;
    let weights = gguf.hf_weights(&hf)?;
    check_keys(&config, &weights)?;
    let (tokenizer, meta) = gguf.tokenizer()?;
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    save_safetensors(&weights, &out.join("model.safetensors"))?;
    write_json(&out.join("config.json"), &hf)?;
    let tok = TextTokenizer { inner: tokenizer, config: HfTokenizerConfig::from(&meta) };
    tok.save(out)?;
    let mut generation = serde_json::json!({ "do_sample": false });
    for (key, value) in [("bos_token_id", tok.bos_id()), ("eos_token_id", tok.eos_id()), ("pad_token_id", Some(tok.pad_id()))] {
        if let Some(v) = value {
            generation[key] = v.into();
        }
    }
    write_json(&out.join("generation_config.json"), &generation)?;
    Ok(hf)
}

/// Files of a Hugging Face folder that belong in our normalized copy.
const HF_FILES: &[&str] = &[
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "model.safetensors",
    "model.safetensors.index.json",
];

/// Validates a Hugging Face folder (config, tokenizer, every weight present with the right
/// shape) and copies it to `out` (hard links where the file system allows).
pub fn import_hf_dir(src: &Path, out: &Path) -> Result<HfLlamaConfig> {
    let hf = HfLlamaConfig::from_file(&src.join("config.json"))?;
    let config = hf.into_config()?;
    let weights = Weights::open_hf_dir(src)?;
    check_keys(&config, &weights)?;
    TextTokenizer::from_dir(src)?;
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    let entries = std::fs::read_dir(src).map_err(|e| Error::io(src, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(src, e))?;
        let name = entry.file_name().to_string_lossy().to_string();
        let shard = name.starts_with("model-") && name.ends_with(".safetensors");
        if HF_FILES.contains(&name.as_str()) || shard {
            let dst = out.join(&name);
            if std::fs::hard_link(entry.path(), &dst).is_err() {
                std::fs::copy(entry.path(), &dst).map_err(|e| Error::io(&dst, e))?;
            }
        }
    }
    Ok(hf)
}

/// Every checkpoint key consumed and every parameter filled, shapes included, without
/// materializing the model (parameters stay lazy).
pub fn check_keys(config: &crate::llama::LlamaConfig, weights: &Weights) -> Result<()> {
    let expected = Llama::param_shapes(config, &burn::tensor::Device::flex());
    for (name, shape) in &expected {
        let entry = weights
            .entries
            .get(name)
            .ok_or_else(|| Error::MissingTensor { path: weights.path.clone(), tensor: name.clone() })?;
        if &entry.shape != shape {
            return Err(Error::Shape { path: weights.path.clone(), tensor: name.clone(), got: entry.shape.clone(), want: shape.clone() });
        }
    }
    let unused: Vec<String> = weights
        .entries
        .keys()
        .filter(|k| !expected.contains_key(*k) && !Llama::ignorable(config, k))
        .cloned()
        .collect();
    if unused.is_empty() {
        Ok(())
    } else {
        Err(Error::UnusedTensors { path: weights.path.clone(), tensors: unused })
    }
}
