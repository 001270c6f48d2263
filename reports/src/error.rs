//! The one error type of the reports crate.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("no runs under {0} (run `distill run` first)")]
    NoRuns(PathBuf),
    #[error("no run matches `{wanted}` under {dir}")]
    RunNotFound { wanted: String, dir: PathBuf },
    #[error("`{wanted}` matches several runs: {candidates:?}")]
    AmbiguousRun { wanted: String, candidates: Vec<String> },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: not a run record: {source}")]
    BadRecord { path: PathBuf, source: serde_json::Error },
    #[error("step metrics of stage `{stage}` ({path}): {source}")]
    StepMetrics { stage: String, path: PathBuf, source: std::io::Error },
    #[error("template {name}: {source}")]
    Template { name: &'static str, source: minijinja::Error },
    #[error("report.json: {0}")]
    Json(#[from] serde_json::Error),
}

impl ReportError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        ReportError::Io { path: path.into(), source }
    }
}
