//! One function per subcommand.

mod bench;
mod generate;
mod graph;
mod report;
mod pipeline;
mod ranks;
mod store;

use std::process::ExitCode;
use std::sync::Arc;

use distill_engine::stage::Registry;

use crate::cli::Command;

/// Every stage kind this binary knows.
pub fn registry() -> Registry {
    let mut r = Registry::builtin();
    r.add(Arc::new(distill_reports::ReportStage));
    distill_stages::register(&mut r);
    r
}

pub fn dispatch(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Run(args) => pipeline::run(args),
        Command::Status { manifest, json } => pipeline::status(&manifest, json),
        Command::Explain { stage, manifest } => pipeline::explain(&manifest, &stage),
        Command::Dag { manifest, format } => graph::dag(&manifest, format),
        Command::Runs { workspace, json } => store::runs(&workspace, json),
        Command::Gc { workspace, keep_last } => store::gc(&workspace, keep_last),
        Command::Report { runs, workspace, out } => report::report(&workspace, &runs, out.as_deref()),
        Command::Generate(args) => generate::generate(&args),
        Command::Bench(args) => bench::bench(&args),
        Command::Schema => {
            let schema = distill_engine::manifest::manifest_schema(&registry());
            println!("{}", serde_json::to_string_pretty(&schema)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::ExecStage { job, list, index } => {
            let job = match (job, list, index) {
                (Some(j), _, _) => j,
                (None, Some(l), Some(i)) => distill_engine::exec::job_from_list(&l, i)?,
                _ => anyhow::bail!("exec-stage needs a job file, or --list and --index"),
            };
            let ok = distill_engine::exec::run_job_file(&job, &registry())?;
            Ok(if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
        Command::Hash { paths } => {
            let hasher = distill_engine::hash::Hasher::new(None);
            for p in paths {
                let (hash, bytes) = hasher.hash_path(&p)?;
                println!("{hash}  {bytes}  {}", p.display());
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Path { reference, workspace } => store::path(&workspace, &reference),
        Command::Export { reference, dir, workspace } => store::export(&workspace, &reference, &dir),
    }
}
