//! A warp's total and maximum by xor shuffles, for the kernels that reduce a row with a whole
//! cube (CUDA's 32-lane warps; every lane must take part, so call them outside branches).

use burn_cubecl::cubecl;
use cubecl::prelude::*;

/// The sum of a warp's values, in every lane.
#[cube]
pub(crate) fn warp_sum(v: f32) -> f32 {
    let mut s = v;
    #[unroll]
    for b in 0..5u32 {
        s += plane_shuffle_xor(s, 16u32 >> b);
    }
    s
}

/// The largest of a warp's values, in every lane.
#[cube]
pub(crate) fn warp_max(v: f32) -> f32 {
    let mut m = v;
    #[unroll]
    for b in 0..5u32 {
        let o = plane_shuffle_xor(m, 16u32 >> b);
        if o > m {
            m = o;
        }
    }
    m
}
