//! Matrix products with a chosen CubeCL kernel. Without burn's autotune (which hangs on our
//! H200) every product runs cubek's default `SimpleCyclicCmma`, at 0.05-0.18x cuBLAS on a
//! training step's shapes (BENCHMARKS.md). cubek has faster routines (double-buffered,
//! warp-specialized, TMA loads, the newer tiled Cmma) that only the tuner would pick; this
//! module names them so `distill bench matmul --kernels ...` can measure each on each shape,
//! and the model can use the winner.

#[cfg(feature = "cuda")]
mod cube;

use std::fmt;
use std::str::FromStr;

use burn::tensor::Tensor;

/// A cubek matmul routine (the `Mma` ones use `mma.sync`, the `Cmma` ones the WMMA API).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatmulKernel {
    /// burn's own choice (without autotune: `SimpleCyclicCmma`).
    Default,
    DoubleCyclicMma,
    /// Double buffering with load-only planes.
    DoubleCyclicMmaSpecialized,
    /// Autotune's best-shaped preset: partition_k 2, 8 rows, 2 rows per plane.
    OrderedDoubleMma,
    /// The tiled Cmma routine with cp.async loads (row-major operands, sizes divisible by its
    /// stage; others fall back to the default).
    TiledCmmaAsync,
    TiledCmmaTma,
    SpecializedTmaMma,
    DoubleTmaMma,
}

impl MatmulKernel {
    pub const ALL: [MatmulKernel; 8] = [
        Self::Default,
        Self::DoubleCyclicMma,
        Self::DoubleCyclicMmaSpecialized,
        Self::OrderedDoubleMma,
        Self::TiledCmmaAsync,
        Self::TiledCmmaTma,
        Self::SpecializedTmaMma,
        Self::DoubleTmaMma,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::Default => "default",
            Self::DoubleCyclicMma => "double-cyclic-mma",
            Self::DoubleCyclicMmaSpecialized => "double-cyclic-mma-specialized",
            Self::OrderedDoubleMma => "ordered-double-mma",
            Self::TiledCmmaAsync => "tiled-cmma-async",
            Self::TiledCmmaTma => "tiled-cmma-tma",
            Self::SpecializedTmaMma => "specialized-tma-mma",
            Self::DoubleTmaMma => "double-tma-mma",
        }
    }
}

impl fmt::Display for MatmulKernel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for MatmulKernel {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL.into_iter().find(|k| k.name() == s).ok_or_else(|| {
            let known: Vec<&str> = Self::ALL.iter().map(|k| k.name()).collect();
            format!("unknown matmul kernel `{s}` (known: {})", known.join(", "))
        })
    }
}

/// `lhs · rhs` (`[.., m, k] · [.., k, n]`) with `kernel` on a CubeCL device; a routine that
/// refuses the problem (layout, sizes) runs the default instead. Elsewhere, burn's matmul.
pub fn matmul_with<const D: usize>(lhs: Tensor<D>, rhs: Tensor<D>, kernel: MatmulKernel) -> Tensor<D> {
    #[cfg(feature = "cuda")]
    if kernel != MatmulKernel::Default && crate::mamba2_step::runs_on_cube(&lhs.device()) {
        return cube::matmul_with(lhs, rhs, kernel);
    }
    let _ = kernel;
    lhs.matmul(rhs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_ones_list_the_known() {
        for k in MatmulKernel::ALL {
            assert_eq!(k.name().parse::<MatmulKernel>().unwrap(), k);
        }
        let err = "fast".parse::<MatmulKernel>().unwrap_err();
        assert!(err.contains("double-cyclic-mma") && err.contains("`fast`"), "{err}");
    }
}
