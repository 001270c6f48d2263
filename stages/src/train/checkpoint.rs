//! Checkpoints for resume: `trainable.safetensors` (the trainable parameters in burn's own
//! orientation and layout), `optimizer.safetensors` (`m.{name}`, `v.{name}`, f32) and
//! `state.json` (step, counters). Written to a temporary folder and renamed, so a kill
//! mid-write leaves the previous one.
//!
//! Frozen parameters are not saved: a resumed run keeps them as its student folder loaded them,
//! exactly as the uninterrupted run has them. Keeping burn's orientation (no transpose on the
//! way out or in) keeps tensors contiguous, so matmuls sum in the same order and resume is bit
//! for bit.

use std::path::Path;

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::{DType, Device, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use super::adamw::{AdamW, AdamWConfig, Moments};
use super::base::{TrainError, TrainResult};
use super::names::PathTracker;
use crate::weights::{save_safetensors, Weights};

/// Where training stands: what a resumed run needs besides weights and moments.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TrainState {
    /// Optimizer steps done.
    pub step: u64,
    /// Tokens seen (for throughput and the `tokens` budget).
    pub tokens: u64,
}

#[derive(Default)]
struct Collect {
    at: PathTracker,
    out: Weights,
    /// Checkpoint orientation (HF `[out, in]` Linear weights) and every parameter, for model
    /// folders; else burn's orientation and trainable parameters only, for resume.
    hf: bool,
}

impl ModuleVisitor for Collect {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.at.enter(name, container_type);
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.at.exit();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if !self.hf && !param.is_require_grad() {
            return;
        }
        let t = param.val().inner();
        let t = if self.hf && self.at.is_linear_weight() { t.swap_dims(0, 1) } else { t };
        let shape = t.dims().to_vec();
        let data: TensorData = t.into_data();
        let dtype = data.dtype();
        self.out.insert_bytes(self.at.key(), shape, dtype, data.into_bytes().to_vec());
    }
}

/// Every float parameter as named host tensors in checkpoint orientation.
pub fn weights_of<M: Module>(model: &M) -> Weights {
    let mut c = Collect { hf: true, ..Collect::default() };
    model.visit(&mut c);
    c.out
}

pub fn save_weights<M: Module>(model: &M, path: &Path) -> TrainResult<()> {
    Ok(save_safetensors(&weights_of(model), path)?)
}

fn ck_err(path: &Path, message: impl Into<String>) -> TrainError {
    TrainError::Checkpoint { path: path.into(), message: message.into() }
}

/// Replaces `dir` with a checkpoint of `model`, `opt` and `state`.
pub fn save_checkpoint<M: Module>(dir: &Path, model: &M, opt: &AdamW, state: &TrainState) -> TrainResult<()> {
    let tmp = dir.with_extension("tmp");
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(|e| crate::Error::io(&tmp, e))?;
    let mut trainable = Collect::default();
    model.visit(&mut trainable);
    save_safetensors(&trainable.out, &tmp.join("trainable.safetensors"))?;
    let mut moments = Weights::new(&tmp);
    for (name, Moments { m, v }) in &opt.state {
        for (prefix, t) in [("m", m), ("v", v)] {
            let values = t.clone().into_data().try_into_vec::<f32>().map_err(|e| ck_err(&tmp, format!("{name}: {e:?}")))?;
            moments.insert_f32(format!("{prefix}.{name}"), vec![values.len()], values);
        }
    }
    save_safetensors(&moments, &tmp.join("optimizer.safetensors"))?;
    let meta = serde_json::json!({ "state": state, "adamw": opt.config, "optimizer_step": opt.step });
    let path = tmp.join("state.json");
    std::fs::write(&path, serde_json::to_string_pretty(&meta).expect("json")).map_err(|e| crate::Error::io(&path, e))?;
    let _ = std::fs::remove_dir_all(dir);
    std::fs::rename(&tmp, dir).map_err(|e| crate::Error::io(dir, e))?;
    Ok(())
}

/// Replaces the parameters `weights` names, as stored (burn's orientation).
struct Restore<'a> {
    at: PathTracker,
    weights: &'a Weights,
    device: Device,
    dtype: DType,
    errors: Vec<crate::Error>,
}

impl ModuleMapper for Restore<'_> {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.at.enter(name, container_type);
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.at.exit();
    }

    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let name = self.at.key();
        if !self.weights.entries.contains_key(&name) {
            return param; // frozen: as loaded
        }
        match self.weights.data(&name) {
            Ok(data) if data.shape().as_slice() == param.lazy_shape().as_slice() => {
                let dtype = data.dtype();
                Param::initialized(param.id, Tensor::<D>::from_data(data, (&self.device, dtype)).cast(self.dtype))
            }
            Ok(data) => {
                let (got, want) = (data.shape().to_vec(), param.lazy_shape().to_vec());
                self.errors.push(crate::Error::Shape { path: self.weights.path.clone(), tensor: name, got, want });
                param
            }
            Err(e) => {
                self.errors.push(e);
                param
            }
        }
    }
}

/// Loads a checkpoint into `model` (plain, not yet trained) if `dir` holds one.
pub fn load_checkpoint<M: Module>(dir: &Path, model: M, dtype: DType, device: &Device) -> TrainResult<Option<(M, AdamW, TrainState)>> {
    let path = dir.join("state.json");
    if !path.is_file() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(&path).map_err(|e| crate::Error::io(&path, e))?;
    let meta: serde_json::Value = serde_json::from_str(&text).map_err(|e| ck_err(&path, e.to_string()))?;
    let state: TrainState = serde_json::from_value(meta["state"].clone()).map_err(|e| ck_err(&path, e.to_string()))?;
    let config: AdamWConfig = serde_json::from_value(meta["adamw"].clone()).map_err(|e| ck_err(&path, e.to_string()))?;
    let mut weights = Weights::new(dir);
    weights.add_safetensors(&dir.join("trainable.safetensors"))?;
    let mut restore = Restore { at: PathTracker::default(), weights: &weights, device: device.clone(), dtype, errors: Vec::new() };
    let model = model.map(&mut restore);
    if let Some(e) = restore.errors.into_iter().next() {
        return Err(e.into());
    }
    let mut opt = AdamW::new(config);
    opt.step = meta["optimizer_step"].as_u64().ok_or_else(|| ck_err(&path, "no optimizer_step"))?;
    let mut moments = Weights::new(dir);
    moments.add_safetensors(&dir.join("optimizer.safetensors"))?;
    let flat = |key: &str| -> TrainResult<Tensor<1>> { Ok(Tensor::from_data(moments.data(key)?, (device, DType::F32))) };
    for key in moments.entries.keys().filter_map(|k| k.strip_prefix("m.")) {
        let entry = Moments { m: flat(&format!("m.{key}"))?, v: flat(&format!("v.{key}"))? };
        opt.state.insert(key.to_string(), entry);
    }
    Ok(Some((model, opt, state)))
}
