//! Test fixtures: a byte-level tokenizer with ChatML specials and tiny random Llama folders.
#![allow(dead_code)]

use std::path::Path;

use burn::tensor::Device;

use crate::gguf::bytes_to_unicode;
use crate::llama::LlamaConfig;
use crate::text::{HfTokenizerConfig, SpecialToken, TextTokenizer};
use crate::train::save_weights;

pub const CHATML: &str = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

/// 256 byte tokens, then `<|im_start|>` (256) and `<|im_end|>` (257, also EOS).
pub fn tokenizer() -> TextTokenizer {
    let vocab: serde_json::Map<String, serde_json::Value> =
        bytes_to_unicode().values().enumerate().map(|(i, c)| (c.to_string(), i.into())).collect();
    let special = |id: usize, s: &str| serde_json::json!({ "id": id, "content": s, "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true });
    let byte_level = serde_json::json!({ "type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": true });
    let json = serde_json::json!({
        "version": "1.0", "truncation": null, "padding": null,
        "added_tokens": [special(256, "<|im_start|>"), special(257, "<|im_end|>")],
        "normalizer": null, "pre_tokenizer": byte_level, "post_processor": null, "decoder": byte_level,
        "model": { "type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
                   "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false, "vocab": vocab, "merges": [] }
    });
    let inner = tokenizers::Tokenizer::from_bytes(json.to_string().as_bytes()).expect("fixture tokenizer");
    let config = HfTokenizerConfig {
        eos_token: Some(SpecialToken::Text("<|im_end|>".into())),
        chat_template: Some(CHATML.into()),
        ..HfTokenizerConfig::default()
    };
    TextTokenizer { inner, config }
}

/// A tiny Llama over the fixture tokenizer's 258 tokens.
pub fn tiny_config(d_model: usize, layers: usize) -> LlamaConfig {
    LlamaConfig::new(258, d_model, 2 * d_model, layers, 4, 2, d_model / 4).with_max_seq_len(256)
}

/// Writes a randomly initialized model folder (config, weights, tokenizer) to `dir`.
pub fn write_model_dir(dir: &Path, config: &LlamaConfig) {
    std::fs::create_dir_all(dir).unwrap();
    let model = config.init(&Device::flex());
    save_weights(&model, &dir.join("model.safetensors")).unwrap();
    let hf = config.to_hf(None, Some(257), "float32");
    std::fs::write(dir.join("config.json"), serde_json::to_string_pretty(&hf).unwrap()).unwrap();
    tokenizer().save(dir).unwrap();
}
