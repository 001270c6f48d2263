//! Template tests: every section of a run report, rendered from synthetic records, and the
//! numbers in `report.json` matching the page.

use distill_reports::testdata::{hostile_run, run, sample_run};
use distill_reports::{load_steps, render_run, write_run_report};
use serde_json::Value;

fn sample() -> (tempfile::TempDir, String, Value) {
    let tmp = tempfile::tempdir().unwrap();
    let r = sample_run(tmp.path());
    let out = render_run(&r, &load_steps(&r)).unwrap();
    let json = serde_json::from_str(&out.json).unwrap();
    (tmp, out.html, json)
}

fn has(html: &str, needles: &[&str]) {
    for n in needles {
        assert!(html.contains(n), "missing {n:?}");
    }
}

#[test]
fn experiment_header_shows_what_when_where_and_how_to_reproduce() {
    let (_t, html, _) = sample();
    has(&html, &[
        "<h1>hybrid-50</h1>", "Distill Llama-3.2-1B into a 50% Mamba hybrid", "20250301-140000-a1b2",
        "2025-03-01 14:00:00 UTC", "1h 02m 05s", "cuda:0 · bf16 · seed 42", "distill 0.1.0",
        // minijinja escapes `/` too (`&#x2f;`); the browser shows a slash.
        "manifests&#x2f;hybrid.toml", r#"<code class="reproduce">distill run manifests&#x2f;hybrid.toml</code>"#,
        r#"<pre class="manifest">"#, "[experiment]",
    ]);
}

#[test]
fn dag_has_a_linked_colored_node_per_stage() {
    let (_t, html, _) = sample();
    has(&html, &[r#"<svg xmlns="http://www.w3.org/2000/svg" class="dag""#, r##"<a href="#stage-sft"><g class="node st-failed""##,
        r##"<a href="#stage-teacher"><g class="node st-cached""##, r##"<a href="#stage-dpo"><g class="node st-skipped""##]);
    assert_eq!(html.matches(r#"<g class="node "#).count(), 16);
    assert_eq!(html.matches(r#"<path class="edge""#).count(), 16);
}

#[test]
fn stage_sections_show_params_timing_cache_reasons_metrics_and_failures() {
    let (_t, html, _) = sample();
    has(&html, &[
        r#"<section class="stage st-ran" id="stage-distill50">"#,
        "<h4>Why it ran</h4>", "param lr: 0.0001 -&gt; 0.0003", "<h4>Why it was cached</h4>", "<h4>Why it was skipped</h4>",
        r#"<th class="mono">lr</th><td class="mono">0.0003</td>"#, r#"<th class="mono">freeze</th><td class="mono">mlp</td>"#,
        "12.5 s", "9f2c4e1ab37d5e6f", "2.47 GB",
        r#"<td class="mono">perplexity</td><td class="num">8.3</td>"#,
        r#"<p class="error mono">CUDA out of memory</p>"#, "step 10 loss 2.31\nRuntimeError: CUDA out of memory",
    ]);
}

#[test]
fn training_curves_have_titles_axes_legends_and_points() {
    let (_t, html, json) = sample();
    let section = &html[html.find(r#"id="stage-distill50""#).unwrap()..html.find(r#"id="stage-distill50_unfrozen""#).unwrap()];
    for t in ["Loss", "Learning rate", "Gradient norm", "Throughput"] {
        assert!(section.contains(&format!(r#"<text class="chart-title" x="64" y="18">{t}</text>"#)), "{t}");
    }
    has(section, &[r#"data-series="loss/kl""#, r#"class="axis-label""#, "tokens/s", r#"<g class="legend">"#]);
    // report.json carries the same downsampled points the page draws.
    let stage = json["report"]["stages"].as_array().unwrap().iter().find(|s| s["name"] == "distill50").unwrap();
    let n = stage["charts"][0]["series"][0]["points"].as_array().unwrap().len();
    assert!(section.contains(&format!(r#"data-series="loss" data-n="{n}""#)), "json and svg agree on {n} points");
}

#[test]
fn evaluation_tables_and_charts() {
    let (_t, html, json) = sample();
    has(&html, &[r#"<section id="evaluation">"#, r##"<a href="#stage-eval50">eval50</a></td><td>distill50</td>"##,
        "1.238*", "computed here from the teacher", r#"<td class="num">4</td><td class="num">0.62</td><td class="num">3.3</td><td class="num">1.75×</td>"#,
        r#"<td class="num">plain</td>"#, "Speedup by K", "Acceptance rate by K", "Perplexity by eval stage",
        // Once under way, a round's cost and the acceptance it needs; none doubles at K = 4.
        "speedup once under way", r#"<td class="num">1.25×</td><td class="num">5.4</td><td class="num">0.55</td><td class="num">—</td>"#,
        r#"<td class="num">1× (310 tokens/s)</td>"#]);
    let evals = &json["report"]["evaluation"]["evals"];
    assert_eq!(evals.as_array().unwrap().len(), 5);
    assert_eq!(json["format"], "distill-report/1");
}

#[test]
fn paper_comparison_shows_the_papers_numbers_beside_ours() {
    let (_t, html, _) = sample();
    for id in ["paper-fraction", "paper-init", "paper-freeze", "paper-interleave", "paper-speculative"] {
        assert!(html.contains(&format!(r#"<section class="paper" id="{id}">"#)), "{id}");
    }
    has(&html, &["<td>50% attention</td>", "<td>25% attention</td>", r#"<td class="num">1.03</td>"#, r#"<td class="num">1.09</td>"#,
        r#"<td class="num">6.2</td>"#, r#"<td class="num">55.01</td>"#, r#"<td class="num">2.09</td>"#, r#"<td class="num">9.1</td>"#,
        r#"<td class="num">2.2</td>"#, r#"<td class="num">3.9</td>"#, r#"<td class="num">1.85</td>"#, "random init ÷ attention init"]);
}

#[test]
fn a_run_without_evals_or_curves_leaves_those_sections_out() {
    let r = run("bare", vec![], &[]);
    let out = render_run(&r, &Default::default()).unwrap();
    assert!(out.html.contains(r#"<section id="dag">"#));
    assert!(!out.html.contains(r#"id="evaluation""#) && !out.html.contains(r#"id="paper""#));
}

#[test]
fn hostile_strings_are_escaped_everywhere() {
    let tmp = tempfile::tempdir().unwrap();
    let r = hostile_run(tmp.path());
    let out = render_run(&r, &load_steps(&r)).unwrap();
    assert!(!out.html.contains("<script") && !out.html.contains("<img"), "raw markup leaked");
    assert!(!out.html.contains("onerror=\""), "attribute injection");
    assert!(out.html.contains("&lt;script&gt;window.pwned=1;"));
    let json: Value = serde_json::from_str(&out.json).unwrap();
    assert!(json["report"]["run"]["name"].as_str().unwrap().contains("<script>"), "json keeps the raw text");
}

#[test]
fn writes_html_and_json_side_by_side() {
    let tmp = tempfile::tempdir().unwrap();
    let r = sample_run(tmp.path());
    let p = write_run_report(&r, &tmp.path().join("a/b")).unwrap();
    assert_eq!(p.html, tmp.path().join("a/b/report.html"));
    assert!(p.json.is_file() && std::fs::read_to_string(&p.html).unwrap().starts_with("<!doctype html>"));
}
