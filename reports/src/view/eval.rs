//! Evaluation tables: perplexity and its ratio to the teacher per eval stage, and speculative
//! decoding per K (acceptance, tokens per round, speedup), with charts.

use std::collections::BTreeMap;

use distill_engine::record::RunRecord;
use serde::Serialize;

use super::chart::{ChartData, ChartKind};
use super::graph::Upstream;
use crate::svg::Series;

#[derive(Clone, Debug, Serialize)]
pub struct EvalRow {
    pub stage: String,
    pub anchor: String,
    /// The model-producing stage it measured.
    pub model: Option<String>,
    pub model_kind: Option<String>,
    pub perplexity: Option<f64>,
    pub accuracy: Option<f64>,
    pub ppl_ratio: Option<f64>,
    /// True when we divided by the teacher eval's perplexity ourselves.
    pub ratio_computed: bool,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct SpecRow {
    pub k: u32,
    pub acceptance_rate: Option<f64>,
    pub tokens_per_round: Option<f64>,
    pub speedup: Option<f64>,
    pub tokens_per_s: Option<f64>,
    /// On graphs: the speedup once a generation is under way (prefill and capture left out on
    /// both sides), a round's milliseconds, and the acceptance such rounds need to break even
    /// and to double plain decoding.
    pub decode_speedup: Option<f64>,
    pub round_ms: Option<f64>,
    pub acceptance_for_break_even: Option<f64>,
    pub acceptance_for_2x: Option<f64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct SpecTable {
    pub stage: String,
    pub anchor: String,
    pub plain_tokens_per_s: Option<f64>,
    pub plain_decode_tokens_per_s: Option<f64>,
    /// Whether the rows carry the rates once under way (a GPU run on graphs).
    pub under_way: bool,
    pub rows: Vec<SpecRow>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Evaluation {
    pub evals: Vec<EvalRow>,
    pub speculative: Vec<SpecTable>,
    pub charts: Vec<ChartData>,
}

impl Evaluation {
    pub fn is_empty(&self) -> bool {
        self.evals.is_empty() && self.speculative.is_empty()
    }
}

pub fn build(run: &RunRecord, anchors: &BTreeMap<&str, &str>, up: &Upstream) -> Evaluation {
    let anchor = |n: &str| anchors.get(n).map_or_else(String::new, |a| a.to_string());
    let mut evals: Vec<EvalRow> = run
        .stages
        .iter()
        .filter(|s| s.metrics.contains_key("perplexity") || s.metrics.contains_key("accuracy"))
        .map(|s| {
            let model = up.model_of(&s.name);
            EvalRow {
                stage: s.name.clone(),
                anchor: anchor(&s.name),
                model: model.map(|m| m.name.clone()),
                model_kind: model.map(|m| m.kind.clone()),
                perplexity: s.metrics.get("perplexity").copied(),
                accuracy: s.metrics.get("accuracy").copied(),
                ppl_ratio: s.metrics.get("ppl_ratio_to_teacher").copied(),
                ratio_computed: false,
            }
        })
        .collect();
    // A stage that did not report its ratio still gets one when the run evaluated the teacher.
    let teacher_ppl = evals.iter().find(|e| e.model_kind.as_deref() == Some("teacher")).and_then(|e| e.perplexity);
    for e in evals.iter_mut().filter(|e| e.ppl_ratio.is_none()) {
        if let (Some(p), Some(t)) = (e.perplexity, teacher_ppl.filter(|t| *t > 0.0)) {
            e.ppl_ratio = Some(p / t);
            e.ratio_computed = true;
        }
    }
    let speculative: Vec<SpecTable> = run
        .stages
        .iter()
        .filter_map(|s| {
            let mut rows: BTreeMap<u32, SpecRow> = BTreeMap::new();
            for (name, v) in &s.metrics {
                let Some((k, what)) = parse_k(name) else { continue };
                let row = rows.entry(k).or_insert_with(|| SpecRow { k, ..SpecRow::default() });
                match what {
                    "acceptance_rate" => row.acceptance_rate = Some(*v),
                    "tokens_per_round" => row.tokens_per_round = Some(*v),
                    "speedup" => row.speedup = Some(*v),
                    "tokens_per_s" => row.tokens_per_s = Some(*v),
                    "decode_speedup" => row.decode_speedup = Some(*v),
                    "round_ms" => row.round_ms = Some(*v),
                    "acceptance_for_break_even" => row.acceptance_for_break_even = Some(*v),
                    "acceptance_for_2x" => row.acceptance_for_2x = Some(*v),
                    _ => {}
                }
            }
            (!rows.is_empty()).then(|| SpecTable {
                stage: s.name.clone(),
                anchor: anchor(&s.name),
                plain_tokens_per_s: s.metrics.get("plain/tokens_per_s").copied(),
                plain_decode_tokens_per_s: s.metrics.get("plain/decode_tokens_per_s").copied(),
                under_way: rows.values().any(|r| r.decode_speedup.is_some()),
                rows: rows.into_values().collect(),
            })
        })
        .collect();
    let charts = charts(&evals, &speculative);
    Evaluation { evals, speculative, charts }
}

/// `k4/speedup` -> (4, "speedup").
fn parse_k(name: &str) -> Option<(u32, &str)> {
    let rest = name.strip_prefix('k')?;
    let (k, what) = rest.split_once('/')?;
    Some((k.parse().ok()?, what))
}

fn charts(evals: &[EvalRow], spec: &[SpecTable]) -> Vec<ChartData> {
    let mut out = Vec::new();
    let bars: Vec<(String, f64, usize)> =
        evals.iter().filter_map(|e| Some((e.stage.clone(), e.perplexity?, 0))).collect();
    if !bars.is_empty() {
        out.push(ChartData {
            id: "eval-ppl".into(),
            title: "Perplexity by eval stage".into(),
            x_label: "perplexity (lower is better)".into(),
            y_label: String::new(),
            kind: ChartKind::Bars { bars, groups: vec!["ours".into()] },
        });
    }
    let by_k = |title: &str, id: &str, y: &str, get: fn(&SpecRow) -> Option<f64>| {
        let series: Vec<Series> = spec
            .iter()
            .map(|t| Series {
                name: t.stage.clone(),
                points: t.rows.iter().filter_map(|r| Some((r.k as f64, get(r)?))).collect(),
            })
            .filter(|s| !s.points.is_empty())
            .collect();
        (!series.is_empty()).then(|| ChartData {
            id: id.into(),
            title: title.into(),
            x_label: "K (draft tokens per round)".into(),
            y_label: y.into(),
            kind: ChartKind::Line { series },
        })
    };
    out.extend(by_k("Speedup by K", "spec-speedup", "speedup ×", |r| r.speedup));
    out.extend(by_k("Acceptance rate by K", "spec-acceptance", "acceptance", |r| r.acceptance_rate));
    out.extend(by_k("Tokens per round by K", "spec-tpr", "tokens/round", |r| r.tokens_per_round));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testdata::sample_run;

    #[test]
    fn evals_get_models_and_ratios() {
        let tmp = tempfile::tempdir().unwrap();
        let run = sample_run(tmp.path());
        let up = Upstream::new(&run);
        let ev = build(&run, &BTreeMap::new(), &up);
        let unfrozen = ev.evals.iter().find(|e| e.stage == "eval50_unfrozen").unwrap();
        assert!(unfrozen.ratio_computed);
        assert!((unfrozen.ppl_ratio.unwrap() - 9.9 / 8.0).abs() < 1e-12);
        let e50 = ev.evals.iter().find(|e| e.stage == "eval50").unwrap();
        assert_eq!(e50.model.as_deref(), Some("distill50"));
        assert!(!e50.ratio_computed);
        assert_eq!(ev.speculative[0].rows.iter().map(|r| r.k).collect::<Vec<_>>(), [1, 2, 3, 4]);
        assert_eq!(ev.speculative[0].plain_tokens_per_s, Some(240.0));
        assert_eq!(ev.charts.len(), 4);
    }

    #[test]
    fn parses_k_metric_names() {
        assert_eq!(parse_k("k12/speedup"), Some((12, "speedup")));
        assert_eq!(parse_k("kl/x"), None);
        assert_eq!(parse_k("loss"), None);
    }
}
