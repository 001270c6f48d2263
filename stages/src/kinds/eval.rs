//! `eval`: token-weighted perplexity and next-token accuracy of a model artifact on a text
//! dataset artifact.
//!
//! ```toml
//! [stages.heldout]
//! kind = "eval"
//! params = { model = "@teacher", data = "@corpus/heldout", max_tokens = 50000 }
//! ```

use std::collections::BTreeMap;

use distill_engine::stage::{ParamError, Stage, StageContext, StageError, StageSpec};
use serde::Deserialize;

use super::data::read_texts;
use super::params::{check_runtime, failed, runtime_env, parse, parse_value, reference};
use crate::eval::{evaluate, EvalOptions};
use crate::runtime::Runtime;
use crate::teacher::LoadedModel;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    model: String,
    data: String,
    #[serde(default = "default_max_tokens")]
    max_tokens: usize,
    #[serde(default = "default_seq_len")]
    seq_len: usize,
    #[serde(default = "default_batch")]
    batch_size: usize,
}

fn default_max_tokens() -> usize {
    50_000
}
fn default_seq_len() -> usize {
    512
}
fn default_batch() -> usize {
    4
}

pub struct EvalStage;

fn check(params: &serde_json::Value) -> Result<Params, ParamError> {
    let p: Params = parse_value(params)?;
    reference("params.model", &p.model)?;
    reference("params.data", &p.data)?;
    for (name, v) in [("max_tokens", p.max_tokens), ("seq_len", p.seq_len), ("batch_size", p.batch_size)] {
        if v == 0 {
            return Err(ParamError::new(format!("params.{name}"), "must be at least 1"));
        }
    }
    Ok(p)
}

impl Stage for EvalStage {
    fn kind(&self) -> &'static str {
        "eval"
    }

    fn version(&self) -> u32 {
        1
    }

    fn summary(&self) -> &'static str {
        "perplexity and next-token accuracy of a model on a text dataset"
    }

    fn params_schema(&self) -> serde_json::Value {
        serde_json::json!({
            "type": "object",
            "required": ["model", "data"],
            "properties": {
                "model": { "type": "string", "description": "a model artifact, `@stage`" },
                "data": { "type": "string", "description": "a dataset artifact, `@stage` or `@stage/split`" },
                "max_tokens": { "type": "integer", "minimum": 1, "default": 50000 },
                "seq_len": { "type": "integer", "minimum": 1, "default": 512 },
                "batch_size": { "type": "integer", "minimum": 1, "default": 4 }
            }
        })
    }

    fn validate(&self, spec: &StageSpec) -> Result<(), ParamError> {
        check(&spec.params)?;
        check_runtime(spec)
    }

    fn environment(&self, spec: &StageSpec) -> BTreeMap<String, String> {
        runtime_env(spec)
    }

    fn run(&self, ctx: &mut StageContext) -> Result<(), StageError> {
        let p: Params = parse(ctx.spec).map_err(|e| StageError::Failed(e.to_string()))?;
        let runtime = Runtime::parse(&ctx.spec.device, Some(&ctx.spec.dtype)).map_err(failed)?;
        let model_dir = ctx.input(&p.model)?.to_path_buf();
        let data = ctx.input(&p.data)?.to_path_buf();
        let m = LoadedModel::open(&model_dir, runtime).map_err(failed)?.for_inference();
        let texts = read_texts(&data, &m.tokenizer).map_err(failed)?;
        let docs = texts.iter().map(|t| m.tokenizer.encode(t, true)).collect::<Result<Vec<_>, _>>().map_err(failed)?;
        ctx.log(format!("{} documents from {}", docs.len(), data.display()));
        let opts = EvalOptions { seq_len: p.seq_len, batch_size: p.batch_size, max_tokens: p.max_tokens };
        let started = std::time::Instant::now();
        let mut step_log = Vec::new();
        let totals = evaluate(&m.model, &m.rope, &docs, &opts, |step, t| step_log.push((step, *t)));
        for (step, t) in step_log {
            ctx.step_metric(step, "tokens", t.tokens as f64)?;
            ctx.step_metric(step, "perplexity", t.perplexity())?;
        }
        if totals.tokens == 0 {
            return Err(StageError::Failed(format!("no tokens to evaluate in {}", data.display())));
        }
        let secs = started.elapsed().as_secs_f64();
        ctx.log(format!("{} tokens in {secs:.1}s: perplexity {:.4}, accuracy {:.4}", totals.tokens, totals.perplexity(), totals.accuracy()));
        ctx.metric("perplexity", totals.perplexity())?;
        ctx.metric("nll", totals.nll / totals.tokens as f64)?;
        ctx.metric("accuracy", totals.accuracy())?;
        ctx.metric("tokens", totals.tokens as f64)?;
        ctx.metric("tokens_per_s", totals.tokens as f64 / secs.max(1e-9))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn params_need_references_and_positive_sizes() {
        let ok = json!({ "model": "@teacher", "data": "@corpus/heldout", "max_tokens": 100 });
        assert!(check(&ok).is_ok());
        let e = check(&json!({ "model": "teacher", "data": "@c" })).unwrap_err();
        assert_eq!(e.path, "params.model");
        let e = check(&json!({ "model": "@t", "data": "@c", "seq_len": 0 })).unwrap_err();
        assert_eq!(e.path, "params.seq_len");
        let e = check(&json!({ "model": "@t", "data": "@c", "max_tokenz": 5 })).unwrap_err();
        assert!(e.message.contains("max_tokenz"), "{e}");
    }
}
