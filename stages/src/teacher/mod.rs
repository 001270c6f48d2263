//! The teacher stage's work: importing checkpoints as normalized Hugging Face folders, and
//! opening any model folder for generation and evaluation.

mod export;
mod loaded;

pub use export::{check_keys, export_gguf, import_hf_dir};
pub use loaded::LoadedModel;
