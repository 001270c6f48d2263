//! A Mamba-2 layer's round through `distill_kernels::mamba2_steps`: the verification of METHOD.md
//! 4 in one launch per layer. The round keeps the state at its start (the snapshot) and the raw
//! inputs of the steps since (conv inputs and `dt`); committing keeps a prefix of them without
//! computing anything, and the next forward call replays the kept steps from the snapshot and
//! runs the new ones in the same launch, leaving the state after the kept ones as the new
//! snapshot. Each step is the decode step's own arithmetic, so verification agrees with plain
//! decoding's Mamba layers exactly (on the GPU too, where the chunked scan would round
//! differently). The first input of a fresh round (the prompt) and long inputs take the chunked
//! scan, as plain decoding's prefill does.

use burn::tensor::{DType, Tensor};
use distill_kernels::{mamba2_steps, Mamba2StepWeights};

use crate::mamba::Mamba2;

/// Inputs longer than this take the chunked scan: a prompt, not a verification.
const MAX_STEPS_PER_LAUNCH: usize = 32;

/// A plain struct the caller owns (inside `SpecCache`), one per Mamba-2 layer.
#[derive(Debug, Clone, Default)]
pub struct Mamba2Round {
    /// The window entering the first step not yet folded into the snapshot, then every such
    /// step's conv input: `[batch, K - 1 + pending + fed, channels]`.
    conv_inputs: Option<Tensor<3>>,
    /// The raw `dt` of those steps, `[batch, pending + fed, heads]` (`None` when there are none).
    dt: Option<Tensor<3>>,
    /// The state before those steps (`None`: zeros), f32 `[batch, heads, p, n]`.
    snapshot: Option<Tensor<4>>,
    /// Steps earlier commits kept that are not folded into the snapshot yet.
    pending: usize,
    /// Steps fed since the last commit.
    fed: usize,
    /// The state after all of them, when a chunked pass left it (`None` after a kernel pass,
    /// which never writes it).
    current: Option<Tensor<4>>,
    /// The layer's parameters as the kernel reads them, derived at the first kernel pass.
    weights: Option<Mamba2StepWeights>,
}

impl Mamba2Round {
    /// `u` through the layer after everything the round holds.
    ///
    /// # Shapes
    /// - `u`: `[batch, seq, d_model]` -> same
    pub fn forward(&mut self, m: &Mamba2, u: Tensor<3>) -> Tensor<3> {
        let [bs, l, _] = u.dims();
        let k = m.conv1d.kernel();
        let (h, p) = (m.n_heads, m.d_state);
        let (z, xbc, dt) = m.project(u);
        let (channels, device, dtype) = (xbc.dims()[2], xbc.device(), xbc.dtype());
        let before = self.conv_inputs.take().unwrap_or_else(|| Tensor::zeros([bs, k - 1, channels], (&device, dtype)));
        let unfolded = self.pending + self.fed;
        // [bs, K - 1 + unfolded + l, C]: what the round keeps, and what the kernel reads.
        let padded = Tensor::cat(vec![before, xbc.clone()], 1);
        let dts = match self.dt.take() {
            Some(old) => Tensor::cat(vec![old, dt.clone()], 1),
            None => dt.clone(),
        };
        let fresh = unfolded == 0 && self.snapshot.is_none() && self.current.is_none();
        let chunked = (fresh && l > 1) || (l > MAX_STEPS_PER_LAUNCH && self.pending == 0 && (self.fed == 0 || self.current.is_some()));
        let out = if chunked {
            let s0 = if self.fed == 0 { self.snapshot.clone() } else { self.current.take() };
            let mut window = Some(padded.clone().narrow(1, unfolded, k - 1));
            let inputs = m.inputs_from(z, xbc, dt, None, &mut window);
            let (y, s) = m.scan(&inputs, s0);
            self.current = Some(s);
            self.conv_inputs = Some(padded);
            self.dt = Some(dts);
            m.output(y, inputs)
        } else {
            let s0 = self.snapshot.take().unwrap_or_else(|| Tensor::zeros([bs, h, p, p], (&device, DType::F32)));
            let weights = self.weights.get_or_insert_with(|| m.step_weights());
            let steps = mamba2_steps(padded.clone(), dts.clone(), s0, weights, self.pending, unfolded);
            self.snapshot = Some(steps.snapshot);
            // The kept steps are in the snapshot now.
            let rest = self.fed + l;
            self.conv_inputs = Some(padded.narrow(1, self.pending, k - 1 + rest));
            self.dt = Some(dts.narrow(1, self.pending, rest));
            self.pending = 0;
            self.current = None;
            m.gate_out(steps.y, z)
        };
        self.fed += l;
        out
    }

    /// Keeps the first `keep` steps fed since the last commit (at most `fed()`) and drops the
    /// rest. Computes nothing, except taking a chunked pass's final state when all are kept.
    pub fn commit(&mut self, keep: usize, kernel: usize) {
        let keep = keep.min(self.fed);
        if keep == self.fed && self.pending == 0 && self.current.is_some() {
            self.snapshot = self.current.take();
            self.conv_inputs = self.conv_inputs.take().map(|c| c.narrow(1, keep, kernel - 1));
            self.dt = None;
        } else {
            let unfolded = self.pending + keep;
            self.conv_inputs = self.conv_inputs.take().map(|c| c.narrow(1, 0, kernel - 1 + unfolded));
            self.dt = if unfolded == 0 { None } else { self.dt.take().map(|d| d.narrow(1, 0, unfolded)) };
            self.pending = unfolded;
            self.current = None;
        }
        self.fed = 0;
    }
}
