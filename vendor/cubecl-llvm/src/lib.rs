//! Offline stand-in for `cubecl-llvm 0.11.3` (see `Cargo.toml` for why it exists).
//!
//! It declares the types and functions `cubecl-cuda 0.11.3` refers to with the same names,
//! fields and signatures. Only [`nvptx::ptx_version::PtxVersion`] does real work (the runtime
//! computes it for every device); [`PlironCompiler::compile`] always returns an error, so a
//! build that reaches the LLVM backend fails loudly at the first kernel instead of miscompiling.
//! Build `cubecl-cuda` with its `cpp` feature so that backend is never selected.

pub mod nvptx;
pub mod shared;

pub use shared::{NvptxModule, PlironArtifact, PlironCompiler, PlironOptions};

/// What the LLVM backend would compile for. `cubecl-cuda` only ever names `Nvptx`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum LlvmTarget {
    #[default]
    Cpu,
    Nvptx,
}
