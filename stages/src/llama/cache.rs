//! The KV cache: a plain struct the caller owns and passes as `&mut` to `forward`.

use burn::tensor::{Bool, Device, Tensor, TensorData};

/// Keys and values of every layer for the tokens seen so far, plus which cached positions
/// are real tokens (left padding is not).
#[derive(Debug, Clone, Default)]
pub struct KvCache {
    /// Per layer: `[batch, n_kv_heads, cached, head_dim]` keys and values.
    pub layers: Vec<Option<(Tensor<4>, Tensor<4>)>>,
    /// `[batch][cached]`: false where the position is padding.
    pub valid: Vec<Vec<bool>>,
}

impl KvCache {
    pub fn new(n_layers: usize) -> Self {
        Self { layers: vec![None; n_layers], valid: Vec::new() }
    }

    /// Number of cached positions.
    pub fn len(&self) -> usize {
        self.valid.first().map_or(0, Vec::len)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Position ids of a step's tokens as transformers derives them from the attention mask:
    /// real tokens count on from the cached ones; padding gets position 1 (transformers'
    /// `masked_fill_(mask == 0, 1)`).
    ///
    /// # Shapes
    /// - `valid`: `[batch][seq]` -> `[batch][seq]`
    pub fn positions(&self, valid: &[Vec<bool>]) -> Vec<Vec<usize>> {
        valid
            .iter()
            .enumerate()
            .map(|(r, row)| {
                let mut p = self.valid.get(r).map_or(0, |c| c.iter().filter(|&&v| v).count());
                row.iter().map(|&v| if v { p += 1; p - 1 } else { 1 }).collect()
            })
            .collect()
    }

    /// Appends this step's validity; returns the attention mask (true = masked) for the step.
    ///
    /// # Shapes
    /// - `step_valid`: `[batch][seq]`; returns `[batch, 1, seq, cached + seq]`
    pub fn push_mask(&mut self, step_valid: &[Vec<bool>], device: &Device) -> Tensor<4, Bool> {
        let offset = self.len();
        if self.valid.is_empty() {
            self.valid = vec![Vec::new(); step_valid.len()];
        }
        for (row, new) in self.valid.iter_mut().zip(step_valid) {
            row.extend_from_slice(new);
        }
        let (b, s, t) = (step_valid.len(), step_valid[0].len(), offset + step_valid[0].len());
        let mut mask = Vec::with_capacity(b * s * t);
        for row in &self.valid {
            for i in 0..s {
                // A padding query would see nothing and some kernels turn an all-masked row
                // into NaN, which then leaks through 0·NaN: let every query see itself.
                let q = offset + i;
                mask.extend((0..t).map(|j| (!row[j] || j > q) && j != q));
            }
        }
        Tensor::from_data(TensorData::new(mask, [b, 1, s, t]), device)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mask_is_causal_skips_padding_and_never_blanks_a_row() {
        let device = Device::flex();
        let mut cache = KvCache::new(1);
        // Row 0 left-padded by one.
        let m = cache.push_mask(&[vec![false, true, true], vec![true, true, true]], &device);
        let m: Vec<bool> = m.into_data().convert::<bool>().try_to_vec().unwrap();
        #[rustfmt::skip]
        assert_eq!(m, vec![
            false, true, true,   true, false, true,   true, false, false,
            false, true, true,   false, false, true,  false, false, false,
        ]);
        // One decode step: keys are the 3 cached positions plus the new one.
        let m = cache.push_mask(&[vec![true], vec![true]], &device);
        let m: Vec<bool> = m.into_data().convert::<bool>().try_to_vec().unwrap();
        assert_eq!(m, vec![true, false, false, false, false, false, false, false]);
        assert_eq!(cache.len(), 4);
    }
}
