//! Narrowing device features to what the LLVM backend lowers.

use cubecl_core::ir::DeviceProperties;

/// The GPU family the LLVM backend would target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GpuTarget {
    Nvptx,
}

/// Upstream removes the matrix forms LLVM cannot lower from `props`. `cubecl-cuda` calls it
/// only when the LLVM backend is selected, and that backend cannot compile anything here
/// (every kernel fails in [`crate::PlironCompiler::compile`]), so there is nothing to narrow.
pub fn restrict_features(_props: &mut DeviceProperties, _target: GpuTarget) {}
