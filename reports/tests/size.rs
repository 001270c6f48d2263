//! The size bound of a large run: 100 stages, 100k logged steps, still a file you can mail.
//! Render time is measured by `cargo bench -p distill-reports --bench render` (no timed tests).

use distill_reports::testdata::large_run;
use distill_reports::{load_steps, render_run};

#[test]
fn hundred_stages_hundred_thousand_steps_stay_under_four_megabytes() {
    let tmp = tempfile::tempdir().unwrap();
    // Every stage trains, so every stage draws its curves: the worst case for size.
    let r = large_run(tmp.path(), 100, 100, 1_000);
    let out = render_run(&r, &load_steps(&r)).unwrap();
    assert!(out.html.len() < 4_000_000, "report.html is {} bytes", out.html.len());
    assert!(out.json.len() < 4_000_000, "report.json is {} bytes", out.json.len());
    eprintln!("html {} bytes, json {} bytes", out.html.len(), out.json.len());
    assert_eq!(out.html.matches(r#"<section class="stage"#).count(), 100);
}

#[test]
fn one_long_curve_is_downsampled_not_dropped() {
    let tmp = tempfile::tempdir().unwrap();
    let r = large_run(tmp.path(), 3, 1, 100_000);
    let out = render_run(&r, &load_steps(&r)).unwrap();
    assert!(out.html.len() < 1_000_000, "report.html is {} bytes", out.html.len());
    // The last step is kept, so the curve still spans the whole run.
    assert!(out.json.contains("99999.0"), "last step kept");
}
