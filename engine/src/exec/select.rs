//! `--only`, `--until`, `--downstream` and `--force` turned into sets of stage indices.

use std::collections::BTreeSet;

use crate::plan::Plan;

use super::RunOptions;

#[derive(Debug, thiserror::Error)]
#[error("no stage or family named `{name}`{hint}")]
pub struct UnknownStage {
    pub name: String,
    pub hint: String,
}

pub struct Selection {
    pub selected: BTreeSet<usize>,
    pub forced: BTreeSet<usize>,
}

pub fn select(plan: &Plan, opts: &RunOptions) -> Result<Selection, UnknownStage> {
    let resolve = |names: &[String]| -> Result<Vec<usize>, UnknownStage> {
        let mut out = Vec::new();
        for n in names {
            let found = plan.resolve_name(n).ok_or_else(|| UnknownStage {
                name: n.clone(),
                hint: format!(
                    " (stages: {})",
                    plan.stages.iter().take(8).map(|s| s.spec.name.as_str()).collect::<Vec<_>>().join(", ")
                ),
            })?;
            out.extend(found);
        }
        Ok(out)
    };
    let mut selected: BTreeSet<usize> = (0..plan.stages.len()).collect();
    if !opts.only.is_empty() {
        let only: BTreeSet<usize> = resolve(&opts.only)?.into_iter().collect();
        selected = selected.intersection(&only).copied().collect();
    }
    if !opts.until.is_empty() {
        let up = plan.upstream_of(&resolve(&opts.until)?);
        selected = selected.intersection(&up).copied().collect();
    }
    if !opts.downstream.is_empty() {
        let down = plan.downstream_of(&resolve(&opts.downstream)?);
        selected = selected.intersection(&down).copied().collect();
    }
    let forced = if opts.force_all {
        selected.clone()
    } else {
        resolve(&opts.force)?.into_iter().collect()
    };
    Ok(Selection { selected, forced })
}
