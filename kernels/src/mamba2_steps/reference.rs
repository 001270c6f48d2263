//! The steps in plain tensor ops: the single-step reference in sequence, what the CPU runs and
//! what the kernel must equal.

use burn::tensor::Tensor;

use super::{StepsHistory, StepsOut};
use crate::{mamba2_step_reference, Mamba2StepWeights, StepOut};

/// See [`super::mamba2_steps`].
pub fn mamba2_steps_reference(padded: Tensor<3>, dt: Tensor<3>, state: Tensor<4>, w: &Mamba2StepWeights, snap_at: usize, emit_from: usize) -> StepsOut {
    let steps = dt.dims()[1];
    let k = w.conv_weight.dims()[1];
    let window = padded.clone().narrow(1, steps, k - 1);
    let mut snapshot = (snap_at == 0).then(|| state.clone());
    let mut ys = Vec::with_capacity(steps - emit_from);
    each_step(padded, dt, state, w, |t, out| {
        if t + 1 == snap_at {
            snapshot = Some(out.state.clone());
        }
        if t >= emit_from {
            ys.push(out.y);
        }
    });
    StepsOut { y: Tensor::stack(ys, 1), snapshot: snapshot.expect("snap_at <= steps"), window }
}

/// See [`super::mamba2_steps_history`]: the single-step reference in sequence, every state kept.
pub fn mamba2_steps_history_reference(padded: Tensor<3>, dt: Tensor<3>, state: Tensor<4>, w: &Mamba2StepWeights) -> StepsHistory {
    let steps = dt.dims()[1];
    let (mut ys, mut states) = (Vec::with_capacity(steps), Vec::with_capacity(steps));
    each_step(padded, dt, state, w, |_, out| {
        states.push(out.state.clone());
        ys.push(out.y);
    });
    StepsHistory { y: Tensor::stack(ys, 1), states: Tensor::stack(states, 0) }
}

/// The single-step reference over every step from `state`, each step's output handed to `keep`
/// with its index.
fn each_step(padded: Tensor<3>, dt: Tensor<3>, state: Tensor<4>, w: &Mamba2StepWeights, mut keep: impl FnMut(usize, StepOut)) {
    let [bs, steps, h] = dt.dims();
    let channels = padded.dims()[2];
    let k = w.conv_weight.dims()[1];
    let mut state = state;
    for t in 0..steps {
        let xbc = padded.clone().narrow(1, k - 1 + t, 1).reshape([bs, channels]);
        let out = mamba2_step_reference(xbc, dt.clone().narrow(1, t, 1).reshape([bs, h]), padded.clone().narrow(1, t, k - 1), state, w);
        state = out.state.clone();
        keep(t, out);
    }
}
