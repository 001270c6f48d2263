//! One stage's section: params, timing, cache status and why, outputs, metrics, the log tail
//! of a failure, and its training curves.

use std::collections::BTreeSet;

use distill_engine::record::{StageRun, StepMetric};
use serde::Serialize;

use super::chart::ChartData;
use super::curves;

#[derive(Clone, Debug, Serialize)]
pub struct StageView {
    /// The section's id, derived from the name and unique in the page.
    pub anchor: String,
    pub name: String,
    pub kind: String,
    pub status: String,
    pub reasons: Vec<String>,
    /// Params flattened to dotted paths (`optimizer.lr`), values as JSON text.
    pub params: Vec<(String, String)>,
    pub started_at: Option<String>,
    pub duration_s: Option<f64>,
    pub attempts: u32,
    pub key_hash: Option<String>,
    pub outputs: Vec<OutputView>,
    pub metrics: Vec<(String, f64)>,
    pub error: Option<String>,
    pub log_tail: Vec<String>,
    pub log: Option<String>,
    pub charts: Vec<ChartData>,
}

#[derive(Clone, Debug, Serialize)]
pub struct OutputView {
    pub name: String,
    pub hash: String,
    pub bytes: u64,
    pub path: String,
}

impl StageView {
    pub fn new(s: &StageRun, anchor: String, steps: &[StepMetric], buckets: usize) -> Self {
        let mut params = Vec::new();
        flatten("", &s.params, &mut params);
        StageView {
            charts: curves::charts(&anchor, &[("", steps)], buckets),
            anchor,
            name: s.name.clone(),
            kind: s.kind.clone(),
            status: s.status.as_str().into(),
            reasons: s.reasons.clone(),
            params,
            started_at: s.started_at.map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string()),
            duration_s: s.duration_s,
            attempts: s.attempts,
            key_hash: s.key_hash.clone(),
            outputs: s
                .outputs
                .iter()
                .map(|(name, o)| OutputView {
                    name: name.clone(),
                    hash: o.hash.clone(),
                    bytes: o.bytes,
                    path: o.path.display().to_string(),
                })
                .collect(),
            metrics: s.metrics.iter().map(|(k, v)| (k.clone(), *v)).collect(),
            error: s.error.clone(),
            log_tail: s.log_tail.clone(),
            log: s.log.as_ref().map(|p| p.display().to_string()),
        }
    }
}

/// Leaf values by dotted path; strings shown bare, everything else as compact JSON.
pub fn flatten(prefix: &str, v: &serde_json::Value, out: &mut Vec<(String, String)>) {
    match v {
        serde_json::Value::Object(map) if !map.is_empty() => {
            for (k, child) in map {
                let path = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                flatten(&path, child, out);
            }
        }
        serde_json::Value::Object(_) if prefix.is_empty() => {}
        serde_json::Value::String(s) => out.push((prefix.into(), s.clone())),
        other => out.push((prefix.into(), other.to_string())),
    }
}

/// Section ids from names: safe characters kept, the rest dashed, duplicates numbered.
pub fn anchors<'a>(names: impl Iterator<Item = &'a str>) -> Vec<String> {
    let mut seen = BTreeSet::new();
    names
        .enumerate()
        .map(|(i, n)| {
            let slug: String =
                n.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' || c == '-' { c } else { '-' }).collect();
            let mut a = format!("stage-{slug}");
            if !seen.insert(a.clone()) {
                a = format!("{a}-{i}");
                seen.insert(a.clone());
            }
            a
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flattens_nested_params() {
        let mut out = Vec::new();
        flatten("", &serde_json::json!({"opt": {"lr": 0.1, "name": "adam"}, "k": [1, 2]}), &mut out);
        assert_eq!(out, vec![
            ("opt.lr".to_string(), "0.1".to_string()),
            ("opt.name".to_string(), "adam".to_string()),
            ("k".to_string(), "[1,2]".to_string()),
        ]);
    }

    #[test]
    fn anchors_are_safe_and_unique() {
        let a = anchors(["a b", "a-b", "<x>"].into_iter());
        assert_eq!(a, ["stage-a-b", "stage-a-b-1", "stage--x-"]);
    }
}
