//! Two runs side by side: what changed in the experiment and in each stage's params, how
//! every final metric moved, and the training curves overlaid.

use std::collections::BTreeMap;

use distill_engine::record::{RunRecord, StageRun, StepMetric};
use serde::Serialize;

use super::chart::ChartData;
use super::curves;
use super::run::RunInfo;
use super::stage::{anchors, flatten};

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct ParamDiff {
    pub path: String,
    pub a: Option<String>,
    pub b: Option<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct MetricDelta {
    pub name: String,
    pub a: Option<f64>,
    pub b: Option<f64>,
    /// b - a, when both exist.
    pub delta: Option<f64>,
    /// (b - a) / |a| in percent, when both exist and a is not zero.
    pub percent: Option<f64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct StageCompare {
    pub name: String,
    pub anchor: String,
    pub kind: String,
    pub status_a: Option<String>,
    pub status_b: Option<String>,
    pub param_diffs: Vec<ParamDiff>,
    pub metrics: Vec<MetricDelta>,
    pub charts: Vec<ChartData>,
}

#[derive(Clone, Debug, Serialize)]
pub struct CompareView {
    pub a: RunInfo,
    pub b: RunInfo,
    /// Experiment-level differences (device, dtype, seed, version, manifest).
    pub run_diffs: Vec<ParamDiff>,
    pub stages: Vec<StageCompare>,
}

type Steps = BTreeMap<String, Vec<StepMetric>>;

impl CompareView {
    pub fn build(a: &RunRecord, sa: &Steps, b: &RunRecord, sb: &Steps) -> Self {
        let (ia, ib) = (RunInfo::new(a), RunInfo::new(b));
        let pick = |i: &RunInfo| {
            vec![
                ("device".to_string(), i.device.clone()),
                ("dtype".into(), i.dtype.clone()),
                ("seed".into(), i.seed.to_string()),
                ("program_version".into(), i.program_version.clone()),
                ("manifest".into(), i.manifest.clone()),
                ("status".into(), i.status.clone()),
            ]
        };
        let run_diffs = diff_pairs(&pick(&ia), &pick(&ib));
        // A's order first, then stages only B has.
        let mut names: Vec<&str> = a.stages.iter().map(|s| s.name.as_str()).collect();
        names.extend(b.stages.iter().map(|s| s.name.as_str()).filter(|n| a.stage(n).is_none()));
        let n_series: usize = sa.values().chain(sb.values()).map(|s| curves::series_count(s)).sum();
        let buckets = curves::buckets_for(n_series);
        let stages = names
            .iter()
            .zip(anchors(names.iter().copied()))
            .map(|(n, anchor)| {
                let (x, y) = (a.stage(n), b.stage(n));
                let empty = Vec::new();
                let (stx, sty) = (sa.get(*n).unwrap_or(&empty), sb.get(*n).unwrap_or(&empty));
                StageCompare {
                    name: n.to_string(),
                    kind: x.or(y).map(|s| s.kind.clone()).unwrap_or_default(),
                    status_a: x.map(|s| s.status.as_str().into()),
                    status_b: y.map(|s| s.status.as_str().into()),
                    param_diffs: diff_pairs(&params(x), &params(y)),
                    metrics: metric_deltas(x, y),
                    charts: curves::charts(&anchor, &[("A", stx), ("B", sty)], buckets),
                    anchor,
                }
            })
            .collect();
        CompareView { a: ia, b: ib, run_diffs, stages }
    }

    pub fn charts(&self) -> impl Iterator<Item = &ChartData> {
        self.stages.iter().flat_map(|s| s.charts.iter())
    }
}

fn params(s: Option<&StageRun>) -> Vec<(String, String)> {
    let mut out = Vec::new();
    if let Some(s) = s {
        flatten("", &s.params, &mut out);
    }
    out
}

/// Paths whose values differ, in A's order then B-only paths.
fn diff_pairs(a: &[(String, String)], b: &[(String, String)]) -> Vec<ParamDiff> {
    let bm: BTreeMap<&str, &str> = b.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let am: BTreeMap<&str, &str> = a.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let mut out = Vec::new();
    for (k, v) in a {
        let other = bm.get(k.as_str()).copied();
        if other != Some(v.as_str()) {
            out.push(ParamDiff { path: k.clone(), a: Some(v.clone()), b: other.map(str::to_string) });
        }
    }
    for (k, v) in b.iter().filter(|(k, _)| !am.contains_key(k.as_str())) {
        out.push(ParamDiff { path: k.clone(), a: None, b: Some(v.clone()) });
    }
    out
}

fn metric_deltas(a: Option<&StageRun>, b: Option<&StageRun>) -> Vec<MetricDelta> {
    let empty = BTreeMap::new();
    let (ma, mb) = (a.map_or(&empty, |s| &s.metrics), b.map_or(&empty, |s| &s.metrics));
    let mut names: Vec<&String> = ma.keys().chain(mb.keys()).collect();
    names.sort();
    names.dedup();
    names
        .into_iter()
        .map(|n| {
            let (x, y) = (ma.get(n).copied(), mb.get(n).copied());
            let delta = x.zip(y).map(|(x, y)| y - x);
            let percent = x.zip(delta).filter(|(x, _)| *x != 0.0).map(|(x, d)| d / x.abs() * 100.0);
            MetricDelta { name: n.clone(), a: x, b: y, delta, percent }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::load_steps;
    use crate::testdata::sample_run;

    #[test]
    fn diffs_params_metrics_and_overlays_curves() {
        let tmp = tempfile::tempdir().unwrap();
        let a = sample_run(tmp.path());
        let mut b = a.clone();
        b.id = "20250302-090000-ffff".into();
        b.experiment.seed = 7;
        b.stages[4].params["lr"] = serde_json::json!(0.001);
        b.stages[9].metrics.insert("perplexity".into(), 8.0);
        b.stages.pop();
        let v = CompareView::build(&a, &load_steps(&a), &b, &load_steps(&b));
        assert_eq!(v.run_diffs, vec![ParamDiff { path: "seed".into(), a: Some("42".into()), b: Some("7".into()) }]);
        let d50 = v.stages.iter().find(|s| s.name == "distill50").unwrap();
        assert_eq!(d50.param_diffs[0].path, "lr");
        assert_eq!(d50.charts.len(), 4);
        let e50 = v.stages.iter().find(|s| s.name == "eval50").unwrap();
        let ppl = e50.metrics.iter().find(|m| m.name == "perplexity").unwrap();
        assert!((ppl.delta.unwrap() + 0.3).abs() < 1e-9);
        let dpo = v.stages.iter().find(|s| s.name == "dpo").unwrap();
        assert_eq!((dpo.status_a.as_deref(), dpo.status_b.as_deref()), (Some("skipped"), None));
    }
}
