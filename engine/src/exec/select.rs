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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stage::Registry;

    /// a -> b -> d, a -> c -> d, e alone.
    fn plan() -> (tempfile::TempDir, Plan) {
        let dir = tempfile::tempdir().unwrap();
        let stage = |name: &str, needs: &[&str]| {
            let needs: Vec<String> = needs.iter().map(|n| format!("\"{n}\"")).collect();
            format!("[stages.{name}]\nkind = \"command\"\ncmd = \"true\"\nneeds = [{}]\n\n", needs.join(", "))
        };
        let text = [stage("a", &[]), stage("b", &["a"]), stage("c", &["a"]), stage("d", &["b", "c"]), stage("e", &[])].concat();
        let path = dir.path().join("m.toml");
        std::fs::write(&path, text).unwrap();
        let plan = crate::manifest::build(&path, &[], &Registry::builtin()).unwrap();
        (dir, plan)
    }

    fn names(plan: &Plan, set: &BTreeSet<usize>) -> Vec<String> {
        set.iter().map(|&i| plan.stages[i].spec.name.clone()).collect()
    }

    fn opts(f: impl FnOnce(&mut RunOptions)) -> RunOptions {
        let mut o = RunOptions::default();
        f(&mut o);
        o
    }

    #[test]
    fn orders_topologically_keeping_declaration_order() {
        let (_d, p) = plan();
        let order: Vec<&str> = p.stages.iter().map(|s| s.spec.name.as_str()).collect();
        assert_eq!(order, ["a", "b", "c", "d", "e"]);
        assert_eq!(p.edges().len(), 4);
    }

    #[test]
    fn until_takes_ancestors_and_downstream_descendants() {
        let (_d, p) = plan();
        let s = select(&p, &opts(|o| o.until = vec!["b".into()])).unwrap();
        assert_eq!(names(&p, &s.selected), ["a", "b"]);
        let s = select(&p, &opts(|o| o.downstream = vec!["c".into()])).unwrap();
        assert_eq!(names(&p, &s.selected), ["c", "d"]);
        let s = select(&p, &opts(|o| {
            o.downstream = vec!["a".into()];
            o.until = vec!["c".into()];
        }))
        .unwrap();
        assert_eq!(names(&p, &s.selected), ["a", "c"]);
    }

    #[test]
    fn only_and_force() {
        let (_d, p) = plan();
        let s = select(&p, &opts(|o| {
            o.only = vec!["e".into()];
            o.force = vec!["d".into()];
        }))
        .unwrap();
        assert_eq!(names(&p, &s.selected), ["e"]);
        assert_eq!(names(&p, &s.forced), ["d"]);
        assert!(select(&p, &opts(|o| o.only = vec!["zz".into()])).is_err());
        let all = select(&p, &opts(|o| o.force_all = true)).unwrap();
        assert_eq!(all.forced.len(), 5);
    }
}
