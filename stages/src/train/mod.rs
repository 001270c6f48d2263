//! The shared trainer of `distill`, `sft` and `dpo`: AdamW, warmup + cosine, global-norm
//! clipping, gradient accumulation, freezing by name, a seeded data order, checkpoints with
//! bit-exact resume, and non-finite detection.

mod adamw;
mod base;
mod checkpoint;
mod devices;
mod freeze;
mod model;
mod names;
mod order;
mod parallel;
mod peers;
mod schedule;
mod trainer;

pub use adamw::{AdamW, AdamWConfig};
pub use base::{TrainError, TrainResult};
pub use devices::{device_of, Copies};
pub use checkpoint::{load_checkpoint, save_checkpoint, save_weights, weights_of, TrainState};
pub use freeze::{freeze, Freeze};
pub use model::TrainableLm;
pub use names::{param_names, param_sizes};
pub use order::DataOrder;
pub use parallel::{all_reduce_in_place, Partial};
pub use peers::{Peers, Started};
pub use schedule::LrSchedule;
pub use trainer::{batch_split, Loss, StepReport, TrainConfig, Trainer};
