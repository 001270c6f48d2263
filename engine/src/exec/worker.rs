//! One stage, start to finish: decide, then run with retries into a temporary folder, move
//! the outputs into the store, and only then record the stage as done.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use chrono::Utc;

use crate::decide::{Decision, decide};
use crate::fsutil::{safe_name, sync_dir, sync_tree};
use crate::hash::Hasher;
use crate::plan::Plan;
use crate::record::{OutputRef, StageRun, StageStatus};

use super::detached::JobFile;
use crate::stage::{Registry, Stage, StageContext, StageError, StageSpec};
use crate::workspace::{StageState, Workspace};

pub struct Job<'a> {
    pub plan: &'a Plan,
    pub registry: &'a Registry,
    pub ws: &'a Workspace,
    pub hasher: &'a Hasher,
    pub run_id: &'a str,
    pub cancel: Arc<AtomicBool>,
    pub slurm: &'a super::slurm::Batcher,
}

/// The finished stage's record entry and, on success, its state.
pub struct Done {
    pub idx: usize,
    pub run: StageRun,
    pub state: Option<StageState>,
}

impl Job<'_> {
    /// Runs stage `idx` on the GPUs `gpu_ids` (indices into this machine's; empty: none chosen).
    pub fn execute(&self, idx: usize, forced: bool, gpu_ids: &[usize], upstream: &dyn Fn(&str) -> Option<StageState>, on_start: &dyn Fn()) -> Done {
        let stage = &self.plan.stages[idx];
        let placed = place_on_gpus(&stage.spec, gpu_ids);
        // The key is decided from the plan's spec: where a stage runs never changes its outputs.
        let spec = placed.as_ref().unwrap_or(&stage.spec);
        let mut run = super::schedule::placeholder(self.plan, idx);
        run.status = StageStatus::Failed;
        run.started_at = Some(Utc::now());
        let t0 = Instant::now();
        let decision = decide(self.plan, idx, self.registry, self.ws, self.hasher, forced, upstream);
        let (key, reasons, inputs) = match decision {
            Ok(Decision::Cached { state, note }) => {
                let kind = self.registry.get(&spec.kind).expect("kind checked");
                if let Err(e) = kind.restore(spec, &state.output.path, self.hasher) {
                    return self.fail(idx, run, format!("restoring outputs: {e}"), t0);
                }
                fill_from_state(&mut run, &state);
                run.status = StageStatus::Cached;
                run.reasons = note.into_iter().collect();
                run.duration_s = Some(t0.elapsed().as_secs_f64());
                return Done { idx, run, state: Some(state) };
            }
            Ok(Decision::Run { key, reasons, inputs }) => (key, reasons, inputs),
            Ok(Decision::Wait { upstream, .. }) => {
                return self.fail(idx, run, format!("upstream {} has no outputs", upstream.join(", ")), t0);
            }
            Err(e) => return self.fail(idx, run, e.to_string(), t0),
        };
        on_start();
        run.reasons = reasons;
        let key_hash = key.hash();
        run.key_hash = Some(key_hash.clone());
        run.key = Some(key.clone());
        let work = self.ws.tmp_dir().join(self.run_id).join(format!("{}-{}", safe_name(&spec.name), &key_hash[..8]));
        let log_dir = self.ws.runs_dir().join(self.run_id).join("logs");
        let log_path = log_dir.join(format!("{}.log", safe_name(&spec.name)));
        run.log = Some(log_path.clone());
        let kind = self.registry.get(&spec.kind).expect("kind checked").clone();
        let mut last_err = String::new();
        for attempt in 0..=spec.retries {
            run.attempts = attempt + 1;
            let _ = std::fs::remove_dir_all(&work);
            let out_dir = work.join("out");
            if let Err(e) = std::fs::create_dir_all(&out_dir).and_then(|_| std::fs::create_dir_all(&log_dir)) {
                return self.fail(idx, run, format!("{}: {e}", work.display()), t0);
            }
            let attempt_result = if spec.executor.slurm {
                self.attempt_slurm(spec, stage.family.as_deref(), &inputs, &work, &out_dir, &log_path)
            } else if spec.executor.process {
                self.attempt_process(spec, &inputs, &work, &out_dir, &log_path)
            } else {
                self.attempt_local(&kind, spec, &inputs, &work, &out_dir, &log_path, attempt)
            };
            match attempt_result {
                Ok((metrics, steps)) => {
                    return match self.store(idx, &key, &key_hash, &out_dir, metrics, steps, &log_path, t0) {
                        Ok(state) => {
                            fill_from_state(&mut run, &state);
                            run.status = StageStatus::Ran;
                            run.duration_s = Some(t0.elapsed().as_secs_f64());
                            let _ = std::fs::remove_dir_all(&work);
                            Done { idx, run, state: Some(state) }
                        }
                        Err(e) => self.fail(idx, run, e, t0),
                    };
                }
                Err(StageError::Interrupted) => {
                    last_err = "interrupted".into();
                    break;
                }
                Err(e) => last_err = e.to_string(),
            }
        }
        let _ = std::fs::remove_dir_all(&work);
        self.fail(idx, run, last_err, t0)
    }

    /// One try in this process.
    #[allow(clippy::too_many_arguments)]
    fn attempt_local(
        &self,
        kind: &Arc<dyn Stage>,
        spec: &StageSpec,
        inputs: &BTreeMap<String, PathBuf>,
        work: &Path,
        out_dir: &Path,
        log_path: &Path,
        attempt: u32,
    ) -> Result<(BTreeMap<String, f64>, Option<PathBuf>), StageError> {
        let mut ctx = StageContext::new(
            spec,
            self.run_id.to_string(),
            inputs.clone(),
            out_dir.to_path_buf(),
            log_path.to_path_buf(),
            work.join("steps.jsonl"),
            self.ws.dir.clone(),
            self.cancel.clone(),
        )
        .map_err(|e| StageError::io(log_path, e))?;
        if attempt > 0 {
            ctx.log(format!("--- attempt {} of {} ---", attempt + 1, spec.retries + 1));
        }
        match StageError::unless_panicked(|| kind.run(&mut ctx)) {
            Ok(()) => Ok(ctx.finish()),
            Err(e) => {
                if !matches!(e, StageError::Interrupted) {
                    ctx.log(format!("error: {e}"));
                }
                Err(e)
            }
        }
    }

    /// One try in a process of its own (`distill exec-stage JOB`, as a Slurm job runs it, on
    /// this machine): cancelling kills it, and a process that dies without writing its result
    /// (a crash, the kernel's out-of-memory killer) fails the stage with the end of its stderr.
    fn attempt_process(
        &self,
        spec: &StageSpec,
        inputs: &BTreeMap<String, PathBuf>,
        work: &Path,
        out_dir: &Path,
        log_path: &Path,
    ) -> Result<(BTreeMap<String, f64>, Option<PathBuf>), StageError> {
        let (job, path) = self.write_job(spec, inputs, work, out_dir, log_path)?;
        let exe = super::detached::distill_exe("DISTILL_EXE")?;
        let stderr_path = work.join("stderr.txt");
        let stderr = std::fs::File::create(&stderr_path).map_err(|e| StageError::io(&stderr_path, e))?;
        let mut child = std::process::Command::new(&exe)
            .arg("exec-stage")
            .arg(&path)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(stderr)
            .spawn()
            .map_err(|e| StageError::io(&exe, e))?;
        let status = loop {
            if self.cancel.load(std::sync::atomic::Ordering::Relaxed) {
                let _ = child.kill();
                let _ = child.wait();
                return Err(StageError::Interrupted);
            }
            match child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) => std::thread::sleep(std::time::Duration::from_millis(50)),
                Err(e) => return Err(StageError::io(&exe, e)),
            }
        };
        match super::detached::JobResult::read(&job) {
            Some(r) => match r.error {
                Some(e) => Err(StageError::Failed(e)),
                None => Ok((r.metrics, r.steps)),
            },
            None => Err(StageError::Failed(format!("the stage's process exited ({status}) without a result; its stderr ends:\n{}", tail(&stderr_path, 20).join("\n")))),
        }
    }

    /// The job file another process runs this stage from, written to `work/job.json`.
    fn write_job(&self, spec: &StageSpec, inputs: &BTreeMap<String, PathBuf>, work: &Path, out_dir: &Path, log_path: &Path) -> Result<(JobFile, PathBuf), StageError> {
        let job = JobFile {
            spec: spec.clone(),
            run_id: self.run_id.to_string(),
            inputs: inputs.clone(),
            out_dir: out_dir.to_path_buf(),
            log: log_path.to_path_buf(),
            steps: work.join("steps.jsonl"),
            workspace: self.ws.dir.clone(),
            result: work.join("result.json"),
        };
        let path = work.join("job.json");
        job.write(&path).map_err(|e| StageError::io(&path, e))?;
        Ok((job, path))
    }

    /// One try as a Slurm job.
    fn attempt_slurm(
        &self,
        spec: &StageSpec,
        family: Option<&str>,
        inputs: &BTreeMap<String, PathBuf>,
        work: &Path,
        out_dir: &Path,
        log_path: &Path,
    ) -> Result<(BTreeMap<String, f64>, Option<PathBuf>), StageError> {
        let (job, path) = self.write_job(spec, inputs, work, out_dir, log_path)?;
        let r = super::slurm::run(self.slurm, family, &job, &path, &self.cancel)?;
        Ok((r.metrics, r.steps))
    }

    fn fail(&self, idx: usize, mut run: StageRun, error: String, t0: Instant) -> Done {
        run.status = StageStatus::Failed;
        run.error = Some(error);
        run.duration_s = Some(t0.elapsed().as_secs_f64());
        if let Some(log) = &run.log {
            run.log_tail = tail(log, 40);
        }
        Done { idx, run, state: None }
    }

    /// Moves outputs into the store, then records the stage: a crash before the record
    /// leaves an unreferenced folder that `gc` removes, never a half-recorded stage.
    #[allow(clippy::too_many_arguments)]
    fn store(
        &self,
        idx: usize,
        key: &crate::key::CacheKey,
        key_hash: &str,
        out_dir: &std::path::Path,
        metrics: BTreeMap<String, f64>,
        steps: Option<PathBuf>,
        log: &std::path::Path,
        t0: Instant,
    ) -> Result<StageState, String> {
        let spec = &self.plan.stages[idx].spec;
        let hasher = Hasher::new(None);
        let (hash, bytes) = hasher.hash_path(out_dir).map_err(|e| e.to_string())?;
        let dest = self.ws.store_dir().join(&hash);
        if dest.exists() {
            let _ = std::fs::remove_dir_all(out_dir);
        } else {
            sync_tree(out_dir).map_err(|e| format!("syncing {}: {e}", out_dir.display()))?;
            std::fs::rename(out_dir, &dest).map_err(|e| format!("storing {}: {e}", dest.display()))?;
            sync_dir(&self.ws.store_dir()).map_err(|e| e.to_string())?;
        }
        let step_metrics = match steps {
            Some(p) => {
                let target = self.ws.steps_dir().join(format!("{key_hash}.jsonl"));
                std::fs::create_dir_all(self.ws.steps_dir()).map_err(|e| e.to_string())?;
                std::fs::rename(&p, &target).map_err(|e| format!("{}: {e}", target.display()))?;
                Some(target)
            }
            None => None,
        };
        let state = StageState {
            key_hash: key_hash.to_string(),
            key: key.clone(),
            output: OutputRef { hash, path: dest, bytes },
            main_output: (spec.outs.len() == 1).then(|| spec.outs[0].clone()),
            metrics,
            step_metrics,
            log: Some(log.to_path_buf()),
            run_id: self.run_id.to_string(),
            finished_at: Utc::now(),
            duration_s: t0.elapsed().as_secs_f64(),
        };
        self.ws.record_stage(&spec.name, &state).map_err(|e| e.to_string())?;
        Ok(state)
    }
}

fn fill_from_state(run: &mut StageRun, state: &StageState) {
    run.key_hash = Some(state.key_hash.clone());
    run.key = Some(state.key.clone());
    run.outputs = BTreeMap::from([("main".to_string(), state.output.clone())]);
    run.metrics = state.metrics.clone();
    run.step_metrics = state.step_metrics.clone();
    if run.log.is_none() {
        run.log = state.log.clone();
    }
}

fn tail(path: &std::path::Path, n: usize) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].iter().map(|s| s.to_string()).collect()
}

/// The spec a stage runs with on the GPUs the scheduler gave it: `device = "cuda"` becomes
/// `cuda:N` (its first GPU) for stages in this process; a command sees only its GPUs through
/// `CUDA_VISIBLE_DEVICES`. An explicit `cuda:N`, a CPU stage or a Slurm job is left as it is.
fn place_on_gpus(spec: &StageSpec, gpu_ids: &[usize]) -> Option<StageSpec> {
    if gpu_ids.is_empty() || spec.executor.slurm {
        return None;
    }
    let mut placed = spec.clone();
    if placed.device == "cuda" {
        placed.device = format!("cuda:{}", gpu_ids[0]);
    }
    let ids: Vec<String> = gpu_ids.iter().map(ToString::to_string).collect();
    placed.env.entry("CUDA_VISIBLE_DEVICES".into()).or_insert_with(|| ids.join(","));
    Some(placed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_in_a_stage_is_its_failure_with_the_message() {
        let e = StageError::unless_panicked::<()>(|| panic!("slice index starts at {} but ends at {}", 1, 0)).unwrap_err();
        assert_eq!(e.to_string(), "panicked: slice index starts at 1 but ends at 0");
        let e = StageError::unless_panicked::<()>(|| panic!("a plain message")).unwrap_err();
        assert_eq!(e.to_string(), "panicked: a plain message");
        assert_eq!(StageError::unless_panicked(|| Ok(3)).unwrap(), 3);
    }

    #[test]
    fn a_stage_on_its_gpus_names_the_first_one_and_sees_only_them() {
        let spec = |device: &str| StageSpec { name: "s".into(), kind: "distill".into(), device: device.into(), ..StageSpec::default() };
        let placed = place_on_gpus(&spec("cuda"), &[1, 2]).unwrap();
        assert_eq!((placed.device.as_str(), placed.env["CUDA_VISIBLE_DEVICES"].as_str()), ("cuda:1", "1,2"));
        assert_eq!(place_on_gpus(&spec("cuda:0"), &[1]).unwrap().device, "cuda:0", "an explicit device stays");
        assert_eq!(place_on_gpus(&spec("cpu"), &[0]).unwrap().device, "cpu");
        assert!(place_on_gpus(&spec("cuda"), &[]).is_none());
    }
}
