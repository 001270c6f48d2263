//! Upstream lookups over a run's DAG: which model an eval measured, which init and distill
//! stages that model came from (the paper comparison reads their params).

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use distill_engine::record::{RunRecord, StageRun};

/// Stage kinds whose main output is a model folder (CONTRACTS.md).
pub const MODEL_KINDS: [&str; 6] = ["teacher", "init", "distill", "sft", "dpo", "draft"];

pub struct Upstream<'r> {
    run: &'r RunRecord,
    parents: BTreeMap<&'r str, Vec<&'r str>>,
}

impl<'r> Upstream<'r> {
    /// Parents from the recorded edges and each stage's `needs`.
    pub fn new(run: &'r RunRecord) -> Self {
        let mut parents: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        let needs = run.stages.iter().flat_map(|s| s.needs.iter().map(move |n| (n.as_str(), s.name.as_str())));
        for (a, b) in run.edges.iter().map(|(a, b)| (a.as_str(), b.as_str())).chain(needs) {
            let p = parents.entry(b).or_default();
            if !p.contains(&a) {
                p.push(a);
            }
        }
        Self { run, parents }
    }

    /// The closest strict ancestor of `name` (breadth first) that satisfies `want`.
    pub fn nearest(&self, name: &str, want: impl Fn(&StageRun) -> bool) -> Option<&'r StageRun> {
        let mut seen = BTreeSet::new();
        let mut queue: VecDeque<&str> = self.parents.get(name).into_iter().flatten().copied().collect();
        while let Some(n) = queue.pop_front() {
            if !seen.insert(n) {
                continue;
            }
            if let Some(s) = self.run.stage(n).filter(|s| want(s)) {
                return Some(s);
            }
            queue.extend(self.parents.get(n).into_iter().flatten().copied());
        }
        None
    }

    /// The model an eval-like stage measured: its nearest model-producing ancestor.
    pub fn model_of(&self, name: &str) -> Option<&'r StageRun> {
        self.nearest(name, |s| MODEL_KINDS.contains(&s.kind.as_str()))
    }

    /// (upstream, downstream) pairs of stage indexes, for the DAG picture.
    pub fn index_edges(&self) -> Vec<(usize, usize)> {
        let pos: BTreeMap<&str, usize> =
            self.run.stages.iter().enumerate().map(|(i, s)| (s.name.as_str(), i)).collect();
        let mut out = Vec::new();
        for (child, ps) in &self.parents {
            for p in ps {
                if let (Some(&a), Some(&b)) = (pos.get(p), pos.get(child)) {
                    out.push((a, b));
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testdata::sample_run;

    #[test]
    fn finds_model_init_and_distill_of_an_eval() {
        let tmp = tempfile::tempdir().unwrap();
        let run = sample_run(tmp.path());
        let up = Upstream::new(&run);
        assert_eq!(up.model_of("eval50").map(|s| s.name.as_str()), Some("distill50"));
        assert_eq!(up.model_of("eval_teacher").map(|s| s.name.as_str()), Some("teacher"));
        assert_eq!(up.nearest("eval50", |s| s.kind == "init").map(|s| s.name.as_str()), Some("init50"));
        assert!(up.nearest("teacher", |_| true).is_none());
        assert_eq!(up.index_edges().len(), run.edges.len());
    }
}
