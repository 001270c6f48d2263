//! Greedy decoding whose every token replays one captured CUDA graph (burn's `capture`).
//!
//! A decode step at batch 1 is hundreds of small launches, and launching them costs more than
//! running them (BENCHMARKS.md, session 7: one step of the 50% hybrid 27.2 ms eager, 11.5 ms
//! replayed). A graph replays the launches it recorded against the buffers it recorded, so
//! everything that changes from token to token lives on the device in buffers that stay put:
//! the position (a one-element tensor the step itself advances), the token fed back (the
//! step's own argmax), the KV buffers at their final length (each token's keys scattered to its
//! slot, an index computed on the device, not a slice at a host offset) and the Mamba states
//! (each step's new state copied back into the same buffer). The rotary rows, the attention mask
//! and the slots written are computed from the position inside the step.
//!
//! Only buffers that nothing else holds are written in place, so the step takes each one out
//! of its holder before writing it. On a backend without graphs (the CPU) a replay re-runs
//! the step, which computes the same tokens: the tests compare with plain decoding there.

use std::cell::RefCell;
use std::ops::Range;

use burn::tensor::{capture, Bool, DType, Int, Tensor, TensorData};
use distill_kernels::reduce::argmax_last;

use crate::hybrid::{Hybrid, HybridCache, StepInputs};
use crate::llama::{kv_write_by_mask, KvCache, KvStep, KvWrite, Rope, StepMask};
use crate::lm::CausalLm;
use crate::mamba::MambaState;
use super::GenerateOptions;

/// What a step reads and writes; every buffer keeps its place for the whole generation (and,
/// refilled, for the batches after it).
struct Pinned {
    kv: KvCache,
    mamba: Vec<MambaState>,
    /// `[batch, 1]`: the token this step feeds in.
    token: Tensor<2, Int>,
    /// `[1]`: the cache slot it goes to (the same for every row: prompts are left-padded).
    pos: Tensor<1, Int>,
    /// `[1]`: the slot before the first new token's (the prompts' width less one), so slot
    /// `pos` feeds new token `pos - start`.
    start: Tensor<1, Int>,
    /// `[batch]`: each row's left padding.
    pads: Tensor<1, Int>,
    /// `[batch, new_tokens]`: the tokens chosen so far.
    out: Tensor<2, Int>,
}

impl Pinned {
    /// `fresh`'s values written into these buffers, which a captured step reads.
    fn refill(&mut self, fresh: Pinned) {
        refill_caches(&mut self.kv, &mut self.mamba, fresh.kv, fresh.mamba);
        self.token.inplace(|x| overwrite(x, fresh.token));
        self.pos.inplace(|x| overwrite(x, fresh.pos));
        self.start.inplace(|x| overwrite(x, fresh.start));
        self.pads.inplace(|x| overwrite(x, fresh.pads));
        self.out.inplace(|x| overwrite(x, fresh.out));
    }
}

/// How a graph-replayed generation went.
#[derive(Debug, Clone)]
pub struct GraphTokens {
    /// `[batch][new_i]`: each row's tokens, up to its stop as in [`super::generate`].
    pub tokens: Vec<Vec<u32>>,
    /// Whether steps replayed a hardware graph (else the step re-ran: the CPU).
    pub replayed: bool,
    /// Steps that replayed the graph; the others ran while it was captured.
    pub replays: usize,
    /// Wall time of the replays, the tokens' reads included.
    pub replay_seconds: f64,
}

/// Tokens read back (and stops checked) after this many replays: a row that stops early
/// wastes at most this many steps, and a stream shows its text this many tokens at a time.
const CHUNK: usize = 16;

/// [`super::generate`] for greedy decoding, every step after the first replayed from one
/// captured graph: the same tokens, the same stops (`opts.eos`, `on_token`), the same left
/// padding. Rows keep stepping after they stop (their tokens are dropped), as in `generate`.
///
/// # Shapes
/// - `prompts`: `[batch][prompt_len_i]`, each non-empty
pub fn generate_on_graph(model: &Hybrid, rope: &Rope, prompts: &[Vec<u32>], opts: &GenerateOptions, mut on_token: impl FnMut(usize, u32) -> bool) -> GraphTokens {
    let mut runs = generate_batches_on_graph(model, rope, &[prompts], opts, |_, row, tok| on_token(row, tok));
    runs.pop().unwrap_or(GraphTokens { tokens: Vec::new(), replayed: false, replays: 0, replay_seconds: 0.0 })
}

/// [`generate_on_graph`] for several batches of as many rows each, one after the other, from
/// one captured graph: a capture runs the step four times at launched speed and builds the
/// graph, more than decoding a short answer costs, so a prompt set (the speculative stage's,
/// one prompt at a time) pays it once. Every batch decodes over cache buffers as long as the
/// longest batch needs: a shorter batch's attention then spans more (masked) slots than its
/// own plain decoding's, which on the CPU changes nothing and on a GPU may round a near-tie
/// differently. `on_token(batch, row, id)`.
///
/// # Panics
/// When the batches differ in their number of rows.
pub fn generate_batches_on_graph(model: &Hybrid, rope: &Rope, batches: &[&[Vec<u32>]], opts: &GenerateOptions, mut on_token: impl FnMut(usize, usize, u32) -> bool) -> Vec<GraphTokens> {
    let n = opts.max_new_tokens;
    let b = batches.first().map_or(0, |p| p.len());
    assert!(batches.iter().all(|p| p.len() == b), "batches decoded on one graph have as many rows each");
    let none = |rows: usize| GraphTokens { tokens: vec![Vec::new(); rows], replayed: false, replays: 0, replay_seconds: 0.0 };
    if b == 0 || n == 0 || batches.iter().any(|p| p.iter().any(Vec::is_empty)) {
        return batches.iter().map(|p| none(p.len())).collect();
    }
    let t = batches.iter().map(|p| slots(p, n)).max().unwrap_or(0);
    let device = model.device();
    let tables = Tables::new(model, rope, t, b, 1);
    let columns = Tensor::<1, Int>::arange(0..n as i64, &device);
    // The first batch's buffers become the graph's; later batches are written into them.
    let (first_state, first_token) = prefill(model, rope, batches[0], opts.pad, n, t);
    let state = RefCell::new(first_state);
    // Taken by the first batch: a step writes the fed token in place only while nothing else
    // holds its buffer.
    let mut first_token = Some(first_token);
    let step = || {
        let mut guard = state.borrow_mut();
        let Pinned { kv, mamba, token, pos, start, pads, out } = &mut *guard;
        let inputs = tables.inputs(pos, 1, Some(pads));
        let logits = model.forward_from(token.clone(), &inputs, kv, |i, mixer, u, _| {
            let mut working = mamba[i].clone();
            let y = mixer.forward(u, None, &mut working);
            settle(&mut mamba[i], working);
            y
        });
        let v = logits.dims()[2];
        let next = argmax_last(logits.reshape([b, v])); // [b, 1]
        let column = columns.clone().equal((pos.clone() - start.clone()).expand([n])).reshape([1, n]);
        update(out, |o| o.mask_where(column.expand([b, n]), next.clone().expand([b, n])));
        token.inplace(|tok| overwrite(tok, next.clone()));
        update(pos, |q| q + 1);
        next
    };
    let mut graph = None;
    let mut runs = Vec::with_capacity(batches.len());
    for (bi, prompts) in batches.iter().enumerate() {
        let first = if let Some(first) = first_token.take() {
            first
        } else {
            let (fresh, first) = prefill(model, rope, prompts, opts.pad, n, t);
            state.borrow_mut().refill(fresh);
            first
        };
        let (mut tokens, mut done) = (vec![Vec::new(); b], vec![false; b]);
        let mut deliver = |rows: &[Vec<u32>], from: usize, to: usize, tokens: &mut Vec<Vec<u32>>| {
            for c in from..to {
                for (row, out) in tokens.iter_mut().enumerate() {
                    if done[row] {
                        continue;
                    }
                    let tok = rows[row][c];
                    out.push(tok);
                    if opts.eos.contains(&tok) || on_token(bi, row, tok) || out.len() >= n {
                        done[row] = true;
                    }
                }
            }
            done.iter().all(|&d| d)
        };
        if deliver(&rows(first, b), 0, 1, &mut tokens) {
            runs.push(GraphTokens { tokens, ..none(0) });
            continue;
        }
        let graph = graph.get_or_insert_with(|| {
            let g = capture(&device, step);
            warn_without_graph(g.is_hardware(), &device);
            g
        });
        // Capturing ran the step a few times (warm-up, and once more without graphs): the
        // position says how many tokens are out.
        let width = prompts.iter().map(Vec::len).max().unwrap_or(0);
        let at = host_ints(state.borrow().pos.clone());
        let mut made = (at.first().map_or(width, |&p| p as usize) - width + 1).min(n);
        let (mut shown, mut replays) = (1, 0);
        let clock = std::time::Instant::now();
        loop {
            let out = rows(state.borrow().out.clone(), b);
            if deliver(&out, shown, made, &mut tokens) || made >= n {
                break;
            }
            shown = made;
            for _ in 0..CHUNK.min(n - made) {
                // SAFETY: every buffer the step touches is held by `state`, the tables above or
                // the model, all of which outlive `graph`; nothing else runs on this device
                // meanwhile, and the tokens are read on the same stream after the replays.
                unsafe {
                    graph.replay();
                }
                made += 1;
                replays += 1;
            }
        }
        runs.push(GraphTokens { tokens, replayed: graph.is_hardware(), replays, replay_seconds: clock.elapsed().as_secs_f64() });
    }
    runs
}

/// The cache slots plain decoding of `prompts` gives its buffers from its first step on, and
/// so the graph's (the same attention kernels, so the same tokens): a prefill without padding
/// stores exactly the prompt and the first step regrows past it; one with padding reserves the
/// whole generation at once.
fn slots(prompts: &[Vec<u32>], new_tokens: usize) -> usize {
    let width = prompts.iter().map(Vec::len).max().unwrap_or(0);
    let padded = prompts.iter().any(|p| p.len() < width);
    crate::llama::grown_capacity(if padded { width } else { width + 1 }, width + new_tokens)
}

/// The prompts' forward pass as [`super::generate`] runs it (left padding, the cache told how
/// long it will grow), with the cache's buffers at `t` slots, and the first new token
/// `[batch, 1]`.
fn prefill(model: &Hybrid, rope: &Rope, prompts: &[Vec<u32>], pad: u32, new_tokens: usize, t: usize) -> (Pinned, Tensor<2, Int>) {
    let device = model.device();
    let b = prompts.len();
    let width = prompts.iter().map(Vec::len).max().unwrap_or(0);
    let pads: Vec<i64> = prompts.iter().map(|r| (width - r.len()) as i64).collect();
    let ids: Vec<i64> = prompts.iter().flat_map(|r| std::iter::repeat_n(pad as i64, width - r.len()).chain(r.iter().map(|&t| t as i64))).collect();
    let valid: Vec<Vec<bool>> = pads.iter().map(|&p| (0..width).map(|i| i >= p as usize).collect()).collect();
    let mut cache: HybridCache = model.new_cache();
    model.reserve(&mut cache, width + new_tokens);
    let logits = model.forward(Tensor::from_data(TensorData::new(ids, [b, width]), &device), &valid, rope, &mut cache);
    let v = logits.dims()[2];
    let first = argmax_last(logits.narrow(1, width - 1, 1).reshape([b, v]));
    debug_assert!(cache.kv.capacity <= t, "the prefill's buffers ({}) outgrew the graph's ({t})", cache.kv.capacity);
    let pinned = Pinned {
        kv: cache.kv.grown_to(t),
        mamba: cache.mamba,
        token: first.clone(),
        pos: Tensor::from_data(TensorData::new(vec![width as i64], [1]), &device),
        start: Tensor::from_data(TensorData::new(vec![width as i64 - 1], [1]), &device),
        pads: Tensor::from_data(TensorData::new(pads, [b]), &device),
        out: Tensor::<2, Int>::zeros([b, new_tokens], &device).slice_assign([0..b, 0..1], first.clone()),
    };
    (pinned, first)
}

/// What a device-resident step computes its inputs from: rotary rows for every position a
/// cache of `t` slots can hold, and the slots' indices.
/// On a GPU a failed capture leaves burn re-running the step at every replay: the same tokens
/// at launched speed. Said once per process, so that a slow run says why.
pub(crate) fn warn_without_graph(captured: bool, device: &burn::tensor::Device) {
    static SAID: std::sync::Once = std::sync::Once::new();
    if !captured && *device != burn::tensor::Device::flex() {
        SAID.call_once(|| tracing::warn!("a decode step could not be captured as a graph: each step is launched again (slower, the same tokens)"));
    }
}

/// Made once, before capture: a captured step must not upload from the host.
pub(crate) struct Tables {
    cos: Tensor<4>,
    sin: Tensor<4>,
    /// `[t]`
    slots: Tensor<1, Int>,
    /// `[max_s]`: a step's token offsets, and `[batch, max_s]` ones (no padding in a step).
    offsets: Tensor<1, Int>,
    keep: Tensor<2>,
    t: usize,
    b: usize,
}

impl Tables {
    /// For steps of up to `max_s` tokens per row, `b` rows, a cache of `t` slots.
    pub(crate) fn new(model: &Hybrid, rope: &Rope, t: usize, b: usize, max_s: usize) -> Self {
        let device = model.device();
        let dtype = model.model.embed_tokens.weight.val().dtype();
        let (cos, sin) = rope.cos_sin(&[(0..t).collect()], dtype, &device); // [1, 1, t, head_dim]
        let offsets = Tensor::arange(0..max_s as i64, &device);
        let keep = Tensor::ones([b, max_s], (&device, DType::F32));
        Self { cos, sin, slots: Tensor::arange(0..t as i64, &device), offsets, keep, t, b }
    }

    /// The inputs of `s` tokens per row at slots `pos..pos + s` (`pos`: `[1]`), each query
    /// seeing the slots up to its own; `pads` (`[batch]`) counts each row's left padding,
    /// which no query sees and which rotary positions skip. Positions past the cache (a
    /// capture's warm-up can step beyond the last token) clamp to its end, whose last slot no
    /// token reads before writing it.
    pub(crate) fn inputs(&self, pos: &Tensor<1, Int>, s: usize, pads: Option<&Tensor<1, Int>>) -> StepInputs {
        let (b, t) = (self.b, self.t);
        let Tokens { cos, sin, mask, at } = self.tokens(pos, s, pads);
        let write = if kv_write_by_mask() {
            let rel = self.offsets_from(pos);
            let written = rel.clone().greater_equal_elem(0).bool_and(rel.clone().lower_elem(s as i64)).reshape([1, 1, t, 1]);
            KvWrite::Masked { slots: written, rows: (s > 1).then(|| rel.clamp(0, s as i64 - 1)) }
        } else {
            KvWrite::Slots(self.within(at))
        };
        let kv = KvStep { offset: 0, capacity: t, mask: StepMask::Masked(mask.reshape([b, 1, s, t])), write: Some(write), grouped: Default::default() };
        StepInputs::new(cos, sin, kv, self.keep.clone().narrow(1, 0, s))
    }

    /// The inputs of `n` one-token steps at slots `pos`, `pos + 1`, .. (no padding): what
    /// [`Tables::inputs`] gives for each, from one computation whose rows the steps take as
    /// views. A speculative round's draft steps `K + 1` tokens, and each step's inputs (its
    /// rotary rows, mask and cache write) were a handful of launches of their own.
    pub(crate) fn inputs_each(&self, pos: &Tensor<1, Int>, n: usize) -> Vec<StepInputs> {
        let (b, t) = (self.b, self.t);
        let Tokens { cos, sin, mask, at } = self.tokens(pos, n, None);
        // Step i writes the slot `pos + i`.
        let writes: Vec<KvWrite> = if kv_write_by_mask() {
            let offsets = self.offsets.clone().narrow(0, 0, n).reshape([n, 1]).expand([n, t]);
            let written = self.offsets_from(pos).reshape([1, t]).expand([n, t]).equal(offsets); // [n, t]
            (0..n).map(|i| KvWrite::Masked { slots: written.clone().narrow(0, i, 1).reshape([1, 1, t, 1]), rows: None }).collect()
        } else {
            let at = self.within(at);
            (0..n).map(|i| KvWrite::Slots(at.clone().narrow(0, i, 1))).collect()
        };
        writes
            .into_iter()
            .enumerate()
            .map(|(i, write)| {
                let mask = StepMask::Masked(mask.clone().narrow(1, i, 1).reshape([b, 1, 1, t]));
                let kv = KvStep { offset: 0, capacity: t, mask, write: Some(write), grouped: Default::default() };
                StepInputs::new(cos.clone().narrow(2, i, 1), sin.clone().narrow(2, i, 1), kv, self.keep.clone().narrow(1, 0, 1))
            })
            .collect()
    }

    /// What `s` tokens per row at slots `pos..pos + s` see, whether they come as one step or
    /// several: their rotary rows, which slots each hides, and which token each slot takes.
    fn tokens(&self, pos: &Tensor<1, Int>, s: usize, pads: Option<&Tensor<1, Int>>) -> Tokens {
        let (b, t) = (self.b, self.t);
        let at = pos.clone().reshape([1, 1]) + self.offsets.clone().narrow(0, 0, s).reshape([1, s]); // [1, s]
        let positions = match pads {
            Some(p) => at.clone().expand([b, s]) - p.clone().reshape([b, 1]).expand([b, s]),
            None => at.clone().expand([b, s]),
        };
        let positions = positions.clamp(0, t as i64 - 1).reshape([b * s]);
        let head_dim = self.cos.dims()[3];
        let rotary = |table: &Tensor<4>| table.clone().select(2, positions.clone()).reshape([b, 1, s, head_dim]);
        let slots = self.slots.clone().reshape([1, 1, t]);
        let future = slots.clone().expand([1, s, t]).greater(at.clone().reshape([1, s, 1]).expand([1, s, t])).expand([b, s, t]);
        let mask = match pads {
            Some(p) => future.bool_or(slots.expand([b, s, t]).lower(p.clone().reshape([b, 1, 1]).expand([b, s, t]))),
            None => future,
        };
        Tokens { cos: rotary(&self.cos), sin: rotary(&self.sin), mask, at: at.reshape([s]) }
    }

    /// The slots `at` (`[s]`) clamped into the buffer: a capture's warm-up can step past the
    /// last token, into slots no token reads before writing them.
    fn within(&self, at: Tensor<1, Int>) -> Tensor<1, Int> {
        at.clamp(0, self.t as i64 - 1)
    }

    /// `[t]`: each slot's offset from `pos` (the mask-written form of a step's cache write).
    fn offsets_from(&self, pos: &Tensor<1, Int>) -> Tensor<1, Int> {
        self.slots.clone() - pos.clone().expand([self.t])
    }
}

/// [`Tables::tokens`]: `cos`, `sin` `[batch, 1, s, head_dim]`; `mask` `[batch, s, t]`, true
/// where a token hides a slot; `at` `[s]`, each token's slot (`pos + i`).
struct Tokens {
    cos: Tensor<4>,
    sin: Tensor<4>,
    mask: Tensor<3, Bool>,
    at: Tensor<1, Int>,
}

/// A fresh prefill's KV buffers and Mamba states written into those a captured graph reads
/// (the same shapes: the same batch and buffer length).
pub(crate) fn refill_caches(kv: &mut KvCache, mamba: &mut [MambaState], fresh_kv: KvCache, fresh_mamba: Vec<MambaState>) {
    for (dst, src) in kv.layers.iter_mut().zip(fresh_kv.layers) {
        if let (Some((dk, dv)), Some((sk, sv))) = (dst.take(), src) {
            *dst = Some((overwrite(dk, sk), overwrite(dv, sv)));
        }
    }
    for (dst, src) in mamba.iter_mut().zip(fresh_mamba) {
        settle(dst, src);
    }
}

/// Copies a step's new Mamba state into the buffers the graph reads, which `working` no
/// longer shares once the step has replaced its own.
pub(crate) fn settle(pinned: &mut MambaState, working: MambaState) {
    if let (Some(dst), Some(src)) = (pinned.conv.take(), working.conv) {
        pinned.conv = Some(overwrite(dst, src));
    }
    if let (Some(dst), Some(src)) = (pinned.ssm.take(), working.ssm) {
        pinned.ssm = Some(overwrite(dst, src));
    }
    if pinned.step_weights.is_none() {
        pinned.step_weights = working.step_weights;
    }
}

/// `t` replaced by `f(t)`, written into `t`'s own buffer. A graph replays its launches against
/// the buffers they used when it was captured, so what a step updates must stay where it is:
/// an op's result may land in a fresh buffer (burn reuses an input's only where its fusion
/// chooses to; a speculative round's `len + r + 1` did not, and the host read a buffer the
/// capture had only recorded), while a slice assigned over a tensor nothing else holds is
/// written in place.
pub(crate) fn update<const D: usize, K>(t: &mut Tensor<D, K>, f: impl FnOnce(Tensor<D, K>) -> Tensor<D, K>)
where
    K: burn::tensor::kind::Basic,
{
    t.inplace(|x| {
        let value = f(x.clone());
        overwrite(x, value)
    });
}

/// `src` written over all of `dst`, in `dst`'s buffer when nothing else holds it.
pub(crate) fn overwrite<const D: usize, K>(dst: Tensor<D, K>, src: Tensor<D, K>) -> Tensor<D, K>
where
    K: burn::tensor::kind::Basic,
{
    let dims = dst.dims();
    let ranges: [Range<usize>; D] = std::array::from_fn(|i| 0..dims[i]);
    dst.slice_assign(ranges, src)
}

/// A small integer tensor's values, read back (a sync).
pub(crate) fn host_ints<const D: usize>(t: Tensor<D, Int>) -> Vec<i64> {
    t.into_data().convert::<i64>().try_to_vec::<i64>().unwrap_or_default()
}

fn rows(tokens: Tensor<2, Int>, b: usize) -> Vec<Vec<u32>> {
    let flat = host_ints(tokens);
    let n = flat.len() / b.max(1);
    flat.chunks(n.max(1)).map(|r| r.iter().map(|&t| t as u32).collect()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::{BenchModel, ModelSource};
    use crate::generate::{generate, StepGraph};
    use crate::runtime::Runtime;
    use burn::tensor::Device;

    /// A round's draft steps take their inputs from one computation: each the inputs of a
    /// one-token step at its own slot.
    #[test]
    fn inputs_each_are_the_one_token_steps_inputs() {
        let (_, m) = tiny_models().remove(0);
        let device = Device::flex();
        let tables = Tables::new(&m.model, &m.rope, 16, 1, 4);
        let pos = Tensor::<1, Int>::from_data(TensorData::new(vec![5i64], [1]), &device);
        let floats = |t: &Tensor<4>| t.clone().into_data().convert::<f32>().try_to_vec::<f32>().unwrap();
        let bools = |t: Tensor<4, Bool>| t.into_data().convert::<bool>().try_to_vec::<bool>().unwrap();
        let mask = |kv: &KvStep| match &kv.mask {
            StepMask::Masked(m) => bools(m.clone()),
            StepMask::Causal => panic!("a masked step"),
        };
        for (i, each) in tables.inputs_each(&pos, 4).iter().enumerate() {
            let one = tables.inputs(&(pos.clone() + i as i64), 1, None);
            let ((c1, s1, k1), (c2, s2, k2)) = (each.parts(), one.parts());
            assert_eq!((floats(c1), floats(s1)), (floats(c2), floats(s2)), "step {i}: rotary rows");
            assert_eq!(mask(k1), mask(k2), "step {i}: mask");
            // Either form of the write (`DISTILL_KV_WRITE`) as the slots it writes.
            let slots = |k: &KvStep| match k.write.as_ref().unwrap() {
                KvWrite::Slots(at) => at.clone().into_data().convert::<i64>().try_to_vec::<i64>().unwrap(),
                KvWrite::Masked { slots, rows } => {
                    assert!(rows.is_none(), "a one-token step");
                    bools(slots.clone()).into_iter().enumerate().filter(|&(_, w)| w).map(|(j, _)| j as i64).collect()
                }
            };
            assert_eq!(slots(k1), slots(k2), "step {i}: the slot written");
            assert_eq!(slots(k1), vec![5 + i as i64], "step {i}");
        }
    }

    /// A tiny random model of each kind by its attention fraction: pure attention, hybrid, pure
    /// Mamba.
    fn tiny_models() -> Vec<(f64, BenchModel)> {
        let config = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/golden/tiny-gqa-untied/config.json");
        [1.0, 0.5, 0.0].into_iter().map(|f| (f, BenchModel::load(&ModelSource::Random(config.clone()), f, &Runtime::cpu()).unwrap())).collect()
    }

    /// The device-resident step (position, masks and rotary rows from a device tensor, KV
    /// scattered to its slot, states copied back) chooses plain greedy decoding's
    /// tokens and stops where it stops, for pure attention, hybrid and pure Mamba models, over
    /// left-padded prompts of different lengths, and past several chunks of replays.
    #[test]
    fn graph_steps_choose_the_plain_greedy_tokens() {
        for (fraction, m) in tiny_models() {
            let vocab = m.config.llama.vocab_size as u32;
            let prompts: Vec<Vec<u32>> = [5, 3, 7].iter().enumerate().map(|(r, &len)| (0..len).map(|i| (i * 31 + r as u32 * 7 + 3) % vocab).collect()).collect();
            let opts = GenerateOptions { max_new_tokens: 40, pad: 1, ..Default::default() };
            let plain = generate(&m.model, &m.rope, &prompts, &opts, |_, _| false);
            let graph = generate_on_graph(&m.model, &m.rope, &prompts, &opts, |_, _| false);
            assert_eq!(graph.tokens, plain, "attention fraction {fraction}");
            let through_generate = generate(&m.model, &m.rope, &prompts, &GenerateOptions { graph: StepGraph::On, ..opts.clone() }, |_, _| false);
            assert_eq!(through_generate, plain, "`generate` takes the graph when asked");
            assert!(!graph.replayed && graph.replays > 2 * CHUNK, "the CPU re-runs the step: {graph:?}");

            // Stops: a stop token ends its row where plain decoding ends it; `on_token` ends row 1.
            let eos = plain[0][3];
            let opts = GenerateOptions { eos: vec![eos], ..opts };
            let stop = |row: usize, _tok: u32, seen: &mut usize| row == 1 && { *seen += 1; *seen == 6 };
            let (mut a, mut b) = (0, 0);
            let plain = generate(&m.model, &m.rope, &prompts, &opts, |row, tok| stop(row, tok, &mut a));
            let graph = generate_on_graph(&m.model, &m.rope, &prompts, &opts, |row, tok| stop(row, tok, &mut b));
            assert_eq!(graph.tokens, plain, "attention fraction {fraction}, with stops");
            assert!(plain[0].len() <= 4 && plain[1].len() <= 6, "{plain:?}");
        }
    }

    /// Prompts of different lengths one at a time from one captured graph, its buffers written
    /// over for each: plain decoding's tokens for each prompt, stops included, for pure
    /// attention, hybrid and pure Mamba models.
    #[test]
    fn one_graph_decodes_batch_after_batch() {
        for (fraction, m) in tiny_models() {
            let vocab = m.config.llama.vocab_size as u32;
            let prompts: Vec<Vec<u32>> = [9, 3, 40, 6].iter().enumerate().map(|(r, &len)| (0..len).map(|i| (i * 17 + r as u32 * 11 + 5) % vocab).collect()).collect();
            let plain: Vec<Vec<u32>> = prompts.iter().map(|p| generate(&m.model, &m.rope, std::slice::from_ref(p), &GenerateOptions { max_new_tokens: 20, ..Default::default() }, |_, _| false).remove(0)).collect();
            let eos = plain[2][5];
            let opts = GenerateOptions { max_new_tokens: 20, eos: vec![eos], ..Default::default() };
            let want: Vec<Vec<u32>> = prompts.iter().map(|p| generate(&m.model, &m.rope, std::slice::from_ref(p), &opts, |_, _| false).remove(0)).collect();
            let batches: Vec<&[Vec<u32>]> = prompts.iter().map(std::slice::from_ref).collect();
            let mut seen = vec![0; prompts.len()];
            let runs = generate_batches_on_graph(&m.model, &m.rope, &batches, &opts, |bi, _, _| {
                seen[bi] += 1;
                false
            });
            let got: Vec<Vec<u32>> = runs.iter().map(|r| r.tokens[0].clone()).collect();
            assert_eq!(got, want, "attention fraction {fraction}");
            let shown: Vec<usize> = want.iter().map(|w| w.iter().filter(|&&t| t != eos).count()).collect();
            assert_eq!(seen, shown, "every token but a stop token shown once, under its batch");
            assert!(want[2].len() <= 6, "the stop token ended prompt 2: {want:?}");
        }
    }
}
