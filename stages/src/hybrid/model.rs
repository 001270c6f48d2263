//! The hybrid model. Field names are the reference checkpoint's tensor names: attention layers
//! keep `model.layers.{i}.self_attn.*`, converted layers hold `model.layers.{i}.mamba.*`.

use distill_kernels::matmul::{linear, project};
use burn::module::Module;
use burn::nn::{Embedding, EmbeddingConfig, Linear, LinearConfig};
use burn::tensor::{DType, Device, Int, Tensor, TensorData};

use super::cache::HybridCache;
use super::config::{HybridConfig, MixerConfig};
use crate::llama::{Attention, AttentionConfig, KvCache, KvStep, Mlp, MlpConfig, RmsNorm, RmsNormConfig, Rope};
use crate::generate::GenerateOptions;
use crate::lm::CausalLm;
use crate::mamba::{Mamba1, Mamba2, MambaState};

/// One Mamba variant per model (the reference never mixes them). The enum names no key segment.
#[derive(Module, Debug)]
pub enum MambaMixer {
    Mamba2(Mamba2),
    Mamba1(Mamba1),
}

impl MambaMixer {
    /// The mixer's plain forward, advancing `state` (see [`Mamba2::forward`]).
    pub fn forward(&self, u: Tensor<3>, mask: Option<&Tensor<2>>, state: &mut MambaState) -> Tensor<3> {
        match self {
            MambaMixer::Mamba2(m) => m.forward(u, mask, state),
            MambaMixer::Mamba1(m) => m.forward(u, mask, state),
        }
    }
}

/// A decoder layer whose mixer is attention (`self_attn`) or Mamba (`mamba`), never both.
#[derive(Module, Debug)]
pub struct HybridLayer {
    pub self_attn: Option<Attention>,
    pub mamba: Option<MambaMixer>,
    pub mlp: Mlp,
    pub input_layernorm: RmsNorm,
    pub post_attention_layernorm: RmsNorm,
}

#[derive(Module, Debug)]
pub struct HybridModel {
    pub embed_tokens: Embedding,
    pub layers: Vec<HybridLayer>,
    pub norm: RmsNorm,
}

#[derive(Module, Debug)]
pub struct Hybrid {
    pub model: HybridModel,
    /// `None` when the embeddings are tied.
    pub lm_head: Option<Linear>,
}

impl HybridConfig {
    pub fn init(&self, device: &Device) -> Hybrid {
        let c = &self.llama;
        let norm = || RmsNormConfig::new(c.d_model).with_eps(c.rms_eps).init(device);
        let layer = |i: usize| {
            let attention = self.is_attention(i);
            HybridLayer {
                self_attn: attention.then(|| {
                    AttentionConfig::new(c.d_model, c.n_heads, c.n_kv_heads, c.head_dim).with_bias(c.attention_bias).init(device)
                }),
                mamba: (!attention).then(|| match &self.mixer {
                    MixerConfig::Mamba2(m) => MambaMixer::Mamba2(m.init(device)),
                    MixerConfig::Mamba1(m) => MambaMixer::Mamba1(m.init(device)),
                }),
                mlp: MlpConfig::new(c.d_model, c.d_ff).with_bias(c.mlp_bias).init(device),
                input_layernorm: norm(),
                post_attention_layernorm: norm(),
            }
        };
        Hybrid {
            model: HybridModel {
                embed_tokens: EmbeddingConfig::new(c.vocab_size, c.d_model).init(device),
                layers: (0..c.n_layers).map(layer).collect(),
                norm: norm(),
            },
            lm_head: (!c.tie_embeddings).then(|| LinearConfig::new(c.d_model, c.vocab_size).with_bias(false).init(device)),
        }
    }
}

/// What a layer's mixer reads besides its input.
struct Step<'a> {
    cos: &'a Tensor<4>,
    sin: &'a Tensor<4>,
    /// Where the attention layers' keys go and what each query sees.
    kv: &'a KvStep,
}

impl HybridLayer {
    /// `mamba(mixer, u)` runs this layer's Mamba mixer on its normed input: the plain forward
    /// with a `MambaState`, or speculative decoding's round that it can roll back.
    ///
    /// # Shapes
    /// - `x`: `[batch, seq, d_model]` -> same
    fn forward(&self, x: Tensor<3>, step: &Step, kv: &mut Option<(Tensor<4>, Tensor<4>)>, mamba: impl FnOnce(&MambaMixer, Tensor<3>) -> Tensor<3>) -> Tensor<3> {
        let h = self.input_layernorm.forward(x.clone());
        let mixed = match (&self.self_attn, &self.mamba) {
            (Some(attn), _) => attn.forward(h, step.cos, step.sin, step.kv, kv),
            (None, Some(m)) => mamba(m, h),
            (None, None) => h.zeros_like(), // not built by HybridConfig::init
        };
        let x = x + mixed;
        x.clone() + self.mlp.forward(self.post_attention_layernorm.forward(x))
    }
}

impl Hybrid {
    /// Every layer's projections that read the same input as one product (query, key and value;
    /// gate and up) in passes without gradients: fewer launches a decoding token (see
    /// [`crate::llama::Attention::fuse_projections`]). For a model that only infers from here on.
    /// `DISTILL_FUSE=0` leaves them apart, to measure one against the other.
    pub fn fuse_projections(&mut self) {
        if std::env::var("DISTILL_FUSE").is_ok_and(|v| v.trim() == "0") {
            return;
        }
        for layer in &mut self.model.layers {
            if let Some(attn) = &mut layer.self_attn {
                attn.fuse_projections();
            }
            layer.mlp.fuse_projections();
        }
    }

    /// The forward pass with the Mamba layers run by the caller: `mamba(layer, mixer, u, keep)`
    /// gets the layer index, its mixer, the normed input `[batch, seq, d_model]` and the
    /// token mask `[batch, seq]` (1 = token, 0 = padding), and returns the mixer's output.
    ///
    /// # Shapes
    /// - `tokens`: `[batch, seq]`; `valid`: `[batch][seq]`; returns logits `[batch, seq, vocab]`
    pub fn forward_with(
        &self,
        tokens: Tensor<2, Int>,
        valid: &[Vec<bool>],
        rope: &Rope,
        kv: &mut KvCache,
        mamba: impl FnMut(usize, &MambaMixer, Tensor<3>, &Tensor<2>) -> Tensor<3>,
    ) -> Tensor<3> {
        let inputs = self.step_inputs(valid, rope, kv, &tokens.device());
        self.forward_from(tokens, &inputs, kv, mamba)
    }

    /// The host's part of a forward step: positions, rotary tables, the cache's mask and where
    /// keys go, each uploaded once. What remains ([`forward_from`](Self::forward_from)) only
    /// launches device work, so it can be captured and replayed (a CUDA graph).
    pub fn step_inputs(&self, valid: &[Vec<bool>], rope: &Rope, kv: &mut KvCache, device: &Device) -> StepInputs {
        let (b, s) = (valid.len(), valid.first().map_or(0, Vec::len));
        let positions = kv.positions(valid);
        let dtype = self.model.embed_tokens.weight.val().dtype();
        let (cos, sin) = rope.cos_sin(&positions, dtype, device);
        let kv_step = kv.begin_step(valid, device);
        let keep: Vec<f32> = valid.iter().flatten().map(|&v| if v { 1.0 } else { 0.0 }).collect();
        let keep = Tensor::<2>::from_data(TensorData::new(keep, [b, s]), (device, DType::F32));
        StepInputs { cos, sin, kv: kv_step, keep }
    }

    /// The device's part of a forward step (see [`step_inputs`](Self::step_inputs)).
    pub fn forward_from(&self, tokens: Tensor<2, Int>, inputs: &StepInputs, kv: &mut KvCache, mut mamba: impl FnMut(usize, &MambaMixer, Tensor<3>, &Tensor<2>) -> Tensor<3>) -> Tensor<3> {
        let x = self.model.embed_tokens.forward(tokens);
        let step = Step { cos: &inputs.cos, sin: &inputs.sin, kv: &inputs.kv };
        let mut x = x;
        for (i, (layer, slot)) in self.model.layers.iter().zip(kv.layers.iter_mut()).enumerate() {
            x = layer.forward(x, &step, slot, |m, u| mamba(i, m, u, &inputs.keep));
        }
        let x = self.model.norm.forward(x);
        match &self.lm_head {
            Some(head) => linear(head, x),
            None => project(x, self.model.embed_tokens.weight.val().transpose()),
        }
    }
}

/// A forward step's inputs besides the tokens, on the device (see [`Hybrid::step_inputs`]).
#[derive(Clone)]
pub struct StepInputs {
    cos: Tensor<4>,
    sin: Tensor<4>,
    kv: KvStep,
    /// `[batch, seq]`: 1 for a token, 0 for padding.
    keep: Tensor<2>,
}

impl StepInputs {
    /// Inputs made on the device from a position that lives there (`generate::graph`).
    ///
    /// # Shapes
    /// - `cos`, `sin`: `[batch, 1, seq, head_dim]`; `keep`: `[batch, seq]`
    pub fn new(cos: Tensor<4>, sin: Tensor<4>, kv: KvStep, keep: Tensor<2>) -> Self {
        Self { cos, sin, kv, keep }
    }

    /// The rotary rows and the cache step, for tests that compare two ways of making them.
    #[cfg(test)]
    pub(crate) fn parts(&self) -> (&Tensor<4>, &Tensor<4>, &KvStep) {
        (&self.cos, &self.sin, &self.kv)
    }
}

impl CausalLm for Hybrid {
    type Cache = HybridCache;

    fn new_cache(&self) -> HybridCache {
        HybridCache::new(self.model.layers.len())
    }

    fn device(&self) -> Device {
        self.model.embed_tokens.weight.val().device()
    }

    fn reserve(&self, cache: &mut HybridCache, positions: usize) {
        cache.kv.reserved = positions;
    }

    fn generate_on_graph(&self, rope: &Rope, prompts: &[Vec<u32>], opts: &GenerateOptions, on_token: &mut dyn FnMut(usize, u32) -> bool) -> Option<Vec<Vec<u32>>> {
        Some(crate::generate::graph::generate_on_graph(self, rope, prompts, opts, on_token).tokens)
    }

    fn forward(&self, tokens: Tensor<2, Int>, valid: &[Vec<bool>], rope: &Rope, cache: &mut HybridCache) -> Tensor<3> {
        let states = &mut cache.mamba;
        // Without padding the mask multiplies by one: leave it out (the same values, and a
        // handful fewer ops per Mamba layer and token, which is what decoding at batch 1 costs).
        let padded = valid.iter().flatten().any(|&v| !v);
        self.forward_with(tokens, valid, rope, &mut cache.kv, |i, mixer, u, keep| mixer.forward(u, padded.then_some(keep), &mut states[i]))
    }
}
