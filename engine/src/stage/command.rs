//! The generic `command` kind: a shell command with declared deps and outs, as in DVC.
//!
//! Outs are workspace paths. After the command exits 0 each out is copied into the stage's
//! output folder under its relative path, so `@stage/data.jsonl` names it in the store and a
//! cache hit can put a deleted out back.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use super::base::{ParamError, Stage, StageError, StageSpec};
use super::context::StageContext;
use crate::fsutil::copy_tree;

pub struct CommandStage;

impl Stage for CommandStage {
    fn kind(&self) -> &'static str {
        "command"
    }

    fn version(&self) -> u32 {
        1
    }

    fn summary(&self) -> &'static str {
        "runs a shell command (`cmd`) that reads `deps` and must produce `outs`"
    }

    fn validate(&self, spec: &StageSpec) -> Result<(), ParamError> {
        match &spec.cmd {
            None => return Err(ParamError::new("cmd", "a command stage needs `cmd`")),
            Some(c) if c.trim().is_empty() => return Err(ParamError::new("cmd", "`cmd` is empty")),
            _ => {}
        }
        for (i, out) in spec.outs.iter().enumerate() {
            let p = Path::new(out);
            if p.is_absolute() || p.components().any(|c| c.as_os_str() == "..") {
                return Err(ParamError::new(
                    format!("outs[{i}]"),
                    "outs must be relative paths inside the manifest's folder",
                ));
            }
            if out.starts_with('@') {
                return Err(ParamError::new(format!("outs[{i}]"), "outs are paths, not references"));
            }
        }
        Ok(())
    }

    fn external_inputs(&self, spec: &StageSpec) -> Vec<String> {
        spec.deps.iter().filter(|d| !d.starts_with('@')).cloned().collect()
    }

    fn run(&self, ctx: &mut StageContext) -> Result<(), StageError> {
        let spec = ctx.spec;
        let cmd = spec.cmd.as_deref().unwrap_or_default();
        let workdir = match &spec.workdir {
            Some(w) => spec.manifest_dir.join(w),
            None => spec.manifest_dir.clone(),
        };
        // Stale outs would hide a command that forgot to write them.
        for out in &spec.outs {
            remove_path(&spec.manifest_dir.join(out));
        }
        let metrics_path = ctx.out_dir().with_extension("metrics.jsonl");
        let log = ctx.log_file().map_err(|e| StageError::io(ctx.log_path(), e))?;
        let log_err = log.try_clone().map_err(|e| StageError::io(ctx.log_path(), e))?;
        let mut command = Command::new("sh");
        command
            .arg("-c")
            .arg(cmd)
            .current_dir(&workdir)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .env("DISTILL_STAGE", &spec.name)
            .env("DISTILL_METRICS", &metrics_path)
            .env("DISTILL_SEED", spec.seed.to_string())
            .env("DISTILL_THREADS", spec.threads.to_string())
            .envs(&spec.env);
        for (i, (reference, path)) in ctx.inputs().iter().enumerate() {
            command.env(format!("DISTILL_INPUT_{i}"), path);
            if let Some(n) = ctx_env_name(reference) {
                command.env(n, path);
            }
        }
        // The command dies with us, even on `kill -9`, so it never writes outs after we are gone.
        // SAFETY: prctl in the forked child before exec touches no shared state.
        unsafe {
            use std::os::unix::process::CommandExt;
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        ctx.log(format!("$ {cmd}"));
        let mut child = command.spawn().map_err(|e| StageError::io(&workdir, e))?;
        // Short commands are the common case in a DAG: poll fast first, then back off.
        let mut pause = Duration::from_micros(50);
        let status = loop {
            if let Some(status) = child.try_wait().map_err(|e| StageError::io(&workdir, e))? {
                break status;
            }
            if ctx.cancelled() {
                let _ = child.kill();
                let _ = child.wait();
                return Err(StageError::Interrupted);
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(20));
        };
        if !status.success() {
            return Err(StageError::Exit(describe_status(status)));
        }
        read_metrics(ctx, &metrics_path)?;
        for out in &spec.outs {
            let src = spec.manifest_dir.join(out);
            if !src.exists() {
                return Err(StageError::MissingOutput(out.clone()));
            }
            let dst = ctx.out_dir().join(out);
            copy_tree(&src, &dst).map_err(|e| StageError::io(&src, e))?;
        }
        Ok(())
    }

    fn restore(&self, spec: &StageSpec, stored: &Path, hasher: &crate::hash::Hasher) -> Result<Vec<PathBuf>, StageError> {
        let mut restored = Vec::new();
        for out in &spec.outs {
            let dst = spec.manifest_dir.join(out);
            let src = stored.join(out);
            let same = dst.exists()
                && matches!((hasher.hash_path(&src), hasher.hash_path(&dst)), (Ok(a), Ok(b)) if a == b);
            if same {
                continue;
            }
            remove_path(&dst);
            copy_tree(&src, &dst).map_err(|e| StageError::io(&dst, e))?;
            restored.push(dst);
        }
        Ok(restored)
    }
}

/// `@prepare/data.jsonl` -> `DISTILL_IN_PREPARE_DATA_JSONL`, for scripts.
fn ctx_env_name(reference: &str) -> Option<String> {
    let body: String = reference
        .trim_start_matches('@')
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_uppercase() } else { '_' })
        .collect();
    (!body.is_empty()).then(|| format!("DISTILL_IN_{body}"))
}

fn describe_status(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(c), _) => format!("status {c}"),
        (None, Some(s)) => format!("signal {s}"),
        _ => "an unknown status".to_string(),
    }
}

/// Lines of `{"name", "value"}` (final) or `{"step", "name", "value"}` the command wrote to
/// `$DISTILL_METRICS`.
fn read_metrics(ctx: &mut StageContext, path: &Path) -> Result<(), StageError> {
    let Ok(text) = std::fs::read_to_string(path) else { return Ok(()) };
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let v: serde_json::Value = serde_json::from_str(line).map_err(|e| {
            StageError::Failed(format!("$DISTILL_METRICS line {}: {e}", i + 1))
        })?;
        let name = v.get("name").and_then(|n| n.as_str());
        let value = v.get("value").and_then(|n| n.as_f64());
        let (Some(name), Some(value)) = (name, value) else {
            return Err(StageError::Failed(format!(
                "$DISTILL_METRICS line {}: expected {{\"name\", \"value\"}}",
                i + 1
            )));
        };
        match v.get("step").and_then(|s| s.as_u64()) {
            Some(step) => ctx.step_metric(step, name, value)?,
            None => ctx.metric(name, value)?,
        }
    }
    let _ = std::fs::remove_file(path);
    Ok(())
}

fn remove_path(p: &Path) {
    if p.is_dir() {
        let _ = std::fs::remove_dir_all(p);
    } else {
        let _ = std::fs::remove_file(p);
    }
}
