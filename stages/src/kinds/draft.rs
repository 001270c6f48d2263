//! `draft`: the paper's draft model for speculative decoding: the teacher's layers `[0, last]`
//! (or `layers`) with its embeddings, final norm and head, as a Llama folder sharing the
//! teacher's tokenizer; fine-tuned to the teacher's next-token distributions when `data` is
//! given (the `distill` loss: `kl_weight` * KL(teacher || draft) + `ce_weight` * CE). With
//! `target = "@student"` it learns that model's distributions instead: what speculative decoding
//! accepts is the verifier's choice, and a student still far from its teacher is the verifier.
//!
//! ```toml
//! [stages.draft]
//! kind = "draft"
//! params = { teacher = "@teacher", layers = [0, 31], data = "@corpus/train", epochs = 3, lr = 1e-4 }
//! ```

use std::collections::BTreeMap;

use distill_engine::stage::{ParamError, Stage, StageContext, StageError, StageSpec};
use serde::Deserialize;

use super::distill::{packed_windows, validate, KdLoss, Validation};
use super::params::{check_runtime, failed, runtime_env, parse, parse_value, reference};
use super::training::{checkpoint_dir, run_trainer, train_err, OptimParams, Trained};
use crate::hybrid::Hybrid;
use crate::losses::KlOptions;
use crate::runtime::Runtime;
use crate::speculative::write_draft_dir;
use crate::teacher::LoadedModel;
use crate::train::{Copies, Trainer};

fn one() -> f64 { 1.0 }
fn d_seq() -> usize { 512 }

#[derive(Debug, Deserialize)]
struct Params {
    teacher: String,
    /// Teacher layers to keep, increasing; default the first and the last.
    layers: Option<Vec<usize>>,
    /// The model whose next-token distributions the draft learns (any model artifact, hybrids
    /// too); default the teacher.
    target: Option<String>,
    /// Fine-tuning text; without it the draft is only built.
    data: Option<String>,
    #[serde(default = "d_seq")]
    seq_len: usize,
    #[serde(default = "one")]
    kl_weight: f64,
    #[serde(default)]
    ce_weight: f64,
    #[serde(flatten)]
    optim: OptimParams,
}

fn check(params: &serde_json::Value) -> Result<Params, ParamError> {
    let p: Params = parse_value(params)?;
    reference("params.teacher", &p.teacher)?;
    if let Some(t) = &p.target {
        reference("params.target", t)?;
    }
    if let Some(d) = &p.data {
        reference("params.data", d)?;
    }
    if p.layers.as_ref().is_some_and(|l| l.is_empty() || l.windows(2).any(|w| w[0] >= w[1])) {
        return Err(ParamError::new("params.layers", "give increasing, distinct layer indices"));
    }
    if p.seq_len < 2 || p.optim.batch == 0 {
        return Err(ParamError::new("params.seq_len", "seq_len must be at least 2 and batch at least 1"));
    }
    Ok(p)
}

pub struct DraftStage;

impl Stage for DraftStage {
    fn kind(&self) -> &'static str { "draft" }
    fn version(&self) -> u32 { 1 }
    fn summary(&self) -> &'static str { "a draft model for speculative decoding: the teacher's first and last layers, optionally fine-tuned" }

    fn validate(&self, spec: &StageSpec) -> Result<(), ParamError> {
        check(&spec.params)?;
        check_runtime(spec)
    }

    fn environment(&self, spec: &StageSpec) -> BTreeMap<String, String> {
        runtime_env(spec)
    }

    fn run(&self, ctx: &mut StageContext) -> Result<(), StageError> {
        let p: Params = parse(ctx.spec).map_err(|e| StageError::Failed(e.to_string()))?;
        let teacher_dir = ctx.input(&p.teacher)?.to_path_buf();
        let Some(data) = &p.data else {
            let layers = write_draft_dir(&teacher_dir, ctx.out_dir(), p.layers.as_deref()).map_err(failed)?;
            ctx.log(format!("draft from teacher layers {layers:?}, not fine-tuned (no `data`)"));
            return ctx.metric("layers", layers.len() as f64);
        };
        // Built beside the output, trained, then written to the output.
        let built = ctx.workspace().join(format!("draft-init-{}", ctx.spec.name));
        let layers = write_draft_dir(&teacher_dir, &built, p.layers.as_deref()).map_err(failed)?;
        ctx.metric("layers", layers.len() as f64)?;
        let runtime = Runtime::parse(&ctx.spec.device, Some(&ctx.spec.dtype)).map_err(failed)?;
        let target_dir = match &p.target {
            Some(t) => ctx.input(t)?.to_path_buf(),
            None => teacher_dir.clone(),
        };
        let target_model = LoadedModel::open(&target_dir, runtime.clone()).map_err(failed)?;
        let draft = LoadedModel::open(&built, runtime.clone()).map_err(failed)?;
        let (train, val, _) = packed_windows(ctx, data, &target_model.tokenizer, p.seq_len, &p.optim, None, "draft data")?;
        let seed = ctx.spec.seed;
        let before = validate(&draft.model, &target_model, &val);
        let config = p.optim.config(train.len(), p.seq_len, seed, checkpoint_dir(ctx));
        let mut trainer = Trainer::new(draft.model, config, train.len(), runtime.dtype, &runtime.device).map_err(train_err)?;
        let kd = KdLoss { target: &target_model, target_copies: Copies::new(&target_model.model, &[]), rope: &draft.rope, train: &train, kl: KlOptions::default(), kl_weight: p.kl_weight, ce_weight: p.ce_weight };
        let loss_fn = |model: &Hybrid, ids: &[usize]| kd.micro_batch(model, ids);
        run_trainer(ctx, &mut trainer, loss_fn)?;
        let trained = Trained::new(trainer);
        let model = &trained.model;
        let after = validate(model, &target_model, &val);
        let to = p.target.as_deref().unwrap_or("the teacher");
        ctx.log(format!("draft from teacher layers {layers:?}"));
        Validation::record(ctx, before, after, to)?;
        trained.save(&built, ctx.out_dir())?;
        let _ = std::fs::remove_dir_all(&built);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::fixtures::{tiny_config, write_model_dir};
    use crate::kinds::training::testing::{run_stage, write_jsonl};
    use serde_json::json;

    #[test]
    fn draft_is_built_from_first_and_last_layers_and_fine_tuning_lowers_its_kl() {
        let tmp = tempfile::tempdir().unwrap();
        let (teacher, data) = (tmp.path().join("teacher"), tmp.path().join("corpus.jsonl"));
        write_model_dir(&teacher, &tiny_config(32, 3));
        let words = ["the cat sat", "on a mat", "dogs run far", "birds sing"];
        write_jsonl(&data, &(0..24).map(|i| json!({ "text": format!("{} and {}.", words[i % 4], words[(i * 3 + 1) % 4]) })).collect::<Vec<_>>());
        let built = run_stage(&DraftStage, &tmp.path().join("a"), json!({ "teacher": "@t" }), &[("@t", teacher.clone())]).unwrap();
        assert_eq!(built.0["layers"], 2.0);
        assert_eq!(LoadedModel::open(&built.1, Runtime::cpu()).unwrap().config.n_layers, 2);
        let params = json!({ "teacher": "@t", "data": "@c", "seq_len": 16, "batch": 4, "steps": 15, "lr": 1e-2, "warmup": 2, "validation": 0.2 });
        let (m, out, _) = run_stage(&DraftStage, &tmp.path().join("b"), params, &[("@t", teacher), ("@c", data)]).unwrap();
        eprintln!("draft metrics: {m:?}");
        assert!(m["val_kl"] < 0.7 * m["val_kl_before"], "{m:?}");
        // A share of positions (the tiny random teacher's near-uniform choices need not move it).
        assert!((0.0..=1.0).contains(&m["val_agreement_before"]) && (0.0..=1.0).contains(&m["val_agreement"]), "{m:?}");
        assert_eq!(LoadedModel::open(&out, Runtime::cpu()).unwrap().config.n_layers, 2);
        // Learning another model's distributions (here a 2-layer model of the same vocabulary).
        let other = tmp.path().join("other");
        write_model_dir(&other, &tiny_config(32, 2));
        let params = json!({ "teacher": "@t", "target": "@o", "data": "@c", "seq_len": 16, "batch": 4, "steps": 15, "lr": 1e-2, "warmup": 2, "validation": 0.2 });
        let inputs = [("@t", tmp.path().join("teacher")), ("@o", other), ("@c", tmp.path().join("corpus.jsonl"))];
        let (m, _, _) = run_stage(&DraftStage, &tmp.path().join("c"), params, &inputs).unwrap();
        assert!(m["val_kl"] < 0.7 * m["val_kl_before"], "{m:?}");
        assert_eq!(check(&json!({ "teacher": "@t", "target": "o" })).unwrap_err().path, "params.target");
    }
}
