//! Prefill and greedy decoding throughput at a batch size and context length: the same loop
//! `distill generate` runs, with the argmax kept on the device between steps.

use std::time::Instant;

use burn::tensor::{Int, Tensor, TensorData};
use serde::Serialize;

use super::{median, sync, BenchModel};
use crate::error::Result;
use crate::lm::CausalLm;
use crate::runtime::Runtime;

#[derive(Debug, Clone, Copy)]
pub struct DecodeCase {
    pub batch: usize,
    /// Prompt tokens prefilled before decoding: the context each decoded token attends to.
    pub prompt: usize,
    pub decode: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct DecodeResult {
    pub bench: &'static str,
    pub model: String,
    pub device: String,
    pub dtype: &'static str,
    pub batch: usize,
    pub prompt: usize,
    pub decode: usize,
    pub repeats: usize,
    pub prefill_tok_s: f64,
    pub decode_tok_s: f64,
    /// Wall time of one decoding step (all rows of the batch).
    pub ms_per_step: f64,
    /// Which inference kernels ran.
    #[serde(flatten)]
    pub kernels: super::InferenceKernels,
}

/// Prompt ids spread over the vocabulary, deterministic.
fn prompt_ids(case: &DecodeCase, vocab: usize) -> Vec<i64> {
    (0..case.batch * case.prompt).map(|i| ((i * 7919 + 13) % vocab) as i64).collect()
}

/// Times `repeats` runs after one warm-up run of the same shapes; medians.
pub fn run(m: &BenchModel, runtime: &Runtime, case: DecodeCase, repeats: usize) -> Result<DecodeResult> {
    let ids = prompt_ids(&case, m.config.llama.vocab_size);
    let once = || -> Result<(f64, f64)> {
        let input: Tensor<2, Int> = Tensor::from_data(TensorData::new(ids.clone(), [case.batch, case.prompt]), &runtime.device);
        let mut cache = m.model.new_cache();
        let valid = vec![vec![true; case.prompt]; case.batch];
        sync(runtime)?;
        let t0 = Instant::now();
        let logits = m.model.forward(input, &valid, &m.rope, &mut cache);
        let mut next = logits.narrow(1, case.prompt - 1, 1).argmax(2).reshape([case.batch, 1]);
        sync(runtime)?;
        let prefill = t0.elapsed().as_secs_f64();
        let step_valid = vec![vec![true]; case.batch];
        let t1 = Instant::now();
        for _ in 0..case.decode {
            let logits = m.model.forward(next, &step_valid, &m.rope, &mut cache);
            next = logits.argmax(2).reshape([case.batch, 1]);
        }
        let _ = next.into_data();
        Ok((prefill, t1.elapsed().as_secs_f64()))
    };
    once()?;
    let runs = (0..repeats.max(1)).map(|_| once()).collect::<Result<Vec<_>>>()?;
    let prefill = median(runs.iter().map(|r| r.0).collect());
    let decode = median(runs.iter().map(|r| r.1).collect());
    Ok(DecodeResult {
        bench: "decode",
        model: m.label.clone(),
        device: format!("{:?}", runtime.device),
        dtype: runtime.dtype_name(),
        batch: case.batch,
        prompt: case.prompt,
        decode: case.decode,
        repeats,
        prefill_tok_s: (case.batch * case.prompt) as f64 / prefill,
        decode_tok_s: (case.batch * case.decode) as f64 / decode,
        ms_per_step: 1e3 * decode / case.decode.max(1) as f64,
        kernels: super::InferenceKernels::of(&m.model),
    })
}
