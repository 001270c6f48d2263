//! The stage kinds this crate adds to the engine's registry.

mod data;
mod distill;
mod eval;
mod init;
mod params;
mod sft;
mod teacher;
mod training;

pub use data::read_texts;
pub use distill::DistillStage;
pub use eval::EvalStage;
pub use init::InitStage;
pub use sft::SftStage;
pub use teacher::TeacherStage;
