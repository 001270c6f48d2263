//! Rendering: minijinja templates compiled into the binary, HTML autoescaping on, and the
//! files `report.html` + `report.json` written side by side.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use distill_engine::record::{RunRecord, StepMetric};
use minijinja::{Environment, Value, context};
use serde::Serialize;

use crate::error::ReportError;
use crate::load::load_steps;
use crate::view::{ChartData, CompareView, RunView};

/// Where a report was written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReportPaths {
    pub html: PathBuf,
    pub json: PathBuf,
}

/// A rendered report before it is written: the page and its machine-readable twin.
#[derive(Clone, Debug)]
pub struct Rendered {
    pub html: String,
    pub json: String,
}

fn env() -> &'static Environment<'static> {
    static ENV: OnceLock<Environment<'static>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = Environment::new();
        // The default auto-escape callback escapes every `.html` template: hostile names stay text.
        for (name, src) in [
            ("base.html", include_str!("../templates/base.html")),
            ("macros.html", include_str!("../templates/macros.html")),
            ("report.html", include_str!("../templates/report.html")),
            ("compare.html", include_str!("../templates/compare.html")),
        ] {
            env.add_template(name, src).expect("bundled templates parse (checked by tests)");
        }
        crate::filters::register(&mut env);
        env
    })
}

/// Chart id -> drawn SVG, marked safe: the SVG code escapes every string it embeds.
fn svgs<'a>(charts: impl Iterator<Item = &'a ChartData>) -> BTreeMap<String, Value> {
    charts.map(|c| (c.id.clone(), Value::from_safe_string(c.svg()))).collect()
}

fn render(name: &'static str, ctx: Value) -> Result<String, ReportError> {
    let tmpl = env().get_template(name).map_err(|source| ReportError::Template { name, source })?;
    tmpl.render(ctx).map_err(|source| ReportError::Template { name, source })
}

/// Renders one run from its record and step metrics (by stage name).
pub fn render_run(run: &RunRecord, steps: &BTreeMap<String, Vec<StepMetric>>) -> Result<Rendered, ReportError> {
    let view = RunView::build(run, steps);
    let ctx = context! {
        v => Value::from_serialize(&view),
        svgs => svgs(view.charts()),
        dag_svg => Value::from_safe_string(view.dag_svg(run)),
        generator_version => distill_engine::VERSION,
    };
    Ok(Rendered { html: render("report.html", ctx)?, json: to_json("run", &view)? })
}

/// Renders a comparison of run `a` (the baseline) with run `b`.
pub fn render_comparison(
    a: &RunRecord,
    sa: &BTreeMap<String, Vec<StepMetric>>,
    b: &RunRecord,
    sb: &BTreeMap<String, Vec<StepMetric>>,
) -> Result<Rendered, ReportError> {
    let view = CompareView::build(a, sa, b, sb);
    let ctx = context! {
        v => Value::from_serialize(&view),
        svgs => svgs(view.charts()),
        generator_version => distill_engine::VERSION,
    };
    Ok(Rendered { html: render("compare.html", ctx)?, json: to_json("comparison", &view)? })
}

/// `report.json`: the view with a format tag, so readers can tell the two kinds apart.
/// Compact, not pretty: pretty-printed curve points triple the size (`jq .` reads it fine).
fn to_json(kind: &str, view: &impl Serialize) -> Result<String, ReportError> {
    Ok(serde_json::to_string(&serde_json::json!({ "format": "distill-report/1", "kind": kind, "report": view }))?)
}

/// Writes `report.html` and `report.json` for one run into `out_dir` (created if missing).
pub fn write_run_report(run: &RunRecord, out_dir: &Path) -> Result<ReportPaths, ReportError> {
    let r = render_run(run, &load_steps(run))?;
    write(out_dir, &r)
}

/// Writes the comparison of `a` (baseline) and `b` into `out_dir`.
pub fn write_comparison(a: &RunRecord, b: &RunRecord, out_dir: &Path) -> Result<ReportPaths, ReportError> {
    let r = render_comparison(a, &load_steps(a), b, &load_steps(b))?;
    write(out_dir, &r)
}

fn write(out_dir: &Path, r: &Rendered) -> Result<ReportPaths, ReportError> {
    std::fs::create_dir_all(out_dir).map_err(|e| ReportError::io(out_dir, e))?;
    let paths = ReportPaths { html: out_dir.join("report.html"), json: out_dir.join("report.json") };
    std::fs::write(&paths.html, &r.html).map_err(|e| ReportError::io(&paths.html, e))?;
    std::fs::write(&paths.json, &r.json).map_err(|e| ReportError::io(&paths.json, e))?;
    Ok(paths)
}
