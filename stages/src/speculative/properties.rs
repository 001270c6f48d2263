//! The properties issue 6 asks for, on tiny random models on the CPU: greedy speculative output
//! equals the verifier's own greedy output token for token (pure attention, Mamba-2 and Mamba-1
//! hybrids, pure Mamba; every K from 1 to 8; drafts that agree always, sometimes, never), and
//! sampled speculative output follows the verifier's distribution (chi-square).

use burn::module::{Module, ModuleMapper, Param};
use burn::tensor::{Device, Tensor, TensorData};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::decode::{speculative_generate, SpecModel, SpeculativeOptions, SpeculativeStats};
use crate::generate::{generate, GenerateOptions, Sampling};
use crate::hybrid::{Hybrid, HybridConfig, MixerConfig};
use crate::llama::{LlamaConfig, Rope};
use crate::mamba::{Mamba1Config, Mamba2Config};

fn config(vocab: usize, layers: usize, attention: &[usize], mamba1: bool) -> HybridConfig {
    let llama = LlamaConfig::new(vocab, 16, 32, layers, 4, 2, 4);
    let mixer = if mamba1 {
        MixerConfig::Mamba1(Mamba1Config::new(16, 16, 8).with_d_state(4))
    } else {
        MixerConfig::Mamba2(Mamba2Config::new(16, 4, 2, 4).with_chunk_size(8))
    };
    HybridConfig { llama, attention_layers: attention.to_vec(), mixer }
}

/// Redraws every non-constant parameter from a seeded generator, uniform in `±1/sqrt(fan-in)`:
/// burn's own initializers draw from a generator shared by concurrently running tests, so the
/// models (and the outcome) would change from run to run.
struct Reseed(StdRng);

impl ModuleMapper for Reseed {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let t = param.val();
        let (dims, device) = (t.dims(), t.device());
        let values: Vec<f32> = t.into_data().convert::<f32>().try_to_vec().unwrap();
        if values.iter().all(|v| *v == values[0]) {
            return param; // norms, D, constant dt bias and A_log: no draw to replace
        }
        // A range from the shape alone (the drawn values must not leak in): 1/sqrt(fan-in).
        let r = if D == 1 { 0.5 } else { 1.0 / (dims[0] as f32).sqrt() };
        let drawn: Vec<f32> = values.iter().map(|_| self.0.random_range(-r..=r)).collect();
        Param::from_tensor(Tensor::from_data(TensorData::new(drawn, dims), &device))
    }
}

fn seeded(cfg: &HybridConfig, seed: u64) -> Hybrid {
    cfg.init(&Device::flex()).map(&mut Reseed(StdRng::seed_from_u64(seed)))
}

/// The verifier with seeded noise on its head: agrees with it on some tokens, not all.
fn noisy_copy(model: &Hybrid, scale: f32, seed: u64) -> Hybrid {
    let mut m = model.clone();
    let mut rng = StdRng::seed_from_u64(seed);
    if let Some(head) = m.lm_head.as_mut() {
        let w = head.weight.val();
        let (dims, device) = (w.dims(), w.device());
        let noise: Vec<f32> = (0..dims[0] * dims[1]).map(|_| rng.random_range(-scale..=scale)).collect();
        head.weight = Param::from_tensor(w + Tensor::from_data(TensorData::new(noise, dims), &device));
    }
    m
}

/// The verifiers every greedy property runs: pure attention, both hybrids, pure Mamba.
fn verifiers(vocab: usize) -> [(&'static str, HybridConfig); 4] {
    [
        ("attention", config(vocab, 3, &[0, 1, 2], false)),
        ("hybrid mamba2", config(vocab, 3, &[1], false)),
        ("hybrid mamba1", config(vocab, 3, &[1], true)),
        ("pure mamba", config(vocab, 2, &[], false)),
    ]
}

/// The same property for rounds replayed from a captured graph (`speculative::graph`): on the
/// CPU a replay re-runs the round, so what this checks is the device-side round itself (the
/// draft's own argmax fed back, the leading-match count, the output scatter, the rollback by
/// position and by picking each Mamba layer's state), at every K and every acceptance.
#[test]
fn greedy_rounds_on_a_graph_equal_the_verifiers_greedy_output() {
    let vocab = 64;
    let mut rng = StdRng::seed_from_u64(7);
    let prompts: Vec<Vec<u32>> = [1, 5].iter().map(|&n| (0..n).map(|_| rng.random_range(0..vocab as u32)).collect()).collect();
    let mut by_draft = [SpeculativeStats::default(); 3];
    for (name, cfg) in verifiers(vocab) {
        let verifier = seeded(&cfg, 1);
        let rope = Rope::new(&cfg.llama);
        let other_cfg = config(vocab, 2, if name == "attention" { &[] } else { &[0, 1] }, false);
        let drafts = [("itself", verifier.clone()), ("noisy", noisy_copy(&verifier, 0.08, 2)), ("unrelated", seeded(&other_cfg, 3))];
        for prompt in &prompts {
            let plain_opts = GenerateOptions { max_new_tokens: 12, ..GenerateOptions::default() };
            let plain = generate(&verifier, &rope, std::slice::from_ref(prompt), &plain_opts, |_, _| false).remove(0);
            for ((draft_name, draft), total) in drafts.iter().zip(by_draft.iter_mut()) {
                for k in 1..=8 {
                    let opts = SpeculativeOptions { k, max_new_tokens: 12, sampling: Sampling::Greedy, seed: 0, eos: Vec::new() };
                    let v = SpecModel { model: &verifier, rope: &rope };
                    let d = SpecModel { model: draft, rope: &rope };
                    let (out, s) = crate::speculative::speculative_on_graph(v, d, prompt, &opts, |_| false).unwrap();
                    assert_eq!(out, plain, "{name} verifier, {draft_name} draft, K {k}, prompt {prompt:?}");
                    assert_eq!(s.tokens, out.len());
                    total.add(&s);
                }
            }
            // A stop token ends the output where plain decoding's ends.
            let eos = plain[4];
            let opts = SpeculativeOptions { k: 3, max_new_tokens: 12, sampling: Sampling::Greedy, seed: 0, eos: vec![eos] };
            let (out, _) = crate::speculative::speculative_on_graph(SpecModel { model: &verifier, rope: &rope }, SpecModel { model: &drafts[1].1, rope: &rope }, prompt, &opts, |_| false).unwrap();
            let cut = plain.iter().position(|&t| t == eos).unwrap() + 1;
            assert_eq!(out, plain[..cut], "{name}: stops at the stop token");
        }
    }
    let rates: Vec<f64> = by_draft.iter().map(SpeculativeStats::acceptance_rate).collect();
    eprintln!("on a graph, acceptance by draft (itself, noisy, unrelated): {rates:.2?}");
    assert!(rates[0] == 1.0 && rates[1] > 0.1 && rates[1] < 0.9 && rates[2] < 0.1, "{rates:?}");
}

/// Prompts one after the other from one captured round, its buffers written over for each:
/// what each prompt's own capture gives, token for token and round for round.
#[test]
fn one_captured_round_serves_prompt_after_prompt() {
    let vocab = 64;
    let mut rng = StdRng::seed_from_u64(9);
    let prompts: Vec<Vec<u32>> = [5, 1, 12, 3].iter().map(|&n| (0..n).map(|_| rng.random_range(0..vocab as u32)).collect()).collect();
    for (name, cfg) in verifiers(vocab) {
        let verifier = seeded(&cfg, 1);
        let rope = Rope::new(&cfg.llama);
        let draft = noisy_copy(&verifier, 0.08, 2);
        let (v, d) = (SpecModel { model: &verifier, rope: &rope }, SpecModel { model: &draft, rope: &rope });
        for k in [1, 3, 8] {
            let opts = SpeculativeOptions { k, max_new_tokens: 12, sampling: Sampling::Greedy, seed: 0, eos: Vec::new() };
            let mut shown = vec![0; prompts.len()];
            let each = crate::speculative::speculative_each_on_graph(v, d, &prompts, &opts, |i, _| {
                shown[i] += 1;
                false
            })
            .unwrap();
            for (i, prompt) in prompts.iter().enumerate() {
                let (alone, stats) = crate::speculative::speculative_on_graph(v, d, prompt, &opts, |_| false).unwrap();
                let counts = |s: &SpeculativeStats| (s.rounds, s.drafted, s.accepted, s.tokens);
                assert_eq!((&each[i].0, counts(&each[i].1)), (&alone, counts(&stats)), "{name}, K {k}, prompt {i}");
                assert_eq!(shown[i], alone.len(), "{name}, K {k}: every token shown under its prompt");
            }
        }
    }
}

#[test]
fn greedy_speculative_output_equals_the_verifiers_greedy_output() {
    let vocab = 64;
    let verifiers = verifiers(vocab);
    let mut rng = StdRng::seed_from_u64(6);
    let prompts: Vec<Vec<u32>> = [1, 5].iter().map(|&n| (0..n).map(|_| rng.random_range(0..vocab as u32)).collect()).collect();
    let mut by_draft = [SpeculativeStats::default(); 3];
    for (name, cfg) in verifiers {
        let verifier = seeded(&cfg, 1);
        let rope = Rope::new(&cfg.llama);
        let other_cfg = config(vocab, 2, if name == "attention" { &[] } else { &[0, 1] }, false);
        let drafts = [("itself", verifier.clone()), ("noisy", noisy_copy(&verifier, 0.08, 2)), ("unrelated", seeded(&other_cfg, 3))];
        for prompt in &prompts {
            let plain_opts = GenerateOptions { max_new_tokens: 10, ..GenerateOptions::default() };
            let plain = generate(&verifier, &rope, std::slice::from_ref(prompt), &plain_opts, |_, _| false).remove(0);
            for ((draft_name, draft), total) in drafts.iter().zip(by_draft.iter_mut()) {
                let mut stats = SpeculativeStats::default();
                for k in 1..=8 {
                    let opts = SpeculativeOptions { k, max_new_tokens: 10, sampling: Sampling::Greedy, seed: 0, eos: Vec::new() };
                    let v = SpecModel { model: &verifier, rope: &rope };
                    let d = SpecModel { model: draft, rope: &rope };
                    let (out, s) = speculative_generate(v, d, prompt, &opts, |_| false).unwrap();
                    assert_eq!(out, plain, "{name} verifier, {draft_name} draft, K {k}, prompt {prompt:?}");
                    stats.add(&s);
                }
                eprintln!("{name} <- {draft_name}: acceptance {:.2}, {:.2} tokens/round", stats.acceptance_rate(), stats.tokens_per_round());
                if *draft_name == "itself" {
                    assert_eq!(stats.accepted, stats.drafted);
                }
                total.add(&stats);
            }
        }
    }
    // Full, partial and (almost) no acceptance all happened: rollbacks of every length ran.
    let rates: Vec<f64> = by_draft.iter().map(SpeculativeStats::acceptance_rate).collect();
    eprintln!("acceptance by draft (itself, noisy, unrelated): {rates:.2?}");
    assert!(rates[0] == 1.0 && rates[1] > 0.1 && rates[1] < 0.9 && rates[2] < 0.1, "{rates:?}");
}

/// The chi-square quantile for `df` degrees of freedom at upper-tail normal quantile `z`
/// (Wilson-Hilferty; within 1% of the exact value for df >= 3).
fn chi_square_critical(df: usize, z: f64) -> f64 {
    let v = 2.0 / (9.0 * df as f64);
    df as f64 * (1.0 - v + z * v.sqrt()).powi(3)
}

/// Pearson's statistic and its degrees of freedom; cells expected below 5 are pooled into one.
fn chi_square(observed: &[f64], expected: &[f64]) -> (f64, usize) {
    let (mut stat, mut cells, mut pooled_o, mut pooled_e) = (0.0, 0, 0.0, 0.0);
    for (o, e) in observed.iter().zip(expected) {
        if *e < 5.0 {
            pooled_o += o;
            pooled_e += e;
        } else {
            stat += (o - e).powi(2) / e;
            cells += 1;
        }
    }
    if pooled_e > 0.0 {
        stat += (pooled_o - pooled_e).powi(2) / pooled_e.max(1e-9);
        cells += 1;
    }
    (stat, cells - 1)
}

/// The verifier's sampling distribution after `tokens`.
fn next_probs(model: &Hybrid, rope: &Rope, tokens: &[u32], sampling: &Sampling) -> Vec<f64> {
    let rows = SpecModel { model, rope }.rows(tokens, &mut super::cache::SpecCache::new(model.model.layers.len()));
    let p = crate::generate::LogitsProcessor::new(sampling.clone(), 0).probs(rows.last().expect("non-empty"));
    p.into_iter().map(f64::from).collect()
}

/// The first two tokens of sampled speculative decoding over 1500 seeds, against the verifier's
/// exact joint distribution `p(a) p(b | a)` over a vocabulary of 8 (64 cells), at significance
/// 0.001. The draft (an unrelated pure Mamba model) has a distribution the test tells apart.
#[test]
fn sampled_speculative_output_follows_the_verifiers_distribution() {
    let (vocab, n) = (8usize, 1500usize);
    let (vcfg, dcfg) = (config(vocab, 2, &[1], false), config(vocab, 2, &[], false));
    let (verifier, draft) = (seeded(&vcfg, 4), seeded(&dcfg, 5));
    let rope = Rope::new(&vcfg.llama);
    let sampling = Sampling::Temperature { temperature: 1.0 };
    let prompt = [3u32];
    let joint = |model: &Hybrid| -> Vec<f64> {
        let first = next_probs(model, &rope, &prompt, &sampling);
        (0..vocab as u32).flat_map(|a| next_probs(model, &rope, &[3, a], &sampling).into_iter().map(|pb| pb * first[a as usize]).collect::<Vec<_>>()).collect()
    };
    let expected: Vec<f64> = joint(&verifier).iter().map(|p| p * n as f64).collect();
    let mut observed = vec![0.0; vocab * vocab];
    let mut stats = SpeculativeStats::default();
    for seed in 0..n as u64 {
        let opts = SpeculativeOptions { k: 3, max_new_tokens: 4, sampling: sampling.clone(), seed, eos: Vec::new() };
        let (v, d) = (SpecModel { model: &verifier, rope: &rope }, SpecModel { model: &draft, rope: &rope });
        let (out, s) = speculative_generate(v, d, &prompt, &opts, |_| false).unwrap();
        observed[out[0] as usize * vocab + out[1] as usize] += 1.0;
        stats.add(&s);
    }
    let (stat, df) = chi_square(&observed, &expected);
    let critical = chi_square_critical(df, 3.09); // upper 0.001
    // The draft's own joint distribution, as counts, is far outside: the test has power.
    let draft_counts: Vec<f64> = joint(&draft).iter().map(|q| q * n as f64).collect();
    let (draft_stat, _) = chi_square(&draft_counts, &expected);
    eprintln!("chi-square {stat:.1} on {df} df (critical {critical:.1}); the draft's distribution scores {draft_stat:.1}; acceptance {:.2}", stats.acceptance_rate());
    assert!(stat < critical, "{stat} >= {critical}");
    assert!(draft_stat > 3.0 * critical, "{draft_stat}");
    assert!(stats.acceptance_rate() > 0.05 && stats.acceptance_rate() < 0.95, "{stats:?}");
}

/// A draft that is the verifier itself proposes exactly what the verifier would say: every
/// drafted token is accepted, for pure attention, hybrid and pure Mamba models and every K.
#[test]
fn the_verifier_as_its_own_draft_is_always_accepted() {
    for attention in [&[0usize, 1][..], &[1], &[]] {
        let cfg = config(32, 2, attention, false);
        let model = seeded(&cfg, 7);
        let rope = Rope::new(&cfg.llama);
        for k in [1, 3, 5] {
            let opts = SpeculativeOptions { k, max_new_tokens: 12, sampling: Sampling::Greedy, seed: 0, eos: Vec::new() };
            let me = || SpecModel { model: &model, rope: &rope };
            let (_, stats) = speculative_generate(me(), me(), &[3, 9, 4], &opts, |_| false).unwrap();
            assert_eq!(stats.accepted, stats.drafted, "attention {attention:?}, K {k}: {stats:?}");
        }
    }
}

/// The same in bf16, where two computations of one value round differently: the verifier reads
/// the prompt as plain decoding's prefill does and verifies with the decode step's arithmetic,
/// so greedy output stays identical (before, a pure Mamba verifier's output departed from plain
/// greedy decoding after 11-17 tokens on every prompt).
#[test]
fn greedy_speculative_output_equals_the_verifiers_greedy_output_in_bf16() {
    struct ToBf16;
    impl ModuleMapper for ToBf16 {
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
            Param::from_tensor(param.val().cast(burn::tensor::DType::BF16))
        }
    }
    let vocab = 64;
    let verifiers = verifiers(vocab);
    let mut rng = StdRng::seed_from_u64(6);
    let prompts: Vec<Vec<u32>> = [1, 5, 40].iter().map(|&n| (0..n).map(|_| rng.random_range(0..vocab as u32)).collect()).collect();
    for (name, cfg) in verifiers {
        let verifier = seeded(&cfg, 1).map(&mut ToBf16);
        let draft = noisy_copy(&seeded(&cfg, 1), 0.08, 2).map(&mut ToBf16);
        let rope = Rope::new(&cfg.llama);
        for prompt in &prompts {
            let plain_opts = GenerateOptions { max_new_tokens: 24, ..Default::default() };
            let plain = generate(&verifier, &rope, std::slice::from_ref(prompt), &plain_opts, |_, _| false).remove(0);
            for k in [1, 2, 4, 8] {
                let opts = SpeculativeOptions { k, max_new_tokens: 24, sampling: Sampling::Greedy, seed: 0, eos: Vec::new() };
                let (spec, _) = speculative_generate(SpecModel { model: &verifier, rope: &rope }, SpecModel { model: &draft, rope: &rope }, prompt, &opts, |_| false).unwrap();
                assert_eq!(spec, plain, "{name} verifier in bf16, K {k}, prompt of {}", prompt.len());
            }
        }
    }
}

/// The stage's account of a greedy mismatch: where the outputs part, and the verifier's logits of
/// the two tokens there, read after the common prefix.
#[test]
fn a_departure_names_the_first_differing_token_and_the_logits_between_them() {
    let cfg = config(11, 2, &[1], false);
    let model = seeded(&cfg, 5);
    let rope = Rope::new(&cfg.llama);
    let v = SpecModel { model: &model, rope: &rope };
    let prompt = [3u32, 7, 1];
    let d = crate::kinds::speculative::departure(v, &prompt, &[4, 2, 9, 9], &[4, 2, 6]);
    assert_eq!((d.at, d.plain, d.speculative), (2, Some(9), Some(6)));
    let row = v.logits_after(&[3, 7, 1, 4, 2]);
    assert_eq!(d.gap, (row[9] - row[6]).abs());
    assert_eq!(d.logit, row[9].max(row[6]));
    assert!(d.gap > 0.0);
    // One output ending first is a departure with nothing to compare.
    let d = crate::kinds::speculative::departure(v, &prompt, &[4, 2], &[4, 2, 6]);
    assert_eq!((d.at, d.plain, d.speculative, d.gap), (2, None, Some(6), 0.0));
}

/// Inference models fuse their projections (`LoadedModel::for_inference`): the same logits as
/// the three (or two) products apart, prefill and decode steps alike, and so the same greedy
/// output; a fused verifier's speculative output still equals plain greedy decoding.
#[test]
fn fused_projections_compute_what_the_separate_ones_do() {
    use crate::lm::CausalLm;
    let vocab = 64;
    let mut rng = StdRng::seed_from_u64(11);
    let prompt: Vec<u32> = (0..7).map(|_| rng.random_range(0..vocab as u32)).collect();
    for (name, cfg) in verifiers(vocab) {
        let apart = seeded(&cfg, 1);
        let mut fused = apart.clone();
        fused.fuse_projections();
        let attention_layers = fused.model.layers.iter().filter(|l| l.self_attn.as_ref().is_some_and(|a| a.fused_qkv.is_some())).count();
        assert_eq!(attention_layers, cfg.attention_layers.len(), "{name}");
        assert!(fused.model.layers.iter().all(|l| l.mlp.fused_gate_up.is_some()), "{name}");
        // The separate weights, now views of the fused ones, hold what they held.
        for (f, a) in fused.model.layers.iter().zip(&apart.model.layers) {
            let same = |x: Tensor<2>, y: Tensor<2>| x.into_data().assert_eq(&y.into_data(), true);
            if let (Some(fa), Some(aa)) = (&f.self_attn, &a.self_attn) {
                for (x, y) in [(&fa.q_proj, &aa.q_proj), (&fa.k_proj, &aa.k_proj), (&fa.v_proj, &aa.v_proj)] {
                    same(x.weight.val(), y.weight.val());
                }
            }
            same(f.mlp.gate_proj.weight.val(), a.mlp.gate_proj.weight.val());
            same(f.mlp.up_proj.weight.val(), a.mlp.up_proj.weight.val());
        }
        let rope = Rope::new(&cfg.llama);
        let ids: Vec<i64> = prompt.iter().map(|&t| i64::from(t)).collect();
        let logits = |m: &Hybrid| {
            let tokens = Tensor::from_data(TensorData::new(ids.clone(), [1, ids.len()]), &Device::flex());
            m.forward(tokens, &[vec![true; ids.len()]], &rope, &mut m.new_cache())
        };
        let diff = (logits(&fused) - logits(&apart)).abs().max().into_scalar::<f32>();
        assert!(diff < 1e-5, "{name}: logits differ by {diff}");
        // A large model's fusion leaves the rotated columns out.
        let mut unrotated = apart.clone();
        for layer in &mut unrotated.model.layers {
            if let Some(attn) = &mut layer.self_attn {
                attn.fuse(false);
            }
        }
        let diff = (logits(&unrotated) - logits(&apart)).abs().max().into_scalar::<f32>();
        assert!(diff < 1e-5, "{name}: without the rotated columns, logits differ by {diff}");
        let opts = GenerateOptions { max_new_tokens: 12, ..GenerateOptions::default() };
        let plain = generate(&apart, &rope, std::slice::from_ref(&prompt), &opts, |_, _| false).remove(0);
        assert_eq!(generate(&fused, &rope, std::slice::from_ref(&prompt), &opts, |_, _| false).remove(0), plain, "{name}: greedy decode steps");
        let draft = noisy_copy(&apart, 0.08, 2);
        let spec = SpeculativeOptions { k: 3, max_new_tokens: 12, sampling: Sampling::Greedy, seed: 0, eos: Vec::new() };
        let (out, _) = speculative_generate(SpecModel { model: &fused, rope: &rope }, SpecModel { model: &draft, rope: &rope }, &prompt, &spec, |_| false).unwrap();
        assert_eq!(out, plain, "{name}: a fused verifier's rounds");
        let mut fused_draft = draft.clone();
        fused_draft.fuse_projections();
        let (out, _) = crate::speculative::speculative_on_graph(SpecModel { model: &fused, rope: &rope }, SpecModel { model: &fused_draft, rope: &rope }, &prompt, &spec, |_| false).unwrap();
        assert_eq!(out, plain, "{name}: fused models' rounds on a graph");
    }
}
