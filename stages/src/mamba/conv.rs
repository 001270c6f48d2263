//! Depthwise causal 1-D convolution with a carried window of past inputs (PyTorch's
//! `Conv1d(groups=channels, padding=K-1)` cut to the first `seq` outputs, as the reference uses).

use burn::config::Config;
use burn::module::{Module, Param};
use burn::nn::Initializer;
use burn::tensor::{Device, Tensor};

use crate::channels::{add_channels, mul_channels};

#[derive(Config, Debug)]
pub struct CausalConv1dConfig {
    pub channels: usize,
    #[config(default = 4)]
    pub kernel: usize,
}

/// Field names are the checkpoint's: `conv1d.weight` `[channels, 1, K]`, `conv1d.bias`.
#[derive(Module, Debug)]
pub struct CausalConv1d {
    pub weight: Param<Tensor<3>>,
    pub bias: Param<Tensor<1>>,
}

impl CausalConv1dConfig {
    /// PyTorch's default init: `U(-1/sqrt(K), 1/sqrt(K))` for weight and bias.
    pub fn init(&self, device: &Device) -> CausalConv1d {
        let bound = 1.0 / (self.kernel as f64).sqrt();
        let init = Initializer::Uniform { min: -bound, max: bound };
        CausalConv1d { weight: init.init([self.channels, 1, self.kernel], device), bias: init.init([self.channels], device) }
    }
}

impl CausalConv1d {
    pub fn kernel(&self) -> usize {
        self.weight.dims()[2]
    }

    /// Convolves `x` after the `K - 1` inputs held in `window` (zeros when `None`) and leaves the
    /// last `K - 1` inputs there. A one-token `x` is the decoding step.
    ///
    /// # Shapes
    /// - `x`: `[batch, seq, channels]` -> same
    /// - `window`: `[batch, K - 1, channels]`
    pub fn forward(&self, x: Tensor<3>, window: &mut Option<Tensor<3>>) -> Tensor<3> {
        let [b, s, c] = x.dims();
        let k = self.kernel();
        let past = window.take().unwrap_or_else(|| Tensor::zeros([b, k - 1, c], (&x.device(), x.dtype())));
        let padded = Tensor::cat(vec![past, x], 1); // [b, K - 1 + s, c]
        *window = Some(padded.clone().narrow(1, s, k - 1));
        let w = self.weight.val().reshape([c, k]).transpose(); // [K, c]
        // Output t sees inputs t - (K-1) + j, i.e. padded[t + j], with tap j.
        let tap = |j: usize| mul_channels(padded.clone().narrow(1, j, s), w.clone().narrow(0, j, 1).reshape([c]));
        let y = (1..k).fold(tap(0), |y, j| y + tap(j));
        add_channels(y, self.bias.val())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Distribution, TensorData};

    #[test]
    fn matches_a_hand_convolution_and_carries_the_window() {
        let device = Device::flex();
        let conv = CausalConv1d {
            weight: Param::from_tensor(Tensor::from_data(TensorData::new(vec![1f32, 2., 3., 4.], [1, 1, 4]), &device)),
            bias: Param::from_tensor(Tensor::from_data(TensorData::new(vec![0.5f32], [1]), &device)),
        };
        let x = Tensor::<3>::from_data(TensorData::new(vec![1f32, 10., 100.], [1, 3, 1]), &device);
        let y: Vec<f32> = conv.forward(x, &mut None).into_data().try_to_vec().unwrap();
        // y_t = 0.5 + 4 x_t + 3 x_{t-1} + 2 x_{t-2} + 1 x_{t-3}
        assert_eq!(y, vec![4.5, 43.5, 432.5]);
        // Token by token with the window equals all at once.
        let conv = CausalConv1dConfig::new(5).init(&device);
        let x = Tensor::<3>::random([2, 7, 5], Distribution::Normal(0.0, 1.0), &device);
        let all = conv.forward(x.clone(), &mut None);
        let mut window = None;
        let steps: Vec<Tensor<3>> = (0..7).map(|t| conv.forward(x.clone().narrow(1, t, 1), &mut window)).collect();
        let diff = (all - Tensor::cat(steps, 1)).abs().max().into_scalar::<f32>();
        assert!(diff < 1e-6, "{diff}");
    }
}
