//! The single-run view: the experiment header, the stage sections, evaluation and the paper.

use std::collections::BTreeMap;

use distill_engine::record::{RunRecord, StepMetric};
use serde::Serialize;

use super::chart::ChartData;
use super::curves;
use super::eval::{self, Evaluation};
use super::graph::Upstream;
use super::paper::{self, PaperTable};
use super::stage::{StageView, anchors};
use crate::svg::{DagNode, dag_svg};

#[derive(Clone, Debug, Serialize)]
pub struct RunInfo {
    pub id: String,
    pub name: String,
    pub description: String,
    pub status: String,
    pub started_at: String,
    pub finished_at: Option<String>,
    pub duration_s: Option<f64>,
    pub device: String,
    pub dtype: String,
    pub seed: u64,
    pub host: String,
    pub program_version: String,
    pub manifest: String,
    pub resolved_manifest: serde_json::Value,
    /// The resolved manifest as TOML when it fits TOML (JSON otherwise), for reading.
    pub resolved_manifest_text: String,
    /// The command that reproduces the run, shell-quoted.
    pub command: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct RunView {
    pub run: RunInfo,
    /// Stage count by status (`ran`, `cached`...).
    pub counts: BTreeMap<String, usize>,
    pub stages: Vec<StageView>,
    pub evaluation: Evaluation,
    pub paper: Vec<PaperTable>,
}

impl RunInfo {
    pub fn new(r: &RunRecord) -> Self {
        let fmt = |t: chrono::DateTime<chrono::Utc>| t.format("%Y-%m-%d %H:%M:%S UTC").to_string();
        let status = serde_json::to_value(r.status).ok().and_then(|v| v.as_str().map(str::to_string));
        RunInfo {
            id: r.id.clone(),
            name: r.experiment.name.clone(),
            description: r.experiment.description.clone(),
            status: status.unwrap_or_default(),
            started_at: fmt(r.started_at),
            finished_at: r.finished_at.map(fmt),
            duration_s: r.duration_s(),
            device: r.experiment.device.clone(),
            dtype: r.experiment.dtype.clone(),
            seed: r.experiment.seed,
            host: r.host.clone(),
            program_version: r.program_version.clone(),
            manifest: r.manifest.display().to_string(),
            resolved_manifest: r.resolved_manifest.clone(),
            resolved_manifest_text: toml::to_string_pretty(&r.resolved_manifest)
                .or_else(|_| serde_json::to_string_pretty(&r.resolved_manifest))
                .unwrap_or_default(),
            command: r.command.iter().map(|a| shell_quote(a)).collect::<Vec<_>>().join(" "),
        }
    }
}

impl RunView {
    /// `steps` holds each stage's step metrics by stage name (see `load::load_steps`).
    pub fn build(r: &RunRecord, steps: &BTreeMap<String, Vec<StepMetric>>) -> Self {
        let up = Upstream::new(r);
        let anchor_list = anchors(r.stages.iter().map(|s| s.name.as_str()));
        let n_series: usize = steps.values().map(|s| curves::series_count(s)).sum();
        let buckets = curves::buckets_for(n_series);
        let stages: Vec<StageView> = r
            .stages
            .iter()
            .zip(&anchor_list)
            .map(|(s, a)| {
                let st = steps.get(&s.name).map_or(&[][..], Vec::as_slice);
                StageView::new(s, a.clone(), st, buckets)
            })
            .collect();
        let by_name: BTreeMap<&str, &str> =
            r.stages.iter().zip(&anchor_list).map(|(s, a)| (s.name.as_str(), a.as_str())).collect();
        let evaluation = eval::build(r, &by_name, &up);
        let paper = paper::build(&evaluation, &up);
        let mut counts = BTreeMap::new();
        for s in &r.stages {
            *counts.entry(s.status.as_str().to_string()).or_insert(0) += 1;
        }
        RunView { run: RunInfo::new(r), counts, stages, evaluation, paper }
    }

    /// The DAG picture, every node linking to its stage's section.
    pub fn dag_svg(&self, r: &RunRecord) -> String {
        let nodes: Vec<DagNode> = self
            .stages
            .iter()
            .map(|s| DagNode { name: &s.name, kind: &s.kind, status: &s.status, anchor: &s.anchor })
            .collect();
        dag_svg(&nodes, &Upstream::new(r).index_edges())
    }

    pub fn charts(&self) -> impl Iterator<Item = &ChartData> {
        let stage = self.stages.iter().flat_map(|s| s.charts.iter());
        let paper = self.paper.iter().filter_map(|t| t.chart.as_ref());
        stage.chain(self.evaluation.charts.iter()).chain(paper)
    }
}

/// Quotes an argument for a POSIX shell when it needs it.
pub fn shell_quote(a: &str) -> String {
    let plain = !a.is_empty()
        && a.chars().all(|c| c.is_ascii_alphanumeric() || "-_./=:@,+%".contains(c));
    if plain { a.to_string() } else { format!("'{}'", a.replace('\'', r"'\''")) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testdata::sample_run;

    #[test]
    fn header_and_counts() {
        let tmp = tempfile::tempdir().unwrap();
        let r = sample_run(tmp.path());
        let v = RunView::build(&r, &crate::load::load_steps(&r));
        assert_eq!(v.run.command, "distill run manifests/hybrid.toml");
        assert_eq!(v.run.duration_s, Some(3725.0));
        assert!(v.run.resolved_manifest_text.contains("[experiment]"));
        assert_eq!(v.counts.get("cached"), Some(&1));
        assert_eq!(v.counts.get("failed"), Some(&1));
        let d50 = v.stages.iter().find(|s| s.name == "distill50").unwrap();
        assert_eq!(d50.charts.len(), 4, "loss, lr, grad norm, throughput");
        assert!(v.charts().count() > 8);
    }

    #[test]
    fn quotes_only_when_needed() {
        assert_eq!(shell_quote("--set"), "--set");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
    }
}
