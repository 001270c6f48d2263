//! Snapshot of the report structure: section ids and headings in order, committed under
//! `tests/snapshots/`. Regenerate: `UPDATE_SNAPSHOTS=1 cargo test -p distill-reports --test snapshot`.

mod support;

use distill_reports::testdata::sample_run;
use distill_reports::{load_steps, render_comparison, render_run};
use support::outline::{assert_snapshot, outline};

#[test]
fn run_report_structure() {
    let tmp = tempfile::tempdir().unwrap();
    let r = sample_run(tmp.path());
    let html = render_run(&r, &load_steps(&r)).unwrap().html;
    assert_snapshot("run_report.outline", &outline(&html));
}

#[test]
fn comparison_report_structure() {
    let tmp = tempfile::tempdir().unwrap();
    let a = sample_run(tmp.path());
    let mut b = a.clone();
    b.stages[4].params["lr"] = serde_json::json!(0.001);
    b.stages.pop();
    let html = render_comparison(&a, &load_steps(&a), &b, &load_steps(&b)).unwrap().html;
    assert_snapshot("comparison_report.outline", &outline(&html));
}
