//! Matrix-product throughput on the shapes a training step runs (SmolLM2 at 8 x 2048 tokens):
//! the projections forward, the weight gradients (`Aᵀ·B`, a transposed left operand as the
//! backward pass hands it over) and the output head. The training step is mostly these, so
//! their TFLOP/s beside PyTorch's on the same shapes (`stages/bench/matmul_torch.py`) say how
//! much of the step's gap is the matmul kernels and how much is everything else.

use std::str::FromStr;
use std::time::Instant;

use burn::tensor::{DType, Distribution, Tensor};
use distill_kernels::matmul::{matmul_with, MatmulKernel};
use serde::Serialize;

use super::{median, sync};
use crate::error::{Error, Result};
use crate::runtime::Runtime;

/// `MxKxN`, with a trailing `t` when the left operand arrives transposed (stored `[K, M]`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MatmulShape {
    /// Independent products side by side (`BxMxKxN`: attention's batch times heads), 1 for `MxKxN`.
    pub batch: usize,
    pub m: usize,
    pub k: usize,
    pub n: usize,
    pub lhs_transposed: bool,
}

impl FromStr for MatmulShape {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let (dims, lhs_transposed) = match s.strip_suffix('t') {
            Some(d) => (d, true),
            None => (s, false),
        };
        let v: Vec<usize> = dims.split('x').map(|d| d.parse().map_err(|_| format!("`{s}`: expected [Bx]MxKxN[t]"))).collect::<std::result::Result<_, _>>()?;
        match v[..] {
            [m, k, n] if m * k * n > 0 => Ok(Self { batch: 1, m, k, n, lhs_transposed }),
            [batch, m, k, n] if batch * m * k * n > 0 => Ok(Self { batch, m, k, n, lhs_transposed }),
            _ => Err(format!("`{s}`: expected [Bx]MxKxN[t] with positive sizes")),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct MatmulResult {
    pub bench: &'static str,
    #[serde(rename = "impl")]
    pub impl_: &'static str,
    pub device: String,
    pub dtype: &'static str,
    pub shape: String,
    pub kernel: String,
    pub ms: f64,
    pub tflops: f64,
    /// Largest |this kernel - burn's default| over the largest |default| (a kernel that failed
    /// to launch shows here as NaN, not as a fast time).
    pub rel_diff_vs_default: f64,
}

/// Median time of `repeats` products with `kernel` after 3 untimed ones (kernel compilation).
pub fn run(shape: MatmulShape, kernel: MatmulKernel, runtime: &Runtime, repeats: usize) -> Result<MatmulResult> {
    let MatmulShape { batch, m, k, n, lhs_transposed } = shape;
    let dev = &runtime.device;
    let random = |dims: [usize; 3]| Tensor::<3>::random(dims, Distribution::Normal(0.0, 1.0), dev).cast(runtime.dtype);
    let lhs = if lhs_transposed { random([batch, k, m]).swap_dims(1, 2) } else { random([batch, m, k]) };
    let rhs = random([batch, k, n]);
    let mut times = Vec::new();
    for i in 0..repeats + 3 {
        sync(runtime)?;
        let t = Instant::now();
        let out = matmul_with(lhs.clone(), rhs.clone(), kernel);
        sync(runtime)?;
        if i >= 3 {
            times.push(t.elapsed().as_secs_f64());
        }
        drop(out);
    }
    if times.is_empty() {
        return Err(Error::Config("matmul bench: repeats must be at least 1".into()));
    }
    let secs = median(times);
    let reference = lhs.clone().matmul(rhs.clone()).cast(DType::F32);
    let got = matmul_with(lhs, rhs, kernel).cast(DType::F32);
    let scale = reference.clone().abs().max().into_scalar::<f32>() as f64;
    let rel_diff_vs_default = (got - reference).abs().max().into_data().convert::<f32>().try_to_vec::<f32>().map_or(f64::NAN, |v| v[0] as f64 / scale.max(1e-30));
    Ok(MatmulResult {
        bench: "matmul",
        impl_: "distill",
        device: format!("{dev:?}"),
        dtype: runtime.dtype_name(),
        shape: format!("{}{m}x{k}x{n}{}", if batch > 1 { format!("{batch}x") } else { String::new() }, if lhs_transposed { "t" } else { "" }),
        kernel: kernel.name().to_string(),
        ms: secs * 1e3,
        tflops: 2.0 * (batch * m * k * n) as f64 / secs / 1e12,
        rel_diff_vs_default,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_parse_with_and_without_a_transposed_lhs() {
        assert_eq!("16384x576x1536".parse::<MatmulShape>().unwrap(), MatmulShape { batch: 1, m: 16384, k: 576, n: 1536, lhs_transposed: false });
        assert_eq!("144x2048x64x2048".parse::<MatmulShape>().unwrap(), MatmulShape { batch: 144, m: 2048, k: 64, n: 2048, lhs_transposed: false });
        assert!("576x16384x1536t".parse::<MatmulShape>().unwrap().lhs_transposed);
        assert!("16x0x4".parse::<MatmulShape>().is_err());
        assert!("16x4".parse::<MatmulShape>().is_err());
    }

    #[test]
    fn a_cpu_product_runs_and_reports_its_rate() {
        let r = run("64x32x16t".parse().unwrap(), MatmulKernel::DoubleCyclicMma, &Runtime::cpu(), 2).unwrap();
        assert_eq!((r.shape.as_str(), r.kernel.as_str()), ("64x32x16t", "double-cyclic-mma"));
        assert!(r.tflops > 0.0 && r.ms > 0.0 && r.rel_diff_vs_default == 0.0, "{r:?}");
        let r = run("3x16x8x4t".parse().unwrap(), MatmulKernel::DoubleTmaMma, &Runtime::cpu(), 1).unwrap();
        assert_eq!(r.shape, "3x16x8x4t");
        assert!(r.tflops > 0.0 && r.rel_diff_vs_default == 0.0, "{r:?}");
    }
}
