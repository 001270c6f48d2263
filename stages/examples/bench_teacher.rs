//! Prefill and decode throughput of a model folder, for BENCHMARKS.md beside transformers
//! (`stages/bench/bench_transformers.py` measures the same on the same GPU).
//!
//! `cargo run --release -p distill-stages [--features cuda] --example bench_teacher -- MODEL DEVICE [DTYPE]`
//! MODEL is a Hugging Face folder or a llama `.gguf`; a GGUF is first exported to the folder
//! `MODEL.hf/` (f32 weights, as `import_teacher` writes it), which transformers' script then reads.
//! Prints one JSON line per batch size (1 and 32): prompt of 512 tokens, 128 decoded tokens.

use std::time::Instant;

use burn::tensor::{Int, Tensor, TensorData};
use distill_stages::lm::CausalLm;
use distill_stages::runtime::Runtime;
use distill_stages::teacher::LoadedModel;

const PROMPT: usize = 512;
const DECODE: usize = 128;
const REPEATS: usize = 3;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (model, device) = match args.as_slice() {
        [m, dev, ..] => (m.clone(), dev.clone()),
        _ => return Err("usage: bench_teacher MODEL_DIR|MODEL.gguf DEVICE [DTYPE]".into()),
    };
    let dir = if model.ends_with(".gguf") {
        let out = format!("{model}.hf");
        if !std::path::Path::new(&out).join("config.json").exists() {
            distill_stages::teacher::export_gguf(model.as_ref(), out.as_ref())?;
        }
        eprintln!("exported {model} to {out}");
        out
    } else {
        model
    };
    let runtime = Runtime::parse(&device, args.get(2).map(String::as_str))?;
    let dtype = runtime.dtype_name();
    let m = LoadedModel::open(dir.as_ref(), runtime.clone())?;
    let sync = || runtime.device.sync().map_err(|e| format!("{e:?}"));
    for batch in [1usize, 32] {
        let run = |decode: usize| -> Result<(f64, f64), Box<dyn std::error::Error>> {
            let ids: Vec<i64> = (0..batch * PROMPT).map(|i| (i * 7919 % 30000) as i64 + 100).collect();
            let input: Tensor<2, Int> = Tensor::from_data(TensorData::new(ids, [batch, PROMPT]), &runtime.device);
            let mut cache = m.model.new_cache();
            let valid = vec![vec![true; PROMPT]; batch];
            sync()?;
            let t0 = Instant::now();
            let logits = m.model.forward(input, &valid, &m.rope, &mut cache);
            let mut next = logits.narrow(1, PROMPT - 1, 1).argmax(2).reshape([batch, 1]);
            sync()?;
            let prefill = t0.elapsed().as_secs_f64();
            let t1 = Instant::now();
            let step_valid = vec![vec![true]; batch];
            for _ in 0..decode {
                let logits = m.model.forward(next, &step_valid, &m.rope, &mut cache);
                next = logits.argmax(2).reshape([batch, 1]);
            }
            let _ = next.into_data();
            sync()?;
            Ok((prefill, t1.elapsed().as_secs_f64()))
        };
        // Warm-up over the same lengths as the timed runs: kernel compilation, fusion and
        // autotuning (keyed by shape) stay out of the timings. Then the median of REPEATS runs.
        run(DECODE)?;
        let mut runs = (0..REPEATS).map(|_| run(DECODE)).collect::<Result<Vec<_>, _>>()?;
        let median = |v: &mut Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        let prefill = median(&mut runs.iter().map(|r| r.0).collect());
        let decode = median(&mut runs.drain(..).map(|r| r.1).collect());
        println!(
            "{}",
            serde_json::json!({
                "impl": "distill", "device": device, "dtype": dtype, "batch": batch,
                "prompt": PROMPT, "decode": DECODE, "repeats": REPEATS,
                "prefill_tok_s": (batch * PROMPT) as f64 / prefill,
                "decode_tok_s": (batch * DECODE) as f64 / decode,
            })
        );
    }
    Ok(())
}
