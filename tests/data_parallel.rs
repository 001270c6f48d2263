//! Data parallelism across processes through the binary: `distill bench train --processes 2`
//! starts a second process, the two meet, and their distillation follows the one-process loss
//! curve at the same global batch (summation order apart); a `distill` stage with
//! `resources = { gpus = 2 }` and `DISTILL_ALLREDUCE=procs` starts its second rank as an
//! `exec-stage` job and ends where one process ends, and so do `sft` and `dpo`; a batch the
//! GPUs cannot share is refused when the manifest is planned.

mod support;

use std::process::Command;

use support::TestRun;

/// A teacher model folder shared by both runs of a comparison (a folder's weights are random).
fn teacher_dir() -> (tempfile::TempDir, std::path::PathBuf) {
    use distill_stages::data::fixtures::write_model_dir;
    use distill_stages::llama::LlamaConfig;
    let models = tempfile::tempdir().unwrap();
    let teacher = models.path().join("t");
    write_model_dir(&teacher, &LlamaConfig::new(258, 16, 32, 4, 4, 2, 4).with_max_seq_len(64));
    (models, teacher)
}

/// Runs `manifest` (its `{gpus}` filled in) with process ranks on two nominal GPUs, after
/// writing `files`; returns each of `stages`' metrics and their logs joined.
fn run_with_gpus(gpus: usize, manifest: &str, files: &[(&str, String)], stages: &[&str]) -> (Vec<serde_json::Value>, String) {
    let t = TestRun::new().env("DISTILL_ALLREDUCE", "procs").env("DISTILL_GPUS", "2");
    for (name, text) in files {
        t.file(name, text);
    }
    t.manifest(&manifest.replace("{gpus}", &gpus.to_string()));
    let out = t.run(["run", "--json"]);
    assert!(out.statuses().iter().all(|(_, status)| status == "ran"), "{}", out.stderr());
    let runs = t.run(["runs", "--json"]).success().json();
    let run_dir = std::fs::read_dir(t.distill_dir().join("runs")).unwrap().next().unwrap().unwrap().path();
    let metrics = stages.iter().map(|name| runs["runs"][0]["stages"].as_array().unwrap().iter().find(|s| s["name"] == *name).unwrap()["metrics"].clone()).collect();
    let logs = stages.iter().map(|name| std::fs::read_to_string(run_dir.join(format!("logs/{name}.log"))).unwrap()).collect();
    (metrics, logs)
}

/// Each step's loss, and rank 0's median time in the exchange.
fn losses(processes: usize, batch_per_process: usize) -> (Vec<f64>, f64) {
    let config = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden/tiny-gqa-untied/config.json");
    let out = Command::new(env!("CARGO_BIN_EXE_distill"))
        .args(["bench", "train", "--random", config, "--attention-fraction", "0.5", "--distill", "--micro-batch", "1", "--seq", "32"])
        .args(["--steps", "4", "--warmup", "0", "--lr", "1e-2", "--batch", &batch_per_process.to_string(), "--processes", &processes.to_string()])
        .output()
        .expect("distill runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}\n{stdout}", String::from_utf8_lossy(&out.stderr));
    let line = stdout.lines().find(|l| l.starts_with('{')).expect("a JSON result line");
    let r: serde_json::Value = serde_json::from_str(line).unwrap();
    assert_eq!(r["devices"], processes, "{line}");
    (r["losses"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect(), r["exchange_ms"].as_f64().unwrap())
}

#[test]
fn two_processes_follow_one_process_loss_curve_at_the_same_global_batch() {
    let (one, alone) = losses(1, 4);
    let (two, exchanged) = losses(2, 2);
    assert!(alone == 0.0 && exchanged > 0.0, "exchange time: one process {alone} ms, two {exchanged} ms");
    assert_eq!(one.len(), 4);
    assert!(one[3] < one[0], "trains: {one:?}");
    for (a, b) in one.iter().zip(&two) {
        assert!((a - b).abs() <= 1e-5 * a.abs(), "one process {one:?}, two {two:?}");
    }
}

/// The stage, run by the engine: rank 0 in the engine's process, rank 1 an `exec-stage` job.
#[test]
fn a_distill_stage_on_two_processes_ends_where_one_process_ends() {
    let (_models, teacher) = teacher_dir();
    let rows: String = (0..60).map(|i| serde_json::json!({ "text": format!("line {i} of the corpus, with some words {}", i * 7) }).to_string() + "\n").collect();
    let manifest = format!(
        r#"[experiment]
name = "dp"
device = "cpu"

[stages.teacher]
kind = "teacher"
params = {{ source = {{ hf_dir = {teacher:?} }} }}

[stages.corpus]
kind = "command"
cmd = "mkdir -p .data && cp corpus.jsonl .data/corpus.jsonl"
deps = ["corpus.jsonl"]
outs = [".data/corpus.jsonl"]

[stages.hybrid]
kind = "init"
params = {{ teacher = "@teacher", attention_fraction = 0.5 }}

[stages.distill]
kind = "distill"
params = {{ teacher = "@teacher", student = "@hybrid", data = "@corpus", tokens = 1024, seq_len = 16, batch = 4, micro_batch = 2, lr = 1e-2, warmup = 1 }}
resources = {{ gpus = {{gpus}} }}
"#
    );
    let run = |gpus| run_with_gpus(gpus, &manifest, &[("corpus.jsonl", rows.clone())], &["distill"]);
    let (one, two) = (run(1), run(2));
    assert!(two.1.contains("data parallel over 2 processes"), "{}", two.1);
    let kl = |m: &serde_json::Value, k: &str| m[k].as_f64().unwrap();
    assert_eq!(kl(&one.0[0], "val_kl_before"), kl(&two.0[0], "val_kl_before"), "the same start");
    let (a, b) = (kl(&one.0[0], "val_kl"), kl(&two.0[0], "val_kl"));
    assert!(a < kl(&one.0[0], "val_kl_before") / 2.0, "distills: {}", one.1);
    assert!((a - b).abs() <= 1e-4 * a, "one process {a}, two {b}:\n{}\n{}", one.1, two.1);
}

/// A step whose micro-batches the stage's GPUs cannot share is refused when the manifest is
/// planned, naming the line, not after the models have loaded (the H200 pipeline lost 40 s a
/// stage to it, session 7).
#[test]
fn an_uneven_split_is_refused_at_plan_time_naming_the_line() {
    let t = TestRun::new().env("DISTILL_GPUS", "2");
    t.manifest(
        r#"[experiment]
name = "dp"
device = "cpu"

[stages.teacher]
kind = "teacher"
params = { source = { hf_dir = "missing-model" } }

[stages.distill]
kind = "distill"
params = { teacher = "@teacher", student = "@teacher", data = "@teacher", batch = 16, micro_batch = 16 }
resources = { gpus = 2 }
"#,
    );
    let out = t.run(["status"]);
    let err = out.stderr();
    assert_ne!(out.code(), 0, "{err}");
    assert!(err.contains("makes 1 per step, which resources.gpus = 2 cannot share evenly") && err.contains("batch = 32"), "{err}");
    assert!(err.contains("distill.toml:11:83"), "the manifest line of the batch: {err}");
}

/// `sft` and `dpo` with `resources = { gpus = 2 }` train on two processes and end where one
/// process ends (the same global batch; the update is the same up to the order of additions).
#[test]
fn sft_and_dpo_stages_on_two_processes_end_where_one_process_ends() {
    let (_models, teacher) = teacher_dir();
    let chat: String = (0..40)
        .map(|i| serde_json::json!({ "messages": [{ "role": "user", "content": format!("add {i} and 1") }, { "role": "assistant", "content": format!("{}", i + 1) }] }).to_string() + "\n")
        .collect();
    let pairs: String = (0..40).map(|i| serde_json::json!({ "prompt": format!("is {i} fine?"), "chosen": format!("yes {i}"), "rejected": format!("no {i}") }).to_string() + "\n").collect();
    let manifest = format!(
        r#"[experiment]
name = "dp"
device = "cpu"

[stages.teacher]
kind = "teacher"
params = {{ source = {{ hf_dir = {teacher:?} }} }}

[stages.chat]
kind = "command"
cmd = "mkdir -p .data && cp chat.jsonl .data/chat.jsonl"
deps = ["chat.jsonl"]
outs = [".data/chat.jsonl"]

[stages.pairs]
kind = "command"
cmd = "mkdir -p .data && cp pairs.jsonl .data/pairs.jsonl"
deps = ["pairs.jsonl"]
outs = [".data/pairs.jsonl"]

[stages.hybrid]
kind = "init"
params = {{ teacher = "@teacher", attention_fraction = 0.5 }}

[stages.sft]
kind = "sft"
params = {{ student = "@hybrid", data = "@chat", teacher = "@teacher", beta = 0.1, batch = 4, micro_batch = 2, steps = 6, lr = 1e-2, warmup = 1, validation = 0.2 }}
resources = {{ gpus = {{gpus}} }}

[stages.dpo]
kind = "dpo"
params = {{ student = "@sft", data = "@pairs", reference = "self", beta = 0.1, batch = 4, micro_batch = 2, steps = 6, lr = 1e-2, warmup = 1, validation = 0.2 }}
resources = {{ gpus = {{gpus}} }}
"#
    );
    let files = [("chat.jsonl", chat), ("pairs.jsonl", pairs)];
    let (one, two) = (run_with_gpus(1, &manifest, &files, &["sft", "dpo"]), run_with_gpus(2, &manifest, &files, &["sft", "dpo"]));
    assert_eq!(two.1.matches("data parallel over 2 processes").count(), 2, "{}", two.1);
    let m = |v: &serde_json::Value, k: &str| v[k].as_f64().unwrap_or_else(|| panic!("{k} in {v}"));
    let close = |a: f64, b: f64, what: &str| assert!((a - b).abs() <= 1e-4 * a.abs().max(1e-3), "{what}: one process {a}, two {b}\n{}\n{}", one.1, two.1);
    assert!(m(&one.0[0], "val_loss") < m(&one.0[0], "val_loss_before"), "sft trains: {}", one.1);
    close(m(&one.0[0], "val_loss"), m(&two.0[0], "val_loss"), "sft val_loss");
    assert!(m(&one.0[1], "val_margin") > m(&one.0[1], "val_margin_before"), "dpo trains: {}", one.1);
    close(m(&one.0[1], "val_margin"), m(&two.0[1], "val_margin"), "dpo val_margin");
}
