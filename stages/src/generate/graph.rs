//! Greedy decoding whose every token replays one captured CUDA graph (burn's `capture`).
//!
//! A decode step at batch 1 is hundreds of small launches, and launching them costs more than
//! running them (BENCHMARKS.md, session 7: one step of the 50% hybrid 27.2 ms eager, 11.5 ms
//! replayed). A graph replays the launches it recorded against the buffers it recorded, so
//! everything that changes from token to token lives on the device in buffers that stay put:
//! the position (a one-element tensor the step itself advances), the token fed back (the
//! step's own argmax), the KV buffers at their final length (each token written through a
//! one-hot mask of the position, not a slice at a host offset) and the Mamba states (each
//! step's new state copied back into the same buffer). The rotary rows, the attention mask and
//! the write mask are computed from the position inside the step.
//!
//! Only buffers that nothing else holds are written in place, so the step takes each one out
//! of its holder before writing it. On a backend without graphs (the CPU) a replay re-runs
//! the step, which computes the same tokens: the tests compare with plain decoding there.

use std::cell::RefCell;
use std::ops::Range;

use burn::tensor::{capture, DType, Int, Tensor, TensorData};

use crate::hybrid::{Hybrid, HybridCache};
use crate::llama::{KvCache, KvStep, Rope, StepMask};
use crate::lm::CausalLm;
use crate::mamba::MambaState;

/// What a step reads and writes; every buffer keeps its place for the whole generation.
struct Pinned {
    kv: KvCache,
    mamba: Vec<MambaState>,
    /// `[batch, 1]`: the token this step feeds in.
    token: Tensor<2, Int>,
    /// `[1]`: its position.
    pos: Tensor<1, Int>,
    /// `[batch, new_tokens]`: the tokens chosen so far.
    out: Tensor<2, Int>,
}

/// How a graph-replayed generation went.
#[derive(Debug, Clone)]
pub struct GraphTokens {
    /// `[batch][new_tokens]`
    pub tokens: Vec<Vec<u32>>,
    /// Whether steps replayed a hardware graph (else the step re-ran: the CPU).
    pub replayed: bool,
    /// Steps that replayed the graph; the others ran while it was captured.
    pub replays: usize,
    /// Wall time of the replays, the tokens' read back included.
    pub replay_seconds: f64,
}

/// The `new_tokens` greedy tokens after each prompt (all of one length, no padding), the
/// steps after the first replayed from one captured graph. Equal to [`super::generate`]'s
/// greedy tokens without stop tokens.
///
/// # Shapes
/// - `prompts`: `[batch][prompt_len]`
pub fn greedy_on_graph(model: &Hybrid, rope: &Rope, prompts: &[Vec<u32>], new_tokens: usize) -> GraphTokens {
    let (mut state, first) = prefill(model, rope, prompts, new_tokens);
    let (b, p) = (prompts.len(), prompts[0].len());
    if new_tokens <= 1 {
        return GraphTokens { tokens: rows(first, b), replayed: false, replays: 0, replay_seconds: 0.0 };
    }
    let device = model.device();
    let t = state.kv.capacity;
    let dtype = model.model.embed_tokens.weight.val().dtype();
    let (cos_table, sin_table) = rope.cos_sin(&[(0..t).collect()], dtype, &device); // [1, 1, t, head_dim]
    let head_dim = cos_table.dims()[3];
    let slots = Tensor::<1, Int>::arange(0..t as i64, &device);
    let columns = Tensor::<1, Int>::arange(0..new_tokens as i64, &device);
    let keep = Tensor::<2>::ones([b, 1], (&device, DType::F32));
    state.out = state.out.clone().slice_assign([0..b, 0..1], first);
    let state = RefCell::new(state);
    let step = || {
        let mut guard = state.borrow_mut();
        let Pinned { kv, mamba, token, pos, out } = &mut *guard;
        let at = |n: usize| pos.clone().expand([n]);
        let rotary = |table: &Tensor<4>| table.clone().select(2, pos.clone()).expand([b, 1, 1, head_dim]);
        let mask = slots.clone().greater(at(t)).reshape([1, 1, 1, t]).expand([b, 1, 1, t]);
        let write = slots.clone().equal(at(t)).reshape([1, 1, t, 1]);
        let kv_step = KvStep { offset: 0, capacity: t, mask: StepMask::Masked(mask), write: Some(write) };
        let inputs = crate::hybrid::StepInputs::new(rotary(&cos_table), rotary(&sin_table), kv_step, keep.clone());
        let logits = model.forward_from(token.clone(), &inputs, kv, |i, mixer, u, _| {
            let mut working = mamba[i].clone();
            let y = mixer.forward(u, None, &mut working);
            settle(&mut mamba[i], working);
            y
        });
        let v = logits.dims()[2];
        let next = logits.reshape([b, v]).argmax(1); // [b, 1]
        // `pos` feeds token `pos - p + 1` of the output (token 0 came from the prompt).
        let column = columns.clone().equal((pos.clone() - (p as i64 - 1)).expand([new_tokens])).reshape([1, new_tokens]);
        out.inplace(|o| o.mask_where(column.expand([b, new_tokens]), next.clone().expand([b, new_tokens])));
        token.inplace(|tok| overwrite(tok, next.clone()));
        pos.inplace(|q| q + 1);
        next
    };
    let mut graph = capture(&device, step);
    // Capturing ran the step a few times (warm-up) on a backend with graphs, once without: the
    // position says how many tokens are already out.
    let ran = state.borrow().pos.clone().into_data().convert::<i64>().try_to_vec::<i64>().unwrap_or_default()[0] as usize - p;
    let replays = (new_tokens - 1).saturating_sub(ran);
    let start = std::time::Instant::now();
    for _ in 0..replays {
        // SAFETY: every buffer the step touches is held by `state`, the tables above or the
        // model, all of which outlive `graph`; nothing else runs on this device meanwhile, and
        // the tokens are read on the same stream after the last replay.
        unsafe {
            graph.replay();
        }
    }
    let replayed = graph.is_hardware();
    drop(graph);
    let tokens = rows(state.into_inner().out, b);
    GraphTokens { tokens, replayed, replays, replay_seconds: start.elapsed().as_secs_f64() }
}

/// The prompt's forward pass, its cache grown to the generation's final length, and the first
/// new token `[batch, 1]`.
fn prefill(model: &Hybrid, rope: &Rope, prompts: &[Vec<u32>], new_tokens: usize) -> (Pinned, Tensor<2, Int>) {
    let device = model.device();
    let (b, p) = (prompts.len(), prompts.first().map_or(0, Vec::len));
    assert!(p > 0 && prompts.iter().all(|r| r.len() == p), "prompts of one length, none empty");
    let ids: Vec<i64> = prompts.iter().flatten().map(|&t| t as i64).collect();
    let mut cache: HybridCache = model.new_cache();
    let logits = model.forward(Tensor::from_data(TensorData::new(ids, [b, p]), &device), &vec![vec![true; p]; b], rope, &mut cache);
    let v = logits.dims()[2];
    let first = logits.narrow(1, p - 1, 1).reshape([b, v]).argmax(1);
    let t = (p + new_tokens).next_multiple_of(64);
    let grow = |x: Tensor<4>| {
        let [b, h, len, d] = x.dims();
        let pad = Tensor::zeros([b, h, t - len, d], (&x.device(), x.dtype()));
        Tensor::cat(vec![x, pad], 2)
    };
    let layers = cache.kv.layers.into_iter().map(|slot| slot.map(|(k, v)| (grow(k), grow(v)))).collect();
    let kv = KvCache { layers, valid: vec![vec![true; p]; b], capacity: t };
    let pinned = Pinned {
        kv,
        mamba: cache.mamba,
        token: first.clone(),
        pos: Tensor::from_data(TensorData::new(vec![p as i64], [1]), &device),
        out: Tensor::zeros([b, new_tokens], &device),
    };
    (pinned, first)
}

/// Copies a step's new Mamba state into the buffers the graph reads, which `working` no
/// longer shares once the step has replaced its own.
fn settle(pinned: &mut MambaState, working: MambaState) {
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

/// `src` written over all of `dst`, in `dst`'s buffer when nothing else holds it.
fn overwrite<const D: usize, K>(dst: Tensor<D, K>, src: Tensor<D, K>) -> Tensor<D, K>
where
    K: burn::tensor::kind::Basic,
{
    let dims = dst.dims();
    let ranges: [Range<usize>; D] = std::array::from_fn(|i| 0..dims[i]);
    dst.slice_assign(ranges, src)
}

fn rows(tokens: Tensor<2, Int>, b: usize) -> Vec<Vec<u32>> {
    let flat = tokens.into_data().convert::<i64>().try_to_vec::<i64>().unwrap_or_default();
    let n = flat.len() / b.max(1);
    flat.chunks(n.max(1)).map(|r| r.iter().map(|&t| t as u32).collect()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::{BenchModel, ModelSource};
    use crate::generate::{generate, GenerateOptions};
    use crate::runtime::Runtime;

    /// The device-resident step (position, masks and rotary rows from a device tensor, KV
    /// written through a one-hot mask, states copied back) chooses plain greedy decoding's
    /// tokens, for a pure attention model, a hybrid and a pure Mamba model.
    #[test]
    fn graph_steps_choose_the_plain_greedy_tokens() {
        let config = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/golden/tiny-gqa-untied/config.json");
        let runtime = Runtime::cpu();
        for fraction in [1.0, 0.5, 0.0] {
            let m = BenchModel::load(&ModelSource::Random(config.clone()), fraction, &runtime).unwrap();
            let vocab = m.config.llama.vocab_size as u32;
            let prompts: Vec<Vec<u32>> = (0..2).map(|r| (0..5).map(|i| (i * 31 + r * 7 + 3) % vocab).collect()).collect();
            let opts = GenerateOptions { max_new_tokens: 9, ..Default::default() };
            let plain = generate(&m.model, &m.rope, &prompts, &opts, |_, _| false);
            let graph = greedy_on_graph(&m.model, &m.rope, &prompts, 9);
            assert_eq!(graph.tokens, plain, "attention fraction {fraction}");
            // Capturing runs the step (warm-up, and on the CPU once more instead of recording).
            assert!(!graph.replayed && graph.replays < 8, "the CPU re-runs the step: {graph:?}");
        }
    }
}
