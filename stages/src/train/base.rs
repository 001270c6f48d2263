//! The trainer's error type.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// A NaN or infinite loss or gradient: the stage fails and is never cached.
    #[error("non-finite {what} at step {step}")]
    NonFinite { step: u64, what: String },
    #[error("checkpoint {path}: {message}")]
    Checkpoint { path: PathBuf, message: String },
    #[error("training config: {0}")]
    Config(String),
    /// The device failed to run the step (out of memory, a kernel error): its values are not
    /// to be trusted, so the stage fails rather than train on them.
    #[error("device error at step {step}: {message}")]
    Device { step: u64, message: String },
    #[error("interrupted at step {0}")]
    Interrupted(u64),
    #[error(transparent)]
    Stage(#[from] crate::Error),
}

pub type TrainResult<T> = std::result::Result<T, TrainError>;
