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
