//! Planning without running (`distill status`, `run --dry-run`): cached, will run (why),
//! or may run (it waits on an upstream output that may come out the same).

use crate::decide::{Decision, decide};
use crate::hash::Hasher;
use crate::plan::Plan;
use crate::record::StageStatus;
use crate::stage::Registry;
use crate::workspace::{StageState, Workspace};

use super::Selection;

#[derive(Clone, Debug)]
pub struct Assessment {
    pub name: String,
    pub status: StageStatus,
    pub reasons: Vec<String>,
}

pub fn assess(plan: &Plan, registry: &Registry, ws: &Workspace, sel: &Selection) -> Vec<Assessment> {
    let hasher = Hasher::new(ws.file_hashes().ok());
    let mut known: Vec<Option<StageState>> = vec![None; plan.stages.len()];
    let mut out = Vec::new();
    for (i, stage) in plan.stages.iter().enumerate() {
        if !sel.selected.contains(&i) {
            known[i] = ws.stage_state(&stage.spec.name).ok().flatten();
            continue;
        }
        let lookup = |name: &str| plan.index_of(name).and_then(|j| known[j].clone());
        let a = match decide(plan, i, registry, ws, &hasher, sel.forced.contains(&i), &lookup) {
            Ok(Decision::Cached { state, note }) => {
                known[i] = Some(state);
                Assessment { name: stage.spec.name.clone(), status: StageStatus::Cached, reasons: note.into_iter().collect() }
            }
            Ok(Decision::Run { reasons, .. }) => {
                Assessment { name: stage.spec.name.clone(), status: StageStatus::WillRun, reasons }
            }
            Ok(Decision::Wait { upstream, reasons }) if !reasons.is_empty() => {
                let mut reasons = reasons;
                if reasons != ["never ran"] {
                    reasons.push(format!("then with new outputs of {}", quote_list(&upstream)));
                }
                Assessment { name: stage.spec.name.clone(), status: StageStatus::WillRun, reasons }
            }
            Ok(Decision::Wait { upstream, .. }) => Assessment {
                name: stage.spec.name.clone(),
                status: StageStatus::MayRun,
                reasons: vec![format!("runs only if {} output changes", quote_list(&upstream))],
            },
            Err(e) => Assessment { name: stage.spec.name.clone(), status: StageStatus::WillRun, reasons: vec![format!("will fail: {e}")] },
        };
        out.push(a);
    }
    out
}

fn quote_list(names: &[String]) -> String {
    names.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", ")
}
