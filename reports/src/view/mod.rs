//! What a report shows, as plain serializable data: the same structure feeds the templates
//! and `report.json`, so machines and people read the same numbers.

mod chart;
mod compare;
mod curves;
mod eval;
mod graph;
mod paper;
mod run;
mod stage;

pub use chart::{ChartData, ChartKind};
pub use compare::{CompareView, MetricDelta, ParamDiff, StageCompare};
pub use eval::{EvalRow, Evaluation, SpecRow, SpecTable};
pub use graph::Upstream;
pub use paper::{PaperRow, PaperTable};
pub use run::{RunInfo, RunView};
pub use stage::{OutputView, StageView};
