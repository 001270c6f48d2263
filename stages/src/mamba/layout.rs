//! The rows of Mamba-2's fused `in_proj`, named: `[z | x | B | C | dt]` (row order fixed by the
//! reference checkpoints). Every slice of `in_proj`, its output or the conv channels goes through
//! these ranges, never through inline offsets.

use std::ops::Range;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InProjLayout {
    /// Gate, `d_inner` rows (new parameters).
    pub z: Range<usize>,
    /// SSM input, `d_xb` rows (from `v_proj`).
    pub x: Range<usize>,
    /// Input matrix, `d_xb` rows (from `k_proj`).
    pub b: Range<usize>,
    /// Output matrix, `d_inner` rows (from `q_proj`).
    pub c: Range<usize>,
    /// Step size, one row per head (new parameters).
    pub dt: Range<usize>,
}

impl InProjLayout {
    pub fn new(d_inner: usize, d_xb: usize, n_heads: usize) -> Self {
        let z = 0..d_inner;
        let x = z.end..z.end + d_xb;
        let b = x.end..x.end + d_xb;
        let c = b.end..b.end + d_inner;
        let dt = c.end..c.end + n_heads;
        Self { z, x, b, c, dt }
    }

    /// Total rows of `in_proj`.
    pub fn rows(&self) -> usize {
        self.dt.end
    }

    /// The rows that go through the causal conv: `[x | B | C]`.
    pub fn xbc(&self) -> Range<usize> {
        self.x.start..self.c.end
    }

    /// `r` (one of `x`, `b`, `c`) as channels of the conv, whose input starts at `x`.
    pub fn in_conv(&self, r: &Range<usize>) -> Range<usize> {
        r.start - self.x.start..r.end - self.x.start
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_follow_the_reference_order() {
        // SmolLM2-135M: 9 heads, 3 KV heads, head_dim 64.
        let l = InProjLayout::new(576, 192, 9);
        assert_eq!((l.z.clone(), l.x.clone(), l.b.clone(), l.c.clone(), l.dt.clone()), (0..576, 576..768, 768..960, 960..1536, 1536..1545));
        assert_eq!(l.xbc(), 576..1536);
        assert_eq!(l.in_conv(&l.b), 192..384);
        assert_eq!(l.in_conv(&l.c), 384..960);
    }
}
