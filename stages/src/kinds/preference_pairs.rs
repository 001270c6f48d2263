//! `preference_pairs`: preference data made here, since none ships with any package we can
//! use: per prompt, chosen = the teacher's answer, rejected = the student's answer or a
//! degradation of the teacher's (cut short, sentences shuffled, a high-temperature sample).
//! Pairs whose two answers are equal are dropped (they carry no DPO gradient).
//!
//! ```toml
//! [stages.pairs]
//! kind = "preference_pairs"
//! params = { teacher = "@teacher", student = "@sft", prompts = "@prompts", rejected = "student",
//!            max_new_tokens = 512, limit = 5_000 }
//! ```

use std::collections::BTreeMap;

use distill_engine::stage::{ParamError, Stage, StageContext, StageError, StageSpec};
use serde::Deserialize;

use super::answers::{answer, read_prompts, write_rows, AnswerParams};
use super::generate::check_sampling;
use super::params::{check_runtime, failed, runtime_env, parse_split, reference};
use crate::data::{prompt_json, shuffled, truncated};
use crate::generate::Sampling;
use crate::runtime::Runtime;
use crate::teacher::LoadedModel;

#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Rejected {
    /// The `student` model's answer.
    Student,
    /// The first half of the teacher's answer's words.
    Truncated,
    /// The teacher's answer with its sentences shuffled.
    Shuffled,
    /// The teacher sampled at `rejected_temperature`.
    Temperature,
}

fn d_rejected() -> Rejected { Rejected::Student }
fn greedy() -> Sampling { Sampling::Greedy }
fn d_temp() -> f32 { 2.0 }

#[derive(Debug, Deserialize)]
struct Params {
    teacher: String,
    student: Option<String>,
    prompts: String,
    #[serde(default = "d_rejected")]
    rejected: Rejected,
    /// How the teacher's (chosen) answers and the student's are decoded.
    #[serde(default = "greedy")]
    sampling: Sampling,
    #[serde(default = "d_temp")]
    rejected_temperature: f32,
    seed: Option<u64>,
}

fn check(params: &serde_json::Value) -> Result<(Params, AnswerParams), ParamError> {
    let (p, a): (Params, AnswerParams) = parse_split(params)?;
    reference("params.teacher", &p.teacher)?;
    reference("params.prompts", &p.prompts)?;
    match (&p.student, p.rejected) {
        (Some(s), _) => reference("params.student", s)?,
        (None, Rejected::Student) => return Err(ParamError::new("params.rejected", "`student` answers need `student = \"@model\"`; or use truncated, shuffled or temperature")),
        _ => {}
    }
    check_sampling("params.sampling", &p.sampling)?;
    if p.rejected_temperature <= 0.0 {
        return Err(ParamError::new("params.rejected_temperature", "must be positive"));
    }
    if a.max_new_tokens == 0 || a.batch == 0 || a.limit == Some(0) {
        return Err(ParamError::new("params", "max_new_tokens, batch and limit must be at least 1"));
    }
    Ok((p, a))
}

pub struct PreferencePairsStage;

impl Stage for PreferencePairsStage {
    fn kind(&self) -> &'static str { "preference_pairs" }
    fn version(&self) -> u32 { 2 }
    fn summary(&self) -> &'static str { "preference pairs: the teacher's answer chosen, the student's (or a degraded one) rejected" }

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
        let seed = p.seed.unwrap_or(ctx.spec.seed);
        let teacher = LoadedModel::open(ctx.input(&p.teacher)?, runtime.clone()).map_err(failed)?.for_inference();
        let prompts = read_prompts(ctx, &p.prompts, a.limit)?;
        let chosen = answer(ctx, &teacher, &prompts, &a, &p.sampling, seed)?;
        let rejected: Vec<Option<String>> = match p.rejected {
            Rejected::Student => {
                let student_ref = p.student.as_deref().unwrap_or_default();
                let student = LoadedModel::open(ctx.input(student_ref)?, runtime).map_err(failed)?.for_inference();
                answer(ctx, &student, &prompts, &a, &p.sampling, seed)?
            }
            Rejected::Temperature => {
                let hot = Sampling::Temperature { temperature: p.rejected_temperature };
                answer(ctx, &teacher, &prompts, &a, &hot, seed ^ 0x5eed)?
            }
            Rejected::Truncated => chosen.iter().map(|c| c.as_deref().map(truncated)).collect(),
            Rejected::Shuffled => chosen.iter().enumerate().map(|(i, c)| c.as_deref().map(|c| shuffled(c, seed ^ i as u64))).collect(),
        };
        let mut rows = Vec::new();
        let mut skipped: BTreeMap<&str, usize> = BTreeMap::new();
        for ((prompt, c), r) in prompts.iter().zip(chosen).zip(rejected) {
            let reason = match (c, r) {
                (Some(c), Some(r)) if !c.is_empty() && c != r => {
                    rows.push(serde_json::json!({ "prompt": prompt_json(prompt), "chosen": c, "rejected": r }));
                    continue;
                }
                (None, _) | (_, None) => "prompt_too_long",
                (Some(c), _) if c.is_empty() => "empty_answer",
                _ => "identical_answers",
            };
            *skipped.entry(reason).or_default() += 1;
        }
        ctx.log(format!("{} pairs from {} prompts ({:?} rejected answers); skipped {skipped:?}", rows.len(), prompts.len(), p.rejected));
        if rows.is_empty() {
            return Err(StageError::Failed(format!("no preference pairs: skipped {skipped:?}")));
        }
        write_rows(ctx.out_dir(), &rows)?;
        ctx.metric("pairs", rows.len() as f64)?;
        for (reason, n) in skipped {
            ctx.metric(&format!("skipped/{reason}"), n as f64)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::fixtures::{tiny_config, write_model_dir};
    use crate::kinds::training::testing::{run_stage, write_jsonl};

    fn pairs(out: &std::path::Path) -> Vec<serde_json::Value> {
        std::fs::read_to_string(out.join("train.jsonl")).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    }

    #[test]
    fn chosen_is_the_teachers_answer_and_rejected_the_students_or_a_degraded_one() {
        let tmp = tempfile::tempdir().unwrap();
        let (teacher, student, prompts) = (tmp.path().join("teacher"), tmp.path().join("student"), tmp.path().join("prompts.jsonl"));
        write_model_dir(&teacher, &tiny_config(32, 1));
        write_model_dir(&student, &tiny_config(32, 1));
        write_jsonl(&prompts, &(0..4).map(|i| serde_json::json!({ "prompt": format!("question {i}") })).collect::<Vec<_>>());
        let inputs = [("@teacher", teacher.clone()), ("@student", student), ("@prompts", prompts.clone())];
        // Sampled so that random tiny models answer with words, not one repeated byte.
        let base = serde_json::json!({ "teacher": "@teacher", "prompts": "@prompts", "max_new_tokens": 12, "seed": 1,
            "sampling": { "kind": "temperature", "temperature": 1.0 } });
        let with = |extra: serde_json::Value| {
            let mut p = base.clone();
            p.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
            p
        };
        let dir = tmp.path().join("a");
        std::fs::create_dir_all(&dir).unwrap();
        let (m, out, _) = run_stage(&PreferencePairsStage, &dir, with(serde_json::json!({ "student": "@student" })), &inputs).unwrap();
        let by_student = pairs(&out);
        assert_eq!(m["pairs"], by_student.len() as f64);
        assert!(by_student.len() >= 3, "{m:?}");
        for r in &by_student {
            assert!(r["prompt"].as_str().unwrap().starts_with("question"));
            assert_ne!(r["chosen"], r["rejected"]);
        }
        let dir = tmp.path().join("b");
        std::fs::create_dir_all(&dir).unwrap();
        let (_, out, _) = run_stage(&PreferencePairsStage, &dir, with(serde_json::json!({ "rejected": "truncated" })), &inputs).unwrap();
        // The same teacher answers are chosen whatever the rejected side is, prompt by prompt (a
        // random tiny student can answer a prompt as the teacher did, which drops its pair from
        // the first set only).
        let truncated_pairs = pairs(&out);
        let mut matched = 0;
        for r in &truncated_pairs {
            let (c, rj) = (r["chosen"].as_str().unwrap(), r["rejected"].as_str().unwrap());
            let (cw, rw): (Vec<&str>, Vec<&str>) = (c.split_whitespace().collect(), rj.split_whitespace().collect());
            let shorter = if cw.len() < 2 { c.starts_with(rj) && c.len() > rj.len() } else { cw.starts_with(&rw) && rw.len() < cw.len() };
            assert!(shorter, "{r}");
            if let Some(s) = by_student.iter().find(|s| s["prompt"] == r["prompt"]) {
                assert_eq!(s["chosen"], r["chosen"], "{}", r["prompt"]);
                matched += 1;
            }
        }
        assert!(matched >= 2, "{matched} prompts in both sets");
        assert_eq!(check(&serde_json::json!({ "teacher": "@t", "prompts": "@p" })).unwrap_err().path, "params.rejected");
    }
}
