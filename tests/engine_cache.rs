//! The cache on real runs: no-op reruns, exact reruns after a change, early cutoff,
//! restoring deleted outs, the run cache and forcing.

mod support;

use support::{TestRun, chain_manifest, with_status};

#[test]
fn first_run_runs_all_and_a_rerun_runs_nothing() {
    let t = TestRun::new();
    t.manifest(&chain_manifest(5, None));
    let first = t.run_ok(&[]);
    assert_eq!(with_status(&first, "ran").len(), 5);
    assert_eq!(t.read("s5.txt"), "v1\nv2\nv3\nv4\nv5\n");
    let second = t.run_ok(&[]);
    assert_eq!(with_status(&second, "cached").len(), 5, "{second:?}");
}

#[test]
fn changing_one_param_of_a_50_chain_reruns_exactly_its_suffix() {
    let t = TestRun::new();
    t.manifest(&chain_manifest(50, None));
    t.run_ok(&["--jobs", "2"]);
    t.manifest(&chain_manifest(50, Some((20, "changed"))));
    let dry = t.run(["status", "--json"]);
    let planned = dry.statuses();
    assert_eq!(with_status(&planned, "will_run"), vec!["s20"]);
    assert_eq!(with_status(&planned, "may_run").len(), 30);
    t.run(["explain", "s20"]).success().stdout_contains("param params.v: v20 -> changed");
    let statuses = t.run_ok(&[]);
    let ran = with_status(&statuses, "ran");
    let expected: Vec<String> = (20..=50).map(|i| format!("s{i}")).collect();
    assert_eq!(ran, expected);
    assert_eq!(with_status(&statuses, "cached").len(), 19);
}

#[test]
fn early_cutoff_keeps_descendants_cached() {
    let t = TestRun::new();
    let m = |note: &str| {
        format!(
            r#"
[stages.a]
kind = "command"
cmd = "echo same > a.txt # {{{{ params.note }}}}"
outs = ["a.txt"]
params = {{ note = "{note}" }}

[stages.b]
kind = "command"
cmd = "cat a.txt a.txt > b.txt"
deps = ["a.txt"]
outs = ["b.txt"]
"#
        )
    };
    t.manifest(&m("one"));
    t.run_ok(&[]);
    t.manifest(&m("two"));
    let planned = t.run(["run", "--dry-run", "--json"]).statuses();
    assert_eq!(planned, vec![("a".into(), "will_run".into()), ("b".into(), "may_run".into())]);
    let statuses = t.run_ok(&[]);
    assert_eq!(statuses, vec![("a".into(), "ran".into()), ("b".into(), "cached".into())]);
}

#[test]
fn deleted_outs_are_restored_from_the_store() {
    let t = TestRun::new();
    t.manifest(&chain_manifest(3, None));
    t.run_ok(&[]);
    std::fs::remove_file(t.path().join("s2.txt")).unwrap();
    std::fs::write(t.path().join("s3.txt"), "tampered").unwrap();
    let statuses = t.run_ok(&[]);
    assert_eq!(with_status(&statuses, "cached").len(), 3);
    assert_eq!(t.read("s2.txt"), "v1\nv2\n");
    assert_eq!(t.read("s3.txt"), "v1\nv2\nv3\n");
}

#[test]
fn switching_a_param_back_reuses_the_earlier_outputs() {
    let t = TestRun::new();
    t.manifest(&chain_manifest(2, None));
    t.run_ok(&[]);
    t.manifest(&chain_manifest(2, Some((1, "other"))));
    assert_eq!(with_status(&t.run_ok(&[]), "ran").len(), 2);
    t.manifest(&chain_manifest(2, None));
    let back = t.run_ok(&[]);
    assert_eq!(with_status(&back, "cached").len(), 2, "{back:?}");
    assert_eq!(t.read("s2.txt"), "v1\nv2\n");
}

#[test]
fn force_reruns_and_external_deps_are_hashed() {
    let t = TestRun::new();
    t.file("input.txt", "hello\n").manifest(
        r#"
[stages.copy]
kind = "command"
cmd = "cp input.txt copy.txt"
deps = ["input.txt"]
outs = ["copy.txt"]
"#,
    );
    t.run_ok(&[]);
    assert_eq!(with_status(&t.run_ok(&["--force", "copy"]), "ran"), vec!["copy"]);
    // Same bytes, new mtime: no rerun.
    t.file("input.txt", "hello\n");
    assert_eq!(with_status(&t.run_ok(&[]), "cached"), vec!["copy"]);
    t.file("input.txt", "changed\n");
    t.run(["explain", "copy"]).success().stdout_contains("input input.txt:");
    assert_eq!(with_status(&t.run_ok(&[]), "ran"), vec!["copy"]);
    assert_eq!(t.read("copy.txt"), "changed\n");
}
