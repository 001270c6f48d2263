//! Writes the synthetic sample report and a comparison, to look at them in a browser:
//! `cargo run -p distill-reports --example sample_report -- OUT_DIR`.

use std::path::PathBuf;

use distill_reports::testdata::sample_run;
use distill_reports::{write_comparison, write_run_report};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| "sample-report".into()));
    let a = sample_run(&out.join("steps"));
    let mut b = a.clone();
    b.id = "20250302-090000-ffff".into();
    b.stages[4].params["lr"] = serde_json::json!(0.001);
    let run = write_run_report(&a, &out.join("run"))?;
    let cmp = write_comparison(&a, &b, &out.join("compare"))?;
    eprintln!("{}\n{}", run.html.display(), cmp.html.display());
    Ok(())
}
