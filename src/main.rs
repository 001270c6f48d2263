//! `distill`: glue between the command line and the libraries.

mod cli;
mod commands;

use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    let filter = match cli.verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("DISTILL_LOG").unwrap_or_else(|_| filter.into());
    let log = tracing_subscriber::fmt::layer().with_writer(std::io::stderr).without_time().with_filter(filter);
    // Beside the log and whatever it filters: the GPU runtime's failed launches fail the
    // training step they happen in (distill_stages::device_failures).
    tracing_subscriber::registry().with(log).with(distill_stages::device_failures::layer()).init();
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
