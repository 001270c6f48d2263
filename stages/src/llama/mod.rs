//! The teacher: Llama as transformers' `LlamaForCausalLM` computes it.

mod attention;
mod cache;
mod config;
mod load;
mod mlp;
mod model;
mod norm;
mod rope;

pub use attention::{Attention, AttentionConfig};
pub use cache::{KvCache, KvStep, StepMask};
pub use config::{HfLlamaConfig, HfRope, Llama3Scaling, LlamaConfig};
pub use mlp::{Mlp, MlpConfig};
pub use model::{DecoderLayer, Llama, LlamaModel};
pub use norm::{RmsNorm, RmsNormConfig};
pub use rope::{apply_rotary, Rope};
