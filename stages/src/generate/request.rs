//! One call behind `distill generate --model DIR --prompt "..." [--chat]`.

use std::path::PathBuf;

use super::decode::GenerateOptions;
use super::sampling::Sampling;
use crate::error::Result;
use crate::runtime::Runtime;
use crate::teacher::LoadedModel;

#[derive(Debug, Clone)]
pub struct GenerateRequest {
    /// A model folder (any model artifact).
    pub model_dir: PathBuf,
    pub prompt: String,
    /// Apply the model's chat template to the prompt as one user message.
    pub chat: bool,
    pub max_new_tokens: usize,
    pub sampling: Sampling,
    pub seed: u64,
    pub stop: Vec<String>,
    /// `cpu`, `cuda`, `cuda:N`.
    pub device: String,
    /// `f32` or `bf16`; `None` takes the device's default.
    pub dtype: Option<String>,
}

impl GenerateRequest {
    pub fn new(model_dir: impl Into<PathBuf>, prompt: impl Into<String>) -> Self {
        Self {
            model_dir: model_dir.into(),
            prompt: prompt.into(),
            chat: false,
            max_new_tokens: 128,
            sampling: Sampling::Greedy,
            seed: 0,
            stop: Vec::new(),
            device: "cpu".into(),
            dtype: None,
        }
    }
}

/// Loads the model, generates, and streams the text through `on_text` as it comes; returns the
/// whole completion (cut at the first stop string).
pub fn run_generate(req: &GenerateRequest, mut on_text: impl FnMut(&str)) -> Result<String> {
    let runtime = Runtime::parse(&req.device, req.dtype.as_deref())?;
    let m = LoadedModel::open(&req.model_dir, runtime)?.for_inference();
    let prompt = m.prompt_ids(&req.prompt, req.chat)?;
    let opts = GenerateOptions {
        max_new_tokens: req.max_new_tokens,
        sampling: req.sampling.clone(),
        seed: req.seed,
        eos: Vec::new(),
        pad: m.tokenizer.pad_id(),
        ..Default::default()
    };
    let mut out = m.generate_text(&[prompt], &opts, &req.stop, |_, piece| on_text(piece))?;
    Ok(out.remove(0))
}
