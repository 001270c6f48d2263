//! Hybrid models: a Llama layer stack in which each layer's mixer is attention or Mamba, with the
//! teacher's MLPs and norms; converting a teacher into one (`init`), and checkpoints in the
//! reference code's layout both ways (`model.layers.{i}.mamba.*` + `mamba_config.json`).

mod cache;
mod config;
mod convert;
mod folder;
mod init_mamba1;
mod init_mamba2;
mod load;
mod model;
mod schedule;

pub use cache::HybridCache;
pub use config::{HybridConfig, MambaConfigJson, MixerConfig};
pub use convert::{convert_teacher, hybrid_config, ConvertOptions, InitFrom, MixerChoice};
pub use folder::write_hybrid_dir;
pub use load::{checkpoint_key, field_path, read_config};
pub use model::{Hybrid, HybridLayer, HybridModel, MambaMixer, StepInputs};
pub use schedule::interleaved_attention_layers;
