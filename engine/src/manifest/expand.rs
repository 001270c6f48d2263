//! Stage families: `foreach = [...]` and `matrix = {...}` expand one definition into members
//! named `NAME[value]` / `NAME[a=1,b=2]`; a `foreach` member can name its predecessor as
//! `{{ prev }}` (the first one's is `start`), so a family can form a chain.

use std::collections::BTreeMap;

use minijinja::Value as J;

/// Template variables by name.
pub type Ctx = BTreeMap<String, J>;

use super::diag::Problem;
use super::node::{Key, Node, Value};
use super::template::Templater;

/// One concrete stage produced from a manifest entry.
pub struct Member {
    pub name: String,
    /// The family's name for members, `None` for a plain stage.
    pub family: Option<String>,
    pub key: Key,
    /// The stage table, rendered, without the family keys.
    pub node: Node,
}

/// Expands and renders one `[stages.NAME]` entry.
pub fn expand(
    key: &Key,
    node: &Node,
    base_ctx: &Ctx,
    templater: &Templater,
    problems: &mut Vec<Problem>,
) -> Vec<Member> {
    if node.as_table().is_none() {
        problems.push(Problem::new(format!("stage `{}` must be a table", key.name)).at(&node.span, "here"));
        return Vec::new();
    }
    let mut body = node.clone();
    let Value::Table(t) = &mut body.value else { unreachable!() };
    let foreach = t.remove("foreach").map(|(_, v)| v);
    let matrix = t.remove("matrix").map(|(_, v)| v);
    let start = t.remove("start").map(|(_, v)| v);
    let variants: Vec<(String, Ctx)> = match (&foreach, &matrix) {
        (Some(f), Some(m)) => {
            problems.push(
                Problem::new(format!("stage `{}` has both `foreach` and `matrix`", key.name))
                    .at(&f.span, "foreach here")
                    .at(&m.span, "matrix here"),
            );
            return Vec::new();
        }
        (Some(f), None) => match foreach_items(&key.name, f, start.as_ref(), problems) {
            Some(v) => v,
            None => return Vec::new(),
        },
        (None, Some(m)) => match matrix_items(&key.name, m, problems) {
            Some(v) => v,
            None => return Vec::new(),
        },
        (None, None) => {
            if let Some(s) = &start {
                problems.push(Problem::new("`start` belongs to a `foreach` family").at(&s.span, "here"));
            }
            let member = render(key.name.clone(), None, key, &body, base_ctx, Ctx::new(), templater, problems);
            return vec![member];
        }
    };
    variants
        .into_iter()
        .map(|(name, extra)| render(name, Some(key.name.clone()), key, &body, base_ctx, extra, templater, problems))
        .collect()
}

#[allow(clippy::too_many_arguments)]
fn render(
    name: String,
    family: Option<String>,
    key: &Key,
    body: &Node,
    base: &Ctx,
    extra: Ctx,
    templater: &Templater,
    problems: &mut Vec<Problem>,
) -> Member {
    let mut node = body.clone();
    let mut vars: Ctx = base.clone();
    vars.extend(extra);
    vars.insert("name".into(), J::from(name.clone()));
    let Value::Table(t) = &mut node.value else { unreachable!() };
    // params first: the other fields may use `{{ params.x }}`.
    if let Some(params) = t.get_mut("params") {
        templater.render_tree(params, &J::from_iter(vars.clone()), problems);
    }
    let params = t.get("params").map(|p| J::from_serialize(p.to_json())).unwrap_or(J::UNDEFINED);
    vars.insert("params".into(), params);
    let ctx = J::from_iter(vars);
    for (k, v) in t.entries.iter_mut() {
        if k.name != "params" {
            templater.render_tree(v, &ctx, problems);
        }
    }
    Member { name, family, key: key.clone(), node }
}

fn scalar_label(n: &Node) -> Option<String> {
    match &n.value {
        Value::String(s) => Some(s.clone()),
        Value::Integer(i) => Some(i.to_string()),
        Value::Float(f) => Some(f.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn foreach_items(name: &str, f: &Node, start: Option<&Node>, problems: &mut Vec<Problem>) -> Option<Vec<(String, Ctx)>> {
    let Value::Array(items) = &f.value else {
        problems.push(Problem::new("`foreach` must be an array").at(&f.span, format!("this is {}", f.type_name())));
        return None;
    };
    if items.is_empty() {
        problems.push(Problem::new(format!("`foreach` of `{name}` is empty")).at(&f.span, "no members"));
        return None;
    }
    let start = match start {
        Some(s) => match s.as_str() {
            Some(v) => J::from(v),
            None => {
                problems.push(Problem::new("`start` must be a stage name").at(&s.span, "here"));
                return None;
            }
        },
        None => J::UNDEFINED,
    };
    let mut prev = start;
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let label = scalar_label(item).unwrap_or_else(|| i.to_string());
        let member = format!("{name}[{label}]");
        let ctx = Ctx::from([
            ("item".to_string(), J::from_serialize(item.to_json())),
            ("index".to_string(), J::from(i)),
            ("prev".to_string(), prev.clone()),
        ]);
        prev = J::from(member.clone());
        out.push((member, ctx));
    }
    Some(out)
}

fn matrix_items(name: &str, m: &Node, problems: &mut Vec<Problem>) -> Option<Vec<(String, Ctx)>> {
    let Some(t) = m.as_table() else {
        problems.push(Problem::new("`matrix` must be a table of arrays").at(&m.span, "here"));
        return None;
    };
    let mut axes: Vec<(String, Vec<(String, serde_json::Value)>)> = Vec::new();
    for (k, v) in &t.entries {
        let Value::Array(items) = &v.value else {
            problems.push(Problem::new(format!("matrix axis `{}` must be an array", k.name)).at(&v.span, "here"));
            return None;
        };
        if items.is_empty() {
            problems.push(Problem::new(format!("matrix axis `{}` is empty", k.name)).at(&v.span, "here"));
            return None;
        }
        let vals = items
            .iter()
            .enumerate()
            .map(|(i, n)| (scalar_label(n).unwrap_or_else(|| i.to_string()), n.to_json()))
            .collect();
        axes.push((k.name.clone(), vals));
    }
    let mut combos: Vec<Vec<(String, String, serde_json::Value)>> = vec![Vec::new()];
    for (axis, vals) in &axes {
        combos = combos
            .into_iter()
            .flat_map(|c| {
                vals.iter().map(move |(label, v)| {
                    let mut c = c.clone();
                    c.push((axis.clone(), label.clone(), v.clone()));
                    c
                })
            })
            .collect();
    }
    Some(
        combos
            .into_iter()
            .map(|c| {
                let label: Vec<String> = c.iter().map(|(a, l, _)| format!("{a}={l}")).collect();
                let matrix: serde_json::Map<String, serde_json::Value> =
                    c.into_iter().map(|(a, _, v)| (a, v)).collect();
                let ctx = Ctx::from([("matrix".to_string(), J::from_serialize(matrix))]);
                (format!("{name}[{}]", label.join(",")), ctx)
            })
            .collect(),
    )
}
