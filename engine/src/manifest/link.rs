//! Edges between stages: `@references` in params and deps, deps that are other stages' outs,
//! `needs`, and the stages a run-watching kind (reports) waits for; with the problems each can
//! raise (dangling names, colliding outs, cycles).

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use super::build::{Draft, span_of};
use super::diag::Problem;
use super::node::Span;
use crate::plan::Input;
use crate::refs::{Reference, find_references};
use crate::stage::Registry;

/// Turns references, needs and deps into inputs and edges.
pub(super) fn link(drafts: &mut [Draft], families: &BTreeMap<String, Vec<String>>, root: &Path, problems: &mut Vec<Problem>) {
    let names: Vec<String> = drafts.iter().map(|d| d.spec.name.clone()).collect();
    let mut outs: Vec<(PathBuf, String, String, Span)> = Vec::new();
    for d in drafts.iter() {
        for (i, o) in d.spec.outs.iter().enumerate() {
            let p = normalize(&d.spec.manifest_dir.join(o));
            let span = span_of(&d.member, &format!("outs[{i}]"));
            if let Some((_, other, _, ospan)) = outs.iter().find(|(q, ..)| *q == p) {
                problems.push(
                    Problem::new(format!("`{o}` is an out of both `{other}` and `{}`", d.spec.name))
                        .at(&span, "declared again here")
                        .at(ospan, "first declared here"),
                );
            }
            outs.push((p, d.spec.name.clone(), o.clone(), span));
        }
    }
    let _ = root;
    for d in drafts.iter_mut() {
        let mut refs = Vec::new();
        find_references(&d.spec.params, "params", &mut refs);
        for (i, dep) in d.spec.deps.iter().enumerate() {
            if dep.starts_with('@') {
                refs.push((format!("deps[{i}]"), dep.clone()));
                continue;
            }
            let span = span_of(&d.member, &format!("deps[{i}]"));
            let p = normalize(&d.spec.manifest_dir.join(dep));
            match outs.iter().find(|(o, ..)| p.starts_with(o)) {
                Some((o, producer, out, _)) if producer != &d.spec.name => {
                    let rel = p.strip_prefix(o).expect("prefix checked");
                    let output = if rel.as_os_str().is_empty() { out.clone() } else { format!("{out}/{}", rel.display()) };
                    let reference = Reference { stage: producer.clone(), output: Some(output) };
                    d.inputs.push((Input::Stage { name: dep.clone(), reference }, span.clone()));
                    d.edges.push((producer.clone(), span));
                }
                _ => d.inputs.push((Input::File { name: dep.clone(), path: p }, span)),
            }
        }
        for (path, text) in refs {
            let span = span_of(&d.member, &path);
            let Some(r) = Reference::parse(&text) else {
                problems.push(
                    Problem::new(format!("malformed reference `{text}`"))
                        .at(&span, "expected `@stage` or `@stage/output`"),
                );
                continue;
            };
            if !names.contains(&r.stage) {
                problems.push(dangling(&r.stage, &span, &names, families, "reference"));
                continue;
            }
            if r.stage == d.spec.name {
                problems.push(Problem::new(format!("stage `{}` refers to itself", r.stage)).at(&span, "here"));
                continue;
            }
            d.edges.push((r.stage.clone(), span.clone()));
            d.inputs.push((Input::Stage { name: text.clone(), reference: r }, span));
        }
        for (i, need) in d.spec.needs.clone().iter().enumerate() {
            let span = span_of(&d.member, &format!("needs[{i}]"));
            if names.contains(need) {
                d.edges.push((need.clone(), span));
            } else if let Some(members) = families.get(need) {
                d.edges.extend(members.iter().map(|m| (m.clone(), span.clone())));
            } else {
                problems.push(dangling(need, &span, &names, families, "`needs` entry"));
            }
        }
        d.inputs.sort_by(|a, b| a.0.cmp(&b.0));
        d.inputs.dedup_by(|a, b| a.0 == b.0);
    }
}

/// Stages whose kind reads the run record wait for every stage that does not depend on them.
pub(super) fn watch_run(drafts: &mut [Draft], registry: &Registry) {
    let names: Vec<String> = drafts.iter().map(|d| d.spec.name.clone()).collect();
    for i in 0..drafts.len() {
        if !registry.get(&drafts[i].spec.kind).is_some_and(|k| k.watches_run()) {
            continue;
        }
        let downstream = dependents(drafts, &names[i]);
        let span = drafts[i].member.key.span.clone();
        for (j, other) in names.iter().enumerate() {
            if j == i || downstream.contains(other) {
                continue;
            }
            let watcher = registry.get(&drafts[j].spec.kind).is_some_and(|k| k.watches_run());
            if watcher {
                continue;
            }
            drafts[i].edges.push((other.clone(), span.clone()));
            let input = Input::Record { name: format!("run of {other}"), stage: other.clone() };
            drafts[i].inputs.push((input, span.clone()));
        }
        drafts[i].inputs.sort_by(|a, b| a.0.cmp(&b.0));
        drafts[i].inputs.dedup_by(|a, b| a.0 == b.0);
    }
}

/// Names of the stages that depend, directly or not, on `name`.
fn dependents(drafts: &[Draft], name: &str) -> std::collections::BTreeSet<String> {
    let mut out = std::collections::BTreeSet::new();
    let mut todo = vec![name.to_string()];
    while let Some(n) = todo.pop() {
        for d in drafts {
            if d.edges.iter().any(|(u, _)| *u == n) && out.insert(d.spec.name.clone()) {
                todo.push(d.spec.name.clone());
            }
        }
    }
    out
}

fn dangling(name: &str, span: &Span, names: &[String], families: &BTreeMap<String, Vec<String>>, what: &str) -> Problem {
    if let Some(members) = families.get(name) {
        let shown: Vec<&str> = members.iter().take(4).map(String::as_str).collect();
        return Problem::new(format!("{what} `{name}` names a family, not a stage"))
            .at(span, "name one member")
            .note(format!("its members: {}{}", shown.join(", "), if members.len() > 4 { ", ..." } else { "" }));
    }
    let mut p = Problem::new(format!("{what} to unknown stage `{name}`")).at(span, "no stage has this name");
    if let Some(s) = closest(name, names.iter().map(String::as_str)) {
        p = p.note(format!("did you mean `{s}`?"));
    }
    p
}

pub(super) fn cycle_problem(cycle: &[usize], drafts: &[Draft]) -> Problem {
    let names: Vec<&str> = cycle.iter().map(|&i| drafts[i].spec.name.as_str()).collect();
    let mut p = Problem::new(format!("the stages form a cycle: {} -> {}", names.join(" -> "), names[0]));
    for (k, &i) in cycle.iter().enumerate() {
        let prev = &drafts[cycle[(k + cycle.len() - 1) % cycle.len()]].spec.name;
        let d = &drafts[i];
        let span = d.edges.iter().find(|(u, _)| u == prev).map(|(_, s)| s.clone()).unwrap_or(d.member.key.span.clone());
        p = p.at(&span, format!("`{}` depends on `{prev}` here", d.spec.name));
    }
    p
}

/// Lexically cleans `a/./b/../c` without touching the file system.
pub fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// The known name nearest to `name` by edit distance, if near enough to be a typo.
pub(super) fn closest<'a>(name: &str, known: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    known
        .map(|k| (edit_distance(name, k), k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 4))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}
