//! What a decode step costs when its launches replay as one CUDA graph (burn's `capture`):
//! plain decoding at batch 1 is launch-bound (hundreds of small kernels a token; session 5:
//! 36.7 ms a token for the 50% hybrid against ~22 for transformers in eager mode), and a replay
//! issues them as one. A probe for whether to build decoding on graphs: the same step (the same
//! token at the same position, from the same cache) run eagerly and replayed, timed, and their
//! logits compared. On a backend without graphs (the CPU) a replay re-runs the step.

use std::time::Instant;

use burn::tensor::{capture, Int, Tensor, TensorData};
use serde::Serialize;

use super::{sync, BenchModel};
use crate::error::Result;
use crate::generate::graph::generate_on_graph;
use crate::generate::{generate, GenerateOptions, Sampling, StepGraph};
use crate::speculative::{speculative_decode, verification_ms, RoundCost, SpecModel, SpeculativeOptions};
use crate::lm::CausalLm;
use crate::runtime::Runtime;

#[derive(Debug, Clone, Serialize)]
pub struct GraphResult {
    pub bench: &'static str,
    pub model: String,
    pub device: String,
    pub dtype: &'static str,
    pub batch: usize,
    pub prompt: usize,
    pub steps: usize,
    /// One plain decode step as `generate` runs it, host work included (positions, rotary
    /// tables and the cache mask built and uploaded).
    pub plain_ms: f64,
    /// One decode step, its host work excluded (inputs prepared once), run eagerly.
    pub eager_ms: f64,
    /// The same step replayed from its captured graph.
    pub replay_ms: f64,
    pub speedup: f64,
    /// Largest difference between the eager step's logits and a replay's.
    pub max_abs_diff: f64,
    /// Greedy decoding of `steps` tokens: plain (`generate`), ms per token after the first.
    pub decode_plain_ms: f64,
    /// The same tokens, each step replayed from one graph (`generate::graph`), ms per token.
    pub decode_graph_ms: f64,
    /// Whether both chose the same tokens (every row; rows after the first are left-padded).
    pub same_tokens: bool,
    /// Per row, the first token where they differ (0 = the prompt's own next token; a row
    /// of different lengths differs where the shorter ends), if any: a left-padded row that
    /// parts at once is a padding bug, one that parts late a near-tie rounded differently.
    pub first_mismatch: Vec<Option<usize>>,
    /// The first 16 tokens of each (row 0), plain then on the graph.
    pub tokens: [Vec<u32>; 2],
    /// Steps that replayed the graph (the others ran while it was captured).
    pub graph_replays: usize,
    /// Which inference kernels ran.
    #[serde(flatten)]
    pub kernels: super::InferenceKernels,
    /// With `--speculative K,..`: row 0's prompt decoded by speculative rounds on graphs, per K.
    pub speculative: Vec<Rounds>,
}

/// Speculative rounds on graphs for row 0's prompt. With the model as its own draft every draft
/// should be accepted (up to near-ties the one-token and `K + 1`-token passes round
/// differently) and the tokens should be plain greedy decoding's: a probe of the rounds'
/// mechanics. With a small random draft (`--draft-layers`) a probe of what a round costs
/// against a plain step, and so of the acceptance a trained draft would need.
#[derive(Debug, Clone, Serialize)]
pub struct Rounds {
    pub k: usize,
    pub draft: String,
    /// Milliseconds a round once under way, and that in plain steps on a graph
    /// (`decode_graph_ms`).
    pub round_ms: f64,
    pub round_in_steps: f64,
    /// Of a round, the verifier's check alone (its pass over the `K + 1` tokens and its Mamba
    /// layers' rollback, replayed from a graph of its own), and that in plain steps: the rest
    /// of `round_ms` is the draft's `K + 1` steps and the bookkeeping.
    pub verify_ms: f64,
    pub verify_in_steps: f64,
    /// The acceptance rate (accepted over drafted) such rounds need to break even with plain
    /// decoding on a graph and to double it (`None`: none would).
    pub acceptance_for_break_even: Option<f64>,
    pub acceptance_for_2x: Option<f64>,
    /// Once under way (the rounds replayed after the capture), against `decode_graph_ms`.
    pub ms_per_token: f64,
    /// The whole call: both prefills, the capture and its rounds, the replays.
    pub ms_per_token_end_to_end: f64,
    pub tokens_per_round: f64,
    pub acceptance: f64,
    /// Where its tokens first differ from plain greedy decoding's row 0, if anywhere.
    pub first_mismatch: Option<usize>,
}

pub fn run(m: &BenchModel, runtime: &Runtime, batch: usize, prompt: usize, steps: usize, speculative: &[usize], draft: Option<&BenchModel>) -> Result<GraphResult> {
    let device = &runtime.device;
    let vocab = m.config.llama.vocab_size;
    let ids: Vec<i64> = (0..batch * prompt).map(|i| ((i * 7919 + 13) % vocab) as i64).collect();
    let mut cache = m.model.new_cache();
    let logits = m.model.forward(Tensor::from_data(TensorData::new(ids, [batch, prompt]), device), &vec![vec![true; prompt]; batch], &m.rope, &mut cache);
    let next: Tensor<2, Int> = logits.narrow(1, prompt - 1, 1).argmax(2).reshape([batch, 1]);
    // The step's host part once; every run below starts from these same buffers.
    let mut kv = cache.kv.clone();
    let inputs = m.model.step_inputs(&vec![vec![true]; batch], &m.rope, &mut kv, device);
    let step = || {
        let (mut kv, mut states) = (kv.clone(), cache.mamba.clone());
        m.model.forward_from(next.clone(), &inputs, &mut kv, |i, mixer, u, _| mixer.forward(u, None, &mut states[i]))
    };
    let plain = || m.model.forward(next.clone(), &vec![vec![true]; batch], &m.rope, &mut cache.clone());
    let _ = plain();
    let plain_s = per_step(runtime, steps, plain)?;
    let eager = step();
    let eager_s = per_step(runtime, steps, step)?;

    let mut graph = capture(device, step);
    // SAFETY: everything the step reads (`next`, `inputs`, the cache's buffers) outlives the
    // graph, which holds its own output; nothing else runs on this device meanwhile.
    let replayed = unsafe { graph.replay() }.clone();
    let max_abs_diff = f64::from((eager.clone() - replayed).abs().max().into_scalar::<f32>());
    // SAFETY: as above.
    let replay_s = per_step(runtime, steps, || unsafe { graph.replay() }.clone())?;
    // Whole generations: the plain loop against the one on a graph, the same greedy tokens.
    // Rows after the first a little shorter each: left padding, as batched generation has it.
    let prompts: Vec<Vec<u32>> = (0..batch).map(|r| (0..prompt - (r * 3).min(prompt - 1)).map(|i| ((i * 7919 + r * 104_729 + 13) % vocab) as u32).collect()).collect();
    let plain_tokens = |n: usize| {
        let opts = GenerateOptions { max_new_tokens: n, graph: StepGraph::Off, ..Default::default() };
        let t0 = Instant::now();
        let out = generate(&m.model, &m.rope, &prompts, &opts, |_, _| false);
        (out, t0.elapsed().as_secs_f64())
    };
    let _ = plain_tokens(2);
    // The fastest of two runs each: a first run at a new shape can still pay for a compilation
    // or an allocation the warm-up did not reach, and at batch 32 on the H200 one such run once
    // took longer for one token than another for 33 (a negative time a token, session 16).
    let (_, one) = plain_tokens(1);
    let (plain_out, all) = plain_tokens(steps + 1);
    let one = one.min(plain_tokens(1).1);
    let all = all.min(plain_tokens(steps + 1).1);
    let opts = GenerateOptions { max_new_tokens: steps + 1, ..Default::default() };
    let graph_out = generate_on_graph(&m.model, &m.rope, &prompts, &opts, |_, _| false);
    let step_ms = 1e3 * graph_out.replay_seconds / graph_out.replays.max(1) as f64;
    let speculative = speculative.iter().map(|&k| rounds(m, draft, &prompts[0], k, steps + 1, &plain_out[0], step_ms)).collect::<Result<_>>()?;
    Ok(GraphResult {
        bench: "decode_graph",
        model: m.label.clone(),
        device: format!("{device:?}"),
        dtype: runtime.dtype_name(),
        batch,
        prompt,
        steps,
        plain_ms: 1e3 * plain_s,
        eager_ms: 1e3 * eager_s,
        replay_ms: 1e3 * replay_s,
        speedup: eager_s / replay_s,
        max_abs_diff,
        decode_plain_ms: 1e3 * (all - one) / steps.max(1) as f64,
        decode_graph_ms: step_ms,
        same_tokens: graph_out.tokens == plain_out,
        first_mismatch: plain_out.iter().zip(&graph_out.tokens).map(|(a, b)| first_difference(a, b)).collect(),
        tokens: [plain_out[0].iter().take(16).copied().collect(), graph_out.tokens[0].iter().take(16).copied().collect()],
        graph_replays: graph_out.replays,
        kernels: super::InferenceKernels::of(&m.model),
        speculative,
    })
}

/// Speculative rounds of `k` drafts for `prompt` on graphs, drafted by `draft` (else the model
/// itself), against plain decoding's `plain` tokens and step of `step_ms`.
fn rounds(m: &BenchModel, draft: Option<&BenchModel>, prompt: &[u32], k: usize, n: usize, plain: &[u32], step_ms: f64) -> Result<Rounds> {
    let me = SpecModel { model: &m.model, rope: &m.rope };
    let d = draft.map_or(me, |d| SpecModel { model: &d.model, rope: &d.rope });
    let opts = SpeculativeOptions { k, max_new_tokens: n, sampling: Sampling::Greedy, seed: 0, eos: Vec::new() };
    let _ = speculative_decode(me, d, prompt, &SpeculativeOptions { max_new_tokens: 2 * (k + 1), ..opts.clone() }, StepGraph::On, |_| false)?;
    let t0 = Instant::now();
    let (tokens, stats) = speculative_decode(me, d, prompt, &opts, StepGraph::On, |_| false)?;
    let cost = RoundCost::new(stats.round_ms(), step_ms, k);
    let verify_ms = verification_ms(me, prompt, k, n)?;
    Ok(Rounds {
        k,
        draft: draft.map_or_else(|| "itself".to_string(), |d| d.label.clone()),
        round_ms: cost.round_ms,
        round_in_steps: cost.in_steps,
        verify_ms,
        verify_in_steps: verify_ms / step_ms,
        acceptance_for_break_even: cost.for_break_even,
        acceptance_for_2x: cost.for_2x,
        ms_per_token: 1e3 / stats.decode_tokens_per_s().max(1e-9),
        ms_per_token_end_to_end: 1e3 * t0.elapsed().as_secs_f64() / tokens.len().max(1) as f64,
        tokens_per_round: stats.tokens_per_round(),
        acceptance: stats.acceptance_rate(),
        first_mismatch: first_difference(plain, &tokens),
    })
}

fn first_difference(a: &[u32], b: &[u32]) -> Option<usize> {
    a.iter().zip(b).position(|(x, y)| x != y).or((a.len() != b.len()).then(|| a.len().min(b.len())))
}

/// Seconds per call of `f` over `steps` calls, the device's queue drained before and after.
fn per_step<T>(runtime: &Runtime, steps: usize, mut f: impl FnMut() -> T) -> Result<f64> {
    sync(runtime)?;
    let t0 = Instant::now();
    for _ in 0..steps {
        let _ = f();
    }
    sync(runtime)?;
    Ok(t0.elapsed().as_secs_f64() / steps.max(1) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::ModelSource;

    /// The step split into its host part (once) and its device part (replayed) computes what a
    /// plain decode step from the same cache computes; on the CPU a replay equals the eager run.
    #[test]
    fn the_replayable_step_is_the_plain_decode_step() {
        let config = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/golden/tiny-gqa-untied/config.json");
        let runtime = Runtime::cpu();
        let m = BenchModel::load(&ModelSource::Random(config), 0.5, &runtime).unwrap();
        let r = run(&m, &runtime, 2, 8, 6, &[2], None).unwrap();
        assert_eq!(r.max_abs_diff, 0.0);
        assert!(r.same_tokens, "{r:?}");
        let s = &r.speculative[0];
        assert_eq!((s.first_mismatch, s.acceptance), (None, 1.0), "self-drafted rounds take every draft: {s:?}");
        assert!(s.tokens_per_round > 1.0 && s.tokens_per_round <= 3.0, "K = 2: at most 3 tokens a verifier pass: {s:?}");
        // A small random draft: plain greedy's tokens still, and what its rounds cost.
        let draft = BenchModel::random_transformer(&m.config.llama, 1, &runtime).unwrap();
        let r = run(&m, &runtime, 1, 8, 6, &[1, 3], Some(&draft)).unwrap();
        assert_eq!(r.speculative.iter().map(|s| s.k).collect::<Vec<_>>(), [1, 3]);
        for s in &r.speculative {
            assert_eq!(s.first_mismatch, None, "{s:?}");
            assert!(s.round_ms > 0.0 && s.round_in_steps > 0.0 && s.draft.contains("1-layer"), "{s:?}");
            assert!(s.verify_ms > 0.0 && s.verify_in_steps.is_finite(), "{s:?}");
            assert!(s.acceptance_for_break_even.is_none_or(|a| (0.0..=1.0).contains(&a)), "{s:?}");
        }
        // The model with its final norm perturbed: the same hidden states, a greedy choice of its
        // own where the top logits are near, and still plain greedy's tokens out of the rounds.
        let noisy = m.noisy_copy(1.0, 1);
        let r = run(&m, &runtime, 1, 8, 12, &[2, 4], Some(&noisy)).unwrap();
        for s in &r.speculative {
            assert_eq!(s.first_mismatch, None, "{s:?}");
            assert!(s.draft.contains("1 ± 1") && s.acceptance < 1.0, "a perturbed head rejects some drafts: {s:?}");
        }

        let mut cache = m.model.new_cache();
        let ids: Vec<i64> = (0..16).map(|i| (i * 7919 + 13) as i64 % m.config.llama.vocab_size as i64).collect();
        let logits = m.model.forward(Tensor::from_data(TensorData::new(ids, [2, 8]), &runtime.device), &vec![vec![true; 8]; 2], &m.rope, &mut cache);
        let next: Tensor<2, Int> = logits.narrow(1, 7, 1).argmax(2).reshape([2, 1]);
        let mut kv = cache.kv.clone();
        let inputs = m.model.step_inputs(&[vec![true], vec![true]], &m.rope, &mut kv, &runtime.device);
        let mut states = cache.mamba.clone();
        let split = m.model.forward_from(next.clone(), &inputs, &mut kv, |i, mixer, u, _| mixer.forward(u, None, &mut states[i]));
        let plain = m.model.forward(next, &[vec![true], vec![true]], &m.rope, &mut cache);
        assert_eq!(split.into_data().try_to_vec::<f32>().unwrap(), plain.into_data().try_to_vec::<f32>().unwrap());
    }
}
