//! `teacher` -> `init` -> `eval` in a real engine run: a tiny GGUF teacher becomes a 50% Mamba-2
//! hybrid folder in the reference layout, which `eval` then opens like any model.

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
name = "teacher-init-eval"
description = "convert a tiny teacher into a hybrid and evaluate it"

[stages.corpus]
kind = "command"
cmd = "mkdir -p out && printf '%s\n' '{\"text\": \"the cat sat on the mat\"}' > out/heldout.jsonl"
outs = ["out/heldout.jsonl"]

[stages.teacher]
kind = "teacher"
params = { source = { gguf = "tiny.gguf" } }

[stages.hybrid50]
kind = "init"
params = { teacher = "@teacher", attention_fraction = 0.5, mixer = "mamba2", init = "attention", chunk_size = 4 }

[stages.heldout]
kind = "eval"
params = { model = "@hybrid50", data = "@corpus", max_tokens = 1000, seq_len = 8, batch_size = 2 }
"#;

#[test]
fn teacher_then_init_then_eval_in_an_engine_run() {
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
    for name in ["corpus", "teacher", "hybrid50", "heldout"] {
        let s = record.stage(name).expect("stage in the record");
        assert_eq!(s.status, StageStatus::Ran, "{name}: {:?} {:?}", s.error, s.log_tail);
    }
    let hybrid = record.stage("hybrid50").unwrap();
    let folder = hybrid.outputs.values().next().unwrap().path.clone();
    let mamba: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(folder.join("mamba_config.json")).unwrap()).unwrap();
    // 2 layers at 50%: layer 1 keeps attention, layer 0 is Mamba-2 (ngroups = 4 heads, d_state = head_dim 8).
    assert_eq!(mamba["attn_layers"], serde_json::json!([1]));
    assert_eq!(mamba["ssm_cfg"]["ngroups"], 4);
    assert_eq!(mamba["ssm_cfg"]["d_state"], 8);
    assert_eq!(hybrid.metrics["mamba_layers"], 1.0);
    let m = &record.stage("heldout").unwrap().metrics;
    assert_eq!(m["tokens"], 21.0, "{m:?}");
    assert!(m["perplexity"].is_finite() && m["perplexity"] > 1.0);
}
