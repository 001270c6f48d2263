//! The Mamba-1 mixer as the reference code's "MambaInLlama" variant builds it, quirks included so
//! its released checkpoints load and run exactly:
//! - `x` (from `v_proj`) and `B` (from `k_proj`) are repeated in `d_state`-wide slices (16), not
//!   whole heads: slice `g` of the `d_xb` channels becomes slices `g*r .. g*r + r` (`r = d_inner / d_xb`);
//! - the conv runs after that repeat, over `d_inner` channels;
//! - channel `i` reads `B` and `C` slice `i / d_state`;
//! - the dt bias is added twice: `dt = softplus(dt_proj(dt_proj_down(u)) + dt_proj.bias)`, where
//!   `dt_proj` already added it once;
//! - `y = (scan + D x) * silu(z)`, no norm.

use distill_kernels::matmul::linear;
use burn::config::Config;
use burn::module::{Module, Param};
use burn::nn::{Initializer, Linear, LinearConfig};
use burn::tensor::activation::{silu, softplus};
use burn::tensor::{DType, Device, Tensor, TensorData};

use crate::channels::{add_channels, mul_channels};

use super::conv::{CausalConv1d, CausalConv1dConfig};
use super::mamba2::repeat_heads;
use super::state::MambaState;

#[derive(Config, Debug)]
pub struct Mamba1Config {
    pub d_model: usize,
    /// `n_heads * head_dim` of the teacher.
    pub d_inner: usize,
    /// `n_kv_heads * head_dim` of the teacher.
    pub d_xb: usize,
    #[config(default = 16)]
    pub d_state: usize,
    #[config(default = 4)]
    pub d_conv: usize,
}

impl Mamba1Config {
    /// `ceil(d_model / 16)`, the reference's `dt_rank = "auto"`.
    pub fn dt_rank(&self) -> usize {
        self.d_model.div_ceil(16)
    }

    /// Shapes of a converted layer with the reference's deterministic parts (`A_log = log(1..=n)`,
    /// `D = 1`); the rest default-initialized.
    pub fn init(&self, device: &Device) -> Mamba1 {
        let lin = |i, o, bias| LinearConfig::new(i, o).with_bias(bias).init(device);
        let a: Vec<f32> = (0..self.d_inner).flat_map(|_| (1..=self.d_state).map(|k| (k as f32).ln())).collect();
        Mamba1 {
            in_proj_x: lin(self.d_model, self.d_xb, false),
            in_proj_z: lin(self.d_model, self.d_inner, false),
            conv1d: CausalConv1dConfig::new(self.d_inner).with_kernel(self.d_conv).init(device),
            b_proj: lin(self.d_model, self.d_xb, false),
            c_proj: lin(self.d_model, self.d_inner, false),
            dt_proj_down: lin(self.d_model, self.dt_rank(), false),
            dt_proj: lin(self.dt_rank(), self.d_inner, true),
            a_log: Param::from_tensor(Tensor::from_data(TensorData::new(a, [self.d_inner, self.d_state]), device)),
            d: Initializer::Ones.init([self.d_inner], device),
            out_proj: lin(self.d_inner, self.d_model, false),
            d_state: self.d_state,
        }
    }
}

/// Field names are the checkpoint's, lowercased: `B_proj`, `C_proj`, `A_log`, `D` are renamed by
/// the hybrid loader's table.
#[derive(Module, Debug)]
pub struct Mamba1 {
    pub in_proj_x: Linear,
    pub in_proj_z: Linear,
    pub conv1d: CausalConv1d,
    pub b_proj: Linear,
    pub c_proj: Linear,
    pub dt_proj_down: Linear,
    pub dt_proj: Linear,
    pub a_log: Param<Tensor<2>>,
    pub d: Param<Tensor<1>>,
    pub out_proj: Linear,
    pub d_state: usize,
}

impl Mamba1 {
    /// `mask` as in `Mamba2::forward`: padding leaves the state unchanged.
    ///
    /// # Shapes
    /// - `u`: `[batch, seq, d_model]` -> same; `mask`: `[batch, seq]`
    pub fn forward(&self, u: Tensor<3>, mask: Option<&Tensor<2>>, state: &mut MambaState) -> Tensor<3> {
        let inputs = self.scan_inputs(u, mask, &mut state.conv);
        let (y, s) = self.scan(&inputs, state.ssm.take());
        state.ssm = Some(s);
        self.output(y, inputs)
    }

    /// Everything before the scan: the sliced repeat, the conv after `window` (left holding the
    /// last `K - 1` conv inputs), per-channel `B` and `C`, `dt` with its second bias.
    ///
    /// # Shapes
    /// - `u`: `[batch, seq, d_model]`; `mask`: `[batch, seq]`; `window`: `[batch, K - 1, d_inner]`
    pub fn scan_inputs(&self, u: Tensor<3>, mask: Option<&Tensor<2>>, window: &mut Option<Tensor<3>>) -> Mamba1Inputs {
        let [bs, l, _] = u.dims();
        let [d_inner, n] = self.a_log.dims();
        let dtype = u.dtype();
        // The 16-wide repeat: [bs, l, d_xb] -> [bs, l, d_xb/n, n] -> [bs, l, d_inner/n, n].
        let slices = |v: Tensor<3>| {
            let w = v.dims()[2];
            repeat_heads(v.reshape([bs, l, w / n, n]), d_inner / n)
        };
        let mut conv_in = slices(linear(&self.in_proj_x, u.clone())).reshape([bs, l, d_inner]);
        let keep = mask.map(|m| m.clone().cast(dtype).unsqueeze_dim::<3>(2)); // [bs, l, 1]
        if let Some(k) = &keep {
            conv_in = conv_in * k.clone();
        }
        let x = silu(self.conv1d.forward(conv_in.clone(), window)); // [bs, l, d_inner]
        // Channel i reads slice i / n of B and C: [bs, l, d_inner/n, n] -> [bs, l, d_inner, n].
        let per_channel = |v: Tensor<4>| v.unsqueeze_dim::<5>(3).expand([bs, l, d_inner / n, n, n]).reshape([bs, l, d_inner, n]);
        let b = per_channel(slices(linear(&self.b_proj, u.clone())));
        let c = per_channel(linear(&self.c_proj, u.clone()).reshape([bs, l, d_inner / n, n]));
        let bias = self.dt_proj.bias.as_ref().map(|b| b.val().cast(DType::F32));
        let raw = linear(&self.dt_proj, linear(&self.dt_proj_down, u.clone())).cast(DType::F32);
        let mut dt = softplus(match bias { Some(b) => add_channels(raw, b), None => raw }, 1.0); // the second bias
        if let Some(k) = keep {
            dt = dt * k.cast(DType::F32);
        }
        Mamba1Inputs { u, conv_in, x, b, c, dt }
    }

    /// `A = -exp(A_log)` in f32.
    ///
    /// # Shapes
    /// - returns `[d_inner, n]`
    pub fn a(&self) -> Tensor<2> {
        self.a_log.val().cast(DType::F32).exp().neg()
    }

    /// The selective scan from `s0` (zeros when `None`).
    ///
    /// # Shapes
    /// - `s0`: `[batch, d_inner, 1, n]`; returns `y` `[batch, seq, d_inner]` and the final state
    pub fn scan(&self, i: &Mamba1Inputs, s0: Option<Tensor<4>>) -> (Tensor<3>, Tensor<4>) {
        let [bs, _, d_inner] = i.x.dims();
        let n = self.a_log.dims()[1];
        let s0 = s0.map(|s| s.reshape([bs, d_inner, n]));
        let s0 = s0.unwrap_or_else(|| Tensor::zeros([bs, d_inner, n], (&i.x.device(), DType::F32)));
        let (y, s) = selective_scan(i.x.clone(), i.dt.clone(), self.a(), i.b.clone(), i.c.clone(), s0);
        (y, s.reshape([bs, d_inner, 1, n]))
    }

    /// After the scan: the `D` skip, the `silu(z)` gate, `out_proj`.
    ///
    /// # Shapes
    /// - `y`: `[batch, seq, d_inner]` (f32) -> `[batch, seq, d_model]`
    pub fn output(&self, y: Tensor<3>, i: Mamba1Inputs) -> Tensor<3> {
        let dtype = i.u.dtype();
        let y = y + mul_channels(i.x.cast(DType::F32), self.d.val().cast(DType::F32));
        let y = y * silu(linear(&self.in_proj_z, i.u).cast(DType::F32));
        linear(&self.out_proj, y.cast(dtype))
    }
}

/// What Mamba-1's scan reads, computed from the layer input `u` (kept for the gate).
///
/// # Shapes
/// - `u`: `[batch, seq, d_model]`; `conv_in`, `x`, `dt`: `[batch, seq, d_inner]` (`dt` f32)
/// - `b`, `c`: `[batch, seq, d_inner, n]`
#[derive(Debug, Clone)]
pub struct Mamba1Inputs {
    pub u: Tensor<3>,
    pub conv_in: Tensor<3>,
    pub x: Tensor<3>,
    pub b: Tensor<4>,
    pub c: Tensor<4>,
    pub dt: Tensor<3>,
}

/// Mamba-1's selective scan, sequentially (the reference's `selective_scan_ref`), in f32.
///
/// # Shapes
/// - `x`, `dt`: `[batch, seq, d]`; `a`: `[d, n]`; `b`, `c`: `[batch, seq, d, n]`; `state`: `[batch, d, n]`
/// - returns `y` `[batch, seq, d]` and the final state
pub fn selective_scan(x: Tensor<3>, dt: Tensor<3>, a: Tensor<2>, b: Tensor<4>, c: Tensor<4>, state: Tensor<3>) -> (Tensor<3>, Tensor<3>) {
    let [bs, l, d] = x.dims();
    let n = a.dims()[1];
    let mut s = state;
    let mut ys = Vec::with_capacity(l);
    for t in 0..l {
        let at3 = |v: &Tensor<3>| v.clone().narrow(1, t, 1).reshape([bs, d]);
        let at4 = |v: &Tensor<4>| v.clone().narrow(1, t, 1).reshape([bs, d, n]);
        let (y, next) = selective_step(at3(&x), at3(&dt), a.clone(), at4(&b), at4(&c), s);
        ys.push(y);
        s = next;
    }
    (Tensor::stack(ys, 1), s)
}

/// One step: `h = exp(dt A) h + dt x B`, `y = h C` (summed over the state).
///
/// # Shapes
/// - `x`, `dt`: `[batch, d]`; `a`: `[d, n]`; `b`, `c`, `state`: `[batch, d, n]`; returns `[batch, d]`
pub fn selective_step(x: Tensor<2>, dt: Tensor<2>, a: Tensor<2>, b: Tensor<3>, c: Tensor<3>, state: Tensor<3>) -> (Tensor<2>, Tensor<3>) {
    let f = |t: Tensor<3>| t.cast(DType::F32);
    let (x, dt) = (x.cast(DType::F32), dt.cast(DType::F32).unsqueeze_dim::<3>(2)); // dt: [bs, d, 1]
    let s = f(state) * (dt.clone() * a.unsqueeze::<3>()).exp() + dt * x.unsqueeze_dim::<3>(2) * f(b);
    let y = (s.clone() * f(c)).sum_dim(2).squeeze_dim::<2>(2);
    (y, s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Distribution;

    #[test]
    fn decoding_token_by_token_equals_the_full_forward() {
        let device = Device::flex();
        let m = Mamba1Config::new(16, 32, 16).with_d_state(4).init(&device);
        let u = Tensor::<3>::random([2, 7, 16], Distribution::Normal(0.0, 1.0), &device);
        let all = m.forward(u.clone(), None, &mut MambaState::default());
        let mut state = MambaState::default();
        let mut parts = vec![m.forward(u.clone().narrow(1, 0, 3), None, &mut state)];
        parts.extend((3..7).map(|t| m.forward(u.clone().narrow(1, t, 1), None, &mut state)));
        let diff = (all - Tensor::cat(parts, 1)).abs().max().into_scalar::<f32>();
        assert!(diff < 1e-5, "{diff:e}");
    }
}
