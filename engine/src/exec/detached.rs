//! A stage run in another process (a Slurm job): the parent writes a job file, the child
//! (`distill exec-stage JOB`) runs the kind and writes a result file. The child never opens
//! the cache database: storing and recording stay with the parent, which holds the lock.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use serde::{Deserialize, Serialize};

use crate::stage::{Registry, StageContext, StageSpec};

#[derive(Debug, Serialize, Deserialize)]
pub struct JobFile {
    pub spec: StageSpec,
    pub run_id: String,
    pub inputs: BTreeMap<String, PathBuf>,
    pub out_dir: PathBuf,
    pub log: PathBuf,
    pub steps: PathBuf,
    pub workspace: PathBuf,
    pub result: PathBuf,
}

impl JobFile {
    /// Writes the job where the process that runs it (`distill exec-stage PATH`) reads it.
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        std::fs::write(path, serde_json::to_vec_pretty(self).expect("jobs serialize"))
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct JobResult {
    pub error: Option<String>,
    pub metrics: BTreeMap<String, f64>,
    pub steps: Option<PathBuf>,
}

impl JobResult {
    /// What the job's process wrote, if it got as far as writing it.
    pub(crate) fn read(job: &JobFile) -> Option<Self> {
        std::fs::read(&job.result).ok().and_then(|b| serde_json::from_slice(&b).ok())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: not a job file: {source}")]
    Parse { path: PathBuf, source: serde_json::Error },
    #[error("unknown stage kind `{0}` in the job file (is this the same distill build?)")]
    Kind(String),
}

/// The `distill` executable another process runs a job with: `var`'s value when set (a cluster
/// node may see it at another path; tests stand in their own), else this program.
pub(crate) fn distill_exe(var: &str) -> Result<PathBuf, crate::stage::StageError> {
    match std::env::var_os(var) {
        Some(p) => Ok(PathBuf::from(p)),
        None => std::env::current_exe().map_err(|e| crate::stage::StageError::io("distill executable", e)),
    }
}

/// The job file on line `index` of a job array's list.
pub fn job_from_list(list: &Path, index: usize) -> Result<PathBuf, JobError> {
    let text = std::fs::read_to_string(list).map_err(|source| JobError::Io { path: list.to_path_buf(), source })?;
    text.lines().nth(index).map(PathBuf::from).ok_or_else(|| JobError::Io {
        path: list.to_path_buf(),
        source: std::io::Error::new(std::io::ErrorKind::NotFound, format!("no job at index {index}")),
    })
}

/// The child side: runs the job's stage and writes its result; `Ok(false)` if the stage failed.
pub fn run_job_file(path: &Path, registry: &Registry) -> Result<bool, JobError> {
    let io = |source| JobError::Io { path: path.to_path_buf(), source };
    let job: JobFile = serde_json::from_slice(&std::fs::read(path).map_err(io)?)
        .map_err(|source| JobError::Parse { path: path.to_path_buf(), source })?;
    let kind = registry.get(&job.spec.kind).ok_or_else(|| JobError::Kind(job.spec.kind.clone()))?;
    std::fs::create_dir_all(&job.out_dir).map_err(|source| JobError::Io { path: job.out_dir.clone(), source })?;
    let mut ctx = StageContext::new(
        &job.spec,
        job.run_id.clone(),
        job.inputs.clone(),
        job.out_dir.clone(),
        job.log.clone(),
        job.steps.clone(),
        job.workspace.clone(),
        Arc::new(AtomicBool::new(false)),
    )
    .map_err(|source| JobError::Io { path: job.log.clone(), source })?;
    let outcome = kind.run(&mut ctx);
    if let Err(e) = &outcome {
        ctx.log(format!("error: {e}"));
    }
    let (metrics, steps) = ctx.finish();
    let result = JobResult { error: outcome.as_ref().err().map(|e| e.to_string()), metrics, steps };
    let tmp = job.result.with_extension("tmp");
    std::fs::write(&tmp, serde_json::to_vec(&result).expect("results serialize"))
        .and_then(|_| std::fs::rename(&tmp, &job.result))
        .map_err(|source| JobError::Io { path: job.result.clone(), source })?;
    Ok(outcome.is_ok())
}
