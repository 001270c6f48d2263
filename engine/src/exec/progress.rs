//! Progress on stderr: one indicatif line per running stage on a terminal, plain lines
//! otherwise (logs, CI, pipes).

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

use crate::record::{StageRun, StageStatus};

pub struct Progress {
    quiet: bool,
    bars: Option<(MultiProgress, Mutex<HashMap<String, ProgressBar>>)>,
}

impl Progress {
    pub fn new(quiet: bool) -> Self {
        let bars = (!quiet && std::io::stderr().is_terminal()).then(|| (MultiProgress::new(), Mutex::new(HashMap::new())));
        Self { quiet, bars }
    }

    pub fn started(&self, name: &str) {
        if self.quiet {
            return;
        }
        match &self.bars {
            Some((multi, bars)) => {
                let bar = multi.add(ProgressBar::new_spinner());
                bar.set_style(ProgressStyle::with_template("{spinner} {msg} {elapsed}").expect("valid template"));
                bar.set_message(name.to_string());
                bar.enable_steady_tick(Duration::from_millis(120));
                bars.lock().expect("not poisoned").insert(name.to_string(), bar);
            }
            None => eprintln!("running {name}"),
        }
    }

    pub fn finished(&self, run: &StageRun) {
        if self.quiet {
            return;
        }
        let line = describe(run);
        match &self.bars {
            Some((multi, bars)) => {
                if let Some(bar) = bars.lock().expect("not poisoned").remove(&run.name) {
                    bar.finish_and_clear();
                }
                let _ = multi.println(line);
            }
            None => eprintln!("{line}"),
        }
    }
}

fn describe(run: &StageRun) -> String {
    let t = run.duration_s.map(|d| format!(" in {d:.2}s")).unwrap_or_default();
    match run.status {
        StageStatus::Ran => format!("ran     {}{t}", run.name),
        StageStatus::Cached => format!("cached  {}", run.name),
        StageStatus::Skipped => format!("skipped {} ({})", run.name, run.reasons.join("; ")),
        StageStatus::Failed => format!(
            "FAILED  {}{t}: {}{}",
            run.name,
            run.error.as_deref().unwrap_or("failed"),
            run.log.as_ref().map(|l| format!(" (log: {})", l.display())).unwrap_or_default()
        ),
        _ => run.name.clone(),
    }
}
