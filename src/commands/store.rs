//! `runs`, `gc`, `path` and `export`: looking into the workspace.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use distill_engine::decide::resolve_output;
use distill_engine::fsutil::copy_tree;
use distill_engine::hash::Hasher;
use distill_engine::refs::Reference;
use distill_engine::workspace::Workspace;
use serde_json::json;

fn open(workspace: &Path) -> anyhow::Result<Workspace> {
    if !workspace.join(".distill").exists() {
        bail!("{} has no .distill folder: run a manifest there first", workspace.display());
    }
    let cmd = std::env::args().collect::<Vec<_>>().join(" ");
    Ok(Workspace::open(workspace, true, &cmd)?)
}

/// Reads the JSON records, not sled, so it answers while a run holds the workspace.
pub fn runs(workspace: &Path, json_out: bool) -> anyhow::Result<ExitCode> {
    let dir = workspace.join(".distill");
    if !dir.exists() {
        bail!("{} has no .distill folder: run a manifest there first", workspace.display());
    }
    let runs = distill_engine::workspace::read_run_files(&dir);
    if json_out {
        let items: Vec<_> = runs
            .iter()
            .map(|r| {
                json!({
                    "id": r.id, "experiment": r.experiment.name, "status": r.status,
                    "started_at": r.started_at, "duration_s": r.duration_s(),
                    "stages": r.stages.iter().map(|s| json!({"name": s.name, "status": s.status.as_str(), "metrics": s.metrics})).collect::<Vec<_>>(),
                })
            })
            .collect();
        println!("{}", json!({ "runs": items }));
        return Ok(ExitCode::SUCCESS);
    }
    for r in &runs {
        let n = |st| r.stages.iter().filter(|s| s.status == st).count();
        use distill_engine::record::StageStatus::*;
        println!(
            "{}  {:<10} {:>8}  {} ran, {} cached, {} failed  {}",
            r.id,
            format!("{:?}", r.status).to_lowercase(),
            r.duration_s().map(|d| format!("{d:.1}s")).unwrap_or_else(|| "-".into()),
            n(Ran),
            n(Cached),
            n(Failed),
            r.experiment.name
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub fn gc(workspace: &Path, keep_last: usize) -> anyhow::Result<ExitCode> {
    let ws = open(workspace)?;
    let r = distill_engine::gc::gc(&ws, keep_last)?;
    println!(
        "removed {} runs and {} stored outputs, freed {:.1} MB",
        r.runs_removed,
        r.outputs_removed,
        r.bytes_freed as f64 / 1e6
    );
    Ok(ExitCode::SUCCESS)
}

fn locate(ws: &Workspace, reference: &str) -> anyhow::Result<PathBuf> {
    let r = Reference::parse(reference).with_context(|| format!("`{reference}` is not a reference like @stage or @stage/output"))?;
    let state = ws
        .stage_state(&r.stage)?
        .with_context(|| format!("stage `{}` has no stored outputs in {}", r.stage, ws.root.display()))?;
    let (path, _) = resolve_output(&r.stage, &state, r.output.as_deref(), &Hasher::new(None)).map_err(anyhow::Error::msg)?;
    Ok(path)
}

pub fn path(workspace: &Path, reference: &str) -> anyhow::Result<ExitCode> {
    let ws = open(workspace)?;
    println!("{}", locate(&ws, reference)?.display());
    Ok(ExitCode::SUCCESS)
}

pub fn export(workspace: &Path, reference: &str, dir: &Path) -> anyhow::Result<ExitCode> {
    let ws = open(workspace)?;
    let src = locate(&ws, reference)?;
    let dst = if src.is_dir() { dir.to_path_buf() } else { dir.join(src.file_name().unwrap_or_default()) };
    copy_tree(&src, &dst).with_context(|| format!("copying {} to {}", src.display(), dst.display()))?;
    println!("{}", dst.display());
    Ok(ExitCode::SUCCESS)
}
