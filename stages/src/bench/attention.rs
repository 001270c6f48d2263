//! The training step's causal attention, forward and backward: burn's `attention` differentiated
//! through its fallback against ours, same inputs, same run, with the largest difference of
//! their gradients. Ours twice: `llama::causal_attention` (the scale folded into q, an additive
//! mask, softmax with its own backward: session 4) and `causal_self_attention` (the backend's
//! flash forward, a backward that recomputes the probabilities once: what training runs).

use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{DType, Distribution, Tensor};
use distill_kernels::attention::causal_self_attention;
use serde::Serialize;

use super::median_ms;
use crate::error::Result;
use crate::llama::causal_attention;
use crate::runtime::Runtime;

#[derive(Debug, Clone, Serialize)]
pub struct AttentionResult {
    pub bench: &'static str,
    pub device: String,
    pub dtype: &'static str,
    /// `[batch, heads, seq, head_dim]`.
    pub shape: [usize; 4],
    pub burn_ms: f64,
    /// `causal_self_attention`, what training runs.
    pub ours_ms: f64,
    /// `burn_ms / ours_ms`.
    pub speedup: f64,
    /// Largest |ours - burn's| over the gradients of q, k and v, relative to the largest |burn's|.
    pub grad_rel_diff: f64,
    /// `llama::causal_attention`: the materialized composite with softmax's own backward.
    pub composite_ms: f64,
    pub composite_grad_rel_diff: f64,
}

#[derive(Debug, Clone, Copy)]
enum Variant {
    Burn,
    Composite,
    Ours,
}

/// Median of `repeats` forward + backward passes of each, after 2 untimed ones.
pub fn run(shape: [usize; 4], runtime: &Runtime, repeats: usize) -> Result<AttentionResult> {
    let device = runtime.device.clone().autodiff();
    let normal = Distribution::Normal(0.0, 1.0);
    let tensor = || Tensor::<4>::random(shape, normal, (&device, runtime.dtype));
    let (q, k, v, w) = (tensor().require_grad(), tensor().require_grad(), tensor().require_grad(), tensor());
    let opts = AttentionModuleOptions { scale: None, softcap: None, is_causal: true };
    let pass = |variant: Variant| {
        let (qi, ki, vi) = (q.clone(), k.clone(), v.clone());
        let out = match variant {
            Variant::Burn => attention(qi, ki, vi, None, None, opts),
            Variant::Composite => causal_attention(qi, ki, vi),
            Variant::Ours => causal_self_attention(qi, ki, vi),
        };
        let grads = (out.cast(DType::F32) * w.clone().cast(DType::F32)).sum().backward();
        [&q, &k, &v].map(|x| x.grad(&grads).expect("tracked").cast(DType::F32))
    };
    let time = |variant: Variant| median_ms(runtime, repeats, || drop(pass(variant)));
    let (burn_ms, composite_ms, ours_ms) = (time(Variant::Burn)?, time(Variant::Composite)?, time(Variant::Ours)?);
    let burns = pass(Variant::Burn);
    let rel_diff = |variant: Variant| {
        pass(variant).into_iter().zip(burns.clone()).map(|(a, b)| {
            let scale = b.clone().abs().max().into_scalar::<f32>().max(1e-12) as f64;
            (a - b).abs().max().into_scalar::<f32>() as f64 / scale
        }).fold(0.0, f64::max)
    };
    Ok(AttentionResult {
        bench: "train_attention",
        device: format!("{:?}", runtime.device),
        dtype: runtime.dtype_name(),
        shape,
        burn_ms,
        ours_ms,
        speedup: burn_ms / ours_ms,
        grad_rel_diff: rel_diff(Variant::Ours),
        composite_ms,
        composite_grad_rel_diff: rel_diff(Variant::Composite),
    })
}
