//! One decoding step of a Mamba-2 mixer between `in_proj` and the gated norm: the causal conv
//! over the carried window, SiLU, the grouped-query split into `x`, `B`, `C`, `dt` through
//! softplus, the state update `H = exp(dt A) H + dt x Bᵀ`, the read-out `y = H C + D x`.
//!
//! In plain tensor ops this is some thirty small launches per layer and token, and decoding a
//! SmolLM2 hybrid at batch 1 is bound by launches, not bytes (BENCHMARKS.md); the kernel does it
//! in one launch: [`crate::mamba2_steps`]'s kernel with one step, so that decoding and
//! speculative verification round alike.

mod reference;

use burn::tensor::Tensor;

pub use reference::mamba2_step_reference;

/// True for a CubeCL device (CUDA here), where the kernels run.
#[cfg(feature = "cuda")]
pub(crate) fn runs_on_cube(device: &burn::tensor::Device) -> bool {
    matches!(device.clone().inner().as_dispatch(), burn::backend::DispatchDevice::Cube(_))
}

/// A CubeCL device computing without gradients: where the inference kernels ([`crate::reduce`],
/// [`crate::gemv`]) run, having no backward of their own.
#[cfg(feature = "cuda")]
pub(crate) fn cube_without_gradients(device: &burn::tensor::Device) -> bool {
    runs_on_cube(device) && !device.is_autodiff()
}

/// Whether the kernels take this layer (its `d_state` must split over their lanes).
#[cfg(feature = "cuda")]
pub(crate) fn kernel_takes(w: &Mamba2StepWeights) -> bool {
    crate::mamba2_steps::shape::supports(w)
}

/// A Mamba-2 layer's parameters the step reads, already in the dtypes the step computes in.
///
/// Conv channels are `[x (kv_heads·head_dim) | B (kv_heads·d_state) | C (heads·d_state)]`;
/// head `i` reads KV head `i / (heads / kv_heads)` of `x` and `B`.
#[derive(Debug, Clone)]
pub struct Mamba2StepWeights {
    /// `[channels, K]`, the depthwise taps (the checkpoint's `[channels, 1, K]` without the 1).
    pub conv_weight: Tensor<2>,
    /// `[channels]`
    pub conv_bias: Tensor<1>,
    /// `[heads]`, added to `dt` before softplus.
    pub dt_bias: Tensor<1>,
    /// `[heads]`, `A = -exp(A_log)` in f32.
    pub a: Tensor<1>,
    /// `[heads]`, the skip.
    pub d: Tensor<1>,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub d_state: usize,
}

/// What one step leaves.
#[derive(Debug, Clone)]
pub struct StepOut {
    /// `[batch, heads, head_dim]`, f32, before the gated norm.
    pub y: Tensor<3>,
    /// `[batch, heads, head_dim, d_state]`, f32.
    pub state: Tensor<4>,
    /// `[batch, K - 1, channels]`: the last `K - 1` conv inputs, this token's included.
    pub window: Tensor<3>,
}

/// One step from this token's conv input `xbc` (`[batch, channels]`) and raw `dt`
/// (`[batch, heads]`), after `window` (`[batch, K - 1, channels]`) and `state`
/// (`[batch, heads, head_dim, d_state]`, f32). On a CubeCL device the fused kernel runs (for
/// every layer whose `d_state` splits over its lanes); elsewhere, [`mamba2_step_reference`].
pub fn mamba2_step(xbc: Tensor<2>, dt: Tensor<2>, window: Tensor<3>, state: Tensor<4>, w: &Mamba2StepWeights) -> StepOut {
    #[cfg(feature = "cuda")]
    if runs_on_cube(&xbc.device()) && kernel_takes(w) {
        return one_of_the_steps(xbc, dt, window, state, w);
    }
    mamba2_step_reference(xbc, dt, window, state, w)
}

/// The step as the multi-step kernel's one step, launched as the variant that keeps the state
/// after every step (for one step, the state after it, laid out as the state): that variant
/// compiles to fewer registers (40 against 49-52 a unit, no branch on where to snapshot), so an
/// SM runs three cubes rather than two, and ncu timed it at 48 µs against 63 for Llama-3-8B's
/// layer at batch 32 in bf16 (session 11). Its arithmetic is the other variants'.
///
/// The launch takes the window and the token's inputs as they are and writes the next window
/// itself: a concatenation of the two was two copy launches a Mamba layer and token, and decoding
/// on graphs at batch 1 is bound by launches (session 13: the 25% hybrid 1.875 -> 1.840 ms a
/// token, the 50% 1.882 -> 1.855, the teacher, with no Mamba layer, 1.874 -> 1.882). At batch 32
/// reading two parts in place takes a unit 54-64 registers against 40, yet concatenating first
/// did not pay there either: one step of Llama-3-8B's layer 74.9 / 65.8 µs in place against
/// 67.4 / 67.6 joined (f32 / bf16), and the 50% hybrid's token on a graph at batch 32 8.97 ms in
/// place against 9.03 joined (session 16, BENCHMARKS.md).
#[cfg(feature = "cuda")]
fn one_of_the_steps(xbc: Tensor<2>, dt: Tensor<2>, window: Tensor<3>, state: Tensor<4>, w: &Mamba2StepWeights) -> StepOut {
    let [bs, h] = dt.dims();
    let out = crate::mamba2_steps::cube::mamba2_steps_in_place(window, xbc.unsqueeze_dim::<3>(1), dt.unsqueeze_dim::<3>(1), state, w, crate::mamba2_steps::EVERY_STEP, 0);
    StepOut { y: out.y.reshape([bs, h, w.head_dim]), state: out.snapshot, window: out.window }
}

#[cfg(test)]
pub(crate) mod tests {
    use burn::tensor::activation::softplus;
    use burn::tensor::{Device, Distribution};

    use super::*;

    /// Random weights of a small GQA layer: 4 heads over 2 KV heads.
    pub fn weights(device: &Device, h: usize, kv: usize, p: usize, n: usize, k: usize) -> Mamba2StepWeights {
        let normal = Distribution::Normal(0.0, 0.5);
        let channels = kv * p + kv * n + h * n;
        Mamba2StepWeights {
            conv_weight: Tensor::random([channels, k], normal, device),
            conv_bias: Tensor::random([channels], normal, device),
            dt_bias: Tensor::random([h], Distribution::Uniform(-4.0, -1.0), device),
            a: Tensor::<1>::random([h], Distribution::Uniform(1.0, 16.0), device).neg(),
            d: Tensor::ones([h], device),
            heads: h,
            kv_heads: kv,
            head_dim: p,
            d_state: n,
        }
    }

    /// The step written out per scalar, as METHOD.md states the recurrence.
    #[test]
    fn the_reference_equals_the_recurrence_written_per_element() {
        let device = Device::flex();
        let (bs, h, kv, p, n, k) = (2, 4, 2, 3, 5, 4);
        let w = weights(&device, h, kv, p, n, k);
        let channels = kv * p + kv * n + h * n;
        let normal = Distribution::Normal(0.0, 1.0);
        let xbc = Tensor::<2>::random([bs, channels], normal, &device);
        let dt = Tensor::<2>::random([bs, h], normal, &device);
        let window = Tensor::<3>::random([bs, k - 1, channels], normal, &device);
        let state = Tensor::<4>::random([bs, h, p, n], normal, &device);
        let out = mamba2_step_reference(xbc.clone(), dt.clone(), window.clone(), state.clone(), &w);

        let v2 = |t: Tensor<2>| -> Vec<f32> { t.into_data().try_to_vec::<f32>().unwrap() };
        let (xbc, win, st) = (v2(xbc), window.into_data().try_to_vec::<f32>().unwrap(), state.into_data().try_to_vec::<f32>().unwrap());
        let (cw, cb) = (v2(w.conv_weight.clone()), w.conv_bias.clone().into_data().try_to_vec::<f32>().unwrap());
        let dts = v2(softplus(dt + w.dt_bias.clone().unsqueeze_dim::<2>(0), 1.0));
        let (a, d) = (w.a.clone().into_data().try_to_vec::<f32>().unwrap(), w.d.clone().into_data().try_to_vec::<f32>().unwrap());
        let silu = |v: f32| v / (1.0 + (-v).exp());
        let conv = |bi: usize, ch: usize| {
            let input = |j: usize| if j < k - 1 { win[(bi * (k - 1) + j) * channels + ch] } else { xbc[bi * channels + ch] };
            silu(cb[ch] + (0..k).map(|j| cw[ch * k + j] * input(j)).sum::<f32>())
        };
        let (y, s_new) = (out.y.into_data().try_to_vec::<f32>().unwrap(), out.state.into_data().try_to_vec::<f32>().unwrap());
        for bi in 0..bs {
            for hi in 0..h {
                let g = hi / (h / kv);
                let dt = dts[bi * h + hi];
                for pi in 0..p {
                    let x = conv(bi, g * p + pi);
                    let mut want_y = d[hi] * x;
                    for ni in 0..n {
                        let (b, c) = (conv(bi, kv * p + g * n + ni), conv(bi, kv * (p + n) + hi * n + ni));
                        let at = ((bi * h + hi) * p + pi) * n + ni;
                        let s = st[at] * (dt * a[hi]).exp() + dt * x * b;
                        assert!((s_new[at] - s).abs() < 1e-4, "state {at}: {} vs {s}", s_new[at]);
                        want_y += s * c;
                    }
                    let got = y[(bi * h + hi) * p + pi];
                    assert!((got - want_y).abs() < 1e-4 * want_y.abs().max(1.0), "y: {got} vs {want_y}");
                }
            }
        }
        // The window moved by one: its last row is this token's input.
        let nw = out.window.into_data().try_to_vec::<f32>().unwrap();
        for bi in 0..bs {
            for ch in 0..channels {
                assert_eq!(nw[(bi * (k - 1) + k - 2) * channels + ch], xbc[bi * channels + ch]);
                assert_eq!(nw[(bi * (k - 1)) * channels + ch], win[(bi * (k - 1) + 1) * channels + ch]);
            }
        }
    }
}
