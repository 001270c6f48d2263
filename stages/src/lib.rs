//! The ML stage kinds of distill: the Llama teacher (loading Hugging Face folders and GGUF
//! files, tokenizing, generating) and evaluation.

pub mod channels;
pub mod error;
pub mod gguf;
pub mod llama;
pub mod lm;
pub mod mamba;
pub mod hybrid;
pub mod weights;

pub use error::{Error, Result};
pub mod runtime;
pub mod text;
pub mod generate;
pub mod teacher;
pub mod eval;
pub mod kinds;
pub mod data;
pub mod train;
pub mod device_failures;
pub mod losses;
pub mod speculative;
pub mod bench;

use std::sync::Arc;

/// Adds this crate's stage kinds to the engine's registry.
pub fn register(registry: &mut distill_engine::stage::Registry) {
    use kinds::ReleasesDevice as R;
    registry.add(Arc::new(R(kinds::TeacherStage)));
    registry.add(Arc::new(R(kinds::EvalStage)));
    registry.add(Arc::new(R(kinds::InitStage)));
    registry.add(Arc::new(R(kinds::DistillStage)));
    registry.add(Arc::new(R(kinds::SftStage)));
    registry.add(Arc::new(R(kinds::DraftStage)));
    registry.add(Arc::new(R(kinds::SpeculativeStage)));
    registry.add(Arc::new(R(kinds::GenerateStage)));
    registry.add(Arc::new(R(kinds::PreferencePairsStage)));
    registry.add(Arc::new(R(kinds::DpoStage)));
}
