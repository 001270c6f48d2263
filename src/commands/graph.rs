//! `distill dag`: the stage graph as text, Graphviz dot or Mermaid.

use std::process::ExitCode;

use crate::cli::{DagFormat, ManifestArgs};

use super::pipeline::load_plan;

pub fn dag(args: &ManifestArgs, format: DagFormat) -> anyhow::Result<ExitCode> {
    let plan = load_plan(args)?;
    let names: Vec<&str> = plan.stages.iter().map(|s| s.spec.name.as_str()).collect();
    match format {
        DagFormat::Ascii => {
            // Depth = longest path from a source, so each stage prints below all it needs.
            let mut depth = vec![0usize; names.len()];
            for (i, s) in plan.stages.iter().enumerate() {
                depth[i] = s.upstream.iter().map(|&u| depth[u] + 1).max().unwrap_or(0);
            }
            for (i, s) in plan.stages.iter().enumerate() {
                let indent = "  ".repeat(depth[i]);
                let ups: Vec<&str> = s.upstream.iter().map(|&u| names[u]).collect();
                let from = if ups.is_empty() { String::new() } else { format!("  <- {}", ups.join(", ")) };
                println!("{indent}{} ({}){from}", s.spec.name, s.spec.kind);
            }
        }
        DagFormat::Dot => {
            println!("digraph distill {{\n  rankdir=LR;\n  node [shape=box];");
            for (i, s) in plan.stages.iter().enumerate() {
                println!("  n{i} [label={:?}];", format!("{}\n{}", s.spec.name, s.spec.kind));
            }
            for (a, b) in plan.edges() {
                println!("  n{a} -> n{b};");
            }
            println!("}}");
        }
        DagFormat::Mermaid => {
            println!("graph LR");
            for (i, s) in plan.stages.iter().enumerate() {
                println!("  n{i}[\"{}<br/>{}\"]", s.spec.name.replace('"', "#quot;"), s.spec.kind);
            }
            for (a, b) in plan.edges() {
                println!("  n{a} --> n{b}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
