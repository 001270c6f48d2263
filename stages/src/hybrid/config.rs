//! A hybrid's configuration: the teacher's `LlamaConfig`, which layers keep attention, and the
//! Mamba mixer's config; and `mamba_config.json`, the reference code's file, field for field.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::llama::LlamaConfig;
use crate::mamba::{Mamba1Config, Mamba2Config};

#[derive(Debug, Clone)]
pub enum MixerConfig {
    Mamba2(Mamba2Config),
    Mamba1(Mamba1Config),
}

#[derive(Debug, Clone)]
pub struct HybridConfig {
    pub llama: LlamaConfig,
    /// Sorted layer indices that keep attention; every other layer is a Mamba mixer.
    pub attention_layers: Vec<usize>,
    pub mixer: MixerConfig,
}

/// `mamba_config.json` as the reference's `MambaConfig` dataclass reads it (`MambaConfig(**json)`:
/// no other fields allowed). `ssm_cfg` holds the mixer's keyword arguments: Mamba-2
/// `{expand, ngroups, d_state[, chunk_size]}`, Mamba-1 `{expand[, d_state]}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MambaConfigJson {
    pub d_model: usize,
    #[serde(default)]
    pub ssm_cfg: BTreeMap<String, serde_json::Value>,
    pub rms_norm_eps: f64,
    pub vocab_size: Option<usize>,
    pub d_inner: Option<usize>,
    pub d_xb: usize,
    pub intermediate_size: usize,
    pub hidden_act: String,
    pub n_layer: usize,
    pub attn_layers: Vec<usize>,
}

impl HybridConfig {
    /// The teacher itself: every layer attention.
    pub fn all_attention(llama: LlamaConfig) -> Self {
        let attention_layers = (0..llama.n_layers).collect();
        let mixer = MixerConfig::Mamba2(Mamba2Config::new(llama.d_model, llama.n_heads, llama.n_kv_heads, llama.head_dim));
        Self { llama, attention_layers, mixer }
    }

    pub fn is_attention(&self, layer: usize) -> bool {
        self.attention_layers.contains(&layer)
    }

    pub fn mamba_layers(&self) -> Vec<usize> {
        (0..self.llama.n_layers).filter(|i| !self.is_attention(*i)).collect()
    }

    pub fn to_json(&self) -> MambaConfigJson {
        let l = &self.llama;
        let num = |v: usize| serde_json::Value::from(v);
        let (ssm_cfg, d_inner, d_xb) = match &self.mixer {
            MixerConfig::Mamba2(m) => {
                let cfg = [("expand", num(1)), ("ngroups", num(m.n_heads)), ("d_state", num(m.d_state)), ("chunk_size", num(m.chunk_size))];
                (cfg.into_iter().map(|(k, v)| (k.to_string(), v)).collect(), m.d_inner(), m.d_xb())
            }
            MixerConfig::Mamba1(m) => {
                let cfg = [("expand", num(1)), ("d_state", num(m.d_state))];
                (cfg.into_iter().map(|(k, v)| (k.to_string(), v)).collect(), m.d_inner, m.d_xb)
            }
        };
        MambaConfigJson {
            d_model: l.d_model,
            ssm_cfg,
            rms_norm_eps: l.rms_eps,
            vocab_size: Some(l.vocab_size),
            d_inner: Some(d_inner),
            d_xb,
            intermediate_size: l.d_ff,
            hidden_act: "silu".into(),
            n_layer: l.n_layers,
            attn_layers: self.attention_layers.clone(),
        }
    }

    /// Reads the reference's config beside a teacher config; `mamba1` picks the variant (the
    /// checkpoint's keys tell: `mamba.in_proj_x` is Mamba-1).
    pub fn from_json(llama: LlamaConfig, json: &MambaConfigJson, mamba1: bool, path: &Path) -> Result<Self> {
        let bad = |m: String| Error::Json { path: path.into(), message: m };
        let get = |k: &str, default: usize| -> Result<usize> {
            match json.ssm_cfg.get(k) {
                None => Ok(default),
                Some(v) => v.as_u64().map(|v| v as usize).ok_or_else(|| bad(format!("ssm_cfg.{k} must be an integer"))),
            }
        };
        if json.n_layer != llama.n_layers || json.d_model != llama.d_model {
            return Err(bad(format!("n_layer {} / d_model {} disagree with config.json ({} / {})", json.n_layer, json.d_model, llama.n_layers, llama.d_model)));
        }
        if let Some(l) = json.attn_layers.iter().find(|&&l| l >= llama.n_layers) {
            return Err(bad(format!("attn_layers has layer {l}, the model has {}", llama.n_layers)));
        }
        let d_inner = json.d_inner.unwrap_or(llama.d_model);
        let mixer = if mamba1 {
            MixerConfig::Mamba1(Mamba1Config::new(json.d_model, d_inner, json.d_xb).with_d_state(get("d_state", 16)?).with_d_conv(get("d_conv", 4)?))
        } else {
            // The reference's Mamba2: heads = ngroups, headdim = d_state, d_inner = ngroups * d_state.
            let (groups, n) = (get("ngroups", 1)?, get("d_state", 128)?);
            if groups * n != d_inner || n == 0 || json.d_xb % n != 0 {
                return Err(bad(format!("Mamba-2 needs d_inner = ngroups * d_state and d_xb a multiple of d_state (d_inner {d_inner}, ngroups {groups}, d_state {n}, d_xb {})", json.d_xb)));
            }
            let m = Mamba2Config::new(json.d_model, groups, json.d_xb / n, n).with_d_conv(get("d_conv", 4)?).with_chunk_size(get("chunk_size", 256)?);
            MixerConfig::Mamba2(m)
        };
        let mut attention_layers = json.attn_layers.clone();
        attention_layers.sort_unstable();
        attention_layers.dedup();
        Ok(Self { llama, attention_layers, mixer })
    }
}
