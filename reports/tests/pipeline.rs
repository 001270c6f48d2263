//! The `report` stage kind at the end of a real engine pipeline: a command stage logs a
//! metric, the report stage renders the run so far into its output folder.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use distill_engine::exec::{self, Progress, RunOptions};
use distill_engine::manifest;
use distill_engine::record::StageStatus;
use distill_engine::stage::Registry;
use distill_engine::workspace::Workspace;
use distill_reports::ReportStage;

const MANIFEST: &str = r#"
[experiment]
name = "report-stage"
description = "a command, then its report"

[stages.count]
kind = "command"
cmd = "echo '{\"name\": \"count\", \"value\": 3}' > \"$DISTILL_METRICS\"; echo 3 > n.txt"
outs = ["n.txt"]

[stages.report]
kind = "report"
needs = ["count"]
params = { title = "Counting <b>report</b>" }
"#;

#[test]
fn report_stage_renders_the_run_so_far() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("distill.toml");
    std::fs::write(&path, MANIFEST).unwrap();
    let mut registry = Registry::builtin();
    registry.add(Arc::new(ReportStage));
    let plan = manifest::build(&path, &[], &registry).expect("manifest builds");
    let opts = RunOptions { jobs: 1, threads: 1, ..RunOptions::default() };
    let sel = exec::select(&plan, &opts).expect("selection");
    let ws = Workspace::open(&plan.root, false, "test").expect("workspace");
    let record = exec::run(&plan, &registry, &ws, &sel, &opts, Arc::new(AtomicBool::new(false)), &Progress::new(true));
    let report = record.stage("report").expect("report stage in the record");
    assert_eq!(report.status, StageStatus::Ran, "{:?} {:?}", report.error, report.log_tail);
    let out = report.outputs.values().next().expect("an output").path.clone();
    let html_path = if out.is_dir() { out.join("report.html") } else { out.clone() };
    let html = std::fs::read_to_string(&html_path).unwrap_or_else(|e| panic!("{}: {e}", html_path.display()));
    assert!(html.contains("<h1>Counting &lt;b&gt;report&lt;&#x2f;b&gt;</h1>"), "title param, escaped");
    assert!(html.contains(r#"id="stage-count""#) && html.contains(r#"<td class="mono">count</td><td class="num">3</td>"#));
    assert!(html_path.with_file_name("report.json").is_file());
}
