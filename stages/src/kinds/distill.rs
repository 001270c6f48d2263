//! `distill`: the student learns the frozen teacher's next-token distributions on packed text
//! (METHOD.md section 2): loss = `ce_weight` * CE + `kl_weight` * KL(teacher || student).
//!
//! ```toml
//! [stages.distill50]
//! kind = "distill"
//! params = { teacher = "@teacher", student = "@hybrid50", data = "@corpus/train", tokens = 2_000_000,
//!            seq_len = 512, batch = 64, lr = 8e-5, warmup = 50, kl_weight = 1.0, ce_weight = 0.0,
//!            freeze = "non_mamba" }
//! ```

use std::collections::BTreeMap;

use burn::tensor::{Int, Tensor, TensorData};
use distill_engine::stage::{ParamError, Stage, StageContext, StageError, StageSpec};
use serde::Deserialize;

use super::params::{check_runtime, failed, runtime_env, parse_split, reference};
use super::ranks::DataParallel;
use super::training::{checkpoint_dir, data_err, run_trainer, train_err, OptimParams, Trained};
use crate::data::{in_validation, pack_texts, parse_messages, read_rows, BadRows};
use crate::hybrid::Hybrid;
use crate::losses::{cross_entropy, kl_divergence, KlDirection, KlOptions, KlReduction};
use crate::runtime::Runtime;
use crate::teacher::LoadedModel;
use crate::text::TextTokenizer;
use crate::train::{device_of, Copies, Loss, TrainableLm, Trainer};

fn one() -> f64 { 1.0 }
fn d_seq() -> usize { 512 }

#[derive(Debug, Deserialize)]
struct Params {
    teacher: String,
    student: String,
    data: String,
    #[serde(default = "d_seq")]
    seq_len: usize,
    #[serde(default = "one")]
    kl_weight: f64,
    #[serde(default)]
    ce_weight: f64,
    #[serde(default = "one")]
    temperature: f64,
    #[serde(default)]
    kl_direction: KlDirection,
    #[serde(default)]
    kl_reduction: KlReduction,
    /// `[i, n]`: train on the i-th of n interleaved slices of the training rows (the stepwise
    /// schedule of METHOD.md 2 gives each step its own 1/L of the data).
    shard: Option<(usize, usize)>,
    /// The shared optimizer params, parsed from the same table (`parse_split`).
    #[serde(skip)]
    optim: OptimParams,
}

fn check(params: &serde_json::Value) -> Result<Params, ParamError> {
    let (mut p, optim): (Params, OptimParams) = parse_split(params)?;
    p.optim = optim;
    for (path, v) in [("params.teacher", &p.teacher), ("params.student", &p.student), ("params.data", &p.data)] {
        reference(path, v)?;
    }
    if p.seq_len < 2 || p.optim.batch == 0 {
        return Err(ParamError::new("params.seq_len", "seq_len must be at least 2 and batch at least 1"));
    }
    if let Some((i, n)) = p.shard.filter(|(i, n)| i >= n) {
        return Err(ParamError::new("params.shard", format!("slice {i} of {n} does not exist: give [i, n] with i < n")));
    }
    if p.temperature <= 0.0 {
        return Err(ParamError::new("params.temperature", "must be positive"));
    }
    Ok(p)
}

/// Each row's text: `text`, or `messages` through the chat template.
pub(super) fn row_texts(rows: &[serde_json::Value], tok: &TextTokenizer, bad: &mut BadRows) -> crate::Result<Vec<String>> {
    let mut out = Vec::new();
    for row in rows {
        if let Some(t) = row.get("text").and_then(|t| t.as_str()) {
            out.push(t.to_string());
        } else {
            match parse_messages(row.get("messages")) {
                Ok(m) => out.push(tok.apply_chat_template(&m, false)?),
                Err(reason) => {
                    bad.seen();
                    bad.bad(reason);
                }
            }
        }
    }
    Ok(out)
}

pub struct DistillStage;

/// Windows `[n][seq + 1]` as inputs and targets on `device`.
pub(super) fn windows(w: &[&Vec<u32>], device: &burn::tensor::Device) -> (Tensor<2, Int>, Tensor<2, Int>) {
    let s = w[0].len() - 1;
    let ids: Vec<i64> = w.iter().flat_map(|r| r.iter().map(|&t| t as i64)).collect();
    let all: Tensor<2, Int> = Tensor::from_data(TensorData::new(ids, [w.len(), s + 1]), device);
    (all.clone().slice([0..w.len(), 0..s]), all.slice([0..w.len(), 1..s + 1]))
}

/// Mean token-level forward KL of `student` to `teacher` on `val` (no gradients).
pub(super) fn validate(student: &Hybrid, teacher: &LoadedModel, val: &[Vec<u32>]) -> Validation {
    let device = teacher.runtime.device.clone();
    let opts = KlOptions { reduction: KlReduction::TokenMean, ..KlOptions::default() };
    let (mut sum, mut n, mut same, mut positions) = (0.0, 0usize, 0i64, 0usize);
    for chunk in val.chunks(8) {
        let refs: Vec<&Vec<u32>> = chunk.iter().collect();
        let (input, _) = windows(&refs, &device);
        let [b, s] = input.dims();
        let t = teacher.model.train_logits(input.clone(), &teacher.rope);
        let st = student.train_logits(input, &teacher.rope);
        same += st.clone().argmax(2).equal(t.clone().argmax(2)).int().sum().into_scalar::<i64>();
        positions += b * s;
        let kl = kl_divergence(st.cast(burn::tensor::DType::F32), t.cast(burn::tensor::DType::F32), Tensor::ones([b, s], &device), &opts);
        sum += kl.into_data().convert::<f32>().try_to_vec::<f32>().map_or(f64::NAN, |v| v[0] as f64) * b as f64;
        n += b;
    }
    Validation { kl: sum / n.max(1) as f64, agreement: same as f64 / positions.max(1) as f64 }
}

/// A student beside its teacher on held-out windows.
#[derive(Debug, Clone, Copy)]
pub(super) struct Validation {
    /// KL(teacher || student) per token.
    pub kl: f64,
    /// The share of positions where both pick the same next token: what a draft's greedy
    /// proposals would have accepted there, had the teacher verified them.
    pub agreement: f64,
}

impl Validation {
    /// The log line's `KL a -> b, agreement c -> d` and the metrics `val_kl_before`, `val_kl`,
    /// `val_agreement_before`, `val_agreement`.
    pub(super) fn record(ctx: &mut StageContext, before: Validation, after: Validation, to: &str) -> Result<(), StageError> {
        ctx.log(format!("validation KL to {to}: {:.5} -> {:.5}; same next token {:.3} -> {:.3}", before.kl, after.kl, before.agreement, after.agreement));
        ctx.metric("val_kl_before", before.kl)?;
        ctx.metric("val_kl", after.kl)?;
        ctx.metric("val_agreement_before", before.agreement)?;
        ctx.metric("val_agreement", after.agreement)?;
        Ok(())
    }
}

/// Packed training and validation windows of a text dataset (`{"text"}` or `{"messages"}`
/// rows), split by content hash; `shard = (i, n)` keeps the i-th of n interleaved slices of the
/// training rows. Validation falls back to training windows on tiny corpora and keeps at most
/// `optim.val_windows`. `what` names the data in the bad-rows error.
pub(super) fn packed_windows(
    ctx: &StageContext,
    data: &str,
    tok: &TextTokenizer,
    seq_len: usize,
    optim: &OptimParams,
    shard: Option<(usize, usize)>,
    what: &str,
) -> Result<(Vec<Vec<u32>>, Vec<Vec<u32>>, BadRows), StageError> {
    let mut bad = BadRows::default();
    let rows = read_rows(ctx.input(data)?, &mut bad).map_err(data_err)?;
    let seed = ctx.spec.seed;
    let (val_rows, train_rows): (Vec<_>, Vec<_>) = rows.into_iter().partition(|r| in_validation(r, optim.validation, seed));
    let train_rows: Vec<_> = match shard {
        Some((i, n)) => train_rows.into_iter().enumerate().filter(|(k, _)| k % n == i).map(|(_, r)| r).collect(),
        None => train_rows,
    };
    let texts = row_texts(&train_rows, tok, &mut bad).map_err(failed)?;
    let train = pack_texts(&texts, tok, seq_len, &mut bad).map_err(failed)?;
    bad.check(what, optim.max_bad_fraction).map_err(data_err)?;
    let val_texts = row_texts(&val_rows, tok, &mut BadRows::default()).map_err(failed)?;
    let mut val = pack_texts(&val_texts, tok, seq_len, &mut BadRows::default()).map_err(failed)?;
    if val.is_empty() {
        val = train.iter().take(8).cloned().collect(); // tiny corpora: check on training windows
    }
    val.truncate(optim.val_windows.max(1));
    Ok((train, val, bad))
}

/// The distillation loss of one micro-batch, shared by `distill` and `draft`:
/// `kl_weight` * KL(target || model) + `ce_weight` * next-token CE on windows of `train`, the
/// frozen `target`'s logits computed alongside.
pub(super) struct KdLoss<'a> {
    pub target: &'a LoadedModel,
    /// The target model where each micro-batch runs (data-parallel training copies it there).
    pub target_copies: Copies<'a, Hybrid>,
    /// The rope the trained model runs with.
    pub rope: &'a crate::llama::Rope,
    pub train: &'a [Vec<u32>],
    pub kl: KlOptions,
    pub kl_weight: f64,
    pub ce_weight: f64,
}

impl KdLoss<'_> {
    pub fn micro_batch(&self, model: &Hybrid, ids: &[usize]) -> crate::train::TrainResult<Loss> {
        // The micro-batch runs where `model` is: the main device or a replica's.
        let device = &device_of(model);
        let target = self.target_copies.on(device);
        let w: Vec<&Vec<u32>> = ids.iter().map(|&i| &self.train[i]).collect();
        let (input, labels) = windows(&w, device);
        let [b, s] = input.dims();
        let t_logits = target.train_logits(input.clone(), &self.target.rope).cast(burn::tensor::DType::F32);
        let s_logits = model.train_logits(input.autodiff(), self.rope).cast(burn::tensor::DType::F32);
        let mask = Tensor::<2>::ones([b, s], &device.clone().autodiff());
        let kl = kl_divergence(s_logits.clone(), t_logits.autodiff(), mask.clone(), &self.kl);
        let ce = cross_entropy(s_logits, labels.autodiff(), mask);
        let total = kl.clone() * self.kl_weight + ce.clone() * self.ce_weight;
        Ok(Loss { total, parts: vec![("loss/kl", kl.detach()), ("loss/ce", ce.detach())], tokens: b * s })
    }
}

impl Stage for DistillStage {
    fn kind(&self) -> &'static str { "distill" }
    fn version(&self) -> u32 { 1 }
    fn summary(&self) -> &'static str { "distill a frozen teacher into a student (KL + CE on packed text)" }

    fn validate(&self, spec: &StageSpec) -> Result<(), ParamError> {
        check(&spec.params)?.optim.check_split(spec.gpus)?;
        check_runtime(spec)
    }

    fn environment(&self, spec: &StageSpec) -> BTreeMap<String, String> {
        runtime_env(spec)
    }

    fn run(&self, ctx: &mut StageContext) -> Result<(), StageError> {
        let p = check(&ctx.spec.params).map_err(|e| StageError::Failed(e.to_string()))?;
        let runtime = Runtime::parse(&ctx.spec.device, Some(&ctx.spec.dtype)).map_err(failed)?;
        let student_dir = ctx.input(&p.student)?.to_path_buf();
        let teacher = LoadedModel::open(ctx.input(&p.teacher)?, runtime.clone()).map_err(failed)?;
        let student = LoadedModel::open(&student_dir, runtime.clone()).map_err(failed)?;
        let (train, val, bad) = packed_windows(ctx, &p.data, &teacher.tokenizer, p.seq_len, &p.optim, p.shard, "distill data")?;
        let seed = ctx.spec.seed;
        ctx.log(format!("{} training windows of {} tokens, {} validation; bad rows {:?}", train.len(), p.seq_len, val.len(), bad.counts));
        for (reason, n) in &bad.counts {
            ctx.metric(&format!("bad_rows/{reason}"), *n as f64)?;
        }
        let before = validate(&student.model, &teacher, &val);
        let config = p.optim.config(train.len(), p.seq_len, seed, checkpoint_dir(ctx));
        let mut dp = DataParallel::setup(ctx)?;
        let replicas = dp.replicas.clone();
        let mut trainer = dp.apply(Trainer::new(student.model, config, train.len(), runtime.dtype, &runtime.device).map_err(train_err)?);
        let kd = KdLoss {
            target: &teacher,
            target_copies: Copies::new(&teacher.model, &replicas),
            rope: &teacher.rope,
            train: &train,
            kl: KlOptions { direction: p.kl_direction, reduction: p.kl_reduction, temperature: p.temperature },
            kl_weight: p.kl_weight,
            ce_weight: p.ce_weight,
        };
        let loss_fn = |model: &Hybrid, ids: &[usize]| kd.micro_batch(model, ids);
        run_trainer(ctx, &mut trainer, loss_fn)?;
        if dp.is_secondary() {
            return Ok(()); // rank 0 validates, saves and records
        }
        dp.finish()?;
        let trained = Trained::new(trainer);
        let model = &trained.model;
        let after = validate(model, &teacher, &val);
        Validation::record(ctx, before, after, "the teacher")?;
        trained.save(&student_dir, ctx.out_dir())?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::fixtures::{tiny_config, write_model_dir};
    use crate::kinds::training::testing::{run_stage, write_jsonl};

    #[test]
    fn distill_halves_the_validation_kl_to_the_teacher() {
        let tmp = tempfile::tempdir().unwrap();
        let (teacher, student, data) = (tmp.path().join("teacher"), tmp.path().join("student"), tmp.path().join("corpus.jsonl"));
        write_model_dir(&teacher, &tiny_config(32, 2));
        write_model_dir(&student, &tiny_config(32, 1));
        let words = ["the cat sat", "on a mat", "dogs run far", "birds sing", "a big red sun"];
        let rows: Vec<serde_json::Value> = (0..40).map(|i| serde_json::json!({ "text": format!("{} and {}.", words[i % 5], words[(i * 3 + 1) % 5]) })).collect();
        write_jsonl(&data, &rows);
        let params = serde_json::json!({ "teacher": "@teacher", "student": "@student", "data": "@corpus",
            "seq_len": 24, "batch": 4, "micro_batch": 2, "steps": 30, "lr": 1e-2, "warmup": 3, "validation": 0.2 });
        let inputs = [("@teacher", teacher), ("@student", student), ("@corpus", data)];
        let (m, out, steps) = run_stage(&DistillStage, tmp.path(), params, &inputs).unwrap();
        eprintln!("distill metrics: {m:?}");
        assert!(m["val_kl"] <= 0.5 * m["val_kl_before"], "{m:?}");
        assert!(out.join("model.safetensors").is_file() && out.join("tokenizer.json").is_file());
        for name in ["\"loss\"", "\"loss/kl\"", "\"loss/ce\"", "\"lr\"", "\"grad_norm\"", "\"tokens_per_s\""] {
            assert_eq!(steps.iter().filter(|l| l.contains(&format!("\"name\":{name}"))).count(), 30, "{name}");
        }
        // The written student loads back.
        LoadedModel::open(&out, Runtime::cpu()).unwrap();
        // Issue 5: a typo is an error naming the param and the nearest valid one.
        let e = check(&serde_json::json!({ "teacher": "@t", "student": "@s", "data": "@d", "lr_warmup": 5 })).unwrap_err();
        assert_eq!((e.path.as_str(), e.message.as_str()), ("params.lr_warmup", "unknown param; did you mean `warmup`?"));
        let e = check(&serde_json::json!({ "teacher": "@t", "student": "@s", "data": "@d", "shard": [2, 2] })).unwrap_err();
        assert_eq!(e.path, "params.shard");
    }
}
