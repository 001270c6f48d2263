//! The compiler facade and feature narrowing `cubecl-cuda` names.

mod base;
pub mod lowered_features;

pub use base::{NvptxModule, PlironArtifact, PlironCompiler, PlironOptions};
