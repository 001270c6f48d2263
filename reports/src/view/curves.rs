//! Training curves: step metrics grouped into charts (loss parts together, then lr, gradient
//! norm, throughput, anything else alone), each series downsampled min/max per bucket.

use std::collections::BTreeMap;

use distill_engine::record::StepMetric;

use super::chart::{ChartData, ChartKind};
use crate::downsample::min_max;
use crate::svg::Series;

/// Total points a report may draw; a run with many curves gets fewer points per curve.
const POINT_BUDGET: usize = 150_000;

/// Buckets per series so `n_series` curves stay within the budget (2 points per bucket).
pub fn buckets_for(n_series: usize) -> usize {
    (POINT_BUDGET / n_series.max(1) / 2).clamp(50, 300)
}

/// name -> (step, value) sorted by step.
pub fn group_series(steps: &[StepMetric]) -> BTreeMap<&str, Vec<(f64, f64)>> {
    let mut out: BTreeMap<&str, Vec<(f64, f64)>> = BTreeMap::new();
    for m in steps {
        out.entry(m.name.as_str()).or_default().push((m.step as f64, m.value));
    }
    for pts in out.values_mut() {
        // Stages log in step order; the sort is a cheap guard for a resumed run's file.
        if !pts.is_sorted_by(|a, b| a.0 <= b.0) {
            pts.sort_by(|a, b| a.0.total_cmp(&b.0));
        }
    }
    out
}

/// The chart a metric belongs to: (order, key, title, y label).
fn group_of(name: &str) -> (u8, String, String, String) {
    match name {
        n if n == "loss" || n.starts_with("loss/") => (0, "loss".into(), "Loss".into(), "loss".into()),
        "lr" => (1, "lr".into(), "Learning rate".into(), "lr".into()),
        "grad_norm" => (2, "grad_norm".into(), "Gradient norm".into(), "norm".into()),
        "tokens_per_s" => (3, "tokens_per_s".into(), "Throughput".into(), "tokens/s".into()),
        n => (4, n.into(), n.into(), n.into()),
    }
}

/// Charts of one or more runs' curves for one stage: `runs` are (prefix, steps) and a
/// prefix is put before series names when overlaying (`A · loss`).
pub fn charts(id_prefix: &str, runs: &[(&str, &[StepMetric])], buckets: usize) -> Vec<ChartData> {
    let mut groups: BTreeMap<(u8, String), (String, String, Vec<Series>)> = BTreeMap::new();
    for (prefix, steps) in runs {
        for (name, pts) in group_series(steps) {
            let (order, key, title, y) = group_of(name);
            let entry = groups.entry((order, key)).or_insert_with(|| (title, y, Vec::new()));
            let name = if prefix.is_empty() { name.to_string() } else { format!("{prefix} · {name}") };
            let points = min_max(&pts, buckets).into_iter().map(|(x, y)| (x, round_sig(y))).collect();
            entry.2.push(Series { name, points });
        }
    }
    groups
        .into_iter()
        .enumerate()
        .map(|(i, (_, (title, y_label, series)))| ChartData {
            id: format!("{id_prefix}-curve{i}"),
            title,
            x_label: "step".into(),
            y_label,
            kind: ChartKind::Line { series },
        })
        .collect()
}

/// Six significant digits: more than a chart can show, and a third of the JSON of full floats.
/// The exact values stay in the stage's step-metrics file.
fn round_sig(v: f64) -> f64 {
    if v == 0.0 || !v.is_finite() {
        return v;
    }
    format!("{v:.5e}").parse().unwrap_or(v)
}

/// How many distinct series `steps` holds (for the point budget).
pub fn series_count(steps: &[StepMetric]) -> usize {
    let mut names: Vec<&str> = steps.iter().map(|m| m.name.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    names.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(step: u64, name: &str, value: f64) -> StepMetric {
        StepMetric { step, name: name.into(), value }
    }

    #[test]
    fn loss_parts_share_a_chart_and_others_get_their_own() {
        let steps = vec![m(0, "loss", 3.0), m(0, "loss/kl", 2.0), m(0, "lr", 1e-4), m(0, "reward", 0.1), m(1, "loss", 2.0)];
        let c = charts("s", &[("", &steps)], 100);
        let titles: Vec<&str> = c.iter().map(|c| c.title.as_str()).collect();
        assert_eq!(titles, ["Loss", "Learning rate", "reward"]);
        let ChartKind::Line { series } = &c[0].kind else { panic!("line") };
        assert_eq!(series.len(), 2);
        assert_eq!(series[0].points, vec![(0.0, 3.0), (1.0, 2.0)]);
    }

    #[test]
    fn overlays_prefix_series_names() {
        let a = vec![m(0, "loss", 3.0)];
        let b = vec![m(0, "loss", 2.5)];
        let c = charts("s", &[("A", &a), ("B", &b)], 100);
        let ChartKind::Line { series } = &c[0].kind else { panic!("line") };
        assert_eq!(series.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(), ["A · loss", "B · loss"]);
    }

    #[test]
    fn points_keep_six_significant_digits() {
        assert_eq!(round_sig(0.123456789), 0.123457);
        assert_eq!(round_sig(12345678.9), 12345700.0);
        assert_eq!(round_sig(3e-4), 3e-4);
    }

    #[test]
    fn budget_shrinks_buckets_with_many_series() {
        assert_eq!(buckets_for(6), 300);
        assert_eq!(buckets_for(600), 125);
        assert_eq!(buckets_for(100_000), 50);
    }
}
