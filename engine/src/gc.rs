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
    // By file name: the workspace may be opened through another path than it was run from.
    let name = |p: &PathBuf| p.file_name().map(|n| n.to_os_string());
    let mut keep = BTreeSet::new();
    let mut keep_steps = BTreeSet::new();
    for (_, st) in ws.all_stage_states()? {
        keep.extend(name(&st.output.path));
        keep_steps.extend(st.step_metrics.as_ref().and_then(name));
    }
    for r in &runs[cut..] {
        for s in &r.stages {
            keep.extend(s.outputs.values().filter_map(|o| name(&o.path)));
            keep_steps.extend(s.step_metrics.as_ref().and_then(name));
        }
    }
    for entry in std::fs::read_dir(ws.store_dir()).map_err(|source| WorkspaceError::Io { path: ws.store_dir(), source })? {
        let Ok(entry) = entry else { continue };
        let p = entry.path();
        if !keep.contains(&entry.file_name()) {
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
            if !keep_steps.contains(&e.file_name()) {
                report.bytes_freed += tree_size(&e.path());
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    Ok(report)
}
