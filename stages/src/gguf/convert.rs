//! A llama-architecture GGUF as a Hugging Face checkpoint: config from metadata, tensors
//! dequantized to f32 under transformers' names, with llama.cpp's Q/K row permutation undone.

use super::reader::Gguf;
use crate::error::{Error, Result};
use crate::llama::HfLlamaConfig;
use crate::weights::Weights;

/// GGUF tensor name -> Hugging Face name; `{}` is the layer index. One row per tensor kind.
const NAMES: &[(&str, &str)] = &[
    ("token_embd.weight", "model.embed_tokens.weight"),
    ("output_norm.weight", "model.norm.weight"),
    ("output.weight", "lm_head.weight"),
    ("attn_norm.weight", "model.layers.{}.input_layernorm.weight"),
    ("ffn_norm.weight", "model.layers.{}.post_attention_layernorm.weight"),
    ("attn_q.weight", "model.layers.{}.self_attn.q_proj.weight"),
    ("attn_k.weight", "model.layers.{}.self_attn.k_proj.weight"),
    ("attn_v.weight", "model.layers.{}.self_attn.v_proj.weight"),
    ("attn_output.weight", "model.layers.{}.self_attn.o_proj.weight"),
    ("ffn_gate.weight", "model.layers.{}.mlp.gate_proj.weight"),
    ("ffn_up.weight", "model.layers.{}.mlp.up_proj.weight"),
    ("ffn_down.weight", "model.layers.{}.mlp.down_proj.weight"),
];

/// Tensors llama.cpp stores that transformers recomputes (llama3 RoPE frequencies).
const SKIPPED: &[&str] = &["rope_freqs.weight"];

pub fn hf_name(gguf_name: &str) -> Option<String> {
    if let Some(rest) = gguf_name.strip_prefix("blk.") {
        let (layer, tail) = rest.split_once('.')?;
        let layer: usize = layer.parse().ok()?;
        let (_, hf) = NAMES.iter().find(|(g, hf)| *g == tail && hf.contains("{}"))?;
        return Some(hf.replace("{}", &layer.to_string()));
    }
    NAMES.iter().find(|(g, hf)| *g == gguf_name && !hf.contains("{}")).map(|(_, hf)| hf.to_string())
}

impl Gguf {
    fn meta_u64(&self, key: &str) -> Result<usize> {
        self.get(key).and_then(|v| v.as_u64()).map(|v| v as usize).ok_or_else(|| self.meta_err(key, "missing or not an integer"))
    }

    fn meta_f64(&self, key: &str) -> Option<f64> {
        self.get(key).and_then(|v| v.as_f64())
    }

    /// The transformers config this file describes (llama architecture only).
    pub fn hf_config(&self) -> Result<HfLlamaConfig> {
        let arch = self.get("general.architecture").and_then(|v| v.as_str()).unwrap_or("");
        if arch != "llama" {
            return Err(self.meta_err("general.architecture", format!("`{arch}` is not supported (llama is)")));
        }
        let n_heads = self.meta_u64("llama.attention.head_count")?;
        let d_model = self.meta_u64("llama.embedding_length")?;
        let vocab = match self.meta_u64("llama.vocab_size") {
            Ok(v) => v,
            Err(e) => self.get("tokenizer.ggml.tokens").and_then(|v| v.as_array()).map(|a| a.len()).ok_or(e)?,
        };
        let id = |k: &str| self.get(k).and_then(|v| v.as_u64()).map(serde_json::Value::from);
        Ok(HfLlamaConfig {
            architectures: Some(vec!["LlamaForCausalLM".into()]),
            model_type: Some("llama".into()),
            vocab_size: vocab,
            hidden_size: d_model,
            intermediate_size: self.meta_u64("llama.feed_forward_length")?,
            num_hidden_layers: self.meta_u64("llama.block_count")?,
            num_attention_heads: n_heads,
            num_key_value_heads: Some(self.meta_u64("llama.attention.head_count_kv").unwrap_or(n_heads)),
            head_dim: self.meta_u64("llama.rope.dimension_count").ok().or(Some(d_model / n_heads.max(1))),
            max_position_embeddings: self.meta_u64("llama.context_length").ok(),
            rms_norm_eps: self.meta_f64("llama.attention.layer_norm_rms_epsilon"),
            rope_theta: self.meta_f64("llama.rope.freq_base"),
            tie_word_embeddings: Some(self.tensor("output.weight").is_none()),
            hidden_act: Some("silu".into()),
            bos_token_id: id("tokenizer.ggml.bos_token_id"),
            eos_token_id: id("tokenizer.ggml.eos_token_id"),
            torch_dtype: Some("float32".into()),
            ..Default::default()
        })
    }

    /// Every tensor dequantized to f32 under its transformers name.
    pub fn hf_weights(&self, config: &HfLlamaConfig) -> Result<Weights> {
        let n_heads = config.num_attention_heads;
        let n_kv = config.num_key_value_heads.unwrap_or(n_heads);
        let mut w = Weights::new(&self.path);
        for info in &self.tensors {
            if SKIPPED.contains(&info.name.as_str()) {
                continue;
            }
            let name = hf_name(&info.name)
                .ok_or_else(|| Error::tensor(&self.path, &info.name, "not a llama tensor this importer knows"))?;
            let shape = info.shape();
            let mut values = info.ggml_type.dequantize(self.tensor_bytes(info));
            if name.ends_with("q_proj.weight") {
                values = unpermute(&values, &shape, n_heads).map_err(|m| Error::tensor(&self.path, &info.name, m))?;
            } else if name.ends_with("k_proj.weight") {
                values = unpermute(&values, &shape, n_kv).map_err(|m| Error::tensor(&self.path, &info.name, m))?;
            }
            w.insert_f32(name, shape, values);
        }
        Ok(w)
    }
}

/// Undoes llama.cpp's `permute` of Q/K rows (interleaved RoPE pairs -> rotate-half halves):
/// rows viewed as `[heads, 2, head_dim/2]` were written as `[heads, head_dim/2, 2]`.
///
/// # Shapes
/// - `w`: `[heads * head_dim, d_in]` row-major -> same
pub fn unpermute(w: &[f32], shape: &[usize], heads: usize) -> Result<Vec<f32>, String> {
    let (rows, cols) = match shape {
        [r, c] => (*r, *c),
        _ => return Err(format!("expected a matrix, got shape {shape:?}")),
    };
    if heads == 0 || rows % (2 * heads) != 0 {
        return Err(format!("{rows} rows do not split into {heads} heads of even size"));
    }
    let half = rows / heads / 2;
    let mut out = vec![0f32; w.len()];
    for h in 0..heads {
        for i in 0..half {
            for j in 0..2 {
                let src = h * 2 * half + i * 2 + j; // llama.cpp row: [h, i, j]
                let dst = h * 2 * half + j * half + i; // HF row: [h, j, i]
                out[dst * cols..(dst + 1) * cols].copy_from_slice(&w[src * cols..(src + 1) * cols]);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map_to_transformers() {
        assert_eq!(hf_name("blk.12.attn_q.weight").as_deref(), Some("model.layers.12.self_attn.q_proj.weight"));
        assert_eq!(hf_name("token_embd.weight").as_deref(), Some("model.embed_tokens.weight"));
        assert_eq!(hf_name("blk.x.attn_q.weight"), None);
        assert_eq!(hf_name("attn_q.weight"), None);
    }

    #[test]
    fn unpermute_inverts_llama_cpp_permute() {
        // One head of dim 4, one column: HF rows [a0 a1 | b0 b1] are stored as [a0 b0 a1 b1].
        let stored = [0.0, 2.0, 1.0, 3.0];
        assert_eq!(unpermute(&stored, &[4, 1], 1).unwrap(), vec![0.0, 1.0, 2.0, 3.0]);
        assert!(unpermute(&stored, &[4, 1], 3).is_err());
    }
}
