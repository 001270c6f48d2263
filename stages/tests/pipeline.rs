//! `teacher` and `eval` in a real engine run: a tiny GGUF becomes a Hugging Face folder, then is
//! evaluated on a corpus written by a command stage.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use distill_engine::exec::{self, Progress, RunOptions};
use distill_engine::manifest;
use distill_engine::record::StageStatus;
use distill_engine::stage::Registry;
use distill_engine::workspace::Workspace;

mod support;

const MANIFEST: &str = r#"
[experiment]
name = "teacher-eval"
description = "import a tiny teacher and evaluate it"

[stages.corpus]
kind = "command"
cmd = "mkdir -p out && printf '%s\n' '{\"text\": \"the cat sat on the mat\"}' '{\"messages\": [{\"role\": \"user\", \"content\": \"hello there\"}]}' > out/heldout.jsonl"
outs = ["out/heldout.jsonl"]

[stages.teacher]
kind = "teacher"
params = { source = { gguf = "tiny.gguf" } }

[stages.heldout]
kind = "eval"
params = { model = "@teacher", data = "@corpus", max_tokens = 1000, seq_len = 8, batch_size = 2 }
"#;

#[test]
fn teacher_then_eval_in_an_engine_run() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("tiny.gguf"), support::tiny_gguf(64, true)).unwrap();
    let path = tmp.path().join("distill.toml");
    std::fs::write(&path, MANIFEST).unwrap();
    let mut registry = Registry::builtin();
    distill_stages::register(&mut registry);
    let plan = manifest::build(&path, &[], &registry).expect("manifest builds");
    let opts = RunOptions { jobs: 1, threads: 1, ..RunOptions::default() };
    let sel = exec::select(&plan, &opts).expect("selection");
    let ws = Workspace::open(&plan.root, false, "test").expect("workspace");
    let record = exec::run(&plan, &registry, &ws, &sel, &opts, Arc::new(AtomicBool::new(false)), &Progress::new(true));
    for name in ["corpus", "teacher", "heldout"] {
        let s = record.stage(name).expect("stage in the record");
        assert_eq!(s.status, StageStatus::Ran, "{name}: {:?} {:?}", s.error, s.log_tail);
    }
    let teacher = record.stage("teacher").unwrap();
    let folder = teacher.outputs.values().next().unwrap().path.clone();
    assert!(folder.join("model.safetensors").is_file() && folder.join("tokenizer.json").is_file());
    let m = &record.stage("heldout").unwrap().metrics;
    // "the cat sat on the mat" is 22 byte-level tokens, the chat row's template gives "hello there" (11).
    assert_eq!(m["tokens"], 21.0 + 10.0, "{m:?}");
    assert!(m["perplexity"] > 1.0 && m["perplexity"].is_finite());
    assert!((0.0..=1.0).contains(&m["accuracy"]));
}
