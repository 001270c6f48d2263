//! The stage kinds this crate adds to the engine's registry.

mod data;
mod eval;
mod params;
mod teacher;

pub use data::read_texts;
pub use eval::EvalStage;
pub use teacher::TeacherStage;
