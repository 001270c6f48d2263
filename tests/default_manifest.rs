//! The manifests users copy must stay valid: each is planned with `--dry-run` in a scratch
//! copy (nothing runs, nothing is fetched).

mod support;

use support::TestRun;

fn dry_run(manifest: &str, extra: &[&str]) -> Vec<(String, String)> {
    let out = plan(manifest, extra);
    out.success();
    out.statuses()
}

fn plan(manifest: &str, extra: &[&str]) -> support::Outcome {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("manifests");
    let t = TestRun::new();
    t.file("m.toml", &std::fs::read_to_string(root.join(manifest)).unwrap());
    t.file("scripts/make_corpus.py", &std::fs::read_to_string(root.join("scripts/make_corpus.py")).unwrap());
    let mut args = vec!["run", "m.toml", "--dry-run", "--json"];
    args.extend_from_slice(extra);
    t.run(&args)
}

#[test]
fn the_default_manifest_plans() {
    let s = dry_run("default.toml", &[]);
    let names: Vec<&str> = s.iter().map(|(n, _)| n.as_str()).collect();
    for stage in ["teacher", "hybrid50", "control50", "distill[hybrid50]", "sft", "dpo", "draft", "speculative", "heldout[distill[control50]]", "summary"] {
        assert!(names.contains(&stage), "{stage} missing: {names:?}");
    }
    assert!(s.iter().all(|(_, st)| st == "will_run"), "{s:?}");
    assert_eq!(names.last(), Some(&"summary"), "the report comes last");
}

#[test]
fn the_default_manifest_plans_for_cuda() {
    let out = plan("default.toml", &["--set", "device=cuda", "--set", "vars.distill_tokens=20000000"]);
    if cfg!(feature = "cuda") {
        out.success();
    } else {
        // A CPU build says so when planning, at the stage, before anything runs.
        out.code_is(2).stderr_contains("this build has no CUDA support (cargo feature `cuda`)");
    }
}

#[test]
fn the_example_manifest_plans() {
    dry_run("examples/commands.toml", &[]);
}

/// Issue 8: the default manifest, every stage, at tiny budgets, from the package mirror
/// `.ci/fetch-mirror` fills (no network): every stage runs, the report exists, and a rerun
/// runs nothing.
#[test]
fn the_default_manifest_runs_end_to_end_at_tiny_budgets() {
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mirror = repo.join(".cache/mirror");
    if !has_deb(&mirror) {
        assert!(std::env::var_os("CI").is_none(), "CI must have the package mirror: run .ci/fetch-mirror");
        eprintln!("skipped: no package mirror at {} (run .ci/fetch-mirror)", mirror.display());
        return;
    }
    let root = repo.join("manifests");
    let t = TestRun::new().env("DISTILL_FETCH_MIRROR", mirror.to_str().unwrap());
    t.file("m.toml", &std::fs::read_to_string(root.join("default.toml")).unwrap());
    t.file("scripts/make_corpus.py", &std::fs::read_to_string(root.join("scripts/make_corpus.py")).unwrap());
    let tiny = [
        "vars.distill_tokens=512", "vars.seq_len=32", "vars.eval_tokens=128", "vars.corpus_bytes=100000",
        "vars.chat_prompts=4", "vars.pair_prompts=2", "vars.answer_tokens=8",
        "stages.speculative.params.max_new_tokens=8", "stages.speculative.params.max_prompts=2",
    ];
    let mut args = vec!["run", "m.toml", "--json"];
    for s in &tiny {
        args.extend(["--set", s]);
    }
    let first = t.run(&args);
    let s = first.statuses();
    let not_run: Vec<_> = s.iter().filter(|(_, st)| st != "ran").collect();
    assert!(not_run.is_empty() && s.len() == 25, "every stage runs: {not_run:?}\n{}", first.stderr());
    let html = t.run(["path", "@summary/report.html"]).success().stdout();
    let html = std::fs::read_to_string(html.trim()).unwrap();
    for stage in ["distill[hybrid50]", "speculative", "heldout[control50]"] {
        assert!(html.contains(stage), "the report shows {stage}");
    }
    let again = t.run(&args);
    assert!(again.statuses().iter().all(|(_, st)| st == "cached"), "a rerun runs nothing: {:?}", again.statuses());
}

fn has_deb(dir: &std::path::Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|d| d.filter_map(|e| e.ok()).any(|e| e.file_name().to_string_lossy().starts_with("python3.11-doc_")))
}
