//! A teacher checkpoint becomes a hybrid checkpoint, tensor by tensor, as the reference code does
//! it (METHOD.md 1): in each converted layer `x <- v_proj`, `B <- k_proj`, `C <- q_proj`,
//! `out_proj <- o_proj`; MLP and norms stay; new parameters get the reference's initial
//! distributions from a seeded generator, so a seed gives the same checkpoint on every machine.
//!
//! The input may be a hybrid (progressive distillation, METHOD.md 2): its Mamba layers are kept
//! as they are and only its remaining attention layers named for conversion are converted, from
//! its fine-tuned attention weights.
//!
//! `init = random` (the paper's ablation) draws the mixer's every weight instead, and still keeps
//! the teacher's MLPs and norms. (The reference code's `init_with_kqvo=False` also leaves MLPs
//! and norms freshly initialized; the paper's ablation is about the mixer.)

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::config::{HybridConfig, MixerConfig};
use crate::error::{Error, Result};
use crate::llama::LlamaConfig;
use crate::mamba::{Mamba1Config, Mamba2Config};
use crate::weights::Weights;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MixerChoice {
    Mamba2,
    Mamba1,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InitFrom {
    Attention,
    Random,
}

#[derive(Debug, Clone)]
pub struct ConvertOptions {
    pub attention_layers: Vec<usize>,
    pub mixer: MixerChoice,
    pub init: InitFrom,
    /// Mamba-2: the teacher's head_dim (required with attention init); Mamba-1: 16.
    pub d_state: Option<usize>,
    pub chunk_size: usize,
    pub seed: u64,
    /// Scales each converted layer's output at init: Mamba-2's gated-norm weight starts at this
    /// instead of 1 (the reference code's value), Mamba-1's `out_proj` is multiplied by it. The
    /// normalized output of a fresh mixer is far louder than the attention it replaces: on
    /// SmolLM2-135M's 50% hybrid, held-out perplexity before training is 303,439 at 1 and 1,098
    /// at 0.03 (BENCHMARKS.md), below the 1,704 of dropping those layers' mixers altogether.
    pub output_scale: f32,
}

/// The hybrid's config for a teacher and these options.
pub fn hybrid_config(llama: &LlamaConfig, opts: &ConvertOptions) -> Result<HybridConfig> {
    let (h, kv, hd) = (llama.n_heads, llama.n_kv_heads, llama.head_dim);
    let err = |m: String| Err(Error::Config(m));
    let mixer = match opts.mixer {
        MixerChoice::Mamba2 => {
            let n = opts.d_state.unwrap_or(hd);
            if opts.init == InitFrom::Attention && n != hd {
                return err(format!("Mamba-2 from attention needs d_state = head_dim ({hd}), got {n}"));
            }
            MixerConfig::Mamba2(Mamba2Config::new(llama.d_model, h, kv, n).with_chunk_size(opts.chunk_size))
        }
        MixerChoice::Mamba1 => {
            let (n, d_inner, d_xb) = (opts.d_state.unwrap_or(16), h * hd, kv * hd);
            if n == 0 || d_xb % n != 0 {
                return err(format!("Mamba-1 needs d_state to divide n_kv_heads * head_dim ({d_xb}), got {n}"));
            }
            MixerConfig::Mamba1(Mamba1Config::new(llama.d_model, d_inner, d_xb).with_d_state(n))
        }
    };
    if let Some(l) = opts.attention_layers.iter().find(|&&l| l >= llama.n_layers) {
        return err(format!("attention layer {l} does not exist (the teacher has {} layers)", llama.n_layers));
    }
    if llama.attention_bias && opts.init == InitFrom::Attention && opts.attention_layers.len() < llama.n_layers {
        return err("the teacher's attention has biases, which the reference's Mamba projections do not".into());
    }
    let mut attention_layers = opts.attention_layers.clone();
    attention_layers.sort_unstable();
    attention_layers.dedup();
    Ok(HybridConfig { llama: llama.clone(), attention_layers, mixer })
}

/// Converts `teacher` (a Llama checkpoint's weights) into the hybrid's checkpoint weights.
pub fn convert_teacher(teacher: &Weights, llama: &LlamaConfig, opts: &ConvertOptions) -> Result<(Weights, HybridConfig)> {
    let config = hybrid_config(llama, opts)?;
    let mut out = Weights::new(&teacher.path);
    let converted = |k: &str| config.mamba_layers().iter().any(|i| k.starts_with(&format!("model.layers.{i}.self_attn.")));
    for (name, e) in &teacher.entries {
        if !converted(name) {
            out.insert_bytes(name.clone(), e.shape.clone(), e.dtype, teacher.bytes(e).to_vec());
        }
    }
    if llama.tie_embeddings && !out.entries.contains_key("lm_head.weight") {
        // The reference loads with a strict `load_state_dict`, which wants the tied head too.
        let e = &teacher.entries.get("model.embed_tokens.weight").ok_or_else(|| missing(teacher, "model.embed_tokens.weight"))?;
        out.insert_bytes("lm_head.weight".into(), e.shape.clone(), e.dtype, teacher.bytes(e).to_vec());
    }
    for layer in config.mamba_layers() {
        if is_mamba_already(teacher, layer) {
            continue; // the input is a hybrid whose layer is Mamba already: kept as trained, copied above
        }
        // One generator per layer: a layer's draws do not depend on which others are converted.
        let mut rng = StdRng::seed_from_u64(opts.seed ^ (layer as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let attn = match opts.init {
            InitFrom::Attention => Some(AttentionWeights::read(teacher, layer)?),
            InitFrom::Random => None,
        };
        let prefix = format!("model.layers.{layer}.mamba.");
        let tensors = match &config.mixer {
            MixerConfig::Mamba2(m) => super::init_mamba2::tensors(m, attn.as_ref(), &mut rng, opts.output_scale),
            MixerConfig::Mamba1(m) => super::init_mamba1::tensors(m, attn.as_ref(), &mut rng, opts.output_scale),
        };
        for (name, shape, values) in tensors {
            out.insert_f32(format!("{prefix}{name}"), shape, values);
        }
    }
    Ok((out, config))
}

/// Whether layer `layer` of `w` is a Mamba mixer (an input hybrid's, progressive schedules).
fn is_mamba_already(w: &Weights, layer: usize) -> bool {
    let prefix = format!("model.layers.{layer}.mamba.");
    !w.entries.contains_key(&format!("model.layers.{layer}.self_attn.q_proj.weight")) && w.entries.keys().any(|k| k.starts_with(&prefix))
}

fn missing(w: &Weights, tensor: &str) -> Error {
    Error::MissingTensor { path: w.path.clone(), tensor: tensor.into() }
}

/// The attention projections of one teacher layer, `[out, in]` row-major in f32.
pub(crate) struct AttentionWeights {
    pub q: Vec<f32>,
    pub k: Vec<f32>,
    pub v: Vec<f32>,
    pub o: Vec<f32>,
}

impl AttentionWeights {
    fn read(w: &Weights, layer: usize) -> Result<Self> {
        let get = |p: &str| -> Result<Vec<f32>> {
            let name = format!("model.layers.{layer}.self_attn.{p}.weight");
            let data = w.data(&name)?.convert::<f32>();
            data.try_to_vec::<f32>().map_err(|e| Error::tensor(&w.path, &name, format!("{e:?}")))
        };
        Ok(Self { q: get("q_proj")?, k: get("k_proj")?, v: get("v_proj")?, o: get("o_proj")? })
    }
}

/// `n` draws from `U(lo, hi)`.
pub(crate) fn uniform(rng: &mut StdRng, n: usize, lo: f32, hi: f32) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(lo..hi)).collect()
}

/// PyTorch's default `Linear` init: `U(-1/sqrt(fan_in), 1/sqrt(fan_in))`.
pub(crate) fn linear(rng: &mut StdRng, rows: usize, fan_in: usize) -> Vec<f32> {
    let b = 1.0 / (fan_in as f32).sqrt();
    uniform(rng, rows * fan_in, -b, b)
}

/// The reference's dt bias: `softplus^-1(dt)`, `dt = exp(U(ln 1e-3, ln 1e-1))` clamped at 1e-4.
pub(crate) fn dt_bias(rng: &mut StdRng, n: usize) -> Vec<f32> {
    let (lo, hi) = (1e-3f64.ln(), 1e-1f64.ln());
    (0..n)
        .map(|_| {
            let dt = (rng.random::<f64>() * (hi - lo) + lo).exp().max(1e-4);
            (dt + (-(-dt).exp_m1()).ln()) as f32
        })
        .collect()
}
