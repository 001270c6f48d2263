//! Throughput and parity benchmarks behind `distill bench` (BENCHMARKS.md): decoding,
//! training steps and bf16 parity, on real checkpoints or on random weights of a checkpoint's
//! shape (speed does not depend on the weights' values; acceptance rates and perplexity do,
//! and those come from pipeline runs instead).
//!
//! Each measurement warms up on the very shapes it then times: on the GPU the first call of a
//! shape compiles kernels and autotunes them, which must stay out of the numbers.

pub mod allreduce;
pub mod attention;
pub mod decode;
pub mod graph;
pub mod matmul;
pub mod parity;
pub mod ssd;
pub mod train;

use std::path::{Path, PathBuf};

use burn::tensor::Device;

use crate::error::{Error, Result};
use crate::hybrid::{convert_teacher, interleaved_attention_layers, ConvertOptions, Hybrid, HybridConfig, InitFrom, MixerChoice};
use crate::llama::{HfLlamaConfig, LlamaConfig, Rope};
use crate::runtime::Runtime;
use crate::teacher::LoadedModel;
use crate::train::weights_of;

/// Where a benchmarked model comes from.
#[derive(Debug, Clone)]
pub enum ModelSource {
    /// A model folder we can load (teacher, hybrid) or a llama `.gguf` (exported next to it first).
    Path(PathBuf),
    /// Random weights in the shape a Hugging Face `config.json` gives.
    Random(PathBuf),
}

/// A model ready to run, with what the tables call it.
pub struct BenchModel {
    pub label: String,
    pub model: Hybrid,
    pub config: HybridConfig,
    pub rope: Rope,
}

impl BenchModel {
    /// Loads `source`; with `attention_fraction < 1` a random-weight source becomes the hybrid
    /// that keeps that fraction of attention layers (the paper's interleaving), its other layers
    /// Mamba-2 as the attention-initialized conversion shapes them.
    pub fn load(source: &ModelSource, attention_fraction: f64, runtime: &Runtime) -> Result<Self> {
        let label_fraction = format!("{}% attention", (attention_fraction * 100.0).round());
        match source {
            ModelSource::Path(path) => {
                if attention_fraction < 1.0 {
                    return Err(Error::Config("--attention-fraction applies to --random models; give a hybrid folder instead".into()));
                }
                let dir = folder(path)?;
                let m = LoadedModel::open(&dir, runtime.clone())?;
                let share = m.hybrid.attention_layers.len() as f64 / m.config.n_layers as f64;
                Ok(Self { label: format!("{} ({}% attention)", dir.display(), (share * 100.0).round()), model: m.model, config: m.hybrid, rope: m.rope })
            }
            ModelSource::Random(config_json) => {
                let llama = HfLlamaConfig::from_file(config_json)?.into_config()?;
                let (model, config) = random_hybrid(&llama, attention_fraction, runtime)?;
                Ok(Self { label: format!("random {label_fraction}"), rope: Rope::new(&llama), model, config })
            }
        }
    }

    /// A random Transformer of `layers` layers in `llama`'s shape: a draft to time speculative
    /// rounds with (what a round costs, whatever it would accept).
    pub fn random_transformer(llama: &LlamaConfig, layers: usize, runtime: &Runtime) -> Result<Self> {
        let mut llama = llama.clone();
        llama.n_layers = layers;
        let (model, config) = random_hybrid(&llama, 1.0, runtime)?;
        Ok(Self { label: format!("random {layers}-layer Transformer"), rope: Rope::new(&llama), model, config })
    }

    /// This model with its final norm's weights scaled channel by channel by `1 ± scale`
    /// (uniform, from `seed`): a draft whose hidden states are the model's own and whose greedy
    /// choice differs where the model's top logits are near, so speculative rounds accept some
    /// drafts and roll back at every count, as a trained draft's do, on random weights (no
    /// checkpoint to carry to the GPU machine).
    pub fn noisy_copy(&self, scale: f32, seed: u64) -> Self {
        use rand::{Rng, SeedableRng};
        let mut model = self.model.clone();
        let w = model.model.norm.weight.val();
        let d = w.dims()[0];
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let factors: Vec<f32> = (0..d).map(|_| 1.0 + rng.random_range(-scale..=scale)).collect();
        let factors = burn::tensor::Tensor::<1>::from_data(burn::tensor::TensorData::new(factors, [d]), &w.device()).cast(w.dtype());
        model.model.norm.weight = burn::module::Param::from_tensor(w * factors);
        Self { label: format!("itself, final norm scaled by 1 ± {scale}"), model, config: self.config.clone(), rope: self.rope.clone() }
    }

    /// Parameters that take part in matrix products per token (the `2·P` of forward FLOPs
    /// per token): all of them, with the output head counted even when tied to the embedding,
    /// less the embedding lookup when untied. Norms, convs and decays (under 1%) are counted too.
    pub fn matmul_params(&self) -> usize {
        use burn::module::Module;
        let c = &self.config.llama;
        let embed = c.vocab_size * c.d_model;
        self.model.num_params() - if c.tie_embeddings { 0 } else { embed }
    }
}

/// A `.gguf` is exported once to `FILE.gguf.hf/`; a folder is used as it is.
fn folder(path: &Path) -> Result<PathBuf> {
    if path.extension().is_some_and(|e| e == "gguf") {
        let out = PathBuf::from(format!("{}.hf", path.display()));
        if !out.join("config.json").is_file() {
            crate::teacher::export_gguf(path, &out)?;
        }
        return Ok(out);
    }
    Ok(path.to_path_buf())
}

/// Random teacher weights (built on the CPU from seed 0, so two runs measure the same model),
/// converted the paper's way.
fn random_hybrid(llama: &LlamaConfig, attention_fraction: f64, runtime: &Runtime) -> Result<(Hybrid, HybridConfig)> {
    let n = llama.n_layers;
    let attention_layers = if attention_fraction >= 1.0 {
        (0..n).collect()
    } else {
        interleaved_attention_layers(n, attention_fraction)
            .ok_or_else(|| Error::Config(format!("no interleaving keeps {attention_fraction} of {n} layers as attention")))?
    };
    let cpu = Device::flex();
    cpu.seed(0);
    let mut teacher = llama.init(&cpu);
    // Hugging Face draws embeddings from N(0, 0.02) (`initializer_range`), burn from N(0, 1):
    // tied to the head, burn's make every softmax one-hot, and a distillation loss exactly 0.
    let embed = &mut teacher.model.embed_tokens.weight;
    *embed = burn::module::Param::from_tensor(embed.val() * 0.02);
    let teacher = weights_of(&teacher);
    let opts = ConvertOptions { attention_layers, mixer: MixerChoice::Mamba2, init: InitFrom::Attention, d_state: Some(llama.head_dim), chunk_size: 256, seed: 0, output_scale: 1.0 };
    let (weights, config) = convert_teacher(&teacher, llama, &opts)?;
    Ok((Hybrid::from_weights(&config, weights, runtime.dtype, &runtime.device)?, config))
}

/// Waits for the device's queued work (timings must cover it).
pub fn sync(runtime: &Runtime) -> Result<()> {
    runtime.device.sync().map_err(|e| Error::Device(format!("{:?}", runtime.device), format!("{e:?}")))
}

/// Milliseconds a call of `f` takes, the device drained before and after each: the median of
/// `repeats` calls after 2 untimed ones (compilation, autotuning, the memory pool's growth).
pub fn median_ms(runtime: &Runtime, repeats: usize, mut f: impl FnMut()) -> Result<f64> {
    let mut ms = Vec::with_capacity(repeats);
    for i in 0..repeats.max(1) + 2 {
        sync(runtime)?;
        let start = std::time::Instant::now();
        f();
        sync(runtime)?;
        if i >= 2 {
            ms.push(start.elapsed().as_secs_f64() * 1e3);
        }
    }
    Ok(median(ms))
}

/// The median of some timings.
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// Which inference kernels a decoding benchmark ran (`distill_kernels::{reduce, gemv,
/// masked_attention, attention_softmax, rms_norm}::mode`) and whether the model's projections were fused.
#[derive(Debug, Clone, serde::Serialize)]
pub struct InferenceKernels {
    pub reductions: &'static str,
    pub products: &'static str,
    pub attention: &'static str,
    pub attention_softmax: &'static str,
    pub norms: &'static str,
    pub fused_projections: bool,
    /// How steps on graphs write the KV cache: `scatter` (the step's rows) or `mask` (the whole
    /// buffer through a mask, `DISTILL_KV_WRITE=mask`).
    pub kv_write: &'static str,
}

impl InferenceKernels {
    pub fn of(model: &crate::hybrid::Hybrid) -> Self {
        InferenceKernels {
            reductions: distill_kernels::reduce::mode(),
            products: distill_kernels::gemv::mode(),
            attention: distill_kernels::masked_attention::mode(),
            attention_softmax: distill_kernels::attention_softmax::mode(),
            norms: distill_kernels::rms_norm::mode(),
            fused_projections: model.model.layers.iter().any(|l| l.mlp.fused_gate_up.is_some()),
            kv_write: if crate::llama::kv_write_by_mask() { "mask" } else { "scatter" },
        }
    }
}
