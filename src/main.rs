//! `distill`: glue between the command line and the libraries.

mod cli;
mod commands;

use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

/// jemalloc rather than glibc's malloc. A CPU training step allocates and frees tensors of
/// hundreds of MB (SmolLM2's logits over a batch: 200 MB); glibc maps each anew, and the kernel
/// zeroes every page of it at first touch: 17% of a distillation stage's time under perf
/// (session 16). jemalloc keeps freed extents for reuse.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options, read at its start. Requests above `oversize_threshold` (8 MiB by default)
/// go to an arena that returns them to the system at once, the very cost above; 0 turns that
/// arena off, so large tensors are reused like small ones. The peak memory stayed as glibc's
/// (4.9 GB for the default distillation), the stage went 104 -> 92 s.
#[allow(non_upper_case_globals)]
#[unsafe(export_name = "_rjem_malloc_conf")]
pub static malloc_conf: &[u8] = b"oversize_threshold:0\0";

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
