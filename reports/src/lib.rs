//! Reports researchers can share: one self-contained HTML file per run (inline CSS and SVG,
//! no scripts, no network) plus `report.json` with the same numbers, and comparisons of two runs.
//!
//! The API the binary and the engine use:
//! - [`load_run`]`(distill_dir, Option<&str>) -> Result<RunRecord, ReportError>`: the last run,
//!   or one by id or unique id prefix, from `<workspace>/.distill/runs/<id>/run.json`.
//! - [`write_run_report`]`(&RunRecord, out_dir) -> Result<ReportPaths, ReportError>`: writes
//!   `out_dir/report.html` and `out_dir/report.json` (`distill report [RUN]`).
//! - [`write_comparison`]`(a, b, out_dir) -> Result<ReportPaths, ReportError>`: A is the
//!   baseline; params diff, metric deltas, curves overlaid (`distill report RUN_A RUN_B`).
//! - [`render_run`] / [`render_comparison`]: the same without touching the disk, given step
//!   metrics already loaded ([`load_steps`]).
//! - [`ReportStage`]: the `report` stage kind (add it to the engine's `Registry`).
//!
//! Structure: `view/` turns records into plain data (what `report.json` holds), `svg/` draws
//! charts and the DAG, `render` fills the minijinja templates in `templates/`.

mod downsample;
mod error;
mod filters;
mod load;
mod render;
mod report_stage;
pub mod svg;
pub mod view;

#[doc(hidden)]
pub mod testdata;

pub use error::ReportError;
pub use load::{load_run, load_steps, read_record};
pub use render::{Rendered, ReportPaths, render_comparison, render_run, write_comparison, write_run_report};
pub use report_stage::ReportStage;
