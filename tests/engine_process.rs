//! Real processes: `kill -9` mid-run, two runs on one workspace, failures, retries and
//! `--keep-going`.

mod support;

use std::time::Duration;

use support::{TestRun, with_status};

/// s1 -> s2 (sleeps $SLEEP seconds after touching s2.started) -> s3.
const SLOW_CHAIN: &str = r#"
[stages.s1]
kind = "command"
cmd = "echo one > s1.txt"
outs = ["s1.txt"]

[stages.s2]
kind = "command"
cmd = "touch s2.started; sleep ${SLEEP:-0}; cat s1.txt > s2.txt; echo two >> s2.txt"
deps = ["s1.txt"]
outs = ["s2.txt"]

[stages.s3]
kind = "command"
cmd = "cat s2.txt > s3.txt"
deps = ["s2.txt"]
outs = ["s3.txt"]
"#;

#[test]
fn kill_9_mid_stage_then_rerun_redoes_only_the_interrupted_stage() {
    let t = TestRun::new();
    t.manifest(SLOW_CHAIN);
    let mut child = t.spawn(["run", "--json"], &[("SLEEP", "30")]);
    t.wait_for("s2.started", 20);
    // std's kill is SIGKILL on Unix: no handler, no cleanup.
    child.kill().unwrap();
    let _ = child.wait();
    std::thread::sleep(Duration::from_millis(300));
    assert!(!t.exists("s2.txt"), "the stage's command must die with distill");
    std::fs::remove_file(t.path().join("s2.started")).unwrap();
    let statuses = t.run_ok(&[]);
    assert_eq!(
        statuses,
        vec![("s1".into(), "cached".into()), ("s2".into(), "ran".into()), ("s3".into(), "ran".into())]
    );
    assert_eq!(t.read("s3.txt"), "one\ntwo\n");
    assert!(!t.distill_dir().join("tmp").exists() || std::fs::read_dir(t.distill_dir().join("tmp")).unwrap().count() == 0);
}

#[test]
fn a_second_run_is_refused_naming_the_holder_or_waits() {
    let t = TestRun::new();
    t.manifest(SLOW_CHAIN);
    let mut first = t.spawn(["run"], &[("SLEEP", "2")]);
    t.wait_for("s2.started", 20);
    let refused = t.run(["run"]);
    refused.code_is(3).stderr_contains("is busy").stderr_contains(&format!("pid {}", first.id()));
    let waited = t.run(["run", "--wait", "--json"]);
    assert!(first.wait().unwrap().success());
    waited.success();
    assert_eq!(with_status(&waited.statuses(), "cached").len(), 3);
}

#[test]
fn a_failure_stops_the_run_and_is_never_recorded_as_done() {
    let t = TestRun::new();
    t.manifest(
        r#"
[stages.ok]
kind = "command"
cmd = "echo ok > ok.txt"
outs = ["ok.txt"]

[stages.bad]
kind = "command"
cmd = "echo about to fail; exit 3"
needs = ["ok"]

[stages.after]
kind = "command"
cmd = "true"
needs = ["bad"]

[stages.other]
kind = "command"
cmd = "sleep 0.2; echo other > other.txt"
needs = ["ok"]
outs = ["other.txt"]
"#,
    );
    let out = t.run(["run", "--json", "--keep-going", "--jobs", "1"]);
    out.code_is(1);
    let s = out.statuses();
    assert_eq!(with_status(&s, "failed"), vec!["bad"]);
    assert_eq!(with_status(&s, "skipped"), vec!["after"]);
    assert_eq!(with_status(&s, "ran"), vec!["ok", "other"]);
    let run = &out.json()["stages"];
    let bad = run.as_array().unwrap().iter().find(|x| x["name"] == "bad").unwrap();
    assert!(bad["error"].as_str().unwrap().contains("exited with status 3"), "{bad}");
    // The failed stage is not cached: it runs again, the finished ones do not.
    let again = t.run(["run", "--json", "--keep-going"]);
    assert_eq!(with_status(&again.statuses(), "failed"), vec!["bad"]);
    assert_eq!(with_status(&again.statuses(), "cached"), vec!["ok", "other"]);
}

#[test]
fn a_missing_declared_out_fails_the_stage() {
    let t = TestRun::new();
    t.manifest("[stages.a]\nkind = \"command\"\ncmd = \"true\"\nouts = [\"never.txt\"]\n");
    let out = t.run(["run", "--json"]);
    out.code_is(1).stdout_contains("declared output `never.txt` was not produced");
}

#[test]
fn retries_rerun_a_flaky_stage() {
    let t = TestRun::new();
    t.manifest(
        "[stages.flaky]\nkind = \"command\"\nretries = 2\nouts = [\"f.txt\"]\ncmd = \"echo x >> tries; [ $(wc -l < tries) -ge 3 ] && echo done > f.txt\"\n",
    );
    assert_eq!(with_status(&t.run_ok(&[]), "ran"), vec!["flaky"]);
    assert_eq!(t.read("tries").lines().count(), 3);
}

#[test]
fn a_stale_lock_of_a_dead_process_is_taken_over() {
    let t = TestRun::new();
    t.manifest("[stages.a]\nkind = \"command\"\ncmd = \"true\"\n");
    t.run_ok(&[]);
    // What a crashed holder leaves: its identity, but no flock (the kernel dropped it).
    let dead = r#"{"pid":999999,"started":"2026-01-01T00:00:00Z","command":"distill run (crashed)"}"#;
    std::fs::write(t.distill_dir().join("lock"), dead).unwrap();
    let out = t.run(["run"]);
    out.success().stderr_contains("took over the lock of `distill run (crashed)` (pid 999999)");
}

#[test]
fn runs_answers_while_another_run_holds_the_workspace() {
    let t = TestRun::new();
    t.manifest(SLOW_CHAIN);
    t.run_ok(&[]);
    std::fs::remove_file(t.path().join("s2.started")).unwrap();
    let mut busy = t.spawn(["run", "--force", "s2"], &[("SLEEP", "2")]);
    t.wait_for("s2.started", 20);
    let runs = t.run(["runs", "--json"]).success().json();
    assert_eq!(runs["runs"].as_array().unwrap().len(), 2, "the finished run and the one in progress");
    assert!(busy.wait().unwrap().success());
}

/// `executor = "process"`: the stage runs in a `distill exec-stage` process of its own (its
/// command's parent is not the `distill run` process, as a local stage's is), its outputs are
/// stored and cached like any stage's, and a failure there fails the stage with its message.
#[test]
fn a_stage_with_the_process_executor_runs_in_a_process_of_its_own() {
    let t = TestRun::new();
    t.manifest(
        r#"
[stages.own]
kind = "command"
executor = "process"
cmd = "echo $PPID > own.txt"
outs = ["own.txt"]

[stages.here]
kind = "command"
cmd = "echo $PPID > here.txt"
outs = ["here.txt"]

[stages.broken]
kind = "command"
executor = "process"
cmd = "echo the reason >&2; exit 3"
"#,
    );
    let child = t.spawn(["run", "--keep-going", "--json"], &[]);
    let run_pid = child.id().to_string();
    let out = child.wait_with_output().unwrap();
    let record: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let status = |name: &str| record["stages"].as_array().unwrap().iter().find(|s| s["name"] == name).unwrap().clone();
    assert_eq!(status("own")["status"], "ran", "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(status("broken")["status"], "failed");
    assert!(status("broken")["error"].as_str().unwrap().contains("status 3"), "{}", status("broken"));
    let pid_in = |stage: &str, file: &str| {
        let stored = t.run(["path", &format!("@{stage}")]).success().stdout();
        let stored = std::path::Path::new(stored.trim());
        let file = if stored.is_dir() { stored.join(file) } else { stored.to_path_buf() };
        std::fs::read_to_string(file).unwrap().trim().to_string()
    };
    assert_eq!(pid_in("here", "here.txt"), run_pid, "a local stage runs in `distill run` itself");
    assert_ne!(pid_in("own", "own.txt"), run_pid, "the process executor's does not");
    let again = t.run(["run", "--json", "--keep-going"]).statuses();
    assert!(again.iter().any(|(n, s)| n == "own" && s == "cached"), "{again:?}");

    // A process that dies without its result (here not even a distill) fails the stage with
    // the end of what it printed.
    let out = t.command(["run", "--json", "--force", "own", "--only", "own"]).env("DISTILL_EXE", "/bin/sh").output().unwrap();
    let record: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let error = record["stages"][0]["error"].as_str().unwrap_or_default().to_string();
    assert!(error.contains("without a result") && error.contains("exec-stage"), "{error}");
}
