//! `init`: a teacher becomes a hybrid, its converted layers' Mamba mixers initialized from the
//! attention weights (or randomly, the paper's ablation). The `teacher` may itself be a hybrid
//! (the progressive schedule: 50% -> 25% attention): its Mamba layers stay as trained, more of
//! its attention layers are converted, and the mixer's shape is the input's.
//!
//! ```toml
//! [stages.hybrid50]
//! kind = "init"
//! params = { teacher = "@teacher", attention_fraction = 0.5, mixer = "mamba2", init = "attention" }
//! # or attention_layers = [1, 3, 5] (which keep attention), or convert_layers = [4] (which of
//! # the input's attention layers become Mamba); and d_state, chunk_size, seed, output_scale
//! ```

use std::collections::BTreeMap;

use distill_engine::stage::{ParamError, Stage, StageContext, StageError, StageSpec};
use serde::Deserialize;

use super::params::{failed, parse_strict, reference};
use crate::hybrid::{convert_teacher, interleaved_attention_layers, read_config, write_hybrid_dir, ConvertOptions, HybridConfig, InitFrom, MixerChoice, MixerConfig};
use crate::weights::Weights;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    teacher: String,
    #[serde(default)]
    attention_layers: Option<Vec<usize>>,
    #[serde(default)]
    attention_fraction: Option<f64>,
    /// With `attention_fraction`: `false` keeps the same number of attention layers as one block
    /// at the top of the stack (the paper's interleaving ablation, 2.20 vs 2.89 at 25%).
    #[serde(default = "default_interleave")]
    interleave: bool,
    #[serde(default)]
    convert_layers: Option<Vec<usize>>,
    /// Default: the input hybrid's mixer, else Mamba-2.
    #[serde(default)]
    mixer: Option<Mixer>,
    #[serde(default = "default_init")]
    init: Init,
    #[serde(default)]
    d_state: Option<usize>,
    #[serde(default = "default_chunk")]
    chunk_size: usize,
    #[serde(default)]
    seed: u64,
    /// The converted layers' output at init (`hybrid::ConvertOptions::output_scale`); 1 is
    /// the reference code's.
    #[serde(default = "default_output_scale")]
    output_scale: f32,
}

#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
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

fn default_init() -> Init {
    Init::Attention
}
fn default_interleave() -> bool {
    true
}
fn default_chunk() -> usize {
    256
}
fn default_output_scale() -> f32 {
    1.0
}

fn check(params: &serde_json::Value) -> Result<Params, ParamError> {
    let p: Params = parse_strict(params)?;
    reference("params.teacher", &p.teacher)?;
    let given = [p.attention_layers.is_some(), p.attention_fraction.is_some(), p.convert_layers.is_some()];
    match given.iter().filter(|g| **g).count() {
        0 => return Err(ParamError::new("params", "which layers keep attention: `attention_fraction = 0.5`, `attention_layers = [...]` or `convert_layers = [...]`")),
        1 => {}
        _ => return Err(ParamError::new("params", "give one of `attention_layers`, `attention_fraction`, `convert_layers`")),
    }
    if let Some(f) = p.attention_fraction.filter(|f| interleaved_attention_layers(64, *f).is_none()) {
        return Err(ParamError::new("params.attention_fraction", format!("{f} is not 0, 1, 1/k or 1 - 1/k; give `attention_layers`")));
    }
    if !p.interleave && p.attention_fraction.is_none() {
        return Err(ParamError::new("params.interleave", "applies to `attention_fraction`; `attention_layers` already says where attention stays"));
    }
    if p.chunk_size == 0 {
        return Err(ParamError::new("params.chunk_size", "must be at least 1"));
    }
    if !(p.output_scale.is_finite() && p.output_scale >= 0.0) {
        return Err(ParamError::new("params.output_scale", format!("must be a finite number >= 0, got {}", p.output_scale)));
    }
    if p.d_state == Some(0) {
        return Err(ParamError::new("params.d_state", "must be at least 1"));
    }
    Ok(p)
}

/// The conversion for an input (a teacher, or a hybrid to convert further): which layers keep
/// attention, and a mixer like the input's Mamba layers when it has some.
fn options(p: &Params, input: &HybridConfig) -> Result<ConvertOptions, ParamError> {
    let n = input.llama.n_layers;
    let attention_layers = match (&p.attention_layers, p.attention_fraction, &p.convert_layers) {
        (Some(l), _, _) => l.clone(),
        (_, Some(f), _) => {
            let spread = interleaved_attention_layers(n, f).ok_or_else(|| ParamError::new("params.attention_fraction", format!("{f} has no interleaving")))?;
            if p.interleave { spread } else { (n - spread.len()..n).collect() }
        }
        (_, _, Some(c)) => input.attention_layers.iter().copied().filter(|l| !c.contains(l)).collect(),
        _ => return Err(ParamError::new("params", "no layer choice")),
    };
    if let Some(l) = attention_layers.iter().find(|l| !input.is_attention(**l)) {
        return Err(ParamError::new("params", format!("layer {l} is Mamba in the input already; init converts attention to Mamba, never back")));
    }
    let has_mamba = attention_layers.len() < n && input.attention_layers.len() < n;
    let (mixer, d_state, chunk_size) = match (&input.mixer, has_mamba) {
        (MixerConfig::Mamba2(m), true) => (Mixer::Mamba2, Some(m.d_state), m.chunk_size),
        (MixerConfig::Mamba1(m), true) => (Mixer::Mamba1, Some(m.d_state), p.chunk_size),
        (_, false) => (p.mixer.unwrap_or(Mixer::Mamba2), p.d_state, p.chunk_size),
    };
    if has_mamba && (p.mixer.is_some_and(|m| m != mixer) || p.d_state.is_some_and(|d| Some(d) != d_state)) {
        return Err(ParamError::new("params.mixer", format!("the input hybrid's Mamba layers are {mixer:?} with d_state {d_state:?}; new layers must match")));
    }
    Ok(ConvertOptions {
        attention_layers,
        mixer: match mixer {
            Mixer::Mamba2 => MixerChoice::Mamba2,
            Mixer::Mamba1 => MixerChoice::Mamba1,
        },
        init: match p.init {
            Init::Attention => InitFrom::Attention,
            Init::Random => InitFrom::Random,
        },
        d_state,
        chunk_size,
        seed: p.seed,
        output_scale: p.output_scale,
    })
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
                "convert_layers": { "type": "array", "items": { "type": "integer", "minimum": 0 },
                    "description": "the input's attention layers to turn into Mamba (progressive steps)" },
                "attention_fraction": { "type": "number", "minimum": 0, "maximum": 1,
                    "description": "interleaved: 0.5 keeps every 2nd layer, 0.25 every 4th; 0.75 converts every 4th" },
                "interleave": { "type": "boolean", "default": true,
                    "description": "with attention_fraction: false puts the attention layers in one block at the top" },
                "mixer": { "enum": ["mamba2", "mamba1"], "description": "default: the input hybrid's, else mamba2" },
                "init": { "enum": ["attention", "random"], "default": "attention" },
                "d_state": { "type": "integer", "minimum": 1, "description": "Mamba-2: head_dim; Mamba-1: 16" },
                "chunk_size": { "type": "integer", "minimum": 1, "default": 256 },
                "seed": { "type": "integer", "minimum": 0, "default": 0 },
                "output_scale": { "type": "number", "minimum": 0, "default": 1.0,
                    "description": "the converted layers' output gain at init (Mamba-2 gated-norm weight); 1 is the reference code's" }
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
        let p = check(&ctx.spec.params).map_err(|e| StageError::Failed(e.to_string()))?;
        let teacher_dir = ctx.input(&p.teacher)?.to_path_buf();
        let teacher = Weights::open_hf_dir(&teacher_dir).map_err(failed)?;
        let input = read_config(&teacher_dir, &teacher).map_err(failed)?;
        let opts = options(&p, &input).map_err(|e| StageError::Failed(e.to_string()))?;
        let llama = input.llama.clone();
        let (weights, config) = convert_teacher(&teacher, &llama, &opts).map_err(failed)?;
        let out = ctx.out_dir().to_path_buf();
        write_hybrid_dir(&teacher_dir, &out, &weights, &config).map_err(failed)?;
        let mamba = config.mamba_layers();
        let new: Vec<usize> = mamba.iter().copied().filter(|l| input.is_attention(*l)).collect();
        ctx.log(format!("{} of {} layers are {:?} ({:?} init of {new:?}): {mamba:?}", mamba.len(), llama.n_layers, opts.mixer, p.init));
        ctx.metric("new_mamba_layers", new.len() as f64)?;
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
        assert_eq!(check(&json!({ "teacher": "@t", "attention_layers": [1], "interleave": false })).unwrap_err().path, "params.interleave");
    }

    /// The interleaving ablation: the same number of attention layers, spread or in one block.
    #[test]
    fn interleave_false_keeps_the_same_count_in_one_block_at_the_top() {
        let input = HybridConfig::all_attention(crate::data::fixtures::tiny_config(16, 30));
        let layers = |v: serde_json::Value| options(&check(&v).unwrap(), &input).unwrap().attention_layers;
        let spread = layers(json!({ "teacher": "@t", "attention_fraction": 0.25 }));
        assert_eq!(spread, vec![3, 7, 11, 15, 19, 23, 27]);
        let block = layers(json!({ "teacher": "@t", "attention_fraction": 0.25, "interleave": false }));
        assert_eq!(block, (23..30).collect::<Vec<_>>());
    }

    /// METHOD.md 2: each progressive step starts from the previous step's checkpoint, and its
    /// newly converted layers are initialized from that checkpoint's attention weights.
    #[test]
    fn a_hybrid_input_converts_more_layers_and_keeps_its_mamba_ones() {
        use crate::data::fixtures::{tiny_config, write_model_dir};
        use crate::kinds::training::testing::run_stage;
        let tmp = tempfile::tempdir().unwrap();
        let teacher = tmp.path().join("teacher");
        write_model_dir(&teacher, &tiny_config(32, 4));
        let run = |name: &str, params: serde_json::Value, input: &std::path::Path| {
            let dir = tmp.path().join(name);
            std::fs::create_dir_all(&dir).unwrap();
            run_stage(&InitStage, &dir, params, &[("@in", input.to_path_buf())])
        };
        let (m, half, _) = run("half", json!({ "teacher": "@in", "attention_fraction": 0.5 }), &teacher).unwrap();
        assert_eq!((m["mamba_layers"], m["new_mamba_layers"]), (2.0, 2.0));
        let (m, quarter, _) = run("quarter", json!({ "teacher": "@in", "attention_fraction": 0.25 }), &half).unwrap();
        assert_eq!((m["mamba_layers"], m["new_mamba_layers"]), (3.0, 1.0));
        let (_, by_list, _) = run("list", json!({ "teacher": "@in", "convert_layers": [1] }), &half).unwrap();
        let (h, q, l) = (Weights::open_hf_dir(&half).unwrap(), Weights::open_hf_dir(&quarter).unwrap(), Weights::open_hf_dir(&by_list).unwrap());
        for (name, e) in &q.entries {
            assert_eq!(q.bytes(e), l.bytes(&l.entries[name]), "{name}: fraction and convert_layers agree");
            if name.starts_with("model.layers.0.") || name.starts_with("model.layers.2.") {
                assert_eq!(q.bytes(e), h.bytes(&h.entries[name]), "{name} kept as the input had it");
            }
        }
        // Layer 1's new mixer took the input's attention: x <- v_proj sits inside in_proj.
        assert!(q.entries.contains_key("model.layers.1.mamba.in_proj.weight") && !q.entries.contains_key("model.layers.1.self_attn.q_proj.weight"));
        let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(quarter.join("mamba_config.json")).unwrap()).unwrap();
        assert_eq!(json["attn_layers"], json!([3]));
        let back = run("back", json!({ "teacher": "@in", "attention_layers": [0, 3] }), &half).unwrap_err().to_string();
        assert!(back.contains("layer 0 is Mamba"), "{back}");
        let other = run("other", json!({ "teacher": "@in", "convert_layers": [1], "mixer": "mamba1" }), &half).unwrap_err().to_string();
        assert!(other.contains("Mamba2"), "{other}");
    }
}
