//! AdamW as PyTorch's `torch.optim.AdamW` computes it, with state kept by parameter name (so a
//! checkpoint is readable safetensors and survives a model rebuilt with new `ParamId`s).
//! Gradients arrive already accumulated and clipped (`trainer.rs`). Updates are computed in f32
//! and cast back to the parameter's dtype (bf16 weights on the GPU keep f32 moments).

use std::collections::BTreeMap;

use burn::module::{Module, ModuleMapper, Param};
use burn::tensor::{DType, Tensor};
use serde::{Deserialize, Serialize};

use super::names::PathTracker;

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AdamWConfig {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    /// Decoupled weight decay, applied to matrices only (not norms or biases), as the
    /// Hugging Face trainer does.
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    /// The paper's stage-1 betas (0.9, 0.98).
    fn default() -> Self {
        Self { beta1: 0.9, beta2: 0.98, eps: 1e-8, weight_decay: 0.0 }
    }
}

/// First and second moments of one parameter, flattened: `[numel]` f32.
#[derive(Clone)]
pub struct Moments {
    pub m: Tensor<1>,
    pub v: Tensor<1>,
}

#[derive(Clone)]
pub struct AdamW {
    pub config: AdamWConfig,
    /// Optimizer steps taken (bias correction uses `step + 1` on the next update).
    pub step: u64,
    pub state: BTreeMap<String, Moments>,
}

impl AdamW {
    pub fn new(config: AdamWConfig) -> Self {
        Self { config, step: 0, state: BTreeMap::new() }
    }

    /// The same optimizer with its moments on `device` (a data-parallel replica's).
    pub fn to_device(&self, device: &burn::tensor::Device) -> Self {
        let to = |t: &Tensor<1>| super::devices::tensor_moved_to(t.clone(), device);
        let state = self.state.iter().map(|(n, m)| (n.clone(), Moments { m: to(&m.m), v: to(&m.v) })).collect();
        Self { config: self.config, step: self.step, state }
    }

    /// Applies one update with `grads` (name -> flat f32 gradient on the plain device).
    pub fn update<M: Module>(&mut self, model: M, grads: &mut BTreeMap<String, Tensor<1>>, lr: f64) -> M {
        self.step += 1;
        let mut mapper = Updater { at: PathTracker::default(), opt: self, grads, lr };
        model.map(&mut mapper)
    }
}

struct Updater<'a> {
    at: PathTracker,
    opt: &'a mut AdamW,
    grads: &'a mut BTreeMap<String, Tensor<1>>,
    lr: f64,
}

impl ModuleMapper for Updater<'_> {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.at.enter(name, container_type);
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.at.exit();
    }

    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let name = self.at.key();
        let Some(g) = self.grads.remove(&name) else { return param };
        let (id, tensor, mapper) = param.consume();
        let c = self.opt.config;
        let t = self.opt.step as i32;
        let p = tensor.inner(); // leave the autodiff graph
        let (dtype, shape) = (p.dtype(), p.shape());
        let flat = p.cast(DType::F32).reshape([g.dims()[0]]); // [numel]
        let zeros = || g.zeros_like();
        let prev = self.opt.state.remove(&name).unwrap_or_else(|| Moments { m: zeros(), v: zeros() });
        let m = prev.m * c.beta1 + g.clone() * (1.0 - c.beta1);
        let v = prev.v * c.beta2 + g.clone() * g * (1.0 - c.beta2);
        let bc1 = 1.0 - c.beta1.powi(t);
        let bc2 = 1.0 - c.beta2.powi(t);
        let denom = (v.clone() / bc2).sqrt() + c.eps;
        let decay = if D >= 2 { 1.0 - self.lr * c.weight_decay } else { 1.0 };
        let updated = flat * decay - m.clone() / denom * (self.lr / bc1);
        self.opt.state.insert(name, Moments { m, v });
        let updated: Tensor<D> = updated.reshape(shape).cast(dtype);
        Param::from_mapped_value(id, Tensor::from_inner(updated).require_grad(), mapper)
    }
}
