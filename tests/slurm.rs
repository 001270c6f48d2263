//! The Slurm executor against a real single-node Slurm (`.ci/slurm-up` starts one). Skipped
//! with a note where no controller answers, unless CI is set.

mod support;

use std::process::Command;
use std::time::Duration;

use support::{TestRun, with_status};

fn slurm_ready() -> bool {
    let up = Command::new("sinfo").args(["-h", "-o", "%T"]).output().map(|o| o.status.success() && !o.stdout.is_empty()).unwrap_or(false);
    if !up {
        assert!(std::env::var_os("CI").is_none(), "CI must run the Slurm tests: run .ci/slurm-up first");
        eprintln!("skipped: no Slurm controller answers (run .ci/slurm-up)");
    }
    up
}

/// Jobs Slurm knows of whose working folder is this test's.
fn jobs_in(t: &TestRun) -> Vec<String> {
    let out = Command::new("scontrol").args(["show", "jobs", "-o"]).output().unwrap();
    let dir = t.path().canonicalize().unwrap().display().to_string();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains(&format!("WorkDir={dir} ")) || l.ends_with(&format!("WorkDir={dir}")))
        .map(|l| l.split_whitespace().find_map(|kv| kv.strip_prefix("JobState=")).unwrap_or("?").to_string())
        .collect()
}

const FAN_OUT: &str = r#"
[stages.source]
kind = "command"
cmd = "seq 1 20 > numbers.txt"
outs = ["numbers.txt"]

[stages.part]
kind = "command"
foreach = [2, 3, 5]
cmd = "awk '$1 % {{ item }} == 0' numbers.txt > div{{ item }}.txt; echo '{\"name\": \"count\", \"value\": 1}' >> $DISTILL_METRICS"
deps = ["numbers.txt"]
outs = ["div{{ item }}.txt"]

[stages.join]
kind = "command"
cmd = "cat div2.txt div3.txt div5.txt > all.txt"
deps = ["div2.txt", "div3.txt", "div5.txt"]
outs = ["all.txt"]
"#;

fn record_hashes(t: &TestRun) -> Vec<(String, String, String)> {
    let runs = t.run(["runs", "--json"]).success().json();
    let id = runs["runs"].as_array().unwrap().last().unwrap()["id"].as_str().unwrap().to_string();
    let rec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(t.distill_dir().join("runs").join(id).join("run.json")).unwrap()).unwrap();
    let mut v: Vec<_> = rec["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["name"].as_str().unwrap().into(), s["key_hash"].as_str().unwrap().into(), s["outputs"]["main"]["hash"].as_str().unwrap().into()))
        .collect();
    v.sort();
    v
}

#[test]
fn a_fan_out_runs_on_slurm_to_the_same_outputs_and_cache_as_locally() {
    if !slurm_ready() {
        return;
    }
    let local = TestRun::new();
    local.manifest(FAN_OUT);
    local.run_ok(&[]);
    let remote = TestRun::new();
    remote.manifest(FAN_OUT);
    let s = remote.run_ok(&["--executor", "slurm"]);
    assert_eq!(with_status(&s, "ran").len(), 5);
    assert_eq!(remote.read("all.txt"), local.read("all.txt"));
    assert_eq!(record_hashes(&remote), record_hashes(&local), "same keys and output hashes");
    assert_eq!(jobs_in(&remote).len(), 5, "one job per stage");
    let out = Command::new("scontrol").args(["show", "jobs", "-o"]).output().unwrap();
    let dir = remote.path().canonicalize().unwrap().display().to_string();
    let array_tasks = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains(&format!("WorkDir={dir}")) && l.contains("JobName=distill:part[]") && l.contains("ArrayTaskId="))
        .count();
    assert_eq!(array_tasks, 3, "the family went as one job array");
    let again = remote.run_ok(&["--executor", "slurm"]);
    assert_eq!(with_status(&again, "cached").len(), 5);
    assert_eq!(jobs_in(&remote).len(), 5, "a rerun with nothing changed submits nothing");
}

#[test]
fn a_failing_job_fails_its_stage_and_skips_descendants() {
    if !slurm_ready() {
        return;
    }
    let t = TestRun::new();
    t.manifest(
        "[experiment]\nexecutor = \"slurm\"\n\n[stages.bad]\nkind = \"command\"\ncmd = \"echo broken >&2; exit 4\"\n\n[stages.after]\nkind = \"command\"\ncmd = \"true\"\nneeds = [\"bad\"]\n",
    );
    let out = t.run(["run", "--json"]);
    out.code_is(1).stdout_contains("Slurm job").stdout_contains("exited with status 4");
    let s = out.statuses();
    assert_eq!(with_status(&s, "failed"), vec!["bad"]);
    assert_eq!(with_status(&s, "skipped"), vec!["after"]);
    let log = std::fs::read_dir(t.distill_dir().join("runs")).unwrap().next().unwrap().unwrap().path().join("logs/bad.log");
    assert!(std::fs::read_to_string(log).unwrap().contains("broken"), "the job's output is in the stage log");
}

#[test]
fn a_job_over_its_time_limit_is_reported_as_such() {
    if !slurm_ready() {
        return;
    }
    let t = TestRun::new();
    t.manifest("[stages.slow]\nkind = \"command\"\nexecutor = \"slurm\"\nresources = { time = \"1\" }\ncmd = \"sleep 300\"\n");
    let out = t.run(["run", "--json"]);
    out.code_is(1).stdout_contains("hit its time limit");
}

#[test]
fn interrupting_a_run_cancels_its_jobs_and_records_nothing() {
    if !slurm_ready() {
        return;
    }
    let t = TestRun::new();
    t.manifest("[stages.long]\nkind = \"command\"\ncmd = \"touch started; sleep 300; echo done > long.txt\"\nouts = [\"long.txt\"]\n");
    let mut child = t.spawn(["run", "--executor", "slurm"], &[]);
    t.wait_for("started", 60);
    Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    let status = child.wait().unwrap();
    assert!(!status.success());
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while jobs_in(&t).iter().any(|s| ["RUNNING", "PENDING", "COMPLETING", "CONFIGURING"].contains(&s.as_str())) {
        assert!(std::time::Instant::now() < deadline, "jobs still running: {:?}", jobs_in(&t));
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(jobs_in(&t).iter().all(|s| s == "CANCELLED"), "{:?}", jobs_in(&t));
    let planned = t.run(["status", "--json"]).statuses();
    assert_eq!(with_status(&planned, "will_run"), vec!["long"]);
}

#[test]
fn no_sbatch_on_the_path_is_said_plainly() {
    let t = TestRun::new().env("PATH", "/nonexistent");
    t.manifest("[stages.a]\nkind = \"command\"\ncmd = \"true\"\n");
    t.run(["run", "--executor", "slurm", "--json"]).code_is(1).stdout_contains("no `sbatch` on the PATH");
}

#[test]
fn a_rejected_submission_names_slurms_reason() {
    if !slurm_ready() {
        return;
    }
    let t = TestRun::new();
    t.manifest("[stages.gpu]\nkind = \"command\"\nexecutor = \"slurm\"\nresources = { gpus = 1 }\ncmd = \"true\"\n");
    t.run(["run", "--json"]).code_is(1).stdout_contains("Slurm rejected the job").stdout_contains("gres");
}
