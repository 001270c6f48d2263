//! The Mamba-2 mixer as "Mamba2InLlama" builds it from a Llama attention layer: `expand = 1`,
//! one group per query head, `headdim = d_state` (= the teacher's `head_dim`), the conv over
//! `[x | B | C]` before the grouped-query repeat of `x` and `B`.

use distill_kernels::matmul::linear;
use burn::config::Config;
use burn::module::{Module, Param};
use burn::nn::{Initializer, Linear, LinearConfig};
use burn::tensor::activation::{silu, softplus};
use burn::tensor::{DType, Device, Tensor};

use distill_kernels::{mamba2_step, mamba2_steps_history, Mamba2StepWeights};

use crate::channels::{add_channels, mul_channels};

use super::conv::{CausalConv1d, CausalConv1dConfig};
use super::layout::InProjLayout;
use super::norm::{GatedRmsNorm, GatedRmsNormConfig};
use super::ssd::{ssd_chunked, ssd_step};
use super::state::MambaState;

#[derive(Config, Debug)]
pub struct Mamba2Config {
    pub d_model: usize,
    /// Heads = groups (`ngroups` in the reference config): the teacher's query heads.
    pub n_heads: usize,
    /// Heads of `x` and `B` before the repeat: the teacher's KV heads.
    pub n_kv_heads: usize,
    /// State size `n`, also the head dim `p`.
    pub d_state: usize,
    #[config(default = 4)]
    pub d_conv: usize,
    #[config(default = 256)]
    pub chunk_size: usize,
}

/// Field names are the checkpoint's (`mamba.in_proj.weight`, ...); `a_log` and `d` are stored
/// as `A_log` and `D` (the hybrid loader's rename table).
#[derive(Module, Debug)]
pub struct Mamba2 {
    pub in_proj: Linear,
    pub conv1d: CausalConv1d,
    pub dt_bias: Param<Tensor<1>>,
    pub a_log: Param<Tensor<1>>,
    pub d: Param<Tensor<1>>,
    pub norm: GatedRmsNorm,
    pub out_proj: Linear,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub d_state: usize,
    pub chunk_size: usize,
}

impl Mamba2Config {
    pub fn d_inner(&self) -> usize {
        self.n_heads * self.d_state
    }
    pub fn d_xb(&self) -> usize {
        self.n_kv_heads * self.d_state
    }
    pub fn layout(&self) -> InProjLayout {
        InProjLayout::new(self.d_inner(), self.d_xb(), self.n_heads)
    }

    /// Parameters with the shapes of a converted layer; `A_log = log 8`, `D = 1`, the dt bias
    /// `softplus^-1(0.01)`. The `init` stage writes the reference's random draws instead.
    pub fn init(&self, device: &Device) -> Mamba2 {
        let (d_inner, layout) = (self.d_inner(), self.layout());
        let inv_softplus = |dt: f64| dt + (-(-dt).exp_m1()).ln();
        Mamba2 {
            in_proj: LinearConfig::new(self.d_model, layout.rows()).with_bias(false).init(device),
            conv1d: CausalConv1dConfig::new(layout.xbc().len()).with_kernel(self.d_conv).init(device),
            dt_bias: Initializer::Constant { value: inv_softplus(0.01) }.init([self.n_heads], device),
            a_log: Initializer::Constant { value: 8f64.ln() }.init([self.n_heads], device),
            d: Initializer::Ones.init([self.n_heads], device),
            norm: GatedRmsNormConfig::new(d_inner, self.d_state).init(device),
            out_proj: LinearConfig::new(d_inner, self.d_model).with_bias(false).init(device),
            n_heads: self.n_heads,
            n_kv_heads: self.n_kv_heads,
            d_state: self.d_state,
            chunk_size: self.chunk_size,
        }
    }
}

/// Repeats each of `kv` heads `h / kv` times in place: head `i` reads KV head `i / (h / kv)`.
///
/// # Shapes
/// - `v`: `[batch, seq, kv, w]` -> `[batch, seq, h, w]`
pub(crate) fn repeat_heads(v: Tensor<4>, h: usize) -> Tensor<4> {
    let [b, s, kv, w] = v.dims();
    if kv == h {
        return v;
    }
    v.unsqueeze_dim::<5>(3).expand([b, s, kv, h / kv, w]).reshape([b, s, h, w])
}

impl Mamba2 {
    pub fn layout(&self) -> InProjLayout {
        InProjLayout::new(self.n_heads * self.d_state, self.n_kv_heads * self.d_state, self.n_heads)
    }

    /// Runs `u` after what `state` holds, leaving the state after the last token. One token
    /// takes the recurrent step; longer inputs the chunked scan. `mask` (1 = token, 0 = padding)
    /// makes padding invisible: zero conv input and `dt = 0`, so the state passes through.
    ///
    /// # Shapes
    /// - `u`: `[batch, seq, d_model]` -> same
    /// - `mask`: `[batch, seq]`
    pub fn forward(&self, u: Tensor<3>, mask: Option<&Tensor<2>>, state: &mut MambaState) -> Tensor<3> {
        // The fused step has no backward: a one-token input under autodiff takes the scan.
        if u.dims()[1] == 1 && !u.device().is_autodiff() {
            return self.step(u, mask, state);
        }
        let inputs = self.scan_inputs(u, mask, &mut state.conv);
        let s0 = state.ssm.take();
        let (y, s) = self.scan(&inputs, s0);
        state.ssm = Some(s);
        self.output(y, inputs)
    }

    /// Everything before the scan: `in_proj`, the causal conv after `window` (left holding the
    /// last `K - 1` conv inputs), the grouped-query repeat, `dt`. Speculative decoding keeps
    /// `xbc`, `x`, `dt` and `b` of each step to rebuild the state after a rejection.
    ///
    /// # Shapes
    /// - `u`: `[batch, seq, d_model]`; `mask`: `[batch, seq]`; `window`: `[batch, K - 1, conv channels]`
    pub fn scan_inputs(&self, u: Tensor<3>, mask: Option<&Tensor<2>>, window: &mut Option<Tensor<3>>) -> Mamba2Inputs {
        let (z, xbc, dt) = self.project(u);
        self.inputs_from(z, xbc, dt, mask, window)
    }

    /// `in_proj` split into the gate `z`, the conv input `xbc` and the raw `dt` (before
    /// `dt_bias` and softplus).
    ///
    /// # Shapes
    /// - `u`: `[batch, seq, d_model]` -> `z` `[batch, seq, d_inner]`, `xbc` `[batch, seq, conv channels]`, `dt` `[batch, seq, heads]`
    pub fn project(&self, u: Tensor<3>) -> (Tensor<3>, Tensor<3>, Tensor<3>) {
        let lay = self.layout();
        let zxbcdt = linear(&self.in_proj, u); // [bs, l, rows]
        let part = |r: &std::ops::Range<usize>| zxbcdt.clone().narrow(2, r.start, r.len());
        (part(&lay.z), part(&lay.xbc()), part(&lay.dt))
    }

    /// [`Self::scan_inputs`] after [`Self::project`].
    pub fn inputs_from(&self, z: Tensor<3>, mut xbc: Tensor<3>, dt: Tensor<3>, mask: Option<&Tensor<2>>, window: &mut Option<Tensor<3>>) -> Mamba2Inputs {
        let [bs, l, _] = xbc.dims();
        let (h, kv, p, n) = (self.n_heads, self.n_kv_heads, self.d_state, self.d_state);
        let lay = self.layout();
        let dtype = xbc.dtype();
        let keep = mask.map(|m| m.clone().cast(dtype).unsqueeze_dim::<3>(2)); // [bs, l, 1]
        if let Some(k) = &keep {
            xbc = xbc * k.clone();
        }
        let conv = silu(self.conv1d.forward(xbc.clone(), window)); // [bs, l, conv channels]
        let conv_part = |r: &std::ops::Range<usize>| {
            let r = lay.in_conv(r);
            conv.clone().narrow(2, r.start, r.len())
        };
        let x = repeat_heads(conv_part(&lay.x).reshape([bs, l, kv, p]), h); // [bs, l, h, p]
        let b = repeat_heads(conv_part(&lay.b).reshape([bs, l, kv, n]), h); // [bs, l, h, n]
        let c = conv_part(&lay.c).reshape([bs, l, h, n]);
        let mut dt = softplus(add_channels(dt.cast(DType::F32), self.dt_bias.val().cast(DType::F32)), 1.0); // [bs, l, h]
        if let Some(k) = keep {
            dt = dt * k.cast(DType::F32);
        }
        Mamba2Inputs { z, xbc, x, b, c, dt }
    }

    /// The parameters the fused decode kernels of `distill-kernels` read.
    pub fn step_weights(&self) -> Mamba2StepWeights {
        let [channels, _, k] = self.conv1d.weight.dims();
        Mamba2StepWeights {
            conv_weight: self.conv1d.weight.val().reshape([channels, k]),
            conv_bias: self.conv1d.bias.val(),
            dt_bias: self.dt_bias.val(),
            a: self.a(),
            d: self.d.val(),
            heads: self.n_heads,
            kv_heads: self.n_kv_heads,
            head_dim: self.d_state,
            d_state: self.d_state,
        }
    }

    /// `A = -exp(A_log)` in f32.
    ///
    /// # Shapes
    /// - returns `[heads]`
    pub fn a(&self) -> Tensor<1> {
        self.a_log.val().cast(DType::F32).exp().neg()
    }

    /// The scan from `s0` (zeros when `None`): the recurrent step for one token, else chunked.
    ///
    /// # Shapes
    /// - `s0`: `[batch, heads, p, n]`; returns `y` `[batch, seq, heads, p]` and the final state
    pub fn scan(&self, i: &Mamba2Inputs, s0: Option<Tensor<4>>) -> (Tensor<4>, Tensor<4>) {
        let [bs, l, h, p] = i.x.dims();
        let n = self.d_state;
        let s0 = s0.unwrap_or_else(|| Tensor::zeros([bs, h, p, n], (&i.x.device(), DType::F32)));
        if l == 1 {
            let one = |v: Tensor<4>, w| v.reshape([bs, h, w]);
            let (y, s) = ssd_step(one(i.x.clone(), p), i.dt.clone().reshape([bs, h]), self.a(), one(i.b.clone(), n), one(i.c.clone(), n), s0);
            (y.reshape([bs, 1, h, p]), s)
        } else {
            ssd_chunked(i.x.clone(), i.dt.clone(), self.a(), i.b.clone(), i.c.clone(), s0, self.chunk_size)
        }
    }

    /// After the scan: the `D` skip, the gated norm, `out_proj`.
    ///
    /// # Shapes
    /// - `y`: `[batch, seq, heads, p]` (f32) -> `[batch, seq, d_model]`
    pub fn output(&self, y: Tensor<4>, i: Mamba2Inputs) -> Tensor<3> {
        let [bs, l, h, p] = y.dims();
        // D per head, spread over the head's p channels.
        let d = self.d.val().cast(DType::F32).reshape([h, 1]).expand([h, p]).reshape([h * p]);
        let y = y + mul_channels(i.x.cast(DType::F32).reshape([bs, l, h * p]), d).reshape([bs, l, h, p]);
        self.gate_out(y, i.z)
    }

    /// The gated norm and `out_proj` of `y` (f32, the skip added) under the gate `z`.
    pub(crate) fn gate_out(&self, y: Tensor<4>, z: Tensor<3>) -> Tensor<3> {
        let [bs, l, h, p] = y.dims();
        let dtype = z.dtype();
        let y = self.norm.forward(y.reshape([bs, l, h * p]), z.cast(DType::F32)).cast(dtype);
        linear(&self.out_proj, y)
    }

    /// One decoding token through the fused step of `distill-kernels`: conv, state update and
    /// read-out in one launch on a CUDA device (parity-tested there by `kernels/gpu_parity.sh`),
    /// its plain-tensor twin elsewhere (the same arithmetic as `scan_inputs` + `scan` + the skip).
    ///
    /// # Shapes
    /// - `u`: `[batch, 1, d_model]` -> same; `mask`: `[batch, 1]`
    fn step(&self, u: Tensor<3>, mask: Option<&Tensor<2>>, state: &mut MambaState) -> Tensor<3> {
        let [bs, _, _] = u.dims();
        let (h, p) = (self.n_heads, self.d_state);
        let (z, xbc, dt) = self.project(u);
        let channels = xbc.dims()[2];
        let (mut xbc, mut dt) = (xbc.reshape([bs, channels]), dt.reshape([bs, h]));
        if let Some(m) = mask {
            // A padded row: zero conv input, and a raw dt so negative that softplus gives
            // exactly 0 (exp underflows), so the state passes through, as in the masked scan.
            let keep = m.clone().reshape([bs, 1]);
            let (xd, dd) = (xbc.dtype(), dt.dtype());
            xbc = xbc * keep.clone().cast(xd);
            dt = dt + ((keep - 1.0) * 1e4).cast(dd);
        }
        let (window, s0) = self.carried_or_zeros(state.conv.take(), state.ssm.take(), &xbc);
        let weights = state.step_weights.get_or_insert_with(|| self.step_weights());
        let out = mamba2_step(xbc, dt, window, s0, weights);
        state.conv = Some(out.window);
        state.ssm = Some(out.state);
        self.gate_out(out.y.reshape([bs, 1, h, p]), z)
    }

    /// `u`'s tokens a step each after `state`, in one launch of the steps kernel, keeping what
    /// the layer would hold after each: a speculative round replayed from a captured graph
    /// verifies `K + 1` tokens this way and keeps the states after as many as it accepts, a
    /// count known only on the device. Each step rounds as [`Self::forward`]'s decode step does.
    ///
    /// # Shapes
    /// - `u`: `[batch, steps, d_model]` -> `[batch, steps, d_model]`, the conv inputs
    ///   `[batch, K - 1 + steps, conv channels]` (the window entering, then each step's: the
    ///   window after step `t` is rows `t + 1 .. t + K`) and the SSM states `[steps, batch, heads, p, n]`
    pub fn steps_keeping_all(&self, u: Tensor<3>, state: &MambaState, weights: &Mamba2StepWeights) -> (Tensor<3>, Tensor<3>, Tensor<5>) {
        let (z, xbc, dt) = self.project(u);
        let (window, s0) = self.carried_or_zeros(state.conv.clone(), state.ssm.clone(), &xbc);
        let padded = Tensor::cat(vec![window, xbc], 1); // [bs, K - 1 + steps, channels]
        let out = mamba2_steps_history(padded.clone(), dt, s0, weights);
        (self.gate_out(out.y, z), padded, out.states)
    }

    /// The conv window and SSM state a step starts from: those carried, else zeros (a state
    /// that has seen nothing).
    ///
    /// # Shapes
    /// - `xbc`: `[batch, .., conv channels]` -> `[batch, K - 1, conv channels]` and `[batch, heads, p, n]` (f32)
    fn carried_or_zeros<const D: usize>(&self, conv: Option<Tensor<3>>, ssm: Option<Tensor<4>>, xbc: &Tensor<D>) -> (Tensor<3>, Tensor<4>) {
        let (bs, channels) = (xbc.dims()[0], xbc.dims()[D - 1]);
        let device = xbc.device();
        let window = conv.unwrap_or_else(|| Tensor::zeros([bs, self.conv1d.kernel() - 1, channels], (&device, xbc.dtype())));
        let s0 = ssm.unwrap_or_else(|| Tensor::zeros([bs, self.n_heads, self.d_state, self.d_state], (&device, DType::F32)));
        (window, s0)
    }
}

/// What the scan reads, computed from the layer input.
///
/// # Shapes
/// - `z`: `[batch, seq, d_inner]`; `xbc`: `[batch, seq, conv channels]` (the conv's input)
/// - `x`: `[batch, seq, heads, p]`; `b`, `c`: `[batch, seq, heads, n]` (repeated to heads)
/// - `dt`: `[batch, seq, heads]` f32, after softplus
#[derive(Debug, Clone)]
pub struct Mamba2Inputs {
    pub z: Tensor<3>,
    pub xbc: Tensor<3>,
    pub x: Tensor<4>,
    pub b: Tensor<4>,
    pub c: Tensor<4>,
    pub dt: Tensor<3>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Distribution;

    #[test]
    fn decoding_token_by_token_equals_the_chunked_forward() {
        let device = Device::flex();
        let m = Mamba2Config::new(16, 4, 2, 4).with_chunk_size(4).init(&device);
        let u = Tensor::<3>::random([2, 11, 16], Distribution::Normal(0.0, 1.0), &device);
        let all = m.forward(u.clone(), None, &mut MambaState::default());
        // A prefill of 6, then one token at a time.
        let mut state = MambaState::default();
        let mut parts = vec![m.forward(u.clone().narrow(1, 0, 6), None, &mut state)];
        parts.extend((6..11).map(|t| m.forward(u.clone().narrow(1, t, 1), None, &mut state)));
        let diff = (all - Tensor::cat(parts, 1)).abs().max().into_scalar::<f32>();
        assert!(diff < 1e-4, "{diff:e}");
    }
}
