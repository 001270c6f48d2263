//! What a running stage sees: its spec, its inputs, a folder for its outputs, a log and
//! a metrics sink.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use super::base::{StageError, StageSpec};
use crate::record::StepMetric;

pub struct StageContext<'a> {
    pub spec: &'a StageSpec,
    pub run_id: String,
    /// `@stage` / `@stage/output` -> stored path.
    inputs: BTreeMap<String, PathBuf>,
    out_dir: PathBuf,
    log: File,
    log_path: PathBuf,
    steps: Option<File>,
    steps_path: PathBuf,
    metrics: BTreeMap<String, f64>,
    workspace: PathBuf,
    cancel: Arc<AtomicBool>,
}

impl<'a> StageContext<'a> {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        spec: &'a StageSpec,
        run_id: String,
        inputs: BTreeMap<String, PathBuf>,
        out_dir: PathBuf,
        log_path: PathBuf,
        steps_path: PathBuf,
        workspace: PathBuf,
        cancel: Arc<AtomicBool>,
    ) -> std::io::Result<Self> {
        let log = File::options().create(true).append(true).open(&log_path)?;
        Ok(Self {
            spec,
            run_id,
            inputs,
            out_dir,
            log,
            log_path,
            steps: None,
            steps_path,
            metrics: BTreeMap::new(),
            workspace,
            cancel,
        })
    }

    /// The stored path of an input reference as written in params (`@teacher`, `@corpus/train`).
    pub fn input(&self, reference: &str) -> Result<&Path, StageError> {
        self.inputs
            .get(reference)
            .map(PathBuf::as_path)
            .ok_or_else(|| StageError::MissingInput(reference.to_string()))
    }

    pub fn inputs(&self) -> &BTreeMap<String, PathBuf> {
        &self.inputs
    }

    /// Where outputs go. The folder is the stage's main output; its entries are named outputs
    /// (`train.jsonl` is `@stage/train`).
    pub fn out_dir(&self) -> &Path {
        &self.out_dir
    }

    /// A path relative to the manifest folder.
    pub fn resolve(&self, rel: &str) -> PathBuf {
        self.spec.manifest_dir.join(rel)
    }

    /// Appends a line to the stage's log.
    pub fn log(&mut self, line: impl AsRef<str>) {
        let _ = writeln!(self.log, "{}", line.as_ref());
    }

    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// A handle subprocesses can write stdout and stderr into.
    pub fn log_file(&self) -> std::io::Result<File> {
        self.log.try_clone()
    }

    /// A final metric (perplexity, speedup...). Non-finite values are refused.
    pub fn metric(&mut self, name: &str, value: f64) -> Result<(), StageError> {
        if !value.is_finite() {
            return Err(StageError::NonFinite { step: 0, what: format!("metric {name}") });
        }
        self.metrics.insert(name.to_string(), value);
        Ok(())
    }

    /// A per-step metric (loss parts, lr, grad norm, tokens/s).
    pub fn step_metric(&mut self, step: u64, name: &str, value: f64) -> Result<(), StageError> {
        if self.steps.is_none() {
            let f = File::create(&self.steps_path).map_err(|e| StageError::io(&self.steps_path, e))?;
            self.steps = Some(f);
        }
        let rec = StepMetric { step, name: name.to_string(), value };
        let line = serde_json::to_string(&rec).expect("step metrics serialize");
        let f = self.steps.as_mut().expect("opened above");
        writeln!(f, "{line}").map_err(|e| StageError::io(&self.steps_path, e))
    }

    /// The workspace's `.distill/` folder.
    pub fn workspace(&self) -> &Path {
        &self.workspace
    }

    /// The current run's record so far (upstream stages included), as last saved.
    pub fn run_record(&self) -> Option<crate::record::RunRecord> {
        let path = self.workspace.join("runs").join(&self.run_id).join("run.json");
        serde_json::from_slice(&std::fs::read(path).ok()?).ok()
    }

    /// True once the run was asked to stop (Ctrl-C): long loops should return `Interrupted`.
    pub fn cancelled(&self) -> bool {
        self.cancel.load(Ordering::Relaxed)
    }

    pub fn finish(mut self) -> (BTreeMap<String, f64>, Option<PathBuf>) {
        let steps = self.steps.take().map(|mut f| {
            let _ = f.flush();
            self.steps_path.clone()
        });
        (self.metrics, steps)
    }
}
