//! Manifest features on real runs: families, includes, `--set`, partial runs, frozen
//! stages, metrics in run records, gc, `path` and `export`, DAG views and the schema.

mod support;

use support::{TestRun, with_status};

const FAMILIES: &str = r#"
[vars]
base = 10

[stages.seed]
kind = "command"
cmd = "echo {{ vars.base }} > seed.txt"
outs = ["seed.txt"]

# A chain: each member reads its predecessor's out, the first reads `start`'s.
[stages.step]
kind = "command"
foreach = [1, 2, 3]
start = "seed"
cmd = "echo $(( $(cat {{ params.input }}) + {{ item }} )) > step{{ item }}.txt"
params = { input = "{{ 'seed.txt' if prev == 'seed' else 'step' ~ (item - 1) ~ '.txt' }}" }
deps = ["{{ params.input }}"]
outs = ["step{{ item }}.txt"]

[stages.sweep]
kind = "command"
matrix = { lr = [0.1, 0.2], layers = [2, 4] }
cmd = "echo {{ matrix.lr }} {{ matrix.layers }} > sweep-{{ matrix.lr }}-{{ matrix.layers }}.txt"
outs = ["sweep-{{ matrix.lr }}-{{ matrix.layers }}.txt"]

[stages.collect]
kind = "command"
needs = ["sweep"]
cmd = "cat sweep-*.txt | wc -l > collect.txt"
outs = ["collect.txt"]
"#;

#[test]
fn foreach_chains_and_matrix_sweeps_expand_into_named_stages() {
    let t = TestRun::new();
    t.manifest(FAMILIES);
    let s = t.run_ok(&[]);
    let names: Vec<&str> = s.iter().map(|(n, _)| n.as_str()).collect();
    for n in ["step[1]", "step[2]", "step[3]", "sweep[lr=0.1,layers=2]", "sweep[lr=0.2,layers=4]", "collect"] {
        assert!(names.contains(&n), "{n} missing from {names:?}");
    }
    assert_eq!(t.read("step3.txt"), "16\n");
    assert_eq!(t.read("collect.txt").trim(), "4");
    let dag = t.run(["dag"]).success().stdout();
    assert!(dag.contains("step[2] (command)  <- step[1]"), "{dag}");
    // Changing the family's start value reruns the whole chain.
    let s = t.run_ok(&["--set", "vars.base=20"]);
    assert_eq!(with_status(&s, "ran"), vec!["seed", "step[1]", "step[2]", "step[3]"]);
    assert_eq!(t.read("step3.txt"), "26\n");
}

#[test]
fn includes_are_extended_and_set_overrides_both() {
    let t = TestRun::new();
    t.file(
        "base.toml",
        "[experiment]\nname = \"base\"\nseed = 1\n\n[vars]\nword = \"base\"\n\n[stages.say]\nkind = \"command\"\ncmd = \"echo {{ vars.word }} {{ experiment.seed }} > say.txt\"\nouts = [\"say.txt\"]\n",
    );
    t.manifest("include = [\"base.toml\"]\n\n[vars]\nword = \"derived\"\n");
    t.run_ok(&[]);
    assert_eq!(t.read("say.txt"), "derived 1\n");
    t.run_ok(&["--set", "seed=5", "--set", "word=cli"]);
    assert_eq!(t.read("say.txt"), "cli 5\n");
    t.run_ok(&["--set", "stages.say.cmd=echo direct > say.txt"]);
    assert_eq!(t.read("say.txt"), "direct\n");
}

const DIAMOND: &str = r#"
[stages.a]
kind = "command"
cmd = "echo a > a.txt"
outs = ["a.txt"]

[stages.b]
kind = "command"
cmd = "cat a.txt > b.txt; echo b >> b.txt"
deps = ["a.txt"]
outs = ["b.txt"]

[stages.c]
kind = "command"
cmd = "cat a.txt > c.txt; echo c >> c.txt"
deps = ["a.txt"]
outs = ["c.txt"]

[stages.d]
kind = "command"
cmd = "cat b.txt c.txt > d.txt"
deps = ["b.txt", "c.txt"]
outs = ["d.txt"]
"#;

#[test]
fn only_until_and_downstream_select_parts_of_the_dag() {
    let t = TestRun::new();
    t.manifest(DIAMOND);
    let s = t.run_ok(&["--until", "b"]);
    assert_eq!(with_status(&s, "ran"), vec!["a", "b"]);
    let s = t.run_ok(&["--downstream", "c"]);
    assert_eq!(with_status(&s, "ran"), vec!["c", "d"]);
    let s = t.run_ok(&["--only", "b", "--force", "b"]);
    assert_eq!(s, vec![("b".to_string(), "ran".to_string())]);
    t.run(["run", "--only", "nosuch"]).code_is(1).stderr_contains("no stage or family named `nosuch`");
}

#[test]
fn frozen_stages_keep_their_outputs_despite_changes() {
    let t = TestRun::new();
    let m = |word: &str, frozen: bool| {
        format!("[stages.a]\nkind = \"command\"\nfrozen = {frozen}\ncmd = \"echo {word} > a.txt\"\nouts = [\"a.txt\"]\n")
    };
    t.manifest(&m("one", true));
    t.run_ok(&[]);
    t.manifest(&m("two", true));
    assert_eq!(with_status(&t.run_ok(&[]), "cached"), vec!["a"]);
    assert_eq!(t.read("a.txt"), "one\n");
    t.manifest(&m("two", false));
    assert_eq!(with_status(&t.run_ok(&[]), "ran"), vec!["a"]);
}

#[test]
fn metrics_land_in_the_run_record_and_outputs_can_be_found_and_exported() {
    let t = TestRun::new();
    t.manifest(
        r#"
[stages.train]
kind = "command"
cmd = """
for s in 1 2 3; do echo "{\\"step\\": $s, \\"name\\": \\"loss\\", \\"value\\": $((10 - s))}" >> "$DISTILL_METRICS"; done
echo '{"name": "perplexity", "value": 3.5}' >> "$DISTILL_METRICS"
mkdir -p model && echo weights > model/w.bin
"""
outs = ["model"]
"#,
    );
    t.run_ok(&[]);
    let runs = t.run(["runs", "--json"]).success().json();
    let run = &runs["runs"][0];
    assert_eq!(run["stages"][0]["metrics"]["perplexity"], 3.5);
    let id = run["id"].as_str().unwrap();
    let record: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(t.distill_dir().join("runs").join(id).join("run.json")).unwrap()).unwrap();
    let steps = record["stages"][0]["step_metrics"].as_str().unwrap();
    assert_eq!(std::fs::read_to_string(steps).unwrap().lines().count(), 3);
    let path = t.run(["path", "@train"]).success().stdout();
    assert!(path.trim().ends_with("/model"), "{path}");
    assert_eq!(std::fs::read_to_string(format!("{}/w.bin", path.trim())).unwrap(), "weights\n");
    let out = t.path().join("shared");
    t.run(["export", "@train", out.to_str().unwrap()]).success();
    assert_eq!(std::fs::read_to_string(out.join("w.bin")).unwrap(), "weights\n");
}

#[test]
fn gc_keeps_what_kept_runs_reference() {
    let t = TestRun::new();
    let m = |v: &str| format!("[stages.a]\nkind = \"command\"\ncmd = \"echo {v} > a.txt\"\nouts = [\"a.txt\"]\n");
    for v in ["one", "two", "three"] {
        t.manifest(&m(v));
        t.run_ok(&[]);
    }
    let store = || std::fs::read_dir(t.distill_dir().join("store")).unwrap().count();
    assert_eq!(store(), 3);
    t.run(["gc", "--keep-last", "1"]).success().stdout_contains("removed 2 runs and 2 stored outputs");
    assert_eq!(store(), 1);
    assert_eq!(with_status(&t.run_ok(&[]), "cached"), vec!["a"]);
    t.manifest(&m("one"));
    assert_eq!(with_status(&t.run_ok(&[]), "ran"), vec!["a"], "its outputs were collected");
}

#[test]
fn dag_formats_and_schema() {
    let t = TestRun::new();
    t.manifest(DIAMOND);
    let dot = t.run(["dag", "--format", "dot"]).success().stdout();
    assert!(dot.starts_with("digraph distill {") && dot.matches("->").count() == 4, "{dot}");
    let mermaid = t.run(["dag", "--format", "mermaid"]).success().stdout();
    assert!(mermaid.starts_with("graph LR") && mermaid.matches("-->").count() == 4, "{mermaid}");
    let schema = t.run(["schema"]).success().json();
    assert_eq!(schema["properties"]["stages"]["additionalProperties"]["properties"]["kind"]["enum"][0], "command");
}

#[test]
fn report_writes_html_for_the_last_run_and_compares_two() {
    let t = TestRun::new();
    t.manifest(DIAMOND);
    t.run_ok(&[]);
    let html = t.run(["report"]).success().stdout();
    let text = std::fs::read_to_string(html.trim()).unwrap();
    assert!(text.contains("<svg") && text.contains("stage-d"), "a DAG and a section per stage");
    assert!(std::path::Path::new(html.trim()).with_file_name("report.json").exists());
    t.run_ok(&["--force", "a"]);
    let runs = t.run(["runs", "--json"]).success().json();
    let ids: Vec<&str> = runs["runs"].as_array().unwrap().iter().map(|r| r["id"].as_str().unwrap()).collect();
    let cmp = t.run(["report", ids[0], ids[1]]).success().stdout();
    assert!(cmp.contains("-vs-") && std::path::Path::new(cmp.trim()).exists(), "{cmp}");
}

#[test]
fn a_report_stage_waits_for_all_and_reruns_only_when_something_ran() {
    let t = TestRun::new();
    t.manifest(&format!("{DIAMOND}\n[stages.summary]\nkind = \"report\"\n"));
    let s = t.run_ok(&[]);
    assert_eq!(s.last().unwrap(), &("summary".to_string(), "ran".to_string()), "it runs last");
    let html = t.run(["path", "@summary/report.html"]).success().stdout();
    assert!(std::fs::read_to_string(html.trim()).unwrap().contains("stage-d"));
    assert_eq!(with_status(&t.run_ok(&[]), "cached").len(), 5, "nothing ran, nothing to report anew");
    let s = t.run_ok(&["--force", "b"]);
    assert_eq!(with_status(&s, "ran"), vec!["b", "summary"], "d is cut off early, the report is not");
}

#[test]
fn fetch_downloads_a_pypi_package_once() {
    let t = TestRun::new();
    t.manifest("[stages.six]\nkind = \"fetch\"\nparams = { pypi = \"six\", version = \"1.16.0\" }\n");
    assert_eq!(with_status(&t.run_ok(&[]), "ran"), vec!["six"]);
    let module = t.run(["path", "@six/six.py"]).success().stdout();
    assert!(std::fs::read_to_string(module.trim()).unwrap().contains("__version__ = \"1.16.0\""));
    assert_eq!(with_status(&t.run_ok(&[]), "cached"), vec!["six"], "a second run fetches nothing");
    let bad = TestRun::new();
    bad.manifest("[stages.x]\nkind = \"fetch\"\nparams = { pypi = \"six\", debian = \"hostname\" }\n");
    bad.run(["run"]).code_is(2).stderr_contains("exactly one of `pypi` or `debian`");
}

/// An air-gapped machine: `DISTILL_FETCH_MIRROR` names a folder of package files and fetches
/// read only from it (pip with `--no-index`, the matching `.deb`).
#[test]
fn fetch_reads_only_from_a_mirror_folder() {
    let mirror = tempfile::tempdir().unwrap();
    let m = mirror.path();
    // A real wheel and a real .deb, built here so no network is needed.
    let wheel = "import sys, zipfile\nz = zipfile.ZipFile(sys.argv[1] + '/mirrorpkg-1.0-py3-none-any.whl', 'w')\n\
        z.writestr('mirrorpkg/__init__.py', 'ANSWER = 42\\n')\n\
        z.writestr('mirrorpkg-1.0.dist-info/METADATA', 'Metadata-Version: 2.1\\nName: mirrorpkg\\nVersion: 1.0\\n')\n\
        z.writestr('mirrorpkg-1.0.dist-info/WHEEL', 'Wheel-Version: 1.0\\nGenerator: test\\nRoot-Is-Purelib: true\\nTag: py3-none-any\\n')\n\
        z.writestr('mirrorpkg-1.0.dist-info/RECORD', '')\nz.close()\n";
    assert!(std::process::Command::new("python3").args(["-c", wheel]).arg(m).status().unwrap().success());
    let deb = m.join("deb");
    std::fs::create_dir_all(deb.join("DEBIAN")).unwrap();
    std::fs::create_dir_all(deb.join("usr/share/mirrordoc")).unwrap();
    std::fs::write(deb.join("DEBIAN/control"), "Package: mirrordoc\nVersion: 2.0\nArchitecture: all\nMaintainer: t <t@t>\nDescription: test\n").unwrap();
    std::fs::write(deb.join("usr/share/mirrordoc/README"), "from the mirror\n").unwrap();
    let built = std::process::Command::new("dpkg-deb").args(["--build", "--root-owner-group"]).arg(&deb).arg(m.join("mirrordoc_2.0_all.deb")).output();
    if !built.is_ok_and(|o| o.status.success()) {
        assert!(std::env::var_os("CI").is_none(), "CI has dpkg-deb");
        eprintln!("skipped: no working dpkg-deb here");
        return;
    }
    let t = TestRun::new().env("DISTILL_FETCH_MIRROR", m.to_str().unwrap());
    t.manifest("[stages.pkg]\nkind = \"fetch\"\nparams = { pypi = \"mirrorpkg\", version = \"1.0\" }\n\n\
        [stages.doc]\nkind = \"fetch\"\nparams = { debian = \"mirrordoc\" }\n\n\
        [stages.absent]\nkind = \"fetch\"\nparams = { debian = \"not-in-the-mirror\" }\n");
    let out = t.run(["run", "--keep-going", "--json"]);
    let s = out.statuses();
    let mut ran = with_status(&s, "ran");
    ran.sort();
    assert_eq!(ran, vec!["doc", "pkg"], "{}", out.stderr());
    assert_eq!(with_status(&s, "failed"), vec!["absent"]);
    let init = t.run(["path", "@pkg/mirrorpkg/__init__.py"]).success().stdout();
    assert_eq!(std::fs::read_to_string(init.trim()).unwrap(), "ANSWER = 42\n");
    let readme = t.run(["path", "@doc/usr/share/mirrordoc/README"]).success().stdout();
    assert_eq!(std::fs::read_to_string(readme.trim()).unwrap(), "from the mirror\n");
}

/// Issue 10's scheduling half: on a machine with two GPUs, two stages that each want one run
/// side by side on different GPUs (`CUDA_VISIBLE_DEVICES` for commands, `cuda:N` for stages in
/// the process); a stage that wants both waits for them; a CPU stage sees no GPU choice.
#[test]
fn stages_that_each_want_a_gpu_get_different_ones() {
    let t = TestRun::new().env("DISTILL_GPUS", "2");
    let stage = |name: &str, gpus: usize, deps: &str| {
        format!("[stages.{name}]\nkind = \"command\"\ncmd = \"echo ${{CUDA_VISIBLE_DEVICES-none}} $(date +%s%N) > {name}.txt; sleep 0.5\"\n\
                 deps = [{deps}]\nouts = [\"{name}.txt\"]\nresources = {{ gpus = {gpus} }}\n\n")
    };
    let manifest = stage("a", 1, "") + &stage("b", 1, "") + &stage("both", 2, "\"a.txt\", \"b.txt\"") + &stage("cpu", 0, "");
    t.manifest(&manifest);
    t.run_ok(&["--jobs", "4"]);
    let read = |name: &str| -> (String, u128) {
        let text = t.read(&format!("{name}.txt"));
        let (ids, at) = text.trim().split_once(' ').unwrap();
        (ids.to_string(), at.parse().unwrap())
    };
    let (a, b) = (read("a"), read("b"));
    let mut ids = vec![a.0.clone(), b.0.clone()];
    ids.sort();
    assert_eq!(ids, vec!["0", "1"], "one GPU each");
    assert!(a.1.abs_diff(b.1) < 400_000_000, "side by side: started {} ms apart", a.1.abs_diff(b.1) / 1_000_000);
    assert_eq!(read("both").0, "0,1");
    assert_eq!(read("cpu").0, "none");
}
