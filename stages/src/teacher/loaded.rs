//! A model folder opened for use: the model on its device, its config, RoPE tables and
//! tokenizer. Teachers and hybrids open the same way (a teacher is a hybrid whose every layer is
//! attention).

use std::path::Path;

use crate::error::Result;
use crate::generate::{generate, GenerateOptions};
use crate::hybrid::{Hybrid, HybridConfig};
use crate::llama::{LlamaConfig, Rope};
use crate::runtime::Runtime;
use crate::text::{Message, TextTokenizer};

pub struct LoadedModel {
    pub model: Hybrid,
    pub config: LlamaConfig,
    /// Which layers are attention and which Mamba.
    pub hybrid: HybridConfig,
    pub rope: Rope,
    pub tokenizer: TextTokenizer,
    pub runtime: Runtime,
}

impl LoadedModel {
    pub fn open(dir: &Path, runtime: Runtime) -> Result<Self> {
        let (model, hybrid) = Hybrid::from_hf_dir(dir, runtime.dtype, &runtime.device)?;
        let tokenizer = TextTokenizer::from_dir(dir)?;
        let config = hybrid.llama.clone();
        let rope = Rope::new(&config);
        Ok(Self { model, config, hybrid, rope, tokenizer, runtime })
    }

    /// The model for inference only (generation, speculative decoding, evaluation): its
    /// projections fused ([`Hybrid::fuse_projections`]). A model that will be trained must stay
    /// as [`LoadedModel::open`] gives it.
    pub fn for_inference(mut self) -> Self {
        self.model.fuse_projections();
        self
    }

    /// Token ids of a prompt: the raw text, or the chat template applied to one user message.
    pub fn prompt_ids(&self, prompt: &str, chat: bool) -> Result<Vec<u32>> {
        if chat {
            let text = self.tokenizer.apply_chat_template(&[Message::user(prompt)], true)?;
            // The template already wrote any BOS it wants.
            self.tokenizer.encode(&text, false)
        } else {
            self.tokenizer.encode(prompt, true)
        }
    }

    /// Generates for a batch of prompts. `stop` strings end a row once its text contains one
    /// (the text is cut there); `on_text(row, piece)` streams each row's new text as it comes.
    pub fn generate_text(
        &self,
        prompts: &[Vec<u32>],
        opts: &GenerateOptions,
        stop: &[String],
        mut on_text: impl FnMut(usize, &str),
    ) -> Result<Vec<String>> {
        let mut ids: Vec<Vec<u32>> = vec![Vec::new(); prompts.len()];
        let mut shown: Vec<usize> = vec![0; prompts.len()];
        let mut opts = opts.clone();
        if opts.eos.is_empty() {
            opts.eos.extend(self.tokenizer.eos_id());
        }
        let tok = &self.tokenizer;
        generate(&self.model, &self.rope, prompts, &opts, |row, id| {
            ids[row].push(id);
            let text = tok.decode(&ids[row], true).unwrap_or_default();
            // Hold back text that ends in an incomplete UTF-8 sequence (shown as U+FFFD).
            if !text.ends_with('\u{FFFD}') && text.len() > shown[row] && text.is_char_boundary(shown[row]) {
                on_text(row, &text[shown[row]..]);
                shown[row] = text.len();
            }
            stop.iter().any(|s| text.contains(s.as_str()))
        });
        ids.iter()
            .map(|row| {
                let mut text = tok.decode(row, true)?;
                if let Some(cut) = stop.iter().filter_map(|s| text.find(s.as_str())).min() {
                    text.truncate(cut);
                }
                Ok(text)
            })
            .collect()
    }
}
