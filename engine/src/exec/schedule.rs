//! The scheduler: launches ready stages on threads within `--jobs`, threads and GPUs, and
//! keeps the run record current as stages finish.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, mpsc};

use chrono::Utc;

use crate::hash::Hasher;
use crate::plan::Plan;
use crate::record::{ExperimentInfo, RunRecord, RunStatus, StageRun, StageStatus};
use crate::stage::Registry;
use crate::workspace::{StageState, Workspace};

use super::progress::Progress;
use super::worker::{Done, Job};
use super::{RunOptions, Selection};

/// Slurm jobs in flight at once: the cluster's scheduler does the real queuing.
const SLURM_JOBS: usize = 256;

enum Msg {
    Started(usize),
    Done(Box<Done>),
}

/// Runs the selected stages; returns the final record (also saved in the workspace).
pub fn run(
    plan: &Plan,
    registry: &Registry,
    ws: &Workspace,
    sel: &Selection,
    opts: &RunOptions,
    cancel: Arc<AtomicBool>,
    progress: &Progress,
) -> RunRecord {
    let run_id = new_run_id();
    let mut record = new_record(plan, &run_id, opts);
    let _ = ws.save_run(&record);
    let hasher = Hasher::new(ws.file_hashes().ok());
    let batcher = super::slurm::Batcher::default();
    let job = Job { plan, registry, ws, hasher: &hasher, run_id: &run_id, cancel: cancel.clone(), slurm: &batcher };
    // States of finished stages, this run's and the unselected upstream's.
    let states: Mutex<BTreeMap<String, StageState>> = Mutex::new(BTreeMap::new());
    for (i, s) in plan.stages.iter().enumerate() {
        if !sel.selected.contains(&i) {
            if let Ok(Some(st)) = ws.stage_state(&s.spec.name) {
                states.lock().expect("not poisoned").insert(s.spec.name.clone(), st);
            }
        }
    }
    let mut pending: BTreeSet<usize> = sel.selected.clone();
    // Per running stage: threads, GPUs, and which GPUs (indices into this machine's).
    let mut running: BTreeMap<usize, (usize, usize, Vec<usize>)> = BTreeMap::new();
    let mut failed: BTreeSet<usize> = BTreeSet::new();
    let mut stop = false;
    let jobs = opts.jobs.max(1);
    let (tx, rx) = mpsc::channel::<Msg>();
    std::thread::scope(|scope| {
        loop {
            if !stop && !cancel.load(std::sync::atomic::Ordering::Relaxed) {
                let ready: Vec<usize> = pending
                    .iter()
                    .copied()
                    .filter(|&i| plan.stages[i].upstream.iter().all(|u| !pending.contains(u) && !running.contains_key(u)))
                    .collect();
                for i in ready {
                    let blocked = plan.stages[i].upstream.iter().find(|u| failed.contains(u) || skipped(&record, plan, **u));
                    if let Some(&u) = blocked {
                        pending.remove(&i);
                        let why = format!("upstream `{}` did not finish", plan.stages[u].spec.name);
                        set_stage(&mut record, skipped_run(plan, i, why));
                        continue;
                    }
                    let spec = &plan.stages[i].spec;
                    // Slurm jobs use the cluster's resources, not ours: only their count is capped.
                    let (threads, gpus) = if spec.executor.slurm { (0, 0) } else { (spec.threads.min(opts.threads.max(1)), spec.gpus) };
                    let (used_t, used_g) = running.values().fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
                    let fits = running.is_empty()
                        || (running.len() < jobs.max(if spec.executor.slurm { SLURM_JOBS } else { 0 })
                            && used_t + threads <= opts.threads.max(1)
                            && used_g + gpus <= opts.gpus);
                    if !fits {
                        break;
                    }
                    pending.remove(&i);
                    // Two stages that each want a GPU get different ones.
                    let taken: BTreeSet<usize> = running.values().flat_map(|r| r.2.iter().copied()).collect();
                    let gpu_ids: Vec<usize> = (0..opts.gpus).filter(|k| !taken.contains(k)).take(gpus).collect();
                    running.insert(i, (threads, gpus, gpu_ids.clone()));
                    let tx = tx.clone();
                    let job = &job;
                    let states = &states;
                    let forced = sel.forced.contains(&i);
                    scope.spawn(move || {
                        let lookup = |name: &str| states.lock().expect("not poisoned").get(name).cloned();
                        let started = || {
                            let _ = tx.send(Msg::Started(i));
                        };
                        // The stage's own code is guarded where it runs; this guards the engine's
                        // part (deciding, storing): without a `Done` the run would wait forever.
                        let done = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job.execute(i, forced, &gpu_ids, &lookup, &started)))
                            .unwrap_or_else(|p| {
                                let mut run = placeholder(plan, i);
                                run.status = StageStatus::Failed;
                                run.error = Some(format!("panicked: {}", crate::stage::panic_message(&*p)));
                                Done { idx: i, run, state: None }
                            });
                        let _ = tx.send(Msg::Done(Box::new(done)));
                    });
                }
            }
            if running.is_empty() {
                break;
            }
            match rx.recv().expect("workers hold a sender") {
                Msg::Started(i) => progress.started(&plan.stages[i].spec.name),
                Msg::Done(done) => {
                    running.remove(&done.idx);
                    if let Some(st) = &done.state {
                        states.lock().expect("not poisoned").insert(done.run.name.clone(), st.clone());
                    }
                    if done.run.status == StageStatus::Failed {
                        failed.insert(done.idx);
                        stop |= !opts.keep_going;
                    }
                    progress.finished(&done.run);
                    // Cached stages change nothing worth a write; a no-op run saves once.
                    let worth_saving = done.run.status != StageStatus::Cached;
                    set_stage(&mut record, done.run);
                    if worth_saving {
                        let _ = ws.save_run(&record);
                    }
                }
            }
        }
    });
    for i in pending {
        let why = if cancel.load(std::sync::atomic::Ordering::Relaxed) {
            "the run was interrupted".to_string()
        } else {
            "the run stopped at a failure (use --keep-going to finish other branches)".to_string()
        };
        set_stage(&mut record, skipped_run(plan, i, why));
    }
    let _ = std::fs::remove_dir_all(ws.tmp_dir().join(&run_id));
    record.finished_at = Some(Utc::now());
    let ok = record.stages.iter().all(|s| matches!(s.status, StageStatus::Ran | StageStatus::Cached));
    record.status = if ok { RunStatus::Succeeded } else { RunStatus::Failed };
    let _ = ws.save_run(&record);
    record
}

fn skipped(record: &RunRecord, plan: &Plan, i: usize) -> bool {
    record.stage(&plan.stages[i].spec.name).is_some_and(|s| s.status == StageStatus::Skipped)
}

fn set_stage(record: &mut RunRecord, run: StageRun) {
    match record.stages.iter_mut().find(|s| s.name == run.name) {
        Some(slot) => *slot = run,
        None => record.stages.push(run),
    }
}

fn skipped_run(plan: &Plan, i: usize, why: String) -> StageRun {
    let mut r = placeholder(plan, i);
    r.status = StageStatus::Skipped;
    r.reasons = vec![why];
    r
}

/// A stage's record entry before anything happened to it.
pub(super) fn placeholder(plan: &Plan, i: usize) -> StageRun {
    let s = &plan.stages[i];
    let needs = s.upstream.iter().map(|&u| plan.stages[u].spec.name.clone()).collect();
    StageRun::new(&s.spec.name, &s.spec.kind, s.spec.params.clone(), needs)
}

fn new_record(plan: &Plan, id: &str, opts: &RunOptions) -> RunRecord {
    let e = &plan.experiment;
    RunRecord {
        id: id.to_string(),
        experiment: ExperimentInfo {
            name: e.name.clone(),
            description: e.description.clone(),
            seed: e.seed,
            device: e.device.clone(),
            dtype: e.dtype.clone(),
        },
        manifest: plan.manifest.clone(),
        resolved_manifest: plan.resolved_json(),
        command: opts.argv.clone(),
        program_version: crate::VERSION.to_string(),
        host: hostname(),
        pid: Some(std::process::id()),
        started_at: Utc::now(),
        finished_at: None,
        status: RunStatus::Running,
        stages: Vec::new(),
        edges: plan
            .edges()
            .into_iter()
            .map(|(a, b)| (plan.stages[a].spec.name.clone(), plan.stages[b].spec.name.clone()))
            .collect(),
    }
}

fn new_run_id() -> String {
    let now = Utc::now();
    let salt = blake3::hash(format!("{}{}", std::process::id(), now.timestamp_nanos_opt().unwrap_or(0)).as_bytes());
    format!("{}-{}", now.format("%Y%m%d-%H%M%S-%3f"), &salt.to_hex()[..4])
}

pub(crate) fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map(|s| s.trim().to_string()).unwrap_or_default()
}
