//! Run records: what one `distill run` did, stage by stage.
//!
//! Written to sled and as `.distill/runs/<run-id>/run.json` after every stage finishes, so a
//! killed run still leaves a readable record. The `reports` crate reads only these types.

use std::collections::BTreeMap;
use std::path::PathBuf;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::key::CacheKey;

/// One run of a manifest.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct RunRecord {
    /// Sortable id: `YYYYMMDD-HHMMSS-mmm-xxxx` (UTC, milliseconds, a random suffix).
    pub id: String,
    pub experiment: ExperimentInfo,
    /// The manifest file as given on the command line, relative to the workspace.
    pub manifest: PathBuf,
    /// The manifest after includes, `--set`, templating and family expansion.
    pub resolved_manifest: serde_json::Value,
    /// The command line that reproduces the run (`distill run ...`).
    pub command: Vec<String>,
    pub program_version: String,
    pub host: String,
    /// The process that ran it: a record still `running` whose process is gone was killed.
    #[serde(default)]
    pub pid: Option<u32>,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub status: RunStatus,
    /// Stages in execution order (a topological order of the DAG).
    pub stages: Vec<StageRun>,
    /// DAG edges as (upstream, downstream) stage names.
    pub edges: Vec<(String, String)>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ExperimentInfo {
    pub name: String,
    pub description: String,
    pub seed: u64,
    pub device: String,
    pub dtype: String,
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    Running,
    Succeeded,
    Failed,
    /// Read as `running`, but its process on this host is gone: killed (SIGKILL, OOM, a node
    /// lost) before it could finish the record. Its finished stages stay cached.
    Abandoned,
    /// Planning only (`--dry-run`): nothing executed.
    DryRun,
}

/// What happened to one stage in one run.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum StageStatus {
    Ran,
    Cached,
    Skipped,
    Failed,
    WillRun,
    MayRun,
}

impl StageStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            StageStatus::Ran => "ran",
            StageStatus::Cached => "cached",
            StageStatus::Skipped => "skipped",
            StageStatus::Failed => "failed",
            StageStatus::WillRun => "will_run",
            StageStatus::MayRun => "may_run",
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct StageRun {
    pub name: String,
    pub kind: String,
    pub status: StageStatus,
    /// Why it ran or was skipped, one line each (`param lr: 0.0001 -> 0.0003`).
    pub reasons: Vec<String>,
    pub params: serde_json::Value,
    pub needs: Vec<String>,
    pub started_at: Option<DateTime<Utc>>,
    pub duration_s: Option<f64>,
    pub attempts: u32,
    /// blake3 of the cache key, hex.
    pub key_hash: Option<String>,
    pub key: Option<CacheKey>,
    pub outputs: BTreeMap<String, OutputRef>,
    /// Final metrics (perplexity, acceptance rate...). For a cached stage, the producing run's.
    pub metrics: BTreeMap<String, f64>,
    /// JSON-lines file of `StepMetric`s, if the stage logged any (absolute path).
    pub step_metrics: Option<PathBuf>,
    /// The stage's stdout/stderr log (absolute path).
    pub log: Option<PathBuf>,
    /// For failures: the error and the last lines of the log.
    pub error: Option<String>,
    pub log_tail: Vec<String>,
}

impl StageRun {
    /// An entry with nothing done yet (status `will_run`).
    pub fn new(name: &str, kind: &str, params: serde_json::Value, needs: Vec<String>) -> Self {
        Self {
            name: name.to_string(),
            kind: kind.to_string(),
            status: StageStatus::WillRun,
            reasons: Vec::new(),
            params,
            needs,
            started_at: None,
            duration_s: None,
            attempts: 0,
            key_hash: None,
            key: None,
            outputs: BTreeMap::new(),
            metrics: BTreeMap::new(),
            step_metrics: None,
            log: None,
            error: None,
            log_tail: Vec::new(),
        }
    }
}

/// One stored output of a stage.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct OutputRef {
    /// Content hash of the output (file or folder tree), hex.
    pub hash: String,
    /// Where it lives in the store (absolute path).
    pub path: PathBuf,
    pub bytes: u64,
}

/// One logged training step value, as stages emit them.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct StepMetric {
    pub step: u64,
    pub name: String,
    pub value: f64,
}

impl RunRecord {
    pub fn stage(&self, name: &str) -> Option<&StageRun> {
        self.stages.iter().find(|s| s.name == name)
    }

    /// Seconds from start to finish, if finished.
    pub fn duration_s(&self) -> Option<f64> {
        self.finished_at
            .map(|f| (f - self.started_at).num_milliseconds() as f64 / 1000.0)
    }

    /// Reads the step metrics of a stage (empty when it logged none).
    pub fn read_step_metrics(stage: &StageRun) -> std::io::Result<Vec<StepMetric>> {
        let Some(path) = &stage.step_metrics else { return Ok(Vec::new()) };
        let text = std::fs::read_to_string(path)?;
        Ok(text
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect())
    }
}
