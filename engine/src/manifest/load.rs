//! Reading manifest files: TOML with spans, `include = [...]` merged depth-first (the
//! including file wins), then `--set path.to.key=value` overrides.

use std::path::{Path, PathBuf};

use toml::de::{DeTable, DeValue};

use super::diag::{ManifestError, Problem, Sources};
use super::node::{Key, Node, Span, Table, Value, from_toml};

/// Keys of `[experiment]` that `--set key=value` may name without a prefix.
pub const EXPERIMENT_KEYS: &[&str] = &["name", "description", "seed", "device", "dtype", "executor"];

/// Reads `path` and everything it includes into one tree.
pub fn load(path: &Path, sources: &mut Sources) -> Result<Node, ManifestError> {
    let mut stack = Vec::new();
    load_file(path, sources, &mut stack, None)
}

fn load_file(
    path: &Path,
    sources: &mut Sources,
    stack: &mut Vec<PathBuf>,
    included_at: Option<&Span>,
) -> Result<Node, ManifestError> {
    let canonical = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            let msg = format!("cannot read manifest {}: {e}", path.display());
            return Err(match included_at {
                Some(span) => ManifestError::new(vec![Problem::new(msg).at(span, "included here")], sources),
                None => ManifestError::plain(msg),
            });
        }
    };
    if stack.contains(&canonical) {
        let chain: Vec<String> = stack.iter().map(|p| p.display().to_string()).collect();
        let p = Problem::new(format!("include cycle: {} -> {}", chain.join(" -> "), path.display()));
        let p = match included_at {
            Some(span) => p.at(span, "included again here"),
            None => p,
        };
        return Err(ManifestError::new(vec![p], sources));
    }
    let file = sources.add_file(canonical.clone(), path.display().to_string(), text.clone());
    let parsed = DeTable::parse(&text).map_err(|e| {
        let range = e.span().unwrap_or(0..0);
        let p = Problem::new(format!("invalid TOML: {}", e.message().trim()))
            .at(&Span { file, range }, "here");
        ManifestError::new(vec![p], sources)
    })?;
    let mut root = from_toml(parsed.get_ref(), parsed.span(), file);
    let Value::Table(table) = &mut root.value else { unreachable!("a document is a table") };
    let Some((key, includes)) = table.remove("include") else { return Ok(root) };
    let Value::Array(items) = includes.value else {
        let p = Problem::new("`include` must be an array of paths").at(&includes.span, "here");
        return Err(ManifestError::new(vec![p], sources));
    };
    stack.push(canonical);
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut merged = Node { value: Value::Table(Table::default()), span: key.span.clone() };
    for item in items {
        let Some(rel) = item.as_str() else {
            let p = Problem::new("an include must be a path string").at(&item.span, "here");
            return Err(ManifestError::new(vec![p], sources));
        };
        let base = load_file(&dir.join(rel), sources, stack, Some(&item.span))?;
        merge(&mut merged, base);
    }
    stack.pop();
    merge(&mut merged, root);
    Ok(merged)
}

/// Deep-merges `over` into `base`: tables merge key by key, anything else replaces.
pub fn merge(base: &mut Node, over: Node) {
    match (&mut base.value, over.value) {
        (Value::Table(b), Value::Table(o)) => {
            for (k, v) in o.entries {
                match b.get_mut(&k.name) {
                    Some(existing) if existing.as_table().is_some() && v.as_table().is_some() => {
                        merge(existing, v)
                    }
                    _ => b.insert(k, v),
                }
            }
            base.span = over.span;
        }
        (_, value) => *base = Node { value, span: over.span },
    }
}

/// Applies one `--set path.to.key=value`. The value is read as TOML when it parses
/// (`3e-4`, `true`, `[1, 2]`), else as a string (`cuda`).
pub fn apply_set(root: &mut Node, arg: &str, sources: &mut Sources) -> Result<(), ManifestError> {
    let file = sources.add_text("--set".to_string(), arg.to_string());
    let whole = Span { file, range: 0..arg.len() };
    let Some(eq) = arg.find('=') else {
        let p = Problem::new("--set needs `path.to.key=value`").at(&whole, "no `=` here");
        return Err(ManifestError::new(vec![p], sources));
    };
    let (path, raw) = (&arg[..eq], &arg[eq + 1..]);
    let key_span = Span { file, range: 0..eq };
    let value_span = Span { file, range: eq + 1..arg.len() };
    let value = match DeValue::parse(raw) {
        Ok(v) if !matches!(v.get_ref(), DeValue::Table(_)) => {
            let wrapped = format!("v = {raw}");
            let t = DeTable::parse(&wrapped).ok();
            t.and_then(|t| {
                let n = from_toml(t.get_ref(), 0..0, file);
                n.as_table().and_then(|t| t.get("v")).cloned()
            })
            .map(|mut n| {
                respan(&mut n, &value_span);
                n
            })
            .unwrap_or(Node { value: Value::String(raw.to_string()), span: value_span.clone() })
        }
        _ => Node { value: Value::String(raw.to_string()), span: value_span.clone() },
    };
    let segs = expand_set_path(root, path).ok_or_else(|| {
        let p = Problem::new(format!("--set `{path}`: no such setting"))
            .at(&key_span, "not an [experiment] key, a [vars] name or a stage")
            .note("write the full path, e.g. `stages.train.params.lr=3e-4` or `vars.tokens=1000`");
        ManifestError::new(vec![p], sources)
    })?;
    let mut node = root;
    for (i, seg) in segs.iter().enumerate() {
        let Value::Table(t) = &mut node.value else {
            let p = Problem::new(format!("--set `{path}`: `{}` is not a table", segs[..i].join(".")))
                .at(&key_span, "here");
            return Err(ManifestError::new(vec![p], sources));
        };
        if i + 1 == segs.len() {
            t.insert(Key { name: seg.clone(), span: key_span.clone() }, value);
            return Ok(());
        }
        if t.get(seg).is_none() {
            let empty = Node { value: Value::Table(Table::default()), span: key_span.clone() };
            t.insert(Key { name: seg.clone(), span: key_span.clone() }, empty);
        }
        node = t.get_mut(seg).expect("inserted above");
    }
    Ok(())
}

/// `device` -> `experiment.device`; `tokens` -> `vars.tokens`; `train.params.lr` ->
/// `stages.train.params.lr`; full paths stay as they are.
fn expand_set_path(root: &Node, path: &str) -> Option<Vec<String>> {
    let segs: Vec<String> = path.split('.').map(str::to_string).collect();
    if segs.iter().any(String::is_empty) {
        return None;
    }
    let top = root.as_table()?;
    let has = |table: &str, key: &str| {
        top.get(table).and_then(Node::as_table).is_some_and(|t| t.get(key).is_some())
    };
    match segs[0].as_str() {
        "experiment" | "vars" | "stages" => Some(segs),
        first if segs.len() == 1 && EXPERIMENT_KEYS.contains(&first) => {
            Some(vec!["experiment".into(), first.into()])
        }
        first if segs.len() == 1 && has("vars", first) => Some(vec!["vars".into(), first.into()]),
        first if has("stages", first) => {
            Some(std::iter::once("stages".to_string()).chain(segs).collect())
        }
        _ => None,
    }
}

fn respan(n: &mut Node, span: &Span) {
    n.span = span.clone();
    match &mut n.value {
        Value::Array(a) => a.iter_mut().for_each(|x| respan(x, span)),
        Value::Table(t) => t.entries.iter_mut().for_each(|(k, v)| {
            k.span = span.clone();
            respan(v, span)
        }),
        _ => {}
    }
}
