//! The recurrent state of one Mamba layer, owned by the caller and passed as `&mut`.

use burn::tensor::Tensor;
use distill_kernels::Mamba2StepWeights;

#[derive(Debug, Clone, Default)]
pub struct MambaState {
    /// The last `K - 1` inputs of the causal conv: `[batch, K - 1, conv_channels]`.
    pub conv: Option<Tensor<3>>,
    /// The SSM state in f32: Mamba-2 `[batch, heads, p, n]`, Mamba-1 `[batch, d_inner, 1, n]`.
    pub ssm: Option<Tensor<4>>,
    /// A Mamba-2 layer's parameters as its decode step reads them, derived once per generation
    /// (`A = -exp(A_log)`, the conv taps reshaped): a few ops fewer per layer and token.
    pub step_weights: Option<Mamba2StepWeights>,
}

impl MambaState {
    pub fn is_empty(&self) -> bool {
        self.conv.is_none() && self.ssm.is_none()
    }
}
