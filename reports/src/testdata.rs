//! Synthetic run records for tests, the benchmark and the browser test. Not a public API:
//! hidden from docs, kept here so unit tests, `tests/` and `benches/` share one fixture.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use chrono::{Duration, TimeZone, Utc};
use distill_engine::record::{
    ExperimentInfo, OutputRef, RunRecord, RunStatus, StageRun, StageStatus, StepMetric,
};
use serde_json::{Value, json};

/// A stage with nothing logged yet.
pub fn stage(name: &str, kind: &str, status: StageStatus, params: Value) -> StageRun {
    StageRun {
        name: name.into(),
        kind: kind.into(),
        status,
        reasons: Vec::new(),
        params,
        needs: Vec::new(),
        started_at: Some(Utc.with_ymd_and_hms(2025, 3, 1, 14, 0, 0).unwrap()),
        duration_s: Some(12.5),
        attempts: 1,
        key_hash: Some("9f2c4e1ab37d5e6f00112233445566778899aabbccddeeff0011223344556677".into()),
        key: None,
        outputs: BTreeMap::new(),
        metrics: BTreeMap::new(),
        step_metrics: None,
        log: None,
        error: None,
        log_tail: Vec::new(),
    }
}

/// An empty run named `name` with the given stages and edges.
pub fn run(name: &str, stages: Vec<StageRun>, edges: &[(&str, &str)]) -> RunRecord {
    let started = Utc.with_ymd_and_hms(2025, 3, 1, 14, 0, 0).unwrap();
    RunRecord {
        id: "20250301-140000-a1b2".into(),
        experiment: ExperimentInfo {
            name: name.into(),
            description: "Distill Llama-3.2-1B into a 50% Mamba hybrid".into(),
            seed: 42,
            device: "cuda:0".into(),
            dtype: "bf16".into(),
        },
        manifest: "manifests/hybrid.toml".into(),
        resolved_manifest: json!({"experiment": {"name": name, "seed": 42},
            "stages": {"distill50": {"kind": "distill", "params": {"lr": 0.0003}}}}),
        command: vec!["distill".into(), "run".into(), "manifests/hybrid.toml".into()],
        program_version: "0.1.0".into(),
        host: "gpu-box".into(),
        pid: None,
        started_at: started,
        finished_at: Some(started + Duration::seconds(3725)),
        status: RunStatus::Failed,
        stages,
        edges: edges.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect(),
    }
}

/// Writes `steps` training steps of the usual metrics into `dir/<stage>.jsonl`.
pub fn write_steps(dir: &Path, stage: &mut StageRun, steps: u64, seed: f64) {
    std::fs::create_dir_all(dir).unwrap();
    // Names may be hostile (`/`, `<`): name the file by a hash of the name instead.
    let h = stage.name.bytes().fold(seed as u64, |h, b| h.wrapping_mul(31).wrapping_add(b as u64));
    let path = dir.join(format!("steps-{h:016x}.jsonl"));
    let mut f = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    for step in 0..steps {
        let t = step as f64 / steps.max(1) as f64;
        let wiggle = ((step as f64 + seed) * 0.37).sin() * 0.05;
        for (name, value) in [
            ("loss", 3.0 * (-3.0 * t).exp() + 0.5 + wiggle),
            ("loss/kl", 2.0 * (-3.0 * t).exp() + 0.3 + wiggle),
            ("loss/ce", (-3.0 * t).exp() + 0.2),
            ("lr", 3e-4 * (1.0 - t)),
            ("grad_norm", 1.0 + wiggle * 4.0),
            ("tokens_per_s", 12000.0 + wiggle * 1e4),
        ] {
            let m = StepMetric { step, name: name.into(), value };
            writeln!(f, "{}", serde_json::to_string(&m).unwrap()).unwrap();
        }
    }
    stage.step_metrics = Some(path);
}

/// A hybrid-distillation run with every section: cached, ran, failed and skipped stages,
/// training curves, evals with a teacher, speculative decoding and the paper's ablations.
pub fn sample_run(dir: &Path) -> RunRecord {
    use StageStatus::*;
    let model = |name: &str, kind: &str, st, p: Value| {
        let mut s = stage(name, kind, st, p);
        s.outputs.insert(
            "model".into(),
            OutputRef { hash: "ab12cd34ef".into(), path: format!("/store/{name}").into(), bytes: 2_470_000_000 },
        );
        s
    };
    let eval = |name: &str, ppl: f64, teacher_ppl: Option<f64>| {
        let mut s = stage(name, "eval", Ran, json!({"model": "@x", "dataset": "wikitext"}));
        s.metrics.insert("perplexity".into(), ppl);
        s.metrics.insert("accuracy".into(), 0.61);
        if let Some(t) = teacher_ppl {
            s.metrics.insert("ppl_ratio_to_teacher".into(), ppl / t);
        }
        s
    };
    let mut teacher = model("teacher", "teacher", Cached, json!({"source": "meta-llama/Llama-3.2-1B"}));
    teacher.reasons = vec!["cache hit".into()];
    let init50 = model("init50", "init", Ran, json!({"teacher": "@teacher", "init": "attention", "attention_fraction": 0.5}));
    let init25 = model("init25", "init", Ran, json!({"teacher": "@teacher", "init": "attention", "attention_fraction": 0.25, "interleave": true}));
    let rand50 = model("init50_random", "init", Ran, json!({"teacher": "@teacher", "init": "random", "attention_fraction": 0.5}));
    let mut d50 = model("distill50", "distill", Ran, json!({"model": "@init50", "lr": 0.0003, "freeze": "mlp"}));
    d50.reasons = vec!["param lr: 0.0001 -> 0.0003".into()];
    write_steps(dir, &mut d50, 400, 1.0);
    let mut d50u = model("distill50_unfrozen", "distill", Ran, json!({"model": "@init50", "lr": 0.0003, "freeze": false}));
    write_steps(dir, &mut d50u, 300, 2.0);
    let d50r = model("distill50_random", "distill", Ran, json!({"model": "@init50_random", "freeze": "mlp"}));
    let d25 = model("distill25", "distill", Ran, json!({"model": "@init25", "freeze": "mlp"}));
    let mut spec = stage("speculative", "speculative", Ran, json!({"draft": "@distill50", "k": [1, 2, 3, 4]}));
    for (k, acc, tpr, sp) in [(1, 0.81, 1.8, 1.4), (2, 0.74, 2.4, 1.6), (3, 0.69, 2.9, 1.7), (4, 0.62, 3.3, 1.75)] {
        spec.metrics.insert(format!("k{k}/acceptance_rate"), acc);
        spec.metrics.insert(format!("k{k}/tokens_per_round"), tpr);
        spec.metrics.insert(format!("k{k}/speedup"), sp);
        spec.metrics.insert(format!("k{k}/tokens_per_s"), 240.0 * sp);
    }
    spec.metrics.insert("plain/tokens_per_s".into(), 240.0);
    // On graphs: the rates once under way, a round's cost and the acceptance it needs (none
    // doubles plain decoding at K = 4).
    for (k, under_way, round, even, double) in [(1, 0.9, 3.6, 0.3, Some(0.8)), (2, 1.1, 4.2, 0.45, Some(0.85)), (3, 1.2, 4.8, 0.5, Some(0.9)), (4, 1.25, 5.4, 0.55, None)] {
        spec.metrics.insert(format!("k{k}/decode_speedup"), under_way);
        spec.metrics.insert(format!("k{k}/round_ms"), round);
        spec.metrics.insert(format!("k{k}/acceptance_for_break_even"), even);
        if let Some(d) = double {
            spec.metrics.insert(format!("k{k}/acceptance_for_2x"), d);
        }
    }
    spec.metrics.insert("plain/decode_tokens_per_s".into(), 310.0);
    let mut sft = model("sft", "sft", Failed, json!({"model": "@distill50", "epochs": 1}));
    sft.error = Some("CUDA out of memory".into());
    sft.log_tail = vec!["step 10 loss 2.31".into(), "RuntimeError: CUDA out of memory".into()];
    let mut dpo = model("dpo", "dpo", Skipped, json!({"model": "@sft"}));
    dpo.reasons = vec!["upstream `sft` failed".into()];
    dpo.duration_s = None;
    let stages = vec![
        teacher, init50, init25, rand50, d50, d50u, d50r, d25,
        eval("eval_teacher", 8.0, None), eval("eval50", 8.3, Some(8.0)),
        eval("eval50_unfrozen", 9.9, None), eval("eval50_random", 31.0, Some(8.0)),
        eval("eval25", 8.8, Some(8.0)), spec, sft, dpo,
    ];
    run("hybrid-50", stages, &[
        ("teacher", "init50"), ("teacher", "init25"), ("teacher", "init50_random"),
        ("init50", "distill50"), ("init50", "distill50_unfrozen"),
        ("init50_random", "distill50_random"), ("init25", "distill25"),
        ("teacher", "eval_teacher"), ("distill50", "eval50"),
        ("distill50_unfrozen", "eval50_unfrozen"), ("distill50_random", "eval50_random"),
        ("distill25", "eval25"), ("distill50", "speculative"), ("teacher", "speculative"),
        ("distill50", "sft"), ("sft", "dpo"),
    ])
}

/// `stages` stages in a chain of layers; the first `trained` log `steps` steps each.
pub fn large_run(dir: &Path, stages: usize, trained: usize, steps: u64) -> RunRecord {
    let mut all = Vec::new();
    let mut edges = Vec::new();
    for i in 0..stages {
        let mut s = stage(&format!("stage{i:03}"), "distill", StageStatus::Ran, json!({"lr": 0.0003, "i": i}));
        s.metrics.insert("perplexity".into(), 8.0 + i as f64 / 10.0);
        if i < trained {
            write_steps(dir, &mut s, steps, i as f64);
        }
        if i >= 4 {
            edges.push((format!("stage{:03}", i - 4), s.name.clone()));
        }
        all.push(s);
    }
    let mut r = run("large", all, &[]);
    r.edges = edges;
    r
}

/// A payload that sets `window.pwned` and the title if any of it ever executes.
pub const HOSTILE: &str = "<script>window.pwned=1;document.title='pwned'</script>\"'><img src=x onerror=\"window.pwned=2\">";

/// A run whose every user-controlled string carries [`HOSTILE`].
pub fn hostile_run(dir: &Path) -> RunRecord {
    let name = format!("evil{HOSTILE}");
    let mut s = stage(&name, &format!("kind{HOSTILE}"), StageStatus::Failed, json!({ HOSTILE: HOSTILE }));
    s.reasons = vec![format!("param x: {HOSTILE}")];
    s.error = Some(HOSTILE.into());
    s.log_tail = vec![HOSTILE.into(), "</pre></section><script>window.pwned=3</script>".into()];
    s.metrics.insert(format!("metric{HOSTILE}"), 1.0);
    let mut steps = stage("train", "distill", StageStatus::Ran, json!({}));
    write_steps(dir, &mut steps, 50, 0.0);
    let mut r = run(&name, vec![s, steps], &[]);
    r.edges = vec![("train".into(), name.clone())];
    r.experiment.description = HOSTILE.into();
    r.command = vec!["distill".into(), "run".into(), HOSTILE.into()];
    r.resolved_manifest = json!({ "x": HOSTILE });
    r.host = HOSTILE.into();
    r
}
