//! Data parallelism across processes through the binary: `distill bench train --processes 2`
//! starts a second process, the two meet, and their distillation follows the one-process loss
//! curve at the same global batch (summation order apart).

use std::process::Command;

fn losses(processes: usize, batch_per_process: usize) -> Vec<f64> {
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
    r["losses"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect()
}

#[test]
fn two_processes_follow_one_process_loss_curve_at_the_same_global_batch() {
    let one = losses(1, 4);
    let two = losses(2, 2);
    assert_eq!(one.len(), 4);
    assert!(one[3] < one[0], "trains: {one:?}");
    for (a, b) in one.iter().zip(&two) {
        assert!((a - b).abs() <= 1e-5 * a.abs(), "one process {one:?}, two {two:?}");
    }
}
