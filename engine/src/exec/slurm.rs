//! The Slurm executor: a stage becomes an `sbatch` job running `distill exec-stage` on a
//! node (the workspace on a shared file system); the engine follows it with `squeue` and
//! `scontrol`, cancels it with `scancel`, and stores and records its outputs as locally.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, mpsc};
use std::time::Duration;

use super::detached::{JobFile, JobResult};
use crate::stage::StageError;

/// How long the first ready member of a family waits for its siblings before the family is
/// submitted as one job array.
const ARRAY_WINDOW: Duration = Duration::from_millis(300);

/// A submitted job to follow, and where its own output goes when that is not the stage log.
type Submitted = (String, Option<PathBuf>);
type Waiter = mpsc::Sender<Result<Submitted, String>>;

/// Groups ready members of one family into a job array; other stages go alone.
#[derive(Default)]
pub struct Batcher {
    groups: Mutex<HashMap<String, Vec<(PathBuf, Waiter)>>>,
    arrays: std::sync::atomic::AtomicUsize,
}

impl Batcher {
    /// Submits `job` (alone, or with its family's other ready members) and returns the Slurm
    /// job id to follow (`123` or `123_4` for an array task).
    fn submit(&self, group: Option<&str>, job: &JobFile, job_path: &Path) -> Result<Submitted, StageError> {
        let Some(group) = group else {
            let wrap = format!("exec {} exec-stage {}", exe()?, shell_quote(&job_path.to_string_lossy()));
            return Ok((sbatch(job, &format!("distill:{}", job.spec.name), &job.log, None, &wrap)?, None));
        };
        let key = format!("{group}|{:?}|{}|{}", job.spec.executor.options, job.spec.threads, job.spec.gpus);
        let (tx, rx) = mpsc::channel();
        let first = {
            let mut groups = self.groups.lock().expect("not poisoned");
            let members = groups.entry(key.clone()).or_default();
            members.push((job_path.to_path_buf(), tx));
            members.len() == 1
        };
        if first {
            std::thread::sleep(ARRAY_WINDOW);
            let members = self.groups.lock().expect("not poisoned").remove(&key).unwrap_or_default();
            let n = self.arrays.fetch_add(1, Ordering::Relaxed);
            let dir = job_path.parent().and_then(Path::parent).unwrap_or(Path::new(".")).join(format!("array-{n}"));
            let submitted = submit_array(job, group, &dir, &members);
            for (i, (_, waiter)) in members.into_iter().enumerate() {
                let task = submitted
                    .as_ref()
                    .map(|id| (format!("{id}_{i}"), Some(dir.join(format!("task-{i}.out")))))
                    .map_err(|e| e.to_string());
                let _ = waiter.send(task);
            }
        }
        rx.recv()
            .map_err(|_| StageError::Failed("the job array was never submitted".into()))?
            .map_err(StageError::Failed)
    }
}

fn submit_array(job: &JobFile, group: &str, dir: &Path, members: &[(PathBuf, Waiter)]) -> Result<String, StageError> {
    std::fs::create_dir_all(dir).map_err(|e| StageError::io(dir, e))?;
    let list = dir.join("jobs.list");
    let lines: Vec<String> = members.iter().map(|(p, _)| p.to_string_lossy().into_owned()).collect();
    std::fs::write(&list, lines.join("\n")).map_err(|e| StageError::io(&list, e))?;
    let wrap = format!(
        "exec {} exec-stage --list {} --index \"$SLURM_ARRAY_TASK_ID\"",
        exe()?,
        shell_quote(&list.to_string_lossy())
    );
    let array = format!("0-{}", members.len() - 1);
    sbatch(job, &format!("distill:{group}[]"), &dir.join("task-%a.out"), Some(&array), &wrap)
}

fn exe() -> Result<String, StageError> {
    Ok(shell_quote(&super::detached::distill_exe("DISTILL_SLURM_EXE")?.to_string_lossy()))
}

fn sbatch(job: &JobFile, name: &str, output: &Path, array: Option<&str>, wrap: &str) -> Result<String, StageError> {
    let spec = &job.spec;
    let mut sbatch = Command::new("sbatch");
    sbatch
        .arg("--parsable")
        .arg(format!("--job-name={name}"))
        .arg(format!("--output={}", output.display()))
        .arg("--open-mode=append")
        .arg(format!("--cpus-per-task={}", spec.threads.max(1)))
        .arg(format!("--chdir={}", spec.manifest_dir.display()));
    if let Some(a) = array {
        sbatch.arg(format!("--array={a}"));
    }
    if spec.gpus > 0 {
        sbatch.arg(format!("--gres=gpu:{}", spec.gpus));
    }
    for (k, v) in &spec.executor.options {
        sbatch.arg(format!("--{k}={v}"));
    }
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
    Ok(String::from_utf8_lossy(&out.stdout).trim().split(';').next().unwrap_or_default().to_string())
}

/// Submits the job (as part of its family's array when `group` is set), waits for it and
/// returns what the stage produced.
pub fn run(
    batcher: &Batcher,
    group: Option<&str>,
    job: &JobFile,
    job_path: &Path,
    cancel: &AtomicBool,
) -> Result<JobResult, StageError> {
    let (id, own_output) = batcher.submit(group, job, job_path)?;
    tracing::info!("stage {} is Slurm job {id}", job.spec.name);
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
    if let Some(out) = own_output {
        append_output(job, &out);
    }
    match (state.state.as_str(), JobResult::read(job)) {
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

/// An array task's own output (distill's messages on the node) joins the stage's log.
fn append_output(job: &JobFile, out: &Path) {
    use std::io::Write;
    let Ok(text) = std::fs::read(out) else { return };
    if let Ok(mut log) = std::fs::OpenOptions::new().append(true).create(true).open(&job.log) {
        let _ = log.write_all(&text);
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
