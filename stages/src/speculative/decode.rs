//! The speculative decoding loop (METHOD.md 4, Algorithm 2) for one sequence: the draft proposes
//! `K` tokens one at a time, the verifier checks them in one pass over `K + 1` tokens, both
//! caches keep what was accepted. Greedy output equals the verifier's own greedy output; sampled
//! output is distributed as the verifier's own sampling.

use burn::tensor::{DType, Tensor};

use super::accept::verify;
use super::cache::{forward_round, SpecCache};
use crate::error::{Error, Result};
use crate::generate::{LogitsProcessor, Sampling, StepGraph};
use crate::lm::CausalLm;
use crate::hybrid::Hybrid;
use crate::llama::Rope;

#[derive(Debug, Clone)]
pub struct SpeculativeOptions {
    /// Tokens drafted per round.
    pub k: usize,
    pub max_new_tokens: usize,
    /// The same for draft and verifier (greedy, or the distribution both sample from).
    pub sampling: Sampling,
    pub seed: u64,
    /// Generation stops after any of these.
    pub eos: Vec<u32>,
}

/// Counts of one or more runs.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct SpeculativeStats {
    /// Verifier passes.
    pub rounds: usize,
    pub drafted: usize,
    pub accepted: usize,
    /// Tokens produced (accepted drafts, corrections and bonus tokens).
    pub tokens: usize,
    /// Runs whose rounds replayed captured graphs (`speculative::graph` on a GPU).
    pub on_graph: usize,
    /// Tokens made after the setup (both prefills, and on a graph its capture and the rounds
    /// that ran while it was captured), and their wall time: the decoding rate once a
    /// generation is under way, what plain decoding's replays are compared with.
    pub decode_tokens: usize,
    pub decode_seconds: f64,
    /// Rounds run in `decode_seconds` (on a graph, those replayed past a stop too: they took
    /// the time).
    pub decode_rounds: usize,
}

impl SpeculativeStats {
    pub fn acceptance_rate(&self) -> f64 {
        self.accepted as f64 / self.drafted.max(1) as f64
    }
    pub fn tokens_per_round(&self) -> f64 {
        self.tokens as f64 / self.rounds.max(1) as f64
    }
    /// Tokens per second once under way (see `decode_tokens`).
    pub fn decode_tokens_per_s(&self) -> f64 {
        self.decode_tokens as f64 / self.decode_seconds.max(1e-9)
    }
    pub fn add(&mut self, o: &SpeculativeStats) {
        self.rounds += o.rounds;
        self.drafted += o.drafted;
        self.accepted += o.accepted;
        self.tokens += o.tokens;
        self.on_graph += o.on_graph;
        self.decode_tokens += o.decode_tokens;
        self.decode_seconds += o.decode_seconds;
        self.decode_rounds += o.decode_rounds;
    }

    /// Milliseconds per round once under way.
    pub fn round_ms(&self) -> f64 {
        1e3 * self.decode_seconds / self.decode_rounds.max(1) as f64
    }
}

/// The acceptance rate (accepted drafts over drafted ones, as [`SpeculativeStats`] counts it) at
/// which rounds of `k` drafts make `tokens_per_round` tokens each: `(tokens_per_round - 1) / k`.
/// `None` when no rate reaches it (more than `k + 1`), `Some(0.0)` at one token or fewer. With a
/// round's cost in plain decoding steps as `tokens_per_round`, the rate speculation breaks even
/// at.
pub fn acceptance_for(tokens_per_round: f64, k: usize) -> Option<f64> {
    (tokens_per_round <= (k + 1) as f64).then(|| ((tokens_per_round - 1.0) / k as f64).max(0.0))
}

/// What a speculative round costs against a plain decoding step, and so the acceptance rate it
/// needs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RoundCost {
    pub round_ms: f64,
    /// The round in plain steps.
    pub in_steps: f64,
    /// [`acceptance_for`] the round's cost in steps, and twice it (`None`: no rate would do).
    pub for_break_even: Option<f64>,
    pub for_2x: Option<f64>,
}

impl RoundCost {
    /// Rounds of `k` drafts taking `round_ms` each, against plain steps of `step_ms`.
    pub fn new(round_ms: f64, step_ms: f64, k: usize) -> Self {
        let in_steps = round_ms / step_ms;
        RoundCost { round_ms, in_steps, for_break_even: acceptance_for(in_steps, k), for_2x: acceptance_for(2.0 * in_steps, k) }
    }
}

/// A model with its RoPE tables: the verifier or the draft.
#[derive(Clone, Copy)]
pub struct SpecModel<'a> {
    pub model: &'a Hybrid,
    pub rope: &'a Rope,
}

impl SpecModel<'_> {
    fn vocab(&self) -> usize {
        self.model.model.embed_tokens.weight.dims()[0]
    }

    /// Host logits of `tokens` fed after `cache`.
    ///
    /// # Shapes
    /// - returns `[seq][vocab]`
    pub(super) fn rows(&self, tokens: &[u32], cache: &mut SpecCache) -> Vec<Vec<f32>> {
        host_rows(forward_round(self.model, self.rope, tokens, cache))
    }

    /// Host logits after `tokens`, read from scratch in one pass.
    ///
    /// # Shapes
    /// - returns `[vocab]`
    pub fn logits_after(&self, tokens: &[u32]) -> Vec<f32> {
        self.last_row(tokens, &mut SpecCache::new(self.model.model.layers.len()))
    }

    /// Host logits after the last of `tokens` only (a prompt's other rows never leave the device).
    ///
    /// # Shapes
    /// - returns `[vocab]`
    fn last_row(&self, tokens: &[u32], cache: &mut SpecCache) -> Vec<f32> {
        let logits: Tensor<2> = forward_round(self.model, self.rope, tokens, cache);
        let s = logits.dims()[0];
        host_rows(logits.narrow(0, s - 1, 1)).pop().unwrap_or_default()
    }
}

/// `[seq, vocab]` logits as host rows.
fn host_rows(logits: Tensor<2>) -> Vec<Vec<f32>> {
    let v = logits.dims()[1];
    let flat = logits.cast(DType::F32).into_data().convert::<f32>().try_to_vec::<f32>().unwrap_or_default();
    flat.chunks(v).map(<[f32]>::to_vec).collect()
}

/// [`speculative_generate`], or where `graph` wants it (greedy decoding on a GPU, by default)
/// its rounds replayed from captured graphs ([`super::speculative_on_graph`]).
pub fn speculative_decode(verifier: SpecModel, draft: SpecModel, prompt: &[u32], opts: &SpeculativeOptions, graph: StepGraph, on_token: impl FnMut(u32) -> bool) -> Result<(Vec<u32>, SpeculativeStats)> {
    let mut on_token = on_token;
    if opts.sampling == Sampling::Greedy && graph.wanted(&verifier.model.device()) {
        // Tokens are shown only once they are known good, so a graph that lost its state
        // has shown none that the launched rounds would not also make.
        match super::speculative_on_graph(verifier, draft, prompt, opts, &mut on_token) {
            Err(Error::Device(device, why)) => tracing::warn!("{device}: {why}; decoding this prompt with launched rounds"),
            done => return done,
        }
    }
    speculative_generate(verifier, draft, prompt, opts, on_token)
}

/// Generates up to `max_new_tokens` after `prompt`. `on_token(id)` sees each new token in order
/// and returns true to stop (stop strings, a closed stream).
///
/// # Shapes
/// - `prompt`: `[len]`, non-empty; returns the new tokens `[new]` (EOS included when produced)
pub fn speculative_generate(verifier: SpecModel, draft: SpecModel, prompt: &[u32], opts: &SpeculativeOptions, mut on_token: impl FnMut(u32) -> bool) -> Result<(Vec<u32>, SpeculativeStats)> {
    let Some((&last, prefix)) = prompt.split_last() else {
        return Err(Error::Config("speculative decoding needs a non-empty prompt".into()));
    };
    if verifier.vocab() != draft.vocab() {
        return Err(Error::Config(format!("draft vocabulary {} differs from the verifier's {}: they must share the tokenizer", draft.vocab(), verifier.vocab())));
    }
    if opts.k == 0 {
        return Err(Error::Config("k must be at least 1".into()));
    }
    let (mut vc, mut dc) = (SpecCache::new(verifier.model.model.layers.len()), SpecCache::new(draft.model.model.layers.len()));
    // The verifier reads the whole prompt in one pass, as plain decoding's prefill does (same
    // arithmetic, so greedy output can match it exactly in bf16 too); its last row is the first
    // round's first verdict row. The draft reads all but the last token.
    let mut prefill_row = Some(verifier.last_row(prompt, &mut vc));
    vc.commit(verifier.model, prompt.len());
    if !prefix.is_empty() {
        forward_round(draft.model, draft.rope, prefix, &mut dc); // only its cache is wanted
        dc.commit(draft.model, prefix.len());
    }
    let mut processor = LogitsProcessor::new(opts.sampling.clone(), opts.seed);
    let greedy = opts.sampling == Sampling::Greedy;
    // Tokens the draft has not fed yet (1, or 2 after a round that accepted everything).
    let mut pending = vec![last];
    let mut verifier_last = last;
    let (mut out, mut stats) = (Vec::new(), SpeculativeStats::default());
    // Every round reads its rows back, so the clock measures finished work.
    let start = std::time::Instant::now();
    'rounds: while out.len() < opts.max_new_tokens {
        // One round makes at most k + 1 tokens: draft no more than the budget needs.
        let k = opts.k.min(opts.max_new_tokens - out.len() - 1);
        let (mut drafts, mut draft_probs) = (Vec::with_capacity(k), Vec::with_capacity(k));
        let mut feed = pending.clone();
        for _ in 0..k {
            let rows = draft.rows(&feed, &mut dc);
            let row = rows.last().expect("fed at least one token");
            let t = if greedy {
                crate::generate::argmax(row)
            } else {
                let q = processor.probs(row);
                let t = processor.draw_from(&q);
                draft_probs.push(q);
                t
            };
            drafts.push(t);
            feed = vec![t];
        }
        // The row before the first draft: the prefill's in the first round, else this round's
        // first fed token's (the last round's verdict token).
        let (rows, fed_before) = match prefill_row.take() {
            Some(first) => {
                let mut rows = vec![first];
                if !drafts.is_empty() {
                    rows.extend(verifier.rows(&drafts, &mut vc));
                }
                (rows, 0)
            }
            None => {
                let mut checked = vec![verifier_last];
                checked.extend(&drafts);
                (verifier.rows(&checked, &mut vc), 1)
            }
        };
        let verdict = verify(&drafts, &draft_probs, &rows, &mut processor);
        vc.commit(verifier.model, fed_before + verdict.accepted);
        // The draft fed `pending` and all drafts but the last; keep what was accepted.
        let sequence: Vec<u32> = pending.iter().chain(&drafts[..verdict.accepted]).copied().collect();
        let fed = if k == 0 { 0 } else { pending.len() + k - 1 };
        let keep = fed.min(sequence.len());
        dc.commit(draft.model, keep);
        pending = sequence[keep..].to_vec();
        pending.push(verdict.next);
        verifier_last = verdict.next;
        stats.rounds += 1;
        stats.drafted += k;
        stats.accepted += verdict.accepted;
        for &t in drafts[..verdict.accepted].iter().chain([&verdict.next]) {
            out.push(t);
            stats.tokens += 1;
            if opts.eos.contains(&t) || on_token(t) || out.len() >= opts.max_new_tokens {
                break 'rounds;
            }
        }
    }
    stats.decode_tokens = out.len();
    stats.decode_seconds = start.elapsed().as_secs_f64();
    stats.decode_rounds = stats.rounds;
    Ok((out, stats))
}

#[cfg(test)]
mod tests {
    use super::acceptance_for;

    #[test]
    fn the_acceptance_a_round_needs_is_on_the_rate_s_scale() {
        for k in [1, 2, 4, 8] {
            // `r` of the `k` drafts accepted every round: `r + 1` tokens a round, rate `r / k`.
            for r in 0..=k {
                let got = acceptance_for((r + 1) as f64, k).unwrap();
                assert!((got - r as f64 / k as f64).abs() < 1e-12, "K {k}, r {r}: {got}");
            }
            assert_eq!(acceptance_for((k + 1) as f64 + 0.01, k), None, "K {k}: more than every draft and the bonus token");
            assert_eq!(acceptance_for(0.7, k), Some(0.0), "a round cheaper than a plain step pays at any acceptance");
        }
    }
}
