//! Opens generated reports in real headless Chromium (Debian's `chromium`, which `.ci/run`
//! installs): the page loads with no console errors, shows its sections and charts with data,
//! its screenshot is not blank, and hostile names never run as script.
//!
//! Without Chromium the tests are skipped locally and fail under CI (`CI` set).

mod support;

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use distill_reports::testdata::{HOSTILE, hostile_run, sample_run};
use distill_reports::{write_comparison, write_run_report};
use serde_json::json;
use support::cdp::{Browser, chromium_path};
use support::page::{Page, pixel_stats};

/// One browser at a time: the machines running this have two cores.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn open(html: &Path) -> Option<Page> {
    let Some(chromium) = chromium_path() else {
        assert!(std::env::var_os("CI").is_none(), "CI needs Debian's chromium (apt-get install -y chromium)");
        eprintln!("skipped: no chromium (install Debian's `chromium` or set DISTILL_CHROMIUM)");
        return None;
    };
    Some(Page::open(Browser::launch(&chromium), html))
}

/// Keeps the screenshot where a person can look at it after the run.
fn save_screenshot(name: &str, png: &[u8]) -> PathBuf {
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}.png"));
    std::fs::write(&path, png).expect("screenshot written");
    path
}

fn assert_loaded_cleanly(page: &mut Page, name: &str) {
    assert_eq!(page.eval("document.readyState"), json!("complete"));
    let errors = page.browser.errors();
    assert!(errors.is_empty(), "console errors: {errors:#?}");
    let png = page.screenshot();
    let (colors, inked) = pixel_stats(&png);
    let path = save_screenshot(name, &png);
    assert!(colors > 8 && inked > 0.02, "screenshot looks blank ({colors} colors, {inked:.3} inked): {}", path.display());
}

#[test]
fn run_report_opens_in_chromium_with_sections_and_charts() {
    let _guard = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let tmp = tempfile::tempdir().unwrap();
    let run = sample_run(tmp.path());
    let paths = write_run_report(&run, &tmp.path().join("out")).unwrap();
    let Some(mut page) = open(&paths.html) else { return };
    assert_loaded_cleanly(&mut page, "run-report");
    for id in ["experiment", "dag", "stages", "evaluation", "paper", "stage-distill50", "paper-fraction"] {
        assert_eq!(page.eval(&format!("!!document.getElementById('{id}')")), json!(true), "section #{id}");
    }
    let nodes = page.eval("document.querySelectorAll('svg.dag g.node').length");
    assert_eq!(nodes, json!(run.stages.len()));
    // Curves: a polyline with many coordinate pairs that the browser parsed into points.
    let most = page.eval("Math.max(...[...document.querySelectorAll('svg.chart polyline.series')].map(p => p.points.numberOfItems))");
    assert!(most.as_f64().unwrap_or(0.0) >= 100.0, "a curve with data points, got {most}");
    let box_h = page.eval("document.querySelector('svg.chart').getBoundingClientRect().height");
    assert!(box_h.as_f64().unwrap_or(0.0) > 100.0, "charts are drawn at a readable size");
    let pdf = page.pdf();
    assert!(pdf.starts_with(b"%PDF") && pdf.len() > 20_000, "prints to a PDF ({} bytes)", pdf.len());
    let cmd = page.eval("document.querySelector('code.reproduce').textContent");
    assert_eq!(cmd, json!("distill run manifests/hybrid.toml"), "escaped text reads back unchanged");
    let link = page.eval("document.querySelector('svg.dag a').getAttribute('href')");
    assert_eq!(link, json!("#stage-teacher"));
}

/// The committed example reports (`reports/examples/`), what README and BENCHMARKS send people
/// to: each opens cleanly with every stage in its DAG, its evaluation and paper sections.
#[test]
fn committed_example_reports_open_in_chromium() {
    let _guard = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    for (name, stages) in [("default-cpu", 25), ("h200", 25), ("h200-2gpu", 25), ("h200-20m", 7)] {
        let html = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples").join(format!("{name}.html"));
        let Some(mut page) = open(&html) else { return };
        assert_loaded_cleanly(&mut page, name);
        for id in ["experiment", "dag", "stages", "evaluation", "paper"] {
            assert_eq!(page.eval(&format!("!!document.getElementById('{id}')")), json!(true), "{name}: section #{id}");
        }
        let nodes = page.eval("document.querySelectorAll('svg.dag g.node').length");
        assert_eq!(nodes, json!(stages), "{name}: stages in the DAG");
        let charts = page.eval("document.querySelectorAll('svg.chart').length");
        assert!(charts.as_u64().unwrap_or(0) >= 4, "{name}: charts drawn, got {charts}");
    }
}

#[test]
fn comparison_report_opens_in_chromium_with_overlaid_curves() {
    let _guard = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let tmp = tempfile::tempdir().unwrap();
    let a = sample_run(tmp.path());
    let mut b = a.clone();
    b.id = "20250302-090000-ffff".into();
    b.stages[4].params["lr"] = json!(0.001);
    let paths = write_comparison(&a, &b, &tmp.path().join("cmp")).unwrap();
    let Some(mut page) = open(&paths.html) else { return };
    assert_loaded_cleanly(&mut page, "comparison-report");
    for id in ["runs", "run-diffs", "stages", "stage-distill50"] {
        assert_eq!(page.eval(&format!("!!document.getElementById('{id}')")), json!(true), "section #{id}");
    }
    let series = page.eval("[...document.querySelectorAll('#stage-distill50 svg.chart polyline.series')].map(p => p.dataset.series)");
    let series: Vec<String> = serde_json::from_value(series).unwrap();
    assert!(series.contains(&"A · loss".to_string()) && series.contains(&"B · loss".to_string()), "{series:?}");
}

#[test]
fn hostile_names_render_as_text_and_never_run() {
    let _guard = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let tmp = tempfile::tempdir().unwrap();
    let run = hostile_run(tmp.path());
    let paths = write_run_report(&run, &tmp.path().join("out")).unwrap();
    let mut other = run.clone();
    other.id = "20250302-090000-ffff".into();
    let cmp = write_comparison(&run, &other, &tmp.path().join("cmp")).unwrap();
    // Also without the page's Content-Security-Policy: escaping alone must keep the payload inert.
    let bare = tmp.path().join("no-csp.html");
    let text = std::fs::read_to_string(&paths.html).unwrap();
    let csp = text.find("<meta http-equiv=\"Content-Security-Policy\"").expect("CSP meta");
    let end = csp + text[csp..].find('>').unwrap() + 1;
    std::fs::write(&bare, format!("{}{}", &text[..csp], &text[end..])).unwrap();
    for html in [paths.html, cmp.html, bare] {
        let Some(mut page) = open(&html) else { return };
        assert_loaded_cleanly(&mut page, "hostile");
        assert_eq!(page.eval("typeof window.pwned"), json!("undefined"));
        assert_eq!(page.eval("document.querySelectorAll('script, img, iframe, [onerror]').length"), json!(0));
        let title = page.eval("document.title");
        assert_ne!(title, json!("pwned"));
        let text = page.eval("document.body.textContent");
        assert!(text.as_str().unwrap_or("").contains(HOSTILE), "the payload shows as text");
    }
}
