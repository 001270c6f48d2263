//! The manifest's shape as serde structs (`deny_unknown_fields`), read from the spanned tree
//! so a wrong key or type is reported at its line and column.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::diag::Problem;
use super::node::{Node, PathSeg, Value};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTop {
    #[serde(default)]
    pub experiment: RawExperiment,
    #[serde(default)]
    pub vars: serde_json::Map<String, serde_json::Value>,
    /// Checked stage by stage after family expansion; read here only to type-check it.
    #[allow(dead_code)]
    #[serde(default)]
    pub stages: serde_json::Map<String, serde_json::Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawExperiment {
    pub name: Option<String>,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub seed: u64,
    pub device: Option<String>,
    pub dtype: Option<String>,
    /// `local` (default) or `slurm`.
    pub executor: Option<String>,
    /// sbatch options for every Slurm stage: partition, account, mem, time...
    #[serde(default)]
    pub slurm: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStage {
    pub kind: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub needs: Vec<String>,
    #[serde(default)]
    pub params: serde_json::Map<String, serde_json::Value>,
    #[serde(default)]
    pub resources: RawResources,
    #[serde(default)]
    pub retries: u32,
    #[serde(default)]
    pub frozen: bool,
    pub device: Option<String>,
    pub dtype: Option<String>,
    pub cmd: Option<String>,
    #[serde(default)]
    pub deps: Vec<String>,
    #[serde(default)]
    pub outs: Vec<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    pub workdir: Option<String>,
    pub executor: Option<String>,
    #[serde(default)]
    pub slurm: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawResources {
    #[serde(default)]
    pub gpus: usize,
    #[serde(default = "one")]
    pub threads: usize,
    /// Memory for a Slurm job (`--mem`), e.g. `16G`.
    pub mem: Option<String>,
    /// Time limit for a Slurm job (`--time`), e.g. `2:00:00`.
    pub time: Option<String>,
}

impl Default for RawResources {
    fn default() -> Self {
        Self { gpus: 0, threads: 1, mem: None, time: None }
    }
}

fn one() -> usize {
    1
}

/// Keys a stage table may hold besides the fields of [`RawStage`] (families).
pub const FAMILY_KEYS: &[&str] = &["foreach", "matrix", "start"];

/// Deserializes `node`; an error points at the offending key or value.
pub fn read<T: DeserializeOwned>(node: &Node, what: &str) -> Result<T, Problem> {
    let json = node.to_json();
    serde_path_to_error::deserialize(json).map_err(|e| {
        let segs: Vec<PathSeg> = e
            .path()
            .iter()
            .filter_map(|s| match s {
                serde_path_to_error::Segment::Map { key } => Some(PathSeg::Key(key.clone())),
                serde_path_to_error::Segment::Seq { index } => Some(PathSeg::Index(*index)),
                _ => None,
            })
            .collect();
        let inner = e.into_inner().to_string();
        locate(node, &segs, &inner, what)
    })
}

fn locate(root: &Node, segs: &[PathSeg], message: &str, what: &str) -> Problem {
    // The deepest node on the path that exists.
    let mut depth = segs.len();
    let target = loop {
        if let Some(n) = root.at(&segs[..depth]) {
            break n;
        }
        depth -= 1;
    };
    let path = dotted(segs);
    if let Some(field) = message.strip_prefix("unknown field `").and_then(|m| m.split('`').next()) {
        // The path may already end in the unknown key itself: look in its parent.
        let parent = match segs.last() {
            Some(PathSeg::Key(k)) if k == field => root.at(&segs[..segs.len() - 1]),
            _ => Some(target),
        };
        let span = parent.and_then(Node::as_table).and_then(|t| t.key(field)).map(|k| k.span.clone());
        let expected = message.split("expected ").nth(1).unwrap_or("").to_string();
        let p = Problem::new(format!("unknown key `{field}` in {what}"))
            .at(span.as_ref().unwrap_or(&target.span), "unknown key");
        return if expected.is_empty() { p } else { p.note(format!("expected {expected}")) };
    }
    if let Some(field) = message.strip_prefix("missing field `").and_then(|m| m.split('`').next()) {
        return Problem::new(format!("missing key `{field}` in {what}")).at(&target.span, "in this table");
    }
    let label = match &target.value {
        Value::Table(_) | Value::Array(_) => format!("this is {}", target.type_name()),
        _ => format!("this is {}", target.type_name()),
    };
    let place = if path.is_empty() { what.to_string() } else { format!("`{path}` in {what}") };
    Problem::new(format!("invalid value for {place}: {message}")).at(&target.span, label)
}

pub fn dotted(segs: &[PathSeg]) -> String {
    let mut s = String::new();
    for seg in segs {
        match seg {
            PathSeg::Key(k) => {
                if !s.is_empty() {
                    s.push('.');
                }
                s.push_str(k);
            }
            PathSeg::Index(i) => s.push_str(&format!("[{i}]")),
        }
    }
    s
}

/// `params.source.gguf` / `outs[0]` -> path segments.
pub fn parse_path(path: &str) -> Vec<PathSeg> {
    let mut out = Vec::new();
    for part in path.split('.') {
        let mut rest = part;
        if let Some(i) = rest.find('[') {
            if i > 0 {
                out.push(PathSeg::Key(rest[..i].to_string()));
            }
            rest = &rest[i..];
            while let Some(end) = rest.find(']') {
                if let Ok(n) = rest[1..end].parse() {
                    out.push(PathSeg::Index(n));
                }
                rest = &rest[end + 1..];
            }
        } else if !rest.is_empty() {
            out.push(PathSeg::Key(rest.to_string()));
        }
    }
    out
}
