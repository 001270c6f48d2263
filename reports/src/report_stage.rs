//! The `report` stage kind: renders the current run's report at the end of a pipeline, into
//! the stage's output folder (`report.html` is the main output, `report.json` beside it).

use distill_engine::record::{RunRecord, RunStatus, StageStatus};
use distill_engine::stage::{ParamError, Stage, StageContext, StageError, StageSpec};

use crate::render::write_run_report;

pub struct ReportStage;

impl Stage for ReportStage {
    fn kind(&self) -> &'static str {
        "report"
    }

    fn version(&self) -> u32 {
        1
    }

    fn summary(&self) -> &'static str {
        "renders the run's report (report.html, report.json) from the stages before it"
    }

    /// A report shows every stage: it waits for them all and reruns when any of them ran.
    fn watches_run(&self) -> bool {
        true
    }

    fn params_schema(&self) -> serde_json::Value {
        serde_json::json!({
            "type": "object",
            "properties": {
                "title": { "type": "string", "description": "replaces the experiment name as the heading" },
                "inputs": { "type": "array", "items": { "type": "string" },
                            "description": "`@stage` references the report waits for" }
            },
            "additionalProperties": false
        })
    }

    fn validate(&self, spec: &StageSpec) -> Result<(), ParamError> {
        let Some(map) = spec.params.as_object() else {
            return Err(ParamError::new("params", "expected a table"));
        };
        for (k, v) in map {
            match k.as_str() {
                "title" if !v.is_string() => return Err(ParamError::new("params.title", "expected a string")),
                "inputs" if !v.as_array().is_some_and(|a| a.iter().all(|r| r.as_str().is_some_and(|s| s.starts_with('@')))) => {
                    return Err(ParamError::new("params.inputs", "expected a list of `@stage` references"));
                }
                "title" | "inputs" => {}
                other => return Err(ParamError::new(format!("params.{other}"), "unknown param (known: title, inputs)")),
            }
        }
        Ok(())
    }

    fn run(&self, ctx: &mut StageContext) -> Result<(), StageError> {
        let mut run = settled(current_record(ctx)?);
        if let Some(t) = ctx.spec.params.get("title").and_then(|t| t.as_str()) {
            run.experiment.name = t.to_string();
        }
        let out = ctx.out_dir().to_path_buf();
        let paths = write_run_report(&run, &out).map_err(StageError::other)?;
        ctx.log(format!("report written to {}", paths.html.display()));
        Ok(())
    }
}

/// The record as the report stage sees it, the run's other stages all settled: it runs last
/// (it waits for every stage that does not depend on it), so what they did is final and the
/// run's outcome is known. Left `running`, the report a user opens at the end of `distill run`
/// would call a finished run unfinished.
fn settled(mut run: RunRecord) -> RunRecord {
    if run.status == RunStatus::Running {
        let failed = run.stages.iter().any(|s| matches!(s.status, StageStatus::Failed | StageStatus::Skipped));
        run.status = if failed { RunStatus::Failed } else { RunStatus::Succeeded };
        run.finished_at = Some(chrono::Utc::now());
    }
    run
}

/// The current run's record so far, as the engine last saved it (upstream stages included).
fn current_record(ctx: &StageContext) -> Result<RunRecord, StageError> {
    ctx.run_record().ok_or_else(|| {
        StageError::Failed(format!(
            "no run record for run {} under {}",
            ctx.run_id,
            ctx.workspace().display()
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(params: serde_json::Value) -> StageSpec {
        StageSpec {
            name: "report".into(), kind: "report".into(), params, device: "cpu".into(),
            dtype: "f32".into(), threads: 1, manifest_dir: ".".into(), ..Default::default()
        }
    }

    #[test]
    fn a_report_made_inside_its_run_shows_the_run_settled() {
        use crate::testdata::{run, stage};
        let ok = |name: &str| stage(name, "eval", StageStatus::Ran, serde_json::json!({}));
        let mut r = run("x", vec![ok("a"), ok("b")], &[]);
        (r.status, r.finished_at) = (RunStatus::Running, None);
        let s = settled(r.clone());
        assert_eq!(s.status, RunStatus::Succeeded);
        assert!(s.finished_at.is_some());
        r.stages.push(stage("c", "eval", StageStatus::Failed, serde_json::json!({})));
        assert_eq!(settled(r).status, RunStatus::Failed);
    }

    #[test]
    fn validates_params() {
        let s = ReportStage;
        assert!(s.validate(&spec(serde_json::json!({}))).is_ok());
        assert!(s.validate(&spec(serde_json::json!({"title": "x", "inputs": ["@eval"]}))).is_ok());
        assert_eq!(s.validate(&spec(serde_json::json!({"title": 3}))).unwrap_err().path, "params.title");
        assert_eq!(s.validate(&spec(serde_json::json!({"inputs": ["eval"]}))).unwrap_err().path, "params.inputs");
        assert_eq!(s.validate(&spec(serde_json::json!({"color": 1}))).unwrap_err().path, "params.color");
    }
}
