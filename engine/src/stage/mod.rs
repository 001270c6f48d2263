//! Stage kinds: the trait, the run context, the registry and the built-in `command` kind.

mod base;
mod command;
mod context;
mod fetch;
mod registry;

pub use base::{panic_message, ExecutorSpec, ParamError, Stage, StageError, StageSpec};
pub use command::CommandStage;
pub use context::StageContext;
pub use fetch::{from_mirror, mirror, FetchStage, Package};
pub use registry::Registry;
