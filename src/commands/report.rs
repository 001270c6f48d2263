//! `distill report`: one run to HTML, or two runs compared.

use std::path::Path;
use std::process::ExitCode;

use anyhow::bail;

pub fn report(workspace: &Path, runs: &[String], out: Option<&Path>) -> anyhow::Result<ExitCode> {
    let dir = workspace.join(".distill");
    let paths = match runs {
        [] | [_] => {
            let run = distill_reports::load_run(&dir, runs.first().map(String::as_str))?;
            let target = out.map(Path::to_path_buf).unwrap_or_else(|| dir.join("runs").join(&run.id));
            distill_reports::write_run_report(&run, &target)?
        }
        [a, b] => {
            let (a, b) = (distill_reports::load_run(&dir, Some(a))?, distill_reports::load_run(&dir, Some(b))?);
            let target = out
                .map(Path::to_path_buf)
                .unwrap_or_else(|| dir.join("compare").join(format!("{}-vs-{}", a.id, b.id)));
            distill_reports::write_comparison(&a, &b, &target)?
        }
        _ => bail!("give at most two runs to compare"),
    };
    let shown = std::fs::canonicalize(&paths.html).unwrap_or(paths.html);
    println!("{}", shown.display());
    Ok(ExitCode::SUCCESS)
}
