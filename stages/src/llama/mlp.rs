//! The SwiGLU MLP: `down_proj(silu(gate_proj(x)) * up_proj(x))`.

use distill_kernels::matmul::linear;
use burn::config::Config;
use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::activation::silu;
use burn::tensor::{Device, Tensor};

#[derive(Config, Debug)]
pub struct MlpConfig {
    pub d_model: usize,
    pub d_ff: usize,
    #[config(default = false)]
    pub bias: bool,
}

#[derive(Module, Debug)]
pub struct Mlp {
    pub gate_proj: Linear,
    pub up_proj: Linear,
    pub down_proj: Linear,
}

impl MlpConfig {
    pub fn init(&self, device: &Device) -> Mlp {
        let lin = |i, o| LinearConfig::new(i, o).with_bias(self.bias).init(device);
        Mlp {
            gate_proj: lin(self.d_model, self.d_ff),
            up_proj: lin(self.d_model, self.d_ff),
            down_proj: lin(self.d_ff, self.d_model),
        }
    }
}

impl Mlp {
    /// # Shapes
    /// - `x`: `[batch, seq, d_model]` -> same
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let gate = silu(linear(&self.gate_proj, x.clone()));
        linear(&self.down_proj, gate * linear(&self.up_proj, x))
    }
}
