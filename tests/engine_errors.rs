//! Every manifest error class exits with status 2 and points at file:line:column with the
//! offending line and a caret, like a compiler.

mod support;

use support::TestRun;

fn fails_at(manifest: &str, location: &str, message: &str) -> String {
    let t = TestRun::new();
    t.manifest(manifest);
    let out = t.run(["run"]);
    out.code_is(2).stderr_contains(location).stderr_contains(message).stderr_contains("^");
    out.stderr()
}

#[test]
fn toml_syntax() {
    fails_at("[stages.a]\nkind = \"command\ncmd = 1\n", "distill.toml:2:", "invalid TOML");
}

#[test]
fn unknown_key_in_a_stage() {
    let err = fails_at(
        "[stages.a]\nkind = \"command\"\ncmd = \"true\"\noutz = [\"x\"]\n",
        "distill.toml:4:1",
        "unknown key `outz` in stage `a`",
    );
    assert!(err.contains("outs"), "lists the expected keys: {err}");
}

#[test]
fn unknown_top_level_key() {
    fails_at("[stage.a]\nkind = \"command\"\n", "distill.toml:1:2", "unknown key `stage`");
}

#[test]
fn wrong_type() {
    fails_at(
        "[stages.a]\nkind = \"command\"\ncmd = \"true\"\nretries = \"many\"\n",
        "distill.toml:4:11",
        "invalid value for `retries`",
    );
}

#[test]
fn unknown_kind_suggests_the_nearest() {
    let err = fails_at("[stages.a]\nkind = \"comand\"\n", "distill.toml:2:8", "unknown stage kind `comand`");
    assert!(err.contains("did you mean `command`?"), "{err}");
}

#[test]
fn dangling_reference_in_params_and_needs() {
    fails_at(
        "[stages.a]\nkind = \"command\"\ncmd = \"true\"\nparams = { model = \"@teachr/model\" }\n",
        "distill.toml:4:20",
        "reference to unknown stage `teachr`",
    );
    fails_at(
        "[stages.a]\nkind = \"command\"\ncmd = \"true\"\n\n[stages.b]\nkind = \"command\"\ncmd = \"true\"\nneeds = [\"aa\"]\n",
        "distill.toml:8:10",
        "did you mean `a`?",
    );
}

#[test]
fn duplicate_names_from_a_family() {
    fails_at(
        "[stages.s]\nkind = \"command\"\ncmd = \"true\"\nforeach = [1, 2, 1]\n",
        "distill.toml:1:9",
        "duplicate stage name `s[1]`",
    );
}

#[test]
fn a_cycle_is_listed_stage_by_stage() {
    let err = fails_at(
        r#"[stages.a]
kind = "command"
cmd = "true"
needs = ["c"]

[stages.b]
kind = "command"
cmd = "true"
needs = ["a"]

[stages.c]
kind = "command"
cmd = "true"
needs = ["b"]
"#,
        "distill.toml:",
        "the stages form a cycle: a -> b -> c -> a",
    );
    for line in ["`a` depends on `c` here", "`b` depends on `a` here", "`c` depends on `b` here"] {
        assert!(err.contains(line), "{line} missing in {err}");
    }
}

#[test]
fn template_errors_point_at_the_string() {
    fails_at(
        "[vars]\nrows = 3\n\n[stages.a]\nkind = \"command\"\ncmd = \"echo {{ vars.rowz }}\"\n",
        "distill.toml:6:7",
        "template error",
    );
}

#[test]
fn errors_in_an_included_file_name_that_file() {
    let t = TestRun::new();
    t.file("base.toml", "[stages.a]\nkind = \"command\"\ncmd = \"true\"\nbogus = 1\n");
    t.manifest("include = [\"base.toml\"]\n");
    t.run(["run"]).code_is(2).stderr_contains("base.toml:4:1").stderr_contains("unknown key `bogus`");
}

#[test]
fn a_command_stage_without_cmd_is_rejected_by_its_kind() {
    fails_at("[stages.a]\nkind = \"command\"\nouts = [\"/abs\"]\ncmd = \"x\"\n", "distill.toml:3:9", "outs must be relative");
}

#[test]
fn set_with_an_unknown_path_is_an_error() {
    let t = TestRun::new();
    t.manifest("[stages.a]\nkind = \"command\"\ncmd = \"true\"\n");
    t.run(["run", "--set", "nosuch=1"]).code_is(2).stderr_contains("--set:1:1").stderr_contains("no such setting");
}

#[test]
fn a_missing_manifest_is_named() {
    let t = TestRun::new();
    t.run(["run", "nope.toml"]).code_is(1).stderr_contains("no manifest at nope.toml");
}
