//! A workspace: the `.distill/` folder beside the manifest, holding the content-addressed
//! store, the sled database (stage states, run cache, file hashes, runs), logs and records.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::key::CacheKey;
use crate::lock::{LockError, WorkspaceLock};
use crate::record::{OutputRef, RunRecord, RunStatus};

#[derive(Debug, thiserror::Error)]
pub enum WorkspaceError {
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error("cannot open the cache database {path}: {source}")]
    Db { path: PathBuf, source: sled::Error },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("cache database: {0}")]
    Sled(#[from] sled::Error),
}

/// What the cache knows of a stage's last successful execution (also the run-cache entry
/// for its key).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct StageState {
    pub key_hash: String,
    pub key: CacheKey,
    /// The whole output folder.
    pub output: OutputRef,
    /// What `@stage` alone names inside it (a command stage's single out), if not all of it.
    #[serde(default)]
    pub main_output: Option<String>,
    pub metrics: BTreeMap<String, f64>,
    pub step_metrics: Option<PathBuf>,
    pub log: Option<PathBuf>,
    pub run_id: String,
    pub finished_at: DateTime<Utc>,
    pub duration_s: f64,
}

pub struct Workspace {
    /// The folder holding the manifest; `dir` is its `.distill/`.
    pub root: PathBuf,
    pub dir: PathBuf,
    pub db: sled::Db,
    _lock: Option<WorkspaceLock>,
    pub took_over: Option<crate::lock::Holder>,
}

impl Workspace {
    /// Opens (creating) the workspace, holding its lock until dropped.
    pub fn open(root: &Path, wait: bool, command: &str) -> Result<Self, WorkspaceError> {
        let dir = root.join(".distill");
        let io = |source| WorkspaceError::Io { path: dir.clone(), source };
        std::fs::create_dir_all(dir.join("store")).map_err(io)?;
        let lock = WorkspaceLock::acquire(&dir.join("lock"), wait, command)?;
        let took_over = lock.took_over.clone();
        let db_path = dir.join("db");
        let db = sled::Config::new()
            .path(&db_path)
            .flush_every_ms(None)
            .open()
            .map_err(|source| WorkspaceError::Db { path: db_path, source })?;
        // Leftovers of an interrupted run: never recorded, safe to drop.
        let _ = std::fs::remove_dir_all(dir.join("tmp"));
        Ok(Self { root: root.to_path_buf(), dir, db, _lock: Some(lock), took_over })
    }

    pub fn store_dir(&self) -> PathBuf {
        self.dir.join("store")
    }

    pub fn tmp_dir(&self) -> PathBuf {
        self.dir.join("tmp")
    }

    pub fn runs_dir(&self) -> PathBuf {
        self.dir.join("runs")
    }

    pub fn steps_dir(&self) -> PathBuf {
        self.dir.join("steps")
    }

    pub fn file_hashes(&self) -> Result<sled::Tree, WorkspaceError> {
        Ok(self.db.open_tree("files")?)
    }

    pub fn stage_state(&self, name: &str) -> Result<Option<StageState>, WorkspaceError> {
        get_json(&self.db.open_tree("stages")?, name.as_bytes())
    }

    pub fn cached_by_key(&self, key_hash: &str) -> Result<Option<StageState>, WorkspaceError> {
        get_json(&self.db.open_tree("runcache")?, key_hash.as_bytes())
    }

    /// Records a finished stage; durable once this returns.
    pub fn record_stage(&self, name: &str, state: &StageState) -> Result<(), WorkspaceError> {
        let v = serde_json::to_vec(state).expect("states serialize");
        self.db.open_tree("stages")?.insert(name.as_bytes(), v.clone())?;
        self.db.open_tree("runcache")?.insert(state.key_hash.as_bytes(), v)?;
        self.db.flush()?;
        Ok(())
    }

    pub fn all_stage_states(&self) -> Result<Vec<(String, StageState)>, WorkspaceError> {
        iter_json(&self.db.open_tree("stages")?)
    }

    pub fn run_cache(&self) -> Result<Vec<(String, StageState)>, WorkspaceError> {
        iter_json(&self.db.open_tree("runcache")?)
    }

    pub fn forget_cached(&self, key_hash: &str) -> Result<(), WorkspaceError> {
        self.db.open_tree("runcache")?.remove(key_hash.as_bytes())?;
        Ok(())
    }

    /// Writes the run record atomically to `runs/<id>/run.json` (after every stage, so a
    /// killed run still has a record) and, when the run is over, to sled.
    pub fn save_run(&self, record: &RunRecord) -> Result<(), WorkspaceError> {
        let dir = self.runs_dir().join(&record.id);
        let io = |source| WorkspaceError::Io { path: dir.clone(), source };
        std::fs::create_dir_all(&dir).map_err(io)?;
        let text = serde_json::to_vec_pretty(record).expect("records serialize");
        let tmp = dir.join("run.json.tmp");
        std::fs::write(&tmp, &text).map_err(io)?;
        std::fs::rename(&tmp, dir.join("run.json")).map_err(io)?;
        if record.finished_at.is_some() {
            self.db.open_tree("runs")?.insert(record.id.as_bytes(), serde_json::to_vec(record).expect("records serialize"))?;
            self.db.flush()?;
        }
        Ok(())
    }

    /// Runs, oldest first; a run killed before its end is read from its JSON record.
    pub fn runs(&self) -> Result<Vec<RunRecord>, WorkspaceError> {
        let mut runs: Vec<RunRecord> = iter_json(&self.db.open_tree("runs")?)?.into_iter().map(|(_, r)| r).collect();
        for r in read_run_files(&self.dir) {
            if !runs.iter().any(|x| x.id == r.id) {
                runs.push(r);
            }
        }
        runs.sort_by(|a, b| a.started_at.cmp(&b.started_at).then_with(|| a.id.cmp(&b.id)));
        Ok(runs)
    }

    pub fn remove_run(&self, id: &str) -> Result<(), WorkspaceError> {
        self.db.open_tree("runs")?.remove(id.as_bytes())?;
        let _ = std::fs::remove_dir_all(self.runs_dir().join(id));
        Ok(())
    }
}

/// Reads run records without locking or opening sled (for `distill report` during a run).
pub fn read_run_files(distill_dir: &Path) -> Vec<RunRecord> {
    let mut runs: Vec<RunRecord> = std::fs::read_dir(distill_dir.join("runs"))
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .filter_map(|e| std::fs::read(e.path().join("run.json")).ok())
        .filter_map(|b| serde_json::from_slice(&b).ok())
        .map(abandoned_if_dead)
        .collect();
    runs.sort_by(|a, b| a.started_at.cmp(&b.started_at).then_with(|| a.id.cmp(&b.id)));
    runs
}

/// A record left `running` by a process of this host that no longer exists was killed.
fn abandoned_if_dead(mut r: RunRecord) -> RunRecord {
    let dead = r.pid.is_some_and(|pid| !crate::lock::pid_alive(pid));
    if r.status == RunStatus::Running && dead && r.host == crate::exec::hostname() {
        r.status = RunStatus::Abandoned;
    }
    r
}

fn get_json<T: for<'de> Deserialize<'de>>(tree: &sled::Tree, key: &[u8]) -> Result<Option<T>, WorkspaceError> {
    Ok(tree.get(key)?.and_then(|v| serde_json::from_slice(&v).ok()))
}

fn iter_json<T: for<'de> Deserialize<'de>>(tree: &sled::Tree) -> Result<Vec<(String, T)>, WorkspaceError> {
    let mut out = Vec::new();
    for item in tree.iter() {
        let (k, v) = item?;
        if let Ok(t) = serde_json::from_slice(&v) {
            out.push((String::from_utf8_lossy(&k).into_owned(), t));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::ExperimentInfo;

    fn record(id: &str, pid: u32) -> RunRecord {
        let experiment = ExperimentInfo { name: "x".into(), description: String::new(), seed: 0, device: "cpu".into(), dtype: "f32".into() };
        RunRecord {
            id: id.into(),
            experiment,
            manifest: "m.toml".into(),
            resolved_manifest: serde_json::Value::Null,
            command: Vec::new(),
            program_version: crate::VERSION.into(),
            host: crate::exec::hostname(),
            pid: Some(pid),
            started_at: Utc::now(),
            finished_at: None,
            status: RunStatus::Running,
            stages: Vec::new(),
            edges: Vec::new(),
        }
    }

    #[test]
    fn a_running_record_whose_process_is_gone_reads_as_abandoned() {
        let dir = tempfile::tempdir().unwrap();
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        for r in [record("a-killed", dead), record("b-live", std::process::id())] {
            let d = dir.path().join("runs").join(&r.id);
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("run.json"), serde_json::to_vec(&r).unwrap()).unwrap();
        }
        let runs = read_run_files(dir.path());
        let status = |id: &str| runs.iter().find(|r| r.id == id).unwrap().status;
        assert_eq!(status("a-killed"), RunStatus::Abandoned);
        assert_eq!(status("b-live"), RunStatus::Running);
    }
}
