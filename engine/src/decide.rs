//! Deciding a stage's fate from its cache key: cached, run (and why), or wait for an
//! upstream output whose hash is not known yet (the dry run's "may run").

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::json;

use crate::hash::Hasher;
use crate::key::CacheKey;
use crate::plan::{Input, Plan};
use crate::stage::{Registry, StageSpec};

use crate::workspace::{StageState, Workspace, WorkspaceError};

#[derive(Debug)]
pub enum Decision {
    Cached { state: StageState, note: Option<String> },
    /// `inputs` maps each input's name to where the stage reads it.
    Run { key: CacheKey, reasons: Vec<String>, inputs: BTreeMap<String, PathBuf> },
    /// Some upstream outputs are not known yet; `reasons` holds what already differs.
    Wait { upstream: Vec<String>, reasons: Vec<String> },
}

#[derive(Debug, thiserror::Error)]
pub enum DecideError {
    #[error("input `{name}` ({path}) does not exist")]
    MissingFile { name: String, path: PathBuf },
    #[error("input `{name}`: {message}")]
    Input { name: String, message: String },
    #[error(transparent)]
    Workspace(#[from] WorkspaceError),
}

/// The parts of the key that do not depend on inputs.
pub fn key_base(spec: &StageSpec, registry: &Registry) -> CacheKey {
    let kind = registry.get(&spec.kind).expect("kinds are checked when planning");
    let mut params = json!({ "params": spec.params });
    if let Some(cmd) = &spec.cmd {
        params["cmd"] = json!(cmd);
    }
    for (field, empty, value) in [
        ("outs", spec.outs.is_empty(), json!(spec.outs)),
        ("env", spec.env.is_empty(), json!(spec.env)),
        ("workdir", spec.workdir.is_none(), json!(spec.workdir)),
    ] {
        if !empty {
            params[field] = value;
        }
    }
    CacheKey {
        kind: spec.kind.clone(),
        kind_version: kind.version(),
        params,
        inputs: Default::default(),
        env: kind.environment(spec),
    }
}

/// Where a stored output lives and its content hash.
pub fn resolve_output(
    stage: &str,
    state: &StageState,
    output: Option<&str>,
    hasher: &Hasher,
) -> Result<(PathBuf, String), String> {
    let root = &state.output.path;
    let path = match (output, &state.main_output) {
        (None, Some(main)) => root.join(main),
        (None, None) => return Ok((root.clone(), state.output.hash.clone())),
        // `@corpus/train` looks in the stage's main output first when that is a folder (a
        // command stage's single out), then at the top of the stored tree.
        (Some(o), main) => main
            .as_ref()
            .map(|m| root.join(m))
            .filter(|m| m.is_dir())
            .and_then(|m| find_named(&m, o))
            .or_else(|| find_named(root, o))
            .ok_or_else(|| format!("stage `{stage}` has no output `{o}` (its outputs: {})", list_entries(root)))?,
    };
    let (hash, _) = hasher.hash_path(&path).map_err(|e| e.to_string())?;
    Ok((path, hash))
}

/// `train` finds `train`, then `train.jsonl` (any extension) at the top of the folder.
fn find_named(root: &Path, name: &str) -> Option<PathBuf> {
    let exact = root.join(name);
    if exact.exists() {
        return Some(exact);
    }
    std::fs::read_dir(root).ok()?.filter_map(|e| e.ok()).map(|e| e.path()).find(|p| {
        p.file_stem().is_some_and(|s| s == name)
    })
}

fn list_entries(root: &Path) -> String {
    let mut names: Vec<String> = std::fs::read_dir(root)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    if names.is_empty() { "none".into() } else { names.join(", ") }
}

/// Decides one stage. `upstream` gives the state of a finished upstream stage, or `None`
/// while it has still to run.
pub fn decide(
    plan: &Plan,
    idx: usize,
    registry: &Registry,
    ws: &Workspace,
    hasher: &Hasher,
    forced: bool,
    upstream: &dyn Fn(&str) -> Option<StageState>,
) -> Result<Decision, DecideError> {
    let stage = &plan.stages[idx];
    let spec = &stage.spec;
    let mut key = key_base(spec, registry);
    let mut paths = BTreeMap::new();
    let mut waiting = Vec::new();
    for input in &stage.inputs {
        match input {
            Input::File { name, path } => {
                if !path.exists() {
                    return Err(DecideError::MissingFile { name: name.clone(), path: path.clone() });
                }
                let (h, _) = hasher
                    .hash_path(path)
                    .map_err(|e| DecideError::Input { name: name.clone(), message: e.to_string() })?;
                key.inputs.insert(name.clone(), h);
                paths.insert(name.clone(), path.clone());
            }
            Input::Record { name, stage } => match upstream(stage) {
                Some(state) => {
                    key.inputs.insert(name.clone(), format!("{}@{}", state.key_hash, state.run_id));
                }
                None => waiting.push(stage.clone()),
            },
            Input::Stage { name, reference } => match upstream(&reference.stage) {
                Some(state) => {
                    let (path, h) = resolve_output(&reference.stage, &state, reference.output.as_deref(), hasher)
                        .map_err(|message| DecideError::Input { name: name.clone(), message })?;
                    key.inputs.insert(name.clone(), h);
                    paths.insert(name.clone(), path);
                }
                None => waiting.push(reference.stage.clone()),
            },
        }
    }
    let previous = ws.stage_state(&spec.name)?;
    if !waiting.is_empty() {
        waiting.sort();
        waiting.dedup();
        let mut reasons = Vec::new();
        if forced {
            reasons.push("forced (--force)".to_string());
        } else if let Some(prev) = &previous {
            let mut known = prev.key.clone();
            known.inputs.retain(|k, _| key.inputs.contains_key(k) || !is_stage_input(stage, k));
            reasons = known.diff(&key);
        } else {
            reasons.push("never ran".to_string());
        }
        return Ok(Decision::Wait { upstream: waiting, reasons });
    }
    let hash = key.hash();
    if forced {
        return Ok(Decision::Run { key, reasons: vec!["forced (--force)".into()], inputs: paths });
    }
    if let Some(prev) = previous.clone().filter(|p| p.output.path.exists()) {
        if spec.frozen {
            let note = (prev.key_hash != hash).then(|| "frozen: kept despite changes".to_string());
            return Ok(Decision::Cached { state: prev, note });
        }
        if prev.key_hash == hash {
            return Ok(Decision::Cached { state: prev, note: None });
        }
    }
    if let Some(hit) = ws.cached_by_key(&hash)?.filter(|s| s.output.path.exists()) {
        let note = Some(format!("same key as in run {}: outputs reused", hit.run_id));
        return Ok(Decision::Cached { state: hit, note });
    }
    let reasons = match &previous {
        None => vec!["never ran".to_string()],
        Some(p) if p.key_hash == hash => vec!["stored outputs are missing".to_string()],
        Some(p) => {
            let d = p.key.diff(&key);
            if d.is_empty() { vec!["cache key changed".to_string()] } else { d }
        }
    };
    Ok(Decision::Run { key, reasons, inputs: paths })
}

fn is_stage_input(stage: &crate::plan::PlannedStage, name: &str) -> bool {
    stage.inputs.iter().any(|i| match i {
        Input::Stage { name: n, .. } | Input::Record { name: n, .. } => n == name,
        Input::File { .. } => false,
    })
}


