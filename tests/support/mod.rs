//! A fluent fixture that drives the real `distill` binary in a temporary workspace:
//! `TestRun::new().manifest(..).run(["run", "--json"]).stdout_contains(..)`.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

pub struct TestRun {
    dir: tempfile::TempDir,
    env: Vec<(String, String)>,
}

impl TestRun {
    pub fn new() -> Self {
        Self { dir: tempfile::tempdir().expect("temp dir"), env: Vec::new() }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn file(&self, rel: &str, content: &str) -> &Self {
        let p = self.dir.path().join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, content).unwrap();
        self
    }

    pub fn manifest(&self, toml: &str) -> &Self {
        self.file("distill.toml", toml)
    }

    pub fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
    }

    pub fn exists(&self, rel: &str) -> bool {
        self.dir.path().join(rel).exists()
    }

    pub fn env(mut self, k: &str, v: &str) -> Self {
        self.env.push((k.into(), v.into()));
        self
    }

    pub fn command<I: IntoIterator<Item = S>, S: AsRef<str>>(&self, args: I) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_distill"));
        c.current_dir(self.dir.path()).env_remove("DISTILL_LOG");
        for a in args {
            c.arg(a.as_ref());
        }
        for (k, v) in &self.env {
            c.env(k, v);
        }
        c
    }

    pub fn run<I: IntoIterator<Item = S>, S: AsRef<str>>(&self, args: I) -> Outcome {
        Outcome(self.command(args).stdin(Stdio::null()).output().expect("distill runs"))
    }

    pub fn spawn<I: IntoIterator<Item = S>, S: AsRef<str>>(&self, args: I, env: &[(&str, &str)]) -> Child {
        let mut c = self.command(args);
        for (k, v) in env {
            c.env(k, v);
        }
        c.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("distill starts")
    }

    /// `distill run --json [extra]`, asserting success; (name, status) in record order.
    pub fn run_ok(&self, extra: &[&str]) -> Vec<(String, String)> {
        let mut args = vec!["run", "--json"];
        args.extend_from_slice(extra);
        let out = self.run(&args);
        out.success();
        out.statuses()
    }

    pub fn wait_for(&self, rel: &str, secs: u64) {
        let until = std::time::Instant::now() + std::time::Duration::from_secs(secs);
        while !self.exists(rel) {
            assert!(std::time::Instant::now() < until, "{rel} did not appear within {secs}s");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    pub fn distill_dir(&self) -> PathBuf {
        self.dir.path().join(".distill")
    }
}

pub struct Outcome(pub Output);

impl Outcome {
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.0.stdout).into_owned()
    }

    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.0.stderr).into_owned()
    }

    pub fn code(&self) -> i32 {
        self.0.status.code().unwrap_or(-1)
    }

    pub fn success(&self) -> &Self {
        assert!(self.0.status.success(), "distill failed ({}):\nstdout:\n{}\nstderr:\n{}", self.code(), self.stdout(), self.stderr());
        self
    }

    pub fn code_is(&self, code: i32) -> &Self {
        assert_eq!(self.code(), code, "stdout:\n{}\nstderr:\n{}", self.stdout(), self.stderr());
        self
    }

    pub fn stdout_contains(&self, s: &str) -> &Self {
        assert!(self.stdout().contains(s), "stdout lacks {s:?}:\n{}\nstderr:\n{}", self.stdout(), self.stderr());
        self
    }

    pub fn stderr_contains(&self, s: &str) -> &Self {
        assert!(self.stderr().contains(s), "stderr lacks {s:?}:\n{}", self.stderr());
        self
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(self.stdout().trim()).unwrap_or_else(|e| panic!("stdout is not one JSON object ({e}):\n{}", self.stdout()))
    }

    pub fn statuses(&self) -> Vec<(String, String)> {
        self.json()["stages"]
            .as_array()
            .expect("stages array")
            .iter()
            .map(|s| (s["name"].as_str().unwrap().to_string(), s["status"].as_str().unwrap().to_string()))
            .collect()
    }
}

/// Names with a given status.
pub fn with_status(statuses: &[(String, String)], status: &str) -> Vec<String> {
    statuses.iter().filter(|(_, s)| s == status).map(|(n, _)| n.clone()).collect()
}

/// A chain of `n` command stages s1..sn, each appending its `v` param to its predecessor's out.
pub fn chain_manifest(n: usize, changed: Option<(usize, &str)>) -> String {
    let mut m = String::from("[experiment]\nname = \"chain\"\n\n");
    for i in 1..=n {
        let v = match changed {
            Some((k, v)) if k == i => v.to_string(),
            _ => format!("v{i}"),
        };
        let input = if i == 1 { String::from("true") } else { format!("cat s{}.txt", i - 1) };
        let deps = if i == 1 { String::new() } else { format!("deps = [\"s{}.txt\"]\n", i - 1) };
        m.push_str(&format!(
            "[stages.s{i}]\nkind = \"command\"\ncmd = \"({input}; echo {{{{ params.v }}}}) > s{i}.txt\"\n{deps}outs = [\"s{i}.txt\"]\nparams = {{ v = \"{v}\" }}\n\n"
        ));
    }
    m
}
