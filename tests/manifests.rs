//! The example manifests under `manifests/examples/` plan: `distill run --dry-run` validates
//! every stage's params with the real kinds (a typo in an example fails here) and the DAG.

mod support;

use support::TestRun;

/// A workspace holding `example` and the files its default vars name (a teacher folder and a
/// corpus: a dry run hashes them but loads nothing).
fn workspace(example: &str) -> TestRun {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/manifests/examples/");
    let text = std::fs::read_to_string(format!("{path}{example}")).expect("example manifest");
    let t = TestRun::new();
    t.manifest(&text);
    t.file("models/teacher/config.json", "{}");
    t.file("data/corpus.jsonl", "{\"text\": \"the cat sat\"}\n");
    t
}

fn planned(t: &TestRun) -> Vec<String> {
    t.run(["run", "--dry-run", "--json"]).success().statuses().into_iter().map(|(n, _)| n).collect()
}

#[test]
fn progressive_example_chains_init_and_distill_steps() {
    let t = workspace("progressive.toml");
    let names = planned(&t);
    for n in ["teacher", "corpus", "hybrid50", "distill50", "hybrid25", "distill25", "eval[distill25]"] {
        assert!(names.contains(&n.to_string()), "{n} missing from {names:?}");
    }
    let dag = t.run(["dag"]).success().stdout();
    assert!(dag.contains("hybrid25 (init)  <- distill50"), "step 2 starts from step 1's checkpoint:\n{dag}");
}

#[test]
fn stepwise_example_converts_one_layer_per_step_from_the_last() {
    let t = workspace("stepwise.toml");
    let names = planned(&t);
    assert_eq!(names.iter().filter(|n| n.starts_with("convert[")).count(), 32);
    assert_eq!(names.iter().filter(|n| n.starts_with("train[")).count(), 32);
    let dag = t.run(["dag"]).success().stdout();
    assert!(dag.contains("convert[0] (init)  <- teacher"), "{dag}");
    assert!(dag.contains("convert[2] (init)  <- train[0]"), "{dag}");
    assert!(dag.contains("convert[1] (init)  <- train[30]"), "{dag}");
}

/// Issue 5: a typo in a training kind's params fails the plan, naming the param.
#[test]
fn a_typo_in_an_example_fails_the_dry_run_with_the_nearest_name() {
    let t = workspace("progressive.toml");
    let text = t.read("distill.toml").replace("warmup = 1500", "lr_warmup = 1500");
    t.manifest(&text);
    let out = t.run(["run", "--dry-run"]);
    assert_ne!(out.code(), 0);
    out.stderr_contains("lr_warmup").stderr_contains("did you mean `warmup`?");
}
