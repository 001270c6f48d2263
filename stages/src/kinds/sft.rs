//! `sft`: cross entropy on assistant tokens of chat data, plus optional KL to a frozen teacher
//! (the paper's Eq. 2: `alpha` * CE + `beta` * KL(teacher || student)).
//!
//! ```toml
//! [stages.sft]
//! kind = "sft"
//! params = { student = "@distill50", data = "@answers", teacher = "@teacher", alpha = 1.0, beta = 0.1,
//!            lr = 2e-5, batch = 64, max_len = 2048 }
//! ```

use std::collections::BTreeMap;

use burn::tensor::DType;
use distill_engine::stage::{ParamError, Stage, StageContext, StageError, StageSpec};
use serde::Deserialize;

use super::params::{check_runtime, failed, runtime_env, parse_split, reference};
use super::ranks::DataParallel;
use super::training::{batch_tensors, checkpoint_dir, data_err, run_trainer, train_err, OptimParams, Trained};
use crate::data::{chat_example, in_validation, parse_messages, read_rows, BadRows, Example};
use crate::hybrid::Hybrid;
use crate::losses::{cross_entropy, kl_divergence, KlOptions, KlReduction};
use crate::runtime::Runtime;
use crate::teacher::LoadedModel;
use crate::train::{device_of, Copies, Loss, TrainableLm, Trainer};

fn one() -> f64 { 1.0 }
fn d_len() -> usize { 2048 }

#[derive(Debug, Deserialize)]
struct Params {
    student: String,
    data: String,
    teacher: Option<String>,
    #[serde(default = "one")]
    alpha: f64,
    #[serde(default)]
    beta: f64,
    #[serde(default)]
    kl_reduction: KlReduction,
    #[serde(default = "d_len")]
    max_len: usize,
    #[serde(default = "d_len")]
    max_prompt: usize,
    /// The shared optimizer params, parsed from the same table (`parse_split`).
    #[serde(skip)]
    optim: OptimParams,
}

fn check(params: &serde_json::Value) -> Result<Params, ParamError> {
    let (mut p, optim): (Params, OptimParams) = parse_split(params)?;
    p.optim = optim;
    reference("params.student", &p.student)?;
    reference("params.data", &p.data)?;
    if let Some(t) = &p.teacher {
        reference("params.teacher", t)?;
    }
    if p.beta > 0.0 && p.teacher.is_none() {
        return Err(ParamError::new("params.beta", "a KL term (beta > 0) needs `teacher`"));
    }
    Ok(p)
}

/// Chat rows as examples with assistant masks; bad rows counted.
pub(super) fn chat_examples(rows: &[serde_json::Value], m: &LoadedModel, max_prompt: usize, max_len: usize, bad: &mut BadRows) -> crate::Result<Vec<Example>> {
    let mut out = Vec::new();
    for row in rows {
        bad.seen();
        let ex = match parse_messages(row.get("messages")) {
            Ok(msgs) => chat_example(&m.tokenizer, &msgs, max_prompt, max_len)?,
            Err(r) => Err(r),
        };
        match ex {
            Ok(e) => out.push(e),
            Err(reason) => bad.bad(reason),
        }
    }
    Ok(out)
}

/// Mean assistant-token CE of `model` on `examples` (no gradients).
fn assistant_loss(model: &Hybrid, m: &LoadedModel, examples: &[Example]) -> f64 {
    let (mut sum, mut n) = (0.0, 0.0);
    for chunk in examples.chunks(8) {
        let rows: Vec<&[u32]> = chunk.iter().map(|e| e.tokens.as_slice()).collect();
        let masks: Vec<&[bool]> = chunk.iter().map(|e| e.mask.as_slice()).collect();
        let (input, target, mask) = batch_tensors(&rows, &masks, m.tokenizer.pad_id(), &m.runtime.device);
        let count = mask.clone().sum().into_scalar::<f32>() as f64;
        let ce = cross_entropy(model.train_logits(input, &m.rope).cast(DType::F32), target, mask);
        sum += ce.into_scalar::<f32>() as f64 * count;
        n += count;
    }
    sum / f64::max(n, 1.0)
}

pub struct SftStage;

impl Stage for SftStage {
    fn kind(&self) -> &'static str { "sft" }
    fn version(&self) -> u32 { 1 }
    fn summary(&self) -> &'static str { "supervised fine-tuning on assistant tokens, with optional KL to a teacher" }

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
        let student = LoadedModel::open(&student_dir, runtime.clone()).map_err(failed)?;
        let teacher = match &p.teacher {
            Some(t) => Some(LoadedModel::open(ctx.input(t)?, runtime.clone()).map_err(failed)?),
            None => None,
        };
        let mut bad = BadRows::default();
        let rows = read_rows(ctx.input(&p.data)?, &mut bad).map_err(data_err)?;
        let seed = ctx.spec.seed;
        let (val_rows, train_rows): (Vec<_>, Vec<_>) = rows.into_iter().partition(|r| in_validation(r, p.optim.validation, seed));
        let train = chat_examples(&train_rows, &student, p.max_prompt, p.max_len, &mut bad).map_err(failed)?;
        bad.check("sft data", p.optim.max_bad_fraction).map_err(data_err)?;
        let mut val = chat_examples(&val_rows, &student, p.max_prompt, p.max_len, &mut BadRows::default()).map_err(failed)?;
        if val.is_empty() {
            val = train.iter().take(8).cloned().collect();
        }
        val.truncate(p.optim.val_windows.max(1));
        for (reason, n) in &bad.counts {
            ctx.metric(&format!("bad_rows/{reason}"), *n as f64)?;
        }
        ctx.log(format!("{} training conversations, {} validation; bad rows {:?}", train.len(), val.len(), bad.counts));
        let before = assistant_loss(&student.model, &student, &val);
        let mean_len = train.iter().map(|e| e.tokens.len()).sum::<usize>() / train.len().max(1);
        let config = p.optim.config(train.len(), mean_len, seed, checkpoint_dir(ctx));
        let mut dp = DataParallel::setup(ctx)?;
        let replicas = dp.replicas.clone();
        let mut trainer = dp.apply(Trainer::new(student.model.clone(), config, train.len(), runtime.dtype, &runtime.device).map_err(train_err)?);
        let teacher_copies = teacher.as_ref().map(|t| Copies::new(&t.model, &replicas));
        let kl_opts = KlOptions { reduction: p.kl_reduction, ..KlOptions::default() };
        let pad = student.tokenizer.pad_id();
        let loss_fn = |model: &Hybrid, ids: &[usize]| {
            let rows: Vec<&[u32]> = ids.iter().map(|&i| train[i].tokens.as_slice()).collect();
            let masks: Vec<&[bool]> = ids.iter().map(|&i| train[i].mask.as_slice()).collect();
            let here = device_of(model); // a data-parallel replica's, or the main device
            let (input, target, mask) = batch_tensors(&rows, &masks, pad, &here);
            let tokens = rows.iter().map(|r| r.len()).sum();
            let logits = model.train_logits(input.clone().autodiff(), &student.rope).cast(DType::F32);
            let ce = cross_entropy(logits.clone(), target.autodiff(), mask.clone().autodiff());
            let mut total = ce.clone() * p.alpha;
            let mut parts = vec![("loss/ce", ce.detach())];
            if let (Some(t), true) = (&teacher, p.beta > 0.0) {
                let t_logits = teacher_copies.as_ref().expect("with the teacher").on(&here).train_logits(input, &t.rope).cast(DType::F32).autodiff();
                let kl = kl_divergence(logits, t_logits, mask.autodiff(), &kl_opts);
                total = total + kl.clone() * p.beta;
                parts.push(("loss/kl", kl.detach()));
            }
            Ok(Loss { total, parts, tokens })
        };
        run_trainer(ctx, &mut trainer, loss_fn)?;
        if dp.is_secondary() {
            return Ok(()); // rank 0 validates, saves and records
        }
        dp.finish()?;
        let trained = Trained::new(trainer);
        let model = &trained.model;
        let after = assistant_loss(model, &student, &val);
        ctx.log(format!("assistant-token loss: {before:.4} -> {after:.4}"));
        ctx.metric("val_loss_before", before)?;
        ctx.metric("val_loss", after)?;
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
    fn sft_lowers_assistant_token_loss_and_counts_bad_rows() {
        let tmp = tempfile::tempdir().unwrap();
        let (teacher, student, data) = (tmp.path().join("teacher"), tmp.path().join("student"), tmp.path().join("chat.jsonl"));
        write_model_dir(&teacher, &tiny_config(32, 1));
        write_model_dir(&student, &tiny_config(32, 1));
        let mut rows: Vec<serde_json::Value> = (0..24)
            .map(|i| serde_json::json!({ "messages": [{ "role": "user", "content": format!("add {i} and 1") }, { "role": "assistant", "content": format!("{}", i + 1) }] }))
            .collect();
        rows.push(serde_json::json!({ "messages": [{ "role": "wizard", "content": "x" }] }));
        rows.push(serde_json::json!({ "messages": [{ "role": "user", "content": "" }] }));
        write_jsonl(&data, &rows);
        let params = serde_json::json!({ "student": "@student", "teacher": "@teacher", "data": "@chat", "beta": 0.1,
            "batch": 4, "steps": 25, "lr": 1e-2, "warmup": 2, "validation": 0.0 });
        let inputs = [("@teacher", teacher), ("@student", student), ("@chat", data)];
        let (m, out, _) = run_stage(&SftStage, tmp.path(), params, &inputs).unwrap();
        eprintln!("sft metrics: {m:?}");
        assert!(m["val_loss"] < 0.5 * m["val_loss_before"], "{m:?}");
        assert_eq!((m["bad_rows/bad_role"], m["bad_rows/empty_text"]), (1.0, 1.0));
        assert!(out.join("model.safetensors").is_file());
        assert_eq!(check(&serde_json::json!({ "student": "@s", "data": "@d", "max_grad_nrom": 1.0 })).unwrap_err().path, "params.max_grad_nrom");
    }
}
