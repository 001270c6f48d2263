//! Initial tensors of one Mamba-2 mixer (reference key names under `mamba.`).

use rand::rngs::StdRng;

use super::convert::{dt_bias, linear, uniform, AttentionWeights};
use crate::mamba::Mamba2Config;

/// `(name, shape, values)` of every parameter; `attn` fills x, B, C and out_proj; the gated
/// norm's weight starts at `output_scale`.
pub(crate) fn tensors(m: &Mamba2Config, attn: Option<&AttentionWeights>, rng: &mut StdRng, output_scale: f32) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    let (d_model, d_inner, h) = (m.d_model, m.d_inner(), m.n_heads);
    let lay = m.layout();
    // in_proj: a default init of every row, then the teacher's rows where they go.
    let mut in_proj = linear(rng, lay.rows(), d_model);
    if let Some(a) = attn {
        for (range, src) in [(&lay.x, &a.v), (&lay.b, &a.k), (&lay.c, &a.q)] {
            in_proj[range.start * d_model..range.end * d_model].copy_from_slice(src);
        }
    }
    let conv_ch = lay.xbc().len();
    let bound = 1.0 / (m.d_conv as f32).sqrt();
    let conv_w = uniform(rng, conv_ch * m.d_conv, -bound, bound);
    let conv_b = uniform(rng, conv_ch, -bound, bound);
    let dt = dt_bias(rng, h);
    let a_log = uniform(rng, h, 1.0, 16.0).into_iter().map(f32::ln).collect();
    let out_proj = match attn {
        Some(a) => a.o.clone(),
        None => linear(rng, d_model, d_inner),
    };
    vec![
        ("in_proj.weight".into(), vec![lay.rows(), d_model], in_proj),
        ("conv1d.weight".into(), vec![conv_ch, 1, m.d_conv], conv_w),
        ("conv1d.bias".into(), vec![conv_ch], conv_b),
        ("dt_bias".into(), vec![h], dt),
        ("A_log".into(), vec![h], a_log),
        ("D".into(), vec![h], vec![1.0; h]),
        ("norm.weight".into(), vec![d_inner], vec![output_scale; d_inner]),
        ("out_proj.weight".into(), vec![d_model, d_inner], out_proj),
    ]
}
