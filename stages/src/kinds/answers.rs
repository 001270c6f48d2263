//! What `generate` and `preference_pairs` share: a model answering a prompt set in batches,
//! and the dataset files they write.

use std::io::Write;
use std::path::Path;

use distill_engine::stage::{StageContext, StageError};
use serde::Deserialize;

use super::params::failed;
use crate::data::{prompt_rows, read_rows, BadRows};
use crate::generate::{GenerateOptions, Sampling};
use crate::teacher::LoadedModel;
use crate::text::Message;

fn d_new() -> usize { 256 }
fn d_batch() -> usize { 8 }
fn d_prompt() -> usize { 2000 }

/// Generation params, flattened into each kind's params.
#[derive(Debug, Clone, Deserialize)]
pub struct AnswerParams {
    #[serde(default = "d_new")]
    pub max_new_tokens: usize,
    /// Prompts longer than this (tokens, chat template applied) are skipped.
    #[serde(default = "d_prompt")]
    pub max_prompt: usize,
    /// Prompts per forward pass.
    #[serde(default = "d_batch")]
    pub batch: usize,
    /// At most this many prompts (the first ones).
    pub limit: Option<usize>,
}

/// The prompts of a dataset artifact; bad rows become `bad_rows/<reason>` metrics.
pub fn read_prompts(ctx: &mut StageContext, reference: &str, limit: Option<usize>) -> Result<Vec<Vec<Message>>, StageError> {
    let mut bad = BadRows::default();
    let rows = read_rows(ctx.input(reference)?, &mut bad).map_err(|e| StageError::Failed(e.to_string()))?;
    let prompts = prompt_rows(&rows, limit, &mut bad);
    for (reason, n) in &bad.counts {
        ctx.metric(&format!("bad_rows/{reason}"), *n as f64)?;
    }
    if prompts.is_empty() {
        return Err(StageError::Failed(format!("{reference}: no usable prompts (bad rows {:?})", bad.counts)));
    }
    Ok(prompts)
}

/// `m`'s answer to each prompt (`None` for a prompt over `max_prompt` tokens), in batches of
/// similar lengths (less padding). Batch `b` samples with `seed + b`: greedy answers do not
/// depend on `batch`, sampled ones do.
pub fn answer(ctx: &StageContext, m: &LoadedModel, prompts: &[Vec<Message>], p: &AnswerParams, sampling: &Sampling, seed: u64) -> Result<Vec<Option<String>>, StageError> {
    let mut ids = Vec::with_capacity(prompts.len());
    for prompt in prompts {
        let text = m.tokenizer.apply_chat_template(prompt, true).map_err(failed)?;
        ids.push(m.tokenizer.encode(&text, false).map_err(failed)?); // the template wrote any BOS
    }
    let mut usable: Vec<usize> = (0..prompts.len()).filter(|&i| !ids[i].is_empty() && ids[i].len() <= p.max_prompt).collect();
    usable.sort_by_key(|&i| ids[i].len());
    let mut out = vec![None; prompts.len()];
    for (b, chunk) in usable.chunks(p.batch.max(1)).enumerate() {
        if ctx.cancelled() {
            return Err(StageError::Interrupted);
        }
        let batch: Vec<Vec<u32>> = chunk.iter().map(|&i| ids[i].clone()).collect();
        let width = batch.iter().map(Vec::len).max().unwrap_or(0);
        // Never past the positions the model has RoPE tables for.
        let room = m.config.max_seq_len.saturating_sub(width).min(p.max_new_tokens);
        let opts = GenerateOptions { max_new_tokens: room, sampling: sampling.clone(), seed: seed.wrapping_add(b as u64), eos: Vec::new(), pad: m.tokenizer.pad_id(), ..Default::default() };
        let texts = m.generate_text(&batch, &opts, &[], |_, _| {}).map_err(failed)?;
        for (&i, t) in chunk.iter().zip(texts) {
            out[i] = Some(t.trim().to_string());
        }
    }
    Ok(out)
}

/// Writes `rows` as `train.jsonl` in `dir` (the dataset's main and only split).
pub fn write_rows(dir: &Path, rows: &[serde_json::Value]) -> Result<(), StageError> {
    let path = dir.join("train.jsonl");
    let mut f = std::io::BufWriter::new(std::fs::File::create(&path).map_err(|e| StageError::io(&path, e))?);
    for r in rows {
        writeln!(f, "{r}").map_err(|e| StageError::io(&path, e))?;
    }
    f.flush().map_err(|e| StageError::io(&path, e))
}
