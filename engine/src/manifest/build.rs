//! Manifest -> validated `Plan`: load and merge, apply `--set`, render templates, expand
//! families, then check kinds, references, names and cycles, reporting every problem found.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use minijinja::Value as J;

use super::diag::{ManifestError, Problem, Sources};
use super::expand::{Ctx, Member, expand};
use super::graph::order;
use super::link::{closest, cycle_problem, link, watch_run};
use super::load::{apply_set, load};
use super::node::{Node, Span};
use super::raw::{FAMILY_KEYS, RawStage, RawTop, parse_path, read};
use super::template::Templater;
use crate::plan::{Experiment, Input, Plan, PlannedStage};
use crate::stage::{Registry, StageSpec};

/// One concrete stage while the plan is assembled, with the spans its errors point at.
pub(super) struct Draft {
    pub(super) member: Member,
    pub(super) spec: StageSpec,
    pub(super) description: String,
    pub(super) inputs: Vec<(Input, Span)>,
    /// (upstream name, span of what made the edge)
    pub(super) edges: Vec<(String, Span)>,
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
        if !["local", "process", "slurm"].contains(&executor.as_str()) {
            problems.push(
                Problem::new(format!("unknown executor `{executor}`"))
                    .at(&span_of(&m, "executor"), "expected `local`, `process` or `slurm`"),
            );
        }
        let mut slurm = top.experiment.slurm.clone();
        slurm.extend(raw.slurm.clone());
        drafts.push(draft(m, raw, &experiment, &root_dir, &executor, slurm));
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
    executor: &str,
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
        executor: crate::stage::ExecutorSpec { slurm: executor == "slurm", process: executor == "process", options },
    };
    Draft { member, spec, description: raw.description, inputs: Vec::new(), edges: Vec::new() }
}

/// The span of a dotted path inside a stage (`params.lr`, `deps[1]`), or the stage's name.
pub(super) fn span_of(m: &Member, path: &str) -> Span {
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

