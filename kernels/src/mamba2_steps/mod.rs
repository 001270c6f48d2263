//! Several decoding steps of a Mamba-2 mixer in one launch: speculative decoding's verification
//! (METHOD.md 4). From the state at the round's start (the snapshot) and the conv inputs and raw
//! `dt` of every step since, it replays the steps already accepted, runs the new ones with their
//! outputs, and leaves the state after the accepted ones as the next snapshot. The state is read
//! once and written once, as by a single step, whatever the number of steps; the state after the
//! new ones is never written, because the next round rebuilds it from the snapshot once it knows
//! how many were accepted.
//!
//! Each step is exactly [`crate::mamba2_step`]'s arithmetic, so greedy speculative output can
//! equal plain decoding's token for token on the GPU as on the CPU.

mod reference;
pub(crate) mod shape;
#[cfg(feature = "cuda")]
pub(crate) mod cube;
#[cfg(feature = "cuda")]
mod kernel;

use burn::tensor::Tensor;

pub use reference::{mamba2_steps_history_reference, mamba2_steps_reference};

use crate::Mamba2StepWeights;

/// What a multi-step call leaves.
#[derive(Debug, Clone)]
pub struct StepsOut {
    /// `[batch, steps - emit_from, heads, head_dim]`, f32, before the gated norm (the `D` skip
    /// included): the outputs of the steps from `emit_from` on.
    pub y: Tensor<4>,
    /// `[batch, heads, head_dim, d_state]`, f32: the state after the first `snap_at` steps.
    pub snapshot: Tensor<4>,
    /// `[batch, K - 1, channels]`: the last `K - 1` conv inputs (after one step, the next
    /// window).
    pub window: Tensor<3>,
}

/// Runs `steps = rows of padded - (K - 1)` steps from `state`.
///
/// # Shapes
/// - `padded`: `[batch, K - 1 + steps, channels]`, the conv inputs: the window entering the
///   first step, then each step's `xbc` (the callers keep this concatenation for their next
///   round, and the kernel reads it as one contiguous buffer)
/// - `dt`: `[batch, steps, heads]`, raw (before `dt_bias` and softplus)
/// - `state`: `[batch, heads, head_dim, d_state]`, f32
///
/// # Panics
/// When `emit_from >= steps` (nothing to emit) or `snap_at > steps`.
pub fn mamba2_steps(padded: Tensor<3>, dt: Tensor<3>, state: Tensor<4>, w: &Mamba2StepWeights, snap_at: usize, emit_from: usize) -> StepsOut {
    let steps = dt.dims()[1];
    assert!(emit_from < steps && snap_at <= steps, "mamba2_steps: {steps} steps, emit_from {emit_from} (nothing to emit from there?), snap_at {snap_at}");
    #[cfg(feature = "cuda")]
    if crate::mamba2_step::runs_on_cube(&dt.device()) && crate::mamba2_step::kernel_takes(w) {
        let window = last_window(&padded, w);
        let (y, snapshot) = cube::mamba2_steps(padded, dt, state, w, snap_at, emit_from);
        return StepsOut { y, snapshot, window };
    }
    mamba2_steps_reference(padded, dt, state, w, snap_at, emit_from)
}

/// The last `K - 1` rows of the conv inputs: the window after their last step.
#[cfg(feature = "cuda")]
fn last_window(padded: &Tensor<3>, w: &Mamba2StepWeights) -> Tensor<3> {
    let (len, k) = (padded.dims()[1], w.conv_weight.dims()[1]);
    padded.clone().narrow(1, len - (k - 1), k - 1)
}

/// `snap_at` asking the kernel for the state after every step.
#[cfg(feature = "cuda")]
pub(crate) const EVERY_STEP: usize = usize::MAX;

/// What [`mamba2_steps_history`] leaves.
#[derive(Debug, Clone)]
pub struct StepsHistory {
    /// `[batch, steps, heads, head_dim]`, f32, before the gated norm (the `D` skip included).
    pub y: Tensor<4>,
    /// `[steps, batch, heads, head_dim, d_state]`, f32: the state after each step.
    pub states: Tensor<5>,
}

/// Runs every step from `state` with its output, keeping the state after each: verification
/// replayed from a captured graph, where how many steps a round keeps is known only on the
/// device, picks one of them afterwards. One launch and one read of the state, like a single
/// step; at batch 1 the states it writes are a few hundred KB a layer.
///
/// # Shapes
/// - `padded`: the conv inputs as for [`mamba2_steps`], `dt`: `[batch, steps, heads]` raw,
///   `state`: `[batch, heads, head_dim, d_state]` f32
pub fn mamba2_steps_history(padded: Tensor<3>, dt: Tensor<3>, state: Tensor<4>, w: &Mamba2StepWeights) -> StepsHistory {
    #[cfg(feature = "cuda")]
    if crate::mamba2_step::runs_on_cube(&dt.device()) && crate::mamba2_step::kernel_takes(w) {
        let [bs, h, p, n] = state.dims();
        let steps = dt.dims()[1];
        let (y, states) = cube::mamba2_steps(padded, dt, state, w, EVERY_STEP, 0);
        return StepsHistory { y, states: states.reshape([steps, bs, h, p, n]) };
    }
    mamba2_steps_history_reference(padded, dt, state, w)
}

#[cfg(test)]
mod tests {
    use burn::tensor::{Device, Distribution};

    use super::*;
    use crate::mamba2_step_reference;

    /// Steps one at a time through the single-step reference, keeping every state.
    #[test]
    fn steps_equal_single_steps_in_sequence_with_the_snapshot_where_asked() {
        let device = Device::flex();
        let (bs, h, kv, p, n, k, steps) = (2, 4, 2, 3, 5, 4, 6);
        let w = crate::mamba2_step::tests::weights(&device, h, kv, p, n, k);
        let channels = kv * p + kv * n + h * n;
        let normal = Distribution::Normal(0.0, 1.0);
        let padded = Tensor::<3>::random([bs, k - 1 + steps, channels], normal, &device);
        let dt = Tensor::<3>::random([bs, steps, h], normal, &device);
        let state = Tensor::<4>::random([bs, h, p, n], normal, &device);

        let mut states = vec![state.clone()];
        let mut ys = Vec::new();
        for t in 0..steps {
            let xbc = padded.clone().narrow(1, k - 1 + t, 1).reshape([bs, channels]);
            let out = mamba2_step_reference(xbc, dt.clone().narrow(1, t, 1).reshape([bs, h]), padded.clone().narrow(1, t, k - 1), states[t].clone(), &w);
            ys.push(out.y);
            states.push(out.state);
        }
        for (snap_at, emit_from) in [(0, 0), (2, 3), (6, 5), (4, 4)] {
            let got = mamba2_steps(padded.clone(), dt.clone(), state.clone(), &w, snap_at, emit_from);
            assert_eq!(got.window.into_data(), padded.clone().narrow(1, steps, k - 1).into_data());
            got.snapshot.into_data().assert_approx_eq::<f32>(&states[snap_at].clone().into_data(), burn::tensor::Tolerance::absolute(1e-5));
            let want = Tensor::stack::<4>(ys[emit_from..].to_vec(), 1);
            got.y.into_data().assert_approx_eq::<f32>(&want.into_data(), burn::tensor::Tolerance::absolute(1e-5));
        }
    }

    #[test]
    #[should_panic(expected = "nothing")]
    fn emitting_nothing_is_refused() {
        let device = Device::flex();
        let w = crate::mamba2_step::tests::weights(&device, 2, 1, 2, 2, 4);
        let channels = 2 + 2 + 4;
        let _ = mamba2_steps(Tensor::zeros([1, 5, channels], &device), Tensor::zeros([1, 2, 2], &device), Tensor::zeros([1, 2, 2, 2], &device), &w, 0, 2);
    }
}
