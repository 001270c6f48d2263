//! Autoregressive generation with a KV cache, for a batch of prompts (left-padded).

use burn::tensor::{DType, Device, Int, Tensor, TensorData};
use distill_kernels::reduce::argmax_last;

use super::sampling::{LogitsProcessor, Sampling};
use crate::llama::Rope;
use crate::lm::CausalLm;

#[derive(Debug, Clone)]
pub struct GenerateOptions {
    pub max_new_tokens: usize,
    pub sampling: Sampling,
    pub seed: u64,
    /// A row stops after producing any of these.
    pub eos: Vec<u32>,
    /// Fills the left padding of shorter prompts.
    pub pad: u32,
    /// Whether greedy steps replay one captured CUDA graph (`generate::graph`).
    pub graph: StepGraph,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        Self { max_new_tokens: 64, sampling: Sampling::Greedy, seed: 0, eos: Vec::new(), pad: 0, graph: StepGraph::Auto }
    }
}

/// Greedy decoding on a GPU launches hundreds of small kernels a token; replayed from one
/// captured graph they cost a third as much (BENCHMARKS.md, session 7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StepGraph {
    /// On a GPU, unless `DISTILL_DECODE_GRAPH=0`.
    #[default]
    Auto,
    /// Never: every step launched on its own (a baseline, or a comparison).
    Off,
    /// Also on the CPU, where a replay re-runs the step (the tests).
    On,
}

impl StepGraph {
    pub fn wanted(self, device: &Device) -> bool {
        match self {
            StepGraph::Auto => *device != Device::flex() && std::env::var("DISTILL_DECODE_GRAPH").map_or(true, |v| v != "0"),
            StepGraph::Off => false,
            StepGraph::On => true,
        }
    }
}

/// Generates up to `max_new_tokens` for each prompt. `on_token(row, id)` sees every new token as
/// it is chosen and returns true to stop that row (stop strings, a cancelled stream).
///
/// # Shapes
/// - `prompts`: `[batch][prompt_len_i]` token ids, each non-empty
/// - returns `[batch][new_i]`: the new tokens (EOS included when produced)
pub fn generate<M: CausalLm>(
    model: &M,
    rope: &Rope,
    prompts: &[Vec<u32>],
    opts: &GenerateOptions,
    mut on_token: impl FnMut(usize, u32) -> bool,
) -> Vec<Vec<u32>> {
    let device = model.device();
    let b = prompts.len();
    let width = prompts.iter().map(Vec::len).max().unwrap_or(0);
    let mut out = vec![Vec::new(); b];
    if b == 0 || width == 0 || opts.max_new_tokens == 0 {
        return out;
    }
    let mut ids = Vec::with_capacity(b * width);
    let mut valid = Vec::with_capacity(b);
    for p in prompts {
        let pad = width - p.len();
        ids.extend(std::iter::repeat_n(opts.pad as i64, pad).chain(p.iter().map(|&t| t as i64)));
        valid.push((0..width).map(|i| i >= pad).collect::<Vec<bool>>());
    }
    if opts.sampling == Sampling::Greedy && opts.graph.wanted(&device)
        && let Some(out) = model.generate_on_graph(rope, prompts, opts, &mut on_token)
    {
        return out;
    }
    let mut cache = model.new_cache();
    model.reserve(&mut cache, width + opts.max_new_tokens);
    let mut processor = LogitsProcessor::new(opts.sampling.clone(), opts.seed);
    let mut done = vec![false; b];
    let mut input: Tensor<2, Int> = Tensor::from_data(TensorData::new(ids, [b, width]), &device);
    for _ in 0..opts.max_new_tokens {
        let logits = model.forward(input, &valid, rope, &mut cache); // [b, s, vocab]
        let [_, s, v] = logits.dims();
        let last = logits.narrow(1, s - 1, 1).reshape([b, v]);
        let next = pick(last, &mut processor);
        for (row, &tok) in next.iter().enumerate() {
            if done[row] {
                continue;
            }
            out[row].push(tok);
            if opts.eos.contains(&tok) || on_token(row, tok) || out[row].len() >= opts.max_new_tokens {
                done[row] = true;
            }
        }
        if done.iter().all(|&d| d) {
            break;
        }
        // Finished rows keep stepping with padding that nothing attends to.
        valid = done.iter().map(|&d| vec![!d]).collect();
        let step: Vec<i64> = next.iter().zip(&done).map(|(&t, &d)| if d { opts.pad as i64 } else { t as i64 }).collect();
        input = Tensor::from_data(TensorData::new(step, [b, 1]), &device);
    }
    out
}

/// The next token of each row: argmax on the device for greedy, host-side sampling otherwise.
///
/// # Shapes
/// - `last`: `[batch, vocab]`
fn pick(last: Tensor<2>, processor: &mut LogitsProcessor) -> Vec<u32> {
    let [b, v] = last.dims();
    if processor.sampling == Sampling::Greedy {
        let ids = argmax_last(last.cast(DType::F32)).into_data().convert::<i64>();
        return ids.try_to_vec::<i64>().unwrap_or_default().into_iter().map(|i| i as u32).collect();
    }
    let flat = last.cast(DType::F32).into_data().convert::<f32>().try_to_vec::<f32>().unwrap_or_default();
    (0..b).map(|r| processor.sample(&flat[r * v..(r + 1) * v])).collect()
}
