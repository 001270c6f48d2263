//! Fixtures shared by the integration tests: a tiny llama GGUF built from a golden checkpoint.
#![allow(dead_code)]

use std::path::PathBuf;

use distill_stages::gguf::{bytes_to_unicode, GgufWriter, Value};
use distill_stages::weights::Weights;

pub fn golden(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/golden").join(name)
}

/// llama.cpp's `permute`: HF rows `[heads, 2, half]` stored as `[heads, half, 2]`.
pub fn permute(w: &[f32], rows: usize, cols: usize, heads: usize) -> Vec<f32> {
    let half = rows / heads / 2;
    let mut out = vec![0f32; w.len()];
    for h in 0..heads {
        for j in 0..2 {
            for i in 0..half {
                let (hf, stored) = (h * 2 * half + j * half + i, h * 2 * half + i * 2 + j);
                out[stored * cols..(stored + 1) * cols].copy_from_slice(&w[hf * cols..(hf + 1) * cols]);
            }
        }
    }
    out
}

pub fn gguf_name(hf: &str) -> String {
    let table = [
        ("model.embed_tokens.weight", "token_embd.weight"),
        ("model.norm.weight", "output_norm.weight"),
        ("lm_head.weight", "output.weight"),
        ("input_layernorm", "attn_norm"),
        ("post_attention_layernorm", "ffn_norm"),
        ("self_attn.q_proj", "attn_q"),
        ("self_attn.k_proj", "attn_k"),
        ("self_attn.v_proj", "attn_v"),
        ("self_attn.o_proj", "attn_output"),
        ("mlp.gate_proj", "ffn_gate"),
        ("mlp.up_proj", "ffn_up"),
        ("mlp.down_proj", "ffn_down"),
    ];
    let mut s = hf.replace("model.layers.", "blk.");
    for (a, b) in table {
        s = s.replace(a, b);
    }
    s
}

/// The tiny `gqa-untied` checkpoint (4 heads, 2 KV heads, d_model 32) as a llama GGUF.
pub fn tiny_gguf(d_ff: i64, with_tokenizer: bool) -> Vec<u8> {
    let w = Weights::open_hf_dir(&golden("tiny-gqa-untied")).unwrap();
    let mut g = GgufWriter::default();
    let int = Value::Int;
    g.meta("general.architecture", Value::String("llama".into()))
        .meta("llama.block_count", int(2))
        .meta("llama.context_length", int(256))
        .meta("llama.embedding_length", int(32))
        .meta("llama.feed_forward_length", int(d_ff))
        .meta("llama.attention.head_count", int(4))
        .meta("llama.attention.head_count_kv", int(2))
        .meta("llama.rope.freq_base", Value::Float(10000.0))
        .meta("llama.attention.layer_norm_rms_epsilon", Value::Float(1e-5))
        .meta("llama.vocab_size", int(128));
    if with_tokenizer {
        let chars: Vec<char> = bytes_to_unicode().into_values().collect();
        let mut tokens = vec![Value::String("<|endoftext|>".into())];
        tokens.extend(chars[..127].iter().map(|c| Value::String(c.to_string())));
        let mut types = vec![int(3)];
        types.extend(std::iter::repeat_n(int(1), 127));
        g.meta("tokenizer.ggml.model", Value::String("gpt2".into()))
            .meta("tokenizer.ggml.tokens", Value::Array(tokens))
            .meta("tokenizer.ggml.token_type", Value::Array(types))
            .meta("tokenizer.ggml.merges", Value::Array(vec![]))
            .meta("tokenizer.ggml.eos_token_id", int(0))
            .meta("tokenizer.chat_template", Value::String("{{ messages[0]['content'] }}".into()));
    }
    for (name, e) in &w.entries {
        let mut v: Vec<f32> = w.data(name).unwrap().try_to_vec::<f32>().unwrap();
        if name.contains("q_proj") {
            v = permute(&v, e.shape[0], e.shape[1], 4);
        } else if name.contains("k_proj") {
            v = permute(&v, e.shape[0], e.shape[1], 2);
        }
        g.tensor(&gguf_name(name), e.shape.clone(), v);
    }
    g.to_bytes()
}

