//! `distill gc`: drop run records beyond the last N and every stored output that neither a
//! current stage state nor a kept run references.

use std::collections::BTreeSet;
use std::path::PathBuf;

use crate::fsutil::tree_size;
use crate::workspace::{Workspace, WorkspaceError};

#[derive(Debug, Default)]
pub struct GcReport {
    pub runs_removed: usize,
    pub outputs_removed: usize,
    pub bytes_freed: u64,
}

pub fn gc(ws: &Workspace, keep_last: usize) -> Result<GcReport, WorkspaceError> {
    let mut report = GcReport::default();
    let runs = ws.runs()?;
    let cut = runs.len().saturating_sub(keep_last);
    for r in &runs[..cut] {
        ws.remove_run(&r.id)?;
        report.runs_removed += 1;
    }
    let mut keep: BTreeSet<PathBuf> = BTreeSet::new();
    let mut keep_steps: BTreeSet<PathBuf> = BTreeSet::new();
    for (_, st) in ws.all_stage_states()? {
        keep.insert(st.output.path.clone());
        keep_steps.extend(st.step_metrics.clone());
    }
    for r in &runs[cut..] {
        for s in &r.stages {
            keep.extend(s.outputs.values().map(|o| o.path.clone()));
            keep_steps.extend(s.step_metrics.clone());
        }
    }
    for entry in std::fs::read_dir(ws.store_dir()).map_err(|source| WorkspaceError::Io { path: ws.store_dir(), source })? {
        let Ok(entry) = entry else { continue };
        let p = entry.path();
        if !keep.contains(&p) {
            report.bytes_freed += tree_size(&p);
            let _ = std::fs::remove_dir_all(&p);
            report.outputs_removed += 1;
        }
    }
    for (key, st) in ws.run_cache()? {
        if !st.output.path.exists() {
            ws.forget_cached(&key)?;
        }
    }
    if let Ok(rd) = std::fs::read_dir(ws.steps_dir()) {
        for e in rd.flatten() {
            if !keep_steps.contains(&e.path()) {
                report.bytes_freed += tree_size(&e.path());
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    Ok(report)
}
