//! `distill generate`: a quick look at what any model artifact says.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use distill_engine::refs::Reference;
use distill_stages::generate::{GenerateRequest, Sampling, run_generate};

use crate::cli::GenerateArgs;

pub fn generate(args: &GenerateArgs) -> anyhow::Result<ExitCode> {
    let model_dir = model_folder(args, &args.model)?;
    let mut req = GenerateRequest::new(model_dir, args.prompt.clone());
    req.chat = args.chat;
    req.max_new_tokens = args.max_new_tokens;
    req.seed = args.seed;
    req.stop = args.stop.clone();
    req.device = args.device.clone();
    req.dtype = args.dtype.clone();
    req.sampling = match (args.temperature, args.top_k, args.top_p) {
        (t, None, None) if t <= 0.0 => Sampling::Greedy,
        (t, Some(k), _) => Sampling::TopK { k, temperature: if t > 0.0 { t } else { 1.0 } },
        (t, None, Some(p)) => Sampling::TopP { p, temperature: if t > 0.0 { t } else { 1.0 } },
        (t, None, None) => Sampling::Temperature { temperature: t },
    };
    let mut out = std::io::stdout();
    let print = |piece: &str| {
        let _ = out.write_all(piece.as_bytes());
        let _ = out.flush();
    };
    match &args.draft {
        None => {
            run_generate(&req, print)?;
            println!();
        }
        Some(draft) => {
            let draft_dir = model_folder(args, draft)?;
            let (_, stats) = distill_stages::speculative::run_speculative(&req, &draft_dir, args.k, print)?;
            println!();
            eprintln!(
                "speculative, K = {}: acceptance {:.2}, {:.2} tokens per round",
                args.k,
                stats.acceptance_rate(),
                stats.tokens_per_round()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `@teacher` -> its stored folder, found through the run records (no lock needed, so this
/// works while a run is going on); anything else is a path.
fn model_folder(args: &GenerateArgs, model: &str) -> anyhow::Result<PathBuf> {
    let Some(r) = Reference::parse(model) else { return Ok(PathBuf::from(model)) };
    let dir = args.workspace.join(".distill");
    let runs = distill_engine::workspace::read_run_files(&dir);
    let found = runs.iter().rev().find_map(|run| {
        let stage = run.stage(&r.stage)?;
        stage.outputs.get("main").map(|o| o.path.clone())
    });
    let root = found.with_context(|| format!("no stored outputs of stage `{}` in {}", r.stage, dir.display()))?;
    Ok(match &r.output {
        Some(o) => root.join(o),
        None => root,
    })
}
