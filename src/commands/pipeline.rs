//! `run`, `status` and `explain`.

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context;
use distill_engine::decide::{Decision, decide};
use distill_engine::exec::{self, Progress, RunOptions};
use distill_engine::hash::Hasher;
use distill_engine::manifest;
use distill_engine::plan::Plan;
use distill_engine::record::{RunStatus, StageStatus};
use distill_engine::workspace::Workspace;
use serde_json::json;

use super::registry;
use crate::cli::{ManifestArgs, RunArgs};

pub fn load_plan(args: &ManifestArgs) -> anyhow::Result<Plan> {
    if !args.manifest.exists() {
        anyhow::bail!(
            "no manifest at {} (pass one: `distill run path/to/manifest.toml`)",
            args.manifest.display()
        );
    }
    Ok(manifest::build(&args.manifest, &args.set, &registry())?)
}

fn command_line() -> String {
    std::env::args().collect::<Vec<_>>().join(" ")
}

pub fn run(mut args: RunArgs) -> anyhow::Result<ExitCode> {
    if let Some(e) = &args.executor {
        args.manifest.set.insert(0, format!("experiment.executor={e}"));
    }
    let plan = load_plan(&args.manifest)?;
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let opts = RunOptions {
        jobs: args.jobs.unwrap_or(cores),
        only: args.only,
        until: args.until,
        downstream: args.downstream,
        force: args.force,
        force_all: args.force_all,
        keep_going: args.keep_going,
        argv: std::env::args().collect(),
        gpus: gpus_here(),
        threads: cores,
    };
    let sel = exec::select(&plan, &opts)?;
    let ws = Workspace::open(&plan.root, args.wait, &command_line())?;
    if let Some(h) = &ws.took_over {
        tracing::warn!("took over the lock of `{}` (pid {}), which died without releasing it", h.command, h.pid);
    }
    if args.dry_run {
        return print_assessment(&plan, &ws, &sel, args.json);
    }
    let cancel = Arc::new(AtomicBool::new(false));
    let handler_flag = cancel.clone();
    let _ = ctrlc::set_handler(move || {
        if handler_flag.swap(true, Ordering::SeqCst) {
            std::process::exit(130);
        }
        eprintln!("interrupt: stopping running stages (press again to quit at once)");
    });
    let progress = Progress::new(args.json);
    let record = exec::run(&plan, &registry(), &ws, &sel, &opts, cancel, &progress);
    let count = |st: StageStatus| record.stages.iter().filter(|s| s.status == st).count();
    if args.json {
        let stages: Vec<_> = record
            .stages
            .iter()
            .map(|s| json!({ "name": s.name, "status": s.status.as_str(), "reasons": s.reasons, "duration_s": s.duration_s, "error": s.error }))
            .collect();
        let status = if record.status == RunStatus::Succeeded { "succeeded" } else { "failed" };
        println!("{}", json!({ "run": record.id, "status": status, "stages": stages }));
    } else {
        println!(
            "run {}: {} ran, {} cached, {} failed, {} skipped ({:.2}s)",
            record.id,
            count(StageStatus::Ran),
            count(StageStatus::Cached),
            count(StageStatus::Failed),
            count(StageStatus::Skipped),
            record.duration_s().unwrap_or(0.0)
        );
    }
    Ok(if record.status == RunStatus::Succeeded { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// GPUs visible here: `DISTILL_GPUS`, else the NVIDIA device nodes.
fn gpus_here() -> usize {
    if let Some(n) = std::env::var("DISTILL_GPUS").ok().and_then(|v| v.parse().ok()) {
        return n;
    }
    std::fs::read_dir("/dev")
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter(|e| {
                    let n = e.file_name().to_string_lossy().into_owned();
                    n.strip_prefix("nvidia").is_some_and(|r| !r.is_empty() && r.chars().all(|c| c.is_ascii_digit()))
                })
                .count()
        })
        .unwrap_or(0)
}

pub fn status(args: &ManifestArgs, json_out: bool) -> anyhow::Result<ExitCode> {
    let plan = load_plan(args)?;
    let sel = exec::select(&plan, &RunOptions::default())?;
    let ws = Workspace::open(&plan.root, false, &command_line())?;
    print_assessment(&plan, &ws, &sel, json_out)
}

fn print_assessment(plan: &Plan, ws: &Workspace, sel: &exec::Selection, json_out: bool) -> anyhow::Result<ExitCode> {
    let a = exec::assess(plan, &registry(), ws, sel);
    if json_out {
        let stages: Vec<_> = a.iter().map(|s| json!({ "name": s.name, "status": s.status.as_str(), "reasons": s.reasons })).collect();
        println!("{}", json!({ "stages": stages }));
        return Ok(ExitCode::SUCCESS);
    }
    let width = a.iter().map(|s| s.name.len()).max().unwrap_or(0);
    for s in &a {
        let label = match s.status {
            StageStatus::Cached => "cached",
            StageStatus::WillRun => "will run",
            StageStatus::MayRun => "may run",
            other => other.as_str(),
        };
        println!("{:<width$}  {:<8}  {}", s.name, label, s.reasons.join("; "));
    }
    let will = a.iter().filter(|s| s.status == StageStatus::WillRun).count();
    let may = a.iter().filter(|s| s.status == StageStatus::MayRun).count();
    println!("{} stages: {} cached, {will} will run, {may} may run", a.len(), a.len() - will - may);
    Ok(ExitCode::SUCCESS)
}

pub fn explain(args: &ManifestArgs, stage: &str) -> anyhow::Result<ExitCode> {
    let plan = load_plan(args)?;
    let targets = plan
        .resolve_name(stage)
        .with_context(|| format!("no stage or family named `{stage}` in {}", args.manifest.display()))?;
    let ws = Workspace::open(&plan.root, false, &command_line())?;
    let hasher = Hasher::new(ws.file_hashes().ok());
    let lookup = |name: &str| ws.stage_state(name).ok().flatten();
    for i in targets {
        let name = &plan.stages[i].spec.name;
        let previous = ws.stage_state(name)?;
        match decide(&plan, i, &registry(), &ws, &hasher, false, &lookup)? {
            Decision::Cached { state, note } => {
                println!("{name}: cached (key {}.., ran in run {} at {})", &state.key_hash[..12], state.run_id, state.finished_at.format("%Y-%m-%d %H:%M:%S"));
                if let Some(n) = note {
                    println!("  {n}");
                }
            }
            Decision::Run { reasons, .. } | Decision::Wait { reasons, .. } => {
                match &previous {
                    Some(p) => println!("{name}: will run; changed since run {}:", p.run_id),
                    None => println!("{name}: will run"),
                }
                for r in reasons {
                    println!("  {r}");
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
