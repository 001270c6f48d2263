//! What one Mamba layer keeps during a speculative round (METHOD.md 4): the SSM state at the
//! round's start (the snapshot), the state after every step fed so far, the per-step scan inputs
//! (`x` after the conv, `dt`, `B`), and the conv inputs of the round after the window that
//! entered it. Keeping `n` of the round's steps rebuilds the state by replaying `n` steps from the
//! snapshot in one pass ([`ssd_advance`], [`selective_advance`]) and moves the conv window's
//! offset to `n`; keeping all of them makes the current state the next snapshot.

use burn::tensor::{DType, Tensor};

/// One round of one Mamba layer. A plain struct the caller owns (inside `SpecCache`).
#[derive(Debug, Clone, Default)]
pub struct MambaRound {
    /// The `K - 1` conv inputs entering the round, then each step's conv input:
    /// `[batch, K - 1 + fed, channels]`. The window after `n` steps starts at offset `n`.
    pub conv_inputs: Option<Tensor<3>>,
    /// The SSM state when the round started (`None`: zeros). Mamba-2 `[batch, heads, p, n]`,
    /// Mamba-1 `[batch, d_inner, 1, n]`.
    pub snapshot: Option<Tensor<4>>,
    /// The SSM state after every step fed this round.
    pub current: Option<Tensor<4>>,
    /// Per forward call of the round: the scan inputs of its steps.
    pub steps: Vec<StepInputs>,
}

/// The scan inputs of some steps, what replaying them needs (not `C`: no outputs are wanted).
///
/// # Shapes
/// - Mamba-2: `x` `[batch, seq, heads, p]`, `dt` `[batch, seq, heads]`, `b` `[batch, seq, heads, n]`
/// - Mamba-1: `x` `[batch, seq, d_inner, 1]`, `dt` `[batch, seq, d_inner]`, `b` `[batch, seq, d_inner, n]`
#[derive(Debug, Clone)]
pub struct StepInputs {
    pub x: Tensor<4>,
    pub dt: Tensor<3>,
    pub b: Tensor<4>,
}

/// The decay `A` of the layer's scan.
#[derive(Debug, Clone)]
pub enum Decay {
    /// Mamba-2: one per head, `[heads]`.
    Heads(Tensor<1>),
    /// Mamba-1: per channel and state, `[d_inner, n]`.
    Channels(Tensor<2>),
}

impl MambaRound {
    /// Steps fed since the round started.
    pub fn fed(&self) -> usize {
        self.steps.iter().map(|s| s.dt.dims()[1]).sum()
    }

    /// The conv window for the next step: the last `K - 1` conv inputs (`None` before any).
    ///
    /// # Shapes
    /// - returns `[batch, K - 1, channels]`
    pub fn window(&self, kernel: usize) -> Option<Tensor<3>> {
        let c = self.conv_inputs.as_ref()?;
        let len = c.dims()[1];
        Some(c.clone().narrow(1, len - (kernel - 1), kernel - 1))
    }

    /// Records a forward call: its conv inputs `[batch, seq, channels]`, its scan inputs and the
    /// state after it.
    pub fn push(&mut self, conv_in: Tensor<3>, kernel: usize, steps: StepInputs, state: Tensor<4>) {
        let [b, _, c] = conv_in.dims();
        let before = self.conv_inputs.take().unwrap_or_else(|| Tensor::zeros([b, kernel - 1, c], (&conv_in.device(), conv_in.dtype())));
        self.conv_inputs = Some(Tensor::cat(vec![before, conv_in], 1));
        self.steps.push(steps);
        self.current = Some(state);
    }

    /// Keeps the first `keep` steps of the round (at most `fed()`) and starts the next round.
    pub fn commit(&mut self, keep: usize, kernel: usize, a: &Decay) {
        let fed = self.fed();
        if let Some(c) = self.conv_inputs.take() {
            self.conv_inputs = Some(c.narrow(1, keep.min(fed), kernel - 1)); // moving the offset
        }
        if keep < fed {
            let cat = |f: &dyn Fn(&StepInputs) -> Tensor<4>| Tensor::cat(self.steps.iter().map(f).collect(), 1).narrow(1, 0, keep);
            let s0 = self.snapshot.take();
            self.current = if keep == 0 {
                s0
            } else {
                let (x, b) = (cat(&|s| s.x.clone()), cat(&|s| s.b.clone()));
                let dt = Tensor::cat(self.steps.iter().map(|s| s.dt.clone()).collect(), 1).narrow(1, 0, keep);
                Some(match a {
                    Decay::Heads(a) => ssd_advance(x, dt, a.clone(), b, s0),
                    Decay::Channels(a) => selective_advance(x, dt, a.clone(), b, s0),
                })
            };
        }
        self.snapshot = self.current.clone();
        self.steps.clear();
    }
}

/// Mamba-2's state after the steps, in one pass from `s0` (zeros when `None`), without the
/// intermediate states: `H = exp(sum dt A) H0 + sum_s exp(sum_{s<k} dt_k A) dt_s x_s B_s^T`.
///
/// # Shapes
/// - `x`: `[batch, seq, heads, p]`; `dt`: `[batch, seq, heads]`; `a`: `[heads]`; `b`: `[batch, seq, heads, n]`
/// - returns `[batch, heads, p, n]`
pub fn ssd_advance(x: Tensor<4>, dt: Tensor<3>, a: Tensor<1>, b: Tensor<4>, s0: Option<Tensor<4>>) -> Tensor<4> {
    let [bs, l, h, p] = x.dims();
    let n = b.dims()[3];
    let cum = (dt.clone() * a.reshape([1, 1, h])).cumsum(1); // [bs, l, h]
    let total = cum.clone().narrow(1, l - 1, 1); // [bs, 1, h]
    let weight = (total.clone() - cum).exp() * dt; // decay from step s to the end, times dt_s
    let xw = (x.cast(DType::F32) * weight.unsqueeze_dim::<4>(3)).permute([0, 2, 3, 1]); // [bs, h, p, l]
    let input = xw.matmul(b.cast(DType::F32).swap_dims(1, 2)); // [bs, h, p, n]
    match s0 {
        Some(s0) => s0 * total.exp().reshape([bs, h, 1, 1]) + input,
        None => input.reshape([bs, h, p, n]),
    }
}

/// Mamba-1's state after the steps, in one pass like [`ssd_advance`], per channel and state.
///
/// # Shapes
/// - `x`: `[batch, seq, d_inner, 1]`; `dt`: `[batch, seq, d_inner]`; `a`: `[d_inner, n]`
/// - `b`: `[batch, seq, d_inner, n]`; `s0`, returned: `[batch, d_inner, 1, n]`
pub fn selective_advance(x: Tensor<4>, dt: Tensor<3>, a: Tensor<2>, b: Tensor<4>, s0: Option<Tensor<4>>) -> Tensor<4> {
    let [bs, l, d, _] = x.dims();
    let n = a.dims()[1];
    let cum = dt.clone().cumsum(1).unsqueeze_dim::<4>(3); // [bs, l, d, 1]
    let total = cum.clone().narrow(1, l - 1, 1); // [bs, 1, d, 1]
    let a = a.reshape([1, 1, d, n]);
    let weight = ((total.clone() - cum) * a.clone()).exp(); // [bs, l, d, n]
    let input = (weight * (x.cast(DType::F32) * dt.unsqueeze_dim::<4>(3)) * b.cast(DType::F32)).sum_dim(1); // [bs, 1, d, n]
    let input = input.reshape([bs, d, 1, n]);
    match s0 {
        Some(s0) => s0 * (total * a).exp().reshape([bs, d, 1, n]) + input,
        None => input,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mamba::{selective_scan, ssd_sequential};
    use burn::tensor::activation::softplus;
    use burn::tensor::{Device, Distribution};

    fn max_diff(a: Tensor<4>, b: Tensor<4>) -> f32 {
        (a - b).abs().max().into_scalar::<f32>()
    }

    #[test]
    fn one_pass_advance_equals_the_sequential_recurrence() {
        let d = Device::flex();
        let normal = Distribution::Normal(0.0, 1.0);
        let (bs, l, h, p, n) = (2, 5, 3, 4, 2);
        let dt = softplus(Tensor::<3>::random([bs, l, h], Distribution::Uniform(-5.0, 0.5), &d), 1.0);
        let a = Tensor::<1>::random([h], Distribution::Uniform(1.0, 16.0), &d).neg();
        let (x, b) = (Tensor::<4>::random([bs, l, h, p], normal, &d), Tensor::<4>::random([bs, l, h, n], normal, &d));
        let s0 = Tensor::<4>::random([bs, h, p, n], normal, &d);
        let (_, want) = ssd_sequential(x.clone(), dt.clone(), a.clone(), b.clone(), b.clone(), s0.clone());
        let diff = max_diff(ssd_advance(x, dt, a, b, Some(s0)), want);
        assert!(diff < 1e-5, "Mamba-2: {diff:e}");
        // Mamba-1: per channel and state.
        let (l, dd) = (4, 6);
        let dt = softplus(Tensor::<3>::random([bs, l, dd], Distribution::Uniform(-5.0, 0.5), &d), 1.0);
        let a = Tensor::<2>::random([dd, n], Distribution::Uniform(1.0, 16.0), &d).neg();
        let (x, b) = (Tensor::<3>::random([bs, l, dd], normal, &d), Tensor::<4>::random([bs, l, dd, n], normal, &d));
        let s0 = Tensor::<3>::random([bs, dd, n], normal, &d);
        let (_, want) = selective_scan(x.clone(), dt.clone(), a.clone(), b.clone(), b.clone(), s0.clone());
        let got = selective_advance(x.unsqueeze_dim(3), dt, a, b, Some(s0.reshape([bs, dd, 1, n])));
        let diff = max_diff(got, want.reshape([bs, dd, 1, n]));
        assert!(diff < 1e-5, "Mamba-1: {diff:e}");
    }
}
