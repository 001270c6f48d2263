//! Mamba-2's gated RMSNorm (`norm_before_gate = False`): `rmsnorm(y * silu(z))` over groups of
//! `group_size` channels (one group per head), statistics in f32, eps 1e-5.

use burn::config::Config;
use burn::module::{Module, Param};
use burn::nn::Initializer;
use burn::tensor::activation::silu;
use burn::tensor::{DType, Device, Tensor};
use distill_kernels::reduce::mean_last;

use crate::channels::mul_channels;

#[derive(Config, Debug)]
pub struct GatedRmsNormConfig {
    pub d_inner: usize,
    pub group_size: usize,
    #[config(default = 1e-5)]
    pub eps: f64,
}

#[derive(Module, Debug)]
pub struct GatedRmsNorm {
    pub weight: Param<Tensor<1>>,
    pub group_size: usize,
    pub eps: f64,
}

impl GatedRmsNormConfig {
    pub fn init(&self, device: &Device) -> GatedRmsNorm {
        GatedRmsNorm { weight: Initializer::Ones.init([self.d_inner], device), group_size: self.group_size, eps: self.eps }
    }
}

impl GatedRmsNorm {
    /// # Shapes
    /// - `y`, `z`: `[batch, seq, d_inner]` -> same
    pub fn forward(&self, y: Tensor<3>, z: Tensor<3>) -> Tensor<3> {
        let [b, s, d] = y.dims();
        let g = self.group_size;
        if !y.device().is_autodiff() {
            // Inference: one launch on a GPU (the kernel's twin on the CPU), a row per group.
            let rows = |t: Tensor<3>| t.reshape([b * s * (d / g), g]);
            return distill_kernels::rms_norm::gated_rms_norm(rows(y), rows(z), self.weight.val(), self.eps).reshape([b, s, d]);
        }
        let dtype = y.dtype();
        let v = (y.cast(DType::F32) * silu(z.cast(DType::F32))).reshape([b, s, d / g, g]);
        let var = mean_last(v.clone().powi_scalar(2)); // [b, s, groups, 1]
        let v = (v * (var + self.eps).sqrt().recip()).reshape([b, s, d]);
        mul_channels(v.cast(dtype), self.weight.val().cast(dtype))
    }
}
