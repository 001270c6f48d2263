//! `distill`: glue between the command line and the libraries.

mod cli;
mod commands;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    let filter = match cli.verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("DISTILL_LOG").unwrap_or_else(|_| filter.into()))
        .with_writer(std::io::stderr)
        .without_time()
        .init();
    match commands::dispatch(cli.command) {
        Ok(code) => code,
        Err(e) => {
            if let Some(m) = e.downcast_ref::<distill_engine::manifest::ManifestError>() {
                eprint!("{m}");
                return ExitCode::from(2);
            }
            if let Some(distill_engine::workspace::WorkspaceError::Lock(l)) = e.downcast_ref() {
                eprintln!("error: {l}");
                return ExitCode::from(3);
            }
            eprintln!("error: {e}");
            for cause in e.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            ExitCode::FAILURE
        }
    }
}
