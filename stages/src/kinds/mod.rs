//! The stage kinds this crate adds to the engine's registry.

mod data;
mod eval;
mod init;
mod params;
mod teacher;

pub use data::read_texts;
pub use eval::EvalStage;
pub use init::InitStage;
pub use teacher::TeacherStage;
