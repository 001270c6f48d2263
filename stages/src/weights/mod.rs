//! Checkpoint weights: named host tensors, loading them into modules, saving them.

mod load;
mod save;
mod shapes;
mod store;

pub use load::load_module;
pub use save::save_safetensors;
pub use shapes::param_shapes;
pub use store::{Entry, Weights};
