//! `LlamaForCausalLM`: field names are the checkpoint's tensor names
//! (`model.layers.0.self_attn.q_proj.weight`), so loading is a name table.

use distill_kernels::matmul::{linear, project};
use burn::module::Module;
use burn::nn::{Embedding, EmbeddingConfig, Linear, LinearConfig};
use burn::tensor::{Device, Int, Tensor};

use super::attention::{Attention, AttentionConfig};
use super::cache::{KvCache, KvStep};
use super::config::LlamaConfig;
use super::mlp::{Mlp, MlpConfig};
use super::norm::{RmsNorm, RmsNormConfig};
use super::rope::Rope;

#[derive(Module, Debug)]
pub struct DecoderLayer {
    pub self_attn: Attention,
    pub mlp: Mlp,
    pub input_layernorm: RmsNorm,
    pub post_attention_layernorm: RmsNorm,
}

#[derive(Module, Debug)]
pub struct LlamaModel {
    pub embed_tokens: Embedding,
    pub layers: Vec<DecoderLayer>,
    pub norm: RmsNorm,
}

#[derive(Module, Debug)]
pub struct Llama {
    pub model: LlamaModel,
    /// `None` when the embeddings are tied.
    pub lm_head: Option<Linear>,
}

impl LlamaConfig {
    pub fn init(&self, device: &Device) -> Llama {
        let norm = || RmsNormConfig::new(self.d_model).with_eps(self.rms_eps).init(device);
        let layer = |_| DecoderLayer {
            self_attn: AttentionConfig::new(self.d_model, self.n_heads, self.n_kv_heads, self.head_dim)
                .with_bias(self.attention_bias)
                .init(device),
            mlp: MlpConfig::new(self.d_model, self.d_ff).with_bias(self.mlp_bias).init(device),
            input_layernorm: norm(),
            post_attention_layernorm: norm(),
        };
        Llama {
            model: LlamaModel {
                embed_tokens: EmbeddingConfig::new(self.vocab_size, self.d_model).init(device),
                layers: (0..self.n_layers).map(layer).collect(),
                norm: norm(),
            },
            lm_head: (!self.tie_embeddings)
                .then(|| LinearConfig::new(self.d_model, self.vocab_size).with_bias(false).init(device)),
        }
    }
}

impl DecoderLayer {
    /// # Shapes
    /// - `x`: `[batch, seq, d_model]` -> same
    fn forward(
        &self,
        x: Tensor<3>,
        cos: &Tensor<4>,
        sin: &Tensor<4>,
        step: &KvStep,
        cache: &mut Option<(Tensor<4>, Tensor<4>)>,
    ) -> Tensor<3> {
        let h = x.clone() + self.self_attn.forward(self.input_layernorm.forward(x), cos, sin, step, cache);
        h.clone() + self.mlp.forward(self.post_attention_layernorm.forward(h))
    }
}

impl crate::lm::CausalLm for Llama {
    type Cache = KvCache;

    fn new_cache(&self) -> KvCache {
        KvCache::new(self.model.layers.len())
    }

    fn device(&self) -> Device {
        self.model.embed_tokens.weight.val().device()
    }

    fn forward(&self, tokens: Tensor<2, Int>, valid: &[Vec<bool>], rope: &Rope, cache: &mut KvCache) -> Tensor<3> {
        Llama::forward(self, tokens, valid, rope, cache)
    }
}

impl Llama {
    /// Runs `tokens` after what `cache` holds, appending to it.
    ///
    /// # Shapes
    /// - `tokens`: `[batch, seq]`; `valid`: `[batch][seq]` (false = left padding)
    /// - returns logits `[batch, seq, vocab]`
    pub fn forward(&self, tokens: Tensor<2, Int>, valid: &[Vec<bool>], rope: &Rope, cache: &mut KvCache) -> Tensor<3> {
        let device = tokens.device();
        let positions = cache.positions(valid);
        let x = self.model.embed_tokens.forward(tokens);
        let (cos, sin) = rope.cos_sin(&positions, x.dtype(), &device);
        let step = cache.begin_step(valid, &device);
        let mut x = x;
        for (layer, slot) in self.model.layers.iter().zip(cache.layers.iter_mut()) {
            x = layer.forward(x, &cos, &sin, &step, slot);
        }
        let x = self.model.norm.forward(x);
        match &self.lm_head {
            Some(head) => linear(head, x),
            None => project(x, self.model.embed_tokens.weight.val().transpose()),
        }
    }
}
