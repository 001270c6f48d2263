//! Rotary position embeddings as `LlamaRotaryEmbedding` computes them, including `llama3`
//! frequency scaling. Angles are computed on the host in f32, like transformers does.

use burn::tensor::{DType, Device, Tensor, TensorData};

use super::config::{Llama3Scaling, LlamaConfig};

/// Inverse frequencies of the rotary embedding, one per pair of channels.
#[derive(Debug, Clone)]
pub struct Rope {
    pub inv_freq: Vec<f32>,
}

impl Rope {
    pub fn new(config: &LlamaConfig) -> Self {
        let dim = config.head_dim;
        let base = config.rope_theta as f32;
        let inv: Vec<f32> = (0..dim).step_by(2).map(|i| 1.0 / base.powf(i as f32 / dim as f32)).collect();
        let inv_freq = match &config.rope_llama3 {
            Some(s) => inv.into_iter().map(|f| llama3(f, s)).collect(),
            None => inv,
        };
        Self { inv_freq }
    }

    /// cos and sin for each row's positions.
    ///
    /// # Shapes
    /// - `positions`: `[batch][seq]`
    /// - returns two tensors `[batch, 1, seq, head_dim]` in `dtype`
    pub fn cos_sin(&self, positions: &[Vec<usize>], dtype: DType, device: &Device) -> (Tensor<4>, Tensor<4>) {
        let (b, s, half) = (positions.len(), positions[0].len(), self.inv_freq.len());
        let mut cos = Vec::with_capacity(b * s * half * 2);
        let mut sin = Vec::with_capacity(b * s * half * 2);
        for row in positions {
            for &p in row {
                let angles = self.inv_freq.iter().map(|f| f * p as f32);
                // emb = cat(freqs, freqs)
                let angles: Vec<f32> = angles.clone().chain(angles).collect();
                cos.extend(angles.iter().map(|a| a.cos()));
                sin.extend(angles.iter().map(|a| a.sin()));
            }
        }
        let shape = [b, 1, s, 2 * half];
        let make = |v: Vec<f32>| Tensor::<4>::from_data(TensorData::new(v, shape), (device, DType::F32)).cast(dtype);
        (make(cos), make(sin))
    }
}

fn llama3(f: f32, s: &Llama3Scaling) -> f32 {
    let old = s.original_max_position_embeddings as f32;
    let (factor, lo, hi) = (s.factor as f32, s.low_freq_factor as f32, s.high_freq_factor as f32);
    let (low_freq_wavelen, high_freq_wavelen) = (old / lo, old / hi);
    let wavelen = 2.0 * std::f32::consts::PI / f;
    if wavelen < high_freq_wavelen {
        f
    } else if wavelen > low_freq_wavelen {
        f / factor
    } else {
        let smooth = (old / wavelen - lo) / (hi - lo);
        (1.0 - smooth) * f / factor + smooth * f
    }
}

/// `x * cos + rotate_half(x) * sin`, where `rotate_half(x) = cat(-x2, x1)`.
///
/// # Shapes
/// - `x`: `[batch, heads, seq, head_dim]`; `cos`, `sin`: `[batch, 1, seq, head_dim]`
pub fn apply_rotary(x: Tensor<4>, cos: &Tensor<4>, sin: &Tensor<4>) -> Tensor<4> {
    let [_, _, _, d] = x.dims();
    let x1 = x.clone().narrow(3, 0, d / 2);
    let x2 = x.clone().narrow(3, d / 2, d / 2);
    let rotated = Tensor::cat(vec![x2.neg(), x1], 3);
    x * cos.clone() + rotated * sin.clone()
}
