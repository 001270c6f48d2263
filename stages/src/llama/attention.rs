//! Grouped-query self-attention with rotary embeddings and a KV cache (`LlamaAttention`).

use distill_kernels::attention::{causal_self_attention, recompute_in_training};
use distill_kernels::masked_attention::masked_attention;
use distill_kernels::matmul::{linear, project};
use burn::config::Config;
use burn::module::{Module, Param};
use burn::nn::{Linear, LinearConfig};
use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{Device, Tensor};

use super::cache::{store, KvStep, StepMask};
use super::rope::apply_rotary;
use super::train_attention::causal_attention;

#[derive(Config, Debug)]
pub struct AttentionConfig {
    pub d_model: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    #[config(default = false)]
    pub bias: bool,
}

#[derive(Module, Debug)]
pub struct Attention {
    pub q_proj: Linear,
    pub k_proj: Linear,
    pub v_proj: Linear,
    pub o_proj: Linear,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    /// `[d_model, (n_heads + 2·n_kv_heads)·head_dim]`: `q_proj`, `k_proj` and `v_proj`'s
    /// weights side by side, for small models with `q_proj` and `k_proj`'s again rotated by half
    /// between them (see [`Attention::fuse_projections`]); never saved.
    #[module(skip)]
    pub fused_qkv: Option<Tensor<2>>,
}

impl AttentionConfig {
    pub fn init(&self, device: &Device) -> Attention {
        let lin = |i, o, bias| LinearConfig::new(i, o).with_bias(bias).init(device);
        let (q, kv) = (self.n_heads * self.head_dim, self.n_kv_heads * self.head_dim);
        Attention {
            q_proj: lin(self.d_model, q, self.bias),
            k_proj: lin(self.d_model, kv, self.bias),
            v_proj: lin(self.d_model, kv, self.bias),
            o_proj: lin(q, self.d_model, self.bias),
            n_heads: self.n_heads,
            n_kv_heads: self.n_kv_heads,
            head_dim: self.head_dim,
            fused_qkv: None,
        }
    }
}

/// The most bytes of query and key weights a layer repeats, rotated, in its fused projection:
/// SmolLM2's 0.9 MB a layer (launch-bound decoding) are; Llama-3-8B's 42 MB (bandwidth-bound)
/// are not.
pub const ROTATED_MAX_BYTES: usize = 8 << 20;

impl Attention {
    /// Puts the query, key and value weights side by side, so that a forward pass without
    /// gradients projects with one product instead of three: at decoding's few rows each product
    /// is two launches whatever its width, and a decode step of SmolLM2 is bound by launches
    /// (BENCHMARKS.md). The three weights become views of the fused one, so it costs no memory.
    /// Where the queries' and keys' weights are small (a launch-bound model: at most
    /// [`ROTATED_MAX_BYTES`]), their columns come twice, the second time with each head's halves
    /// swapped and the first half negated: the product then also gives `rotate_half(q)` and
    /// `rotate_half(k)`, the same sums (each output column's own), so the rotary embedding is one
    /// elementwise pass instead of slices, a negation and a concatenation; a large model would
    /// read those weights twice a token for it. For models that only infer from here on:
    /// training updates would not reach the fused copy (a forward with gradients ignores it).
    /// Biased projections stay apart.
    pub fn fuse_projections(&mut self) {
        let [d_model, q] = self.q_proj.weight.dims();
        let bytes = d_model * (q + self.k_proj.weight.dims()[1]) * self.q_proj.weight.val().dtype().size();
        self.fuse(bytes <= ROTATED_MAX_BYTES);
    }

    /// [`Attention::fuse_projections`], with the rotated columns or without.
    pub(crate) fn fuse(&mut self, rotate: bool) {
        if [&self.q_proj, &self.k_proj, &self.v_proj].iter().any(|l| l.bias.is_some()) {
            return;
        }
        let (q, kv) = (self.n_heads * self.head_dim, self.n_kv_heads * self.head_dim);
        let qk = Tensor::cat(vec![self.q_proj.weight.val(), self.k_proj.weight.val()], 1);
        let [d_model, width] = qk.dims();
        let mut parts = vec![qk.clone()];
        if rotate {
            let (heads, half) = (width / self.head_dim, self.head_dim / 2);
            let by_head = qk.reshape([d_model, heads, self.head_dim]);
            parts.push(Tensor::cat(vec![by_head.clone().narrow(2, half, half).neg(), by_head.narrow(2, 0, half)], 2).reshape([d_model, width]));
        }
        parts.push(self.v_proj.weight.val());
        let fused = Tensor::cat(parts, 1);
        let v_at = fused.dims()[1] - kv;
        self.q_proj.weight = Param::from_tensor(fused.clone().narrow(1, 0, q));
        self.k_proj.weight = Param::from_tensor(fused.clone().narrow(1, q, kv));
        self.v_proj.weight = Param::from_tensor(fused.clone().narrow(1, v_at, kv));
        self.fused_qkv = Some(fused);
    }

    /// `q` and `k` of `x` with rotary embeddings, and `v`, by head: `[batch, heads, seq,
    /// head_dim]` (`n_kv_heads` for `k` and `v`). Fused, the queries and keys sit side by side
    /// in one product's output and rotate as one tensor: one rotation's launches, not two.
    fn rotated_qkv(&self, x: Tensor<3>, cos: &Tensor<4>, sin: &Tensor<4>) -> (Tensor<4>, Tensor<4>, Tensor<4>) {
        let [b, s, _] = x.dims();
        let (h, kvh, d) = (self.n_heads, self.n_kv_heads, self.head_dim);
        let heads = |t: Tensor<3>, n: usize| t.reshape([b, s, n, d]).swap_dims(1, 2); // [b, n, s, d]
        match &self.fused_qkv {
            Some(w) if !x.device().is_autodiff() => {
                debug_assert_eq!(w.device(), x.device(), "fused weights left on another device");
                let width = (h + kvh) * d;
                let rotated = w.dims()[1] == 2 * width + kvh * d;
                let all = project(x, w.clone()); // [b, s, width (+ width) + kvh·d]
                let part = |from: usize, n: usize| heads(all.clone().narrow(2, from, n * d), n);
                let qk = match rotated {
                    true => part(0, h + kvh) * cos.clone() + part(width, h + kvh) * sin.clone(), // apply_rotary's
                    false => apply_rotary(part(0, h + kvh), cos, sin),
                };
                let v_at = if rotated { 2 * width } else { width };
                (qk.clone().narrow(1, 0, h), qk.narrow(1, h, kvh), part(v_at, kvh))
            }
            _ => (
                apply_rotary(heads(linear(&self.q_proj, x.clone()), h), cos, sin),
                apply_rotary(heads(linear(&self.k_proj, x.clone()), kvh), cos, sin),
                heads(linear(&self.v_proj, x), kvh),
            ),
        }
    }

    /// # Shapes
    /// - `x`: `[batch, seq, d_model]`
    /// - `cos`, `sin`: `[batch, 1, seq, head_dim]`
    /// - `cache`: `[batch, n_kv_heads, capacity, head_dim]` keys and values, written at `step.offset`
    /// - returns `[batch, seq, d_model]`
    pub fn forward(
        &self,
        x: Tensor<3>,
        cos: &Tensor<4>,
        sin: &Tensor<4>,
        step: &KvStep,
        cache: &mut Option<(Tensor<4>, Tensor<4>)>,
    ) -> Tensor<3> {
        let [b, s, _] = x.dims();
        let (h, kvh, d) = (self.n_heads, self.n_kv_heads, self.head_dim);
        let g = h / kvh;
        let (q, k, v) = self.rotated_qkv(x, cos, sin);
        let (old_k, old_v) = cache.take().unzip();
        let (k, v) = (store(old_k, k, step), store(old_v, v, step));
        *cache = Some((k.clone(), v.clone()));
        let t = k.dims()[2];
        let y = match &step.mask {
            // Causality is per query row, so the kernel must see one row per head and token:
            // repeat the KV heads (query head i uses KV head i / g).
            StepMask::Causal => {
                let repeat = |x: Tensor<4>| x.unsqueeze_dim::<5>(2).expand([b, kvh, g, t, d]).reshape([b, h, t, d]);
                if q.device().is_autodiff() {
                    // Training: burn would differentiate its attention through the slow fallback.
                    if s == t && recompute_in_training() {
                        causal_self_attention(q, repeat(k), repeat(v))
                    } else {
                        causal_attention(q, repeat(k), repeat(v))
                    }
                } else {
                    let opts = AttentionModuleOptions { scale: None, softcap: None, is_causal: true };
                    attention(q, repeat(k), repeat(v), None, None, opts)
                }
            }
            // GQA without copying the cache: the g query heads that share a KV head become
            // g·seq rows against it, each row keeping its token's mask.
            StepMask::Masked(_) => {
                let q = q.reshape([b, kvh, g * s, d]);
                let mask = step.grouped_mask(kvh, g).expect("a masked step");
                masked_attention(q, k, v, mask).reshape([b, h, s, d])
            }
        };
        linear(&self.o_proj, y.swap_dims(1, 2).reshape([b, s, h * d]))
    }
}
