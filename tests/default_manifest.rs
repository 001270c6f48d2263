//! The manifests users copy must stay valid: each is planned with `--dry-run` in a scratch
//! copy (nothing runs, nothing is fetched).

mod support;

use support::{with_status, TestRun};

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

/// The paper's recipes (`manifests/paper/`) against a small stand-in of their teachers' shape
/// family (32 layers, 4 query heads per KV head, Llama-3's rope scaling for llama3.toml) and tiny
/// datasets: each plans, and the progressive chain 50% -> 25% really runs on the CPU (the
/// conversions, the distillation step between them, and the 25% step converting more layers of
/// the trained 50% student).
#[test]
fn the_paper_recipes_plan_and_their_progressive_chain_runs_on_a_stand_in() {
    use distill_stages::data::fixtures::write_model_dir;
    use distill_stages::llama::{Llama3Scaling, LlamaConfig};
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("manifests/paper");
    let t = TestRun::new();
    for f in ["recipe.toml", "zephyr.toml", "llama3.toml", "stepwise.toml"] {
        t.file(&format!("paper/{f}"), &std::fs::read_to_string(root.join(f)).unwrap());
    }
    // Zephyr/Mistral and Llama-3-8B: 32 layers, 32 heads over 8 KV heads. The stand-in keeps
    // the depth and the 4:1 grouping at a tiny width.
    let mistral = LlamaConfig::new(258, 16, 32, 32, 4, 1, 4).with_max_seq_len(256);
    let llama3 = mistral.clone().with_rope_llama3(Some(Llama3Scaling { factor: 8.0, low_freq_factor: 1.0, high_freq_factor: 4.0, original_max_position_embeddings: 64 }));
    write_model_dir(&t.path().join("models/zephyr"), &mistral);
    write_model_dir(&t.path().join("models/llama3"), &llama3);
    let chat = |i: usize| serde_json::json!({ "messages": [{ "role": "user", "content": format!("question {i}?") }, { "role": "assistant", "content": format!("the answer is {i} and more words") }] });
    let lines = |f: &dyn Fn(usize) -> serde_json::Value| (0..40).map(|i| f(i).to_string() + "\n").collect::<String>();
    t.file("data/labels.jsonl", &lines(&chat));
    t.file("data/sft.jsonl", &lines(&chat));
    t.file("data/prefs.jsonl", &lines(&|i| serde_json::json!({ "prompt": format!("q{i}"), "chosen": "good answer", "rejected": "bad" })));
    t.file("data/heldout.jsonl", &lines(&|i| serde_json::json!({ "text": format!("held out text number {i}, with words") })));
    let data = ["--set", "vars.pseudo_labels=../data/labels.jsonl", "--set", "vars.sft=../data/sft.jsonl", "--set", "vars.preferences=../data/prefs.jsonl", "--set", "vars.heldout=../data/heldout.jsonl"];
    let cpu = ["--set", "device=cpu", "--set", "dtype=f32", "--set", "vars.seq_len=16", "--set", "vars.batch=4", "--set", "vars.micro_batch=2", "--set", "vars.eval_tokens=64"];
    // The stepwise schedule reads only the pseudo-labels and the held-out text.
    let stepwise_data = [data[0], data[1], data[6], data[7]];
    for (manifest, teacher, data) in [
        ("paper/zephyr.toml", "../models/zephyr", &data[..]),
        ("paper/llama3.toml", "../models/llama3", &data[..]),
        ("paper/stepwise.toml", "../models/llama3", &stepwise_data[..]),
    ] {
        let teacher = format!("vars.teacher={teacher}");
        let mut args = vec!["run", manifest, "--dry-run", "--json", "--set", &teacher];
        args.extend(data);
        args.extend(cpu);
        let plan = t.run(&args);
        assert!(plan.statuses().iter().all(|(_, s)| s == "will_run"), "{manifest}: {}", plan.stderr());
    }
    let mut args = vec!["run", "paper/llama3.toml", "--json", "--until", "hybrid25", "--set", "vars.teacher=../models/llama3"];
    args.extend(data);
    args.extend(cpu);
    let out = t.run(&args);
    let mut ran = with_status(&out.statuses(), "ran");
    ran.sort();
    assert_eq!(ran, vec!["data", "distill50", "hybrid25", "hybrid50", "teacher"], "{}", out.stderr());
}

#[test]
fn the_ablations_manifest_plans() {
    let s = dry_run("ablations.toml", &[]);
    let names: Vec<&str> = s.iter().map(|(n, _)| n.as_str()).collect();
    for stage in ["init[fraction=0.125,init=random]", "contiguous25", "unfrozen50", "heldout[distill[contiguous25]]", "summary"] {
        assert!(names.contains(&stage), "{stage} missing: {names:?}");
    }
}

/// The GPU recipes plan too (on the CPU here: `--set device=cpu --set dtype=f32`), from a copy of the folder,
/// since they include the default and each other.
#[test]
fn the_gpu_recipes_plan() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("manifests");
    let t = TestRun::new();
    for rel in ["default.toml", "scripts/make_corpus.py", "h200/smollm2-hybrid.toml", "h200/smollm2-20m.toml", "h200/smollm2-speculative.toml"] {
        t.file(&format!("manifests/{rel}"), &std::fs::read_to_string(root.join(rel)).unwrap());
    }
    for recipe in ["smollm2-hybrid", "smollm2-20m", "smollm2-speculative"] {
        let out = t.run(&["run", &format!("manifests/h200/{recipe}.toml"), "--dry-run", "--json", "--set", "device=cpu", "--set", "dtype=f32"]);
        out.success();
        let names: Vec<String> = out.statuses().into_iter().map(|(n, _)| n).collect();
        assert!(names.iter().any(|n| n == "speculative"), "{recipe}: {names:?}");
        if recipe == "smollm2-speculative" {
            assert!(names.iter().any(|n| n == "verifier_answers") && names.iter().any(|n| n == "speculative_long"), "{names:?}");
        }
    }
}
