//! `generate`: a model (the teacher) answers a prompt set; the answers are sequence-level
//! distillation data (METHOD.md 3: the student learns the teacher's pseudo-labels), written as
//! chat rows `{"messages": [...prompt, {"role": "assistant", "content": answer}]}`.
//!
//! ```toml
//! [stages.answers]
//! kind = "generate"
//! params = { model = "@teacher", prompts = "@prompts", max_new_tokens = 512, limit = 10_000,
//!            sampling = { kind = "top_p", p = 0.9, temperature = 0.7 } }
//! ```

use std::collections::BTreeMap;
use std::time::Instant;

use distill_engine::stage::{ParamError, Stage, StageContext, StageError, StageSpec};
use serde::Deserialize;

use super::answers::{answer, read_prompts, write_rows, AnswerParams};
use super::params::{check_runtime, failed, runtime_env, parse_split, reference};
use crate::generate::Sampling;
use crate::runtime::Runtime;
use crate::teacher::LoadedModel;
use crate::text::Message;

fn greedy() -> Sampling { Sampling::Greedy }

#[derive(Debug, Deserialize)]
struct Params {
    model: String,
    /// A dataset of `messages` or `prompt` rows.
    prompts: String,
    #[serde(default = "greedy")]
    sampling: Sampling,
    /// Default: the stage's seed.
    seed: Option<u64>,
}

fn check(params: &serde_json::Value) -> Result<(Params, AnswerParams), ParamError> {
    let (p, a): (Params, AnswerParams) = parse_split(params)?;
    reference("params.model", &p.model)?;
    reference("params.prompts", &p.prompts)?;
    check_sampling("params.sampling", &p.sampling)?;
    if a.max_new_tokens == 0 || a.batch == 0 || a.limit == Some(0) {
        return Err(ParamError::new("params", "max_new_tokens, batch and limit must be at least 1"));
    }
    Ok((p, a))
}

pub(super) fn check_sampling(path: &str, s: &Sampling) -> Result<(), ParamError> {
    let t = match s {
        Sampling::Greedy => 1.0,
        Sampling::Temperature { temperature } | Sampling::TopK { temperature, .. } | Sampling::TopP { temperature, .. } => *temperature,
    };
    if t > 0.0 { Ok(()) } else { Err(ParamError::new(path, "temperature must be positive")) }
}

pub struct GenerateStage;

impl Stage for GenerateStage {
    fn kind(&self) -> &'static str { "generate" }
    fn version(&self) -> u32 { 2 }
    fn summary(&self) -> &'static str { "a model answers a prompt set: chat rows for sequence-level distillation" }

    fn validate(&self, spec: &StageSpec) -> Result<(), ParamError> {
        check(&spec.params)?;
        check_runtime(spec)
    }

    fn environment(&self, spec: &StageSpec) -> BTreeMap<String, String> {
        runtime_env(spec)
    }

    fn run(&self, ctx: &mut StageContext) -> Result<(), StageError> {
        let (p, a) = check(&ctx.spec.params).map_err(|e| StageError::Failed(e.to_string()))?;
        let runtime = Runtime::parse(&ctx.spec.device, Some(&ctx.spec.dtype)).map_err(failed)?;
        let model = LoadedModel::open(ctx.input(&p.model)?, runtime).map_err(failed)?.for_inference();
        let prompts = read_prompts(ctx, &p.prompts, a.limit)?;
        let started = Instant::now();
        let answers = answer(ctx, &model, &prompts, &a, &p.sampling, p.seed.unwrap_or(ctx.spec.seed))?;
        let secs = started.elapsed().as_secs_f64().max(1e-9);
        let (mut rows, mut tokens) = (Vec::new(), 0usize);
        let (mut too_long, mut empty) = (0usize, 0usize);
        for (prompt, ans) in prompts.iter().zip(answers) {
            match ans {
                None => too_long += 1,
                Some(t) if t.is_empty() => empty += 1, // an empty turn is a bad row downstream
                Some(t) => {
                    tokens += model.tokenizer.encode(&t, false).map_err(failed)?.len();
                    let mut messages = prompt.clone();
                    messages.push(Message { role: "assistant".into(), content: t });
                    rows.push(serde_json::json!({ "messages": messages }));
                }
            }
        }
        ctx.log(format!("{} answers to {} prompts ({too_long} prompts too long, {empty} empty answers), {tokens} tokens in {secs:.1}s", rows.len(), prompts.len()));
        if rows.is_empty() {
            return Err(StageError::Failed("no answers: every prompt was too long or answered with nothing".into()));
        }
        write_rows(ctx.out_dir(), &rows)?;
        ctx.metric("rows", rows.len() as f64)?;
        ctx.metric("prompts_too_long", too_long as f64)?;
        ctx.metric("empty_answers", empty as f64)?;
        ctx.metric("answer_tokens", tokens as f64)?;
        ctx.metric("tokens_per_s", tokens as f64 / secs)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::fixtures::{tiny_config, write_model_dir};
    use crate::kinds::training::testing::{run_stage, write_jsonl};

    #[test]
    fn the_teacher_answers_each_prompt_as_a_chat_row() {
        let tmp = tempfile::tempdir().unwrap();
        let (teacher, prompts) = (tmp.path().join("teacher"), tmp.path().join("prompts.jsonl"));
        write_model_dir(&teacher, &tiny_config(32, 1));
        let mut rows: Vec<serde_json::Value> = (0..5).map(|i| serde_json::json!({ "prompt": format!("say {i}") })).collect();
        rows.push(serde_json::json!({ "messages": [{ "role": "user", "content": "hello" }, { "role": "assistant", "content": "dropped" }] }));
        rows.insert(2, serde_json::json!({ "text": "not a prompt" }));
        write_jsonl(&prompts, &rows);
        let params = serde_json::json!({ "model": "@teacher", "prompts": "@prompts", "max_new_tokens": 6, "batch": 4, "limit": 6,
            "sampling": { "kind": "temperature", "temperature": 1.0 }, "seed": 5 });
        let inputs = [("@teacher", teacher), ("@prompts", prompts)];
        let (m, out, _) = run_stage(&GenerateStage, tmp.path(), params.clone(), &inputs).unwrap();
        let body = std::fs::read_to_string(out.join("train.jsonl")).unwrap();
        let written: Vec<serde_json::Value> = body.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(m["rows"] + m["empty_answers"], 6.0, "{m:?}");
        assert_eq!(m["bad_rows/missing_field"], 1.0);
        for r in &written {
            let msgs = r["messages"].as_array().unwrap();
            assert_eq!((msgs.len(), msgs[0]["role"].as_str(), msgs[1]["role"].as_str()), (2, Some("user"), Some("assistant")));
            assert_ne!(msgs[1]["content"], "dropped");
        }
        // Seeded: the same params write the same rows.
        let again = tempfile::tempdir().unwrap();
        let inputs = [("@teacher", tmp.path().join("teacher")), ("@prompts", tmp.path().join("prompts.jsonl"))];
        let (_, out2, _) = run_stage(&GenerateStage, again.path(), params, &inputs).unwrap();
        assert_eq!(body, std::fs::read_to_string(out2.join("train.jsonl")).unwrap());
        let e = check(&serde_json::json!({ "model": "@t", "prompts": "@p", "max_new_token": 3 })).unwrap_err();
        assert_eq!((e.path.as_str(), e.message.as_str()), ("params.max_new_token", "unknown param; did you mean `max_new_tokens`?"));
    }
}
