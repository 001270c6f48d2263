//! The `Stage` trait every stage kind implements, and what a running stage sees.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::context::StageContext;

/// A resolved stage as the manifest declares it, after templating and family expansion.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct StageSpec {
    pub name: String,
    pub kind: String,
    pub params: serde_json::Value,
    pub needs: Vec<String>,
    pub device: String,
    pub dtype: String,
    pub seed: u64,
    pub threads: usize,
    pub gpus: usize,
    pub retries: u32,
    pub frozen: bool,
    /// `command` kind fields; other kinds must leave them empty.
    pub cmd: Option<String>,
    pub deps: Vec<String>,
    pub outs: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub workdir: Option<String>,
    /// Folder of the manifest that declared the stage: relative paths start here.
    pub manifest_dir: PathBuf,
    /// Where it runs; not part of the cache key (outputs do not depend on it).
    #[serde(default)]
    pub executor: ExecutorSpec,
}

/// `executor = "local" | "process" | "slurm"` and the batch options a Slurm job gets.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct ExecutorSpec {
    pub slurm: bool,
    /// In a process of its own on this machine (`distill exec-stage`): whatever the stage
    /// holds (GPU memory above all) goes back when it ends, and stages running side by side
    /// share no runtime.
    #[serde(default)]
    pub process: bool,
    /// `--mem` (`4G`), `--time` (`1:00:00`), `--partition`, `--account`, and any other sbatch
    /// long option, from `[experiment.slurm]` overridden by the stage's `slurm = {...}`.
    pub options: BTreeMap<String, String>,
}

impl StageSpec {
    /// A param by dotted path (`source.gguf`).
    pub fn param(&self, path: &str) -> Option<&serde_json::Value> {
        path.split('.').try_fold(&self.params, |v, k| v.get(k))
    }
}

/// A param the kind rejects; `path` is dotted from the stage (`params.lr`, `cmd`).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{path}: {message}")]
pub struct ParamError {
    pub path: String,
    pub message: String,
}

impl ParamError {
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self { path: path.into(), message: message.into() }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StageError {
    #[error("{0}")]
    Failed(String),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("command exited with {0}")]
    Exit(String),
    #[error("declared output `{0}` was not produced")]
    MissingOutput(String),
    #[error("input `{0}` is not available to this stage")]
    MissingInput(String),
    #[error("non-finite {what} at step {step}")]
    NonFinite { step: u64, what: String },
    #[error("interrupted")]
    Interrupted,
    #[error(transparent)]
    Other(Box<dyn std::error::Error + Send + Sync>),
}

impl StageError {
    pub fn io(path: impl AsRef<Path>, source: std::io::Error) -> Self {
        StageError::Io { path: path.as_ref().to_path_buf(), source }
    }
    pub fn other(e: impl std::error::Error + Send + Sync + 'static) -> Self {
        StageError::Other(Box::new(e))
    }

    /// Runs `f`, turning a panic into a failure with the panic's message: a stage is code
    /// we call, and a bug in it must fail that stage, not leave the run waiting for a result
    /// its thread will never send.
    pub fn unless_panicked<T>(f: impl FnOnce() -> Result<T, StageError>) -> Result<T, StageError> {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|p| Err(StageError::Failed(format!("panicked: {}", panic_message(&*p)))))
    }
}

/// The text a panic was raised with (`panic!("...")`, a failed `expect`, an index out of range).
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload.downcast_ref::<&str>().map(|s| s.to_string()).or_else(|| payload.downcast_ref::<String>().cloned()).unwrap_or_else(|| "(no message)".into())
}

/// One kind of stage (`command`, `teacher`, `distill`...). Implementations live in one module
/// each and are listed in a registry table.
pub trait Stage: Send + Sync {
    /// The name manifests use in `kind = "..."`.
    fn kind(&self) -> &'static str;
    /// Bump whenever the kind's code changes what it computes: it is part of every cache key.
    fn version(&self) -> u32;
    /// One line for `distill schema` and error messages.
    fn summary(&self) -> &'static str;
    /// JSON Schema of `params`.
    fn params_schema(&self) -> serde_json::Value {
        serde_json::json!({ "type": "object" })
    }
    /// Checks params before anything runs; errors carry the param's path.
    fn validate(&self, spec: &StageSpec) -> Result<(), ParamError>;
    /// Entries of the environment that the outputs depend on (device, dtype...).
    fn environment(&self, _spec: &StageSpec) -> BTreeMap<String, String> {
        BTreeMap::new()
    }
    /// Files and folders outside the store that the stage reads, relative to the manifest
    /// folder (or absolute). Their content hashes enter the cache key.
    fn external_inputs(&self, _spec: &StageSpec) -> Vec<String> {
        Vec::new()
    }
    /// True for kinds that read the run record (reports): the stage then waits for every
    /// stage that does not depend on it, and reruns whenever any of them ran again.
    fn watches_run(&self) -> bool {
        false
    }
    /// Produces the outputs into `ctx.out_dir()`.
    fn run(&self, ctx: &mut StageContext) -> Result<(), StageError>;
    /// On a cache hit: put stored outputs back where the workspace expects them. `hasher`
    /// remembers file hashes, so checking unchanged outs costs a `stat`.
    fn restore(&self, _spec: &StageSpec, _stored: &Path, _hasher: &crate::hash::Hasher) -> Result<Vec<PathBuf>, StageError> {
        Ok(Vec::new())
    }
}
