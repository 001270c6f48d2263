//! The SwiGLU MLP: `down_proj(silu(gate_proj(x)) * up_proj(x))`.

use distill_kernels::matmul::{linear, project};
use burn::config::Config;
use burn::module::{Module, Param};
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
    /// `[d_model, 2·d_ff]`: `gate_proj` and `up_proj`'s weights side by side, for inference (see
    /// [`Mlp::fuse_projections`]); never saved.
    #[module(skip)]
    pub fused_gate_up: Option<Tensor<2>>,
}

impl MlpConfig {
    pub fn init(&self, device: &Device) -> Mlp {
        let lin = |i, o| LinearConfig::new(i, o).with_bias(self.bias).init(device);
        Mlp {
            gate_proj: lin(self.d_model, self.d_ff),
            up_proj: lin(self.d_model, self.d_ff),
            down_proj: lin(self.d_ff, self.d_model),
            fused_gate_up: None,
        }
    }
}

impl Mlp {
    /// # Shapes
    /// - `x`: `[batch, seq, d_model]` -> same
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let (gate, up) = match &self.fused_gate_up {
            Some(w) if !x.device().is_autodiff() => {
                debug_assert_eq!(w.device(), x.device(), "fused weights left on another device");
                let d_ff = w.dims()[1] / 2;
                let both = project(x, w.clone());
                (both.clone().narrow(2, 0, d_ff), both.narrow(2, d_ff, d_ff))
            }
            _ => (linear(&self.gate_proj, x.clone()), linear(&self.up_proj, x)),
        };
        linear(&self.down_proj, silu(gate) * up)
    }

    /// Puts the gate and up weights side by side: one product instead of two in a forward pass
    /// without gradients (as [`crate::llama::Attention::fuse_projections`], whose caveats hold).
    /// The two weights become views of the fused one.
    pub fn fuse_projections(&mut self) {
        if self.gate_proj.bias.is_none() && self.up_proj.bias.is_none() {
            let fused = Tensor::cat(vec![self.gate_proj.weight.val(), self.up_proj.weight.val()], 1);
            let d_ff = fused.dims()[1] / 2;
            self.gate_proj.weight = Param::from_tensor(fused.clone().narrow(1, 0, d_ff));
            self.up_proj.weight = Param::from_tensor(fused.clone().narrow(1, d_ff, d_ff));
            self.fused_gate_up = Some(fused);
        }
    }
}
