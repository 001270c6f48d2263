//! What `distill`, `sft` and `dpo` share: the optimizer params, turning them into a
//! `TrainConfig`, running the trainer with step metrics and a progress line, checkpoints under
//! the workspace (kept across a killed run, removed on success), and writing the trained model
//! folder.

use std::cell::Cell;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use burn::tensor::{Int, Tensor, TensorData};
use distill_engine::stage::{ParamError, StageContext, StageError};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Deserialize;

use crate::data::DataError;
use crate::hybrid::Hybrid;
use crate::train::{save_weights, AdamWConfig, Freeze, Loss, LrSchedule, StepReport, TrainConfig, TrainError, Trainer};

fn d_lr() -> f64 { 8e-5 }
fn d_batch() -> usize { 8 }
fn d_beta1() -> f64 { 0.9 }
fn d_beta2() -> f64 { 0.98 }
fn d_clip() -> Option<f64> { Some(1.0) }
fn d_epochs() -> f64 { 1.0 }
fn d_val() -> f64 { 0.05 }
fn d_val_windows() -> usize { 64 }
fn d_bad() -> f64 { 0.5 }

/// Optimizer and schedule params, flattened into each training kind's params.
#[derive(Debug, Clone, Deserialize)]
pub struct OptimParams {
    #[serde(default = "d_lr")]
    pub lr: f64,
    #[serde(default)]
    pub warmup: u64,
    #[serde(default)]
    pub min_lr_ratio: f64,
    /// Examples (sequences or pairs) per optimizer step.
    #[serde(default = "d_batch")]
    pub batch: usize,
    /// Examples per forward pass (default: the whole batch).
    pub micro_batch: Option<usize>,
    /// Optimizer steps; else from `tokens`, else `epochs` over the data.
    pub steps: Option<u64>,
    pub tokens: Option<u64>,
    #[serde(default = "d_epochs")]
    pub epochs: f64,
    #[serde(default = "d_beta1")]
    pub beta1: f64,
    #[serde(default = "d_beta2")]
    pub beta2: f64,
    #[serde(default)]
    pub weight_decay: f64,
    #[serde(default = "d_clip")]
    pub max_grad_norm: Option<f64>,
    #[serde(default)]
    pub checkpoint_every: u64,
    #[serde(default)]
    pub freeze: Freeze,
    /// Fraction of rows held out for validation metrics.
    #[serde(default = "d_val")]
    pub validation: f64,
    /// Held-out windows (or examples) the before/after validation metrics are computed on: a
    /// forward pass of teacher and student each, twice per stage, which dominates small CPU runs.
    #[serde(default = "d_val_windows")]
    pub val_windows: usize,
    #[serde(default = "d_bad")]
    pub max_bad_fraction: f64,
}

impl Default for OptimParams {
    fn default() -> Self {
        serde_json::from_value(serde_json::json!({})).expect("every optimizer param has a default")
    }
}

impl OptimParams {
    /// Checked when the manifest is planned, not after the models have loaded: a step's
    /// micro-batches are dealt to `gpus` devices (`resources.gpus`), so both must divide.
    pub fn check_split(&self, gpus: usize) -> Result<(), ParamError> {
        let micro = self.micro_batch.unwrap_or(self.batch);
        crate::train::batch_split(self.batch, micro, gpus.max(1), &format!("resources.gpus = {gpus}"))
            .map_err(|(param, message)| ParamError::new(format!("params.{param}"), message))
    }

    /// `tokens_per_example` converts a `tokens` budget into steps.
    pub fn config(&self, examples: usize, tokens_per_example: usize, seed: u64, checkpoint_dir: PathBuf) -> TrainConfig {
        let per_step = (self.batch * tokens_per_example.max(1)) as u64;
        let steps = self.steps.unwrap_or_else(|| match self.tokens {
            Some(t) => t.div_ceil(per_step),
            None => ((examples as f64 * self.epochs) / self.batch as f64).ceil() as u64,
        });
        let steps = steps.max(1);
        TrainConfig {
            steps,
            batch: self.batch,
            micro_batch: self.micro_batch.unwrap_or(self.batch),
            schedule: LrSchedule { lr: self.lr, warmup: self.warmup, total: steps, min_ratio: self.min_lr_ratio },
            adamw: AdamWConfig { beta1: self.beta1, beta2: self.beta2, eps: 1e-8, weight_decay: self.weight_decay },
            max_grad_norm: self.max_grad_norm,
            seed,
            checkpoint_every: self.checkpoint_every,
            checkpoint_dir: Some(checkpoint_dir),
            freeze: self.freeze.clone(),
        }
    }
}

pub fn data_err(e: DataError) -> StageError {
    StageError::Failed(e.to_string())
}

pub fn train_err(e: TrainError) -> StageError {
    match e {
        TrainError::NonFinite { step, what } => StageError::NonFinite { step, what },
        TrainError::Interrupted(_) => StageError::Interrupted,
        other => StageError::other(other),
    }
}

/// Where a stage's resumable checkpoints live: the workspace, keyed by everything that makes
/// the run (params, seed, input paths, which are content-addressed), so only the same run
/// resumes.
pub fn checkpoint_dir(ctx: &StageContext) -> PathBuf {
    let key = format!("{}|{}|{}|{:?}", ctx.spec.kind, ctx.spec.params, ctx.spec.seed, ctx.inputs());
    let hash = crate::data::fnv1a(key.as_bytes());
    ctx.workspace().join("checkpoints").join(format!("{}-{hash:016x}", ctx.spec.name))
}

/// Runs `trainer` to the end. Each step's metrics go to the run record and a line to the
/// stage log as the step ends (a killed run keeps what it did); on a terminal, a progress bar
/// on stderr shows step, loss and tokens/s.
pub fn run_trainer(ctx: &mut StageContext, trainer: &mut Trainer<Hybrid>, loss_fn: impl Fn(&Hybrid, &[usize]) -> Result<Loss, TrainError> + Sync) -> Result<(), StageError> {
    if trainer.resumed {
        ctx.log(format!("resuming from step {}", trainer.state.step));
    }
    let total = trainer.config.steps;
    let bar = progress_bar(&ctx.spec.name, total, trainer.state.step);
    // `stop` is asked before each step and cannot borrow `ctx` while `on_step` does: the step
    // callback refreshes the flag it reads.
    let stop = Cell::new(ctx.cancelled());
    let mut failed: Option<StageError> = None;
    let result = trainer.run(
        loss_fn,
        |r| {
            if let Err(e) = record_step(ctx, r, total) {
                failed = Some(e);
                return Err(TrainError::Interrupted(r.step)); // ends the run; `failed` says why
            }
            if let Some(bar) = &bar {
                bar.set_position(r.step);
                bar.set_message(format!("loss {:.4} {:.0} tok/s", r.loss, r.tokens_per_s));
            }
            stop.set(ctx.cancelled());
            Ok(())
        },
        || stop.get(),
    );
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    match failed {
        Some(e) => Err(e),
        None => result.map_err(train_err),
    }
}

fn record_step(ctx: &mut StageContext, r: &StepReport, total: u64) -> Result<(), StageError> {
    ctx.step_metric(r.step, "loss", r.loss)?;
    for (name, v) in &r.parts {
        ctx.step_metric(r.step, name, *v)?;
    }
    ctx.step_metric(r.step, "lr", r.lr)?;
    ctx.step_metric(r.step, "grad_norm", r.grad_norm)?;
    ctx.step_metric(r.step, "tokens_per_s", r.tokens_per_s)?;
    let parts: String = r.parts.iter().filter(|(n, _)| !n.starts_with("loss")).map(|(n, v)| format!(" {n} {v:.4}")).collect();
    ctx.log(format!("step {}/{total} loss {:.4}{parts} lr {:.2e} grad {:.3} {:.0} tok/s", r.step, r.loss, r.lr, r.grad_norm, r.tokens_per_s));
    Ok(())
}

/// A bar on stderr when it is a terminal (logs and CI get the per-step log lines only).
fn progress_bar(name: &str, total: u64, at: u64) -> Option<ProgressBar> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let style = ProgressStyle::with_template("{prefix} [{bar:30}] step {pos}/{len} {msg} (eta {eta})").ok()?.progress_chars("=> ");
    let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr()).with_style(style).with_prefix(name.to_string());
    bar.set_position(at);
    Some(bar)
}

/// The trained model as a folder: the student folder's files (config, tokenizer, mamba
/// config) with new weights.
/// A finished training run's model and the checkpoints that led to it.
pub struct Trained {
    pub model: Hybrid,
    checkpoints: Option<PathBuf>,
}

impl Trained {
    pub fn new(trainer: Trainer<Hybrid>) -> Self {
        let checkpoints = trainer.config.checkpoint_dir.clone();
        Self { model: trainer.into_model(), checkpoints }
    }

    /// Writes the model folder, and only then drops the checkpoints: until the folder
    /// exists, a rerun can still resume from them.
    pub fn save(self, student_dir: &Path, out: &Path) -> Result<(), StageError> {
        write_model(student_dir, out, &self.model)?;
        if let Some(dir) = self.checkpoints {
            let _ = std::fs::remove_dir_all(dir);
        }
        Ok(())
    }
}

pub fn write_model(student_dir: &Path, out: &Path, model: &Hybrid) -> Result<(), StageError> {
    std::fs::create_dir_all(out).map_err(|e| StageError::io(out, e))?;
    let entries = std::fs::read_dir(student_dir).map_err(|e| StageError::io(student_dir, e))?;
    for entry in entries.filter_map(Result::ok) {
        let name = entry.file_name().to_string_lossy().to_string();
        if name.ends_with(".safetensors") || name.ends_with(".safetensors.index.json") || !entry.path().is_file() {
            continue;
        }
        std::fs::copy(entry.path(), out.join(&name)).map_err(|e| StageError::io(out.join(&name), e))?;
    }
    save_weights(model, &out.join("model.safetensors")).map_err(train_err)
}

/// Padded lengths on a GPU are rounded up to a multiple of this: each new shape compiles new
/// kernels there (the H200's SFT spent its first steps at 62 tokens/s compiling), while the CPU
/// runs any shape at once and would only pay for the padding.
const GPU_LENGTH_MULTIPLE: usize = 64;

/// Right-pads token rows into a batch: inputs, next-token targets and a target mask.
///
/// # Shapes
/// - `rows`: `[batch][len_i]` tokens, `masks`: `[batch][len_i]` (true = the token is a target)
/// - returns inputs `[batch, len - 1]`, targets `[batch, len - 1]`, mask `[batch, len - 1]`
pub fn batch_tensors(rows: &[&[u32]], masks: &[&[bool]], pad: u32, device: &burn::tensor::Device) -> (Tensor<2, Int>, Tensor<2, Int>, Tensor<2>) {
    let longest = rows.iter().map(|r| r.len()).max().unwrap_or(2).max(2);
    let len = if *device == burn::tensor::Device::flex() { longest } else { (longest - 1).next_multiple_of(GPU_LENGTH_MULTIPLE) + 1 };
    let (mut inputs, mut targets, mut mask) = (Vec::new(), Vec::new(), Vec::new());
    for (r, m) in rows.iter().zip(masks) {
        for i in 0..len - 1 {
            inputs.push(*r.get(i).unwrap_or(&pad) as i64);
            targets.push(*r.get(i + 1).unwrap_or(&pad) as i64);
            mask.push(if m.get(i + 1).copied().unwrap_or(false) { 1.0f32 } else { 0.0 });
        }
    }
    let b = rows.len();
    (
        Tensor::from_data(TensorData::new(inputs, [b, len - 1]), device),
        Tensor::from_data(TensorData::new(targets, [b, len - 1]), device),
        Tensor::from_data(TensorData::new(mask, [b, len - 1]), device),
    )
}

#[cfg(test)]
pub(crate) mod testing {
    //! Running a stage kind on a `StageContext` without the engine.
    use std::collections::BTreeMap;
    use std::path::{Path, PathBuf};
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;

    use distill_engine::stage::{Stage, StageContext, StageError, StageSpec};

    /// Runs `stage` with `params`; `inputs` maps references to paths. Returns the metrics, the
    /// output folder and the step-metrics file's lines.
    pub fn run_stage(stage: &dyn Stage, root: &Path, params: serde_json::Value, inputs: &[(&str, PathBuf)]) -> Result<(BTreeMap<String, f64>, PathBuf, Vec<String>), StageError> {
        let spec = StageSpec { name: "t".into(), kind: stage.kind().into(), params, device: "cpu".into(), dtype: "f32".into(), ..StageSpec::default() };
        stage.validate(&spec).map_err(|e| StageError::Failed(e.to_string()))?;
        let out = root.join("out");
        std::fs::create_dir_all(&out).unwrap();
        let inputs = inputs.iter().map(|(k, v)| (k.to_string(), v.clone())).collect();
        let steps = root.join("steps.jsonl");
        let mut ctx = StageContext::new(&spec, "run".into(), inputs, out.clone(), root.join("log"), steps.clone(), root.join("ws"), Arc::new(AtomicBool::new(false))).unwrap();
        stage.run(&mut ctx)?;
        let (metrics, _) = ctx.finish();
        let lines = std::fs::read_to_string(&steps).unwrap_or_default().lines().map(String::from).collect();
        Ok((metrics, out, lines))
    }

    pub fn write_jsonl(path: &Path, rows: &[serde_json::Value]) {
        let body: String = rows.iter().map(|r| r.to_string() + "\n").collect();
        std::fs::write(path, body).unwrap();
    }
}
