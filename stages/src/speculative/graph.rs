//! Greedy speculative decoding with every round replayed from one captured graph.
//!
//! On a GPU a round launched op by op costs more in launches than in work: the draft's `K`
//! steps and the verifier's pass over `K + 1` tokens are each hundreds of small kernels, and
//! plain decoding replayed from a graph (`generate::graph`) is 2.4-3.3x faster than launched
//! (BENCHMARKS.md, session 7). So the whole round lives on the device, with no read back in
//! between: the draft proposes by its own argmax, the verifier checks the `K + 1` tokens in one
//! pass, the accepted count `r` is counted there (leading matches), the accepted tokens and the
//! verifier's next token are written into the output buffer, and both models roll back by
//! moving the shared position past the `r + 1` tokens they keep and by picking the Mamba
//! states after those tokens (each Mamba layer keeps every step's state: the verifier's Mamba-2
//! layers run the round's tokens in one launch of the steps kernel, their projections over all
//! of them at once, where stepping a token at a time made verifying `K + 1` tokens cost about
//! `K + 1` decode steps in those layers). The host replays a few rounds, then reads the output
//! to check stops and the budget.
//!
//! Both models feed the same tokens each round (the last accepted token, then the drafts), so
//! they share the cache positions: the draft takes `K + 1` steps, the last one only so that it
//! has consumed what the verifier has when all `K` drafts are accepted.

use std::cell::RefCell;

use burn::tensor::{Int, Tensor, TensorData};
use distill_kernels::reduce::argmax_last;

use super::decode::{SpecModel, SpeculativeOptions, SpeculativeStats};
use crate::error::{Error, Result};
use crate::generate::graph::{host_ints, overwrite, refill_caches, update, warn_without_graph, Tables};
use crate::generate::Sampling;
use crate::hybrid::{Hybrid, HybridCache, MambaMixer};
use crate::lm::CausalLm;
use crate::llama::{grown_capacity, KvCache};
use crate::mamba::MambaState;
use distill_kernels::Mamba2StepWeights;

/// Rounds replayed between two reads of the output, at most.
const CHUNK: usize = 4;

/// A model's buffers for the whole generation.
struct Side {
    kv: KvCache,
    mamba: Vec<MambaState>,
}

/// What a round reads and writes; every buffer keeps its place (and, refilled, serves the
/// prompts after the first).
struct Round {
    verifier: Side,
    draft: Side,
    /// `[1, 1]`: the last accepted token, which neither model has fed yet.
    last: Tensor<2, Int>,
    /// `[1]`: its cache slot in both models.
    pos: Tensor<1, Int>,
    /// `[1, room]`: the tokens so far, and `[1]` how many.
    out: Tensor<2, Int>,
    len: Tensor<1, Int>,
    /// `[1, room]`: each round's accepted drafts, by round; and `[1]` rounds so far.
    accepted: Tensor<2, Int>,
    rounds: Tensor<1, Int>,
}

impl Round {
    /// Both models' prefill of `prompt` into buffers of `t` slots, and the verifier's first
    /// token `[1, 1]`.
    fn prefill(verifier: SpecModel, draft: SpecModel, prompt: &[u32], t: usize, room: usize) -> (Round, Tensor<2, Int>) {
        let device = verifier.model.device();
        let (vside, first) = prefill(verifier.model, verifier, prompt, t);
        let (dside, _) = prefill(draft.model, draft, prompt, t);
        let round = Round {
            verifier: vside,
            draft: dside,
            last: first.clone(),
            pos: Tensor::from_data(TensorData::new(vec![prompt.len() as i64], [1]), &device),
            out: Tensor::<2, Int>::zeros([1, room], &device).slice_assign([0..1, 0..1], first.clone()),
            len: Tensor::from_data(TensorData::new(vec![1i64], [1]), &device),
            accepted: Tensor::zeros([1, room], &device),
            rounds: Tensor::zeros([1], &device),
        };
        (round, first)
    }

    /// `fresh`'s values written into these buffers, which a captured round reads.
    fn refill(&mut self, fresh: Round) {
        refill_caches(&mut self.verifier.kv, &mut self.verifier.mamba, fresh.verifier.kv, fresh.verifier.mamba);
        refill_caches(&mut self.draft.kv, &mut self.draft.mamba, fresh.draft.kv, fresh.draft.mamba);
        self.last.inplace(|x| overwrite(x, fresh.last));
        self.pos.inplace(|x| overwrite(x, fresh.pos));
        self.out.inplace(|x| overwrite(x, fresh.out));
        self.len.inplace(|x| overwrite(x, fresh.len));
        self.accepted.inplace(|x| overwrite(x, fresh.accepted));
        self.rounds.inplace(|x| overwrite(x, fresh.rounds));
    }
}

/// [`super::speculative_generate`] in greedy mode, each round replayed from one captured graph:
/// the same tokens (up to the rounding of a differently fused step on a GPU) and the same stops.
///
/// # Shapes
/// - `prompt`: `[len]`, non-empty; returns the new tokens `[new]` (EOS included when produced)
pub fn speculative_on_graph(verifier: SpecModel, draft: SpecModel, prompt: &[u32], opts: &SpeculativeOptions, mut on_token: impl FnMut(u32) -> bool) -> Result<(Vec<u32>, SpeculativeStats)> {
    let mut runs = speculative_each_on_graph(verifier, draft, &[prompt.to_vec()], opts, |_, tok| on_token(tok))?;
    Ok(runs.pop().unwrap_or_default())
}

/// [`speculative_on_graph`] for several prompts one after the other from one captured round:
/// a capture runs the round four times at launched speed, more than a short answer's rounds
/// cost on the graph, so a prompt set pays it once. Every prompt decodes over buffers as long
/// as the longest prompt needs (see [`crate::generate::graph::generate_batches_on_graph`]).
/// `on_token(prompt, id)`.
pub fn speculative_each_on_graph(verifier: SpecModel, draft: SpecModel, prompts: &[Vec<u32>], opts: &SpeculativeOptions, mut on_token: impl FnMut(usize, u32) -> bool) -> Result<Vec<(Vec<u32>, SpeculativeStats)>> {
    if opts.sampling != Sampling::Greedy {
        return Err(Error::Config("speculative rounds on a graph are greedy only".into()));
    }
    if prompts.iter().any(Vec::is_empty) || opts.k == 0 {
        return Err(Error::Config("speculative decoding needs non-empty prompts and k of at least 1".into()));
    }
    let (k, n) = (opts.k, opts.max_new_tokens);
    if n == 0 || prompts.is_empty() {
        return Ok(vec![Default::default(); prompts.len()]);
    }
    let device = verifier.model.device();
    // A capture's warm-up runs rounds too, and the last chunk may overshoot the budget: room
    // for both beyond the `n` tokens.
    let room = n + (CHUNK + 8) * (k + 1);
    let t = prompts.iter().map(|p| grown_capacity(p.len() + 1, p.len() + room)).max().unwrap_or(0);
    let (vt, dt) = (Tables::new(verifier.model, verifier.rope, t, 1, k + 1), Tables::new(draft.model, draft.rope, t, 1, k + 1));
    let columns = Tensor::<1, Int>::arange(0..room as i64, &device).reshape([1, room]);
    let (verifier_rows, draft_rows) = (window_rows(verifier.model), window_rows(draft.model));
    // The first prompt's buffers become the graph's; later prompts are written into them.
    let (first_round, first_token) = Round::prefill(verifier, draft, &prompts[0], t, room);
    let state = RefCell::new(first_round);
    let mut first_token = Some(first_token);
    let round = || {
        let mut guard = state.borrow_mut();
        let Round { verifier: vs, draft: ds, last, pos, out, len, accepted, rounds } = &mut *guard;
        // The draft: K + 1 steps from `last`, each feeding its own argmax.
        let mut draft_steps = vec![Vec::with_capacity(k + 1); ds.mamba.len()];
        let mut current = ds.mamba.clone();
        let mut feed = last.clone();
        let mut drafts = Vec::with_capacity(k + 1);
        for inputs in dt.inputs_each(pos, k + 1) {
            let logits = draft.model.forward_from(feed, &inputs, &mut ds.kv, |l, mixer, u, _| {
                let y = mixer.forward(u, None, &mut current[l]);
                draft_steps[l].push(current[l].clone());
                y
            });
            let v = logits.dims()[2];
            feed = argmax_last(logits.reshape([1, v]));
            drafts.push(feed.clone());
        }
        drafts.pop(); // the K + 1-th only advanced the draft's state
        let proposed = Tensor::cat(drafts, 1); // [1, K]
        // The verifier: `last` and the K drafts in one pass.
        let fed = Tensor::cat(vec![last.clone(), proposed.clone()], 1); // [1, K + 1]
        let (verdicts, verifier_kept) = check(verifier, &vt, vs, fed, pos);
        // r: the drafts before the first that differs from the verifier's choice.
        let misses = proposed.clone().not_equal(verdicts.clone().narrow(1, 0, k)).int();
        let r = misses.cumsum(1).equal_elem(0).int().sum(); // [1]
        let next = verdicts.clone().select(1, r.clone()); // [1, 1]
        // This round's tokens, the r accepted drafts and then `next`, at out[len..len + r + 1]:
        // the verifier's first r + 1 choices, since the accepted drafts are the ones it chose.
        let rel = columns.clone() - len.clone().reshape([1, 1]).expand([1, room]);
        let hit = rel.clone().greater_equal_elem(0).bool_and(rel.clone().lower_equal(r.clone().reshape([1, 1]).expand([1, room])));
        let values = verdicts.select(1, rel.clamp(0, k as i64).reshape([room])); // [1, room]
        update(out, |o| o.mask_where(hit, values));
        let this_round = columns.clone().equal(rounds.clone().reshape([1, 1]).expand([1, room]));
        update(accepted, |a| a.mask_where(this_round, r.clone().reshape([1, 1]).expand([1, room])));
        // Both models keep the r + 1 tokens the round accepted.
        settle_at(&mut vs.mamba, verifier_kept, &r, &verifier_rows);
        settle_at(&mut ds.mamba, draft_steps.into_iter().map(Kept::from_steps).collect(), &r, &draft_rows);
        last.inplace(|x| overwrite(x, next.clone()));
        update(pos, |q| q + r.clone() + 1);
        update(len, |q| q + r.clone() + 1);
        update(rounds, |q| q + 1);
        next
    };
    let (mut round, mut graph) = (Some(round), None);
    let mut runs = Vec::with_capacity(prompts.len());
    for (pi, prompt) in prompts.iter().enumerate() {
        let first = if let Some(first) = first_token.take() {
            first
        } else {
            let (fresh, first) = Round::prefill(verifier, draft, prompt, t, room);
            state.borrow_mut().refill(fresh);
            first
        };
        let (mut out, mut stats) = (Vec::new(), SpeculativeStats::default());
        let mut on_token = |tok| on_token(pi, tok);
        let mut stopped = push(&mut out, host_ints(first)[0] as u32, opts, n, &mut on_token);
        if stopped {
            // Done at the prompt's pass: no round ran, launched or replayed.
            stats.tokens = out.len();
            stats.on_graph = 1;
            runs.push((out, stats));
            continue;
        }
        let graph = graph.get_or_insert_with(|| {
            let g = burn::tensor::capture(&device, round.take().expect("captured once"));
            warn_without_graph(g.is_hardware(), &device);
            g
        });
        let mut shown = 1;
        // Rounds the device has run by the host's count, once the first read gave the count so
        // far (the capture's warm-up rounds for the first prompt, none after): a check that the
        // round's state stays in its buffers (a graph replays its launches against the buffers
        // of its capture, so a counter that moved to a new buffer stops counting, or reads as
        // whatever that buffer held).
        let mut expected: Option<usize> = None;
        let mut clock = None;
        loop {
            let (made, ran, tokens) = {
                let s = state.borrow();
                (host_ints(s.len.clone())[0], host_ints(s.rounds.clone())[0], host_ints(s.out.clone().reshape([room])))
            };
            let (made, ran) = (usize::try_from(made).unwrap_or(usize::MAX), usize::try_from(ran).unwrap_or(usize::MAX));
            if !counts_hold(made, ran, expected, shown, k, room) {
                return Err(Error::Device(
                    format!("{device:?}"),
                    format!("speculative rounds on a graph lost their state ({made} tokens after {ran} rounds, {} expected; {shown} shown)", expected.map_or("?".to_string(), |e| e.to_string())),
                ));
            }
            for &tok in &tokens[shown..made.min(room)] {
                stopped = push(&mut out, tok as u32, opts, n, &mut on_token);
                if stopped {
                    break;
                }
            }
            shown = made;
            if stopped {
                break;
            }
            // The clock starts once the rounds so far are read: what follows is replays alone.
            clock.get_or_insert((std::time::Instant::now(), out.len(), ran));
            // Rounds until the next read: no more than even all-accepted rounds need for the
            // budget, so none runs past it (a stop token can still end it sooner).
            let replays = CHUNK.min((n - out.len()).div_ceil(k + 1)).max(1);
            expected = Some(ran + replays);
            for _ in 0..replays {
                // SAFETY: every buffer the round touches is held by `state`, the tables or the
                // models, all of which outlive `graph`; nothing else runs on this device
                // meanwhile, and the output is read on the same stream after the replays.
                unsafe {
                    graph.replay();
                }
            }
        }
        let (per_round, ran) = {
            let s = state.borrow();
            (host_ints(s.accepted.clone().reshape([room])), host_ints(s.rounds.clone())[0] as usize)
        };
        if let Some((start, before, ran_before)) = clock {
            stats.decode_seconds = start.elapsed().as_secs_f64();
            stats.decode_tokens = out.len() - before;
            stats.decode_rounds = ran - ran_before;
        }
        stats.on_graph = usize::from(graph.is_hardware());
        // The rounds that made the returned tokens (later ones overshot the stop).
        // The prompt's pass made the first token: a verifier pass like a round's (the launched
        // decoder verifies its first drafts in it), so tokens per round stay at most K + 1.
        let mut made = 1;
        stats.rounds = 1;
        for &r in per_round.iter().take(ran) {
            if made >= out.len() {
                break;
            }
            stats.rounds += 1;
            stats.drafted += k;
            stats.accepted += r as usize;
            made += r as usize + 1;
        }
        stats.tokens = out.len();
        runs.push((out, stats));
    }
    drop(graph);
    Ok(runs)
}

/// The verifier's pass over a round's `fed` tokens (`[1, K + 1]`: the last accepted token and
/// the drafts) from cache slot `pos` (`[1]`): its greedy token after each `[1, K + 1]`, and what
/// each Mamba layer could keep.
fn check(verifier: SpecModel, tables: &Tables, side: &mut Side, fed: Tensor<2, Int>, pos: &Tensor<1, Int>) -> (Tensor<2, Int>, Vec<Kept>) {
    let s = fed.dims()[1];
    let inputs = tables.inputs(pos, s, None);
    let mut kept: Vec<Kept> = (0..side.mamba.len()).map(|_| Kept::default()).collect();
    let from = &side.mamba;
    let logits = verifier.model.forward_from(fed, &inputs, &mut side.kv, |l, mixer, u, _| verify_layer(mixer, u, &from[l], &mut kept[l]));
    let v = logits.dims()[2];
    (argmax_last(logits.reshape([s, v])).reshape([1, s]), kept)
}

/// Milliseconds the verification of `k` drafts after `prompt` takes on a captured graph, once
/// under way: the verifier's pass over `K + 1` tokens and its Mamba layers' rollback to the
/// last of them, as a round runs them, without the draft's steps or the round's bookkeeping;
/// against a plain decode step on a graph, what checking K tokens costs (METHOD.md 4).
pub fn verification_ms(verifier: SpecModel, prompt: &[u32], k: usize, replays: usize) -> Result<f64> {
    if prompt.is_empty() {
        return Err(Error::Config("a verification needs a non-empty prompt".into()));
    }
    let device = verifier.model.device();
    let t = grown_capacity(prompt.len() + 1, prompt.len() + k + 1);
    let tables = Tables::new(verifier.model, verifier.rope, t, 1, k + 1);
    let (side, first) = prefill(verifier.model, verifier, prompt, t);
    // The same tokens at the same slots every replay: a replay costs what a round's check does.
    let fed = Tensor::cat(vec![first; k + 1], 1);
    let pos = Tensor::<1, Int>::from_data(TensorData::new(vec![prompt.len() as i64], [1]), &device);
    let all = Tensor::<1, Int>::from_data(TensorData::new(vec![k as i64], [1]), &device);
    let rows = window_rows(verifier.model);
    let side = RefCell::new(side);
    let step = || {
        let mut side = side.borrow_mut();
        let (verdicts, kept) = check(verifier, &tables, &mut side, fed.clone(), &pos);
        settle_at(&mut side.mamba, kept, &all, &rows);
        verdicts
    };
    let mut graph = burn::tensor::capture(&device, step);
    warn_without_graph(graph.is_hardware(), &device);
    // SAFETY: the step reads and writes only `side`, `tables`, `fed`, `pos` and `all`, which
    // outlive the graph; nothing else runs on this device meanwhile, and the read below is on
    // the same stream.
    let _ = host_ints(unsafe { graph.replay() }.clone());
    let start = std::time::Instant::now();
    let mut last = None;
    for _ in 0..replays.max(1) {
        // SAFETY: as above.
        last = Some(unsafe { graph.replay() }.clone());
    }
    let _ = last.map(host_ints);
    Ok(1e3 * start.elapsed().as_secs_f64() / replays.max(1) as f64)
}

/// Whether `made` tokens after `ran` rounds can be what the rounds left: every round adds
/// between 1 and K + 1 tokens after the prompt's first; the host expects `expected` rounds (once
/// it knows the capture's count), and `shown` tokens were read before.
fn counts_hold(made: usize, ran: usize, expected: Option<usize>, shown: usize, k: usize, room: usize) -> bool {
    expected.is_none_or(|e| e == ran) && ran <= room && made > ran && made - 1 <= ran * (k + 1) && made >= shown
}

/// Adds `tok` to `out`; true when generation stops there.
fn push(out: &mut Vec<u32>, tok: u32, opts: &SpeculativeOptions, n: usize, on_token: &mut impl FnMut(u32) -> bool) -> bool {
    out.push(tok);
    opts.eos.contains(&tok) || on_token(tok) || out.len() >= n
}

/// The prompt's forward pass with buffers of `t` slots, and the model's next token `[1, 1]`.
fn prefill(model: &Hybrid, m: SpecModel, prompt: &[u32], t: usize) -> (Side, Tensor<2, Int>) {
    let device = model.device();
    let p = prompt.len();
    let mut cache: HybridCache = model.new_cache();
    model.reserve(&mut cache, t);
    let ids: Vec<i64> = prompt.iter().map(|&x| x as i64).collect();
    let logits = model.forward(Tensor::from_data(TensorData::new(ids, [1, p]), &device), &[vec![true; p]], m.rope, &mut cache);
    let v = logits.dims()[2];
    let first = argmax_last(logits.narrow(1, p - 1, 1).reshape([1, v]));
    (Side { kv: cache.kv.grown_to(t), mamba: cache.mamba }, first)
}

/// What a Mamba layer could hold after a round, one entry per token it was fed: conv windows
/// and SSM states `[steps, batch, ...]`. The rollback picks one.
#[derive(Default)]
struct Kept {
    conv: Option<KeptConv>,
    ssm: Option<Tensor<5>>,
    step_weights: Option<Mamba2StepWeights>,
}

/// A layer's conv windows after each of a round's tokens.
enum KeptConv {
    /// One window a step, stacked: `[steps, batch, K - 1, channels]`.
    Stacked(Tensor<4>),
    /// The round's conv inputs after the window entering it, `[batch, K - 1 + steps, channels]`:
    /// the window after `r + 1` tokens is rows `r + 1 ..= r + K - 1`, one gather. Stacking the
    /// `K + 1` windows instead was a copy launch each (burn's concatenation on a GPU is a slice
    /// assignment per part) in every Mamba-2 layer of every round.
    Inputs(Tensor<3>),
}

impl Kept {
    /// The states of single steps, stacked.
    fn from_steps(steps: Vec<MambaState>) -> Self {
        let Some(first) = steps.first() else {
            return Self::default();
        };
        let step_weights = first.step_weights.clone();
        let conv: Vec<Tensor<3>> = steps.iter().filter_map(|s| s.conv.clone()).collect();
        let ssm: Vec<Tensor<4>> = steps.iter().filter_map(|s| s.ssm.clone()).collect();
        let whole = |n: usize| n == steps.len();
        Kept { conv: whole(conv.len()).then(|| KeptConv::Stacked(Tensor::stack(conv, 0))), ssm: whole(ssm.len()).then(|| Tensor::stack(ssm, 0)), step_weights }
    }
}

/// A Mamba layer's verification of the round's tokens after `from`, keeping every step's state:
/// a Mamba-2 layer in one launch of the steps kernel (its projections over all the tokens at
/// once), a Mamba-1 layer a step at a time.
///
/// # Shapes
/// - `u`: `[1, steps, d_model]` -> same
fn verify_layer(mixer: &MambaMixer, u: Tensor<3>, from: &MambaState, kept: &mut Kept) -> Tensor<3> {
    match mixer {
        MambaMixer::Mamba2(m) => {
            let weights = from.step_weights.clone().unwrap_or_else(|| m.step_weights());
            let (y, conv_inputs, ssm) = m.steps_keeping_all(u, from, &weights);
            *kept = Kept { conv: Some(KeptConv::Inputs(conv_inputs)), ssm: Some(ssm), step_weights: Some(weights) };
            y
        }
        MambaMixer::Mamba1(_) => {
            let steps = u.dims()[1];
            let mut state = from.clone();
            let mut states = Vec::with_capacity(steps);
            let ys = (0..steps)
                .map(|i| {
                    let y = mixer.forward(u.clone().narrow(1, i, 1), None, &mut state);
                    states.push(state.clone());
                    y
                })
                .collect();
            *kept = Kept::from_steps(states);
            Tensor::cat(ys, 1)
        }
    }
}

/// `1 ..= K - 1` for the model's Mamba-2 conv windows (`K` the conv's width; `[1]` without
/// Mamba-2 layers): with the accepted count added, the rows of a round's conv inputs that make the
/// window it keeps ([`KeptConv::Inputs`]). Made before capture: a captured round must not upload
/// from the host.
fn window_rows(model: &Hybrid) -> Tensor<1, Int> {
    let width = model.model.layers.iter().find_map(|l| match &l.mamba {
        Some(MambaMixer::Mamba2(m)) => Some(m.conv1d.kernel() - 1),
        _ => None,
    });
    Tensor::arange(1..width.unwrap_or(1) as i64 + 1, &model.device())
}

/// Each Mamba layer's state becomes the one after the round's `r + 1`-th token (`r`: `[1]`),
/// written into the layer's own buffers; `rows` is [`window_rows`] of the layers' model.
fn settle_at(layers: &mut [MambaState], kept: Vec<Kept>, r: &Tensor<1, Int>, rows: &Tensor<1, Int>) {
    // The rows every Mamba-2 layer's window takes, computed once a round.
    let mut window: Option<Tensor<1, Int>> = None;
    for (state, k) in layers.iter_mut().zip(kept) {
        if state.step_weights.is_none() {
            state.step_weights = k.step_weights;
        }
        if let Some(conv) = k.conv {
            let picked = match conv {
                KeptConv::Stacked(conv) => {
                    let [_, b, w, c] = conv.dims();
                    conv.select(0, r.clone()).reshape([b, w, c])
                }
                KeptConv::Inputs(inputs) => {
                    let at = window.get_or_insert_with(|| rows.clone() + r.clone().expand([rows.dims()[0]]));
                    inputs.select(1, at.clone())
                }
            };
            state.conv = Some(match state.conv.take() {
                Some(dst) => overwrite(dst, picked),
                None => picked,
            });
        }
        if let Some(ssm) = k.ssm {
            let [_, b, h, x, y] = ssm.dims();
            let picked = ssm.select(0, r.clone()).reshape([b, h, x, y]);
            state.ssm = Some(match state.ssm.take() {
                Some(dst) => overwrite(dst, picked),
                None => picked,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::counts_hold;

    /// What the H200 showed (a round's `len` moved to a buffer the capture only recorded, read
    /// as 0) and the other ways a lost counter reads, against what rounds can leave.
    #[test]
    fn counts_that_rounds_cannot_leave_are_caught() {
        let (k, room) = (4, 200);
        assert!(counts_hold(4, 3, None, 1, k, room), "three warm-up rounds that each kept one token");
        assert!(counts_hold(16, 3, None, 1, k, room), "... or all K + 1");
        assert!(counts_hold(30, 7, Some(7), 16, k, room), "four more rounds");
        assert!(!counts_hold(0, 3, None, 1, k, room), "the H200's read: no tokens at all");
        assert!(!counts_hold(17, 3, None, 1, k, room), "more than K + 1 a round");
        assert!(!counts_hold(16, 3, Some(7), 16, k, room), "rounds that did not run: a counter that stopped");
        assert!(!counts_hold(12, 7, Some(7), 16, k, room), "fewer tokens than shown before");
        assert!(!counts_hold(1 << 40, 1 << 30, None, 1, k, room), "garbage");
    }
}
