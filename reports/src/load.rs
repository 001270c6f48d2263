//! Finding and reading run records: `.distill/runs/<run-id>/run.json`.
//!
//! Run ids sort by time (`YYYYMMDD-HHMMSS-xxxx`), so "the last run" is the greatest id and a
//! unique prefix (`20250301-14`) is enough to name one.

use std::collections::BTreeMap;
use std::path::Path;

use distill_engine::record::{RunRecord, StepMetric};

use crate::error::ReportError;

/// Reads the run `wanted` (a full id or a unique prefix), or the latest run when `None`.
/// `distill_dir` is the workspace's `.distill` folder.
pub fn load_run(distill_dir: &Path, wanted: Option<&str>) -> Result<RunRecord, ReportError> {
    let runs_dir = distill_dir.join("runs");
    let ids = run_ids(&runs_dir)?;
    let id = match wanted {
        None => ids.last().cloned().ok_or_else(|| ReportError::NoRuns(runs_dir.clone()))?,
        Some(w) => pick(&ids, w, &runs_dir)?,
    };
    read_record(&runs_dir.join(id).join("run.json"))
}

/// Reads one `run.json`.
pub fn read_record(path: &Path) -> Result<RunRecord, ReportError> {
    let text = std::fs::read_to_string(path).map_err(|e| ReportError::io(path, e))?;
    serde_json::from_str(&text)
        .map_err(|source| ReportError::BadRecord { path: path.to_path_buf(), source })
}

/// Step metrics of every stage that logged some, by stage name. A stage whose file is gone
/// (a cleaned store) is reported with no curves rather than failing the whole report.
pub fn load_steps(run: &RunRecord) -> BTreeMap<String, Vec<StepMetric>> {
    let mut out = BTreeMap::new();
    for stage in &run.stages {
        match RunRecord::read_step_metrics(stage) {
            Ok(steps) if !steps.is_empty() => {
                out.insert(stage.name.clone(), steps);
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(stage = %stage.name, error = %e, "step metrics unreadable"),
        }
    }
    out
}

/// Sorted ids of the runs that have a `run.json`.
fn run_ids(runs_dir: &Path) -> Result<Vec<String>, ReportError> {
    let entries = match std::fs::read_dir(runs_dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(ReportError::NoRuns(runs_dir.to_path_buf()));
        }
        Err(e) => return Err(ReportError::io(runs_dir, e)),
    };
    let mut ids: Vec<String> = entries
        .filter_map(Result::ok)
        .filter(|e| e.path().join("run.json").is_file())
        .filter_map(|e| e.file_name().to_str().map(str::to_string))
        .collect();
    ids.sort();
    Ok(ids)
}

fn pick(ids: &[String], wanted: &str, dir: &Path) -> Result<String, ReportError> {
    if ids.iter().any(|i| i == wanted) {
        return Ok(wanted.to_string());
    }
    let hits: Vec<String> = ids.iter().filter(|i| i.starts_with(wanted)).cloned().collect();
    match hits.len() {
        0 => Err(ReportError::RunNotFound { wanted: wanted.into(), dir: dir.to_path_buf() }),
        1 => Ok(hits[0].clone()),
        _ => Err(ReportError::AmbiguousRun { wanted: wanted.into(), candidates: hits }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testdata::sample_run;

    fn write(dir: &Path, id: &str) {
        let mut run = sample_run(dir);
        run.id = id.to_string();
        let d = dir.join("runs").join(id);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("run.json"), serde_json::to_string(&run).unwrap()).unwrap();
    }

    #[test]
    fn picks_latest_exact_and_prefix() {
        let tmp = tempfile::tempdir().unwrap();
        write(tmp.path(), "20250301-100000-aaaa");
        write(tmp.path(), "20250302-100000-bbbb");
        assert_eq!(load_run(tmp.path(), None).unwrap().id, "20250302-100000-bbbb");
        assert_eq!(load_run(tmp.path(), Some("20250301")).unwrap().id, "20250301-100000-aaaa");
        assert!(matches!(load_run(tmp.path(), Some("2025")), Err(ReportError::AmbiguousRun { .. })));
        assert!(matches!(load_run(tmp.path(), Some("1999")), Err(ReportError::RunNotFound { .. })));
    }

    #[test]
    fn empty_workspace_says_no_runs() {
        let tmp = tempfile::tempdir().unwrap();
        assert!(matches!(load_run(tmp.path(), None), Err(ReportError::NoRuns(_))));
    }

    #[test]
    fn garbage_record_is_an_error_not_a_panic() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path().join("runs/20250301-100000-aaaa");
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("run.json"), "{not json").unwrap();
        assert!(matches!(load_run(tmp.path(), None), Err(ReportError::BadRecord { .. })));
    }
}
