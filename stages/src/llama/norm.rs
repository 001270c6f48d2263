//! RMSNorm as `LlamaRMSNorm`: statistics in f32, the weight applied in the input's dtype.

use burn::config::Config;
use burn::module::{Module, Param};
use burn::nn::Initializer;
use burn::tensor::{DType, Device, Tensor};
use distill_kernels::reduce::mean_last;

use crate::channels::mul_channels;

#[derive(Config, Debug)]
pub struct RmsNormConfig {
    pub d_model: usize,
    #[config(default = 1e-6)]
    pub eps: f64,
}

#[derive(Module, Debug)]
pub struct RmsNorm {
    pub weight: Param<Tensor<1>>,
    pub eps: f64,
}

impl RmsNormConfig {
    pub fn init(&self, device: &Device) -> RmsNorm {
        RmsNorm { weight: Initializer::Ones.init([self.d_model], device), eps: self.eps }
    }
}

impl RmsNorm {
    /// # Shapes
    /// - `x`: `[batch, seq, d_model]` -> same
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        if !x.device().is_autodiff() {
            // Inference: one launch a norm on a GPU (the kernel's twin on the CPU).
            let [b, s, d] = x.dims();
            return distill_kernels::rms_norm::rms_norm(x.reshape([b * s, d]), self.weight.val(), self.eps).reshape([b, s, d]);
        }
        let dtype = x.dtype();
        let x = x.cast(DType::F32);
        let var = mean_last(x.clone().powi_scalar(2)); // [batch, seq, 1]
        let x = x * (var + self.eps).sqrt().recip();
        mul_channels(x.cast(dtype), self.weight.val())
    }
}
