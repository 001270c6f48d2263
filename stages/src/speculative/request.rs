//! One call behind `distill generate --model DIR --draft DIR --k 4 --prompt "..."`: the
//! verifier and the draft loaded on one runtime, text streamed as it is accepted.

use std::path::Path;

use super::decode::{speculative_decode, SpecModel, SpeculativeOptions, SpeculativeStats};
use crate::error::Result;
use crate::generate::{GenerateRequest, StepGraph};
use crate::runtime::Runtime;
use crate::teacher::LoadedModel;
use crate::text::TextTokenizer;

/// Streams a row's decoded text piece by piece and tells when a stop string appeared.
pub struct TextStream<'a> {
    tokenizer: &'a TextTokenizer,
    stop: &'a [String],
    ids: Vec<u32>,
    shown: usize,
}

impl<'a> TextStream<'a> {
    pub fn new(tokenizer: &'a TextTokenizer, stop: &'a [String]) -> Self {
        Self { tokenizer, stop, ids: Vec::new(), shown: 0 }
    }

    /// Adds a token, passes any new complete text to `on_text`; true once a stop string showed.
    pub fn push(&mut self, id: u32, on_text: &mut impl FnMut(&str)) -> bool {
        self.ids.push(id);
        let text = self.tokenizer.decode(&self.ids, true).unwrap_or_default();
        // Hold back text that ends in an incomplete UTF-8 sequence (shown as U+FFFD).
        if !text.ends_with('\u{FFFD}') && text.len() > self.shown && text.is_char_boundary(self.shown) {
            on_text(&text[self.shown..]);
            self.shown = text.len();
        }
        self.stop.iter().any(|s| text.contains(s.as_str()))
    }

    /// The whole text, cut at the first stop string.
    pub fn finish(self) -> Result<String> {
        let mut text = self.tokenizer.decode(&self.ids, true)?;
        if let Some(cut) = self.stop.iter().filter_map(|s| text.find(s.as_str())).min() {
            text.truncate(cut);
        }
        Ok(text)
    }
}

/// Loads `req.model_dir` (the verifier) and `draft_dir`, decodes speculatively with `k` drafted
/// tokens per round, and streams the text through `on_text`; returns the completion (cut at
/// the first stop string) and the acceptance counts.
pub fn run_speculative(req: &GenerateRequest, draft_dir: &Path, k: usize, mut on_text: impl FnMut(&str)) -> Result<(String, SpeculativeStats)> {
    let runtime = Runtime::parse(&req.device, req.dtype.as_deref())?;
    let verifier = LoadedModel::open(&req.model_dir, runtime.clone())?.for_inference();
    let draft = LoadedModel::open(draft_dir, runtime)?.for_inference();
    let prompt = verifier.prompt_ids(&req.prompt, req.chat)?;
    let opts = SpeculativeOptions {
        k,
        max_new_tokens: req.max_new_tokens,
        sampling: req.sampling.clone(),
        seed: req.seed,
        eos: verifier.tokenizer.eos_id().into_iter().collect(),
    };
    let mut stream = TextStream::new(&verifier.tokenizer, &req.stop);
    let v = SpecModel { model: &verifier.model, rope: &verifier.rope };
    let d = SpecModel { model: &draft.model, rope: &draft.rope };
    let (_, stats) = speculative_decode(v, d, &prompt, &opts, StepGraph::Auto, |id| stream.push(id, &mut on_text))?;
    Ok((stream.finish()?, stats))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::fixtures::{tiny_config, write_model_dir};
    use crate::generate::run_generate;

    #[test]
    fn speculative_generate_request_streams_the_verifiers_greedy_text() {
        let tmp = tempfile::tempdir().unwrap();
        let (verifier, draft) = (tmp.path().join("v"), tmp.path().join("d"));
        write_model_dir(&verifier, &tiny_config(16, 2));
        write_model_dir(&draft, &tiny_config(16, 1));
        let mut req = GenerateRequest::new(&verifier, "hello");
        req.max_new_tokens = 12;
        let plain = run_generate(&req, |_| {}).unwrap();
        let mut streamed = String::new();
        let (text, stats) = run_speculative(&req, &draft, 3, |piece| streamed.push_str(piece)).unwrap();
        assert_eq!(text, plain);
        // Streaming holds back a trailing incomplete UTF-8 sequence (random byte tokens).
        assert!(plain.starts_with(&streamed) && plain[streamed.len()..].chars().all(|c| c == '\u{FFFD}'), "{streamed:?} vs {plain:?}");
        assert!(stats.rounds >= 1 && stats.tokens <= 12, "{stats:?}");
    }
}
