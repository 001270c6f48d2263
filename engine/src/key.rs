//! Cache keys: everything a stage's outputs depend on, hashed with blake3.
//!
//! The parts are stored beside the hash, so "why did this rerun" is a diff of two keys
//! (`distill explain`), not a guess.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::canon::canonical_json;

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct CacheKey {
    pub kind: String,
    /// The kind's code version: bumping it reruns every stage of that kind.
    pub kind_version: u32,
    /// Canonical params (sorted keys), including a command stage's cmd, env, workdir and outs.
    pub params: serde_json::Value,
    /// Input name (`@stage/output` or a path relative to the manifest folder) -> content hash.
    pub inputs: BTreeMap<String, String>,
    /// Environment entries the kind declares (device, dtype, program version...).
    pub env: BTreeMap<String, String>,
}

impl CacheKey {
    /// blake3 over the canonical serialization, hex.
    pub fn hash(&self) -> String {
        let v = serde_json::to_value(self).expect("a cache key always serializes");
        blake3::hash(canonical_json(&v).as_bytes()).to_hex().to_string()
    }

    /// Human lines saying how `new` differs from `self` (`param lr: 0.0001 -> 0.0003`).
    pub fn diff(&self, new: &CacheKey) -> Vec<String> {
        let mut out = Vec::new();
        if self.kind != new.kind {
            out.push(format!("kind: {} -> {}", self.kind, new.kind));
        }
        if self.kind_version != new.kind_version {
            out.push(format!(
                "code version of kind {}: {} -> {}",
                new.kind, self.kind_version, new.kind_version
            ));
        }
        diff_values("param ", &self.params, &new.params, &mut out);
        diff_maps("input ", &self.inputs, &new.inputs, short_hash, &mut out);
        diff_maps("env ", &self.env, &new.env, |s| s.to_string(), &mut out);
        out
    }
}

fn short_hash(h: &str) -> String {
    if h.len() > 8 { format!("{}..", &h[..8]) } else { h.to_string() }
}

fn diff_maps(
    prefix: &str,
    old: &BTreeMap<String, String>,
    new: &BTreeMap<String, String>,
    show: impl Fn(&str) -> String,
    out: &mut Vec<String>,
) {
    for (k, v) in new {
        match old.get(k) {
            None => out.push(format!("{prefix}{k}: added ({})", show(v))),
            Some(o) if o != v => out.push(format!("{prefix}{k}: {} -> {}", show(o), show(v))),
            _ => {}
        }
    }
    for (k, v) in old {
        if !new.contains_key(k) {
            out.push(format!("{prefix}{k}: removed (was {})", show(v)));
        }
    }
}

/// Walks two JSON values and reports leaf differences by dotted path.
fn diff_values(path: &str, old: &serde_json::Value, new: &serde_json::Value, out: &mut Vec<String>) {
    use serde_json::Value;
    match (old, new) {
        (Value::Object(a), Value::Object(b)) => {
            let sep = if path.ends_with(' ') { "" } else { "." };
            for (k, nv) in b {
                let p = format!("{path}{sep}{k}");
                match a.get(k) {
                    Some(ov) => diff_values(&p, ov, nv, out),
                    None => out.push(format!("{p}: added ({})", compact(nv))),
                }
            }
            for (k, ov) in a {
                if !b.contains_key(k) {
                    out.push(format!("{path}{sep}{k}: removed (was {})", compact(ov)));
                }
            }
        }
        (Value::String(a), Value::String(b)) if a != b => {
            let (a, b) = around_first_difference(a, b);
            out.push(format!("{}: {a} -> {b}", path.trim_end()))
        }
        _ if old != new => out.push(format!(
            "{}: {} -> {}",
            path.trim_end(),
            compact(old),
            compact(new)
        )),
        _ => {}
    }
}

/// Long strings (commands) shown from a little before where they start to differ.
fn around_first_difference(a: &str, b: &str) -> (String, String) {
    const WIDTH: usize = 60;
    if a.chars().count() <= WIDTH && b.chars().count() <= WIDTH {
        return (a.to_string(), b.to_string());
    }
    let common = a.chars().zip(b.chars()).take_while(|(x, y)| x == y).count();
    let start = common.saturating_sub(20);
    let cut = |s: &str| {
        let body: String = s.chars().skip(start).take(WIDTH).collect();
        let pre = if start > 0 { "..." } else { "" };
        let post = if s.chars().count() > start + WIDTH { "..." } else { "" };
        format!("{pre}{body}{post}")
    };
    (cut(a), cut(b))
}

fn compact(v: &serde_json::Value) -> String {
    let s = match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    if s.chars().count() > 80 {
        format!("{}...", s.chars().take(77).collect::<String>())
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn key(lr: f64, input: &str) -> CacheKey {
        CacheKey {
            kind: "command".into(),
            kind_version: 1,
            params: json!({"params": {"lr": lr, "rows": 3}, "cmd": "echo"}),
            inputs: BTreeMap::from([("@teacher/model".to_string(), input.to_string())]),
            env: BTreeMap::new(),
        }
    }

    #[test]
    fn diff_names_the_param_and_the_input() {
        let a = key(1e-4, "3f2a0000aaaa");
        let b = key(3e-4, "9c1e0000bbbb");
        let d = a.diff(&b);
        assert_eq!(
            d,
            vec![
                "param params.lr: 0.0001 -> 0.0003".to_string(),
                "input @teacher/model: 3f2a0000.. -> 9c1e0000..".to_string()
            ]
        );
        assert_ne!(a.hash(), b.hash());
        assert_eq!(a.hash(), key(1e-4, "3f2a0000aaaa").hash());
    }
}
