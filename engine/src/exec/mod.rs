//! Running a plan: pick the selected stages, decide each from its cache key, run what must
//! run in parallel within `--jobs` and the declared resources, store outputs atomically and
//! keep the run record current after every stage.

mod detached;
mod progress;
mod schedule;
mod select;
mod slurm;
mod status;
mod worker;

pub use detached::{JobError, JobFile, job_from_list, run_job_file};
pub use progress::Progress;
pub(crate) use schedule::hostname;
pub use schedule::run;
pub use select::{Selection, select};
pub use status::{Assessment, assess};

/// What `distill run` was asked to do.
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    pub jobs: usize,
    pub only: Vec<String>,
    pub until: Vec<String>,
    pub downstream: Vec<String>,
    pub force: Vec<String>,
    pub force_all: bool,
    pub keep_going: bool,
    /// The command line, for the record and for "reproduce with".
    pub argv: Vec<String>,
    /// GPUs this machine offers to stages that declare `resources.gpus`.
    pub gpus: usize,
    /// Threads this machine offers to stages that declare `resources.threads`.
    pub threads: usize,
}
