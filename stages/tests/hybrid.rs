//! Hybrids against the committed reference fixtures of `tests/golden/make_hybrid_golden.py`
//! (plain PyTorch from METHOD.md: a tiny GQA Llama converted to 50% Mamba-2 and Mamba-1 hybrids
//! the reference way; rerun it to regenerate). The reference computation is
//! `model(input_ids).logits` of the converted `LlamaForCausalLM` with `model.layers.{0,2}`
//! replaced by Mamba layers (sequential recurrence).

use std::path::PathBuf;

use burn::tensor::{DType, Device, Int, Tensor, TensorData};
use distill_stages::generate::{generate, GenerateOptions};
use distill_stages::hybrid::{convert_teacher, write_hybrid_dir, ConvertOptions, Hybrid, InitFrom, MixerChoice};
use distill_stages::llama::{HfLlamaConfig, Rope};
use distill_stages::lm::CausalLm;
use distill_stages::weights::Weights;
use safetensors::SafeTensors;

fn golden(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/golden").join(name)
}

/// `input_ids` `[2, 12]` and the reference's logits, flattened.
fn read_golden(name: &str) -> (Vec<Vec<i64>>, Vec<f32>) {
    let bytes = std::fs::read(golden(name).join("golden.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let ids: Vec<i64> = st.tensor("input_ids").unwrap().data().chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().unwrap())).collect();
    let logits = st.tensor("logits").unwrap().data().chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
    (ids.chunks(12).map(<[i64]>::to_vec).collect(), logits)
}

fn ids_tensor(ids: &[Vec<i64>], device: &Device) -> Tensor<2, Int> {
    let flat: Vec<i64> = ids.iter().flatten().copied().collect();
    Tensor::from_data(TensorData::new(flat, [ids.len(), ids[0].len()]), device)
}

fn check_logits(name: &str) {
    let device = Device::flex();
    let (model, config) = Hybrid::from_hf_dir(&golden(name), DType::F32, &device).unwrap();
    assert_eq!(config.attention_layers, vec![1, 3]);
    let (ids, want) = read_golden(name);
    let valid = vec![vec![true; 12]; 2];
    let logits = model.forward(ids_tensor(&ids, &device), &valid, &Rope::new(&config.llama), &mut model.new_cache());
    let ours: Vec<f32> = logits.into_data().try_to_vec().unwrap();
    let worst = ours.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    eprintln!("{name}: max |ours - reference| = {worst:e}");
    assert!(worst < 1e-4, "{name}: {worst}");
}

#[test]
fn mamba2_hybrid_logits_match_the_reference() {
    check_logits("tiny-hybrid-mamba2");
}

#[test]
fn mamba1_hybrid_logits_match_the_reference() {
    check_logits("tiny-hybrid-mamba1");
}

/// Parameters the conversion draws at random (the reference's default inits); every other
/// tensor must equal the reference's conversion exactly.
const DRAWN: &[&str] = &["in_proj.weight", "in_proj_z.weight", "conv1d.weight", "conv1d.bias", "dt_bias", "dt_proj_down.weight", "dt_proj.weight", "dt_proj.bias"];

fn check_init(name: &str, mixer: MixerChoice, d_state: Option<usize>, drawn_too: &[&str]) {
    let teacher_dir = golden("tiny-hybrid-teacher");
    let teacher = Weights::open_hf_dir(&teacher_dir).unwrap();
    let llama = HfLlamaConfig::from_file(&teacher_dir.join("config.json")).unwrap().into_config().unwrap();
    let opts = ConvertOptions { attention_layers: vec![1, 3], mixer, init: InitFrom::Attention, d_state, chunk_size: 5, seed: 1, output_scale: 1.0 };
    let (ours, config) = convert_teacher(&teacher, &llama, &opts).unwrap();
    let reference = Weights::open_hf_dir(&golden(name)).unwrap();
    let keys = |w: &Weights| w.entries.keys().cloned().collect::<Vec<_>>();
    assert_eq!(keys(&ours), keys(&reference), "{name}: the same tensor names");
    let values = |w: &Weights, k: &str| w.data(k).unwrap().convert::<f32>().try_to_vec::<f32>().unwrap();
    let mut exact = 0;
    for (k, e) in &reference.entries {
        assert_eq!(ours.entries[k].shape, e.shape, "{k}");
        let (a, b) = (values(&ours, k), values(&reference, k));
        if k.ends_with("mamba.in_proj.weight") {
            // Rows x, B, C come from v_proj, k_proj, q_proj: [z 32 | x 16 | B 16 | C 32 | dt 4] x 32.
            assert_eq!(a[32 * 32..96 * 32], b[32 * 32..96 * 32], "{k}: x, B, C rows");
        } else if k.ends_with("mamba.A_log") && drawn_too.contains(&"A_log") {
            // Mamba-2 draws A = U(1, 16) per head (Mamba-1's log(1..=n) is exact).
            assert!(a.iter().all(|v| (0.0..=16f32.ln()).contains(v)), "{k}: {a:?}");
        } else if !DRAWN.iter().any(|d| k.ends_with(d)) {
            assert_eq!(a, b, "{k}");
            exact += 1;
        }
    }
    eprintln!("{name}: {exact} tensors equal bit for bit, in_proj's x/B/C rows too");
    // What we write loads back (every key consumed, every parameter filled) and runs.
    let dir = tempfile::tempdir().unwrap();
    write_hybrid_dir(&teacher_dir, dir.path(), &ours, &config).unwrap();
    let device = Device::flex();
    let (model, loaded) = Hybrid::from_hf_dir(dir.path(), DType::F32, &device).unwrap();
    assert_eq!(loaded.attention_layers, vec![1, 3]);
    let logits = model.forward(ids_tensor(&[vec![1, 2, 3]], &device), &[vec![true; 3]], &Rope::new(&llama), &mut model.new_cache());
    assert!(logits.into_data().try_to_vec::<f32>().unwrap().iter().all(|v| v.is_finite()));
}

#[test]
fn init_equals_the_reference_conversion_mamba2() {
    check_init("tiny-hybrid-mamba2", MixerChoice::Mamba2, None, &["A_log"]);
}

#[test]
fn init_equals_the_reference_conversion_mamba1() {
    check_init("tiny-hybrid-mamba1", MixerChoice::Mamba1, Some(4), &[]);
}

/// Greedy generation with mixed caches (KV for attention, conv and SSM states for Mamba) and
/// left padding equals recomputing each prompt's whole sequence at every step.
fn check_cached_generation(name: &str) {
    let device = Device::flex();
    let (model, config) = Hybrid::from_hf_dir(&golden(name), DType::F32, &device).unwrap();
    let rope = Rope::new(&config.llama);
    let prompts: Vec<Vec<u32>> = vec![vec![5, 17, 3, 40, 22, 9, 1], vec![33, 2, 8]];
    let opts = GenerateOptions { max_new_tokens: 6, ..Default::default() };
    let cached = generate(&model, &rope, &prompts, &opts, |_, _| false);
    for (prompt, got) in prompts.iter().zip(&cached) {
        let mut seq: Vec<i64> = prompt.iter().map(|&t| t as i64).collect();
        let mut want = Vec::new();
        for _ in 0..6 {
            let n = seq.len();
            let logits = model.forward(ids_tensor(std::slice::from_ref(&seq), &device), &[vec![true; n]], &rope, &mut model.new_cache());
            let next = logits.narrow(1, n - 1, 1).argmax(2).into_data().convert::<i64>().try_to_vec::<i64>().unwrap()[0];
            want.push(next as u32);
            seq.push(next);
        }
        assert_eq!(got, &want, "{name}: prompt {prompt:?}");
    }
}

#[test]
fn cached_generation_equals_recomputation_mamba2() {
    check_cached_generation("tiny-hybrid-mamba2");
}

#[test]
fn cached_generation_equals_recomputation_mamba1() {
    check_cached_generation("tiny-hybrid-mamba1");
}

/// `output_scale` moves only the converted layers' loudness: Mamba-2's gated-norm weight,
/// Mamba-1's `out_proj`; every other tensor is the scale-1 conversion's.
#[test]
fn output_scale_changes_only_the_output_gain() {
    let teacher_dir = golden("tiny-hybrid-teacher");
    let teacher = Weights::open_hf_dir(&teacher_dir).unwrap();
    let llama = HfLlamaConfig::from_file(&teacher_dir.join("config.json")).unwrap().into_config().unwrap();
    for (mixer, d_state, scaled) in [(MixerChoice::Mamba2, None, "mamba.norm.weight"), (MixerChoice::Mamba1, Some(4), "mamba.out_proj.weight")] {
        let convert = |output_scale| {
            let opts = ConvertOptions { attention_layers: vec![1, 3], mixer, init: InitFrom::Attention, d_state, chunk_size: 5, seed: 1, output_scale };
            convert_teacher(&teacher, &llama, &opts).unwrap().0
        };
        let (one, small) = (convert(1.0), convert(0.25));
        let values = |w: &Weights, k: &str| w.data(k).unwrap().convert::<f32>().try_to_vec::<f32>().unwrap();
        let mut seen = 0;
        for k in one.entries.keys() {
            let (a, b) = (values(&one, k), values(&small, k));
            if k.ends_with(scaled) {
                seen += 1;
                assert!(a.iter().zip(&b).all(|(a, b)| (a * 0.25 - b).abs() <= 1e-7 * a.abs().max(1.0)), "{k} scaled by 0.25");
            } else {
                assert_eq!(a, b, "{k} unchanged");
            }
        }
        assert_eq!(seen, 2, "{mixer:?}: one scaled tensor per converted layer");
    }
}
