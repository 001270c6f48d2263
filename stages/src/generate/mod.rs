//! Generation: sampling and the decode loop.

mod decode;
mod sampling;

pub use decode::{generate, GenerateOptions};
pub use sampling::{argmax, LogitsProcessor, Sampling};
