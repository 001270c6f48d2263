//! The teacher: Llama as transformers' `LlamaForCausalLM` computes it.

mod attention;
mod cache;
mod config;
mod load;
mod mlp;
mod model;
mod norm;
mod rope;
mod train_attention;

pub use attention::{Attention, AttentionConfig};
pub use cache::{grown_capacity, KvCache, KvStep, KvWrite, StepMask};
pub(crate) use cache::kv_write_by_mask;
pub use config::{HfLlamaConfig, HfRope, Llama3Scaling, LlamaConfig};
pub use mlp::{Mlp, MlpConfig};
pub use model::{DecoderLayer, Llama, LlamaModel};
pub use norm::{RmsNorm, RmsNormConfig};
pub use rope::{apply_rotary, Rope};
pub use train_attention::causal_attention;
