//! The verifier's (and the draft's) cache during speculative decoding: the KV cache, whose
//! rollback is a shorter length, and one [`MambaRound`] per Mamba layer. A round is everything
//! fed since the last [`SpecCache::commit`]; committing keeps a prefix of it. Nothing is ever
//! recomputed from the prompt.

use burn::tensor::{Int, Tensor, TensorData};

use super::round::{Decay, MambaRound, StepInputs};
use super::round2::Mamba2Round;
use crate::hybrid::{Hybrid, MambaMixer};
use crate::llama::{KvCache, Rope};

/// A plain struct the caller owns, for one sequence (batch 1: acceptance differs per sequence).
#[derive(Debug, Clone, Default)]
pub struct SpecCache {
    pub kv: KvCache,
    /// Per layer (left empty at attention and Mamba-2 layers).
    pub mamba: Vec<MambaRound>,
    /// Per layer (left empty at attention and Mamba-1 layers).
    pub mamba2: Vec<Mamba2Round>,
    /// Positions cached when the round started.
    pub round_start: usize,
}

impl SpecCache {
    pub fn new(n_layers: usize) -> Self {
        Self { kv: KvCache::new(n_layers), mamba: vec![MambaRound::default(); n_layers], mamba2: vec![Mamba2Round::default(); n_layers], round_start: 0 }
    }

    /// Positions cached, the round's included.
    pub fn len(&self) -> usize {
        self.kv.len()
    }

    pub fn is_empty(&self) -> bool {
        self.kv.is_empty()
    }

    /// Tokens fed since the round started.
    pub fn fed(&self) -> usize {
        self.len() - self.round_start
    }

    /// Keeps the first `keep` tokens of the round (clamped to `fed()`), drops the rest, and
    /// starts the next round: KV caches are cut to length, Mamba-1 layers replay `keep` steps from
    /// their snapshot (or take the current state when all are kept), Mamba-2 layers keep the
    /// steps' inputs for their next forward call to replay in the same launch.
    pub fn commit(&mut self, model: &Hybrid, keep: usize) {
        let keep = keep.min(self.fed());
        let len = self.round_start + keep;
        self.kv.truncate(len);
        for ((layer, round), round2) in model.model.layers.iter().zip(self.mamba.iter_mut()).zip(self.mamba2.iter_mut()) {
            match &layer.mamba {
                Some(MambaMixer::Mamba2(m)) => round2.commit(keep, m.conv1d.kernel()),
                Some(MambaMixer::Mamba1(m)) => round.commit(keep, m.conv1d.kernel(), &Decay::Channels(m.a())),
                None => {}
            }
        }
        self.round_start = len;
    }
}

/// Runs `tokens` after what `cache` holds, adding them to the current round. Attention layers
/// see all of them at once against the KV cache; Mamba-2 layers run them (after replaying what
/// the last commit kept) in one multi-step launch; Mamba-1 layers scan them in one chunked pass
/// and record their scan inputs.
///
/// # Shapes
/// - `tokens`: `[seq]`, non-empty; returns logits `[seq, vocab]`
pub fn forward_round(model: &Hybrid, rope: &Rope, tokens: &[u32], cache: &mut SpecCache) -> Tensor<2> {
    let device = model.model.embed_tokens.weight.val().device();
    let s = tokens.len();
    let ids: Vec<i64> = tokens.iter().map(|&t| t as i64).collect();
    let ids: Tensor<2, Int> = Tensor::from_data(TensorData::new(ids, [1, s]), &device);
    let (rounds, rounds2) = (&mut cache.mamba, &mut cache.mamba2);
    let logits = model.forward_with(ids, &[vec![true; s]], rope, &mut cache.kv, |i, mixer, u, _| mamba_round(mixer, u, &mut rounds[i], &mut rounds2[i]));
    let v = logits.dims()[2];
    logits.reshape([s, v])
}

/// One Mamba mixer over a round's new tokens (no padding: batch 1).
///
/// # Shapes
/// - `u`: `[1, seq, d_model]` -> same
fn mamba_round(mixer: &MambaMixer, u: Tensor<3>, round: &mut MambaRound, round2: &mut Mamba2Round) -> Tensor<3> {
    match mixer {
        MambaMixer::Mamba2(m) => round2.forward(m, u),
        MambaMixer::Mamba1(m) => {
            let k = m.conv1d.kernel();
            let inputs = m.scan_inputs(u, None, &mut round.window(k));
            let (y, s) = m.scan(&inputs, round.current.take());
            let steps = StepInputs { x: inputs.x.clone().unsqueeze_dim(3), dt: inputs.dt.clone(), b: inputs.b.clone() };
            round.push(inputs.conv_in.clone(), k, steps, s);
            m.output(y, inputs)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hybrid::{HybridConfig, MixerConfig};
    use crate::lm::CausalLm;
    use crate::llama::LlamaConfig;
    use crate::mamba::{Mamba1Config, Mamba2Config};
    use burn::tensor::Device;

    fn max_diff(a: Tensor<2>, b: Tensor<2>) -> f32 {
        (a - b).abs().max().into_scalar::<f32>()
    }

    /// Feeding 5 tokens, keeping 2, then feeding the rest equals one plain forward, for both
    /// Mamba variants beside attention.
    #[test]
    fn rolling_back_a_round_equals_never_having_fed_the_rejected_tokens() {
        let device = Device::flex();
        let llama = LlamaConfig::new(50, 16, 32, 3, 4, 2, 4);
        let mixers = [MixerConfig::Mamba2(Mamba2Config::new(16, 4, 2, 4).with_chunk_size(4)), MixerConfig::Mamba1(Mamba1Config::new(16, 16, 8).with_d_state(4))];
        for mixer in mixers {
            let config = HybridConfig { llama: llama.clone(), attention_layers: vec![1], mixer };
            let model = config.init(&device);
            let rope = Rope::new(&llama);
            let tokens = [3u32, 7, 1, 9, 4, 4, 2, 8, 5, 6];
            let ids = Tensor::<2, Int>::from_data(TensorData::new(tokens.iter().map(|&t| t as i64).collect(), [1, 10]), &device);
            let want = model.forward(ids, &[vec![true; 10]], &rope, &mut model.new_cache()).reshape([10, 50]);
            let mut cache = SpecCache::new(3);
            let mut got = vec![forward_round(&model, &rope, &tokens[..3], &mut cache)];
            cache.commit(&model, 3);
            let round = forward_round(&model, &rope, &[tokens[3], tokens[4], 11, 12, 13], &mut cache);
            got.push(round.narrow(0, 0, 2));
            cache.commit(&model, 2); // 3 rejected
            forward_round(&model, &rope, &[14, 15], &mut cache);
            cache.commit(&model, 0); // all rejected
            got.push(forward_round(&model, &rope, &tokens[5..10], &mut cache));
            cache.commit(&model, 5);
            let got = Tensor::cat(got, 0);
            let diff = max_diff(got, want);
            assert!(diff < 1e-4, "{diff:e}");
            assert_eq!(cache.len(), 10);
        }
    }

    /// A prompt longer than one launch takes the chunked scan; rounds after it (all kept, or a
    /// prefix kept, which then replays part of the prompt through the multi-step path) still
    /// equal one plain forward over the kept tokens.
    #[test]
    fn rounds_after_a_long_prompt_equal_a_plain_forward() {
        let device = Device::flex();
        let llama = LlamaConfig::new(50, 16, 32, 3, 4, 2, 4);
        let config = HybridConfig { llama: llama.clone(), attention_layers: vec![1], mixer: MixerConfig::Mamba2(Mamba2Config::new(16, 4, 2, 4).with_chunk_size(8)) };
        let model = config.init(&device);
        let rope = Rope::new(&llama);
        let tokens: Vec<u32> = (0..48u32).map(|i| (i * 7 + 3) % 50).collect();
        let ids = Tensor::<2, Int>::from_data(TensorData::new(tokens.iter().map(|&t| t as i64).collect(), [1, 48]), &device);
        let want = model.forward(ids, &[vec![true; 48]], &rope, &mut model.new_cache()).reshape([48, 50]);
        for kept in [40, 37] {
            let mut cache = SpecCache::new(3);
            let mut got = vec![forward_round(&model, &rope, &tokens[..40], &mut cache).narrow(0, 0, kept)];
            cache.commit(&model, kept); // 37: three prompt steps dropped, 37 left to replay
            let round = forward_round(&model, &rope, &[tokens[kept], tokens[kept + 1], 1, 2], &mut cache);
            got.push(round.narrow(0, 0, 2));
            cache.commit(&model, 2);
            got.push(forward_round(&model, &rope, &tokens[kept + 2..], &mut cache));
            cache.commit(&model, 48 - kept - 2);
            let diff = max_diff(Tensor::cat(got, 0), want.clone());
            assert!(diff < 1e-4, "kept {kept}: {diff:e}");
            assert_eq!(cache.len(), 48);
        }
    }
}
