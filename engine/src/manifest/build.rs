//! Manifest -> validated `Plan`: load and merge, apply `--set`, render templates, expand
//! families, then check kinds, references, names and cycles, reporting every problem found.

use std::collections::{BTreeMap, HashMap};
use std::path::{Component, Path, PathBuf};

use minijinja::Value as J;

use super::diag::{ManifestError, Problem, Sources};
use super::expand::{Ctx, Member, expand};
use super::graph::order;
use super::load::{apply_set, load};
use super::node::{Node, Span};
use super::raw::{FAMILY_KEYS, RawStage, RawTop, parse_path, read};
use super::template::Templater;
use crate::plan::{Experiment, Input, Plan, PlannedStage};
use crate::refs::{Reference, find_references};
use crate::stage::{Registry, StageSpec};

/// One concrete stage while the plan is assembled, with the spans its errors point at.
struct Draft {
    member: Member,
    spec: StageSpec,
    description: String,
    inputs: Vec<(Input, Span)>,
    /// (upstream name, span of what made the edge)
    edges: Vec<(String, Span)>,
}

pub fn build(manifest: &Path, sets: &[String], registry: &Registry) -> Result<Plan, ManifestError> {
    let mut sources = Sources::default();
    let mut root = load(manifest, &mut sources)?;
    for s in sets {
        apply_set(&mut root, s, &mut sources)?;
    }
    let fail = |problems: Vec<Problem>, sources: &Sources| Err(ManifestError::new(problems, sources));
    let top: RawTop = match read(&root, "the manifest") {
        Ok(t) => t,
        Err(p) => return fail(vec![p], &sources),
    };
    let dir = manifest.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let root_dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    let device = top.experiment.device.clone().unwrap_or_else(|| "cpu".into());
    let experiment = Experiment {
        name: top.experiment.name.clone().unwrap_or_else(|| {
            manifest.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default()
        }),
        description: top.experiment.description.clone(),
        seed: top.experiment.seed,
        dtype: top.experiment.dtype.clone().unwrap_or_else(|| default_dtype(&device).into()),
        device,
        executor: top.experiment.executor.clone().unwrap_or_else(|| "local".into()),
    };
    let mut problems = Vec::new();
    let templater = Templater::default();
    let base: Ctx = Ctx::from([
        ("vars".to_string(), J::from_serialize(&top.vars)),
        ("experiment".to_string(), J::from_serialize(&experiment)),
    ]);
    let mut members = Vec::new();
    if let Some(stages) = root.as_table().and_then(|t| t.get("stages")).and_then(Node::as_table) {
        for (key, node) in &stages.entries {
            if !valid_base_name(&key.name) {
                problems.push(
                    Problem::new(format!("invalid stage name `{}`", key.name))
                        .at(&key.span, "use letters, digits, `_` and `-`"),
                );
                continue;
            }
            members.extend(expand(key, node, &base, &templater, &mut problems));
        }
    }
    let mut drafts = Vec::new();
    for m in members {
        let mut body = m.node.clone();
        if let Some(t) = body.as_table() {
            debug_assert!(FAMILY_KEYS.iter().all(|k| t.get(k).is_none()));
        }
        let raw: RawStage = match read(&body, &format!("stage `{}`", m.name)) {
            Ok(r) => r,
            Err(p) => {
                problems.push(p);
                continue;
            }
        };
        body.span = m.key.span.clone();
        let executor = raw.executor.clone().unwrap_or_else(|| experiment.executor.clone());
        if executor != "local" && executor != "slurm" {
            problems.push(
                Problem::new(format!("unknown executor `{executor}`"))
                    .at(&span_of(&m, "executor"), "expected `local` or `slurm`"),
            );
        }
        let mut slurm = top.experiment.slurm.clone();
        slurm.extend(raw.slurm.clone());
        drafts.push(draft(m, raw, &experiment, &root_dir, executor == "slurm", slurm));
    }
    let families = check_names(&drafts, &mut problems);
    check_kinds(&drafts, registry, &mut problems);
    link(&mut drafts, &families, &root_dir, &mut problems);
    watch_run(&mut drafts, registry);
    for d in &drafts {
        if let Some(kind) = registry.get(&d.spec.kind) {
            if let Err(e) = kind.validate(&d.spec) {
                let span = span_of(&d.member, &e.path);
                problems.push(
                    Problem::new(format!("stage `{}` ({}): {}", d.spec.name, d.spec.kind, e.message))
                        .at(&span, format!("`{}`", e.path)),
                );
            }
        }
    }
    if !problems.is_empty() {
        return fail(problems, &sources);
    }
    let index: HashMap<String, usize> =
        drafts.iter().enumerate().map(|(i, d)| (d.spec.name.clone(), i)).collect();
    let edges: Vec<(usize, usize)> = drafts
        .iter()
        .enumerate()
        .flat_map(|(i, d)| d.edges.iter().map(|(u, _)| (index[u], i)).collect::<Vec<_>>())
        .collect();
    let topo = match order(drafts.len(), &edges) {
        Ok(o) => o,
        Err(cycle) => return fail(vec![cycle_problem(&cycle, &drafts)], &sources),
    };
    let mut position = vec![0; drafts.len()];
    for (pos, &i) in topo.iter().enumerate() {
        position[i] = pos;
    }
    let mut slots: Vec<Option<Draft>> = drafts.into_iter().map(Some).collect();
    let stages: Vec<PlannedStage> = topo
        .iter()
        .map(|&i| {
            let d = slots[i].take().expect("each stage once");
            let mut upstream: Vec<usize> = d.edges.iter().map(|(u, _)| position[index[u]]).collect();
            upstream.sort();
            upstream.dedup();
            PlannedStage {
                spec: d.spec,
                family: d.member.family,
                description: d.description,
                inputs: d.inputs.into_iter().map(|(i, _)| i).collect(),
                upstream,
            }
        })
        .collect();
    let index = stages.iter().enumerate().map(|(i, s)| (s.spec.name.clone(), i)).collect();
    Ok(Plan {
        manifest: manifest.to_path_buf(),
        root: root_dir,
        experiment,
        vars: top.vars,
        stages,
        families,
        sources,
        index,
    })
}

pub fn default_dtype(device: &str) -> &'static str {
    if device.starts_with("cuda") { "bf16" } else { "f32" }
}

fn valid_base_name(name: &str) -> bool {
    !name.is_empty()
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        && !name.starts_with('-')
}

fn draft(
    member: Member,
    raw: RawStage,
    exp: &Experiment,
    root: &Path,
    slurm: bool,
    mut options: BTreeMap<String, String>,
) -> Draft {
    if let Some(m) = &raw.resources.mem {
        options.insert("mem".into(), m.clone());
    }
    if let Some(t) = &raw.resources.time {
        options.insert("time".into(), t.clone());
    }
    let device = raw.device.clone().unwrap_or_else(|| exp.device.clone());
    let dtype = raw
        .dtype
        .clone()
        .or_else(|| raw.device.is_none().then(|| exp.dtype.clone()))
        .unwrap_or_else(|| default_dtype(&device).into());
    let spec = StageSpec {
        name: member.name.clone(),
        kind: raw.kind,
        params: serde_json::Value::Object(raw.params),
        needs: raw.needs,
        device,
        dtype,
        seed: exp.seed,
        threads: raw.resources.threads.max(1),
        gpus: raw.resources.gpus,
        retries: raw.retries,
        frozen: raw.frozen,
        cmd: raw.cmd,
        deps: raw.deps,
        outs: raw.outs,
        env: raw.env,
        workdir: raw.workdir,
        manifest_dir: root.to_path_buf(),
        executor: crate::stage::ExecutorSpec { slurm, options },
    };
    Draft { member, spec, description: raw.description, inputs: Vec::new(), edges: Vec::new() }
}

/// The span of a dotted path inside a stage (`params.lr`, `deps[1]`), or the stage's name.
fn span_of(m: &Member, path: &str) -> Span {
    let segs = parse_path(path);
    (0..=segs.len())
        .rev()
        .find_map(|n| m.node.at(&segs[..n]).filter(|_| n > 0).map(|x| x.span.clone()))
        .unwrap_or_else(|| m.key.span.clone())
}

fn check_names(drafts: &[Draft], problems: &mut Vec<Problem>) -> BTreeMap<String, Vec<String>> {
    let mut seen: HashMap<&str, &Draft> = HashMap::new();
    let mut families: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for d in drafts {
        if let Some(first) = seen.insert(&d.spec.name, d) {
            problems.push(
                Problem::new(format!("duplicate stage name `{}`", d.spec.name))
                    .at(&d.member.key.span, "defined again here")
                    .at(&first.member.key.span, "first defined here")
                    .note("family members are named NAME[value]; values must be unique"),
            );
        }
        if let Some(f) = &d.member.family {
            families.entry(f.clone()).or_default().push(d.spec.name.clone());
        }
    }
    families
}

fn check_kinds(drafts: &[Draft], registry: &Registry, problems: &mut Vec<Problem>) {
    for d in drafts {
        if registry.get(&d.spec.kind).is_none() {
            let known: Vec<&str> = registry.names().collect();
            let mut p = Problem::new(format!("unknown stage kind `{}`", d.spec.kind))
                .at(&span_of(&d.member, "kind"), "no such kind")
                .note(format!("known kinds: {}", known.join(", ")));
            if let Some(s) = closest(&d.spec.kind, known.iter().copied()) {
                p = p.note(format!("did you mean `{s}`?"));
            }
            problems.push(p);
        }
    }
}

/// Turns references, needs and deps into inputs and edges.
fn link(drafts: &mut [Draft], families: &BTreeMap<String, Vec<String>>, root: &Path, problems: &mut Vec<Problem>) {
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
fn watch_run(drafts: &mut [Draft], registry: &Registry) {
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

fn cycle_problem(cycle: &[usize], drafts: &[Draft]) -> Problem {
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
fn closest<'a>(name: &str, known: impl Iterator<Item = &'a str>) -> Option<&'a str> {
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
