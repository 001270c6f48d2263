//! Matrix products with a chosen CubeCL kernel. Without burn's autotune (which hangs on our
//! H200) every product runs cubek's default `SimpleCyclicCmma`, at 0.05-0.18x cuBLAS on a
//! training step's shapes (BENCHMARKS.md). cubek has faster routines (double-buffered,
//! warp-specialized, TMA loads, the newer tiled Cmma) that only the tuner would pick; this
//! module names them so `distill bench matmul --kernels ...` can measure each on each shape,
//! and [`linear`] runs the model's projections, forward and backward, with the winners.

#[cfg(feature = "cuda")]
mod cube;

use std::fmt;
use std::str::FromStr;

use std::sync::OnceLock;

use burn::nn::Linear;
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

/// The routines of one product `C = A·B` and of its two gradients, `dA = dC·Bᵀ` and
/// `dB = Aᵀ·dC` (for a projection: the input's and the weight's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProductKernels {
    pub forward: MatmulKernel,
    pub lhs_grad: MatmulKernel,
    pub rhs_grad: MatmulKernel,
}

impl ProductKernels {
    /// burn's default everywhere.
    pub const DEFAULT: Self = Self { forward: MatmulKernel::Default, lhs_grad: MatmulKernel::Default, rhs_grad: MatmulKernel::Default };

    /// The fastest measured on an H200 for SmolLM2's projections (BENCHMARKS.md, "Matmul"):
    /// double-buffered TMA for the products and the input gradients (2.3-3.2x the default),
    /// warp-specialized TMA for the weight gradients' transposed left operand (2.5-4.4x).
    pub const TUNED: Self = Self { forward: MatmulKernel::DoubleTmaMma, lhs_grad: MatmulKernel::DoubleTmaMma, rhs_grad: MatmulKernel::SpecializedTmaMma };

    /// What the model's projections use: `DISTILL_MATMUL` (`tuned`, `default`, or three kernel
    /// names `forward,lhs_grad,rhs_grad`), else [`Self::TUNED`]. Read once per process.
    pub fn for_projections() -> Self {
        static CHOSEN: OnceLock<ProductKernels> = OnceLock::new();
        Self::from_env(&CHOSEN, "DISTILL_MATMUL", Self::TUNED)
    }

    /// What training's attention products use (`q kᵀ`, `P v` and their gradients, batched
    /// over batch and heads): `DISTILL_ATTENTION_MATMUL` (as `DISTILL_MATMUL`), else burn's
    /// default, until the routines are measured on these shapes (`gpu_bench.sh ...
    /// matmul-attention`). Read once per process.
    pub fn for_attention() -> Self {
        static CHOSEN: OnceLock<ProductKernels> = OnceLock::new();
        Self::from_env(&CHOSEN, "DISTILL_ATTENTION_MATMUL", Self::DEFAULT)
    }

    /// `var`'s choice (a spelling [`FromStr`] takes; a bad one panics, naming `var`), else
    /// `default`, kept in `chosen` after the first read.
    fn from_env(chosen: &OnceLock<ProductKernels>, var: &str, default: Self) -> Self {
        *chosen.get_or_init(|| match std::env::var(var) {
            Ok(v) => v.parse().unwrap_or_else(|e| panic!("{var}: {e}")),
            Err(_) => default,
        })
    }
}

impl From<MatmulKernel> for ProductKernels {
    fn from(k: MatmulKernel) -> Self {
        Self { forward: k, lhs_grad: k, rhs_grad: k }
    }
}

impl FromStr for ProductKernels {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "tuned" => Ok(Self::TUNED),
            "default" => Ok(Self::DEFAULT),
            _ => match s.split(',').map(str::parse).collect::<Result<Vec<MatmulKernel>, _>>()?.as_slice() {
                [forward, lhs_grad, rhs_grad] => Ok(Self { forward: *forward, lhs_grad: *lhs_grad, rhs_grad: *rhs_grad }),
                _ => Err(format!("`{s}`: expected `tuned`, `default` or three kernel names `forward,lhs_grad,rhs_grad`")),
            },
        }
    }
}

/// `lhs · rhs` (`[.., m, k] · [.., k, n]`) with the named routines on a CubeCL device,
/// differentiable (its gradients' products run with theirs); a routine that refuses a problem
/// (layout, sizes) runs the default instead. Elsewhere, burn's matmul.
pub fn matmul_with<const D: usize>(lhs: Tensor<D>, rhs: Tensor<D>, kernels: impl Into<ProductKernels>) -> Tensor<D> {
    let kernels = kernels.into();
    #[cfg(feature = "cuda")]
    if kernels != ProductKernels::DEFAULT && crate::mamba2_step::runs_on_cube(&lhs.device()) {
        return cube::matmul_with(lhs, rhs, kernels);
    }
    let _ = kernels;
    lhs.matmul(rhs)
}

/// `lin.forward(x)` with [`ProductKernels::for_projections`] on a CubeCL device for inputs of
/// at least [`MIN_TUNED_ROWS`] rows, or [`crate::gemv`] for decoding's few (see [`project`]).
/// Otherwise exactly `lin.forward(x)`.
pub fn linear<const D: usize>(lin: &Linear, x: Tensor<D>) -> Tensor<D> {
    #[cfg(feature = "cuda")]
    if let Some(product) = cube_product(&x) {
        let y = folded(x, lin.weight.val(), product);
        return match &lin.bias {
            Some(b) => y + b.val().unsqueeze::<D>(),
            None => y,
        };
    }
    lin.forward(x)
}

/// Fewer rows than this take burn's own product: decoding (1-64 rows) and short prefills ran
/// slower through the TMA routines on the H200 (a 50% hybrid's decode step 35 -> 53 ms at batch
/// 1), and a training micro-batch has thousands.
pub const MIN_TUNED_ROWS: usize = 1024;

/// `x · weight` for `x: [.., d_in]`, `weight: [d_in, d_out]` (any strides). The leading
/// dimensions fold into rows for one `[rows, d_in] · [d_in, d_out]` product: on a CubeCL device with at least
/// [`MIN_TUNED_ROWS`] rows through [`ProductKernels::for_projections`], with decoding's few
/// (and no gradients) through [`crate::gemv`]; otherwise burn's own product, the rows folded
/// the same way.
pub fn project<const D: usize>(x: Tensor<D>, weight: Tensor<2>) -> Tensor<D> {
    #[cfg(feature = "cuda")]
    if let Some(product) = cube_product(&x) {
        return folded(x, weight, product);
    }
    // Folded here too rather than broadcast: a broadcast product reshapes `weight` to `[1,
    // d_in, d_out]` first, and for a transposed view (a tied head, the embedding's transpose)
    // the CPU backend makes that reshape a copy of the whole matrix, SmolLM2's 113 MB at every
    // forward (session 15: a third of the default pipeline's speculative stage, perf). The 2D
    // product reads the view through its strides.
    folded(x, weight, |a, b| a.matmul(b))
}

/// A `[rows, d_in] · [d_in, d_out]` product.
type Product = fn(Tensor<2>, Tensor<2>) -> Tensor<2>;

/// The kernel product for `x`'s rows on a CubeCL device, if one takes them.
#[cfg(feature = "cuda")]
fn cube_product<const D: usize>(x: &Tensor<D>) -> Option<Product> {
    let rows = x.dims()[..D - 1].iter().product::<usize>();
    let device = x.device();
    if crate::gemv::takes(rows, &device) {
        return Some(crate::gemv::gemv);
    }
    // The device first: DISTILL_MATMUL means nothing (and is not read) off CUDA.
    (rows >= MIN_TUNED_ROWS && crate::mamba2_step::runs_on_cube(&device) && ProductKernels::for_projections() != ProductKernels::DEFAULT)
        .then_some(|x, w| matmul_with(x, w, ProductKernels::for_projections()))
}

/// `product` over `x`'s leading dimensions folded into rows.
fn folded<const D: usize>(x: Tensor<D>, weight: Tensor<2>, product: Product) -> Tensor<D> {
    let dims = x.dims();
    let rows = dims[..D - 1].iter().product::<usize>();
    let y = product(x.reshape([rows, dims[D - 1]]), weight);
    let mut out = dims;
    out[D - 1] = y.dims()[1];
    y.reshape(out)
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

    #[test]
    fn product_kernels_parse_presets_and_triples() {
        assert_eq!("tuned".parse::<ProductKernels>().unwrap(), ProductKernels::TUNED);
        assert_eq!("default".parse::<ProductKernels>().unwrap(), ProductKernels::DEFAULT);
        let k: ProductKernels = "double-tma-mma,default,specialized-tma-mma".parse().unwrap();
        assert_eq!((k.forward, k.lhs_grad, k.rhs_grad), (MatmulKernel::DoubleTmaMma, MatmulKernel::Default, MatmulKernel::SpecializedTmaMma));
        assert!("double-tma-mma".parse::<ProductKernels>().unwrap_err().contains("three kernel names"));
        assert!("a,b,c".parse::<ProductKernels>().unwrap_err().contains("unknown matmul kernel"));
    }

    /// On the CPU the projection is `Linear::forward` itself, value and gradients.
    #[test]
    fn linear_on_the_cpu_is_the_module_forward() {
        use burn::nn::LinearConfig;
        use burn::tensor::{Device, Distribution};
        let device = Device::default().autodiff();
        let lin = LinearConfig::new(6, 4).init(&device);
        let x = Tensor::<3>::random([2, 3, 6], Distribution::Normal(0.0, 1.0), &device).require_grad();
        let (a, b) = (linear(&lin, x.clone()), lin.forward(x.clone()));
        a.clone().into_data().assert_eq(&b.clone().into_data(), true);
        let (ga, gb) = (a.sum().backward(), b.sum().backward());
        x.grad(&ga).unwrap().into_data().assert_eq(&x.grad(&gb).unwrap().into_data(), true);
    }
}
