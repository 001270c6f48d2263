//! The LLVM compiler's types, with a compile step that always fails.

use cubecl_core::environment::backtrace::BackTrace;
use cubecl_core::ir::nvidia::SmArch;
use cubecl_core::prelude::KernelDefinition;
use cubecl_runtime::compiler::CompilationError;
use cubecl_runtime::kernel::BufferIOAttr;

use crate::LlvmTarget;
use crate::nvptx::ptx_version::PtxVersion;

/// What the error says: the cause and the way out.
const NO_LLVM: &str = "this build's cubecl-llvm is the offline stand-in (vendor/cubecl-llvm): it \
has no LLVM backend; build cubecl-cuda with its `cpp` feature so kernels go through NVRTC";

/// The LLVM (pliron) kernel compiler. Here it only carries its target.
#[derive(Clone, Debug, Default)]
pub struct PlironCompiler {
    pub target: LlvmTarget,
}

impl PlironCompiler {
    /// Always an error: there is no LLVM in this build.
    pub fn compile(
        &mut self,
        _kernel: KernelDefinition,
        _options: &PlironOptions,
    ) -> Result<PlironArtifact, CompilationError> {
        Err(CompilationError::Generic {
            reason: NO_LLVM.to_string(),
            backtrace: BackTrace::capture(),
        })
    }

    /// The language tag upstream reports, so caches and logs read the same.
    pub fn lang_tag(&self) -> &'static str {
        match self.target {
            LlvmTarget::Cpu => "plir",
            LlvmTarget::Nvptx => "ptx",
        }
    }
}

/// Options of the LLVM backend; the fields `cubecl-cuda` sets, plus `Default`.
#[derive(Clone, Debug, Default)]
pub struct PlironOptions {
    /// AMD architecture upstream; never set by `cubecl-cuda`.
    pub arch: Option<()>,
    pub sm_arch: Option<SmArch>,
    pub ptx_version: Option<PtxVersion>,
    pub grid_constants: bool,
}

/// A PTX module as the LLVM backend would emit it.
#[derive(Clone, Debug)]
pub struct NvptxModule {
    /// NUL-terminated PTX assembly.
    pub ptx: Vec<core::ffi::c_char>,
    /// Kernel entry point symbol.
    pub entrypoint: String,
    /// IR, for logs.
    pub ir: String,
    /// Shared memory per launch, in bytes.
    pub shared_memory_size: usize,
    /// Buffer access modes in binding order.
    pub io: Vec<BufferIOAttr>,
}

/// A compiled kernel. Never constructed here: [`PlironCompiler::compile`] always fails.
#[derive(Clone, Debug)]
pub enum PlironArtifact {
    NvptxCode(NvptxModule),
}
