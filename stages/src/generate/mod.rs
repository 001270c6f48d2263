//! Generation: sampling and the decode loop.

mod decode;
mod request;
mod sampling;

pub mod graph;
pub use decode::{generate, GenerateOptions, StepGraph};
pub use request::{run_generate, GenerateRequest};
pub use sampling::{argmax, LogitsProcessor, Sampling};
