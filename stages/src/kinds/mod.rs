//! The stage kinds this crate adds to the engine's registry.

mod answers;
mod data;
mod device_memory;
mod distill;
mod draft;
mod dpo;
mod eval;
mod generate;
mod init;
mod params;
mod preference_pairs;
mod ranks;
mod sft;
pub(crate) mod speculative;
mod teacher;
mod training;

pub use data::read_texts;
pub use device_memory::ReleasesDevice;
pub use distill::DistillStage;
pub use draft::DraftStage;
pub use dpo::DpoStage;
pub use eval::EvalStage;
pub use generate::GenerateStage;
pub use init::InitStage;
pub use preference_pairs::PreferencePairsStage;
pub use sft::SftStage;
pub use speculative::SpeculativeStage;
pub use teacher::TeacherStage;
