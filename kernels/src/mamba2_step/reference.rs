//! The decode step in plain tensor ops: what the CPU runs and what the kernel must equal.

use burn::tensor::activation::{silu, softplus};
use burn::tensor::{DType, Tensor};

use super::{Mamba2StepWeights, StepOut};

/// See [`super::mamba2_step`].
pub fn mamba2_step_reference(xbc: Tensor<2>, dt: Tensor<2>, window: Tensor<3>, state: Tensor<4>, w: &Mamba2StepWeights) -> StepOut {
    let [bs, channels] = xbc.dims();
    let k = w.conv_weight.dims()[1];
    let (h, kv, p, n) = (w.heads, w.kv_heads, w.head_dim, w.d_state);
    let padded = Tensor::cat(vec![window, xbc.unsqueeze_dim::<3>(1)], 1); // [bs, K, C]
    let window = padded.clone().narrow(1, 1, k - 1);
    let taps = w.conv_weight.clone().transpose().unsqueeze_dim::<3>(0); // [1, K, C]
    let conv = (padded * taps).sum_dim(1).reshape([bs, channels]) + w.conv_bias.clone().unsqueeze_dim::<2>(0);
    let conv = silu(conv).cast(DType::F32);
    let part = |start: usize, heads: usize, width: usize| conv.clone().narrow(1, start, heads * width).reshape([bs, heads, width]);
    let repeat = |v: Tensor<3>, width: usize| if kv == h { v } else { v.unsqueeze_dim::<4>(2).expand([bs, kv, h / kv, width]).reshape([bs, h, width]) };
    let x = repeat(part(0, kv, p), p); // [bs, h, p]
    let b = repeat(part(kv * p, kv, n), n); // [bs, h, n]
    let c = part(kv * (p + n), h, n); // [bs, h, n]
    let dt = softplus(dt.cast(DType::F32) + w.dt_bias.clone().cast(DType::F32).unsqueeze_dim::<2>(0), 1.0); // [bs, h]
    let decay = (dt.clone() * w.a.clone().unsqueeze_dim::<2>(0)).exp().reshape([bs, h, 1, 1]);
    let input = (x.clone() * dt.unsqueeze_dim::<3>(2)).unsqueeze_dim::<4>(3) * b.unsqueeze_dim::<4>(2); // [bs, h, p, n]
    let state = state * decay + input;
    let y = (state.clone() * c.unsqueeze_dim::<4>(2)).sum_dim(3).reshape([bs, h, p]);
    let y = y + x * w.d.clone().cast(DType::F32).reshape([1, h, 1]);
    StepOut { y, state, window }
}
