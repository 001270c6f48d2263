//! The Slurm executor: a stage becomes an `sbatch` job running `distill exec-stage` on a
//! node (the workspace on a shared file system); the engine follows it with `squeue` and
//! `scontrol`, cancels it with `scancel`, and stores and records its outputs as locally.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::detached::{JobFile, JobResult};
use crate::stage::StageError;

/// Submits the job, waits for it and returns what the stage produced.
pub fn run(job: &JobFile, job_path: &Path, cancel: &AtomicBool) -> Result<JobResult, StageError> {
    let exe = match std::env::var_os("DISTILL_SLURM_EXE") {
        Some(p) => PathBuf::from(p),
        None => std::env::current_exe().map_err(|e| StageError::io("distill executable", e))?,
    };
    let spec = &job.spec;
    let mut sbatch = Command::new("sbatch");
    sbatch
        .arg("--parsable")
        .arg(format!("--job-name=distill:{}", spec.name))
        .arg(format!("--output={}", job.log.display()))
        .arg("--open-mode=append")
        .arg(format!("--cpus-per-task={}", spec.threads.max(1)))
        .arg(format!("--chdir={}", spec.manifest_dir.display()));
    if spec.gpus > 0 {
        sbatch.arg(format!("--gres=gpu:{}", spec.gpus));
    }
    for (k, v) in &spec.executor.options {
        sbatch.arg(format!("--{k}={v}"));
    }
    let wrap = format!("exec {} exec-stage {}", shell_quote(&exe.to_string_lossy()), shell_quote(&job_path.to_string_lossy()));
    sbatch.arg("--wrap").arg(wrap);
    let out = sbatch.output().map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => {
            StageError::Failed("executor `slurm`: no `sbatch` on the PATH (is this a Slurm login node?)".into())
        }
        _ => StageError::io("sbatch", e),
    })?;
    if !out.status.success() {
        return Err(StageError::Failed(format!(
            "Slurm rejected the job: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let id = String::from_utf8_lossy(&out.stdout).trim().split(';').next().unwrap_or_default().to_string();
    tracing::info!("stage {} is Slurm job {id}", spec.name);
    let mut pause = Duration::from_millis(100);
    let state = loop {
        if cancel.load(Ordering::Relaxed) {
            let _ = Command::new("scancel").arg(&id).status();
            return Err(StageError::Interrupted);
        }
        if let Some(done) = finished_state(&id) {
            break done;
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_secs(2));
    };
    let result: Option<JobResult> = std::fs::read(&job.result).ok().and_then(|b| serde_json::from_slice(&b).ok());
    match (state.state.as_str(), result) {
        ("COMPLETED", Some(r)) if r.error.is_none() => Ok(r),
        (_, Some(JobResult { error: Some(e), .. })) => Err(StageError::Failed(format!("Slurm job {id}: {e}"))),
        ("TIMEOUT", _) => Err(StageError::Failed(format!(
            "Slurm job {id} hit its time limit ({}) and was killed",
            state.time_limit.unwrap_or_else(|| "?".into())
        ))),
        ("OUT_OF_MEMORY", _) => Err(StageError::Failed(format!("Slurm job {id} ran out of memory (raise resources.mem)"))),
        (s, _) => Err(StageError::Failed(format!(
            "Slurm job {id} ended {s} (reason: {}, exit code {})",
            state.reason.unwrap_or_else(|| "none given".into()),
            state.exit_code.unwrap_or_else(|| "?".into())
        ))),
    }
}

struct JobState {
    state: String,
    reason: Option<String>,
    exit_code: Option<String>,
    time_limit: Option<String>,
}

/// The job's final state, or `None` while it is pending or running.
fn finished_state(id: &str) -> Option<JobState> {
    let out = Command::new("scontrol").args(["show", "job", "-o", id]).output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() || text.trim().is_empty() {
        return from_sacct(id);
    }
    let field = |name: &str| {
        text.split_whitespace()
            .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
            .map(str::to_string)
    };
    let state = field("JobState")?;
    let running = ["PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "SUSPENDED", "REQUEUED", "RESIZING"];
    if running.contains(&state.as_str()) {
        return None;
    }
    Some(JobState {
        state,
        reason: field("Reason").filter(|r| r != "None"),
        exit_code: field("ExitCode"),
        time_limit: field("TimeLimit"),
    })
}

/// For clusters that purge finished jobs from the controller quickly.
fn from_sacct(id: &str) -> Option<JobState> {
    let out = Command::new("sacct").args(["-n", "-P", "-X", "-o", "State,ExitCode,Timelimit", "-j", id]).output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut parts = text.lines().next()?.split('|');
    let state = parts.next()?.split_whitespace().next()?.to_string();
    if state.is_empty() || state == "PENDING" || state == "RUNNING" {
        return None;
    }
    Some(JobState {
        state,
        reason: None,
        exit_code: parts.next().map(str::to_string),
        time_limit: parts.next().map(str::to_string),
    })
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}
