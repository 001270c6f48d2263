//! The distill pipeline engine: manifests, the stage DAG, the content-hash cache, the
//! artifact store, locking, executors and run records. It knows nothing of burn.

pub mod canon;
pub mod decide;
pub mod exec;
pub mod fsutil;
pub mod gc;
pub mod hash;
pub mod key;
pub mod lock;
pub mod manifest;
pub mod plan;
pub mod record;
pub mod refs;
pub mod stage;
pub mod workspace;

/// The program version, part of every cache key's environment.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
