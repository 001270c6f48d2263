//! Initial tensors of one Mamba-1 mixer (reference key names under `mamba.`).

use rand::rngs::StdRng;

use super::convert::{dt_bias, linear, uniform, AttentionWeights};
use crate::mamba::Mamba1Config;

/// `(name, shape, values)` of every parameter; `attn` fills in_proj_x, B_proj, C_proj, out_proj,
/// and `out_proj` is multiplied by `output_scale` (Mamba-1 has no norm to carry it).
pub(crate) fn tensors(m: &Mamba1Config, attn: Option<&AttentionWeights>, rng: &mut StdRng, output_scale: f32) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    let (d_model, d_inner, d_xb, n, r) = (m.d_model, m.d_inner, m.d_xb, m.d_state, m.dt_rank());
    let mut from = |src: Option<&Vec<f32>>, rows: usize, fan_in: usize| match src {
        Some(v) => v.clone(),
        None => linear(rng, rows, fan_in),
    };
    let x = from(attn.map(|a| &a.v), d_xb, d_model);
    let b = from(attn.map(|a| &a.k), d_xb, d_model);
    let c = from(attn.map(|a| &a.q), d_inner, d_model);
    let out: Vec<f32> = from(attn.map(|a| &a.o), d_model, d_inner).into_iter().map(|w| w * output_scale).collect();
    let z = linear(rng, d_inner, d_model);
    let bound = 1.0 / (m.d_conv as f32).sqrt();
    let conv_w = uniform(rng, d_inner * m.d_conv, -bound, bound);
    let conv_b = uniform(rng, d_inner, -bound, bound);
    let down = linear(rng, r, d_model);
    // dt_init = "random": U(-dt_rank^-0.5, dt_rank^-0.5).
    let std = (r as f32).powf(-0.5);
    let dt_w = uniform(rng, d_inner * r, -std, std);
    let dt_b = dt_bias(rng, d_inner);
    // S4D-real: A_log[i] = log(1..=n) for every channel.
    let a_log = (0..d_inner).flat_map(|_| (1..=n).map(|k| (k as f32).ln())).collect();
    vec![
        ("in_proj_x.weight".into(), vec![d_xb, d_model], x),
        ("in_proj_z.weight".into(), vec![d_inner, d_model], z),
        ("conv1d.weight".into(), vec![d_inner, 1, m.d_conv], conv_w),
        ("conv1d.bias".into(), vec![d_inner], conv_b),
        ("B_proj.weight".into(), vec![d_xb, d_model], b),
        ("C_proj.weight".into(), vec![d_inner, d_model], c),
        ("dt_proj_down.weight".into(), vec![r, d_model], down),
        ("dt_proj.weight".into(), vec![d_inner, r], dt_w),
        ("dt_proj.bias".into(), vec![d_inner], dt_b),
        ("A_log".into(), vec![d_inner, n], a_log),
        ("D".into(), vec![d_inner], vec![1.0; d_inner]),
        ("out_proj.weight".into(), vec![d_model, d_inner], out),
    ]
}
