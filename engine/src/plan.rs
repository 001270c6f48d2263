//! A validated, expanded manifest: stages in a topological order, their inputs and edges.
//! The executor sees only plans.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;

use serde::Serialize;

use crate::manifest::Sources;
use crate::refs::Reference;
use crate::stage::StageSpec;

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Experiment {
    pub name: String,
    pub description: String,
    pub seed: u64,
    pub device: String,
    pub dtype: String,
    pub executor: String,
}

/// Where an input of a stage comes from.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Input {
    /// Another stage's output: by `@reference` in params or deps, or by a dep path that is
    /// another stage's out.
    Stage { name: String, reference: Reference },
    /// A file or folder outside the store, hashed by content.
    File { name: String, path: PathBuf },
    /// Another stage's last execution (which run produced it, with which key), for stages
    /// that report on the whole run.
    Record { name: String, stage: String },
}

impl Input {
    /// The name that appears in the cache key and in `explain`.
    pub fn name(&self) -> &str {
        match self {
            Input::Stage { name, .. } | Input::File { name, .. } | Input::Record { name, .. } => name,
        }
    }
}

#[derive(Clone, Debug)]
pub struct PlannedStage {
    pub spec: StageSpec,
    pub family: Option<String>,
    pub description: String,
    pub inputs: Vec<Input>,
    /// Indices of the stages this one waits for (data and `needs`).
    pub upstream: Vec<usize>,
}

#[derive(Clone)]
pub struct Plan {
    pub manifest: PathBuf,
    /// The manifest's folder, absolute: relative paths and the workspace start here.
    pub root: PathBuf,
    pub experiment: Experiment,
    pub vars: serde_json::Map<String, serde_json::Value>,
    /// In a topological order that keeps the manifest's order where the DAG allows.
    pub stages: Vec<PlannedStage>,
    pub families: BTreeMap<String, Vec<String>>,
    pub sources: Sources,
    pub(crate) index: HashMap<String, usize>,
}

impl Plan {
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.index.get(name).copied()
    }

    pub fn stage(&self, name: &str) -> Option<&PlannedStage> {
        self.index_of(name).map(|i| &self.stages[i])
    }

    /// (upstream, downstream) index pairs.
    pub fn edges(&self) -> Vec<(usize, usize)> {
        let mut e: Vec<_> = self
            .stages
            .iter()
            .enumerate()
            .flat_map(|(i, s)| s.upstream.iter().map(move |&u| (u, i)))
            .collect();
        e.sort();
        e
    }

    /// Stage indices downstream of `roots`, the roots included.
    pub fn downstream_of(&self, roots: &[usize]) -> BTreeSet<usize> {
        let mut down: Vec<Vec<usize>> = vec![Vec::new(); self.stages.len()];
        for (u, d) in self.edges() {
            down[u].push(d);
        }
        closure(roots, &down)
    }

    /// Stage indices upstream of `roots`, the roots included.
    pub fn upstream_of(&self, roots: &[usize]) -> BTreeSet<usize> {
        let up: Vec<Vec<usize>> = self.stages.iter().map(|s| s.upstream.clone()).collect();
        closure(roots, &up)
    }

    /// Stage names of a name that may be a family (`distill` -> its members).
    pub fn resolve_name(&self, name: &str) -> Option<Vec<usize>> {
        if let Some(i) = self.index_of(name) {
            return Some(vec![i]);
        }
        self.families
            .get(name)
            .map(|members| members.iter().filter_map(|m| self.index_of(m)).collect())
    }

    /// The manifest as resolved, for run records.
    pub fn resolved_json(&self) -> serde_json::Value {
        let stages: serde_json::Map<String, serde_json::Value> = self
            .stages
            .iter()
            .map(|s| (s.spec.name.clone(), serde_json::to_value(&s.spec).unwrap_or_default()))
            .collect();
        serde_json::json!({
            "experiment": self.experiment,
            "vars": self.vars,
            "stages": stages,
        })
    }
}

fn closure(roots: &[usize], next: &[Vec<usize>]) -> BTreeSet<usize> {
    let mut seen = BTreeSet::new();
    let mut todo: Vec<usize> = roots.to_vec();
    while let Some(i) = todo.pop() {
        if seen.insert(i) {
            todo.extend(next[i].iter().copied());
        }
    }
    seen
}
