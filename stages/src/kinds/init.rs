//! `init`: a teacher becomes a hybrid, its converted layers' Mamba mixers initialized from the
//! attention weights (or randomly, the paper's ablation).
//!
//! ```toml
//! [stages.hybrid50]
//! kind = "init"
//! params = { teacher = "@teacher", attention_fraction = 0.5, mixer = "mamba2", init = "attention" }
//! # or attention_layers = [1, 3, 5], and d_state, chunk_size, seed
//! ```

use std::collections::BTreeMap;

use distill_engine::stage::{ParamError, Stage, StageContext, StageError, StageSpec};
use serde::Deserialize;

use super::params::{failed, parse, parse_value, reference};
use crate::hybrid::{convert_teacher, interleaved_attention_layers, write_hybrid_dir, ConvertOptions, InitFrom, MixerChoice};
use crate::llama::HfLlamaConfig;
use crate::weights::Weights;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    teacher: String,
    #[serde(default)]
    attention_layers: Option<Vec<usize>>,
    #[serde(default)]
    attention_fraction: Option<f64>,
    #[serde(default = "default_mixer")]
    mixer: Mixer,
    #[serde(default = "default_init")]
    init: Init,
    #[serde(default)]
    d_state: Option<usize>,
    #[serde(default = "default_chunk")]
    chunk_size: usize,
    #[serde(default)]
    seed: u64,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Mixer {
    Mamba2,
    Mamba1,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Init {
    Attention,
    Random,
}

fn default_mixer() -> Mixer {
    Mixer::Mamba2
}
fn default_init() -> Init {
    Init::Attention
}
fn default_chunk() -> usize {
    256
}

fn check(params: &serde_json::Value) -> Result<Params, ParamError> {
    let p: Params = parse_value(params)?;
    reference("params.teacher", &p.teacher)?;
    match (&p.attention_layers, p.attention_fraction) {
        (Some(_), Some(_)) => return Err(ParamError::new("params", "give `attention_layers` or `attention_fraction`, not both")),
        (None, None) => return Err(ParamError::new("params", "which layers keep attention: `attention_fraction = 0.5` or `attention_layers = [...]`")),
        (None, Some(f)) if interleaved_attention_layers(64, f).is_none() => {
            return Err(ParamError::new("params.attention_fraction", format!("{f} is not 0, 1, 1/k or 1 - 1/k; give `attention_layers`")));
        }
        _ => {}
    }
    if p.chunk_size == 0 {
        return Err(ParamError::new("params.chunk_size", "must be at least 1"));
    }
    if p.d_state == Some(0) {
        return Err(ParamError::new("params.d_state", "must be at least 1"));
    }
    Ok(p)
}

pub struct InitStage;

impl Stage for InitStage {
    fn kind(&self) -> &'static str {
        "init"
    }

    fn version(&self) -> u32 {
        1
    }

    fn summary(&self) -> &'static str {
        "turns a teacher into a hybrid: Mamba mixers initialized from its attention layers (reference checkpoint layout)"
    }

    fn params_schema(&self) -> serde_json::Value {
        serde_json::json!({
            "type": "object",
            "required": ["teacher"],
            "properties": {
                "teacher": { "type": "string", "description": "a model artifact, `@stage`" },
                "attention_layers": { "type": "array", "items": { "type": "integer", "minimum": 0 } },
                "attention_fraction": { "type": "number", "minimum": 0, "maximum": 1,
                    "description": "interleaved: 0.5 keeps every 2nd layer, 0.25 every 4th; 0.75 converts every 4th" },
                "mixer": { "enum": ["mamba2", "mamba1"], "default": "mamba2" },
                "init": { "enum": ["attention", "random"], "default": "attention" },
                "d_state": { "type": "integer", "minimum": 1, "description": "Mamba-2: head_dim; Mamba-1: 16" },
                "chunk_size": { "type": "integer", "minimum": 1, "default": 256 },
                "seed": { "type": "integer", "minimum": 0, "default": 0 }
            }
        })
    }

    fn validate(&self, spec: &StageSpec) -> Result<(), ParamError> {
        check(&spec.params).map(|_| ())
    }

    fn environment(&self, _spec: &StageSpec) -> BTreeMap<String, String> {
        BTreeMap::new() // host-side tensor copies and seeded draws: the same on every device
    }

    fn run(&self, ctx: &mut StageContext) -> Result<(), StageError> {
        let p: Params = parse(ctx.spec).map_err(|e| StageError::Failed(e.to_string()))?;
        let teacher_dir = ctx.input(&p.teacher)?.to_path_buf();
        let llama = HfLlamaConfig::from_file(&teacher_dir.join("config.json")).and_then(|c| c.into_config()).map_err(failed)?;
        let attention_layers = match (&p.attention_layers, p.attention_fraction) {
            (Some(l), _) => l.clone(),
            (None, Some(f)) => interleaved_attention_layers(llama.n_layers, f)
                .ok_or_else(|| StageError::Failed(format!("attention_fraction {f} has no interleaving")))?,
            (None, None) => unreachable!("checked by validate"),
        };
        let opts = ConvertOptions {
            attention_layers,
            mixer: match p.mixer {
                Mixer::Mamba2 => MixerChoice::Mamba2,
                Mixer::Mamba1 => MixerChoice::Mamba1,
            },
            init: match p.init {
                Init::Attention => InitFrom::Attention,
                Init::Random => InitFrom::Random,
            },
            d_state: p.d_state,
            chunk_size: p.chunk_size,
            seed: p.seed,
        };
        let teacher = Weights::open_hf_dir(&teacher_dir).map_err(failed)?;
        let (weights, config) = convert_teacher(&teacher, &llama, &opts).map_err(failed)?;
        let out = ctx.out_dir().to_path_buf();
        write_hybrid_dir(&teacher_dir, &out, &weights, &config).map_err(failed)?;
        let mamba = config.mamba_layers();
        ctx.log(format!("{} of {} layers converted to {:?} ({:?} init): {mamba:?}", mamba.len(), llama.n_layers, p.mixer, p.init));
        ctx.metric("attention_layers", config.attention_layers.len() as f64)?;
        ctx.metric("mamba_layers", mamba.len() as f64)?;
        let params: usize = weights.entries.values().map(|e| e.shape.iter().product::<usize>()).sum();
        ctx.metric("parameters", params as f64)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn params_need_a_teacher_and_one_layer_choice() {
        assert!(check(&json!({ "teacher": "@t", "attention_fraction": 0.5 })).is_ok());
        assert!(check(&json!({ "teacher": "@t", "attention_layers": [1, 3], "mixer": "mamba1", "init": "random" })).is_ok());
        assert_eq!(check(&json!({ "teacher": "t", "attention_fraction": 0.5 })).unwrap_err().path, "params.teacher");
        assert_eq!(check(&json!({ "teacher": "@t" })).unwrap_err().path, "params");
        assert_eq!(check(&json!({ "teacher": "@t", "attention_fraction": 0.4 })).unwrap_err().path, "params.attention_fraction");
        assert!(check(&json!({ "teacher": "@t", "attention_fraction": 0.5, "mixer": "mamba3" })).unwrap_err().path.starts_with("params"));
        assert_eq!(check(&json!({ "teacher": "@t", "attention_fraction": 0.5, "chunk_size": 0 })).unwrap_err().path, "params.chunk_size");
    }
}
