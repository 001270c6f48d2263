//! Llama configuration in two layers: a serde mirror of Hugging Face's `config.json` (its field
//! names, its Options), resolved into our `LlamaConfig` where every default is decided.

use std::path::Path;

use burn::config::Config;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// `config.json` of a `LlamaForCausalLM`, as transformers writes it (v4 and v5 spellings).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct HfLlamaConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub architectures: Option<Vec<String>>,
    /// transformers' AutoConfig needs it: always "llama" in what we write.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_type: Option<String>,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_key_value_heads: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head_dim: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_position_embeddings: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rms_norm_eps: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rope_theta: Option<f64>,
    /// transformers v4: `{ "rope_type": "llama3", "factor": 8.0, ... }`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rope_scaling: Option<HfRope>,
    /// transformers v5: `rope_theta` and the scaling in one object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rope_parameters: Option<HfRope>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tie_word_embeddings: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attention_bias: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mlp_bias: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hidden_act: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bos_token_id: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eos_token_id: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pad_token_id: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none", alias = "dtype")]
    pub torch_dtype: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct HfRope {
    #[serde(default, skip_serializing_if = "Option::is_none", alias = "type")]
    pub rope_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rope_theta: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub factor: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub low_freq_factor: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub high_freq_factor: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original_max_position_embeddings: Option<usize>,
}

/// Llama 3's frequency-dependent RoPE scaling.
#[derive(Config, Debug, PartialEq)]
pub struct Llama3Scaling {
    pub factor: f64,
    pub low_freq_factor: f64,
    pub high_freq_factor: f64,
    pub original_max_position_embeddings: usize,
}

/// Our resolved Llama configuration. `d_model` is the residual width, `d_ff` the MLP width.
#[derive(Config, Debug, PartialEq)]
pub struct LlamaConfig {
    pub vocab_size: usize,
    pub d_model: usize,
    pub d_ff: usize,
    pub n_layers: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    #[config(default = 2048)]
    pub max_seq_len: usize,
    #[config(default = 1e-6)]
    pub rms_eps: f64,
    #[config(default = 10000.0)]
    pub rope_theta: f64,
    #[config(default = "None")]
    pub rope_llama3: Option<Llama3Scaling>,
    #[config(default = false)]
    pub tie_embeddings: bool,
    #[config(default = false)]
    pub attention_bias: bool,
    #[config(default = false)]
    pub mlp_bias: bool,
}

impl HfLlamaConfig {
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        serde_json::from_str(&text).map_err(|e| Error::Json { path: path.into(), message: e.to_string() })
    }

    /// Resolves HF's defaults (those of `transformers.LlamaConfig`).
    pub fn into_config(&self) -> Result<LlamaConfig> {
        if let Some(act) = self.hidden_act.as_deref().filter(|a| *a != "silu") {
            return Err(Error::Config(format!("hidden_act `{act}` is not supported (only silu)")));
        }
        let uneven = self.head_dim.is_none() && !self.hidden_size.is_multiple_of(self.num_attention_heads.max(1));
        if self.num_attention_heads == 0 || uneven {
            return Err(Error::Config("hidden_size must divide into num_attention_heads".into()));
        }
        let n_kv_heads = self.num_key_value_heads.unwrap_or(self.num_attention_heads);
        if n_kv_heads == 0 || !self.num_attention_heads.is_multiple_of(n_kv_heads) {
            return Err(Error::Config(format!(
                "num_attention_heads {} is not a multiple of num_key_value_heads {n_kv_heads}",
                self.num_attention_heads
            )));
        }
        let rope = self.rope_parameters.as_ref().or(self.rope_scaling.as_ref());
        let rope_theta = self.rope_theta.or(rope.and_then(|r| r.rope_theta)).unwrap_or(10000.0);
        let rope_llama3 = match rope.and_then(|r| r.rope_type.as_deref()) {
            None | Some("default") => None,
            Some("llama3") => {
                let r = rope.expect("matched Some");
                let need = |v: Option<f64>, k: &str| v.ok_or_else(|| Error::Config(format!("rope_scaling.{k} missing")));
                Some(Llama3Scaling {
                    factor: need(r.factor, "factor")?,
                    low_freq_factor: need(r.low_freq_factor, "low_freq_factor")?,
                    high_freq_factor: need(r.high_freq_factor, "high_freq_factor")?,
                    original_max_position_embeddings: r.original_max_position_embeddings.ok_or_else(|| {
                        Error::Config("rope_scaling.original_max_position_embeddings missing".into())
                    })?,
                })
            }
            Some(other) => return Err(Error::Config(format!("rope type `{other}` is not supported"))),
        };
        Ok(LlamaConfig {
            vocab_size: self.vocab_size,
            d_model: self.hidden_size,
            d_ff: self.intermediate_size,
            n_layers: self.num_hidden_layers,
            n_heads: self.num_attention_heads,
            n_kv_heads,
            head_dim: self.head_dim.unwrap_or(self.hidden_size / self.num_attention_heads),
            max_seq_len: self.max_position_embeddings.unwrap_or(2048),
            rms_eps: self.rms_norm_eps.unwrap_or(1e-6),
            rope_theta,
            rope_llama3,
            tie_embeddings: self.tie_word_embeddings.unwrap_or(false),
            attention_bias: self.attention_bias.unwrap_or(false),
            mlp_bias: self.mlp_bias.unwrap_or(false),
        })
    }
}

impl LlamaConfig {
    /// The `config.json` we write: transformers v4 spelling, which v5 also reads.
    pub fn to_hf(&self, bos: Option<u32>, eos: Option<u32>, dtype: &str) -> HfLlamaConfig {
        let rope_scaling = self.rope_llama3.as_ref().map(|s| HfRope {
            rope_type: Some("llama3".into()),
            rope_theta: None,
            factor: Some(s.factor),
            low_freq_factor: Some(s.low_freq_factor),
            high_freq_factor: Some(s.high_freq_factor),
            original_max_position_embeddings: Some(s.original_max_position_embeddings),
        });
        HfLlamaConfig {
            architectures: Some(vec!["LlamaForCausalLM".into()]),
            model_type: Some("llama".into()),
            vocab_size: self.vocab_size,
            hidden_size: self.d_model,
            intermediate_size: self.d_ff,
            num_hidden_layers: self.n_layers,
            num_attention_heads: self.n_heads,
            num_key_value_heads: Some(self.n_kv_heads),
            head_dim: Some(self.head_dim),
            max_position_embeddings: Some(self.max_seq_len),
            rms_norm_eps: Some(self.rms_eps),
            rope_theta: Some(self.rope_theta),
            rope_scaling,
            rope_parameters: None,
            tie_word_embeddings: Some(self.tie_embeddings),
            attention_bias: Some(self.attention_bias),
            mlp_bias: Some(self.mlp_bias),
            hidden_act: Some("silu".into()),
            bos_token_id: bos.map(Into::into),
            eos_token_id: eos.map(Into::into),
            pad_token_id: None,
            torch_dtype: Some(dtype.into()),
        }
    }
}
